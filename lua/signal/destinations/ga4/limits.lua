-- signal.destinations.ga4.limits — the Measurement Protocol's limits, and
-- the corrections that make a mapped event fit them.
--
-- Google answers 2xx to /mp/collect even when it discards what it got, so
-- an event that breaks a limit would vanish without a trace. Every rule is
-- therefore enforced here, before sending, and every change is a correction
-- (signal.pipeline.corrections: counted and shown on the live event):
--   names       events and params ≤ 40 characters, letters/digits/"_",
--               starting with a letter; user properties ≤ 24
--   reserved    event names (session_start, first_visit, …) are renamed
--               custom_<name>; names with the prefixes _, ga_, google_,
--               firebase_ (events, params, user properties) and reserved
--               user property names are dropped: their meaning is Google's
--   counts      ≤ 25 params per event (GA4's own params kept first), ≤ 25
--               user properties, ≤ 200 items, ≤ 27 params per item
--   values      param strings ≤ 100 characters (page_location 1000,
--               page_referrer 420, page_title 300), user property values
--               ≤ 36; objects and lists (other than items) are dropped
-- Event names from the presets are GA4's own; any other name is turned
-- into snake_case ("Flight Searched" → flight_searched), which is the
-- mapping, not a correction.
local corrections = require "signal.pipeline.corrections"
-- snake_case as the collector converts names (core.collect.snake)
local snake = require("signal.core").collect.snake

local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local sort, concat = table.sort, table.concat
local find, gsub, lower, sub = string.find, string.gsub, string.lower, string.sub
local huge = math.huge
local add, utf8_len, utf8_cut = corrections.add, corrections.utf8_len, corrections.utf8_cut

local M = {}

M.MAX_EVENTS = 25             -- per request
M.MAX_PARAMS = 25             -- per event
M.MAX_USER_PROPERTIES = 25
M.MAX_NAME = 40               -- event and param names
M.MAX_VALUE = 100             -- param string values
M.VALUE_MAX = { page_location = 1000, page_referrer = 420, page_title = 300 }
M.MAX_UP_NAME = 24
M.MAX_UP_VALUE = 36
M.MAX_ITEMS = 200
M.MAX_ITEM_PARAMS = 27
M.MAX_USER_ID = 256
M.MAX_BODY = 130000           -- bytes; Google: "smaller than 130 kB"
M.BACKDATE_S = 72 * 3600

local function set(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

M.RESERVED_EVENTS = set {
  "ad_activeview", "ad_click", "ad_exposure", "ad_impression", "ad_query", "ad_reward", "adunit_exposure",
  "app_background", "app_clear_data", "app_exception", "app_install", "app_remove", "app_store_refund",
  "app_store_subscription_cancel", "app_store_subscription_convert", "app_store_subscription_renew",
  "app_update", "app_upgrade", "error", "first_open", "first_visit", "in_app_purchase", "os_update",
  "screen_view", "session_start", "user_engagement",
}
M.RESERVED_EVENT_PREFIXES = { "dynamic_link_", "notification_" }
M.RESERVED_PREFIXES = { "_", "ga_", "google_", "firebase_" }
M.RESERVED_USER_PROPERTIES = set {
  "first_open_time", "first_visit_time", "last_deep_link_referrer", "user_id", "first_open_after_install",
}

-- Params GA4 itself interprets, kept first when an event has too many.
M.PRIORITY = {
  "session_id", "engagement_time_msec", "page_location", "page_referrer", "page_title",
  "transaction_id", "value", "currency", "items", "tax", "shipping", "coupon", "search_term", "method",
  "item_list_id", "item_list_name", "payment_type", "shipping_tier", "content_type", "item_id",
}
local PRIORITY_RANK = {}
for i, k in ipairs(M.PRIORITY) do PRIORITY_RANK[k] = i end

local function reserved_prefix(name)
  for _, p in ipairs(M.RESERVED_PREFIXES) do
    if sub(name, 1, #p) == p then return p end
  end
end
M.reserved_prefix = reserved_prefix

-- valid_name(s, max) → true when s is a valid GA4 name of at most max characters
function M.valid_name(s, max)
  return type(s) == "string" and #s <= max and find(s, "^%a[%w_]*$") ~= nil
end

-- clean(s) → letters, digits and "_" only, runs of "_" folded, no "_" at the ends
local function clean(s)
  s = gsub(s, "[^%w_]+", "_")
  s = gsub(s, "__+", "_")
  return (gsub(gsub(s, "^_+", ""), "_+$", ""))
end

---------------------------------------------------------------------------
-- event names

local function reserved_event(name)
  if M.RESERVED_EVENTS[name] then return true end
  for _, p in ipairs(M.RESERVED_EVENT_PREFIXES) do
    if sub(name, 1, #p) == p then return true end
  end
  return false
end
M.reserved_event = reserved_event

-- event_name(raw, e, cfg, list) → name | nil (drop), list
function M.event_name(raw, e, cfg, list)
  raw = raw ~= nil and tostring(raw) or ""
  if M.valid_name(raw, M.MAX_NAME) and not reserved_event(raw) and not reserved_prefix(raw) then
    return raw, list
  end
  if reserved_prefix(raw) then
    return nil, add(list, e, cfg, "event_name_reserved",
      "GA4 limit: event name '" .. raw .. "' uses a prefix reserved by Google; event not sent")
  end
  -- "Order Completed" is words: lower-cased and joined; "orderCompleted"
  -- is camelCase: split first
  local name = clean(lower(find(raw, "%s") and raw or snake(raw)))
  if name == "" then
    return nil, add(list, e, cfg, "event_name_invalid",
      "GA4 limit: event name '" .. raw .. "' has no letters or digits; event not sent")
  end
  if not find(name, "^%a") then
    name = "event_" .. name
    list = add(list, e, cfg, "event_name_invalid",
      "GA4 limit: event name '" .. raw .. "' must start with a letter; sent as " .. name)
  end
  if reserved_event(name) then
    local renamed = "custom_" .. name
    list = add(list, e, cfg, "event_name_reserved",
      "GA4 limit: event name '" .. name .. "' is reserved by Google; sent as " .. renamed)
    name = renamed
  end
  if #name > M.MAX_NAME then
    local cut = gsub(sub(name, 1, M.MAX_NAME), "_+$", "")
    list = add(list, e, cfg, "event_name_truncated",
      "GA4 limit: event name '" .. name .. "' is longer than 40 characters; sent as " .. cut)
    name = cut
  end
  return name, list
end

---------------------------------------------------------------------------
-- params

-- param_name(raw, what, e, cfg, list) → name | nil (dropped), list
local function param_name(raw, what, e, cfg, list)
  if M.valid_name(raw, M.MAX_NAME) and not reserved_prefix(raw) then return raw, list end
  if reserved_prefix(raw) then
    return nil, add(list, e, cfg, "param_reserved",
      "GA4 limit: " .. what .. " '" .. raw .. "' uses a prefix reserved by Google (_, ga_, google_,"
        .. " firebase_); dropped")
  end
  local name = clean(raw)
  if name == "" then
    return nil, add(list, e, cfg, "param_name_invalid",
      "GA4 limit: " .. what .. " name '" .. raw .. "' has no letters or digits; dropped")
  end
  if not find(name, "^%a") then name = "p_" .. name end
  if #name > M.MAX_NAME then name = gsub(sub(name, 1, M.MAX_NAME), "_+$", "") end
  return name, add(list, e, cfg, "param_name_invalid",
    "GA4 limit: " .. what .. " name '" .. raw .. "' renamed " .. name
      .. " (letters, digits and _, starting with a letter, at most 40 characters)")
end

-- scalar(v) → a value GA4 takes (string or finite number), or nil
local function scalar(v)
  local tv = type(v)
  if tv == "string" or (tv == "number" and v == v and v ~= huge and v ~= -huge) then return v end
  if tv == "boolean" then return v and "true" or "false" end
  return nil
end

-- value(v, max, what, e, cfg, list) → value | nil, list
local function value(v, max, what, e, cfg, list)
  local s = scalar(v)
  if s == nil and type(v) == "table" and v[1] ~= nil then
    -- a list of plain values (tags, ids) still says something as text
    local parts = {}
    for i = 1, #v do
      local x = scalar(v[i])
      if x == nil then parts = nil; break end
      parts[i] = tostring(x)
    end
    if parts then
      s = concat(parts, ",")
      list = add(list, e, cfg, "param_value_type",
        "GA4 limit: " .. what .. " is a list; GA4 takes strings and numbers only; sent as comma-separated text")
    end
  end
  if s == nil then
    return nil, add(list, e, cfg, "param_value_type",
      "GA4 limit: " .. what .. " is " .. (type(v) == "table" and "an object or a list" or type(v))
        .. "; GA4 takes strings and numbers only; dropped")
  end
  if type(s) == "string" and #s > max and utf8_len(s) > max then
    list = add(list, e, cfg, "param_value_truncated",
      "GA4 limit: " .. what .. " truncated to " .. max .. " characters (was " .. utf8_len(s) .. ")")
    s = utf8_cut(s, max)
  end
  return s, list
end

local function rank_order(a, b)
  local ra, rb = PRIORITY_RANK[a] or huge, PRIORITY_RANK[b] or huge
  if ra ~= rb then return ra < rb end
  return a < b
end

-- item(it, i, e, cfg, list) → a valid item | nil, list
local function item(it, i, e, cfg, list)
  if type(it) ~= "table" then
    return nil, add(list, e, cfg, "item_invalid", "GA4 limit: items[" .. i .. "] is not an object; dropped")
  end
  local out, names = {}, {}
  for k, v in pairs(it) do
    if type(k) == "string" then
      local name
      name, list = param_name(k, "items[" .. i .. "]." .. k, e, cfg, list)
      if name then
        local val
        val, list = value(v, M.MAX_VALUE, "items[" .. i .. "]." .. name, e, cfg, list)
        if val ~= nil then out[name] = val; names[#names + 1] = name end
      end
    end
  end
  if #names > M.MAX_ITEM_PARAMS then
    sort(names, rank_order)
    local dropped = {}
    for j = M.MAX_ITEM_PARAMS + 1, #names do out[names[j]] = nil; dropped[#dropped + 1] = names[j] end
    list = add(list, e, cfg, "item_params_over_limit", "GA4 limit: items[" .. i .. "] has more than "
      .. M.MAX_ITEM_PARAMS .. " params; dropped " .. concat(dropped, ", "))
  end
  if out.item_id == nil and out.item_name == nil then
    return nil, add(list, e, cfg, "item_invalid",
      "GA4 limit: items[" .. i .. "] has neither item_id nor item_name; dropped")
  end
  return out, list
end

local function items(v, e, cfg, list)
  if type(v) ~= "table" or v[1] == nil then
    return nil, add(list, e, cfg, "param_value_type", "GA4 limit: items must be a list of objects; dropped")
  end
  local out = {}
  local n = #v
  if n > M.MAX_ITEMS then
    list = add(list, e, cfg, "items_over_limit",
      "GA4 limit: " .. n .. " items, at most " .. M.MAX_ITEMS .. " per event; the rest dropped")
    n = M.MAX_ITEMS
  end
  for i = 1, n do
    local it
    it, list = item(v[i], i, e, cfg, list)
    if it then out[#out + 1] = it end
  end
  if #out == 0 then return nil, list end
  return out, list
end

-- params(raw, e, cfg, list) → params (a new table), list. raw: name → value
-- as the mapping made them.
function M.params(raw, e, cfg, list)
  local out, names = {}, {}
  for k, v in pairs(raw) do
    if type(k) == "string" then
      local name
      name, list = param_name(k, "param", e, cfg, list)
      if name then
        local val
        if name == "items" then
          val, list = items(v, e, cfg, list)
        else
          val, list = value(v, M.VALUE_MAX[name] or M.MAX_VALUE, "param " .. name, e, cfg, list)
        end
        if val ~= nil and out[name] == nil then out[name] = val; names[#names + 1] = name end
      end
    end
  end
  if #names > M.MAX_PARAMS then
    sort(names, rank_order)
    local dropped = {}
    for j = M.MAX_PARAMS + 1, #names do out[names[j]] = nil; dropped[#dropped + 1] = names[j] end
    list = add(list, e, cfg, "params_over_limit", "GA4 limit: more than " .. M.MAX_PARAMS
      .. " params; dropped " .. concat(dropped, ", "))
  end
  return out, list
end

---------------------------------------------------------------------------
-- user properties

-- user_property(name, v, e, cfg, list, out) → list: out[name] = { value = v } when valid
function M.user_property(name, v, e, cfg, list, out)
  if M.RESERVED_USER_PROPERTIES[name] or reserved_prefix(name) then
    return add(list, e, cfg, "user_property_reserved",
      "GA4 limit: user property '" .. name .. "' is reserved by Google; dropped")
  end
  if not M.valid_name(name, M.MAX_UP_NAME) then
    return add(list, e, cfg, "user_property_name_invalid", "GA4 limit: user property name '" .. name
      .. "' must be letters, digits and _, starting with a letter, at most 24 characters; dropped")
  end
  if type(v) == "table" and v.value ~= nil then v = v.value end
  local s = scalar(v)
  if s == nil then
    return add(list, e, cfg, "user_property_value_type",
      "GA4 limit: user property '" .. name .. "' is not a string or number; dropped")
  end
  if type(s) == "string" and #s > M.MAX_UP_VALUE and utf8_len(s) > M.MAX_UP_VALUE then
    list = add(list, e, cfg, "user_property_value_truncated", "GA4 limit: user property '" .. name
      .. "' truncated to 36 characters (was " .. utf8_len(s) .. ")")
    s = utf8_cut(s, M.MAX_UP_VALUE)
  end
  out[name] = { value = s }
  return list
end

-- cap_user_properties(ups, e, cfg, list) → list: at most 25, by name order
function M.cap_user_properties(ups, e, cfg, list)
  local names = {}
  for k in pairs(ups) do names[#names + 1] = k end
  if #names <= M.MAX_USER_PROPERTIES then return list end
  sort(names)
  local dropped = {}
  for j = M.MAX_USER_PROPERTIES + 1, #names do ups[names[j]] = nil; dropped[#dropped + 1] = names[j] end
  return add(list, e, cfg, "user_properties_over_limit", "GA4 limit: more than " .. M.MAX_USER_PROPERTIES
    .. " user properties; dropped " .. concat(dropped, ", "))
end

return M
