-- signal.pipeline.event — one Segment/Datafly message → the canonical event.
--
-- Input is one decoded message as datafly.js, analytics.js,
-- @segment/analytics-node and RudderStack send it (camelCase: userId,
-- anonymousId, messageId, context.userAgent …). Output is the canonical
-- snake_case event of lua/signal/README.md, which enrichment, blueprints and
-- customer scripts see. This runs once per event on the hot path: key
-- conversions come from pre-built tables (and a bounded cache), nested
-- objects that need no conversion are reused rather than copied, and the
-- error list is only allocated for a bad message.
--
-- Rules (each violation is one entry of the returned error list):
--   * `type` is one of track|page|screen|identify|group|alias; the endpoint's
--     ctx.type_hint fills it when absent and must agree when present;
--   * track needs a non-empty string `event`; group needs `groupId`; alias
--     needs `previousId`; every message needs userId, anonymousId or a
--     canonical_id (the _dfdid cookie);
--   * timestamp, sentAt and originalTimestamp must be ISO-8601 date-times.
--
-- Conversion: top-level and context keys camelCase → snake_case, and the keys
-- of context.page/campaign/screen/library/session/device/os/geo/vendor_ids;
-- properties, traits, context.traits and context.consent are never touched
-- (the tables are shared with the input, not copied). For identify,
-- context.traits is merged under traits (traits win). When both spellings of
-- a key are sent (userId and user_id) the camelCase one wins. Unknown fields
-- are kept; top-level nulls are dropped.
--
-- Set by Signal, never taken from the message: `pipeline_key` (ctx),
-- `received_at` (ctx), `canonical_id` (ctx when set; a message's own
-- canonicalId is used only when ctx has none, e.g. a server forwarding the
-- visitor's _dfdid). Stripped: writeKey/pipelineKey (credentials-ish) and
-- `partner_attrs`/`identity` (computed server-side; a client must not be
-- able to inject profile attributes or stitched traits).
--
-- context.ip / context.user_agent: for browser traffic (ctx.server_side not
-- set) the connection's values (ctx.ip — already X-Forwarded-For-resolved by
-- the collector — and the User-Agent header) win, so a page cannot spoof
-- them. For server-side sources (ctx.server_side = true: /v1/events and
-- Segment server SDKs, which send events on behalf of a visitor) the
-- message's own context.ip / userAgent is kept and ctx only fills gaps.
--
-- Timestamp: `timestamp` as sent; else originalTimestamp corrected for client
-- clock skew as Segment does (received_at - (sentAt - originalTimestamp)),
-- else originalTimestamp; else received_at. `sent_at` falls back to
-- ctx.sent_at (a batch's sentAt).

local core = require "signal.core"

local type, pairs, ipairs, next, tostring = type, pairs, ipairs, next, tostring
local floor = math.floor
local find, gsub, lower, sub, format, match = string.find, string.gsub, string.lower, string.sub,
  string.format, string.match
local os_date = os.date
local uuid, now = core.uuid, core.now
local null = core.null

local M = {}

M.TYPES = { track = true, page = true, screen = true, identify = true, group = true, alias = true }

-- endpoint path → type_hint for ctx
M.PATH_TYPES = {
  ["/v1/t"] = "track", ["/v1/p"] = "page", ["/v1/i"] = "identify",
  ["/v1/g"] = "group", ["/v1/s"] = "screen", ["/v1/a"] = "alias",
  ["/v1/track"] = "track", ["/v1/page"] = "page", ["/v1/identify"] = "identify",
  ["/v1/group"] = "group", ["/v1/screen"] = "screen", ["/v1/alias"] = "alias",
}

---------------------------------------------------------------------------
-- key conversion

-- wire names seen on (nearly) every event, converted once here
local SNAKE = {
  userId = "user_id", anonymousId = "anonymous_id", messageId = "message_id",
  groupId = "group_id", previousId = "previous_id", canonicalId = "canonical_id",
  sentAt = "sent_at", receivedAt = "received_at", originalTimestamp = "original_timestamp",
  writeKey = "write_key", pipelineKey = "pipeline_key", partnerAttrs = "partner_attrs",
  userAgent = "user_agent", userAgentData = "user_agent_data", vendorIds = "vendor_ids",
  adTrackingEnabled = "ad_tracking_enabled", advertisingId = "advertising_id",
  externalIds = "external_ids", groupType = "group_type",
}
for _, k in ipairs({ "type", "event", "name", "properties", "traits", "context", "timestamp",
                     "integrations", "channel", "version", "category", "ip", "locale", "timezone",
                     "page", "campaign", "screen", "library", "session", "device", "os", "geo",
                     "consent", "url", "path", "referrer", "title", "search", "source", "medium",
                     "term", "content", "width", "height", "density", "id", "count", "country",
                     "region", "city", "ga", "fbp", "fbc", "ttp", "user_id", "anonymous_id",
                     "message_id", "group_id", "previous_id", "canonical_id", "sent_at",
                     "original_timestamp", "user_agent", "vendor_ids" }) do
  SNAKE[k] = k
end

local cache, cache_n = {}, 0
local CACHE_MAX = 4096   -- bounded: keys come from the network

-- snake(s): "anonymousId" → "anonymous_id", "HTTPServer" → "http_server".
local function snake(s)
  local r = SNAKE[s] or cache[s]
  if r then return r end
  if not find(s, "%u") then
    r = s
  else
    r = gsub(s, "([%l%d])(%u)", "%1_%2")
    r = lower((gsub(r, "(%u)(%u%l)", "%1_%2")))
  end
  if cache_n >= CACHE_MAX then cache, cache_n = {}, 0 end
  cache[s] = r
  cache_n = cache_n + 1
  return r
end
M.snake = snake

-- put(t, k, sk, v): camelCase spelling wins over an already-snake one
local function put(t, k, sk, v)
  if k ~= sk or t[sk] == nil then t[sk] = v end
end

-- objects under context whose keys are converted
local CONTEXT_NESTED = {
  page = true, campaign = true, screen = true, library = true, session = true,
  device = true, os = true, geo = true, vendor_ids = true,
}

-- snake_keys(t) → t itself when no key changes, else a converted copy
local function snake_keys(t)
  local change = false
  for k in pairs(t) do
    if type(k) == "string" and snake(k) ~= k then change = true; break end
  end
  if not change then return t end
  local out = {}
  for k, v in pairs(t) do
    if type(k) == "string" then put(out, k, snake(k), v) else out[k] = v end
  end
  return out
end

local function convert_context(c)
  local out = {}
  for k, v in pairs(c) do
    if type(k) == "string" then
      local sk = snake(k)
      if CONTEXT_NESTED[sk] and type(v) == "table" then v = snake_keys(v) end
      put(out, k, sk, v)
    end
  end
  return out
end

-- top-level fields never taken from the message
local DROP = {
  write_key = true, pipeline_key = true, partner_attrs = true, identity = true, received_at = true,
}

-- canonical name → wire name, for messages the sender understands
local WIRE = {
  user_id = "userId", anonymous_id = "anonymousId", group_id = "groupId",
  previous_id = "previousId", canonical_id = "canonicalId", message_id = "messageId",
  timestamp = "timestamp", sent_at = "sentAt", original_timestamp = "originalTimestamp",
}

---------------------------------------------------------------------------
-- time

local function leap(y) return (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0 end
local MDAYS = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }

-- days since 1970-01-01 of a civil date (proleptic Gregorian)
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local doy = floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end
-- Shared with every module that turns dates into epoch seconds (the
-- payloads' timestamps, HTTP-date Retry-After): one implementation.
M.days_from_civil = days_from_civil

-- parse_iso8601(s) → seconds since epoch (float), or nil.
-- Accepts YYYY-MM-DDThh:mm:ss[.fraction](Z|±hh:mm), fraction 1-9 digits.
function M.parse_iso8601(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, h, mi, se, rest = match(s, "^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)(.*)$")
  if not y then return nil end
  y, mo, d, h, mi, se = y + 0, mo + 0, d + 0, h + 0, mi + 0, se + 0
  if mo < 1 or mo > 12 or d < 1 or h > 23 or mi > 59 or se > 60 then return nil end
  if d > MDAYS[mo] and not (mo == 2 and d == 29 and leap(y)) then return nil end
  local frac = 0
  if sub(rest, 1, 1) == "." then
    local digits, tail = match(rest, "^%.(%d+)(.*)$")
    if not digits or #digits > 9 then return nil end
    frac = ("0." .. digits) + 0
    rest = tail
  end
  local offset
  if rest == "Z" then
    offset = 0
  else
    local sign, oh, om = match(rest, "^([+-])(%d%d):(%d%d)$")
    if not sign then return nil end
    oh, om = oh + 0, om + 0
    if oh > 23 or om > 59 then return nil end
    offset = (oh * 3600 + om * 60) * (sign == "-" and -1 or 1)
  end
  return days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se + frac - offset
end
local parse_iso8601 = M.parse_iso8601

-- is_iso8601(s) → true for a strict ISO-8601 date-time string
function M.is_iso8601(s)
  return parse_iso8601(s) ~= nil
end

local last_sec, last_prefix

-- iso8601(t) → "2026-04-17T15:37:10.484Z" (UTC, milliseconds)
function M.iso8601(t)
  local sec = floor(t)
  local ms = floor((t - sec) * 1000 + 0.5)
  if ms >= 1000 then sec, ms = sec + 1, ms - 1000 end
  if sec ~= last_sec then
    last_prefix = os_date("!%Y-%m-%dT%H:%M:%S", sec)
    last_sec = sec
  end
  return format("%s.%03dZ", last_prefix, ms)
end
local iso8601 = M.iso8601

---------------------------------------------------------------------------
-- normalize

local function id_string(v)
  if type(v) == "number" then
    if v == floor(v) and v > -1e15 and v < 1e15 then return format("%d", v) end
    return tostring(v)
  end
  return v
end

local ID_FIELDS = { "user_id", "anonymous_id", "group_id", "previous_id", "canonical_id" }
local TIME_FIELDS = { "timestamp", "sent_at", "original_timestamp" }
local OBJECT_FIELDS = { "properties", "traits" }

local function fail(errs, msg)
  errs = errs or {}
  errs[#errs + 1] = msg
  return errs
end

local EMPTY = {}

-- normalize(msg, ctx) → ev | nil, { reason, … }
-- ctx = { canonical_id, pipeline_key, ip, user_agent, received_at (epoch
-- seconds or ISO string; default now), type_hint, server_side, sent_at }
function M.normalize(msg, ctx)
  if type(msg) ~= "table" then return nil, { "message must be a JSON object" } end
  ctx = ctx or EMPTY
  local ev, context, errs = {}, nil, nil

  for k, v in pairs(msg) do
    if type(k) == "string" and v ~= null then
      local sk = SNAKE[k] or snake(k)
      if sk == "context" then
        context = v
      elseif not DROP[sk] then
        put(ev, k, sk, v)
      end
    end
  end

  -- type
  local t, hint = ev.type, ctx.type_hint
  if t == nil then
    t = hint
    ev.type = t
    if t == nil then errs = fail(errs, "type: is required (track, page, screen, identify, group or alias)") end
  elseif not M.TYPES[t] then
    errs = fail(errs, "type: must be one of track, page, screen, identify, group, alias")
    t = nil
  elseif hint and t ~= hint then
    errs = fail(errs, 'type: "' .. t .. '" does not match the endpoint, which takes ' .. hint .. " events")
  end

  if t == "track" then
    local e = ev.event
    if type(e) ~= "string" or not find(e, "%S") then
      errs = fail(errs, 'event: track events need a non-empty string "event"')
    end
  end
  local name = ev.name
  if name ~= nil and type(name) ~= "string" then
    if type(name) == "number" then ev.name = tostring(name)
    else errs = fail(errs, "name: must be a string") end
  end

  -- ids: strings (numbers accepted, as Segment does); "" counts as absent
  if ctx.canonical_id ~= nil then ev.canonical_id = ctx.canonical_id end
  for i = 1, #ID_FIELDS do
    local f = ID_FIELDS[i]
    local v = ev[f]
    if v ~= nil then
      v = id_string(v)
      if type(v) ~= "string" then
        errs = fail(errs, WIRE[f] .. ": must be a string")
        v = nil
      elseif v == "" then
        v = nil
      end
      ev[f] = v
    end
  end
  if ev.user_id == nil and ev.anonymous_id == nil and ev.canonical_id == nil then
    errs = fail(errs, "userId or anonymousId is required")
  end
  if t == "group" and ev.group_id == nil then errs = fail(errs, "groupId: is required for group events") end
  if t == "alias" and ev.previous_id == nil then errs = fail(errs, "previousId: is required for alias events") end

  -- times
  if ev.sent_at == nil then ev.sent_at = ctx.sent_at end
  for i = 1, #TIME_FIELDS do
    local f = TIME_FIELDS[i]
    local v = ev[f]
    if v ~= nil and parse_iso8601(v) == nil then
      errs = fail(errs, WIRE[f] .. ": must be an ISO-8601 date-time (e.g. 2026-04-17T15:37:10.484Z)")
    end
  end

  -- objects
  for i = 1, #OBJECT_FIELDS do
    local f = OBJECT_FIELDS[i]
    if ev[f] ~= nil and type(ev[f]) ~= "table" then errs = fail(errs, f .. ": must be an object") end
  end
  if context ~= nil and type(context) ~= "table" then
    errs = fail(errs, "context: must be an object")
  end

  local mid = ev.message_id
  if mid ~= nil then
    mid = id_string(mid)
    if type(mid) ~= "string" then errs = fail(errs, "messageId: must be a string") end
  end

  if errs then return nil, errs end

  -- Signal's own fields
  if mid == nil or mid == "" then mid = uuid() end
  ev.message_id = mid
  ev.pipeline_key = ctx.pipeline_key
  local received = ctx.received_at
  local received_s
  if type(received) == "number" then
    received_s = received
    received = iso8601(received)
  elseif received == nil then
    received_s = now()
    received = iso8601(received_s)
  end
  ev.received_at = received

  if ev.timestamp == nil then
    local orig = ev.original_timestamp
    if orig ~= nil then
      local sent = ev.sent_at
      received_s = received_s or parse_iso8601(received)
      if sent ~= nil and received_s then
        ev.timestamp = iso8601(received_s - (parse_iso8601(sent) - parse_iso8601(orig)))
      else
        ev.timestamp = orig
      end
    else
      ev.timestamp = received
    end
  end

  local c = context and convert_context(context) or {}
  ev.context = c
  if ctx.server_side then
    if c.ip == nil then c.ip = ctx.ip end
    if c.user_agent == nil then c.user_agent = ctx.user_agent end
  else
    if ctx.ip ~= nil then c.ip = ctx.ip end
    if ctx.user_agent ~= nil then c.user_agent = ctx.user_agent end
  end

  if t == "identify" then
    local ct = c.traits
    if type(ct) == "table" and next(ct) ~= nil then
      local merged = {}
      for k, v in pairs(ct) do merged[k] = v end
      local tr = ev.traits
      if tr then
        for k, v in pairs(tr) do merged[k] = v end
      end
      ev.traits = merged
    end
  end

  return ev
end

---------------------------------------------------------------------------
-- identifiers

local function present(v)
  if type(v) == "number" then return id_string(v) end
  if type(v) == "string" and find(v, "%S") then return v end
  return nil
end

local function table_or_empty(v)
  return type(v) == "table" and v or EMPTY
end

-- identifiers(ev[, out]) → { canonical_id, anonymous_id, user_id, email, phone }
-- The event's own values win over those stitched from earlier identifies
-- (ev.identity). email/phone come from traits, context.traits, properties
-- (identify only) then ev.identity. Pass `out` to reuse a table.
function M.identifiers(ev, out)
  out = out or {}
  local traits = table_or_empty(ev.traits)
  local ctx_traits = table_or_empty(table_or_empty(ev.context).traits)
  local props = ev.type == "identify" and table_or_empty(ev.properties) or EMPTY
  local identity = table_or_empty(ev.identity)
  out.canonical_id = present(ev.canonical_id)
  out.anonymous_id = present(ev.anonymous_id) or present(identity.anonymous_id)
  out.user_id = present(ev.user_id) or present(identity.user_id)
  out.email = present(traits.email) or present(ctx_traits.email) or present(props.email)
    or present(identity.email)
  out.phone = present(traits.phone) or present(ctx_traits.phone) or present(props.phone)
    or present(identity.phone)
  return out
end

return M
