-- signal.pipeline.blueprint — the mapping engine: compiles presets and customer
-- scripts (DESIGN §4) and maps canonical events into flat vendor payloads.
--
--   local blueprint = require "signal.pipeline.blueprint"
--   local lib, errors = blueprint.load{ presets_dir = "presets", scripts_dir = "scripts" }
--   -- errors: list of "file:line: message" / "file: where: message"; lib nil if any
--   local bp, err = lib:get("retail", "dk_live_demo")   -- cached per (preset, pipeline)
--   local payload, warnings = bp:map(event, integration_cfg)  -- cfg.source_value
--   -- payload nil: nothing to deliver (default = "drop", or a transform said
--   -- false); warnings nil, or a list of "file:line: message" from scripts
--   lib.version          -- short sha256 of every preset and script source
--   lib.preset_names, lib.script_files, bp.script_files (scripts for that pipeline)
--
-- Loading does all the string work: every `source` path is compiled to an
-- accessor (signal.pipeline.path), every entry is checked (unknown keys, bad paths,
-- bad hash names are load errors naming file and field), and the customer
-- scripts are run, layered exactly as in production, on a probe event for
-- each event name they handle (see probe), so a script that raises on a
-- normal event never replaces a working version. Mapping an event then only
-- calls accessors and writes a flat table.
--
-- Order for one event (the contract in DESIGN §4):
--   1. preset global mappings (presets/<integration>/global.lua, then the
--      vertical's own `global`)
--   2. the preset's event handler, matched by name or alias; the event name is
--      `event` for track, else the type (page, screen, identify, group, alias).
--      No handler anywhere -> `default`: "pass_through" writes the properties
--      flat (see flatten) with type = the event name verbatim; "drop" maps the
--      event to nothing (payload nil).
--   3. customer scripts in file-name order: each one's global mappings, then
--      its handler for the event (a script handler keyed like a preset handler,
--      e.g. `view_item`, also applies to the preset's aliases such as
--      "Product Viewed").
--   4. transform(event, payload) hooks: the preset's, then each script's, in
--      order. Return a table (the new payload), nil (keep the payload) or
--      false (drop the event).
--   5. the integration's finisher (integrations/<name>/transform.lua) adds the
--      fields it always sends — for Amperity `source`, the identity fields and
--      the nested `consent`, which therefore no script can remove or forge.
--
-- Value rules: a mapping reads its source; nil or "" counts as missing and is
-- replaced by `default`; then `fn(value, event)` runs (always, even on nil, so
-- a fn can compute a value from the whole event); then `hash = "sha256"`
-- lower-cases, trims and hashes. A result that is still nil, "" or not a
-- scalar (tables, functions, NaN/inf) leaves the target untouched, so later
-- layers only ever add or override and never blank out an earlier value.
--
-- Customer code failures: a script whose fn or transform raises (or runs out
-- of its instruction budget, see signal.pipeline.scripts) on one event contributes
-- nothing to that event — its writes are staged and discarded — and the
-- error "file:line: message" is returned in `warnings` for live events. The
-- event itself is still mapped and delivered: one bad line in a customer
-- script must not stop a CDP's data flow, and the warning makes it visible.

local core = require "signal.core"
local path = require "signal.pipeline.path"
local scripts = require "signal.pipeline.scripts"

local type, pairs, next, tostring = type, pairs, next, tostring
local lower, concat, sort = string.lower, table.concat, table.sort
local sha256_hex = core.sha256_hex
local guard = scripts.guard
local huge = math.huge

local new_tab
do
  local ok, tn = pcall(require, "table.new")
  new_tab = ok and tn or function() return {} end
end

local cjson_ok, cjson = pcall(require, "cjson")
if not cjson_ok then cjson = nil end

local M = {}

M.MAX_FLATTEN_DEPTH = 6

-- ---------------------------------------------------------------------------
-- Hashing (`hash = "sha256"`): lower-cased, trimmed, hex SHA-256 — the same
-- normalization Amperity linking keys use. The same email is usually hashed
-- for every event of a visitor, so results are memoised in a bounded table.

local hash_cache, hash_count, HASH_CACHE_MAX = {}, 0, 4096

local function hash_norm(v)
  local h = hash_cache[v]
  if h then return h end
  local s = lower(tostring(v)):match("^%s*(.-)%s*$")
  if s == "" then return nil end
  h = sha256_hex(s)
  if hash_count >= HASH_CACHE_MAX then hash_cache, hash_count = {}, 0 end
  hash_cache[v] = h
  hash_count = hash_count + 1
  return h
end
M.hash = hash_norm

-- ---------------------------------------------------------------------------
-- Per-event hot path.

local function const_nil() return nil end

-- run(list, event, out): evaluate one compiled mapping list into `out`.
local function run(list, e, out)
  for i = 1, list.n do
    local m = list[i]
    local v = m.get(e)
    if v == nil or v == "" then v = m.default end
    local f = m.fn
    if f ~= nil then v = f(v, e) end
    if v ~= nil and v ~= "" then
      local tv = type(v)
      if m.hash then
        if tv == "string" or tv == "number" then
          local h = hash_norm(v)
          if h then out[m.target] = h end
        end
      elseif tv == "string" or tv == "boolean"
          or (tv == "number" and v == v and v ~= huge and v ~= -huge) then
        out[m.target] = v
      end
    end
  end
end
M._run = run

-- Pass-through: nested tables join their keys with "_" ({cart={id=1}} ->
-- cart_id); arrays become JSON strings ("[{\"sku\":\"A\"}]") because
-- Amperity bodies may not contain arrays but the data is still useful to
-- parse on the Amperity side; empty tables, nulls and "" are skipped. Keys
-- already written by mappings are never overwritten.
local function flatten(t, prefix, out, depth)
  for k, v in pairs(t) do
    local key = type(k) == "string" and k or tostring(k)
    if prefix then key = prefix .. "_" .. key end
    local tv = type(v)
    if tv == "table" then
      if v[1] ~= nil then
        if out[key] == nil and cjson then
          local ok, s = pcall(cjson.encode, v)
          if ok then out[key] = s end
        end
      elseif depth < M.MAX_FLATTEN_DEPTH and next(v) ~= nil then
        flatten(v, key, out, depth + 1)
      end
    elseif out[key] == nil and v ~= "" and (tv == "string" or tv == "boolean"
        or (tv == "number" and v == v and v ~= huge and v ~= -huge)) then
      out[key] = v
    end
  end
end
M.flatten = flatten

-- After customer transforms: keep only string keys with scalar values.
local function sanitize(p)
  for k, v in pairs(p) do
    local tv = type(v)
    if type(k) ~= "string" or v == "" or not (tv == "string" or tv == "boolean"
        or (tv == "number" and v == v and v ~= huge and v ~= -huge)) then
      p[k] = nil
    end
  end
end

local function shallow_copy(t)
  local c = new_tab(0, 64)
  for k, v in pairs(t) do c[k] = v end
  return c
end

-- The name an event is matched by: the event name for track, else its type.
local function event_name(e)
  local t = e.type
  if t == "track" or t == nil then return e.event end
  return t
end
M.event_name = event_name

-- A guarded script's contribution is staged here, then merged on success.
-- One table reused for every event: nothing yields while mapping.
local stage = {}

local function clear(t) for k in pairs(t) do t[k] = nil end end

local function run_script(s, sh, e, out)
  if s.global then run(s.global, e, out) end
  if sh then run(sh.mappings, e, out) end
end

local function add_warning(w, msg)
  if not w then return { msg } end
  w[#w + 1] = msg
  return w
end

local Blueprint = {}
Blueprint.__index = Blueprint

-- bp:apply(event, payload) -> payload | nil (dropped), warnings | nil
-- Steps 1-4 of the order above; the integration finisher does step 5.
function Blueprint:apply(e, p)
  local name = event_name(e)
  if name ~= nil then p.type = name end
  run(self.global, e, p)

  local ph = name ~= nil and self.handlers[name] or nil
  if ph then
    p.type = ph.type
    run(ph.mappings, e, p)
  elseif not (name ~= nil and self.script_handled[name]) then
    if self.drop_unmapped then return nil end
    local props = e.properties
    if type(props) == "table" then flatten(props, nil, p, 1) end
  end

  local warnings
  local ns, nt = self.nscripts, self.ntransforms
  if ns > 0 then
    -- One instruction budget per event for all customer code: every script's
    -- fns here and its transform below.
    scripts.reset_budget()
    local list = self.scripts
    for i = 1, ns do
      local s = list[i]
      local by = s.by_name
      local sh = nil
      if name ~= nil then sh = by[name] or (ph and by[ph.key]) or nil end
      if s.guarded then
        local ok, err = guard(run_script, s, sh, e, stage)
        if ok then
          for k, v in pairs(stage) do p[k] = v end
          if sh and sh.type then p.type = sh.type end
        else
          warnings = add_warning(warnings, scripts.located(s.file, err))
        end
        clear(stage)
      else
        if s.global then run(s.global, e, p) end
        if sh then
          run(sh.mappings, e, p)
          if sh.type then p.type = sh.type end
        end
      end
    end
  end

  if nt > 0 then
    local list = self.transforms
    for i = 1, nt do
      local t = list[i]
      if t.trusted then
        local r = t.fn(e, p)
        if r == false then return nil, warnings end
        if type(r) == "table" then p = r end
      else
        -- The hook gets a copy so a transform that raises halfway leaves
        -- no partial edits behind.
        local c = shallow_copy(p)
        local ok, r = guard(t.fn, e, c)
        if not ok then
          warnings = add_warning(warnings, scripts.located(t.file, r))
        elseif r == false then
          return nil, warnings
        elseif r == nil then
          p = c
        elseif type(r) == "table" then
          p = r
        else
          warnings = add_warning(warnings, ("%s: transform must return a table, nil or false, got %s")
            :format(t.file, type(r)))
        end
      end
    end
    sanitize(p)
  end
  return p, warnings
end

-- bp:map(event, cfg) -> payload | nil, warnings | nil
-- The full vendor body: apply() plus the integration's fixed fields. cfg is
-- the pipeline's integration config (Amperity reads cfg.source_value).
function Blueprint:map(e, cfg)
  return self.finisher(self, e, cfg)
end

-- ---------------------------------------------------------------------------
-- Compilation and validation.

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
-- Targets the integration owns: a mapping cannot set them.
local RESERVED_TARGETS = {
  consent = "consent is copied verbatim from context.consent by the integration",
  source = "source is always the integration's source_value",
}

local function keys_list(set)
  local out = {}
  for k in pairs(set) do out[#out + 1] = k end
  sort(out)
  return concat(out, ", ")
end

-- Edit distance, for "did you mean" on misspelt field names.
local function distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

local function unknown_field(k, valid)
  local best, bd = nil, 3
  if type(k) == "string" then
    for v in pairs(valid) do
      local d = distance(k, v)
      if d < bd then best, bd = v, d end
    end
  end
  return ("unknown field '%s'%s (valid: %s)"):format(tostring(k),
    best and (" — did you mean '" .. best .. "'?") or "", keys_list(valid))
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

-- compile_mappings(list, where, err) -> { n, [i] = entry, has_fn }
local function compile_mappings(list, where, err)
  local out = { n = 0, has_fn = false }
  if type(list) ~= "table" then
    err(where, "mappings must be a list of { source = …, target = … } tables")
    return out
  end
  for i, m in ipairs(list) do
    local w = ("%s[%d]"):format(where, i)
    if type(m) ~= "table" then
      err(w, "a mapping must be a table")
    else
      local ok = check_fields(m, MAPPING_KEYS, w, err)
      local get
      if type(m.target) ~= "string" or m.target == "" then
        err(w, "target must be a non-empty string"); ok = false
      elseif RESERVED_TARGETS[m.target] then
        err(w, ("target '%s' is reserved: %s"):format(m.target, RESERVED_TARGETS[m.target])); ok = false
      end
      if m.source == nil then
        if ok and m.fn == nil and m.default == nil then
          err(w, "a mapping needs source, fn or default"); ok = false
        end
        get = const_nil
      elseif type(m.source) == "string" then
        local g, perr = path.compile(m.source)
        if not g then err(w, perr); ok = false end
        get = g
      elseif is_list_of_strings(m.source) and #m.source > 0 then
        local g, perr = path.compile_list(m.source)
        if not g then err(w, perr); ok = false end
        get = g
      else
        err(w, "source must be a path string or a list of path strings"); ok = false
      end
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
      if ok then
        out.n = out.n + 1
        out[out.n] = { get = get, target = m.target, default = d,
                       hash = m.hash == "sha256", fn = m.fn }
        if m.fn then out.has_fn = true end
      end
    end
  end
  local n = 0
  for _ in pairs(list) do n = n + 1 end
  if n ~= #list then err(where, "mappings must be a list (no named keys)") end
  return out
end

local function concat_lists(a, b)
  local out = { n = 0, has_fn = false }
  for _, l in ipairs({ a, b }) do
    if l then
      for i = 1, l.n do out.n = out.n + 1; out[out.n] = l[i] end
      out.has_fn = out.has_fn or l.has_fn
    end
  end
  return out
end

-- compile_unit(spec, file, kind, err) -> unit
-- kind: "global" (presets/<i>/global.lua), "preset" (a vertical), "script".
local function compile_unit(spec, file, kind, err, ctx)
  local unit = { file = file, kind = kind, handlers = {}, by_name = {}, has_fn = false }
  if type(spec) ~= "table" then
    err(nil, ("must return a blueprint table, got %s"):format(type(spec)))
    return unit
  end
  local valid = kind == "global" and GLOBAL_FILE_KEYS or kind == "preset" and PRESET_KEYS
    or SCRIPT_KEYS
  check_fields(spec, valid, nil, err)

  if spec.integration ~= nil or kind ~= "script" then
    if spec.integration ~= ctx.integration then
      err("integration", ("must be \"%s\", got %s"):format(ctx.integration, tostring(spec.integration)))
    end
  end
  unit.integration = ctx.integration
  unit.name = spec.name
  unit.version = spec.version
  if kind == "preset" then
    if spec.name ~= ctx.stem then
      err("name", ("must match the file name (\"%s\"), got %s"):format(ctx.stem, tostring(spec.name)))
    end
  end
  if kind ~= "script" and type(spec.version) ~= "string" then
    err("version", "must be a version string such as \"1.8.0\"")
  end

  if spec.global ~= nil then
    if type(spec.global) ~= "table" then
      err("global", "must be a table { mappings = { … } }")
    elseif check_fields(spec.global, { mappings = true }, "global", err) then
      unit.global = compile_mappings(spec.global.mappings or {}, "global.mappings", err)
      unit.has_fn = unit.global.has_fn
    end
  end
  if kind == "global" and not unit.global then
    err("global", "global.lua must define global = { mappings = { … } }")
  end

  if kind == "preset" and spec.events == nil then err("events", "a preset must define events") end
  if spec.events ~= nil then
    if type(spec.events) ~= "table" then
      err("events", "must be a table keyed by event name")
    else
      local keys = {}
      for k in pairs(spec.events) do keys[#keys + 1] = k end
      sort(keys, function(a, b) return tostring(a) < tostring(b) end)
      for _, key in ipairs(keys) do
        local h = spec.events[key]
        local w = "events." .. tostring(key)
        if type(key) ~= "string" or key == "" then
          err("events", ("handler keys must be event names, got %s"):format(tostring(key)))
        elseif type(h) ~= "table" then
          err(w, "must be a table { type = …, aliases = { … }, mappings = { … } }")
        else
          check_fields(h, HANDLER_KEYS, w, err)
          local ty = h.type
          if ty ~= nil and (type(ty) ~= "string" or ty == "") then
            err(w .. ".type", "must be a non-empty string"); ty = nil
          end
          -- Presets name a type for every handler (default: the key);
          -- scripts only change the type when they say so.
          if ty == nil and kind == "preset" then ty = key end
          local handler = { key = key, type = ty,
                            mappings = compile_mappings(h.mappings or {}, w .. ".mappings", err) }
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
      end
    end
  end

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
  return unit
end

local function default_presets_dir()
  return (core.home or ".") .. "/presets"
end
M.default_presets_dir = default_presets_dir

local Library = {}
Library.__index = Library

-- blueprint.load{ presets_dir?, scripts_dir?, integration? } -> lib | nil, errors
function M.load(opts)
  opts = opts or {}
  local integration = opts.integration or "amperity"
  local presets_dir = opts.presets_dir or default_presets_dir()
  local scripts_dir = opts.scripts_dir
  local errors = {}
  local hash_parts = {}

  local finisher_ok, finisher = pcall(require, "signal.destinations." .. integration .. ".payload")
  if not finisher_ok then
    errors[#errors + 1] = ("integration '%s': %s"):format(integration, tostring(finisher))
    return nil, errors
  end

  -- err(where, message[, located]) for one file.
  local function errfn(file)
    return function(where, msg, located)
      if located then errors[#errors + 1] = msg
      elseif where then errors[#errors + 1] = ("%s: %s: %s"):format(file, where, msg)
      else errors[#errors + 1] = ("%s: %s"):format(file, msg) end
    end
  end

  local function load_file(dir, name, trusted)
    local file = dir .. "/" .. name
    local src, rerr = scripts.read(file)
    if not src then errors[#errors + 1] = ("%s: %s"):format(file, rerr); return nil end
    hash_parts[#hash_parts + 1] = name .. "\0" .. src .. "\0"
    local spec, lerr = scripts.load(src, file, { trusted = trusted })
    if lerr then errors[#errors + 1] = lerr; return nil end
    return spec, file
  end

  -- Presets.
  local pdir = presets_dir .. "/" .. integration
  local names, lerr = scripts.list_lua(pdir)
  if not names then
    errors[#errors + 1] = lerr
    return nil, errors
  end
  local shared, presets, preset_names = nil, {}, {}
  hash_parts[#hash_parts + 1] = "presets\0"
  for _, name in ipairs(names) do
    local spec, file = load_file(pdir, name, true)
    if file then
      local stem = name:sub(1, -5)
      local kind = stem == "global" and "global" or "preset"
      local e0 = #errors
      local unit = compile_unit(spec, file, kind, errfn(file),
        { integration = integration, stem = stem })
      if #errors == e0 then
        if kind == "global" then shared = unit
        else presets[stem] = unit; preset_names[#preset_names + 1] = stem end
      end
    end
  end
  if not shared and #errors == 0 then
    errors[#errors + 1] = pdir .. "/global.lua: missing (the shared global mappings)"
  end
  if #preset_names == 0 and #errors == 0 then
    errors[#errors + 1] = pdir .. ": no presets found"
  end

  -- Customer scripts, in file-name order.
  local script_units = {}
  if scripts_dir then
    local snames, serr = scripts.list_lua(scripts_dir)
    if not snames then
      errors[#errors + 1] = "scripts_dir " .. serr
    else
      hash_parts[#hash_parts + 1] = "scripts\0"
      for _, name in ipairs(snames) do
        local spec, file = load_file(scripts_dir, name, false)
        if file then
          local e0 = #errors
          local err = errfn(file)
          local unit = compile_unit(spec, file, "script", err, { integration = integration })
          if #errors == e0 and unit.presets then
            for p in pairs(unit.presets) do
              if not presets[p] then
                err("presets", ("unknown preset '%s' (valid: %s)"):format(p, concat(preset_names, ", ")))
              end
            end
          end
          if #errors == e0 then script_units[#script_units + 1] = unit end
        end
      end
    end
  end

  if #errors > 0 then return nil, errors end
  sort(preset_names)
  local lib = setmetatable({
    version = sha256_hex(concat(hash_parts)):sub(1, 12),
    integration = integration,
    presets_dir = presets_dir,
    scripts_dir = scripts_dir,
    preset_names = preset_names,
    script_files = {},
    _shared = shared,
    _presets = presets,
    _scripts = script_units,
    _finisher = finisher.payload,
    _cache = {},
  }, Library)
  for i, u in ipairs(script_units) do lib.script_files[i] = u.file end
  local perrors = M.probe(lib)
  if #perrors > 0 then return nil, perrors end
  return lib
end

-- all_pipelines: include every pipeline-scoped script (the load-time probe).
local function build(lib, preset, name, pipeline_key, all_pipelines)
  local bp = setmetatable({
    name = name,
    integration = lib.integration,
    version = lib.version,
    preset_version = preset.version,
    global = concat_lists(lib._shared.global, preset.global),
    handlers = preset.by_name,
    script_handled = {},
    scripts = {},
    nscripts = 0,
    script_files = {},
    transforms = {},
    ntransforms = 0,
    drop_unmapped = preset.default == "drop",
    finisher = lib._finisher,
  }, Blueprint)
  if preset.transform then
    bp.ntransforms = 1
    bp.transforms[1] = { fn = preset.transform, file = preset.file, trusted = true }
  end
  local default = preset.default
  for _, u in ipairs(lib._scripts) do
    local applies = (all_pipelines or not u.pipelines
                     or (pipeline_key ~= nil and u.pipelines[pipeline_key]))
      and (not u.presets or u.presets[name])
    if applies then
      bp.nscripts = bp.nscripts + 1
      bp.scripts[bp.nscripts] = { file = u.file, global = u.global, by_name = u.by_name,
                                  guarded = u.has_fn }
      bp.script_files[bp.nscripts] = u.file
      for n in pairs(u.by_name) do bp.script_handled[n] = true end
      if u.transform then
        bp.ntransforms = bp.ntransforms + 1
        bp.transforms[bp.ntransforms] = { fn = u.transform, file = u.file, trusted = false }
      end
      if u.default then default = u.default end
    end
  end
  bp.default = default
  bp.drop_unmapped = default == "drop"
  return bp
end

-- lib:get(preset_name, pipeline_key?) -> blueprint | nil, err
-- Scripts scoped with `pipelines = {…}` apply only when pipeline_key is one
-- of them; `presets = {…}` limits a script to some verticals.
function Library:get(name, pipeline_key)
  local preset = self._presets[name]
  if not preset then
    return nil, ("unknown preset '%s' (valid: %s)"):format(tostring(name), concat(self.preset_names, ", "))
  end
  local per = self._cache[name]
  if not per then per = {}; self._cache[name] = per end
  local k = pipeline_key or false
  local bp = per[k]
  if not bp then
    bp = build(self, preset, name, pipeline_key)
    per[k] = bp
  end
  return bp
end

function Library:presets() return self.preset_names end

-- probe(lib) -> errors. Maps the probe event (signal.pipeline.scripts.probe_event)
-- through every preset with all scripts layered exactly as in production,
-- once per event name a script handles plus once for an unhandled name; any
-- script error becomes a load error "file:line: message", so a script that
-- raises on an ordinary event never replaces a working version.
function M.probe(lib)
  local errors, seen = {}, {}
  if #lib._scripts == 0 then return errors end
  local names = { "probe_event" }
  local have = { probe_event = true }
  for _, u in ipairs(lib._scripts) do
    local keys = {}
    for k in pairs(u.by_name) do keys[#keys + 1] = k end
    sort(keys)
    for _, k in ipairs(keys) do
      if not have[k] then have[k] = true; names[#names + 1] = k end
    end
  end
  for _, pname in ipairs(lib.preset_names) do
    local bp = build(lib, lib._presets[pname], pname, nil, true)
    if bp.nscripts > 0 then
      for _, n in ipairs(names) do
        local _, warnings = bp:map(scripts.probe_event(n), { source_value = "PROBE" })
        for _, w in ipairs(warnings or {}) do
          if not seen[w] and not w:find("^source_value") then
            seen[w] = true
            errors[#errors + 1] = w
          end
        end
      end
    end
  end
  return errors
end

return M
