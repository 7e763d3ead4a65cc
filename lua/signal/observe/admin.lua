-- signal.observe.admin — the admin API and the /live page.
--
--   GET  /v1/admin/status                      versions, script errors, queues, dead letters
--   POST /v1/admin/reload                      reload presets + scripts in every worker
--   GET  /v1/admin/live?pipeline=K&limit=N     recent events, newest first
--   GET  /v1/admin/live/stream?pipeline=K      the same as Server-Sent Events
--   GET  /v1/admin/dlq?pipeline=K&integration=I&limit=N
--   POST /v1/admin/dlq/replay?pipeline=K&integration=I[&limit=N]
--   GET  /live                                 the live-events page (static/live.html)
--
-- Auth: `Authorization: Bearer <admin_token>` or `X-Admin-Token: <token>`
-- (the SSE stream also takes ?token=, since EventSource cannot set
-- headers). With cfg.admin_token unset every admin route answers 404 "admin
-- API is off: set admin_token" — an unconfigured engine exposes nothing; a
-- wrong or missing token is 401. The /live page itself is static and holds
-- no data; it asks for the token and calls the API with it.
--
-- SSE: /live/stream is a chunked text/event-stream (core.stream_start /
-- stream_write). A new client starts at "now", or after Last-Event-ID when
-- EventSource reconnects; new events are written as they appear (polled
-- every 250 ms from Redis, so events processed by any node show up), with a
-- keep-alive comment every STREAM_PING_S. The stream ends after
-- STREAM_MAX_S, on shutdown, or when a write finds the client gone. Each
-- event is sent once, when it first appears; GET /v1/admin/live shows later
-- vendor attempts of the same event.
local core = require "signal.core"
local http = require "signal.http.response"
local queue = require "signal.redis.keys"
local log = require "signal.observe.log"
local visitor = require "signal.collect.visitor"
local destinations = require "signal.destinations"
local reload = require "signal.pipeline.reload"
local live = require "signal.observe.live"
local dlq = require "signal.deliver.dlq"
local backlog = require "signal.deliver.backlog"
local metrics = require "signal.observe.metrics"
local prometheus = require "signal.observe.prometheus"

local type, ipairs, tonumber, tostring = type, ipairs, tonumber, tostring
local byte, min, max = string.byte, math.min, math.max

local M = {}

M.STREAM_PING_S = 15       -- keep-alive comment interval on an idle stream
M.STREAM_MAX_S = 600       -- a stream ends after this; EventSource reconnects
M.LIVE_LIMIT_MAX = 1000

-- Equal-time comparison: the answer time does not reveal how much of a
-- guessed token was right.
local function same(a, b)
  if type(a) ~= "string" or type(b) ~= "string" then return false end
  local diff = #a == #b and 0 or 1
  for i = 1, #b do
    diff = diff + ((byte(a, i) or 0) == byte(b, i) and 0 or 1)
  end
  return diff == 0
end

local function presented(req, allow_query)
  local h = req.headers or {}
  local auth = h["authorization"]
  if auth then
    local t = auth:match("^[Bb]earer%s+(%S+)%s*$")
    if t then return t end
  end
  if h["x-admin-token"] then return h["x-admin-token"] end
  if allow_query then return http.parse_query(req.query).token end
  return nil
end

-- Failed admin authentication is throttled per client address, across
-- workers and nodes (a counter in Redis): after FAIL_LIMIT failures within
-- FAIL_WINDOW_S the address gets 429 with Retry-After until the window ends,
-- whatever it sends, so a token cannot be guessed by brute force.
M.FAIL_LIMIT = 10
M.FAIL_WINDOW_S = 60

-- locked(ctx, ip) → seconds until the address may try again, or nil
local function locked(ctx, ip)
  local res = ctx.redis:pipeline({ { "GET", queue.admin_failures(ip) }, { "TTL", queue.admin_failures(ip) } })
  local n = res and tonumber(res[1])
  if n and n >= M.FAIL_LIMIT then return max(1, tonumber(res[2]) or M.FAIL_WINDOW_S) end
  return nil
end

local function failed_auth(ctx, req, ip)
  local key = queue.admin_failures(ip)
  local res = ctx.redis:pipeline({ { "INCR", key }, { "EXPIRE", key, M.FAIL_WINDOW_S, "NX" } })
  local n = res and tonumber(res[1]) or 0
  -- the first failure and the one that locks the address out are logged
  if n == 1 or n == M.FAIL_LIMIT then
    log.warn("admin authentication failed", { client = ip, path = req.path, failures = n,
      locked_for_s = n >= M.FAIL_LIMIT and M.FAIL_WINDOW_S or nil })
  end
end

-- guard(ctx, fn, allow_query) → a route handler that checks the token first
local function guard(ctx, fn, allow_query)
  local cfg = ctx.cfg
  return function(req, params)
    local token = cfg.admin_token
    if not token or token == "" then
      return http.error(404, "ADMIN_OFF", "admin API is off: set admin_token")
    end
    local ip = visitor.client_ip(ctx, req) or "unknown"
    local wait = locked(ctx, ip)
    if wait then
      return http.error(429, "TOO_MANY_ATTEMPTS", "too many failed admin authentications from this address;"
        .. " retry in " .. wait .. " s", { ["Retry-After"] = tostring(wait) })
    end
    if not same(presented(req, allow_query), token) then
      failed_auth(ctx, req, ip)
      return http.error(401, "UNAUTHORIZED", "missing or wrong admin token (Authorization: Bearer <admin_token>"
        .. " or X-Admin-Token)", { ["WWW-Authenticate"] = 'Bearer realm="signal-admin"' })
    end
    return fn(req, params)
  end
end

local function json(status, v)
  return status, { ["Content-Type"] = "application/json", ["Cache-Control"] = "no-store" },
    live.encode_response(v)
end

local function pipeline_of(ctx, q)
  local pk = q.pipeline
  if not pk then
    if #ctx.cfg.pipelines == 1 then return ctx.cfg.pipelines[1] end
    return nil, http.error(400, "PIPELINE_REQUIRED", "pipeline is required (?pipeline=KEY)")
  end
  local p = ctx.pipelines[pk]
  if not p then return nil, http.error(404, "UNKNOWN_PIPELINE", "unknown pipeline " .. pk) end
  return p
end

---------------------------------------------------------------------------
-- status

local function group_info(redis, stream, group)
  local groups = prometheus.xinfo_groups(redis, stream)
  local g = groups and groups[group]
  if not g then return { pending = 0, lag = nil, consumers = 0 } end
  local lag = tonumber(g.lag)
  return { pending = tonumber(g.pending) or 0, lag = lag, consumers = tonumber(g.consumers) or 0 }
end

function M.status(ctx)
  local redis = ctx.redis
  local out = {
    version = core.version,
    node = ctx.node,
    worker = core.worker_id,
    workers = core.workers,
    blueprints = reload.status(),
    pipelines = {},
  }
  local behind, berr = backlog.read(redis, ctx.cfg)
  if not behind then return nil, berr end
  for _, p in ipairs(ctx.cfg.pipelines) do
    local pk = p.key
    local cmds = { { "XLEN", queue.raw(pk) }, { "XLEN", queue.raw_dlq(pk) } }
    for _, integ in ipairs(p.integrations) do
      cmds[#cmds + 1] = { "XLEN", queue.delivery(pk, integ.name) }
      cmds[#cmds + 1] = { "ZCARD", queue.retry(pk, integ.name) }
      cmds[#cmds + 1] = { "XLEN", queue.dlq(pk, integ.name) }
    end
    local res, err = redis:pipeline(cmds)
    if not res then return nil, err end
    local raw = group_info(redis, queue.raw(pk), queue.RAW_GROUP)
    raw.length = tonumber(res[1]) or 0
    local ps = {
      key = pk,
      raw = raw,
      processor_dead_letters = tonumber(res[2]) or 0,
      integrations = {},
    }
    for i, integ in ipairs(p.integrations) do
      local base = 2 + (i - 1) * 3
      local d = group_info(redis, queue.delivery(pk, integ.name), queue.DELIVERY_GROUP)
      d.length = tonumber(res[base + 1]) or 0
      -- what the destination says identifies it (never a secret), then the queues
      local dest = destinations.get(integ.type)
      local row = dest and dest.status and dest.status(integ) or {}
      row.name, row.type = integ.name, integ.type
      row.delivery = d
      row.retry_scheduled = tonumber(res[base + 2]) or 0
      row.dead_letters = tonumber(res[base + 3]) or 0
      local b = behind and behind[pk] and behind[pk][integ.name]
      if b then
        row.backlog, row.oldest_pending_s, row.lag_s = b.backlog, b.oldest_pending_s, b.lag_s
        row.failing_since, row.drain_estimate_s = b.failing_since, b.drain_estimate_s
      end
      ps.integrations[#ps.integrations + 1] = row
    end
    out.pipelines[#out.pipelines + 1] = ps
  end
  return out
end

---------------------------------------------------------------------------
-- routes

function M.init(ctx, router)
  local cfg = ctx.cfg
  local redis = ctx.redis

  router:add("GET", "/v1/admin/status", guard(ctx, function()
    local st, err = M.status(ctx)
    if not st then return http.error(503, "REDIS_UNAVAILABLE", "Redis is unreachable: " .. tostring(err)) end
    return json(200, st)
  end))

  router:add("POST", "/v1/admin/reload", guard(ctx, function()
    -- This worker reloads now so the answer carries the result; the others
    -- reload through the broadcast (an unchanged set is a no-op here).
    local ok, errors = reload.try_reload()
    core.broadcast_reload()
    local st = reload.status()
    return json(ok and 200 or 422, {
      ok = ok, version = st.version, loaded_at = st.loaded_at, errors = errors or st.errors,
      message = ok and "reloaded in every worker" or "reload rejected; the previous version stays live",
    })
  end))

  router:add("GET", "/v1/admin/live", guard(ctx, function(req)
    local q = http.parse_query(req.query)
    local p, e1, e2, e3 = pipeline_of(ctx, q)
    if not p then return e1, e2, e3 end
    local limit = min(max(tonumber(q.limit) or 50, 1), M.LIVE_LIMIT_MAX)
    local events, err = live.recent(redis, p, limit)
    if not events then return http.error(503, "REDIS_UNAVAILABLE", "Redis is unreachable: " .. tostring(err)) end
    return json(200, { pipeline = p.key, live_events_max = cfg.live_events_max, events = events })
  end))

  router:add("GET", "/v1/admin/live/stream", guard(ctx, function(req)
    local q = http.parse_query(req.query)
    local p, e1, e2, e3 = pipeline_of(ctx, q)
    if not p then return e1, e2, e3 end
    local last = (req.headers or {})["last-event-id"] or q.since
    if not last then
      -- a new client starts at "now": the newest event so far is the mark
      local ids = redis:call("LRANGE", queue.live(p.key), 0, 0)
      last = type(ids) == "table" and ids[1] or ""
    end
    core.stream_start(200, { ["Content-Type"] = "text/event-stream", ["Cache-Control"] = "no-store",
                             ["X-Accel-Buffering"] = "no" })
    if not core.stream_write("retry: 1000\n: connected\n\n") then return end
    local now = core.monotonic()
    local deadline, next_ping = now + M.STREAM_MAX_S, now + M.STREAM_PING_S
    while not core.stopping() and now < deadline do
      local events = live.recent(redis, p, 100, last ~= "" and last or nil)
      if events and #events > 0 then
        local parts = {}
        for i = #events, 1, -1 do   -- oldest first, so the last id is the newest
          local e = events[i]
          parts[#parts + 1] = "id: " .. e.message_id .. "\nevent: live\ndata: " .. live.encode_response(e) .. "\n\n"
        end
        last = events[1].message_id
        if not core.stream_write(table.concat(parts)) then return end
        next_ping = now + M.STREAM_PING_S
      elseif now > next_ping then
        -- a comment line: keeps proxies from timing out, and a failed write
        -- is how a client that went away is noticed
        if not core.stream_write(": keep-alive\n\n") then return end
        next_ping = now + M.STREAM_PING_S
      end
      core.sleep(250)
      now = core.monotonic()
    end
  end, true))

  router:add("GET", "/v1/admin/dlq", guard(ctx, function(req)
    local q = http.parse_query(req.query)
    local ok, cerr = dlq.check(cfg, q)
    if not ok then return http.error(400, "BAD_REQUEST", cerr) end
    local entries, err = dlq.list(redis, cfg, q)
    if not entries then return http.error(503, "REDIS_UNAVAILABLE", "Redis is unreachable: " .. tostring(err)) end
    local counts = dlq.counts(redis, cfg, q) or {}
    return json(200, { entries = entries, counts = counts })
  end))

  router:add("POST", "/v1/admin/dlq/replay", guard(ctx, function(req)
    local q = http.parse_query(req.query)
    local ok, cerr = dlq.check(cfg, q)
    if not ok then return http.error(400, "BAD_REQUEST", cerr) end
    local res, err = dlq.replay(redis, cfg, q)
    if not res then return http.error(503, "REDIS_UNAVAILABLE", "Redis is unreachable: " .. tostring(err)) end
    for _, s in ipairs(res.streams) do
      metrics.inc("signal_dlq_replayed_total", { pipeline = s.pipeline, integration = s.integration }, s.replayed)
    end
    return json(200, { replayed = res.total, streams = res.streams })
  end))

  -- The page: read once per worker at start-up (it is small and static).
  local page
  local f = io.open((core.home or ".") .. "/lua/signal/observe/static/live.html", "rb")
  if f then page = f:read("*a"); f:close() end
  router:add("GET", "/live", function()
    if not cfg.admin_token then
      return http.error(404, "ADMIN_OFF", "admin API is off: set admin_token")
    end
    if not page then return http.error(404, "NOT_FOUND", "live page not installed") end
    return 200, { ["Content-Type"] = "text/html; charset=utf-8", ["Cache-Control"] = "no-store",
                  ["X-Frame-Options"] = "DENY", ["Referrer-Policy"] = "no-referrer" }, page
  end)
end

return M
