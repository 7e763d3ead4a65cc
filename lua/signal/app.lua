-- signal.app — entry module for `signal run`: builds one worker's
-- runtime. Called once per worker thread (engine/worker.c) with the config
-- path; returns the request handler. Each capability is a module with
-- init(ctx, router) that registers its routes and starts its background
-- tasks, so this file is the table of contents of a running engine.
local core = require "signal.core"
local config = require "signal.config"
local log = require "signal.observe.log"
local router = require "signal.http.router"
local queue = require "signal.redis.keys"
local metrics = require "signal.observe.metrics"
local cjson = require "cjson"
local http = require "signal.http.response"

local M = {}

-- Order matters only for route shadowing; background tasks start after.
local MODULES = {
  "signal.observe.metrics",       -- counters first: everyone else records into them
  "signal.collect",       -- POST /v1/t … /v1/batch, /v1/events
  "signal.browser.enrich",  -- GET /v1/enrich
  "signal.browser.sdk",           -- GET /datafly.js, /v1/js/{key}/datafly.js
  "signal.observe.admin",         -- /v1/admin/*, /live
  "signal.pipeline.processor",     -- raw stream → pipeline → delivery streams
  "signal.deliver.worker",      -- delivery streams → destinations, retries, dead letters
}

-- health(ctx) → the /healthz answer. Readiness is "Redis takes writes": a
-- Redis at its memory limit still answers PING but refuses every event, so
-- the probe is a small write (one key per node, 10 s). The body names the
-- cause, so an operator (or a load balancer's log) sees which it is.
local HEALTH_CAUSES = {
  oom = { "REDIS_OOM", "Redis refuses writes: it is at its memory limit (maxmemory). Free memory or raise"
    .. " maxmemory; while it lasts the collector answers 503 and clients retry" },
  readonly = { "REDIS_READONLY", "Redis refuses writes: the engine is connected to a replica; point redis"
    .. " at the primary" },
}

function M.health(ctx)
  local ok, err = ctx.redis:call("SET", queue.health(ctx.node), "1", "PX", 10000)
  if ok then return http.json(200, { status = "ok", version = core.version }) end
  local kind = metrics.redis_error(err)
  local cause = HEALTH_CAUSES[kind]
  local code, message
  if cause then
    code, message = cause[1], cause[2]
  else
    kind = "down"
    code, message = "REDIS_UNAVAILABLE", "Redis is unreachable: " .. tostring(err)
  end
  return 503, { ["Content-Type"] = "application/json" },
    cjson.encode({ status = "redis_" .. kind, error = { code = code, message = message } })
end

local function node_id()
  local f = io.open("/proc/sys/kernel/hostname")
  local host = f and f:read("*l") or "node"
  if f then f:close() end
  return host .. "-" .. core.random_hex(3)
end

function M.start(args)
  local path = args[1]
  local cfg, errs = config.load(path)
  if not cfg then error(table.concat(errs, "\n"), 0) end
  log.set_level(cfg.log_level)
  for _, s in ipairs(config.secrets(cfg)) do log.add_secret(s) end

  local redis, err = core.redis.connect(cfg.redis)
  if not redis then error(err, 0) end

  local pipelines = {}
  for _, p in ipairs(cfg.pipelines) do pipelines[p.key] = p end

  local ctx = {
    cfg = cfg,
    config_path = path,
    redis = redis,                     -- shared: never use it for blocking commands
    pipelines = pipelines,
    node = node_id(),                  -- names this process's stream consumers
    worker_id = core.worker_id,
    hub_org_id = (cfg.identity_hub and cfg.identity_hub.org_id) or os.getenv("IDENTITY_HUB_ORG_ID"),
  }
  if ctx.hub_org_id == "" then ctx.hub_org_id = nil end

  local r = router.new()
  r:add({ "GET", "HEAD" }, "/healthz", function() return M.health(ctx) end)

  for _, name in ipairs(MODULES) do
    local mod = require(name)
    if mod.init then mod.init(ctx, r) end
  end
  if core.worker_id == 0 then
    log.info("engine started", { pipelines = #cfg.pipelines, workers = core.workers, node = ctx.node })
  end

  -- Request latency by route and method; unmatched paths share one series
  -- so random URLs cannot grow the metric without bound.
  local monotonic = core.monotonic
  local label_cache = {}   -- route → method → labels, built once per pair
  return function(req)
    local t0 = monotonic()
    local status, headers, body = r:dispatch(req)
    local route = req.route or "unmatched"
    local by_method = label_cache[route]
    if not by_method then by_method = {}; label_cache[route] = by_method end
    local labels = by_method[req.method]
    if not labels then
      labels = { route = route, method = req.method }
      by_method[req.method] = labels
    end
    metrics.observe("signal_http_request_duration_seconds", labels, monotonic() - t0)
    return status, headers, body
  end
end

return M
