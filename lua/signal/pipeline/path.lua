-- signal.pipeline.path — compiles blueprint `source` paths into accessor functions.
--
-- A mapping says `source = "context.page.path"`; the blueprint engine must
-- read that value from every event without parsing the string again. So each
-- path is parsed once, when a preset or script is loaded, into a small closure
-- `get(event) -> value|nil` specialised for its depth (one, two, three or four
-- table lookups; deeper paths walk a key list). A path that names no real part
-- of the canonical event (docs/lua-runtime.md) is a load error, not a silent
-- nil at run time.
--
-- Grammar: segments joined by ".". The first segment is a root:
--   context.*, properties.*, traits.*, identity.*   (at least one more segment)
--   partner_attrs.<provider>.*                      (provider + attribute)
--   event, type, name, user_id, anonymous_id, canonical_id, message_id,
--   timestamp, received_at, sent_at, group_id, previous_id, pipeline_key,
--   category, and the flat fields enrichment providers set    (flat: no more segments)
-- A segment made only of digits indexes an array (1-based, as in Lua), so
-- `properties.items.1.item_id` reads the first GA4 item. Keys under
-- properties/traits/partner_attrs are the customer's own and are kept
-- verbatim (spaces and capitals allowed), but may not be empty.
--
-- The providers' flat fields (e.g. the resolved profile id) come from the
-- destination registry (signal.destinations: enrichment.fields).

local destinations = require "signal.destinations"

local type, tonumber, concat = type, tonumber, table.concat

local M = {}

-- Roots whose value is a table: a path must go at least one level inside.
local TABLE_ROOTS = {
  context = true, properties = true, traits = true, identity = true,
  partner_attrs = true,
}

-- Flat scalar fields of the canonical event.
local FLAT_FIELDS = {
  event = true, type = true, name = true, user_id = true, anonymous_id = true,
  canonical_id = true, message_id = true, timestamp = true, received_at = true,
  sent_at = true, group_id = true, previous_id = true, pipeline_key = true,
  category = true,   -- a page call's category
}

local function sorted_keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

-- The providers' fields join on first use (the registry loads destinations,
-- whose modules compile paths themselves), and so does the list of valid
-- roots that messages show.
local with_providers, VALID_ROOTS = false, nil
local function add_provider_fields()
  with_providers = true
  for f in pairs(destinations.event_fields()) do FLAT_FIELDS[f] = true end
  local all = {}
  for _, k in ipairs(sorted_keys(TABLE_ROOTS)) do all[#all + 1] = k .. ".*" end
  for _, k in ipairs(sorted_keys(FLAT_FIELDS)) do all[#all + 1] = k end
  VALID_ROOTS = concat(all, ", ")
end

M.FLAT_FIELDS = FLAT_FIELDS
M.TABLE_ROOTS = TABLE_ROOTS

-- Accessors, one shape per depth. Each level checks for a table so an event
-- with `properties = "oops"` yields nil rather than raising mid-mapping.
local function get1(a)
  return function(e) return e[a] end
end

local function get2(a, b)
  return function(e)
    local t = e[a]
    if type(t) ~= "table" then return nil end
    return t[b]
  end
end

local function get3(a, b, c)
  return function(e)
    local t = e[a]
    if type(t) ~= "table" then return nil end
    t = t[b]
    if type(t) ~= "table" then return nil end
    return t[c]
  end
end

local function get4(a, b, c, d)
  return function(e)
    local t = e[a]
    if type(t) ~= "table" then return nil end
    t = t[b]
    if type(t) ~= "table" then return nil end
    t = t[c]
    if type(t) ~= "table" then return nil end
    return t[d]
  end
end

local function getn(keys)
  local n = #keys
  return function(e)
    local t = e
    for i = 1, n - 1 do
      t = t[keys[i]]
      if type(t) ~= "table" then return nil end
    end
    return t[keys[n]]
  end
end

-- parse(path) -> list of keys (strings, or numbers for array indexes) | nil, err
function M.parse(path)
  if not with_providers then add_provider_fields() end
  if type(path) ~= "string" then
    return nil, ("source must be a string path, got %s"):format(type(path))
  end
  if path == "" then return nil, "source path is empty" end
  local keys, n = {}, 0
  -- Split on "." keeping empty segments so "a..b" and "a." are caught.
  for seg in (path .. "."):gmatch("(.-)%.") do
    if seg == "" or seg:match("^%s") or seg:match("%s$") then
      return nil, ("invalid source path '%s': empty or space-padded segment"):format(path)
    end
    n = n + 1
    keys[n] = seg:match("^%d+$") and tonumber(seg) or seg
  end
  local root = keys[1]
  if FLAT_FIELDS[root] then
    if n > 1 then
      return nil, ("invalid source path '%s': '%s' is a flat event field with no sub-fields")
        :format(path, root)
    end
  elseif TABLE_ROOTS[root] then
    local need = root == "partner_attrs" and 3 or 2
    if n < need then
      if root == "partner_attrs" then
        return nil, ("invalid source path '%s': use partner_attrs.<provider>.<attribute>"):format(path)
      end
      return nil, ("invalid source path '%s': name a field inside %s, e.g. %s.%s")
        :format(path, root, root, root == "context" and "page.url" or "price")
    end
    if root == "context" and type(keys[2]) ~= "string" then
      return nil, ("invalid source path '%s': context has no array part"):format(path)
    end
  else
    return nil, ("invalid source path '%s': unknown root '%s' (valid: %s)")
      :format(path, tostring(root), VALID_ROOTS)
  end
  return keys
end

-- compile(path) -> get(event) | nil, err
function M.compile(path)
  local keys, err = M.parse(path)
  if not keys then return nil, err end
  local n = #keys
  if n == 1 then return get1(keys[1]) end
  if n == 2 then return get2(keys[1], keys[2]) end
  if n == 3 then return get3(keys[1], keys[2], keys[3]) end
  if n == 4 then return get4(keys[1], keys[2], keys[3], keys[4]) end
  return getn(keys)
end

-- compile_list({p1, p2, ...}) -> get(event) returning the first value that is
-- neither nil nor "" (a fallback chain: `source = {"traits.email",
-- "identity.email"}`), or nil, err naming the bad path.
function M.compile_list(paths)
  local getters = {}
  for i = 1, #paths do
    local g, err = M.compile(paths[i])
    if not g then return nil, err end
    getters[i] = g
  end
  local n = #getters
  if n == 1 then return getters[1] end
  if n == 2 then
    local g1, g2 = getters[1], getters[2]
    return function(e)
      local v = g1(e)
      if v == nil or v == "" then return g2(e) end
      return v
    end
  end
  return function(e)
    for i = 1, n do
      local v = getters[i](e)
      if v ~= nil and v ~= "" then return v end
    end
    return nil
  end
end

return M
