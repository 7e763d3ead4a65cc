-- signal.redis.consumer — the consumer-group loops every stream reader
-- shares: the processor on a pipeline's raw stream and the delivery workers
-- on each integration's delivery stream.
--
--   consumer.read_loop(st, group, max_inflight, dispatch, warn)
--   consumer.claim_loop(st, group, max_inflight, dispatch, on_claimed)
--
-- st holds: conn (a connection of its own, because XREADGROUP … BLOCK would
-- stall every command queued behind it on a shared one), redis (the shared
-- connection, for claims), stream, consumer ("<node>-w<worker>"), inflight
-- (entries being worked on, so reads never exceed max_inflight) and
-- settings ({ claim_idle_ms, claim_interval_ms }, see settings()).
-- dispatch(st, entries) → number of entries it started.
--
-- Crash safety: a process that dies leaves its entries pending in the group.
-- Every claim interval, each worker takes over (XAUTOCLAIM) entries idle
-- longer than claim_idle_ms, within its free room, and now and then worker 0
-- removes consumers that are gone and own nothing. At-least-once: an entry
-- is acknowledged only once its work is recorded.
local core = require "signal.core"
local log = require "signal.observe.log"

local type, ipairs, tonumber = type, ipairs, tonumber
local monotonic, sleep, stopping = core.monotonic, core.sleep, core.stopping
local floor, min, max = math.floor, math.min, math.max
local match = string.match

local M = {}

M.READ_COUNT = 100          -- entries per XREADGROUP
M.BLOCK_MS = 1000           -- XREADGROUP BLOCK: also how fast a stop is noticed
M.CLAIM_IDLE_MS = 30000
M.CONSUMER_GC_IDLE_MS = 600000   -- empty consumers idle this long are removed

-- settings(cfg) → { claim_idle_ms, claim_interval_ms }
function M.settings(cfg)
  local d = cfg.delivery or {}
  local idle = tonumber(d.claim_idle_ms) or M.CLAIM_IDLE_MS
  idle = max(10, floor(idle))
  return { claim_idle_ms = idle, claim_interval_ms = min(5000, max(50, floor(idle / 2))) }
end

-- Group creation is idempotent: BUSYGROUP means it exists.
function M.ensure_group(redis, stream, group)
  local ok, err = redis:call("XGROUP", "CREATE", stream, group, "0", "MKSTREAM")
  if ok or (err and err:find("BUSYGROUP", 1, true)) then return true end
  return nil, err
end

-- entry_ms("1712345678901-0") → 1712345678901 (the XADD time)
function M.entry_ms(id) return tonumber(match(id, "^(%d+)")) end

-- read_loop(st, group, max_inflight, dispatch, warn): reads new entries and
-- hands them to dispatch. Creates the group when missing (again after a
-- NOGROUP: the stream was deleted); Redis errors back off 100 ms → 2 s;
-- returns once the engine is stopping. warn(key, msg, fields) reports
-- problems (callers may throttle).
function M.read_loop(st, group, max_inflight, dispatch, warn)
  local delay = 100
  local grouped = false
  while not stopping() do
    if not grouped then
      local ok, err = M.ensure_group(st.conn, st.stream, group)
      if ok then grouped = true else
        warn("group", "cannot create consumer group; retrying", { stream = st.stream, reason = err })
        sleep(delay); delay = min(delay * 2, 2000)
      end
    elseif st.inflight >= max_inflight then
      sleep(2)
    else
      local res, err = st.conn:call("XREADGROUP", "GROUP", group, st.consumer,
        "COUNT", min(M.READ_COUNT, max_inflight - st.inflight), "BLOCK", M.BLOCK_MS,
        "STREAMS", st.stream, ">")
      if type(res) == "table" then
        delay = 100
        local s = res[1]
        if type(s) == "table" and type(s[2]) == "table" then dispatch(st, s[2]) end
      elseif err then
        if err:find("NOGROUP", 1, true) then grouped = false
        else
          warn("read", "reading the stream failed; retrying", { stream = st.stream, reason = err })
          sleep(delay); delay = min(delay * 2, 2000)
        end
      end
    end
  end
end

-- claim(redis, stream, group, consumer, idle_ms, fn, arg, room) → number
-- claimed. XAUTOCLAIM from every consumer, in pages, while room() allows.
function M.claim(redis, stream, group, consumer, idle_ms, fn, arg, room)
  local cursor, total = "0-0", 0
  for _ = 1, 20 do
    if room and room() <= 0 then break end
    local res, err = redis:call("XAUTOCLAIM", stream, group, consumer, idle_ms, cursor, "COUNT", 100)
    if type(res) ~= "table" then
      if err and not err:find("NOGROUP", 1, true) then
        log.warn("claiming pending entries failed", { stream = stream, reason = err })
      end
      break
    end
    cursor = res[1]
    local entries = res[2]
    if type(entries) == "table" and #entries > 0 then
      local list = {}
      for _, e in ipairs(entries) do
        if type(e) == "table" and type(e[2]) == "table" then list[#list + 1] = e end
      end
      if #list > 0 then total = total + fn(arg, list) end
    end
    if cursor == "0-0" or type(cursor) ~= "string" then break end
  end
  return total
end

-- gc_consumers: consumers that hold nothing and have not been seen for
-- CONSUMER_GC_IDLE_MS (processes that stopped or died long ago).
function M.gc_consumers(redis, stream, group, own)
  local list = redis:call("XINFO", "CONSUMERS", stream, group)
  if type(list) ~= "table" then return end
  for _, c in ipairs(list) do
    local m = {}
    for i = 1, #c - 1, 2 do m[c[i]] = c[i + 1] end
    if m.name ~= own and tonumber(m.pending) == 0 and (tonumber(m.idle) or 0) > M.CONSUMER_GC_IDLE_MS then
      redis:call("XGROUP", "DELCONSUMER", stream, group, m.name)
    end
  end
end

-- nap(ms) → true after sleeping ms, false when the engine began stopping
-- (it sleeps in short steps so a stop is noticed)
function M.nap(ms)
  local deadline = monotonic() + ms / 1000
  while not stopping() do
    local left = (deadline - monotonic()) * 1000
    if left <= 0 then return true end
    sleep(min(left, 250))
  end
  return false
end

-- claim_loop(st, group, max_inflight, dispatch, on_claimed): the crash-safety
-- loop (see the top of the file).
function M.claim_loop(st, group, max_inflight, dispatch, on_claimed)
  local room = function() return max_inflight - st.inflight end
  local rounds = 0
  while M.nap(st.settings.claim_interval_ms) do
    local n = M.claim(st.redis, st.stream, group, st.consumer, st.settings.claim_idle_ms, dispatch, st, room)
    if n > 0 then on_claimed(n) end
    rounds = rounds + 1
    if core.worker_id == 0 and rounds % 20 == 0 then
      M.gc_consumers(st.redis, st.stream, group, st.consumer)
    end
  end
end

return M
