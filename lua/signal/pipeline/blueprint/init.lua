-- signal.pipeline.blueprint — loads the blueprints of every destination:
-- its presets (presets/<destination>/global.lua plus one file per vertical)
-- and the customer scripts that map for it, compiled, validated and probed.
--
--   local set, errors = blueprint.load_all{ presets_dir = "presets", scripts_dir = "scripts" }
--   local bp, err = set:get(destination, "retail", "dk_live_demo")  -- cached per pipeline
--   local payload, warnings = bp:map(event, integration_cfg)
--   set.version, set.script_files
--
--   local lib, errors = blueprint.load{ destination = type, presets_dir, scripts_dir }
--   local bp = lib:get("retail", "dk_live_demo")     -- one destination's library
--   lib.version, lib.preset_names, lib.script_files
--
-- errors: every problem as "file:line: message" or "file: where: message";
-- the library is nil when there is any. Loading does all the string work
-- (signal.pipeline.blueprint.compile), and the customer scripts are run,
-- layered exactly as in production, on a probe event for each event name
-- they handle (see probe), so a script that raises on a normal event never
-- replaces a working version. Mapping is signal.pipeline.blueprint.runtime.
--
-- Which scripts map for a destination: those whose `integration` names it;
-- a script that names none maps for the registry's SCRIPT_DEFAULT. Scripts
-- scoped with `pipelines = {…}` apply only to those pipeline keys, and
-- `presets = {…}` limits a script to some verticals.
local core = require "signal.core"
local scripts = require "signal.pipeline.scripts"
local compile = require "signal.pipeline.blueprint.compile"
local runtime = require "signal.pipeline.blueprint.runtime"
local destinations = require "signal.destinations"

local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local concat, sort = table.concat, table.sort
local sha256_hex = core.sha256_hex

local M = {}

M.hash = runtime.hash
M.flatten = runtime.flatten
M.event_name = runtime.event_name

local function default_presets_dir()
  return (core.home or ".") .. "/presets"
end
M.default_presets_dir = default_presets_dir

---------------------------------------------------------------------------
-- reading files

-- A loader collects the errors and the version hash of one load.
local function loader()
  local L = { errors = {}, hash = {} }
  function L.err(file)
    return function(where, msg)
      if where then L.errors[#L.errors + 1] = ("%s: %s: %s"):format(file, where, msg)
      else L.errors[#L.errors + 1] = ("%s: %s"):format(file, msg) end
    end
  end
  function L.file(dir, name, trusted)
    local file = dir .. "/" .. name
    local src, rerr = scripts.read(file)
    if not src then L.errors[#L.errors + 1] = ("%s: %s"):format(file, rerr); return nil end
    L.hash[#L.hash + 1] = name .. "\0" .. src .. "\0"
    local spec, lerr = scripts.load(src, file, { trusted = trusted })
    if lerr then L.errors[#L.errors + 1] = lerr; return nil end
    return spec, file
  end
  return L
end

local function compile_ctx(dest, stem)
  local m = dest.mapping
  return { destination = dest.type, stem = stem, nested = m.shape == "nested", reserved = m.reserved_targets }
end

-- presets of one destination → shared unit, presets by name, sorted names
local function load_presets(L, dest, presets_dir)
  local pdir = presets_dir .. "/" .. dest.type
  local names, lerr = scripts.list_lua(pdir)
  if not names then L.errors[#L.errors + 1] = lerr; return end
  local shared, presets, preset_names = nil, {}, {}
  L.hash[#L.hash + 1] = "presets\0" .. dest.type .. "\0"
  for _, name in ipairs(names) do
    local spec, file = L.file(pdir, name, true)
    if file then
      local stem = name:sub(1, -5)
      local kind = stem == "global" and "global" or "preset"
      local e0 = #L.errors
      local unit = compile.unit(spec, file, kind, L.err(file), compile_ctx(dest, stem))
      if #L.errors == e0 then
        if kind == "global" then shared = unit
        else presets[stem] = unit; preset_names[#preset_names + 1] = stem end
      end
    end
  end
  if not shared and #L.errors == 0 then
    L.errors[#L.errors + 1] = pdir .. "/global.lua: missing (the shared global mappings)"
  end
  if #preset_names == 0 and #L.errors == 0 then L.errors[#L.errors + 1] = pdir .. ": no presets found" end
  sort(preset_names)
  return shared, presets, preset_names
end

-- the customer scripts in file-name order, each with the spec it returned
-- or the error that stopped it (reported in file order by compile_scripts)
local function read_scripts(L, scripts_dir)
  local out = {}
  if not scripts_dir then return out end
  local names, serr = scripts.list_lua(scripts_dir)
  if not names then L.errors[#L.errors + 1] = "scripts_dir " .. serr; return out end
  L.hash[#L.hash + 1] = "scripts\0"
  for _, name in ipairs(names) do
    local e0 = #L.errors
    local spec, file = L.file(scripts_dir, name, false)
    if file then
      out[#out + 1] = { spec = spec, file = file }
    else
      out[#out + 1] = { error = L.errors[e0 + 1] }
      L.errors[e0 + 1] = nil
    end
  end
  return out
end

local function maps_for(spec)
  local t = type(spec) == "table" and spec.integration or nil
  if t == nil then return destinations.SCRIPT_DEFAULT end
  return t
end

-- compile_scripts(L, list, targets, strict): each script, in file order,
-- into the units of the destination it maps for. targets: type → { dest,
-- presets, preset_names, units }. strict: a script for a destination not
-- in targets is an error (else it is another library's business).
local function compile_scripts(L, list, targets, strict)
  for _, s in ipairs(list) do
    if s.error then
      L.errors[#L.errors + 1] = s.error
    else
      local t = maps_for(s.spec)
      local c = targets[t]
      if c then
        local e0 = #L.errors
        local err = L.err(s.file)
        local unit = compile.unit(s.spec, s.file, "script", err, compile_ctx(c.dest))
        if #L.errors == e0 and unit.presets then
          for p in pairs(unit.presets) do
            if not c.presets[p] then
              err("presets", ("unknown preset '%s' (valid: %s)"):format(p, concat(c.preset_names, ", ")))
            end
          end
        end
        if #L.errors == e0 then c.units[#c.units + 1] = unit end
      elseif strict then
        L.errors[#L.errors + 1] = ("%s: integration: unknown destination %s (known: %s)")
          :format(s.file, tostring(t), concat(destinations.types(), ", "))
      end
    end
  end
end

---------------------------------------------------------------------------
-- libraries

local Library = {}
Library.__index = Library

local function new_library(dest, shared, presets, preset_names, units, dirs)
  local lib = setmetatable({
    destination = dest.type,
    dest = dest,
    presets_dir = dirs.presets_dir,
    scripts_dir = dirs.scripts_dir,
    preset_names = preset_names or {},
    script_files = {},
    _shared = shared,
    _presets = presets or {},
    _scripts = units,
    _cache = {},
  }, Library)
  for i, u in ipairs(units) do lib.script_files[i] = u.file end
  return lib
end

-- all_pipelines: include every pipeline-scoped script (the load-time probe).
local function build(lib, preset, name, pipeline_key, all_pipelines)
  local m = lib.dest.mapping
  local f = {
    name = name, destination = lib.destination, version = lib.version,
    preset = preset, preset_version = preset and preset.version,
    global = preset and compile.concat(lib._shared.global, preset.global) or nil,
    handlers = preset and preset.by_name or {},
    script_handled = {}, scripts = {}, script_files = {}, transforms = {},
    shape = m.shape or "flat", type_target = m.type_target,
    finish = m.finish, base_fn = m.base,
  }
  if preset and preset.transform then
    f.transforms[1] = { fn = preset.transform, file = preset.file, trusted = true }
  end
  local default = preset and preset.default or nil
  for _, u in ipairs(lib._scripts) do
    local applies = (all_pipelines or not u.pipelines or (pipeline_key ~= nil and u.pipelines[pipeline_key]))
      and (not u.presets or (name ~= nil and u.presets[name]))
    if applies then
      f.scripts[#f.scripts + 1] = { file = u.file, global = u.global, by_name = u.by_name, guarded = u.has_fn }
      f.script_files[#f.script_files + 1] = u.file
      for n in pairs(u.by_name) do f.script_handled[n] = true end
      if u.transform then f.transforms[#f.transforms + 1] = { fn = u.transform, file = u.file, trusted = false } end
      if u.default then default = u.default end
    end
  end
  f.default = default
  return runtime.new(f)
end

-- lib:get(preset_name, pipeline_key?) → blueprint | nil, err. A destination
-- without presets takes preset_name nil.
function Library:get(name, pipeline_key)
  local preset
  if self.dest.mapping.presets then
    preset = self._presets[name]
    if not preset then
      return nil, ("unknown preset '%s' (valid: %s)"):format(tostring(name), concat(self.preset_names, ", "))
    end
  elseif name ~= nil then
    return nil, ("destination %s has no presets (got preset '%s')"):format(self.destination, tostring(name))
  end
  local key = name or false
  local per = self._cache[key]
  if not per then per = {}; self._cache[key] = per end
  local k = pipeline_key or false
  local bp = per[k]
  if not bp then
    bp = build(self, preset, name, pipeline_key)
    per[k] = bp
  end
  return bp
end

function Library:presets() return self.preset_names end

-- probe(lib) → errors. Maps the probe event (signal.pipeline.scripts.probe_event)
-- through every preset with all scripts layered exactly as in production,
-- once per event name a script handles plus once for an unhandled name; any
-- script error becomes a load error "file:line: message", so a script that
-- raises on an ordinary event never replaces a working version.
function M.probe(lib)
  local errors, seen = {}, {}
  if #lib._scripts == 0 then return errors end
  local names, have = { "probe_event" }, { probe_event = true }
  for _, u in ipairs(lib._scripts) do
    local keys = {}
    for k in pairs(u.by_name) do keys[#keys + 1] = k end
    sort(keys)
    for _, k in ipairs(keys) do
      if not have[k] then have[k] = true; names[#names + 1] = k end
    end
  end
  local presets = lib.dest.mapping.presets and lib.preset_names or { false }
  for _, pname in ipairs(presets) do
    local bp = build(lib, pname and lib._presets[pname] or nil, pname or nil, nil, true)
    for _, n in ipairs(names) do
      -- apply(), not map(): the destination's own finishing needs a real config
      local _, warnings = bp:apply(scripts.probe_event(n), {})
      for _, w in ipairs(warnings or {}) do
        if not seen[w] then
          seen[w] = true
          errors[#errors + 1] = w
        end
      end
    end
  end
  return errors
end

-- target(L, dest, dirs) → { dest, presets, preset_names, units }, its
-- presets loaded (errors in L)
local function target(L, dest, dirs)
  local c = { dest = dest, presets = {}, preset_names = {}, units = {} }
  if dest.mapping.presets then
    c.shared, c.presets, c.preset_names = load_presets(L, dest, dirs.presets_dir)
    c.presets, c.preset_names = c.presets or {}, c.preset_names or {}
  end
  return c
end

local function library(c, dirs)
  return new_library(c.dest, c.shared, c.presets, c.preset_names, c.units, dirs)
end

local function dirs_of(opts)
  return { presets_dir = opts.presets_dir or default_presets_dir(), scripts_dir = opts.scripts_dir }
end

-- load{ destination?, presets_dir?, scripts_dir? } → lib | nil, errors
function M.load(opts)
  opts = opts or {}
  local dest = destinations.get(opts.destination or destinations.SCRIPT_DEFAULT)
  if not dest then return nil, { "unknown destination " .. tostring(opts.destination) } end
  local L = loader()
  local dirs = dirs_of(opts)
  local c = target(L, dest, dirs)
  compile_scripts(L, read_scripts(L, dirs.scripts_dir), { [dest.type] = c }, false)
  if #L.errors > 0 then return nil, L.errors end
  local lib = library(c, dirs)
  lib.version = sha256_hex(concat(L.hash)):sub(1, 12)
  local perrors = M.probe(lib)
  if #perrors > 0 then return nil, perrors end
  return lib
end

local Set = {}
Set.__index = Set

-- set:get(destination, preset_name, pipeline_key?) → blueprint | nil, err
function Set:get(destination, name, pipeline_key)
  local lib = self.libs[destination]
  if not lib then return nil, "unknown destination " .. tostring(destination) end
  return lib:get(name, pipeline_key)
end

-- load_all{ presets_dir?, scripts_dir? } → set | nil, errors: the libraries
-- of every registered destination, one version for all of them.
function M.load_all(opts)
  opts = opts or {}
  local L = loader()
  local dirs = dirs_of(opts)
  local targets = {}
  for _, t in ipairs(destinations.types()) do targets[t] = target(L, destinations.get(t), dirs) end
  compile_scripts(L, read_scripts(L, dirs.scripts_dir), targets, true)
  if #L.errors > 0 then return nil, L.errors end
  local version = sha256_hex(concat(L.hash)):sub(1, 12)
  local set = setmetatable({ version = version, libs = {}, script_files = {},
                             presets_dir = dirs.presets_dir, scripts_dir = dirs.scripts_dir }, Set)
  local perrors = {}
  for _, t in ipairs(destinations.types()) do
    local lib = library(targets[t], dirs)
    lib.version = version
    set.libs[t] = lib
    for _, e in ipairs(M.probe(lib)) do perrors[#perrors + 1] = e end
    for _, f in ipairs(lib.script_files) do set.script_files[#set.script_files + 1] = f end
  end
  if #perrors > 0 then return nil, perrors end
  sort(set.script_files)
  return set
end

return M
