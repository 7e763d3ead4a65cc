-- signal.deliver.outcome — what becomes of a delivery stream entry once an
-- attempt has an outcome, written to Redis so that a crash at any point
-- loses nothing (signal.deliver.worker decides the outcome; this records it).
--
--   outcome.done(ds, id, live_item)              delivered or dropped: acknowledged
--   outcome.failed(ds, e, o, started, live_item) retry later, or dead letter
--   outcome.dead_empty(ds, e)                    an entry without a payload
--
-- A retry moves the payload into the retry ZSET and acknowledges the stream
-- entry in one MULTI/EXEC; a dead letter moves it into the dead-letter
-- stream the same way: the payload is always in exactly one place. Done
-- entries are acknowledged in batches (see flush_done). Every outcome's
-- log line is throttled per integration and outcome.
local core = require "signal.core"
local cjson = require("cjson").new()
local queue = require "signal.redis.keys"
local redis_script = require "signal.redis.script"
local log = require "signal.observe.log"
local metrics = require "signal.observe.metrics"
local live = require "signal.observe.live"
local retry = require "signal.deliver.retry"
local circuit = require "signal.deliver.circuit"

local type, tostring, tonumber, pcall = type, tostring, tonumber, pcall
local monotonic, spawn, sleep, stopping, now = core.monotonic, core.spawn, core.sleep, core.stopping, core.now
local floor, min = math.floor, math.min
local encode, decode = cjson.encode, cjson.decode

cjson.encode_sparse_array(true)

local M = {}

M.LOG_EVERY_S = 10          -- at most one log line per integration and outcome per this
M.FLUSH_MAX = 1000          -- entries acknowledged by one flush

-- Throttled logging: the first occurrence of an outcome is logged at once,
-- repeats at most every LOG_EVERY_S with the number suppressed.
function M.log_throttled(ds, level, key, msg, fields)
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


function M.labels(ds, label)
  local l = ds.outcome_labels[label]
  if not l then
    l = metrics.labels({ pipeline = ds.pk, integration = ds.name, status = label })
    ds.outcome_labels[label] = l
  end
  return l
end


local function history_with(h, item)
  local list
  if type(h) == "string" and h ~= "" then
    local ok, v = pcall(decode, h)
    if ok and type(v) == "table" then list = v end
  end
  list = list or {}
  list[#list + 1] = item
  return encode(list)
end


-- Runs cmds until Redis takes them (backoff), or gives up when stopping
-- (the entries then stay pending and are claimed again later).
function M.write(ds, cmds)
  local delay = 100
  while true do
    local res, err = ds.redis:pipeline(cmds)
    if res then return res end
    M.log_throttled(ds, "warn", "redis", "recording a delivery outcome failed; retrying",
      { pipeline = ds.pk, integration = ds.name, reason = err })
    if stopping() then return nil end
    sleep(delay)
    delay = min(delay * 2, 2000)
  end
end

function M.released(ds, n)
  ds.inflight = ds.inflight - n
end


---------------------------------------------------------------------------
-- done entries

-- Finished entries are acknowledged in batches: the first one to finish
-- starts a flusher that waits one millisecond for the others of this loop
-- turn, then writes one XACK, one XDEL and one live-request script call for
-- all of them. A crash before the flush only means these entries are sent
-- again (at-least-once, same message_id); retries and dead letters are
-- written at once, atomically, by their own coroutine.
local function take_done(ds)
  local ids, items, n = ds.done_ids, ds.done_items, ds.done_n
  if n <= M.FLUSH_MAX then
    ds.done_ids, ds.done_items, ds.done_n = {}, {}, 0
    return ids, items, n
  end
  -- keep the tail for the next round (bounded command size)
  local rest_ids, rest_items = {}, {}
  for i = M.FLUSH_MAX + 1, n do rest_ids[#rest_ids + 1] = ids[i]; ids[i] = nil end
  for i = M.FLUSH_MAX + 1, #items do rest_items[#rest_items + 1] = items[i]; items[i] = nil end
  ds.done_ids, ds.done_items, ds.done_n = rest_ids, rest_items, n - M.FLUSH_MAX
  return ids, items, M.FLUSH_MAX
end

local function flush_done(ds)
  sleep(1)
  while ds.done_n > 0 do
    local ids, items, n = take_done(ds)
    local ack = { "XACK", ds.stream, queue.DELIVERY_GROUP }
    local del = { "XDEL", ds.stream }
    for i = 1, n do ack[3 + i] = ids[i]; del[2 + i] = ids[i] end
    local cmds = { ack, del }
    if #items > 0 then
      local sha = live.ADD:ensure(ds.redis)
      if sha then cmds[3] = live.requests_command(ds.pk, items, sha) end
    end
    local out = M.write(ds, cmds)
    if out and type(out[3]) == "table" and redis_script.noscript(out[3].err) then live.ADD:rerun(ds.redis, cmds[3]) end
    local active = ds.active
    for i = 1, n do active[ids[i]] = nil end
    M.released(ds, n)
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

---------------------------------------------------------------------------
-- failed entries

-- retry_cmds(ds, e, o, history) → the MULTI/EXEC that moves e to the retry ZSET
local function retry_cmds(ds, e, o, history)
  local delay = retry.delay_ms(ds.policy, e.attempt, o.retry_after_s)
  local member = encode({ p = e.p, m = e.m, v = e.v, r = e.r, w = e.w, a = tostring(e.attempt), h = history })
  local accepted = tonumber(e.r) or floor(now() * 1000)
  metrics.inc("signal_delivery_retries_total", ds.labels, 1)
  M.log_throttled(ds, "warn", o.label, "delivery failed; retry scheduled", {
    pipeline = ds.pk, integration = ds.name, status = o.status, error = o.error, hint = o.hint,
    attempt = e.attempt, retry_in_ms = delay })
  return { { "MULTI" }, { "ZADD", ds.retry, floor(now() * 1000) + delay, member },
           { "ZADD", ds.age, accepted, member },
           { "XACK", ds.stream, queue.DELIVERY_GROUP, e.id }, { "XDEL", ds.stream, e.id }, { "EXEC" } }
end

-- span(ms) → "90 s", "10 min", "24 h"
local function span(ms)
  if ms < 120000 then return floor(ms / 1000 + 0.5) .. " s" end
  if ms < 7200000 then return floor(ms / 60000 + 0.5) .. " min" end
  return floor(ms / 360000 + 0.5) / 10 .. " h"
end

-- dead_cmds(ds, e, o, history, why) → the MULTI/EXEC that dead-letters e;
-- why: nil (a permanent failure), "attempts" or "window" (retries exhausted)
local function dead_cmds(ds, e, o, history, why)
  local cause = o.hint or o.error or ("status " .. tostring(o.status))
  local kind = why and "exhausted" or "final"
  if why == "attempts" then
    cause = "gave up after " .. e.attempt .. " attempts: " .. cause
  elseif why == "window" then
    cause = "gave up " .. span(ds.policy.give_up_ms) .. " after it was accepted (" .. e.attempt
      .. " attempts): " .. cause
  end
  metrics.inc("signal_dead_letters_total", M.labels(ds, o.label), 1)
  M.log_throttled(ds, "error", "dlq:" .. o.label, "delivery dead-lettered", {
    pipeline = ds.pk, integration = ds.name, status = o.status, error = o.error, cause = cause,
    attempts = e.attempt, message_id = e.m })
  return { { "MULTI" },
           { "XADD", ds.dlq, "*", "p", e.p or "", "m", e.m or "", "v", e.v or "", "r", e.r or "",
             "a", e.attempt, "h", history, "e", cause, "s", o.label, "k", kind, "t", floor(now() * 1000) },
           { "XACK", ds.stream, queue.DELIVERY_GROUP, e.id }, { "XDEL", ds.stream, e.id }, { "EXEC" } }
end

-- failed(ds, e, o, started, live_item): records a failed attempt of entry e
function M.failed(ds, e, o, started, live_item)
  local item = { attempt = e.attempt, at = floor(started * 1000), status = o.status, error = o.error,
                 duration_ms = floor(o.duration_s * 10000 + 0.5) / 10, hint = o.hint }
  local history = history_with(e.h, item)
  local cmds
  if o.class == "retry" then
    circuit.failed(ds)
    local why = retry.exhausted(ds.policy, e.attempt, tonumber(e.w) or tonumber(e.r), floor(now() * 1000))
    cmds = why and dead_cmds(ds, e, o, history, why) or retry_cmds(ds, e, o, history)
  else
    cmds = dead_cmds(ds, e, o, history, nil)
  end
  if live_item then
    local sha = live.ADD:ensure(ds.redis)
    if sha then cmds[#cmds + 1] = live.requests_command(ds.pk, { live_item }, sha) end
  end
  local out = M.write(ds, cmds)
  if live_item and out and type(out[#cmds]) == "table" and redis_script.noscript(out[#cmds].err) then
    live.ADD:rerun(ds.redis, cmds[#cmds])
  end
  ds.active[e.id] = nil
  M.released(ds, 1)
end


-- An entry that carries no payload is not ours to interpret: dead-letter it
-- rather than loop forever.
function M.dead_empty(ds, e)
  M.write(ds, { { "MULTI" },
    { "XADD", ds.dlq, "*", "p", "", "m", e.m or "", "e", "delivery entry has no payload",
      "k", "final", "t", floor(now() * 1000), "a", 0 },
    { "XACK", ds.stream, queue.DELIVERY_GROUP, e.id }, { "XDEL", ds.stream, e.id }, { "EXEC" } })
  ds.active[e.id] = nil
  M.released(ds, 1)
end


return M
