-- signal.destinations.webhook — POSTs each event to a URL of the customer's,
-- signed so the receiver can tell it came from Signal and was not replayed.
--
-- Payload: the canonical event as the pipeline enriched it (partner_attrs
-- included), or what the customer's scripts with `integration = "webhook"`
-- make of it (nested JSON allowed). batch_size 1 sends one JSON object per
-- request; above 1, a JSON array of up to batch_size events.
--
-- Signature (Stripe's scheme, which receivers already know how to check):
--   X-Signal-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(signing_secret, "<t>.<raw body>")>
-- A receiver recomputes the HMAC over the exact bytes it received, compares
-- in constant time and refuses timestamps older than its tolerance (5
-- minutes is usual), which stops replays. A retry is signed anew.
--
-- Outcomes: 2xx delivered; 408, 429, 5xx and network errors retried
-- (Retry-After honoured); any other status is permanent.
local core = require "signal.core"
local dhttp = require "signal.deliver.http"
local schema = require "signal.config.schema"

local type, pairs, tostring, floor = type, pairs, tostring, math.floor
local concat = table.concat
local hmac = core.hmac_sha256_hex

local M = {}

M.SIGNATURE_HEADER = "X-Signal-Signature"
M.MAX_BATCH = 500

---------------------------------------------------------------------------
-- settings

local function url(v)
  if not v:find("^https?://[^/%s?#]+") or v:find("%s") then
    return nil, "must be an http:// or https:// URL, got " .. schema.quote(v)
  end
  return true
end

-- Headers Signal sets itself cannot be configured.
local OWN = { ["content-type"] = true, ["content-length"] = true, host = true,
              ["x-signal-signature"] = true, ["transfer-encoding"] = true }

local function headers(v)
  for k, x in pairs(v) do
    if type(k) ~= "string" or not k:find("^[%w!#$%%&'*+.^_`|~-]+$") then
      return nil, "header names must be HTTP tokens, got " .. schema.quote(tostring(k))
    end
    if OWN[k:lower()] then return nil, "cannot set " .. k .. ": Signal sets it" end
    if type(x) ~= "string" or x:find("[%c]") then
      return nil, "header " .. k .. " must be a string without control characters"
    end
  end
  return true
end

local function secret(v)
  if #v < 16 then
    return nil, "must be at least 16 characters (a random string; the receiver verifies signatures with it)"
  end
  return true
end

M.settings = {
  fields = {
    { name = "url", type = "string", required = true, non_empty = true, checks = { url },
      description = "Where events are POSTed." },
    { name = "signing_secret", type = "string", secret = true, required = true, checks = { secret },
      description = "Key of the X-Signal-Signature HMAC (t=<unix>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">)." },
    { name = "headers", type = "any", default = {}, secret = true, checks = { function(v)
        if type(v) ~= "table" then return nil, "must be a table of header name = value" end
        return headers(v)
      end }, doc_type = "table (values secret)",
      description = "Extra request headers (e.g. an Authorization the receiver expects); their values"
        .. " are treated as secrets." },
    { name = "batch_size", type = "integer", min = 1, max = M.MAX_BATCH, default = 1,
      description = "Events per request: 1 sends a JSON object, more a JSON array." },
    { name = "timeout_ms", type = "integer", min = 1, max = 600000,
      description = "Timeout of each request (default: delivery.timeout_ms)." },
  },
}

---------------------------------------------------------------------------
-- sending

local prepared = setmetatable({}, { __mode = "k" })

local function prepare(cfg)
  local p = prepared[cfg]
  if p then return p end
  local h, shown = { ["Content-Type"] = "application/json" }, { ["Content-Type"] = "application/json" }
  for k, v in pairs(cfg.headers or {}) do
    h[k] = v
    -- configured headers often carry credentials: live events show names only
    shown[k] = "[REDACTED]"
  end
  p = { headers = h, shown = shown, host = cfg.url:match("^%a+://([^/:?#]+)") or cfg.url,
        -- a query string may carry a token: live events show the URL without it
        shown_url = (cfg.url:gsub("%?.*$", "?[REDACTED]")) }
  prepared[cfg] = p
  return p
end

-- signature(secret, t, body) → the X-Signal-Signature value
function M.signature(key, t, body)
  return "t=" .. t .. ",v1=" .. hmac(key, t .. "." .. body)
end

function M.classify(status)
  if status >= 200 and status < 300 then return "delivered" end
  if dhttp.RETRY_STATUS[status] or status >= 500 then return "retry" end
  return "permanent"
end

-- send(cfg, batch, timeout_ms) → outcome
function M.send(cfg, batch, timeout_ms)
  local p = prepare(cfg)
  local body = cfg.batch_size > 1 and ("[" .. concat(batch, ",") .. "]") or batch[1]
  local t = tostring(floor(core.now()))
  local h, shown = {}, {}
  for k, v in pairs(p.headers) do h[k] = v end
  for k, v in pairs(p.shown) do shown[k] = v end
  h[M.SIGNATURE_HEADER] = M.signature(cfg.signing_secret, t, body)
  shown[M.SIGNATURE_HEADER] = "t=" .. t .. ",v1=[REDACTED]"
  return dhttp.post({ url = cfg.url, shown_url = p.shown_url, headers = h, shown_headers = shown, body = body },
                    timeout_ms, M.classify)
end

function M.explain(cfg, o)
  if o.class == "delivered" then return nil end
  if not o.status then
    return tostring(o.error) .. ": the webhook at " .. prepare(cfg).host .. " did not answer; retrying"
  end
  if o.class == "retry" then
    return "the webhook answered " .. o.status .. "; retrying with backoff" .. dhttp.snippet(o.response)
  end
  if o.status == 401 or o.status == 403 then
    return "the webhook refused the request (" .. o.status .. "): check the headers it expects and that"
      .. " it verifies X-Signal-Signature with the same signing_secret" .. dhttp.snippet(o.response)
  end
  return "the webhook refused the request (" .. o.status .. "); not retried" .. dhttp.snippet(o.response)
end

---------------------------------------------------------------------------
-- the declaration

-- The default payload: the event with everything the pipeline added.
local function base(e)
  local p = {}
  for k, v in pairs(e) do p[k] = v end
  return p
end

return {
  type = "webhook",
  description = "POSTs each event (JSON, HMAC-signed) to a URL of yours",
  settings = M.settings,
  mapping = { presets = false, shape = "nested", base = base },
  delivery = {
    max_batch = M.MAX_BATCH,
    batch_size = function(cfg) return cfg.batch_size end,
    rate_limit = 100,
    rate_limit_key = function(cfg) return prepare(cfg).host end,
  },
  send = M.send,
  explain = M.explain,
  status = function(cfg) return { url = cfg.url, batch_size = cfg.batch_size } end,
  sandbox = "signal.destinations.webhook.sandbox",
  signature = M.signature,
  classify = M.classify,
}
