-- signal.destinations.ga4.send — Measurement Protocol requests and what
-- their answers mean.
--
--   POST {base_url}/mp/collect?measurement_id=G-…&api_secret=…
--        ({base_url}/debug/mp/collect with debug = true)
--
-- A batch holds up to 25 queued events of ONE client (batch_key: client_id,
-- user_id and consent must be the same for a whole request); send merges
-- them into one body { client_id, user_id, timestamp_micros, consent,
-- user_properties, events = […] }: the request's timestamp is the first
-- event's and each event carries its own (events[].timestamp_micros), the
-- user properties are the union (later events win). Bodies stay under 130
-- kB: a batch that would be larger is sent as several requests. An event
-- that waited in retries past GA4's 72 h backdating window goes without its
-- timestamp (recorded on arrival), and the outcome says so.
--
-- Outcomes: GA4 answers 2xx even to payloads it discards, so the limits are
-- enforced before sending (ga4/limits.lua); 2xx is delivered. With debug =
-- true the validation server answers {"validationMessages": […]}: none is
-- delivered (and says that debug records nothing), any is dropped with the
-- messages in the explanation. 408, 429, 5xx and network errors are retried;
-- other statuses are permanent. The api_secret never leaves this module:
-- the request record shows the URL with api_secret=[REDACTED].
local core = require "signal.core"
local cjson = require("cjson.safe").new()
local dhttp = require "signal.deliver.http"
local limits = require "signal.destinations.ga4.limits"

local type, ipairs, pairs, tostring, tonumber, next = type, ipairs, pairs, tostring, tonumber, next
local concat, format, sub, gsub = table.concat, string.format, string.sub, string.gsub
local encode, decode = cjson.encode, cjson.decode

local M = {}

M.COLLECT = "/mp/collect"
M.DEBUG = "/debug/mp/collect"

local function urlencode(s)
  return (gsub(s, "[^%w%-_%.~]", function(c) return format("%%%02X", c:byte()) end))
end

local prepared = setmetatable({}, { __mode = "k" })

-- prepare(cfg, debug?) → { url, shown_url, headers, host }, built once per
-- config (and per endpoint)
local function prepare(cfg, debug)
  local per = prepared[cfg]
  if not per then per = {}; prepared[cfg] = per end
  if debug == nil then debug = cfg.debug == true end
  local key = debug and "debug" or "collect"
  local p = per[key]
  if p then return p end
  local base = (cfg.base_url or "https://www.google-analytics.com") .. (debug and M.DEBUG or M.COLLECT)
    .. "?measurement_id=" .. urlencode(tostring(cfg.measurement_id)) .. "&api_secret="
  p = {
    url = base .. urlencode(tostring(cfg.api_secret)),
    shown_url = base .. "[REDACTED]",
    headers = { ["Content-Type"] = "application/json" },
    host = (cfg.base_url or ""):match("^%a+://([^/:]+)") or "www.google-analytics.com",
    debug = debug,
  }
  per[key] = p
  return p
end
M.prepare = prepare

-- batch_key(cfg, payload_json) → what must be equal for events to share a
-- request: client, user and consent
function M.batch_key(_, pj)
  local b = decode(pj)
  if type(b) ~= "table" then return "" end
  local c = type(b.consent) == "table" and b.consent or {}
  return tostring(b.client_id) .. "\0" .. tostring(b.user_id or "") .. "\0"
    .. tostring(c.ad_user_data or "") .. tostring(c.ad_personalization or "")
end

-- with_ts(json_object, ts) → the object with "timestamp_micros": ts first,
-- written as an integer (lua-cjson would write 1.776440230484e+15)
local function with_ts(json, ts)
  if not ts then return json end
  return '{"timestamp_micros":' .. format("%.0f", ts) .. "," .. sub(json, 2)
end

local function messages(body)
  local v = type(body) == "string" and decode(body) or nil
  local list = type(v) == "table" and v.validationMessages or nil
  if type(list) ~= "table" then return nil end
  return list
end
M.messages = messages

-- classify(status, body): the debug endpoint's messages make a 200 a drop
function M.classify(status, body)
  if status >= 200 and status < 300 then
    local list = messages(body)
    if list and list[1] ~= nil then return "dropped" end
    return "delivered"
  end
  if dhttp.RETRY_STATUS[status] or status >= 500 then return "retry" end
  return "permanent"
end

local RANK = { delivered = 1, dropped = 2, retry = 3, permanent = 4 }

-- bodies(docs, now) → the request bodies (JSON strings) for the decoded
-- payloads of one batch, and how many events lost a stale timestamp
function M.bodies(docs, now)
  local first = docs[1]
  local head = { client_id = first.client_id, user_id = first.user_id, consent = first.consent }
  local ups, stale = {}, 0
  local events = {}                      -- { json, ts }
  for _, d in ipairs(docs) do
    if type(d.user_properties) == "table" then
      for k, v in pairs(d.user_properties) do ups[k] = v end
    end
    local ts = tonumber(d.timestamp_micros)
    if ts and now * 1e6 - ts > limits.BACKDATE_S * 1e6 then ts, stale = nil, stale + 1 end
    for _, ev in ipairs(type(d.events) == "table" and d.events or {}) do
      events[#events + 1] = { json = encode(ev), ts = ts }
    end
  end
  if next(ups) then head.user_properties = ups end
  local head_json = encode(head)
  local out = {}
  local i = 1
  while i <= #events do
    local parts, size = {}, #head_json + 64
    local ts0 = events[i].ts
    while i <= #events and #parts < limits.MAX_EVENTS do
      local ev = events[i]
      -- one event alone is always sent (finish keeps it under the limit)
      local piece = #docs > 1 and with_ts(ev.json, ev.ts) or ev.json
      if #parts > 0 and size + #piece + 1 >= limits.MAX_BODY then break end
      parts[#parts + 1] = piece
      size = size + #piece + 1
      i = i + 1
    end
    out[#out + 1] = with_ts(sub(head_json, 1, -2) .. ',"events":[' .. concat(parts, ",") .. "]}", ts0)
  end
  return out, stale
end

-- send(cfg, batch, timeout_ms) → outcome
function M.send(cfg, batch, timeout_ms)
  local p = prepare(cfg)
  local docs = {}
  for _, pj in ipairs(batch) do
    local d = decode(pj)
    if type(d) == "table" and d.client_id then docs[#docs + 1] = d end
  end
  if #docs == 0 then
    return { class = "permanent", label = "error", error = "no GA4 body in the batch", duration_s = 0 }
  end
  local bodies, stale = M.bodies(docs, core.now())
  local worst, total = nil, 0
  for _, body in ipairs(bodies) do
    local o = dhttp.post({ url = p.url, shown_url = p.shown_url, headers = p.headers,
                           shown_headers = p.headers, body = body }, timeout_ms, M.classify)
    total = total + (o.duration_s or 0)
    if not worst or RANK[o.class] > RANK[worst.class] then worst = o end
  end
  worst.duration_s = total
  worst.requests = #bodies > 1 and #bodies or nil
  worst.stale = stale > 0 and stale or nil
  worst.debug = p.debug
  return worst
end

-- describe(list) → "fieldPath: description (CODE); …"
function M.describe(list)
  local out = {}
  for i, m in ipairs(list) do
    if i > 5 then out[#out + 1] = "… " .. (#list - 5) .. " more"; break end
    if type(m) == "table" then
      out[#out + 1] = (m.fieldPath and (tostring(m.fieldPath) .. ": ") or "") .. tostring(m.description or "?")
        .. (m.validationCode and (" (" .. tostring(m.validationCode) .. ")") or "")
    end
  end
  return concat(out, "; ")
end

-- explain(cfg, outcome) → what to fix, or nil
function M.explain(cfg, o)
  local note = o.stale and (" (" .. o.stale .. " event(s) older than 72 h sent without timestamp_micros:"
    .. " recorded on arrival)") or ""
  if not o.status then
    return tostring(o.error or "request failed") .. ": GA4 (" .. prepare(cfg).host .. ") did not answer; retrying"
  end
  if o.status >= 200 and o.status < 300 then
    if o.debug then
      local list = messages(o.body or o.response)
      if list and list[1] ~= nil then
        return "GA4 validation (debug = true; nothing recorded): " .. M.describe(list) .. note
      end
      return "GA4 validation (debug = true): valid, but the validation server records nothing; set"
        .. " debug = false to send to /mp/collect" .. note
    end
    return note ~= "" and ("delivered" .. note) or nil
  end
  if o.class == "retry" then
    return "GA4 answered " .. o.status .. "; retrying with backoff" .. dhttp.snippet(o.response)
  end
  if o.status == 401 or o.status == 403 then
    return "GA4 refused the request (" .. o.status .. "): check measurement_id (" .. tostring(cfg.measurement_id)
      .. ") and api_secret (Admin > Data streams > Measurement Protocol API secrets)"
  end
  if o.status == 404 then
    return "GA4 answered 404: check base_url (" .. tostring(cfg.base_url) .. ") and region"
  end
  return "GA4 refused the request (" .. o.status .. "); not retried" .. dhttp.snippet(o.response)
end

return M
