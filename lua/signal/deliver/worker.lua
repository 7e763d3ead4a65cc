-- signal.deliver.worker — delivery streams → destinations, with batching,
-- retries, dead letters and rate limits. It knows no destination by name:
-- each integration's destination (signal.destinations) sends a batch and
-- classifies the outcome; this module decides what happens to every entry.
--
-- Per worker and per (pipeline, integration): a consumer task reads
-- keys.delivery(pk, name) with the group keys.DELIVERY_GROUP on its own
-- Redis connection (signal.redis.consumer), cuts what it read into batches
-- of the destination's batch size, and starts one coroutine per batch, so
-- up to MAX_INFLIGHT entries per integration are in flight per worker. Each
-- integration has its own stream, consumer, in-flight bound and retry
-- schedule: one vendor's outage or slowness never delays another's
-- deliveries.
--
-- Outcome of one request, for every entry of its batch (recorded by
-- signal.deliver.outcome):
--   delivered   done: XACK + XDEL (in batches, see flush_done).
--   dropped     done too, and a warning: the vendor accepted and discarded it.
--   retry       the payload goes into the ZSET keys.retry(pk, name) scored by
--               its due time (signal.deliver.retry: doubling waits capped at
--               max_retry_ms, plus jitter, never sooner than Retry-After) and
--               into keys.age(pk, name) scored by its accept time, and the
--               stream entry is acknowledged, in one MULTI/EXEC: the payload
--               is always in exactly one place. A mover task puts due
--               members back into the stream with one Lua script (read +
--               XADD + ZREM atomically, so two workers never move one twice).
--   permanent   dead letter at once, with the destination's explanation.
--   given up    (the give-up window since accept, or `attempts`, is spent)
--               dead letter with payload, error and the attempt history.
-- Recovery (signal.deliver.circuit): a retryable failure opens the
-- destination's circuit; while open, the mover lets one scheduled retry
-- through every probe_every_ms, and the first delivery closes the circuit
-- and pulls every scheduled retry forward, so the backlog drains at the
-- rate limit as soon as the vendor is back.
-- Dead letters: the stream keys.dlq(pk, name) (signal.deliver.dlq lists and
-- replays them). Every outcome's explanation (destination.explain: what to
-- fix) goes to the log — throttled, never a secret — and to the live event's
-- vendor request record.
--
-- Rate limit: every request first takes a token from the destination's
-- Redis token bucket (signal.deliver.ratelimit), keyed by the destination's
-- rate_limit_key and shared by all workers and nodes.
--
-- Crash safety: entries are acknowledged only after their outcome is
-- recorded, so a SIGKILL leaves in-flight entries pending; every worker
-- claims entries idle longer than claim_idle_ms from other consumers and
-- sends them again (at-least-once: a duplicate carries the same message_id).
local core = require "signal.core"
local queue = require "signal.redis.keys"
local consumer = require "signal.redis.consumer"
local redis_script = require "signal.redis.script"
local log = require "signal.observe.log"
local metrics = require "signal.observe.metrics"
local live = require "signal.observe.live"
local destinations = require "signal.destinations"
local ratelimit = require "signal.deliver.ratelimit"
local pace = require "signal.deliver.pace"
local retry = require "signal.deliver.retry"
local outcome = require "signal.deliver.outcome"
local circuit = require "signal.deliver.circuit"

local type, ipairs, tostring, tonumber, pcall = type, ipairs, tostring, tonumber, pcall
local spawn, sleep, stopping, now = core.spawn, core.sleep, core.stopping, core.now
local floor, min, max = math.floor, math.min, math.max
local scrub = live.scrub


local M = {}

M.MAX_INFLIGHT = 512        -- entries in flight per integration per worker
M.MOVE_BATCH = 500

-- KEYS[1] retry ZSET, KEYS[2] delivery stream, KEYS[3] the age ZSET;
-- ARGV[1] now (ms), ARGV[2] max
M.MOVE_SCRIPT = [[
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do
  local ok, d = pcall(cjson.decode, m)
  if ok and type(d) == 'table' and type(d.p) == 'string' then
    redis.call('XADD', KEYS[2], '*', 'p', d.p, 'm', tostring(d.m or ''), 'v', tostring(d.v or ''),
      'r', tostring(d.r or ''), 'w', tostring(d.w or ''), 'a', tostring(d.a or '0'), 'h', tostring(d.h or '[]'))
  end
  redis.call('ZREM', KEYS[1], m)
  redis.call('ZREM', KEYS[3], m)
end
return #due
]]
local MOVE = redis_script.new(M.MOVE_SCRIPT)

-- entry(id, flist) → { id, p, m, v, r, a, h } from a stream entry's fields
local function entry(id, flist)
  local e = { id = id }
  for j = 1, #flist - 1, 2 do
    local k = flist[j]
    if k == "p" or k == "m" or k == "v" or k == "r" or k == "w" or k == "a" or k == "h" then e[k] = flist[j + 1] end
  end
  e.attempt = (tonumber(e.a) or 0) + 1
  return e
end

---------------------------------------------------------------------------
-- one request

-- live_record(ds, e, o, started, n) → the live-event view of one request for
-- entry e: its body is the payload the processor recorded (p:<integration>),
-- byte for byte, so it is not stored twice
local function live_record(ds, e, o, started, n)
  if not (ds.live_on and e.m and e.m ~= "") or live.paused() then return nil end
  local r = o.request or {}
  local rec = {
    attempt = e.attempt, at = floor(started * 1000), method = r.method, url = r.url, headers = r.headers,
    status = o.status, response = o.response, retry_after = o.retry_after,
    duration_ms = floor(o.duration_s * 1000 * 10 + 0.5) / 10, error = o.error, hint = o.hint,
    batch = n > 1 and n or nil,
  }
  return { e.m, live.request_field(ds.name, e.attempt, rec.at), live.encode(rec) }
end

-- send(ds, batch) → outcome: the destination's, made safe to show
local function send(ds, batch)
  local bodies = {}
  for i, e in ipairs(batch) do bodies[i] = e.p end
  local ok, o = pcall(ds.dest.send, ds.integ, bodies, ds.timeout_ms)
  if not ok or type(o) ~= "table" then
    -- a destination bug must not loop: the entries are dead-lettered
    o = { class = "permanent", label = "error", error = "destination failed: " .. tostring(o), duration_s = 0 }
  end
  o.duration_s = o.duration_s or 0
  o.label = o.label or (o.status and tostring(o.status)) or "error"
  local hok, hint = pcall(ds.dest.explain, ds.integ, o)
  o.hint = hok and hint and scrub(hint) or nil
  if o.error then o.error = scrub(o.error) end
  if o.response then o.response = scrub(o.response) end
  o.body = nil
  return o
end

-- One delivery attempt of one batch of entries (its own coroutine).
local function send_batch(ds, batch)
  local started = now()
  local o = send(ds, batch)
  local n = #batch
  metrics.inc("signal_deliveries_total", outcome.labels(ds, o.label), n)
  metrics.observe("signal_delivery_request_duration_seconds", ds.labels, o.duration_s)
  if (o.new_connections or 0) > 0 then
    metrics.inc("signal_vendor_connections_opened_total", ds.labels, o.new_connections)
  end
  local ok = o.class == "delivered" or o.class == "dropped"
  if ok then circuit.delivered(ds) end
  if o.class == "dropped" then
    outcome.log_throttled(ds, "warn", "dropped", "the destination accepted the delivery but dropped it",
      { pipeline = ds.pk, integration = ds.name, status = o.status, hint = o.hint })
  end
  for _, e in ipairs(batch) do
    local live_item = live_record(ds, e, o, started, n)
    if ok then
      local r = tonumber(e.r)
      if r then metrics.observe("signal_event_delivery_latency_seconds", ds.labels, max(0, now() - r / 1000)) end
      outcome.done(ds, e.id, live_item)
    else
      outcome.failed(ds, e, o, started, live_item)
    end
  end
end

-- batch_of(ds, open, batches, e) → the batch e joins: the open one of its
-- batch key (the destination's batch_key, e.g. one visitor per request),
-- or a new one once that is full
local function batch_of(ds, open, batches, e)
  local key = ds.batch_key and ds.batch_key(ds.integ, e.p) or ""
  local cur = open[key]
  if not cur or #cur >= ds.batch_size then
    cur = {}
    open[key] = cur
    batches[#batches + 1] = cur
  end
  return cur
end

-- dispatch(ds, entries) → number started. Cuts the entries into batches of
-- the destination's size and takes a rate-limit token per request
-- (fetching as many as the read needs at once) before starting it.
local function dispatch(ds, entries)
  local batches, open = {}, {}
  local count = 0
  for _, raw in ipairs(entries) do
    local id = type(raw) == "table" and raw[1]
    if type(id) == "string" and not ds.active[id] and type(raw[2]) == "table" then
      ds.active[id] = true
      ds.inflight = ds.inflight + 1
      count = count + 1
      local e = entry(id, raw[2])
      if not e.p then
        spawn(outcome.dead_empty, ds, e)
      else
        local b = batch_of(ds, open, batches, e)
        b[#b + 1] = e
      end
    end
  end
  for i, b in ipairs(batches) do
    if not ratelimit.acquire(ds.limiter, #batches - i + 1) then
      -- stopping: what was not started stays pending and is claimed later
      for j = i, #batches do
        for _, e in ipairs(batches[j]) do ds.active[e.id] = nil end
        outcome.released(ds, #batches[j])
        count = count - #batches[j]
      end
      return count
    end
    spawn(send_batch, ds, b)
  end
  return count
end
M.dispatch = dispatch

local function reader(ds)
  consumer.read_loop(ds, queue.DELIVERY_GROUP, M.MAX_INFLIGHT, dispatch, function(key, msg, fields)
    outcome.log_throttled(ds, "warn", key, msg, fields)
  end)
end

local function move_due(ds)
  return MOVE:call(ds.redis, 3, ds.retry, ds.stream, ds.age, floor(now() * 1000), M.MOVE_BATCH)
end
M.move_due = move_due

local function mover(ds)
  while not stopping() do
    circuit.tick(ds)
    local n, err = move_due(ds)
    if n == nil and err then
      outcome.log_throttled(ds, "warn", "mover", "moving due retries failed", { pipeline = ds.pk,
        integration = ds.name, reason = err })
    end
    if not (type(n) == "number" and n >= M.MOVE_BATCH) then sleep(ds.move_every_ms) end
  end
end

local function claimer(ds)
  consumer.claim_loop(ds, queue.DELIVERY_GROUP, M.MAX_INFLIGHT, dispatch, function(n)
    log.info("claimed deliveries from a stopped consumer", { pipeline = ds.pk, integration = ds.name, count = n })
  end)
end

---------------------------------------------------------------------------

-- limiter(ctx, d, integ, dest) → the token bucket this integration spends
local function limiter(ctx, d, integ, dest)
  local rate, key = pace.rate(d, integ, dest)
  return ratelimit.get(ctx.redis, key, rate)
end

local function state(ctx, cfg, p, integ, settings)
  local d = cfg.delivery or {}
  local dest = destinations.get(integ.type)
  local pk, name = p.key, integ.name
  local timeout = integ.timeout_ms or d.timeout_ms or 10000
  if settings.claim_idle_ms <= timeout and core.worker_id == 0 then
    log.warn("claim idle time is not above the request timeout: a slow request may be sent twice",
      { claim_idle_ms = settings.claim_idle_ms, timeout_ms = timeout })
  end
  return {
    ctx = ctx, pk = pk, name = name, integ = integ, dest = dest,
    stream = queue.delivery(pk, name), retry = queue.retry(pk, name), dlq = queue.dlq(pk, name),
    age = queue.age(pk, name),
    consumer = ctx.node .. "-w" .. tostring(core.worker_id),
    redis = ctx.redis, conn = nil,
    inflight = 0, active = {}, logged = {}, outcome_labels = {},
    done_ids = {}, done_items = {}, done_n = 0, flushing = false,
    limiter = limiter(ctx, d, integ, dest), batch_size = pace.batch_size(integ, dest),
    batch_key = dest.delivery.batch_key,
    policy = retry.policy(d), probe_every_ms = d.probe_every_ms, timeout_ms = timeout,
    labels = metrics.labels({ pipeline = pk, integration = name }),
    live_on = (cfg.live_events_max or 0) > 0,
    settings = settings,
    move_every_ms = max(20, min(250, floor((d.first_retry_ms or 1000) / 4))),
  }
end

function M.init(ctx)
  local cfg = ctx.cfg
  -- jitter must differ between workers and nodes, or they retry in step
  math.randomseed(tonumber(core.random_hex(4), 16))
  local settings = consumer.settings(cfg)
  M.states = {}
  for _, p in ipairs(cfg.pipelines) do
    for _, integ in ipairs(p.integrations or {}) do
      local ds = state(ctx, cfg, p, integ, settings)
      M.states[p.key .. "/" .. integ.name] = ds
      if core.in_engine then
        local conn, err = core.redis.connect(cfg.redis)
        if not conn then error(err, 0) end
        ds.conn = conn
        spawn(reader, ds)
        spawn(mover, ds)
        spawn(claimer, ds)
      end
    end
  end
end

return M
