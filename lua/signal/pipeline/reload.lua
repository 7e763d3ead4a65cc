-- signal.pipeline.reload — hot reload of presets and customer scripts inside a worker.
--
--   reload.init{ presets_dir = …, scripts_dir = …, on_swap = function(set, old) end }
--   local set = reload.current()        -- the live blueprints of every destination
--   local bp = set:get(destination, preset, pipeline_key)
--   local ok, errors = reload.try_reload()
--   reload.status() -> { version, loaded_at, errors = {…}, last_attempt_at }
--
-- Each worker owns its own lua_State, so each keeps its own live library.
-- A reload compiles a complete new set off to the side (signal.pipeline.blueprint
-- validates every file, in fresh environments, and probes every script) and
-- swaps it in with one assignment only if it has no errors; otherwise the
-- working version stays live and the errors (file:line: message) are kept for
-- /v1/admin/status. Events already being mapped hold a reference to the old
-- library's blueprint and finish on it: nothing yields inside a mapping, and
-- a swap never mutates a library, it replaces the reference.
--
-- In the engine (core.in_engine) init also asks the engine to watch
-- scripts_dir and presets_dir (inotify) and registers try_reload as the
-- worker's reload callback, which also runs on SIGHUP and after
-- core.broadcast_reload() (POST /v1/admin/reload).

local core = require "signal.core"
local blueprint = require "signal.pipeline.blueprint"
local destinations = require "signal.destinations"

local M = {}

local state = {
  opts = nil,
  lib = nil,
  loaded_at = nil,
  last_attempt_at = nil,
  errors = {},
}

local function now()
  return core.now and core.now() or os.time()
end

local function iso(t)
  local secs = math.floor(t)
  return os.date("!%Y-%m-%dT%H:%M:%S", secs) .. (".%03dZ"):format(math.floor((t - secs) * 1000))
end

-- Logging goes through signal.observe.log when it exists; until then, stderr.
local log
do
  local ok, mod = pcall(require, "signal.observe.log")
  if ok and type(mod) == "table" then log = mod end
end

local function emit(level, msg, fields)
  if log and type(log[level]) == "function" then
    if pcall(log[level], msg, fields) then return end
  end
  local parts = { ("[%s] signal.pipeline.reload: %s"):format(level, msg) }
  if fields and fields.errors then
    for _, e in ipairs(fields.errors) do parts[#parts + 1] = "  " .. e end
  elseif fields and fields.version then
    parts[1] = parts[1] .. " (version " .. fields.version .. ")"
  end
  io.stderr:write(table.concat(parts, "\n"), "\n")
end

local function compile()
  return blueprint.load_all{ presets_dir = state.opts.presets_dir, scripts_dir = state.opts.scripts_dir }
end

-- init(opts) -> lib. Raises when the very first load fails: a worker with no
-- working blueprint must not start (`signal check` shows the same errors).
function M.init(opts)
  opts = opts or {}
  state.opts = {
    presets_dir = opts.presets_dir or blueprint.default_presets_dir(),
    scripts_dir = opts.scripts_dir,
    on_swap = opts.on_swap,
  }
  state.last_attempt_at = now()
  local lib, errors = compile()
  if not lib then
    state.errors = errors
    error("blueprints failed to load:\n  " .. table.concat(errors, "\n  "), 0)
  end
  state.lib, state.loaded_at, state.errors = lib, state.last_attempt_at, {}
  emit("info", "blueprints loaded", { version = lib.version })

  if core.in_engine and opts.watch ~= false then
    local dirs = { state.opts.scripts_dir }
    for _, t in ipairs(destinations.types()) do
      if destinations.get(t).mapping.presets then dirs[#dirs + 1] = state.opts.presets_dir .. "/" .. t end
    end
    for _, dir in ipairs(dirs) do
      if dir then
        local ok, werr = core.watch(dir)
        if not ok and werr then emit("warn", "cannot watch for changes: " .. tostring(werr)) end
      end
    end
    core.on_reload(M.try_reload)
  end
  if state.opts.on_swap then state.opts.on_swap(lib, nil) end
  return lib
end

function M.current()
  return state.lib
end

-- try_reload() -> true, nil | false, errors
-- An unchanged set (same version hash) keeps the live library and its
-- per-pipeline caches.
function M.try_reload()
  if not state.opts then return false, { "signal.pipeline.reload: init() was not called" } end
  state.last_attempt_at = now()
  local ok, lib, errors = pcall(compile)
  if not ok then lib, errors = nil, { "signal.pipeline.reload: " .. tostring(lib) } end
  if not lib then
    state.errors = errors
    emit("error", "reload rejected; keeping version " .. tostring(state.lib and state.lib.version),
      { errors = errors })
    return false, errors
  end
  state.errors = {}
  if state.lib and lib.version == state.lib.version then return true end
  local old = state.lib
  state.lib, state.loaded_at = lib, state.last_attempt_at
  emit("info", "blueprints reloaded", { version = lib.version })
  if state.opts.on_swap then
    local sok, serr = pcall(state.opts.on_swap, lib, old)
    if not sok then emit("error", "on_swap failed: " .. tostring(serr)) end
  end
  return true
end

function M.status()
  local errs = {}
  for i, e in ipairs(state.errors) do errs[i] = e end
  return {
    version = state.lib and state.lib.version or nil,
    loaded_at = state.loaded_at and iso(state.loaded_at) or nil,
    last_attempt_at = state.last_attempt_at and iso(state.last_attempt_at) or nil,
    errors = errs,
    scripts = state.lib and state.lib.script_files or {},
  }
end

return M
