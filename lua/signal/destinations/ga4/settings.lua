-- signal.destinations.ga4.settings — the GA4 integration's settings: one
-- declarative list that drives validation, error text and the generated
-- configuration reference.
--
-- Normalized output: user_properties is always a list of { attr, name }
-- (profile attribute → GA4 user property; a CSV string or a list names the
-- attributes and derives snake_case property names, a table maps them
-- explicitly); base_url is always set (from region).
local schema = require "signal.config.schema"
-- snake_case as the collector converts names (core.collect.snake)
local snake = require("signal.core").collect.snake
local limits = require "signal.destinations.ga4.limits"

local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local sort, concat = table.sort, table.concat
local quote = schema.quote

local M = {}

M.PRESETS = { "retail", "travel", "finance", "b2b_saas", "media", "gaming", "publishing" }
M.HOSTS = { global = "https://www.google-analytics.com", eu = "https://region1.google-analytics.com" }

local function measurement_id(v)
  if v:find("^G%-[A-Z0-9]+$") then return true end
  return nil, 'must be a GA4 measurement id "G-" followed by capital letters and digits (Admin > Data'
    .. " streams > your web stream), got " .. quote(v)
end

local function api_secret(v)
  if v:find("[%s%c]") then return nil, "must not contain spaces or control characters" end
  return true
end

local function base_url(v)
  if not v:find("^https?://[%w%.%-]+:?%d*$") and not v:find("^https?://%[[%x:]+%]:?%d*$") then
    return nil, "must be scheme://host[:port] without a path or trailing slash, got " .. quote(v)
  end
  return true
end

-- property_name(attr) → the user property an attribute becomes by default
-- (LifetimeTier → lifetime_tier)
function M.property_name(attr)
  return (snake(attr):lower():gsub("[^%w_]+", "_"))
end

-- user_properties(v) → list of { attr, name } | nil, message
function M.parse_user_properties(v)
  if v == nil then return {} end
  local pairs_list = {}
  if type(v) == "string" then
    for a in v:gmatch("[^,]+") do
      a = a:match("^%s*(.-)%s*$")
      if a ~= "" then pairs_list[#pairs_list + 1] = { attr = a, name = M.property_name(a) } end
    end
  elseif type(v) == "table" and (v[1] ~= nil or next(v) == nil) then
    for _, a in ipairs(v) do
      if type(a) ~= "string" or a == "" then return nil, "list entries must be attribute names (strings)" end
      pairs_list[#pairs_list + 1] = { attr = a, name = M.property_name(a) }
    end
  elseif type(v) == "table" then
    local attrs = {}
    for a in pairs(v) do attrs[#attrs + 1] = a end
    sort(attrs, function(x, y) return tostring(x) < tostring(y) end)
    for _, a in ipairs(attrs) do
      if type(a) ~= "string" or type(v[a]) ~= "string" then
        return nil, "a table must map attribute names to user property names (strings)"
      end
      pairs_list[#pairs_list + 1] = { attr = a, name = v[a] }
    end
  else
    return nil, 'must be a CSV string ("Persona,LifetimeTier"), a list of attribute names or a table'
      .. ' { Attribute = "property_name" }'
  end
  return pairs_list
end

local function user_properties(v)
  local list, err = M.parse_user_properties(v)
  if not list then return nil, err end
  if #list > limits.MAX_USER_PROPERTIES then
    return nil, "at most " .. limits.MAX_USER_PROPERTIES .. " user properties (GA4's limit), got " .. #list
  end
  local bad = {}
  for _, p in ipairs(list) do
    if limits.RESERVED_USER_PROPERTIES[p.name] or limits.reserved_prefix(p.name) then
      bad[#bad + 1] = p.name .. " is reserved by Google"
    elseif not limits.valid_name(p.name, limits.MAX_UP_NAME) then
      bad[#bad + 1] = p.name .. " is not a valid name (letters, digits and _, starting with a letter, at most"
        .. " 24 characters)"
    end
  end
  if #bad > 0 then return nil, "user property " .. concat(bad, "; ") end
  return true
end

-- normalized(cfg) → cfg.user_properties as a list of { attr, name }, cached
-- per config table (signal.testing passes raw settings straight to finish)
local parsed = setmetatable({}, { __mode = "k" })
function M.user_property_list(cfg)
  local l = parsed[cfg]
  if l then return l end
  l = M.parse_user_properties(cfg.user_properties) or {}
  parsed[cfg] = l
  return l
end

M.fields = {
  { name = "measurement_id", type = "string", required = true, non_empty = true, checks = { measurement_id },
    description = "The web stream's measurement id (G-…): Admin > Data streams." },
  { name = "api_secret", type = "string", secret = true, required = true, non_empty = true,
    checks = { api_secret },
    description = "Measurement Protocol API secret: Admin > Data streams > your stream > Measurement"
      .. " Protocol API secrets. Never logged or shown." },
  { name = "region", type = "string", default = "global", one_of = { "global", "eu" },
    description = "global: www.google-analytics.com; eu: region1.google-analytics.com (data collected"
      .. " in the EU)." },
  { name = "debug", type = "boolean", default = false,
    description = "Send to /debug/mp/collect: GA4 validates and records nothing; its validationMessages"
      .. " show on each live event." },
  { name = "user_properties", type = "any", default = {}, checks = { user_properties },
    doc_type = "string (CSV), list or table",
    description = "Amperity profile attributes sent as user properties: \"Persona,LifetimeTier\" (names"
      .. " become persona, lifetime_tier) or { Persona = \"persona\" }. At most 25; names ≤ 24"
      .. " characters; values are cut to 36." },
  { name = "preset", type = "string", default = "retail", one_of = M.PRESETS,
    description = "Vertical blueprint preset (event names and e-commerce params): retail, travel,"
      .. " finance, b2b_saas, media, gaming or publishing." },
  { name = "base_url", type = "string", checks = { base_url },
    default = function(rec) return M.HOSTS[rec.region or "global"] or M.HOSTS.global end,
    default_doc = "by region", description = "Host to send to (tests and proxies; e.g. the local sandbox"
      .. " http://127.0.0.1:8091)." },
  { name = "batch_size", type = "integer", min = 1, max = limits.MAX_EVENTS, default = limits.MAX_EVENTS,
    description = "Events of one client per request (GA4 takes at most 25)." },
  { name = "timeout_ms", type = "integer", min = 1, max = 600000,
    description = "Timeout of each request (default: delivery.timeout_ms)." },
}

return M
