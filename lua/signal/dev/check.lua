-- signal.dev.check — the logic of `signal check [-c F]`.
--
-- Validates the config file and, when the blueprint engine is installed
-- (signal.pipeline.blueprint), loads every preset and customer script the way
-- `signal run` would. Each problem is printed on its own line to stderr —
-- `file: field.path: message` for the config, `file:line: message` for
-- scripts — and the exit code is 1 if there was any; otherwise it prints
-- "config OK: N pipelines, M integrations" to stdout and returns 0.
--
--   os.exit(require("signal.dev.check").run("signal.conf.lua"))
--   os.exit(require("signal.dev.check").live("signal.conf.lua"))  -- --live
--
-- signal.pipeline.blueprint is optional here (pcall(require)): until it exists, check
-- covers the config only. A blueprint module that exists but fails to load
-- is itself reported as an error.

local config = require "signal.config"

local type, ipairs, tostring, pcall, require = type, ipairs, tostring, pcall, require

local M = {}

-- script errors may come as strings or as { file, line, message } tables
local function script_error(e)
  if type(e) ~= "table" then return tostring(e) end
  local msg = e.message or e.msg or e.error or "error"
  if e.file and e.line then return e.file .. ":" .. e.line .. ": " .. tostring(msg) end
  if e.file then return e.file .. ": " .. tostring(msg) end
  return tostring(msg)
end

local function default_presets_dir()
  local ok, core = pcall(require, "signal.core")
  if ok and type(core) == "table" and core.home then return core.home .. "/presets" end
  return "presets"
end

-- problems(path[, opts]) → cfg | nil, list of error lines (empty when fine)
function M.problems(path, opts)
  opts = opts or {}
  local lines = {}
  local cfg, errors = config.load(path)
  for _, e in ipairs(errors or {}) do lines[#lines + 1] = e end

  if opts.config_only then return cfg, lines end
  local ok, blueprint = pcall(require, "signal.pipeline.blueprint")
  if ok and type(blueprint) == "table" and blueprint.load then
    -- every destination's presets, and each script for the destination it names
    local called, lib_or_err, script_errors = pcall(blueprint.load_all or blueprint.load, {
      presets_dir = opts.presets_dir or default_presets_dir(),
      scripts_dir = cfg and cfg.scripts_dir or nil,
    })
    if not called then
      lines[#lines + 1] = "signal.pipeline.blueprint: " .. tostring(lib_or_err)
    else
      for _, e in ipairs(script_errors or {}) do lines[#lines + 1] = script_error(e) end
    end
  elseif not ok and not tostring(blueprint):find("module 'signal.pipeline.blueprint' not found", 1, true) then
    lines[#lines + 1] = tostring(blueprint)
  end
  return cfg, lines
end

-- live(path[, opts]) → exit code: `signal check --live`. The config must be
-- valid; then every integration whose destination declares probe(cfg) is
-- checked against its vendor (or the sandbox its base_url names), one line
-- each: "<pipeline> <integration> (<type>): ok|FAILED: <message>". Exit 1
-- if any probe failed. Messages are scrubbed of every configured secret.
function M.live(path, opts)
  opts = opts or {}
  local out, err = opts.stdout or io.stdout, opts.stderr or io.stderr
  local cfg, lines = M.problems(path or "signal.conf.lua", { config_only = true })
  for _, line in ipairs(lines) do err:write(line, "\n") end
  if #lines > 0 or not cfg then return 1 end
  local log = require "signal.observe.log"
  for _, s in ipairs(config.secrets(cfg)) do log.add_secret(s) end
  local destinations = require "signal.destinations"
  local probed, failed = 0, 0
  for _, p in ipairs(cfg.pipelines) do
    for _, integ in ipairs(p.integrations or {}) do
      local d = destinations.get(integ.type)
      if d and d.probe then
        probed = probed + 1
        local called, ok, msg = pcall(d.probe, integ)
        if not called then ok, msg = false, "probe failed: " .. tostring(ok) end
        if not ok then failed = failed + 1 end
        out:write(p.key, " ", integ.name, " (", integ.type, "): ", ok and "ok: " or "FAILED: ",
                  log.scrub(tostring(msg)), "\n")
      end
    end
  end
  if probed == 0 then out:write("no integration has a live check (", table.concat(destinations.types(), ", "),
                                ": none declares one for this config)\n") end
  return failed > 0 and 1 or 0
end

-- run(path[, opts]) → exit code (0 ok, 1 problems). opts: presets_dir,
-- config_only (skip presets and scripts), stdout/stderr (anything with
-- :write; default io.stdout/io.stderr).
function M.run(path, opts)
  opts = opts or {}
  local out, err = opts.stdout or io.stdout, opts.stderr or io.stderr
  local cfg, lines = M.problems(path or "signal.conf.lua", opts)
  for _, line in ipairs(lines) do err:write(line, "\n") end
  if #lines > 0 or not cfg then return 1 end
  local pipelines, integrations = config.count(cfg)
  out:write("config OK: ", pipelines, " pipelines, ", integrations, " integrations\n")
  return 0
end

return M
