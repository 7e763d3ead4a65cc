-- signal.destinations.amperity.settings — the Amperity integration's settings.
--
-- The fields of Amperity's own configuration table, in its order, plus the
-- settings for presets, context-sensitive personalization, base_url and
-- timeouts. One declarative list drives validation (signal.config.schema),
-- error text and the generated reference: each field has its type,
-- required, secret, description and checks. signal.config adds the fields
-- every integration shares (`type`, `name`, `rate_limit`) and uses this
-- schema for `type = "amperity"`.
--
-- Normalized output: linking_keys, personalization_context_mappings and
-- browser_attribute_allowlist are always Lua lists (JSON / CSV decoded);
-- base_url is always set (default https://{tenant_subdomain}.amperity.com).

local schema = require "signal.config.schema"

local quote, looks_secret = schema.quote, schema.looks_secret
local ipairs = ipairs

local M = { type = "amperity" }

local PRESETS = { "retail", "travel", "finance", "b2b_saas", "media", "gaming", "publishing" }
local LINK_SOURCES = { "canonical_id", "anonymous_id", "user_id", "email", "phone" }
local PATH_PREFIXES = { "context.", "properties.", "traits.", "partner_attrs." }

M.PRESETS = PRESETS
M.LINK_SOURCES = LINK_SOURCES

---------------------------------------------------------------------------
-- checks (each returns true, or nil and a message that never prints a
-- secret; secret fields' checks never print the value at all)

local function subdomain(v)
  if #v <= 63 and (v:find("^[%a%d]$") or v:find("^[%a%d][%a%d%-]*[%a%d]$")) then
    return true
  end
  local example = ' (e.g. "acme" for https://acme.amperity.com)'
  if v:find("://", 1, true) or v:find(".", 1, true) or v:find("/", 1, true) then
    local label
    if not looks_secret(v) then
      local host = v:match("^%a[%w+.-]*://([^/:?#@]+)") or v:match("^([^/:?#@]+)")
      label = host and host:match("^([%a%d][%a%d%-]*)%.")
    end
    if label and label:lower() == "app" then
      return nil, "must be just your tenant's subdomain, not a URL or host name: app.amperity.com is the"
        .. " login host; use the subdomain of your tenant's dashboard URL" .. example
    end
    local use = label and ('use just "' .. label .. '", ') or "use just "
    return nil, "must be just the tenant subdomain, not a URL or host name: " .. use
      .. "the subdomain of your Amperity dashboard URL" .. example
  end
  return nil, "must be a DNS label (letters, digits and '-')" .. example
end

local function header_safe(v)
  if v:find("[%c]") then return nil, "must not contain control characters or line breaks" end
  return true
end

local function token(v)
  if v:find("^[Bb]earer%s") then
    return nil, 'must be the token only, without the "Bearer " prefix (Signal adds it)'
  end
  if v:find("%s") or v:find("%c") then
    return nil, "must not contain spaces, line breaks or control characters (check for stray whitespace)"
  end
  return true
end

local function stream_id(v)
  if v:find("^is%-") then
    return nil, 'must start with "esm-": "is-" ids are the batch ingest path, which accepts events but does'
      .. " not drive realtime profile aggregation; Signal only supports the realtime esm- path (copy the"
      .. " Event Stream ID from Sources > Streams)"
  end
  if not v:find("^esm%-") then
    return nil, 'must start with "esm-" (the realtime Event Stream ID from Sources > Streams, e.g.'
      .. " esm-2VP6va3Zn), got " .. quote(v)
  end
  if not v:find("^esm%-[%w_%-]+$") then
    return nil, 'must be "esm-" followed by letters and digits (e.g. esm-2VP6va3Zn), got ' .. quote(v)
  end
  return true
end

local function exact_value(v)
  if v:find("^%s") or v:find("%s$") then
    return nil, "has leading or trailing whitespace; it must exactly match your stream's routing"
      .. " expression (case-sensitive), or events are accepted (202) but silently dropped"
  end
  return header_safe(v)
end

local function collection_id(v)
  if not v:find("^apc%-[%w_%-]+$") then
    return nil, 'must start with "apc-" (the Profile Collection ID, e.g. apc-vPsQheAm), got ' .. quote(v)
  end
  return true
end

local function base_url(v)
  if not v:find("^https?://") then
    return nil, "must be an http:// or https:// URL, got " .. quote(v)
  end
  if v:find("/$") then
    return nil, "must not end with a slash, got " .. quote(v)
  end
  if not (v:find("^https?://[%w%.%-]+:?%d*$") or v:find("^https?://[%w%.%-]+:?%d*/[^%s?#]*$")
          or v:find("^https?://%[[%x:]+%]:?%d*$") or v:find("^https?://%[[%x:]+%]:?%d*/[^%s?#]*$")) then
    return nil, "must be scheme://host[:port][/path] without spaces, query or fragment, got " .. quote(v)
  end
  return true
end

local function event_path(v)
  if v:find("^[%a_][%w_]*$") then return true end            -- flat event field
  for _, prefix in ipairs(PATH_PREFIXES) do
    if v:sub(1, #prefix) == prefix then
      local rest = v:sub(#prefix + 1)
      -- every segment non-empty: no leading, trailing or doubled dots
      if rest ~= "" and not ("." .. rest .. "."):find("..", 1, true) then return true end
    end
  end
  return nil, "must be a path starting with context., properties., traits. or partner_attrs., or a flat"
    .. ' event field (e.g. "properties.category", "context.page.path", "user_id"), got ' .. quote(v)
end

local function url_safe(v)
  if v:find("^[%w_%.%-]+$") then return true end
  return nil, "must use only letters, digits, '_', '.' and '-' (it is sent as a query parameter name), got "
    .. quote(v)
end

---------------------------------------------------------------------------
-- the fields, in the order of Amperity's own configuration table

M.fields = {
  { name = "tenant_subdomain", type = "string", required = true, non_empty = true,
    checks = { subdomain },
    description = "URL host component (e.g. acme for acme.amperity.com). Used to build every API URL." },
  { name = "tenant_id", type = "string", required = true, non_empty = true,
    checks = { header_safe },
    description = "Value sent as the Amperity-Tenant header. Usually matches the subdomain." },
  { name = "api_key", type = "string", secret = true, required = true, non_empty = true,
    checks = { token },
    description = "Streaming Ingest JWT (write access)." },
  { name = "event_stream_id", type = "string", required = true, non_empty = true,
    checks = { stream_id },
    description = "Realtime stream identifier, prefixed esm-. (is- batch ingest ids are refused.)" },
  { name = "source_value", type = "string", required = true, non_empty = true,
    checks = { exact_value },
    description = "Value of the top-level source field on every event. Case-sensitive — must exactly"
      .. " match your stream's routing expression or events are accepted (202) but silently dropped." },
  { name = "profile_api_key", type = "string", secret = true, non_empty = true,
    checks = { token },
    description = "Profile API JWT (read-only). Required for profile enrichment + personalization." },
  { name = "profile_collection_id", type = "string", non_empty = true,
    checks = { collection_id },
    description = "Profile collection to query, prefixed apc-. Required when profile_api_key is set." },
  { name = "linking_keys", type = "array", json = true, default = {}, doc_type = "JSON (string or table)",
    list_hint = 'must be a list (JSON array) of {"source", "key", "hash"} objects',
    elements = { type = "record", fields = {
      { name = "source", type = "string", required = true, one_of = LINK_SOURCES,
        description = "Where Signal pulls the value from." },
      { name = "key", type = "string", required = true, non_empty = true, checks = { header_safe },
        description = "The matching entry in the Amperity collection's linking_keys." },
      { name = "hash", type = "string", one_of = { "sha256" },
        description = "sha256: lower-cased, trimmed SHA-256 of the value before sending." },
    } },
    description = "Array of {source, key, hash} specs driving how Signal resolves visitors against the"
      .. " Profile API, tried in order; first match wins. source is one of canonical_id, anonymous_id,"
      .. " user_id, email, phone." },
  { name = "browser_attribute_allowlist", type = "array", csv = true, drop_empty = true, default = {},
    doc_type = "string (CSV) or list",
    elements = { type = "string", trim = true },
    description = "Comma-separated attribute names safe to expose to the browser. Anything not listed is"
      .. " stripped server-side (empty = nothing exposed)." },
  { name = "enable_context_personalization", type = "boolean", default = false,
    description = "Send mapped context values with each Profile API call and attach the result as"
      .. " partner_attrs.amperity_personalized." },
  { name = "personalization_context_mappings", type = "array", json = true, default = {},
    unique = "target", doc_type = "JSON (string or table)",
    list_hint = 'must be a list (JSON array) of {"source", "target"} objects',
    elements = { type = "record", fields = {
      { name = "source", type = "string", required = true, non_empty = true, checks = { event_path },
        description = "Event path: context.*, properties.*, traits.*, partner_attrs.* or a flat field." },
      { name = "target", type = "string", required = true, non_empty = true, checks = { url_safe },
        description = "Query parameter name sent to Amperity." },
    } },
    description = "Array of {source, target} pairs: which event values Signal forwards to Amperity on"
      .. " each personalized Profile API call. Prefer low-cardinality values." },
  { name = "preset", type = "string", default = "retail", one_of = PRESETS,
    description = "Vertical blueprint preset: retail, travel, finance, b2b_saas, media, gaming or publishing." },
  { name = "base_url", type = "string", checks = { base_url },
    default = function(rec)
      if rec.tenant_subdomain then return "https://" .. rec.tenant_subdomain .. ".amperity.com" end
    end,
    default_doc = "https://{tenant_subdomain}.amperity.com",
    description = "API base URL without trailing slash (e.g. the local sandbox http://127.0.0.1:8091)." },
  { name = "timeout_ms", type = "integer", min = 1, max = 600000,
    description = "Timeout of each event POST (default: delivery.timeout_ms)." },
  { name = "profile_timeout_ms", type = "integer", min = 1, max = 600000,
    description = "Timeout of each Profile API call (default: enrichment.budget_ms)." },
}

M.entity_checks = {
  function(rec, report)
    if rec.profile_api_key and rec.api_key and rec.profile_api_key == rec.api_key then
      report("profile_api_key", "must differ from api_key: Amperity rejects cross-scope usage with 403;"
        .. " the Profile API key must be a separate Profile Read Access JWT")
    end
  end,
  function(rec, report, raw)
    if rec.profile_api_key and raw.profile_collection_id == nil then
      report("profile_collection_id", 'is required when profile_api_key is set (the Profile Collection ID,'
        .. ' prefixed "apc-")')
    end
  end,
  function(rec, report, raw)
    if rec.enable_context_personalization and raw.profile_api_key == nil then
      report("enable_context_personalization", "needs profile_api_key and profile_collection_id:"
        .. " personalization calls the Profile API")
    end
  end,
}

return M
