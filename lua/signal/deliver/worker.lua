-- signal/delivery.lua — delivery streams → Amperity, with retries, dead
-- letters and the per-tenant rate limit (DESIGN §1 "Durability").
--
-- Per worker and per (pipeline, integration): a consumer task reads
-- queue.delivery(pk, name) with the group queue.DELIVERY_GROUP on its own
-- Redis connection (XREADGROUP … BLOCK), and starts one coroutine per entry,
-- so up to MAX_INFLIGHT requests per integration are in flight per worker.
-- Each integration has its own stream, consumer, in-flight bound and retry
-- schedule: one vendor's outage or slowness never delays another's
-- deliveries (RudderStack's head-of-line lesson, DESIGN §6).
--
-- Outcome of one POST (integrations/amperity/ingest.lua):
--   202          done: XACK + XDEL.
--   204          done, and a warning: the stream is in drop mode.
--   429, 5xx, timeouts, network/DNS errors
--                retried on config.retry_delays(cfg.delivery) (1 s … ~20 h by
--                default) plus 0–20 % jitter, never sooner than Retry-After
--                (seconds or HTTP date). The payload goes into the ZSET
--                queue.retry(pk, name) scored by its due time, and the stream
--                entry is acknowledged, in one MULTI/EXEC: the payload is
--                always in exactly one of the two. A mover task puts due
--                members back into the stream with one Lua script (read +
--                XADD + ZREM atomically, so two workers never move one twice).
--   400/401/403/404/409/411/413/415 (and other statuses)
--                final: dead letter at once, with the cause.
--   last attempt failed
--                dead letter with payload, error and the attempt history.
-- Dead letters: the stream queue.dlq(pk, name) (signal.deliver.dlq lists and
-- replays them). Every outcome's troubleshooting line (the seed's table:
-- tenant_subdomain for DNS failures, the JWT for 401/403, the stream id for
-- 404, drop mode for 204) goes to the log — throttled, never a secret — and
-- to the live event's vendor request record.
--
-- Rate limit: every request first takes a token from the tenant's Redis
-- token bucket (signal.deliver.ratelimit), shared by all workers and nodes; tokens
-- are fetched in batches of the entries at hand.
--
-- Crash safety: entries are acknowledged only after their outcome is
-- recorded, so a SIGKILL leaves in-flight entries pending; every worker
-- XAUTOCLAIMs entries idle longer than claim_idle_ms from other consumers
-- and sends them again (at-least-once: a duplicate carries the same
-- message_id).
local core = require "signal.core"
local cjson = require("cjson").new()
local queue = require "signal.redis.keys"
local log = require "signal.observe.log"
local config = require "signal.config"
local metrics = require "signal.observe.metrics"
local ratelimit = require "signal.deliver.ratelimit"
local processor = require "signal.pipeline.processor"
local live = require "signal.observe.live"
local ingest = require "signal.destinations.amperity.send"
local redis_script = require "signal.redis.script"

local type, ipairs, pairs, tostring, tonumber, pcall = type, ipairs, pairs, tostring, tonumber, pcall
local monotonic, spawn, sleep, stopping, now = core.monotonic, core.spawn, core.sleep, core.stopping, core.now
local floor, min, max, random = math.floor, math.min, math.max, math.random
local encode, decode = cjson.encode, cjson.decode
local scrub = live.scrub

cjson.encode_sparse_array(true)

local M = {}

M.MAX_INFLIGHT = 512        -- requests in flight per integration per worker
M.JITTER = 0.2              -- retry delays are stretched by 0..20 %
M.MOVE_BATCH = 500
M.LOG_EVERY_S = 10          -- at most one log line per integration and outcome per this

-- KEYS[1] retry ZSET, KEYS[2] delivery stream; ARGV[1] now (ms), ARGV[2] max
M.MOVE_SCRIPT = [[
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do
  local ok, d = pcall(cjson.decode, m)
  if ok and type(d) == 'table' and type(d.p) == 'string' then
    redis.call('XADD', KEYS[2], '*', 'p', d.p, 'm', tostring(d.m or ''), 'v', tostring(d.v or ''),
      'r', tostring(d.r or ''), 'a', tostring(d.a or '0'), 'h', tostring(d.h or '[]'))
  end
  redis.call('ZREM', KEYS[1], m)
end
return #due
]]
local MOVE = redis_script.new(M.MOVE_SCRIPT)


local function field_list(flist)
  local p, m, v, r, a, h
  for j = 1, #flist - 1, 2 do
    local k, x = flist[j], flist[j + 1]
    if k == "p" then p = x
    elseif k == "m" then m = x
    elseif k == "v" then v = x
    elseif k == "r" then r = x
    elseif k == "a" then a = x
    elseif k == "h" then h = x end
  end
  return p, m, v, r, a, h
end

-- Throttled logging: the first occurrence of an outcome is logged at once,
-- repeats at most every LOG_EVERY_S with the number suppressed.
local function log_throttled(ds, level, key, msg, fields)
  local t = monotonic()
  local st = ds.logged[key]
  if st and t - st.at < M.LOG_EVERY_S then
    st.suppressed = st.suppressed + 1
    return
  end
  if st and st.suppressed > 0 then fields.suppressed_since_last = st.suppressed end
  ds.logged[key] = { at = t, suppressed = 0 }
  log[level](msg, fields)
end

local function outcome_labels(ds, outcome)
  local l = ds.outcome_labels[outcome]
  if not l then
    l = metrics.labels({ pipeline = ds.pk, integration = ds.name, status = outcome })
    ds.outcome_labels[outcome] = l
  end
  return l
end

-- retry_delay_ms(delays, attempt, retry_after_s) → ms until the next
-- attempt: the schedule's delay stretched by 0..JITTER (never shortened, so
-- the schedule stays a lower bound and delays keep growing), and never less
-- than Retry-After.
function M.retry_delay_ms(delays, attempt, retry_after_s, jitter)
  local base = delays[attempt] or delays[#delays] or 1000
  local d = base * (1 + (jitter or M.JITTER) * random())
  if retry_after_s and retry_after_s * 1000 > d then d = retry_after_s * 1000 end
  return floor(d + 0.5)
end

local function history_with(h, entry)
  local list
  if type(h) == "string" and h ~= "" then
    local ok, v = pcall(decode, h)
    if ok and type(v) == "table" then list = v end
  end
  list = list or {}
  list[#list + 1] = entry
  return encode(list)
end

-- Runs cmds until Redis takes them (backoff), or gives up when stopping
-- (the entry then stays pending and is claimed again later).
local function write(ds, cmds)
  local delay = 100
  while true do
    local res, err = ds.redis:pipeline(cmds)
    if res then return res end
    log_throttled(ds, "warn", "redis", "recording a delivery outcome failed; retrying",
      { pipeline = ds.pk, integration = ds.name, reason = err })
    if stopping() then return nil end
    sleep(delay)
    delay = min(delay * 2, 2000)
  end
end

-- Finished entries (202/204) are acknowledged in batches: the first one
-- to finish starts a flusher that waits one millisecond for the others of
-- this loop turn, then writes one XACK, one XDEL and one live-request
-- script call for all of them. A crash before the flush only means these
-- entries are sent again (at-least-once, same message_id); retries and dead
-- letters are written at once, atomically, by their own coroutine.
M.FLUSH_MAX = 1000

local function flush_done(ds)
  sleep(1)
  while ds.done_n > 0 do
    local ids, items, n = ds.done_ids, ds.done_items, ds.done_n
    if n > M.FLUSH_MAX then
      -- keep the tail for the next round (bounded command size)
      local rest_ids, rest_items = {}, {}
      for i = M.FLUSH_MAX + 1, n do rest_ids[#rest_ids + 1] = ids[i] end
      for i = M.FLUSH_MAX + 1, #items do rest_items[#rest_items + 1] = items[i] end
      for i = n, M.FLUSH_MAX + 1, -1 do ids[i] = nil end
      for i = #items, M.FLUSH_MAX + 1, -1 do items[i] = nil end
      ds.done_ids, ds.done_items, ds.done_n = rest_ids, rest_items, n - M.FLUSH_MAX
      n = M.FLUSH_MAX
    else
      ds.done_ids, ds.done_items, ds.done_n = {}, {}, 0
    end
    local ack = { "XACK", ds.stream, queue.DELIVERY_GROUP }
    local del = { "XDEL", ds.stream }
    for i = 1, n do ack[3 + i] = ids[i]; del[2 + i] = ids[i] end
    local cmds = { ack, del }
    if #items > 0 then
      local sha = live.ADD:ensure(ds.redis)
      if sha then cmds[3] = live.requests_command(ds.pk, items, sha) end
    end
    local out = write(ds, cmds)
    if out and type(out[3]) == "table" and redis_script.noscript(out[3].err) then live.ADD:forget(ds.redis) end
    local active = ds.active
    for i = 1, n do active[ids[i]] = nil end
    ds.inflight = ds.inflight - n
  end
  ds.flushing = false
end

function M.done(ds, id, live_item)
  local n = ds.done_n + 1
  ds.done_n = n
  ds.done_ids[n] = id
  if live_item then ds.done_items[#ds.done_items + 1] = live_item end
  if not ds.flushing then
    ds.flushing = true
    spawn(flush_done, ds)
  end
end

-- One delivery attempt of one stream entry (its own coroutine).
local function send_entry(ds, id, flist)
  local p, mid, version, rms, a, h = field_list(flist)
  local attempt = (tonumber(a) or 0) + 1
  local cmds = {}
  if not p then
    -- not ours to interpret: dead-letter it rather than loop forever
    cmds[1] = { "MULTI" }
    cmds[2] = { "XADD", ds.dlq, "*", "p", "", "m", mid or "", "e", "delivery entry has no payload",
                "k", "final", "t", floor(now() * 1000), "a", 0 }
    cmds[3] = { "XACK", ds.stream, queue.DELIVERY_GROUP, id }
    cmds[4] = { "XDEL", ds.stream, id }
    cmds[5] = { "EXEC" }
    write(ds, cmds)
    ds.active[id] = nil
    ds.inflight = ds.inflight - 1
    return
  end

  local started = now()
  local t0 = monotonic()
  local sok, res, err = pcall(ingest.send, ds.integ, p, ds.timeout_ms)
  local dur = monotonic() - t0
  local class
  if not sok then
    -- a request the HTTP client refuses to build will never succeed
    res, err, class = nil, "request not sent: " .. tostring(res), "final"
  end
  local status = res and res.status or nil
  class = class or ingest.classify(status, err)
  local outcome = ingest.outcome(status, err)
  local hint = ingest.explain(ds.integ, status, err, res and res.body)
  if hint then hint = scrub(hint) end
  if err then err = scrub(err) end

  metrics.inc("signal_deliveries_total", outcome_labels(ds, outcome), 1)
  metrics.observe("signal_delivery_request_duration_seconds", ds.labels, dur)

  -- the live view of this request; its body is the payload the processor
  -- recorded (p:<integration>), byte for byte, so it is not stored twice
  local live_item
  if ds.live_on and mid and mid ~= "" then
    local rec = ingest.record(ds.integ, nil, res, err, attempt, started, dur, hint)
    live_item = { mid, live.request_field(ds.name, attempt, rec.at), live.encode(rec) }
  end

  if class == "ok" or class == "drop" then
    if class == "drop" then
      log_throttled(ds, "warn", "204", "stream is in drop mode", { pipeline = ds.pk, integration = ds.name,
        status = 204, hint = hint })
    end
    local r = tonumber(rms)
    if r then metrics.observe("signal_event_delivery_latency_seconds", ds.labels, max(0, now() - r / 1000)) end
    return M.done(ds, id, live_item)
  end

  local hentry = { attempt = attempt, at = floor(started * 1000), status = status, error = err,
                   duration_ms = floor(dur * 10000 + 0.5) / 10, hint = hint }
  local history = history_with(h, hentry)
  if class == "retry" and attempt < ds.attempts then
    local ra = res and res.headers and ingest.retry_after(res.headers["retry-after"], started) or nil
    local delay = M.retry_delay_ms(ds.delays, attempt, ra)
    local member = encode({ p = p, m = mid, v = version, r = rms, a = tostring(attempt), h = history })
    cmds[#cmds + 1] = { "MULTI" }
    cmds[#cmds + 1] = { "ZADD", ds.retry, floor(now() * 1000) + delay, member }
    cmds[#cmds + 1] = { "XACK", ds.stream, queue.DELIVERY_GROUP, id }
    cmds[#cmds + 1] = { "XDEL", ds.stream, id }
    cmds[#cmds + 1] = { "EXEC" }
    metrics.inc("signal_delivery_retries_total", ds.labels, 1)
    log_throttled(ds, "warn", outcome, "delivery failed; retry scheduled", {
      pipeline = ds.pk, integration = ds.name, status = status, error = err, hint = hint,
      attempt = attempt, retry_in_ms = delay })
  else
    local kind = class == "retry" and "exhausted" or "final"
    local cause = hint or err or ("status " .. tostring(status))
    if kind == "exhausted" then
      cause = "gave up after " .. attempt .. " attempts: " .. cause
    end
    cmds[#cmds + 1] = { "MULTI" }
    cmds[#cmds + 1] = { "XADD", ds.dlq, "*", "p", p, "m", mid or "", "v", version or "", "r", rms or "",
                        "a", attempt, "h", history, "e", cause, "s", outcome, "k", kind,
                        "t", floor(now() * 1000) }
    cmds[#cmds + 1] = { "XACK", ds.stream, queue.DELIVERY_GROUP, id }
    cmds[#cmds + 1] = { "XDEL", ds.stream, id }
    cmds[#cmds + 1] = { "EXEC" }
    metrics.inc("signal_dead_letters_total", outcome_labels(ds, outcome), 1)
    log_throttled(ds, "error", "dlq:" .. outcome, "delivery dead-lettered", {
      pipeline = ds.pk, integration = ds.name, status = status, error = err, cause = cause,
      attempts = attempt, message_id = mid })
  end
  if live_item then
    local sha = live.ADD:ensure(ds.redis)
    if sha then cmds[#cmds + 1] = live.requests_command(ds.pk, { live_item }, sha) end
  end
  local out = write(ds, cmds)
  if out and type(out[#cmds]) == "table" and redis_script.noscript(out[#cmds].err) then
    live.ADD:forget(ds.redis)
  end
  ds.active[id] = nil
  ds.inflight = ds.inflight - 1
end

-- dispatch(ds, entries) → number started. Takes a rate-limit token per
-- entry (fetching as many as the batch needs at once) before starting it.
local function dispatch(ds, entries)
  local n, count = #entries, 0
  for i = 1, n do
    local e = entries[i]
    local id = type(e) == "table" and e[1]
    if type(id) == "string" and not ds.active[id] and type(e[2]) == "table" then
      if not ratelimit.acquire(ds.limiter, n - i + 1) then return count end
      ds.active[id] = true
      ds.inflight = ds.inflight + 1
      count = count + 1
      spawn(send_entry, ds, id, e[2])
    end
  end
  return count
end
M.dispatch = dispatch

local function consumer(ds)
  processor.consume(ds, queue.DELIVERY_GROUP, M.MAX_INFLIGHT, dispatch, function(key, msg, fields)
    log_throttled(ds, "warn", key, msg, fields)
  end)
end

local function move_due(ds)
  return MOVE:call(ds.redis, 2, ds.retry, ds.stream, floor(now() * 1000), M.MOVE_BATCH)
end
M.move_due = move_due

local function mover(ds)
  while not stopping() do
    local n, err = move_due(ds)
    if n == nil and err then
      log_throttled(ds, "warn", "mover", "moving due retries failed", { pipeline = ds.pk,
        integration = ds.name, reason = err })
    end
    if not (type(n) == "number" and n >= M.MOVE_BATCH) then sleep(ds.move_every_ms) end
  end
end

local function claimer(ds)
  processor.claim_loop(ds, queue.DELIVERY_GROUP, M.MAX_INFLIGHT, dispatch, function(n)
    log.info("claimed deliveries from a stopped consumer", { pipeline = ds.pk, integration = ds.name, count = n })
  end)
end

function M.init(ctx, router)
  local cfg = ctx.cfg
  -- jitter must differ between workers and nodes, or they retry in step
  math.randomseed(tonumber(core.random_hex(4), 16))
  local d = cfg.delivery or {}
  local delays = config.retry_delays(d)
  local settings = processor.settings(cfg)
  M.states = {}
  for _, p in ipairs(cfg.pipelines) do
    for _, integ in ipairs(p.integrations or {}) do
      local pk, name = p.key, integ.name
      local timeout = integ.timeout_ms or d.timeout_ms or 10000
      if settings.claim_idle_ms <= timeout and core.worker_id == 0 then
        log.warn("claim idle time is not above the request timeout: a slow request may be sent twice",
          { claim_idle_ms = settings.claim_idle_ms, timeout_ms = timeout })
      end
      local ds = {
        ctx = ctx, pk = pk, name = name, integ = integ,
        stream = queue.delivery(pk, name), retry = queue.retry(pk, name), dlq = queue.dlq(pk, name),
        consumer = ctx.node .. "-w" .. tostring(core.worker_id),
        redis = ctx.redis, conn = nil,
        inflight = 0, active = {}, logged = {}, outcome_labels = {},
        done_ids = {}, done_items = {}, done_n = 0, flushing = false,
        limiter = ratelimit.get(ctx.redis, integ.tenant_id or integ.tenant_subdomain or name,
          d.rate_limit_per_tenant or 500),
        delays = delays, attempts = d.attempts or 8, timeout_ms = timeout,
        labels = metrics.labels({ pipeline = pk, integration = name }),
        live_on = (cfg.live_events_max or 0) > 0,
        settings = settings,
        move_every_ms = max(20, min(250, floor((d.first_retry_ms or 1000) / 4))),
      }
      M.states[pk .. "/" .. name] = ds
      if core.in_engine then
        local conn, err = core.redis.connect(cfg.redis)
        if not conn then error(err, 0) end
        ds.conn = conn
        spawn(consumer, ds)
        spawn(mover, ds)
        spawn(claimer, ds)
      end
    end
  end
end

return M
