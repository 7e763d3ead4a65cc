-- signal.destinations.meta_capi.send — Conversions API requests and what
-- Meta's answers mean.
--
--   POST {base_url}/{api_version}/{pixel_id}/events?access_token=…
--   {"data":[<server event>, …], "test_event_code":"TEST…"?}
--
-- Up to batch_size (≤ 1,000) queued server events per request. Meta refuses
-- the whole request when one event is older than 7 days; finish() never
-- queues such an event, and an event that waited in retries past that age
-- is left out here (the outcome says how many).
--
-- Outcomes:
--   200 {"events_received": N, "fbtrace_id"}   delivered; N below the number
--                                              sent is a drop, explained
--   error {"error":{"message","type","code","error_subcode","fbtrace_id"}}
--     code 190                     the token is invalid or expired: permanent,
--                                  with what to do
--     codes 4, 17, 32, 613, 80004  rate limits: retried with backoff
--     codes 1, 2 and 5xx           Meta's temporary errors: retried
--     anything else (100 …)        permanent for that payload, explained
--   timeouts and network errors: retried.
-- The access_token never leaves this module: the request record shows the
-- URL with access_token=[REDACTED].
local core = require "signal.core"
local cjson = require("cjson.safe").new()
local dhttp = require "signal.deliver.http"

local type, ipairs, tostring, tonumber = type, ipairs, tostring, tonumber
local concat, format, gsub = table.concat, string.format, string.gsub
local encode, decode = cjson.encode, cjson.decode

local M = {}

M.MAX_AGE_S = 7 * 86400
M.RATE_LIMIT_CODES = { [4] = true, [17] = true, [32] = true, [613] = true, [80004] = true }
M.TEMPORARY_CODES = { [1] = true, [2] = true }
M.TOKEN_CODE = 190

local function urlencode(s)
  return (gsub(s, "[^%w%-_%.~]", function(c) return format("%%%02X", c:byte()) end))
end

local prepared = setmetatable({}, { __mode = "k" })

local function prepare(cfg)
  local p = prepared[cfg]
  if p then return p end
  local base = (cfg.base_url or "https://graph.facebook.com") .. "/" .. tostring(cfg.api_version) .. "/"
    .. tostring(cfg.pixel_id)
  p = {
    url = base .. "/events?access_token=" .. urlencode(tostring(cfg.access_token)),
    shown_url = base .. "/events?access_token=[REDACTED]",
    pixel_url = base .. "?fields=id&access_token=" .. urlencode(tostring(cfg.access_token)),
    headers = { ["Content-Type"] = "application/json" },
    host = (cfg.base_url or ""):match("^%a+://([^/:]+)") or "graph.facebook.com",
    tail = cfg.test_event_code and ('],"test_event_code":' .. encode(cfg.test_event_code) .. "}") or "]}",
  }
  prepared[cfg] = p
  return p
end
M.prepare = prepare

-- error_of(body) → the decoded error object | nil
local function error_of(body)
  local v = type(body) == "string" and decode(body) or nil
  local err = type(v) == "table" and v.error or nil
  return type(err) == "table" and err or nil
end
M.error_of = error_of

function M.classify(status, body)
  if status >= 200 and status < 300 then return "delivered" end
  local err = error_of(body)
  local code = err and tonumber(err.code)
  if code == M.TOKEN_CODE then return "permanent" end
  if code and (M.RATE_LIMIT_CODES[code] or M.TEMPORARY_CODES[code]) then return "retry" end
  if dhttp.RETRY_STATUS[status] or status >= 500 then return "retry" end
  return "permanent"
end

-- send(cfg, batch, timeout_ms) → outcome
function M.send(cfg, batch, timeout_ms)
  local p = prepare(cfg)
  local now = core.now()
  local kept, stale = {}, 0
  for _, pj in ipairs(batch) do
    local ev = decode(pj)
    local t = type(ev) == "table" and tonumber(ev.event_time) or nil
    if t and now - t > M.MAX_AGE_S then stale = stale + 1 else kept[#kept + 1] = pj end
  end
  if #kept == 0 then
    return { class = "dropped", label = "stale", error = "every event is older than 7 days: not sent",
             duration_s = 0, stale = stale }
  end
  local o = dhttp.post({ url = p.url, shown_url = p.shown_url, headers = p.headers, shown_headers = p.headers,
                         body = '{"data":[' .. concat(kept, ",") .. p.tail }, timeout_ms, M.classify)
  o.sent, o.stale = #kept, stale > 0 and stale or nil
  if o.class == "delivered" then
    local v = decode(o.body or "")
    local n = type(v) == "table" and tonumber(v.events_received) or nil
    o.received = n
    if n == nil or n < #kept then o.class = "dropped" end
  end
  return o
end

local function trace(err)
  return err and err.fbtrace_id and (" (fbtrace_id " .. tostring(err.fbtrace_id) .. ")") or ""
end

-- explain(cfg, outcome) → what to fix, or nil
function M.explain(cfg, o)
  local note = o.stale and ("; " .. o.stale .. " event(s) older than 7 days were left out (Meta would refuse"
    .. " the whole request)") or ""
  if not o.status then
    if o.label == "stale" then return "every event of the batch is older than 7 days: not sent" end
    return tostring(o.error or "request failed") .. ": Meta (" .. prepare(cfg).host .. ") did not answer; retrying"
  end
  local body = o.body or o.response
  if o.status >= 200 and o.status < 300 then
    if o.class == "dropped" then
      return "Meta received " .. tostring(o.received or "no") .. " of " .. tostring(o.sent) .. " events"
        .. dhttp.snippet(body) .. note
    end
    if cfg.test_event_code then
      return "sent with test_event_code " .. cfg.test_event_code .. ": the events show in Events Manager >"
        .. " Test Events and are not used for ads; remove test_event_code in production" .. note
    end
    return note ~= "" and ("delivered" .. note) or nil
  end
  local err = error_of(body)
  local code = err and tonumber(err.code)
  local what = err and (" (code " .. tostring(err.code)
    .. (err.error_subcode and (", subcode " .. tostring(err.error_subcode)) or "") .. "): "
    .. tostring(err.message or "")) or (" (" .. o.status .. ")" .. dhttp.snippet(body))
  if code == M.TOKEN_CODE then
    return "Meta rejected the access_token" .. what .. ": it is invalid, expired or revoked; generate a new"
      .. " one in Events Manager > Settings > Conversions API and set access_token" .. trace(err)
  end
  if code and M.RATE_LIMIT_CODES[code] then
    return "Meta rate limit" .. what .. ": retrying with backoff; lower the integration's rate_limit if"
      .. " this persists" .. trace(err)
  end
  if o.class == "retry" then
    return "Meta is temporarily unavailable" .. what .. "; retrying with backoff" .. trace(err)
  end
  if code == 100 then
    return "Meta refused the events as invalid" .. what .. ": fix the mapping (see the payload) and"
      .. " replay the dead letters" .. trace(err)
  end
  if o.status == 404 or (code == 803) then
    return "Meta does not know pixel " .. tostring(cfg.pixel_id) .. what .. ": check pixel_id and"
      .. " api_version" .. trace(err)
  end
  return "Meta refused the request" .. what .. "; not retried" .. trace(err)
end

-- probe(cfg) → ok, message: reads the pixel with the token (checks both
-- without sending an event); with test_event_code it also sends one test
-- PageView, which shows in Events Manager > Test Events only
function M.probe(cfg)
  local p = prepare(cfg)
  local ok, res, err = pcall(core.http.request, { method = "GET", url = p.pixel_url,
    timeout_ms = cfg.timeout_ms or 10000 })
  if not ok then return false, "request not sent: " .. tostring(res) end
  if not res then return false, tostring(err) .. ": Meta (" .. p.host .. ") did not answer" end
  if res.status ~= 200 then
    return false, M.explain(cfg, { status = res.status, body = res.body,
                                   class = M.classify(res.status, res.body) })
  end
  if not cfg.test_event_code then
    return true, "pixel " .. tostring(cfg.pixel_id) .. " and access_token accepted (set test_event_code to"
      .. " also send a test event)"
  end
  local now = core.now()
  local ev = { event_name = "PageView", event_time = math.floor(now), event_id = "signal-check-"
    .. core.random_hex(6), action_source = "website", event_source_url = "https://signal.invalid/check",
    user_data = { client_user_agent = "Signal check", client_ip_address = "203.0.113.1" } }
  local o = M.send(cfg, { encode(ev) }, cfg.timeout_ms or 10000)
  if o.class == "delivered" then
    return true, "pixel " .. tostring(cfg.pixel_id) .. ": a test PageView was received (Events Manager >"
      .. " Test Events, code " .. cfg.test_event_code .. ")"
  end
  return false, M.explain(cfg, o) or ("the test event was not received: " .. tostring(o.error or o.status))
end

return M
