-- signal.destinations.ga4.sandbox — GA4's Measurement Protocol in `signal
-- sandbox`, for demos and specs:
--
--   POST /mp/collect?measurement_id=G-…&api_secret=…
--        204, always, as Google answers (even to what it discards); the
--        events of a valid request with the fixture's api_secret are
--        "collected", the others discarded with the reason
--   POST /debug/mp/collect?…
--        200 {"validationMessages":[{fieldPath, description, validationCode}]},
--        nothing collected
--   GET  /_sandbox/ga4   {"collected":[…], "discarded":[…]} (newest last)
--
-- The validation rules are written here independently of the destination's
-- own limits (ga4/limits.lua), from Google's documentation: the stand-in is
-- the vendor, so a spec that passes against it does not merely check the
-- destination against itself. Rules: a JSON object under 130 kB; client_id
-- required; user_id ≤ 256; timestamp_micros (request or event) at most 72 h
-- old and not in the future; 1–25 events; event names ≤ 40 characters,
-- letters/digits/_, starting with a letter, not reserved (and no _, ga_,
-- google_, firebase_ prefix); ≤ 25 params, same name rules, string values
-- ≤ 100 characters (page_location 1000, page_referrer 420, page_title 300),
-- only strings, numbers and items; ≤ 200 items, each an object with
-- item_id or item_name and ≤ 27 custom params; ≤ 25 user properties, names
-- ≤ 24, values ≤ 36; consent values GRANTED or DENIED. The stand-in does not
-- check api_secret on /debug (Google's validation server does not either).
--
-- Fixture: { "ga4": { "api_secret": "…" } } (or "api_secrets": {"G-…": "…"}).
local core = require "signal.core"
local cjson = require("cjson.safe").new()
local http = require "signal.http.response"

local type, pairs, ipairs, tostring, tonumber = type, pairs, ipairs, tostring, tonumber
local find, sub, byte = string.find, string.sub, string.byte

local M = { counters = { "ga4", "ga4_debug" }, control = {} }

M.LOG_MAX = 2000

local RESERVED_EVENTS = {}
for _, n in ipairs({ "ad_activeview", "ad_click", "ad_exposure", "ad_impression", "ad_query", "ad_reward",
  "adunit_exposure", "app_background", "app_clear_data", "app_exception", "app_install", "app_remove",
  "app_store_refund", "app_store_subscription_cancel", "app_store_subscription_convert",
  "app_store_subscription_renew", "app_update", "app_upgrade", "error", "first_open", "first_visit",
  "in_app_purchase", "os_update", "screen_view", "session_start", "user_engagement" }) do
  RESERVED_EVENTS[n] = true
end
local RESERVED_UP = { first_open_time = true, first_visit_time = true, last_deep_link_referrer = true,
                      user_id = true, first_open_after_install = true }
local PREFIXES = { "_", "ga_", "google_", "firebase_" }
local VALUE_MAX = { page_location = 1000, page_referrer = 420, page_title = 300 }
local ITEM_FIELDS = {}
for _, n in ipairs({ "item_id", "item_name", "affiliation", "coupon", "discount", "index", "item_brand",
  "item_category", "item_category2", "item_category3", "item_category4", "item_category5", "item_list_id",
  "item_list_name", "item_variant", "location_id", "price", "quantity" }) do
  ITEM_FIELDS[n] = true
end

local secrets, default_secret
local collected, discarded = {}, {}

function M.load(f)
  local g = type(f.ga4) == "table" and f.ga4 or {}
  default_secret = g.api_secret
  secrets = type(g.api_secrets) == "table" and g.api_secrets or {}
  collected, discarded = {}, {}
end

function M.match(path)
  return path == "/mp/collect" or path == "/debug/mp/collect"
end

function M.kind(path)
  return path == "/mp/collect" and "ga4" or "ga4_debug"
end

local function chars(s)
  local n = 0
  for i = 1, #s do
    local b = byte(s, i)
    if b < 0x80 or b >= 0xC0 then n = n + 1 end
  end
  return n
end

local function reserved_prefix(name)
  for _, p in ipairs(PREFIXES) do
    if sub(name, 1, #p) == p then return true end
  end
  return false
end

local function valid_name(s, max)
  return type(s) == "string" and #s <= max and find(s, "^%a[%w_]*$") ~= nil
end

-- validate(body, now) → list of validation messages (empty: valid)
function M.validate(raw, now)
  local out = {}
  local function msg(path, description, code)
    out[#out + 1] = { fieldPath = path, description = description, validationCode = code }
  end
  if #raw >= 130000 then msg("", "Post body must be smaller than 130kB.", "VALUE_OUT_OF_BOUNDS") end
  local b = cjson.decode(raw)
  if type(b) ~= "table" or b[1] ~= nil then
    msg("", "Unable to parse Measurement Protocol JSON payload.", "VALUE_INVALID")
    return out
  end
  now = now or core.now()
  local function ts(path, v)
    if v == nil then return end
    local t = tonumber(v)
    if not t then return msg(path, "timestamp_micros must be a number.", "VALUE_INVALID") end
    if now * 1e6 - t > 72 * 3600 * 1e6 then
      msg(path, "Measurement timestamp_micros is more than 72 hours in the past.", "VALUE_OUT_OF_BOUNDS")
    elseif t - now * 1e6 > 60 * 1e6 then
      msg(path, "Measurement timestamp_micros is in the future.", "VALUE_OUT_OF_BOUNDS")
    end
  end
  if type(b.client_id) ~= "string" or b.client_id == "" then
    msg("client_id", "Measurement requires a client_id.", "VALUE_REQUIRED")
  end
  if b.user_id ~= nil and (type(b.user_id) ~= "string" or #b.user_id > 256) then
    msg("user_id", "user_id must be a string of at most 256 characters.", "VALUE_INVALID")
  end
  ts("timestamp_micros", b.timestamp_micros)
  if type(b.consent) == "table" then
    for k, v in pairs(b.consent) do
      if v ~= "GRANTED" and v ~= "DENIED" then
        msg("consent." .. tostring(k), "Consent values must be GRANTED or DENIED.", "VALUE_INVALID")
      end
    end
  end
  local ups = b.user_properties
  if ups ~= nil then
    local n = 0
    for k, v in pairs(type(ups) == "table" and ups or {}) do
      n = n + 1
      local p = "user_properties." .. tostring(k)
      if RESERVED_UP[k] or reserved_prefix(tostring(k)) then
        msg(p, "User property name " .. tostring(k) .. " is reserved.", "NAME_RESERVED")
      elseif not valid_name(k, 24) then
        msg(p, "User property name " .. tostring(k) .. " is invalid.", "NAME_INVALID")
      end
      local val = type(v) == "table" and v.value or nil
      if type(val) == "string" and chars(val) > 36 then
        msg(p .. ".value", "User property value is longer than 36 characters.", "VALUE_OUT_OF_BOUNDS")
      elseif type(val) ~= "string" and type(val) ~= "number" then
        msg(p .. ".value", "User property value must be a string or a number.", "VALUE_INVALID")
      end
    end
    if n > 25 then msg("user_properties", "At most 25 user properties.", "EXCEEDED_MAX_ENTITIES") end
  end
  local events = b.events
  if type(events) ~= "table" or events[1] == nil then
    msg("events", "Measurement requires at least one event.", "VALUE_REQUIRED")
    return out
  end
  if #events > 25 then msg("events", "At most 25 events per request.", "EXCEEDED_MAX_ENTITIES") end
  for i, ev in ipairs(events) do
    local p = "events[" .. (i - 1) .. "]"
    local name = type(ev) == "table" and ev.name or nil
    if not valid_name(name, 40) then
      msg(p .. ".name", "Event name " .. tostring(name) .. " is invalid.", "NAME_INVALID")
    elseif RESERVED_EVENTS[name] or reserved_prefix(name) or find(name, "^dynamic_link_")
           or find(name, "^notification_") then
      msg(p .. ".name", "Event name " .. name .. " is reserved.", "NAME_RESERVED")
    end
    ts(p .. ".timestamp_micros", type(ev) == "table" and ev.timestamp_micros or nil)
    local params = type(ev) == "table" and ev.params or nil
    local n = 0
    for k, v in pairs(type(params) == "table" and params or {}) do
      n = n + 1
      local pp = p .. ".params." .. tostring(k)
      if not valid_name(k, 40) then msg(pp, "Param name " .. tostring(k) .. " is invalid.", "NAME_INVALID")
      elseif reserved_prefix(k) then msg(pp, "Param name " .. k .. " is reserved.", "NAME_RESERVED") end
      if k == "items" then
        if type(v) ~= "table" or #v > 200 then
          msg(pp, "items must be a list of at most 200 items.", "VALUE_INVALID")
        end
        for j, it in ipairs(type(v) == "table" and v or {}) do
          local ip = pp .. "[" .. (j - 1) .. "]"
          if type(it) ~= "table" or (it.item_id == nil and it.item_name == nil) then
            msg(ip, "An item requires item_id or item_name.", "VALUE_REQUIRED")
          else
            local custom = 0
            for ik, iv in pairs(it) do
              if not ITEM_FIELDS[ik] then custom = custom + 1 end
              if type(iv) == "string" and chars(iv) > 100 then
                msg(ip .. "." .. tostring(ik), "Item param value is longer than 100 characters.", "VALUE_OUT_OF_BOUNDS")
              end
            end
            if custom > 27 then msg(ip, "At most 27 custom item params.", "EXCEEDED_MAX_ENTITIES") end
          end
        end
      elseif type(v) == "string" then
        local max = VALUE_MAX[k] or 100
        if chars(v) > max then
          msg(pp, "Param value is longer than " .. max .. " characters.", "VALUE_OUT_OF_BOUNDS")
        end
      elseif type(v) ~= "number" then
        msg(pp, "Param values must be strings or numbers.", "VALUE_INVALID")
      end
    end
    if n > 25 then msg(p .. ".params", "At most 25 params per event.", "EXCEEDED_MAX_ENTITIES") end
  end
  return out
end

local function keep(list, item)
  list[#list + 1] = item
  if #list > M.LOG_MAX then table.remove(list, 1) end
end

function M.handle(req)
  if req.method ~= "POST" then return http.error(405, "METHOD_NOT_ALLOWED", "use POST") end
  local q = http.parse_query(req.query)
  local body = req.body or ""
  local list = M.validate(body)
  if q.measurement_id == nil or q.measurement_id == "" then
    list[#list + 1] = { fieldPath = "measurement_id", description = "measurement_id is required.",
                        validationCode = "VALUE_REQUIRED" }
  end
  if req.path == "/debug/mp/collect" then
    if list[1] == nil then return 200, { ["Content-Type"] = "application/json" }, '{"validationMessages":[]}' end
    return http.json(200, { validationMessages = list })
  end
  local expected = secrets[q.measurement_id or ""] or default_secret
  local b = cjson.decode(body)
  if list[1] ~= nil then
    keep(discarded, { measurement_id = q.measurement_id, reason = list, body = b })
  elseif expected ~= nil and q.api_secret ~= expected then
    keep(discarded, { measurement_id = q.measurement_id, reason = "api_secret does not match", body = b })
  else
    for _, ev in ipairs(b.events) do
      keep(collected, { measurement_id = q.measurement_id, client_id = b.client_id, user_id = b.user_id,
        timestamp_micros = ev.timestamp_micros or b.timestamp_micros, consent = b.consent,
        user_properties = b.user_properties, name = ev.name, params = ev.params })
    end
  end
  return 204, {}, ""
end

M.control["GET /_sandbox/ga4"] = function()
  local function arr(l)
    local parts = {}
    for i, x in ipairs(l) do parts[i] = cjson.encode(x) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  return 200, { ["Content-Type"] = "application/json" },
    '{"collected":' .. arr(collected) .. ',"discarded":' .. arr(discarded) .. "}"
end

return M
