-- signal.destinations.webhook.sandbox — a webhook receiver in `signal
-- sandbox` that checks signatures the way a careful receiver does, so demos
-- and specs see the webhook destination end to end.
--
--   POST /hooks/<name>   verified with the receiver's secret:
--                        200 {"received": <events>} — signature valid and fresh
--                        401 {"error": "…"}          — missing, malformed or wrong
--                                                      signature, or a stale timestamp
--                        404                          — no receiver at that path
--
-- Verification: parse X-Signal-Signature "t=<unix>,v1=<hex>", recompute
-- HMAC-SHA256(secret, "<t>.<raw body>"), compare in constant time, and refuse
-- a t more than tolerance_s (default 300) from now.
--
-- Receivers come from the fixture file, { "webhooks": { "/hooks/demo":
-- { "secret": "…", "tolerance_s": 300 } } }, or are added at run time:
--   POST /_sandbox/webhooks {"path": "/hooks/…", "secret": "…", "tolerance_s"?}
local core = require "signal.core"
local cjson = require("cjson.safe").new()
local http = require "signal.http.response"

local type, pairs, tonumber, tostring = type, pairs, tonumber, tostring
local byte, abs = string.byte, math.abs
local bxor, bor = bit.bxor, bit.bor

local M = { prefix = "/hooks/", counters = { "webhooks" }, control = {} }

local receivers = {}

local function receiver(spec)
  return { secret = tostring(spec.secret or ""), tolerance_s = tonumber(spec.tolerance_s) or 300 }
end

function M.load(f)
  receivers = {}
  for path, spec in pairs(type(f.webhooks) == "table" and f.webhooks or {}) do
    receivers[path] = receiver(spec)
  end
end

function M.kind(path)
  if path:sub(1, #M.prefix) == M.prefix then return "webhooks" end
end

-- equal(a, b): constant time in the length of b
local function equal(a, b)
  if #a ~= #b then return false end
  local d = 0
  for i = 1, #b do d = bor(d, bxor(byte(a, i), byte(b, i))) end
  return d == 0
end

local function refuse(message)
  return 401, { ["Content-Type"] = "application/json" }, cjson.encode({ error = message })
end

-- verify(r, header, body) → true | nil, why
function M.verify(r, header, body, now)
  if not header then return nil, "missing X-Signal-Signature" end
  local t, sig = header:match("^t=(%d+),v1=(%x+)$")
  if not t then return nil, "malformed X-Signal-Signature" end
  if abs((now or core.now()) - tonumber(t)) > r.tolerance_s then
    return nil, "timestamp outside the tolerance of " .. r.tolerance_s .. " s"
  end
  if not equal(sig, core.hmac_sha256_hex(r.secret, t .. "." .. body)) then
    return nil, "signature does not match"
  end
  return true
end

function M.handle(req)
  local r = receivers[req.path]
  if not r then return http.error(404, "NOT_FOUND", "no webhook receiver at " .. req.path) end
  if req.method ~= "POST" then return http.error(405, "METHOD_NOT_ALLOWED", "use POST") end
  local body = req.body or ""
  local ok, why = M.verify(r, req.headers["x-signal-signature"], body)
  if not ok then return refuse(why) end
  local v = cjson.decode(body)
  if type(v) ~= "table" then return http.error(400, "INVALID_JSON", "body is not a JSON object or array") end
  return http.json(200, { received = v[1] ~= nil and #v or 1 })
end

M.control["POST /_sandbox/webhooks"] = function(req)
  local v = cjson.decode(req.body or "")
  if type(v) ~= "table" or type(v.path) ~= "string" or v.path:sub(1, #M.prefix) ~= M.prefix
     or type(v.secret) ~= "string" then
    return http.error(400, "BAD_REQUEST", 'body must be {"path":"/hooks/…","secret":"…"}')
  end
  receivers[v.path] = receiver(v)
  return http.json(200, { path = v.path })
end

return M
