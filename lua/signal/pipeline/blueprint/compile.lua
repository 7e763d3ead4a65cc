-- signal.pipeline.blueprint.compile — turns one blueprint file (a preset, a
-- destination's global.lua, or a customer script) into a compiled unit, and
-- says exactly what is wrong with it when it cannot.
--
--   local unit = compile.unit(spec, file, kind, err, ctx)
--     kind  "global" | "preset" | "script"
--     err   function(where, message) collecting "file: where: message"
--     ctx   { destination = type, stem = preset name (presets),
--             nested = true when targets may be dotted paths,
--             reserved = { target = why } }
--
-- Every `source` path is compiled to an accessor (signal.pipeline.path) and
-- every entry is checked: unknown keys (with "did you mean"), bad paths, bad
-- hash names, reserved targets, duplicate event names. Mapping an event later
-- calls accessors and writes tables; it never parses a string.
--
-- A compiled mapping: { get, target, keys (nested: the target's path as a
-- list), default, hash (boolean), fn }. A handler: { key, type, mappings }.
local path = require "signal.pipeline.path"
local suggest = require("signal.config.schema").suggest

local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local concat, sort = table.concat, table.sort

local M = {}

local MAPPING_KEYS = { source = true, target = true, default = true, hash = true, fn = true }
local HANDLER_KEYS = { type = true, aliases = true, mappings = true }
local PRESET_KEYS = {
  integration = true, name = true, version = true, description = true,
  global = true, events = true, default = true, transform = true,
}
local GLOBAL_FILE_KEYS = {
  integration = true, name = true, version = true, description = true, global = true,
}
local SCRIPT_KEYS = {
  integration = true, name = true, version = true, description = true,
  pipelines = true, presets = true, global = true, events = true,
  default = true, transform = true,
}
local DEFAULTS = { pass_through = true, drop = true }

local function const_nil() return nil end

local function sorted(set)
  local out = {}
  for k in pairs(set) do out[#out + 1] = k end
  sort(out)
  return out
end

local function unknown_field(k, valid)
  local names = sorted(valid)
  local best = type(k) == "string" and suggest(k, names) or nil
  return ("unknown field '%s'%s (valid: %s)"):format(tostring(k),
    best and (" — did you mean '" .. best .. "'?") or "", concat(names, ", "))
end

local function check_fields(t, valid, where, err)
  local bad = {}
  for k in pairs(t) do
    if not valid[k] then bad[#bad + 1] = k end
  end
  sort(bad, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(bad) do err(where, unknown_field(k, valid)) end
  return #bad == 0
end

local function is_list_of_strings(v)
  if type(v) ~= "table" then return false end
  local n = 0
  for _ in pairs(v) do n = n + 1 end
  if n ~= #v then return false end
  for i = 1, n do
    if type(v[i]) ~= "string" or v[i] == "" then return false end
  end
  return true
end
M.is_list_of_strings = is_list_of_strings

-- target_keys("user_data.em") → { "user_data", "em" } | nil, err
local function target_keys(target)
  local keys = {}
  for seg in (target .. "."):gmatch("(.-)%.") do
    if seg == "" then return nil, ("target '%s' has an empty segment"):format(target) end
    keys[#keys + 1] = seg
  end
  return keys
end

local function compile_source(m, w, err, ok)
  if m.source == nil then
    if ok and m.fn == nil and m.default == nil then
      err(w, "a mapping needs source, fn or default")
      return nil, false
    end
    return const_nil, ok
  end
  local g, perr
  if type(m.source) == "string" then
    g, perr = path.compile(m.source)
  elseif is_list_of_strings(m.source) and #m.source > 0 then
    g, perr = path.compile_list(m.source)
  else
    perr = "source must be a path string or a list of path strings"
  end
  if not g then err(w, perr); return nil, false end
  return g, ok
end

-- one mapping entry → compiled entry | nil (errors reported)
local function compile_mapping(m, w, err, ctx)
  if type(m) ~= "table" then
    err(w, "a mapping must be a table")
    return nil
  end
  local ok = check_fields(m, MAPPING_KEYS, w, err)
  local keys
  if type(m.target) ~= "string" or m.target == "" then
    err(w, "target must be a non-empty string"); ok = false
  elseif ctx.reserved and ctx.reserved[m.target] then
    err(w, ("target '%s' is reserved: %s"):format(m.target, ctx.reserved[m.target])); ok = false
  elseif ctx.nested and m.target:find(".", 1, true) then
    local kerr
    keys, kerr = target_keys(m.target)
    if not keys then err(w, kerr); ok = false end
  end
  local get
  get, ok = compile_source(m, w, err, ok)
  if m.hash ~= nil and m.hash ~= "sha256" then
    err(w, ("hash must be \"sha256\", got %s"):format(tostring(m.hash))); ok = false
  end
  if m.fn ~= nil and type(m.fn) ~= "function" then
    err(w, "fn must be a function(value, event)"); ok = false
  end
  local d = m.default
  if d ~= nil and type(d) ~= "string" and type(d) ~= "number" and type(d) ~= "boolean" then
    err(w, "default must be a string, number or boolean"); ok = false
  end
  if not ok then return nil end
  return { get = get, target = m.target, keys = keys, default = d, hash = m.hash == "sha256", fn = m.fn }
end

-- mappings(list, where, err, ctx) → { n, [i] = entry, has_fn }
function M.mappings(list, where, err, ctx)
  local out = { n = 0, has_fn = false }
  if type(list) ~= "table" then
    err(where, "mappings must be a list of { source = …, target = … } tables")
    return out
  end
  for i, m in ipairs(list) do
    local entry = compile_mapping(m, ("%s[%d]"):format(where, i), err, ctx)
    if entry then
      out.n = out.n + 1
      out[out.n] = entry
      if entry.fn then out.has_fn = true end
    end
  end
  local n = 0
  for _ in pairs(list) do n = n + 1 end
  if n ~= #list then err(where, "mappings must be a list (no named keys)") end
  return out
end

-- concat(a, b) → one mapping list: a's entries, then b's
function M.concat(a, b)
  local out = { n = 0, has_fn = false }
  for _, l in ipairs({ a, b }) do
    if l then
      for i = 1, l.n do out.n = out.n + 1; out[out.n] = l[i] end
      out.has_fn = out.has_fn or l.has_fn
    end
  end
  return out
end

local function compile_handler(unit, key, h, kind, err, ctx)
  local w = "events." .. tostring(key)
  if type(key) ~= "string" or key == "" then
    err("events", ("handler keys must be event names, got %s"):format(tostring(key)))
    return
  end
  if type(h) ~= "table" then
    err(w, "must be a table { type = …, aliases = { … }, mappings = { … } }")
    return
  end
  check_fields(h, HANDLER_KEYS, w, err)
  local ty = h.type
  if ty ~= nil and (type(ty) ~= "string" or ty == "") then
    err(w .. ".type", "must be a non-empty string"); ty = nil
  end
  -- Presets name a type for every handler (default: the key); scripts only
  -- change the type when they say so.
  if ty == nil and kind == "preset" then ty = key end
  local handler = { key = key, type = ty, mappings = M.mappings(h.mappings or {}, w .. ".mappings", err, ctx) }
  if handler.mappings.has_fn then unit.has_fn = true end
  unit.handlers[key] = handler
  local names = { key }
  if h.aliases ~= nil then
    if not is_list_of_strings(h.aliases) then
      err(w .. ".aliases", "must be a list of event names")
    else
      for _, a in ipairs(h.aliases) do names[#names + 1] = a end
    end
  end
  for _, n in ipairs(names) do
    local prev = unit.by_name[n]
    if prev and prev ~= handler then
      err(w, ("event name '%s' is already handled by events.%s"):format(n, prev.key))
    else
      unit.by_name[n] = handler
    end
  end
end

local function compile_events(unit, events, kind, err, ctx)
  if type(events) ~= "table" then
    err("events", "must be a table keyed by event name")
    return
  end
  local keys = {}
  for k in pairs(events) do keys[#keys + 1] = k end
  sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for _, key in ipairs(keys) do compile_handler(unit, key, events[key], kind, err, ctx) end
end

local function compile_header(unit, spec, kind, err, ctx)
  if spec.integration ~= nil or kind ~= "script" then
    if spec.integration ~= ctx.destination then
      err("integration", ("must be \"%s\", got %s"):format(ctx.destination, tostring(spec.integration)))
    end
  end
  unit.name = spec.name
  unit.version = spec.version
  if kind == "preset" and spec.name ~= ctx.stem then
    err("name", ("must match the file name (\"%s\"), got %s"):format(ctx.stem, tostring(spec.name)))
  end
  if kind ~= "script" and type(spec.version) ~= "string" then
    err("version", "must be a version string such as \"1.8.0\"")
  end
end

local function compile_global(unit, spec, kind, err, ctx)
  if spec.global ~= nil then
    if type(spec.global) ~= "table" then
      err("global", "must be a table { mappings = { … } }")
    elseif check_fields(spec.global, { mappings = true }, "global", err) then
      unit.global = M.mappings(spec.global.mappings or {}, "global.mappings", err, ctx)
      unit.has_fn = unit.global.has_fn
    end
  end
  if kind == "global" and not unit.global then
    err("global", "global.lua must define global = { mappings = { … } }")
  end
end

local function compile_tail(unit, spec, kind, err)
  if spec.default ~= nil and not DEFAULTS[spec.default] then
    err("default", ("must be \"pass_through\" or \"drop\", got %s"):format(tostring(spec.default)))
  elseif kind == "preset" and spec.default == nil then
    err("default", "a preset must say default = \"pass_through\" or \"drop\"")
  end
  unit.default = spec.default
  if spec.transform ~= nil and type(spec.transform) ~= "function" then
    err("transform", "must be a function(event, payload)")
  else
    unit.transform = spec.transform
  end
  for _, f in ipairs({ "pipelines", "presets" }) do
    local v = spec[f]
    if v ~= nil then
      if not is_list_of_strings(v) then
        err(f, "must be a list of strings")
      else
        local set = {}
        for _, s in ipairs(v) do set[s] = true end
        unit[f] = set
      end
    end
  end
end

local VALID = { global = GLOBAL_FILE_KEYS, preset = PRESET_KEYS, script = SCRIPT_KEYS }

-- unit(spec, file, kind, err, ctx) → unit (see the top of the file)
function M.unit(spec, file, kind, err, ctx)
  local unit = { file = file, kind = kind, handlers = {}, by_name = {}, has_fn = false,
                 destination = ctx.destination }
  if type(spec) ~= "table" then
    err(nil, ("must return a blueprint table, got %s"):format(type(spec)))
    return unit
  end
  check_fields(spec, VALID[kind], nil, err)
  compile_header(unit, spec, kind, err, ctx)
  compile_global(unit, spec, kind, err, ctx)
  if kind == "preset" and spec.events == nil then err("events", "a preset must define events") end
  if spec.events ~= nil then compile_events(unit, spec.events, kind, err, ctx) end
  compile_tail(unit, spec, kind, err)
  return unit
end

return M
