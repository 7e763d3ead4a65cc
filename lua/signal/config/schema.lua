-- signal.config.schema — a small declarative validator for configuration tables.
--
-- A schema is data (Kong's schema.lua, Fluent Bit's config_map): a record is
-- `{ fields = { field, … }, entity_checks = { fn, … }, select = fn }`, and a
-- field is
--
--   { name = "event_stream_id", type = "string", required = true,
--     secret = false, default = v | function(record) … end,
--     description = "…",                 -- for generated docs
--     one_of = { … }, non_empty = true, min = n, max = n,   -- common checks
--     checks = { function(value) return true | nil, "message" end, … },
--     fields = { … }, entity_checks = { … },   -- type = "record"
--     elements = field, unique = "key",         -- type = "array"
--     json = true,   -- a JSON string is accepted and decoded first
--     csv = true,    -- a comma-separated string is accepted (list of strings)
--     trim = true, drop_empty = true,     -- strings trimmed; "" list items dropped
--     transform = function(value) … end,  -- canonical form, after all checks pass
--   }
--
-- types: string, integer, number, boolean, record, array, any.
--
-- `validate` walks the whole value and reports EVERY problem as
-- `{ path = "pipelines[1].integrations[1].api_key", message = "…" }`; it never
-- stops at the first one. Unknown keys are errors (with "did you mean").
-- Secrets: messages never print a value for a `secret` field, `quote()` hides
-- anything that looks like a token, and as a last line of defence every
-- message is scrubbed of every secret value seen during validation — so a
-- secret typed into the wrong field cannot leak through another field's
-- message either.

local cjson = require "cjson.safe"

local type, pairs, ipairs, next, tostring = type, pairs, ipairs, next, tostring
local floor, huge = math.floor, math.huge
local sort, concat = table.sort, table.concat
local min = math.min

local M = {}

local EMPTY = {}

-- human names for Lua types in messages
local function type_name(v)
  local t = type(v)
  if t == "table" then
    if next(v) == nil then return "an empty table" end
    return (v[1] ~= nil) and "a list" or "a table"
  end
  if t == "userdata" and v == cjson.null then return "null" end
  if t == "nil" then return "nothing" end
  local article = t:match("^[aeiou]") and "an " or "a "
  return article .. t
end
M.type_name = type_name

-- true for strings that look like credentials (JWTs, bearer headers) or are
-- too long to be worth echoing; such values are never quoted in messages.
local function looks_secret(s)
  if #s > 40 then return true end
  if s:find("^eyJ[%w_%-]+%.") then return true end       -- JWT header
  if s:find("^[Bb]earer%s") then return true end
  return false
end
M.looks_secret = looks_secret

local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
local function escape_char(c)
  return ESCAPES[c] or ("\\x%02x"):format(c:byte())
end

-- quote(v): a short, safe rendering of a non-secret value for a message.
function M.quote(v)
  if type(v) == "string" then
    if looks_secret(v) then return "(value not shown)" end
    return '"' .. v:gsub('[%c"\\]', escape_char) .. '"'
  elseif type(v) == "number" or type(v) == "boolean" then
    return tostring(v)
  end
  return type_name(v)
end
local quote = M.quote

-- Levenshtein distance, bounded inputs only (field names).
local function distance(a, b)
  local la, lb = #a, #b
  if la == 0 then return lb end
  if lb == 0 then return la end
  local prev, cur = {}, {}
  for j = 0, lb do prev[j] = j end
  for i = 1, la do
    cur[0] = i
    local ca = a:byte(i)
    for j = 1, lb do
      local cost = (ca == b:byte(j)) and 0 or 1
      cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev, cur = cur, prev
  end
  return prev[lb]
end
M.distance = distance

local function snake(s)
  return (s:gsub("([%l%d])(%u)", "%1_%2"):gsub("(%u)(%u%l)", "%1_%2"):lower())
end

-- suggest(name, candidates) → the closest candidate, or nil if none is close.
function M.suggest(name, candidates)
  if type(name) ~= "string" then return nil end
  local lname, sname = name:lower(), snake(name)
  local best, best_d
  for _, c in ipairs(candidates) do
    if c == sname or c == lname then return c end
    local d = distance(lname, c)
    if d <= 2 or d <= floor(#c / 3) then
      if not best_d or d < best_d then best, best_d = c, d end
    end
  end
  return best
end
local suggest = M.suggest

local function did_you_mean(name, candidates)
  local s = suggest(name, candidates)
  if s then return ' (did you mean "' .. s .. '"?)' end
  return ""
end

local function join(path, name)
  if path == "" then return name end
  return path .. "." .. name
end

local function index(path, i)
  return path .. "[" .. i .. "]"
end

local function add(ctx, path, message)
  local errs = ctx.errors
  errs[#errs + 1] = { path = path, message = message }
end

local function deepcopy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = deepcopy(x) end
  return t
end
M.deepcopy = deepcopy

-- Per-record lookup tables, built once per schema table.
local compiled = setmetatable({}, { __mode = "k" })
local function compile(rec)
  local c = compiled[rec]
  if c then return c end
  c = { by_name = {}, names = {} }
  for _, f in ipairs(rec.fields or EMPTY) do
    c.by_name[f.name] = f
    c.names[#c.names + 1] = f.name
  end
  if rec.one_of then
    c.one_of = {}
    for _, v in ipairs(rec.one_of) do c.one_of[v] = true end
  end
  compiled[rec] = c
  return c
end

-- is_list(t): true when t's keys are exactly 1..n.
local function is_list(t)
  local n = #t
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or k > n or k ~= floor(k) then return false end
  end
  return true
end
M.is_list = is_list

local validate_field

local function validate_record(rec, v, path, ctx)
  if type(v) ~= "table" then
    add(ctx, path, "must be a table, got " .. type_name(v))
    return nil
  end
  if rec.select then
    local sub, field, msg = rec.select(v)
    if not sub then
      if field then add(ctx, join(path, field), msg) else add(ctx, path, msg) end
      return nil
    end
    rec = sub
  end
  local c = compile(rec)
  local out = {}

  -- unknown keys, reported in a stable order
  local unknown
  for k in pairs(v) do
    if type(k) ~= "string" or not c.by_name[k] then
      unknown = unknown or {}
      unknown[#unknown + 1] = k
    end
  end
  if unknown then
    sort(unknown, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(unknown) do
      if type(k) == "string" then
        add(ctx, join(path, k), "unknown field" .. did_you_mean(k, c.names))
      else
        add(ctx, index(path, tostring(k)),
            "unexpected list entry; this is a table of named fields")
      end
    end
  end

  for _, f in ipairs(rec.fields or EMPTY) do
    local fv = v[f.name]
    if fv == cjson.null then fv = nil end
    local fpath = join(path, f.name)
    if fv == nil then
      if f.required then
        local hint = f.secret and " (if it comes from os.getenv, is the variable set?)" or ""
        add(ctx, fpath, "is required" .. hint)
      elseif f.default ~= nil and type(f.default) ~= "function" then
        -- through the validator, so a record default gets its fields' defaults
        out[f.name] = validate_field(f, deepcopy(f.default), fpath, ctx)
      end
    else
      out[f.name] = validate_field(f, fv, fpath, ctx)
    end
  end

  -- computed defaults see the normalized record
  for _, f in ipairs(rec.fields or EMPTY) do
    if type(f.default) == "function" and out[f.name] == nil and v[f.name] == nil then
      out[f.name] = f.default(out)
    end
  end

  for _, check in ipairs(rec.entity_checks or EMPTY) do
    check(out, function(field, message)
      add(ctx, field and join(path, field) or path, message)
    end, v)
  end
  return out
end

local function split_csv(s)
  local list = {}
  for item in (s .. ","):gmatch("([^,]*),") do
    list[#list + 1] = item
  end
  return list
end

local function validate_array(f, v, path, ctx)
  if type(v) ~= "table" then
    add(ctx, path, "must be a list, got " .. type_name(v))
    return nil
  end
  if not is_list(v) then
    add(ctx, path, f.list_hint or "must be a list ({ … }), got a table with named keys")
    return nil
  end
  local out, from = {}, {}   -- from[j]: input position of out[j]
  local el = f.elements
  for i = 1, #v do
    local item = v[i]
    if el then item = validate_field(el, item, index(path, i), ctx) end
    if item ~= nil and not (f.drop_empty and item == "") then
      out[#out + 1] = item
      from[#out] = i
    end
  end
  if f.unique then
    local seen = {}
    for j, item in ipairs(out) do
      local key = type(item) == "table" and item[f.unique]
      if key ~= nil then
        if seen[key] then
          add(ctx, join(index(path, from[j]), f.unique),
              "duplicate " .. f.unique .. " " .. quote(key) .. " (also " .. index(path, seen[key]) .. ")")
        else
          seen[key] = from[j]
        end
      end
    end
  end
  if f.min_items and #v < f.min_items then
    add(ctx, path, "must have at least " .. f.min_items .. " entr" .. (f.min_items == 1 and "y" or "ies"))
  end
  return out
end

validate_field = function(f, v, path, ctx)
  if v == cjson.null then v = nil end
  if v == nil then return nil end
  if f.secret and type(v) == "string" then
    ctx.secrets[#ctx.secrets + 1] = v
  end

  if f.json and type(v) == "string" then
    local decoded, err = cjson.decode(v)
    if decoded == nil then
      add(ctx, path, "invalid JSON: " .. tostring(err))
      return nil
    end
    v = decoded
  end
  if f.csv and type(v) == "string" then
    v = split_csv(v)
  end
  if f.trim and type(v) == "string" then
    v = v:match("^%s*(.-)%s*$")
  end

  local t = f.type
  if t == "string" then
    if type(v) ~= "string" then
      add(ctx, path, "must be a string, got " .. type_name(v))
      return nil
    end
    if f.non_empty and v:find("^%s*$") then
      add(ctx, path, "must not be empty")
      return nil
    end
    if f.one_of then
      local c = compile(f)
      if not c.one_of[v] then
        local shown = f.secret and "" or (", got " .. quote(v))
        add(ctx, path, "must be one of " .. concat(f.one_of, ", ") .. shown .. did_you_mean(v, f.one_of))
        return nil
      end
    end
  elseif t == "integer" or t == "number" then
    if type(v) ~= "number" or v ~= v or v == huge or v == -huge then
      add(ctx, path, "must be " .. (t == "integer" and "an integer" or "a number") .. ", got " .. type_name(v))
      return nil
    end
    if t == "integer" and v ~= floor(v) then
      add(ctx, path, "must be a whole number, got " .. tostring(v))
      return nil
    end
    if (f.min and v < f.min) or (f.max and v > f.max) then
      local range
      if f.min and f.max then range = "between " .. f.min .. " and " .. f.max
      elseif f.min then range = "at least " .. f.min
      else range = "at most " .. f.max end
      add(ctx, path, "must be " .. range .. ", got " .. tostring(v))
      return nil
    end
  elseif t == "boolean" then
    if type(v) ~= "boolean" then
      add(ctx, path, "must be true or false, got " .. type_name(v))
      return nil
    end
  elseif t == "record" then
    v = validate_record(f, v, path, ctx)
    if v == nil then return nil end
  elseif t == "array" then
    v = validate_array(f, v, path, ctx)
    if v == nil then return nil end
  elseif t ~= "any" then
    error("schema: field " .. path .. " has unknown type " .. tostring(t))
  end

  for _, check in ipairs(f.checks or EMPTY) do
    local ok, message = check(v)
    if not ok then
      add(ctx, path, message)
      return nil
    end
  end
  if f.transform then v = f.transform(v) end
  return v
end

-- scrub(s, secrets): replace every occurrence of each secret in s.
local function scrub(s, secrets)
  for _, secret in ipairs(secrets) do
    if #secret >= 4 then
      local i, j = s:find(secret, 1, true)
      while i do
        s = s:sub(1, i - 1) .. "(secret)" .. s:sub(j + 1)
        i, j = s:find(secret, i + 8, true)
      end
    end
  end
  return s
end
M.scrub = scrub

-- validate(rec, value) → normalized, errors, secrets
-- `rec` is a record schema; `errors` is a list of { path, message } (empty on
-- success; `normalized` is still returned so callers can count things);
-- `secrets` lists every string found in a secret field.
function M.validate(rec, value, opts)
  local ctx = { errors = {}, secrets = {} }
  if opts and opts.secrets then
    for _, s in ipairs(opts.secrets) do ctx.secrets[#ctx.secrets + 1] = s end
  end
  local out = validate_record(rec, value, "", ctx)
  for _, e in ipairs(ctx.errors) do
    e.message = scrub(e.message, ctx.secrets)
    e.path = scrub(e.path, ctx.secrets)
  end
  return out, ctx.errors, ctx.secrets
end

-- format(errors, file) → list of "file: path: message" lines.
function M.format(errors, file)
  local lines = {}
  for i, e in ipairs(errors) do
    if e.path == "" then
      lines[i] = file .. ": " .. e.message
    else
      lines[i] = file .. ": " .. e.path .. ": " .. e.message
    end
  end
  return lines
end

-- docs(rec) → list of { name, type, required, secret, default, description }
-- rows in field order, for generated documentation.
function M.docs(rec)
  local rows = {}
  for _, f in ipairs(rec.fields or EMPTY) do
    local t = f.doc_type or (f.secret and "secret") or f.type
    rows[#rows + 1] = {
      name = f.name, type = t, required = f.required or false,
      secret = f.secret or false,
      default = type(f.default) ~= "function" and f.default or f.default_doc,
      description = f.description,
    }
  end
  return rows
end

return M
