-- signal.dev.cli — the `signal` command line (engine/main.c runs main()).
--
-- One-shot commands (check, dlq) run to completion here with blocking
-- primitives. Serving commands (run, sandbox, exec) return a plan that the C
-- side turns into worker threads: { entry, workers, listen, args }.
local M = {}

local USAGE = [[
usage: signal run [-c signal.conf.lua]      run the engine (also: signal -c FILE)
       signal check [-c signal.conf.lua]    validate config, presets and scripts
       signal check --live [-c FILE]        ask each vendor that offers a live check (GA4's
                                            validation server, Meta's token check) about this config
       signal sandbox [--listen 127.0.0.1:8091] [--profiles FILE]
                                            local stand-ins of the vendors (and a webhook receiver)
       signal dlq list|replay [-c FILE] [--pipeline K] [--integration I] [--limit N]
       signal exec FILE [ARGS…]             run a Lua file as an engine task
       signal serve FILE [--listen A] [--workers N]
                                            serve a Lua app file (tests, benchmarks)
       signal --version]]

local function fail(msg)
  io.stderr:write("signal: ", msg, "\n")
  return 2
end

-- Parses "--name value" / "-c value" options; returns opts, positional, err.
local function parse(args, first, known)
  local opts, pos = {}, {}
  local i = first
  while i <= #args do
    local a = args[i]
    local name = known[a]
    if name then
      if args[i + 1] == nil then return nil, nil, a .. " needs a value" end
      opts[name] = args[i + 1]
      i = i + 2
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      return nil, nil, "unknown option " .. a
    else
      pos[#pos + 1] = a
      i = i + 1
    end
  end
  return opts, pos
end

local function load_config(path)
  local config = require "signal.config"
  local cfg, errs = config.load(path)
  if not cfg then
    for _, e in ipairs(errs) do io.stderr:write(e, "\n") end
    io.stderr:write("signal: ", path, ": configuration is invalid (", #errs, " problem",
      #errs == 1 and "" or "s", "); nothing started\n")
    return nil
  end
  return cfg
end

function M.main(args)
  local cmd = args[1]
  if cmd == nil or cmd == "-h" or cmd == "--help" or cmd == "help" then
    print(USAGE)
    return cmd == nil and 2 or 0
  end

  if cmd == "run" or cmd == "-c" then
    local opts, pos, err = parse(args, cmd == "run" and 2 or 1, { ["-c"] = "config", ["--config"] = "config" })
    if not opts then return fail(err) end
    if #pos > 0 then return fail("unexpected argument " .. pos[1]) end
    local path = opts.config or "signal.conf.lua"
    local cfg = load_config(path)
    if not cfg then return 1 end
    return { entry = "signal.app", workers = cfg.workers, listen = cfg.listen, args = { path } }
  end

  if cmd == "check" then
    -- --live is a flag: taken out before the options that carry values
    local rest, live = {}, false
    for i, a in ipairs(args) do
      if a == "--live" then live = true else rest[i - (live and 1 or 0)] = a end
    end
    local opts, pos, err = parse(rest, 2, { ["-c"] = "config", ["--config"] = "config" })
    if not opts then return fail(err) end
    local check = require "signal.dev.check"
    return (live and check.live or check.run)(opts.config or pos[1] or "signal.conf.lua")
  end

  if cmd == "sandbox" then
    local opts, _, err = parse(args, 2, { ["--listen"] = "listen", ["--profiles"] = "profiles" })
    if not opts then return fail(err) end
    return { entry = "signal.dev.sandbox", workers = 1, listen = opts.listen or "127.0.0.1:8091",
             args = { opts.profiles or "" } }
  end

  if cmd == "dlq" then
    local opts, pos, err = parse(args, 2, { ["-c"] = "config", ["--config"] = "config",
      ["--pipeline"] = "pipeline", ["--integration"] = "integration", ["--limit"] = "limit" })
    if not opts then return fail(err) end
    local action = pos[1]
    if action ~= "list" and action ~= "replay" then return fail("dlq needs list or replay") end
    local cfg = load_config(opts.config or "signal.conf.lua")
    if not cfg then return 1 end
    return require("signal.deliver.dlq").cli(cfg, action, opts)
  end

  if cmd == "serve" then
    local opts, pos, err = parse(args, 2, { ["--listen"] = "listen", ["--workers"] = "workers" })
    if not opts then return fail(err) end
    if not pos[1] then return fail("serve needs a Lua app file") end
    local rest = { pos[1] }
    for i = 2, #pos do rest[#rest + 1] = pos[i] end
    return { entry = "signal.dev.serve_file", workers = tonumber(opts.workers) or 1,
             listen = opts.listen or "127.0.0.1:8090", args = rest }
  end

  if cmd == "exec" then
    if not args[2] then return fail("exec needs a Lua file") end
    local rest = {}
    for i = 2, #args do rest[#rest + 1] = args[i] end
    return { entry = "signal.dev.exec", workers = 1, args = rest }
  end

  return fail("unknown command " .. cmd .. "\n" .. USAGE)
end

return M
