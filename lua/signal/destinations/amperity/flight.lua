-- signal.destinations.amperity.flight — "one Profile API call per key at a
-- time", and waiting on a spawned task with a deadline.
--
-- Concurrent events of the same new visitor would otherwise each miss the
-- cache and each call Amperity; concurrent lookups for the same key share
-- one in-flight call instead. Two levels:
--
--   * in this worker: a table of in-flight calls keyed by cache key. The
--     first caller (the leader) makes the call; every later caller waits on
--     the leader's box and gets the same answer. No Redis round trip.
--   * across workers and nodes: the leader takes a short Redis lock
--     (SET <lock> <token> NX PX 2000). If another process holds it, the leader
--     polls the cache key until that process has written the answer (or the
--     lock expires), instead of calling Amperity too. The lock only ever saves
--     calls: if it is lost or Redis misbehaves the call is simply made.
--
-- Waiting: the engine has no wait/notify primitive, so `await` polls the
-- box with core.sleep: every loop turn (sleep(0)) for the first 2 ms — a
-- cache hit, a Redis round trip or two, is seen as soon as it lands — then
-- backing off 0.5 → 1 → 2 ms, so a waiter on a slow vendor call costs one
-- timer every 2 ms, not a busy loop. (Measured, bench/enrich: backing off
-- from the first poll cut cache-hit throughput ~8x, because a finished task
-- was noticed only when the waiter's next timer fired.)
local core = require "signal.core"

local monotonic, sleep = core.monotonic, core.sleep
local type, pairs, pcall, tostring = type, pairs, pcall, tostring

local M = {}

M.LOCK_MS = 2000           -- longest a cross-process leader may hold a key
local POLL_CACHE_MS = 10   -- cross-process waiters re-read the cache this often
local SPIN_S = 0.002       -- await polls every loop turn this long, then backs off

local inflight = {}        -- cache key → box { done, value }

-- per-worker counters (specs and metrics): calls led, waits on a leader in
-- this worker, waits on another process's lock
M.stats = { led = 0, joined = 0, lock_waits = 0 }

-- await(box, deadline) → true when box.done, false at the deadline (monotonic s).
function M.await(box, deadline)
  if box.done then return true end
  local spin_until = monotonic() + SPIN_S
  local step = 0
  while not box.done do
    local t = monotonic()
    local left = (deadline - t) * 1000
    if left <= 0 then return false end
    if t >= spin_until then
      if step == 0 then step = 0.5 elseif step < 2 then step = step * 2 end
    end
    sleep(step < left and step or left)
  end
  return true
end

local UNLOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"

-- Waits for another process's leader: the cache key's value, or nil when
-- the lock went away (or expired) without an answer.
local function wait_other(redis, cache_key, lock_key, deadline)
  while monotonic() < deadline do
    sleep(POLL_CACHE_MS)
    local replies = redis:pipeline({ { "GET", cache_key }, { "EXISTS", lock_key } })
    if type(replies) ~= "table" then return nil end
    local v = replies[1]
    if type(v) == "string" then return v end
    if replies[2] ~= 1 then return nil end
  end
  return nil
end

-- once(redis, cache_key, fetch, decode) → value, shared
--
-- fetch() → value, encoded, ttl_ms: makes the call. `encoded` (a string) is
-- written to cache_key for ttl_ms; nil means "do not cache" (transient
-- errors are never cached). decode(encoded) → value turns a cache entry
-- written by another process into the same kind of value.
-- `shared` is true when this caller did not make the call itself.
function M.once(redis, cache_key, fetch, decode)
  local box = inflight[cache_key]
  if box then
    M.stats.joined = M.stats.joined + 1
    M.await(box, monotonic() + M.LOCK_MS / 1000 + 30)   -- the leader is itself bounded
    return box.value, true
  end
  box = {}
  inflight[cache_key] = box

  local lock_key = cache_key .. ":lock"
  local token = core.random_hex(8)
  -- the cache is read again with the lock: a leader that finished between
  -- the caller's cache read and now has already written the answer
  local replies = redis:pipeline({ { "SET", lock_key, token, "NX", "PX", M.LOCK_MS }, { "GET", cache_key } })
  local got, rerr, ok, value, shared
  if type(replies) == "table" then
    got = replies[1]
    if type(got) == "table" then got, rerr = nil, got.err end
    if got == core.null then got = nil end
    if type(replies[2]) == "string" then
      ok, value = pcall(decode, replies[2])
      shared = true
      if got == "OK" then redis:call("EVAL", UNLOCK, 1, lock_key, token) end
    end
  else
    rerr = "redis unavailable"
  end
  if not shared and got == nil and rerr == nil then
    M.stats.lock_waits = M.stats.lock_waits + 1
    -- another process is on it (or Redis answered nil for another reason):
    -- take its answer from the cache, else make the call ourselves
    local enc = wait_other(redis, cache_key, lock_key, monotonic() + M.LOCK_MS / 1000)
    if enc then
      ok, value = pcall(decode, enc)
      shared = true
    end
  end
  if not shared then
    M.stats.led = M.stats.led + 1
    local encoded, ttl
    ok, value, encoded, ttl = pcall(fetch)
    if ok and encoded then
      redis:pipeline({ { "SET", cache_key, encoded, "PX", ttl }, { "EVAL", UNLOCK, 1, lock_key, token } })
    elseif got == "OK" then
      redis:call("EVAL", UNLOCK, 1, lock_key, token)
    end
  end

  inflight[cache_key] = nil
  if not ok then value = { error = "internal error: " .. tostring(value) } end
  box.value = value
  box.done = true
  return value, shared or false
end

-- in_flight() → number of keys with a call in flight in this worker (specs, metrics)
function M.in_flight()
  local n = 0
  for _ in pairs(inflight) do n = n + 1 end
  return n
end

return M
