-- signal.destinations.ga4.payload — the last mapping step of a GA4 event:
-- the blueprint's table becomes a Measurement Protocol body for one event,
-- within GA4's limits.
--
--   local body, corrections = payload.finish(event, mapped, cfg)
--
-- What the blueprint (presets/ga4/, customer scripts) makes: `name` (the
-- handler's type: view_item, purchase … or, for an event no handler knows,
-- its own name) and the event's params as plain targets (`currency`,
-- `items`, `page_location` …; a `params` table is merged in too). A few
-- targets are the request's, not params: client_id, user_id,
-- user_properties (name → value) and timestamp_micros.
--
-- What finish adds, whatever the scripts did:
--   client_id         mapped, else signal.destinations.ga4.identity (the _ga
--                     cookie, else the anonymous id)
--   session_id,       unless mapped: the GA session (identity.lua) and 1 ms,
--   engagement_time_msec  so events show in realtime reports
--   timestamp_micros  the event time, unless older than 72 h (GA4 does not
--                     backdate further: the event is recorded on arrival)
--   consent           ad_user_data / ad_personalization from the event
--   user_properties   the integration's user_properties allow-list, read from
--                     the visitor's Amperity attributes (partner_attrs.amperity)
-- and then every limit of signal.destinations.ga4.limits; each change is a
-- correction (counted, shown on the live event). identify, group and alias
-- calls are not GA4 events: nothing is sent for them.
--
-- The result is one event's body: { client_id, user_id?, timestamp_micros?,
-- consent?, user_properties?, events = { { name, params } } }. The delivery
-- batches events of one client (ga4/send.lua merges them into one request).
local core = require "signal.core"
local cjson = require("cjson.safe").new()
local limits = require "signal.destinations.ga4.limits"
local identity = require "signal.destinations.ga4.identity"
local settings = require "signal.destinations.ga4.settings"
local corrections = require "signal.pipeline.corrections"

local type, pairs, ipairs, tostring, next, floor = type, pairs, ipairs, tostring, next, math.floor
local add = corrections.add

local M = {}

-- targets that are the request's, not the event's params
M.ENVELOPE = { name = true, params = true, client_id = true, user_id = true, user_properties = true,
               timestamp_micros = true }

-- calls that are not events in GA4
M.NOT_EVENTS = { identify = true, group = true, alias = true }

M.ENGAGEMENT_TIME_MSEC = 1

local function str(v)
  local tv = type(v)
  if tv == "string" then return v ~= "" and v or nil end
  if tv == "number" then return tostring(v) end
  return nil
end

local function user_properties(e, p, cfg, list)
  local ups = {}
  local pa = e.partner_attrs
  local attrs = type(pa) == "table" and pa.amperity or nil
  if type(attrs) == "table" then
    for _, up in ipairs(settings.user_property_list(cfg)) do
      local v = attrs[up.attr]
      if v ~= nil and v ~= "" then list = limits.user_property(up.name, v, e, cfg, list, ups) end
    end
  end
  -- scripts may set user_properties.<name> too
  if type(p.user_properties) == "table" then
    for k, v in pairs(p.user_properties) do
      if type(k) == "string" then list = limits.user_property(k, v, e, cfg, list, ups) end
    end
  end
  list = limits.cap_user_properties(ups, e, cfg, list)
  return next(ups) and ups or nil, list
end

local function timestamp(e, p, cfg, list)
  local t = tonumber(p.timestamp_micros)
  t = t and t / 1e6 or identity.time_s(e)
  if not t then return nil, list end
  local age = core.now() - t
  if age > limits.BACKDATE_S then
    return nil, add(list, e, cfg, "timestamp_too_old", "GA4 limit: the event is " .. floor(age / 3600)
      .. " h old and GA4 backdates at most 72 h: sent without timestamp_micros (recorded on arrival)")
  end
  if age < -60 then
    return nil, add(list, e, cfg, "timestamp_future",
      "GA4 limit: the event time is in the future: sent without timestamp_micros (recorded on arrival)")
  end
  -- whole milliseconds (rounded: 0.96 s is 959.9999… ms in binary), so the
  -- number survives JSON encoding exactly
  return floor(t * 1000 + 0.5) * 1000, list
end

-- trim_items(body, e, cfg, list) → list: items dropped from the end until the
-- body is under MAX_BODY (only items can make one event that large)
local function fit(body, e, cfg, list)
  local items = body.events[1].params.items
  if type(items) ~= "table" then return list end
  local json = cjson.encode(body)
  if not json or #json < limits.MAX_BODY then return list end
  local n0 = #items
  while #items > 1 and #json >= limits.MAX_BODY do
    local keep = floor(#items * limits.MAX_BODY / #json * 0.95)
    if keep >= #items then keep = #items - 1 end
    if keep < 1 then keep = 1 end
    for i = #items, keep + 1, -1 do items[i] = nil end
    json = cjson.encode(body)
  end
  return add(list, e, cfg, "body_too_large", "GA4 limit: the request body must be under 130 kB; sent "
    .. #items .. " of " .. n0 .. " items")
end

-- finish(event, mapped, cfg) → body | nil, corrections (see the top)
function M.finish(e, p, cfg)
  if M.NOT_EVENTS[e.type] then return nil end
  local name, list = limits.event_name(p.name, e, cfg, nil)
  if not name then return nil, list end

  local raw = {}
  if type(p.params) == "table" then
    for k, v in pairs(p.params) do raw[k] = v end
  end
  for k, v in pairs(p) do
    if not M.ENVELOPE[k] then raw[k] = v end
  end
  if raw.session_id == nil then raw.session_id = identity.session_id(e) end
  if raw.engagement_time_msec == nil then raw.engagement_time_msec = M.ENGAGEMENT_TIME_MSEC end
  local params
  params, list = limits.params(raw, e, cfg, list)

  local body = { client_id = str(p.client_id) or identity.client_id(e) }
  if not body.client_id then
    return nil, add(list, e, cfg, "no_client_id",
      "GA4 needs a client_id: the event has no _ga cookie, anonymous id or _dfdid; not sent")
  end
  local uid = str(p.user_id)
  if uid and #uid > limits.MAX_USER_ID then
    list = add(list, e, cfg, "user_id_too_long", "GA4 limit: user_id is longer than 256 characters; not sent")
    uid = nil
  end
  body.user_id = uid
  body.timestamp_micros, list = timestamp(e, p, cfg, list)
  body.consent = identity.consent(e)
  body.user_properties, list = user_properties(e, p, cfg, list)
  body.events = { { name = name, params = params } }
  list = fit(body, e, cfg, list)
  return body, list
end

return M
