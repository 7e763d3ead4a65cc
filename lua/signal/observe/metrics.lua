-- signal.observe.metrics — Prometheus metrics that are correct across workers
-- and nodes.
--
--   metrics.inc("signal_events_received_total", { pipeline = pk }, 1)
--   metrics.observe("signal_delivery_request_duration_seconds", labels, 0.042)
--   metrics.set("signal_some_gauge", labels, 12)
--   GET /metrics  → Prometheus text format 0.0.4 (signal.observe.prometheus)
--
-- Why Redis: each worker is a separate lua_State on its own thread and nodes
-- share nothing but Redis, so in-process counters would only ever show one
-- worker's share. Every worker therefore keeps cheap local deltas (a table
-- add per call, no I/O) and a background task flushes them once a second
-- with HINCRBY / HINCRBYFLOAT into one Redis hash (queue.metrics()); /metrics
-- reads that hash. Consequences, documented in docs/operations.md:
--   * values are cluster-wide (every node answers the same numbers): scrape
--     one node, or do not sum across nodes;
--   * counters survive engine restarts (they live in Redis), which
--     Prometheus handles like any counter that never resets;
--   * a scrape may be up to ~1 s behind (the flush interval); the answering
--     worker flushes its own deltas first;
--   * gauges set() with HSET are last-writer-wins — meant for values that
--     are the same whichever worker computes them. Queue depths, pending
--     counts, retry and dead-letter sizes are computed from Redis at scrape
--     time instead, so they are exact.
-- Labels may be given as a table (rendered once and cached for a table that
-- is reused — hot paths keep their label tables and never mutate them) or
-- as a string already rendered with metrics.labels().
local core = require "signal.core"
local queue = require "signal.redis.keys"
local log = require "signal.observe.log"

local type, pairs, ipairs, tostring, next = type, pairs, ipairs, tostring, next
local concat, sort = table.concat, table.sort
local format, gsub, find, sub = string.format, string.gsub, string.find, string.sub

local M = {}

M.FLUSH_MS = 1000

-- Fixed buckets (seconds): HTTP latencies from 1 ms to 30 s. Fixed so that
-- every worker and node adds into the same series.
M.BUCKETS = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30 }
local BUCKETS = M.BUCKETS
local NB = #BUCKETS
local LE = {}
for i, b in ipairs(BUCKETS) do LE[i] = format("%g", b) end

-- HELP text of the metrics the engine itself records. Other names are
-- exported too, typed by the call that created them.
M.HELP = {
  signal_events_received_total = "Events received by the collector.",
  signal_events_accepted_total = "Events accepted into the raw stream.",
  signal_events_rejected_total = "Events rejected by the collector, by reason.",
  signal_redis_errors_total = "Redis commands that failed, by kind: oom (Redis refuses writes at maxmemory),"
    .. " readonly, down, other.",
  signal_events_deduplicated_total = "Events acknowledged but not enqueued again (messageId seen).",
  signal_events_processed_total = "Events taken off the raw stream and mapped.",
  signal_events_dead_lettered_total = "Events the processor could not process (raw dead letters).",
  signal_payloads_enqueued_total = "Payloads written to a delivery stream.",
  signal_payloads_dropped_total = "Events a blueprint mapped to nothing (default = drop or transform false).",
  signal_script_warnings_total = "Events whose mapping produced a script warning.",
  signal_payloads_consent_blocked_total = "Events not sent to an integration because the visitor's consent"
    .. " lacks a category it requires.",
  signal_payload_corrections_total = "Changes a destination made to a payload to fit the vendor's limits"
    .. " (truncated, renamed or dropped fields, timestamps not backdated), by kind.",
  signal_deliveries_total = "Vendor requests by outcome (HTTP status or error class).",
  signal_delivery_retries_total = "Payloads scheduled for a retry.",
  signal_dead_letters_total = "Payloads moved to a dead-letter stream.",
  signal_dlq_replayed_total = "Dead letters replayed into a delivery stream.",
  signal_delivery_request_duration_seconds = "Duration of vendor requests.",
  signal_event_delivery_latency_seconds = "Time from the raw stream to a successful delivery.",
  signal_event_processing_duration_seconds = "Time to process one event (stitch, enrich, map).",
  signal_ratelimit_waits_total = "Times delivery waited for the per-tenant rate limit.",
  signal_queue_length = "Entries in a stream (unread + in flight).",
  signal_queue_pending = "Entries delivered to a consumer and not yet acknowledged.",
  signal_queue_lag = "Entries not yet read by the consumer group.",
  signal_retry_scheduled = "Payloads waiting in the retry schedule.",
  signal_dead_letter_depth = "Entries in a dead-letter stream.",
  signal_vendor_connections_opened_total = "Connections opened to vendors (a request over a kept-alive"
    .. " connection opens none).",
  signal_delivery_backlog = "Payloads not yet delivered: in the delivery stream or the retry schedule.",
  signal_delivery_lag_seconds = "Age of the oldest payload in the delivery stream, since it was accepted.",
  signal_delivery_oldest_pending_seconds = "Age of the oldest payload not yet delivered (stream or retry"
    .. " schedule), since it was accepted.",
  signal_delivery_failing = "1 while the destination's circuit is open (its vendor failing), else 0.",
  signal_enrichment_total = "Profile enrichments by outcome: cache hit/miss/negative, timeout, error, skipped.",
  signal_enrichment_duration_seconds = "Time spent enriching one event (within enrichment.budget_ms).",
  signal_http_request_duration_seconds = "Time to answer an HTTP request, by route.",
}

local counters = {}        -- series -> delta since the last flush (integers)
local sources = {}         -- add_source functions
local sums = {}            -- series -> delta (floats: histogram _sum)
local gauges = {}          -- series -> value (last set)
local types = {}           -- metric name -> type, as recorded locally
local types_sent = {}      -- names whose type reached Redis
local dirty = false
local ctx_redis

---------------------------------------------------------------------------
-- label rendering

local function esc(v)
  v = tostring(v)
  if find(v, '[\\"\n]') then
    v = gsub(gsub(gsub(v, "\\", "\\\\"), "\n", "\\n"), '"', '\\"')
  end
  return v
end

local rendered = setmetatable({}, { __mode = "k" })   -- labels table -> "a=\"x\",b=\"y\""

-- labels({ pipeline = "k", status = 202 }) -> 'pipeline="k",status="202"'
function M.labels(t)
  if t == nil then return "" end
  if type(t) == "string" then return t end
  local s = rendered[t]
  if s then return s end
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  sort(keys)
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = k .. '="' .. esc(t[k]) .. '"' end
  s = concat(parts, ",")
  rendered[t] = s
  return s
end
local labels = M.labels

local function series(name, l)
  if l == "" then return name end
  return name .. "{" .. l .. "}"
end

---------------------------------------------------------------------------
-- recording (no I/O)

-- Every series is exported under the signal_ prefix; callers may leave it
-- out ("events_received_total"). Resolved once per name.
local full_names = {}
local function full(name)
  local f = full_names[name]
  if f then return f end
  f = sub(name, 1, 7) == "signal_" and name or ("signal_" .. name)
  full_names[name] = f
  return f
end
M.name = full

-- Counter series names per name and labels table, so a hot path that keeps
-- its labels table (collector, delivery) builds no string per call.
local counter_keys = setmetatable({}, { __mode = "k" })   -- labels table → name → series

function M.inc(name, lbl, n)
  name = full(name)
  local key
  if type(lbl) == "table" then
    local per = counter_keys[lbl]
    if not per then per = {}; counter_keys[lbl] = per end
    key = per[name]
    if not key then key = series(name, labels(lbl)); per[name] = key end
  else
    key = series(name, labels(lbl))
  end
  counters[key] = (counters[key] or 0) + (n or 1)
  if not types[name] then types[name] = "counter" end
  dirty = true
end

-- Series names of one histogram (per name and label set), built once.
-- observe() on a hot path only adds 1 to the count of the one bucket the
-- value falls in (h.n, plain numbers); the cumulative le= series are made
-- from those counts when deltas are collected (collect_histograms).
local hist_keys = {}
local pending_hist = {}   -- histograms observed since the last collect

local function histogram(name, l)
  local per = hist_keys[name]
  if not per then per = {}; hist_keys[name] = per end
  local h = per[l]
  if h then return h end
  local sep = l == "" and "" or ","
  h = {}
  for i = 1, NB do h[i] = name .. "_bucket{" .. l .. sep .. 'le="' .. LE[i] .. '"}' end
  h.inf = name .. "_bucket{" .. l .. sep .. 'le="+Inf"}'
  h.count = series(name .. "_count", l)
  h.sum = series(name .. "_sum", l)
  h.n = {}                -- observations per bucket; [NB + 1]: above the last
  for i = 1, NB + 1 do h.n[i] = 0 end
  h.v = 0                 -- sum of the values observed
  h.pending = false
  per[l] = h
  return h
end

-- observed(h, name): h has observations to collect at the next flush
local function observed(h, name)
  if not h.pending then
    h.pending = true
    pending_hist[#pending_hist + 1] = h
    if not types[name] then types[name] = "histogram" end
  end
  dirty = true
end

function M.observe(name, lbl, v)
  name = full(name)
  local h = histogram(name, labels(lbl))
  local i = 1
  while i <= NB and v > BUCKETS[i] do i = i + 1 end
  local n = h.n
  n[i] = n[i] + 1
  h.v = h.v + v
  observed(h, name)
end

-- Moves the observations since the last call into the counters as the
-- cumulative Prometheus series; every bucket is written, zero ones too (a
-- scrape must see the whole set).
local function collect_histograms()
  for j = 1, #pending_hist do
    local h = pending_hist[j]
    local n, cum = h.n, 0
    for i = 1, NB do
      cum = cum + n[i]
      counters[h[i]] = (counters[h[i]] or 0) + cum
      n[i] = 0
    end
    cum = cum + n[NB + 1]
    n[NB + 1] = 0
    counters[h.inf] = (counters[h.inf] or 0) + cum
    counters[h.count] = (counters[h.count] or 0) + cum
    sums[h.sum] = (sums[h.sum] or 0) + h.v
    h.v, h.pending = 0, false
    pending_hist[j] = nil
  end
end

-- observe_counts(name, lbl, counts, sum): observations counted elsewhere
-- (engine/collect/): counts[i] per bucket as BUCKETS has them, [#BUCKETS+1]
-- above the last; sum of their values.
function M.observe_counts(name, lbl, counts, sum)
  name = full(name)
  local h = histogram(name, labels(lbl))
  local n = h.n
  for i = 1, NB + 1 do n[i] = n[i] + (counts[i] or 0) end
  h.v = h.v + sum
  observed(h, name)
end

-- add_source(fn): fn() runs before every flush, to add what was counted
-- outside Lua (the collector, engine/collect/) with inc/observe_counts.
function M.add_source(fn)
  sources[#sources + 1] = fn
end

-- redis_error_kind(err) → "oom" (Redis refuses writes: maxmemory reached),
-- "readonly" (a replica), "down" (no connection) or "other"
function M.redis_error_kind(err)
  err = tostring(err or "")
  if find(err, "^OOM") or find(err, "OOM command not allowed", 1, true) then return "oom" end
  if find(err, "^READONLY") then return "readonly" end
  if find(err, "connect", 1, true) or find(err, "closed", 1, true) or find(err, "timeout", 1, true)
     or find(err, "unavailable", 1, true) or find(err, "refused", 1, true) then
    return "down"
  end
  return "other"
end

local redis_error_labels = {}

-- redis_error(err) → its kind, counted in signal_redis_errors_total{kind}
function M.redis_error(err)
  local kind = M.redis_error_kind(err)
  local l = redis_error_labels[kind]
  if not l then l = { kind = kind }; redis_error_labels[kind] = l end
  M.inc("signal_redis_errors_total", l, 1)
  return kind
end

function M.set(name, lbl, v)
  name = full(name)
  gauges[series(name, labels(lbl))] = v
  if not types[name] then types[name] = "gauge" end
  dirty = true
end

---------------------------------------------------------------------------
-- flushing

-- give_back(what, delta): a delta Redis did not take goes back into the
-- local tables (merged with whatever arrived meanwhile)
local function give_back(what, a, b)
  if what == "c" then counters[a] = (counters[a] or 0) + b
  elseif what == "s" then sums[a] = (sums[a] or 0) + b
  elseif what == "g" then
    for k, v in pairs(a) do if gauges[k] == nil then gauges[k] = v end end
  end
  dirty = true
end

-- flush(redis) -> true | nil, err. A delta is removed only once Redis took
-- it: a Redis outage, or a Redis that refuses writes (out of memory), delays
-- numbers but loses none.
function M.flush(redis)
  redis = redis or ctx_redis
  for i = 1, #sources do sources[i]() end
  if not dirty or not redis then return true end
  collect_histograms()
  local c, s, g = counters, sums, gauges
  counters, sums, gauges, dirty = {}, {}, {}, false
  local key, gkey, tkey = queue.metrics(), queue.metrics("gauges"), queue.metrics("types")
  -- undo[i]: how to give command i's delta back if Redis refuses it
  local cmds, undo = {}, {}
  for k, v in pairs(c) do cmds[#cmds + 1] = { "HINCRBY", key, k, v }; undo[#cmds] = { "c", k, v } end
  for k, v in pairs(s) do
    cmds[#cmds + 1] = { "HINCRBYFLOAT", key, k, format("%.9g", v) }
    undo[#cmds] = { "s", k, v }
  end
  if next(g) then
    local hset = { "HSET", gkey }
    for k, v in pairs(g) do hset[#hset + 1] = k; hset[#hset + 1] = tostring(v) end
    cmds[#cmds + 1] = hset
    undo[#cmds] = { "g", g }
  end
  for name, t in pairs(types) do
    if not types_sent[name] then
      cmds[#cmds + 1] = { "HSETNX", tkey, name, t }
      undo[#cmds] = { "t", name }
    end
  end
  if #cmds == 0 then return true end
  local res, err = redis:pipeline(cmds)
  local failed
  for i = 1, #cmds do
    local r = res and res[i]
    local u = undo[i]
    if res == nil or (type(r) == "table" and r.err) then
      failed = failed or (res == nil and err) or r.err
      if u[1] ~= "t" then give_back(u[1], u[2], u[3]) end
    elseif u[1] == "t" then
      types_sent[u[2]] = true
    end
  end
  if failed then
    M.redis_error(failed)
    return nil, failed
  end
  return true
end

local function flusher(redis)
  local failed = false
  while true do
    core.sleep(M.FLUSH_MS)
    local ok, err = M.flush(redis)
    if not ok and not failed then log.warn("metrics flush failed", { reason = err }) end
    failed = not ok
    if core.stopping() then M.flush(redis) return end
  end
end

---------------------------------------------------------------------------

-- pending() → counter and sum deltas this worker holds that Redis has not
-- taken yet (a scrape adds them while Redis refuses writes)
function M.pending()
  collect_histograms()
  return counters, sums
end

-- types() → metric name → type, as recorded by this worker (a scrape
-- types what Redis does not know yet with it)
function M.types() return types end

-- series_name(name, labels) → the rendered series ("name{labels}")
function M.series_name(name, l) return series(name, labels(l)) end

function M.init(ctx, router)
  ctx_redis = ctx.redis
  require("signal.observe.prometheus").init(ctx, router)
  if core.in_engine then core.spawn(flusher, ctx.redis) end
end

-- For specs: forget local state.
function M._reset()
  counters, sums, gauges, types, types_sent, dirty = {}, {}, {}, {}, {}, false
  for _, h in ipairs(pending_hist) do
    for i = 1, NB + 1 do h.n[i] = 0 end
    h.v, h.pending = 0, false
  end
  pending_hist = {}
end

return M
