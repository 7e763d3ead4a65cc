-- signal.destinations.meta_capi.settings — the Meta Conversions API
-- integration's settings: one declarative list for validation, error text
-- and the generated configuration reference.
--
-- Normalized output: custom_data_attributes is always a list of { attr,
-- key } (Amperity profile attribute → custom_data key; a CSV string or a
-- list derives snake_case keys, a table maps them, e.g. { PredictedCLV =
-- "predicted_ltv" }).
local schema = require "signal.config.schema"
-- snake_case as the collector converts names (core.collect.snake)
local snake = require("signal.core").collect.snake

local type, pairs, ipairs, tostring, next = type, pairs, ipairs, tostring, next
local sort = table.sort
local quote = schema.quote

local M = {}

M.PRESETS = { "retail", "travel", "finance", "b2b_saas", "media", "gaming", "publishing" }
M.ACTION_SOURCES = { "website", "app", "email", "phone_call", "chat", "physical_store", "system_generated",
                     "business_messaging", "other" }
M.DEFAULT_API_VERSION = "v23.0"
M.MAX_BATCH = 1000

local function pixel_id(v)
  if v:find("^%d+$") then return true end
  return nil, "must be the pixel (dataset) id: digits only, from Events Manager > Data sources, got " .. quote(v)
end

local function token(v)
  if v:find("[%s%c]") then
    return nil, "must not contain spaces, line breaks or control characters (check for stray whitespace)"
  end
  return true
end

local function api_version(v)
  if v:find("^v%d+%.%d+$") then return true end
  return nil, 'must be a Graph API version such as "' .. M.DEFAULT_API_VERSION .. '", got ' .. quote(v)
end

local function base_url(v)
  if not v:find("^https?://[%w%.%-]+:?%d*$") and not v:find("^https?://%[[%x:]+%]:?%d*$") then
    return nil, "must be scheme://host[:port] without a path or trailing slash, got " .. quote(v)
  end
  return true
end

-- parse_attributes(v) → list of { attr, key } | nil, message
function M.parse_attributes(v)
  if v == nil then return {} end
  local out = {}
  local function add(a, k) out[#out + 1] = { attr = a, key = k or snake(a):lower() } end
  if type(v) == "string" then
    for a in v:gmatch("[^,]+") do
      a = a:match("^%s*(.-)%s*$")
      if a ~= "" then add(a) end
    end
  elseif type(v) == "table" and (v[1] ~= nil or next(v) == nil) then
    for _, a in ipairs(v) do
      if type(a) ~= "string" or a == "" then return nil, "list entries must be attribute names (strings)" end
      add(a)
    end
  elseif type(v) == "table" then
    local attrs = {}
    for a in pairs(v) do attrs[#attrs + 1] = a end
    sort(attrs, function(x, y) return tostring(x) < tostring(y) end)
    for _, a in ipairs(attrs) do
      if type(a) ~= "string" or type(v[a]) ~= "string" or not v[a]:find("^[%a_][%w_]*$") then
        return nil, "a table must map attribute names to custom_data keys (letters, digits and _)"
      end
      add(a, v[a])
    end
  else
    return nil, 'must be a CSV string ("PredictedCLV,Persona"), a list of attribute names or a table'
      .. ' { PredictedCLV = "predicted_ltv" }'
  end
  return out
end

local function attributes(v)
  local list, err = M.parse_attributes(v)
  if not list then return nil, err end
  return true
end

local parsed = setmetatable({}, { __mode = "k" })
-- attribute_list(cfg) → cfg.custom_data_attributes as { attr, key } pairs,
-- cached per config (signal.testing passes raw settings straight to finish)
function M.attribute_list(cfg)
  local l = parsed[cfg]
  if l then return l end
  l = M.parse_attributes(cfg.custom_data_attributes) or {}
  parsed[cfg] = l
  return l
end

M.fields = {
  { name = "pixel_id", type = "string", required = true, non_empty = true, checks = { pixel_id },
    description = "The pixel (dataset) id: Events Manager > Data sources." },
  { name = "access_token", type = "string", secret = true, required = true, non_empty = true,
    checks = { token },
    description = "Conversions API access token (Events Manager > Settings > Conversions API >"
      .. " Generate access token). Never logged or shown." },
  { name = "api_version", type = "string", default = M.DEFAULT_API_VERSION, checks = { api_version },
    description = "Graph API version of the request path." },
  { name = "test_event_code", type = "string", non_empty = true, checks = { token },
    description = "Events Manager > Test Events code (TEST…): events then show there and are not"
      .. " used for ads. Remove it in production." },
  { name = "action_source", type = "string", default = "website", one_of = M.ACTION_SOURCES,
    description = "Where the conversions happened; website events need event_source_url and"
      .. " client_user_agent." },
  { name = "custom_data_attributes", type = "any", default = {}, checks = { attributes },
    doc_type = "string (CSV), list or table",
    description = "Amperity profile attributes added to custom_data: \"Persona\" (key persona) or"
      .. " { PredictedCLV = \"predicted_ltv\" }." },
  { name = "preset", type = "string", default = "retail", one_of = M.PRESETS,
    description = "Vertical blueprint preset (standard event names and custom_data): retail, travel,"
      .. " finance, b2b_saas, media, gaming or publishing." },
  { name = "base_url", type = "string", default = "https://graph.facebook.com", checks = { base_url },
    description = "Graph API host (tests and proxies; e.g. the local sandbox http://127.0.0.1:8091)." },
  { name = "batch_size", type = "integer", min = 1, max = M.MAX_BATCH, default = 100,
    description = "Events per request (Meta takes at most 1,000)." },
  { name = "timeout_ms", type = "integer", min = 1, max = 600000,
    description = "Timeout of each request (default: delivery.timeout_ms)." },
}

return M
