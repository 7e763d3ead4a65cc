-- signal.destinations.meta_capi.payload — the last mapping step of a Meta
-- server event: the blueprint's table becomes one element of the request's
-- data[] array.
--
--   local server_event, corrections = payload.finish(event, mapped, cfg)
--
-- What the blueprint (presets/meta_capi/, customer scripts) makes:
-- event_name (the handler's type: PageView, Purchase … or, for an event no
-- handler knows, its own name as a custom event), event_source_url,
-- user_data.* as plain values (em = "Jane.Doe@Example.com") and
-- custom_data.*.
--
-- What finish does, whatever the scripts did:
--   event_time     the event time in Unix seconds. Older than 7 days: the
--                  event is not sent (Meta refuses the WHOLE request for
--                  one such event); in the future: now
--   event_id       the event's messageId, always: the browser pixel's
--                  eventID is the same id, so Meta deduplicates the two
--   action_source  the integration's (default website); website events
--                  without event_source_url or client_user_agent are not
--                  sent either (Meta would refuse the request)
--   user_data      every customer information parameter normalized and
--                  hashed (meta_capi/user_data.lua: never hashed twice);
--                  client_ip_address, client_user_agent, fbp and fbc (the
--                  cookie, or built from fbclid) as they are
--   custom_data    currency upper-cased, value and num_items numbers,
--                  content_ids strings, plus the custom_data_attributes
--                  allow-list from the visitor's Amperity attributes; a
--                  pass-through event's properties land here too
-- Each change or refusal is a correction (counted, shown on the live
-- event). identify, group and alias calls are not conversions: nothing is
-- sent for them.
local core = require "signal.core"
local ud = require "signal.destinations.meta_capi.user_data"
local settings = require "signal.destinations.meta_capi.settings"
local corrections = require "signal.pipeline.corrections"
local event = require "signal.pipeline.event"

local type, pairs, ipairs, tostring, tonumber, floor = type, pairs, ipairs, tostring, tonumber, math.floor
local upper = string.upper
local add, utf8_len, utf8_cut = corrections.add, corrections.utf8_len, corrections.utf8_cut

local M = {}

M.MAX_AGE_S = 7 * 86400
M.MAX_EVENT_NAME = 50
M.NOT_EVENTS = { identify = true, group = true, alias = true }

local function str(v)
  local tv = type(v)
  if tv == "string" then return v ~= "" and v or nil end
  if tv == "number" then return tostring(v) end
  return nil
end

local function num(v)
  local n = tonumber(v)
  if n and n == n and n ~= math.huge and n ~= -math.huge then return n end
  return nil
end

local function time_of(e)
  return event.parse_iso8601(e.timestamp) or event.parse_iso8601(e.received_at)
end

local function user_data(e, mapped, t)
  local out = {}
  if type(mapped) == "table" then
    for _, k in ipairs(ud.HASHED) do
      local v = mapped[k]
      if v ~= nil then out[k] = ud.hashed(k, v) end
    end
    for _, k in ipairs(ud.PLAIN) do out[k] = str(mapped[k]) end
  end
  local ctx = type(e.context) == "table" and e.context or {}
  out.client_ip_address = out.client_ip_address or str(ctx.ip)
  out.client_user_agent = out.client_user_agent or str(ctx.user_agent)
  out.fbc = out.fbc or ud.fbc(e, t)
  out.fbp = out.fbp or ud.fbp(e)
  return out
end

-- content_ids: a list of strings (a single id or "a,b" text is made one)
local function ids(v)
  if type(v) == "table" then
    local out = {}
    for _, x in ipairs(v) do
      local s = str(x)
      if s then out[#out + 1] = s end
    end
    return out[1] and out or nil
  end
  local s = str(v)
  if not s then return nil end
  local out = {}
  for x in s:gmatch("[^,]+") do out[#out + 1] = x end
  return out
end

-- targets that are the server event's own; any other top-level target (a
-- pass-through event's properties) goes into custom_data
M.ENVELOPE = { event_name = true, event_time = true, event_id = true, action_source = true,
               event_source_url = true, user_data = true, custom_data = true, opt_out = true }

local function custom_data(e, p, cfg)
  local out = {}
  local mapped = p.custom_data
  if type(mapped) == "table" then
    for k, v in pairs(mapped) do out[k] = v end
  end
  for k, v in pairs(p) do
    if not M.ENVELOPE[k] and type(k) == "string" and out[k] == nil then out[k] = v end
  end
  if out.currency ~= nil then out.currency = str(out.currency) and upper(str(out.currency)) or nil end
  if out.value ~= nil then out.value = num(out.value) end
  if out.num_items ~= nil then out.num_items = num(out.num_items) end
  if out.predicted_ltv ~= nil then out.predicted_ltv = num(out.predicted_ltv) end
  if out.content_ids ~= nil then out.content_ids = ids(out.content_ids) end
  local pa = e.partner_attrs
  local attrs = type(pa) == "table" and pa.amperity or nil
  if type(attrs) == "table" then
    for _, a in ipairs(settings.attribute_list(cfg)) do
      local v = attrs[a.attr]
      if v ~= nil and v ~= "" and out[a.key] == nil then out[a.key] = v end
    end
  end
  return next(out) and out or nil
end

local function event_name(raw, e, cfg, list)
  local name = str(raw)
  if not name then
    return nil, add(list, e, cfg, "event_name_missing", "Meta needs an event_name; not sent")
  end
  if utf8_len(name) > M.MAX_EVENT_NAME then
    local cut = utf8_cut(name, M.MAX_EVENT_NAME)
    list = add(list, e, cfg, "event_name_truncated", "Meta limit: event name '" .. name
      .. "' is longer than 50 characters; sent as '" .. cut .. "'")
    name = cut
  end
  return name, list
end

-- finish(event, mapped, cfg) → server event | nil, corrections (see the top)
function M.finish(e, p, cfg)
  if M.NOT_EVENTS[e.type] then return nil end
  local name, list = event_name(p.event_name, e, cfg, nil)
  if not name then return nil, list end
  local now = core.now()
  local t = time_of(e) or now
  if now - t > M.MAX_AGE_S then
    return nil, add(list, e, cfg, "event_too_old", "Meta refuses events older than 7 days (the event is "
      .. floor((now - t) / 86400) .. " days old, and one such event fails the whole request); not sent")
  end
  if t - now > 60 then
    list = add(list, e, cfg, "event_time_future", "Meta refuses event times in the future; sent with the"
      .. " time it was processed")
    t = now
  end
  local source = (cfg and cfg.action_source) or "website"
  local out = {
    event_name = name,
    event_time = floor(t),
    event_id = str(e.message_id),
    action_source = source,
    event_source_url = str(p.event_source_url),
    user_data = user_data(e, p.user_data, t),
    custom_data = custom_data(e, p, cfg),
    opt_out = p.opt_out == true or nil,
  }
  if out.event_source_url == nil then
    local ctx = type(e.context) == "table" and e.context or {}
    out.event_source_url = type(ctx.page) == "table" and str(ctx.page.url) or nil
  end
  if source == "website" and (not out.event_source_url or not out.user_data.client_user_agent) then
    return nil, add(list, e, cfg, "website_fields_missing", "Meta requires event_source_url and"
      .. " client_user_agent for website events (this one has no " .. (out.event_source_url
      and "user agent" or "page URL") .. "), and refuses the whole request without them; not sent")
  end
  return out, list
end

return M
