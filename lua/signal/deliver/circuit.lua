-- signal.deliver.circuit — notices when a destination's vendor fails and
-- when it is healthy again, so a backlog of deferred retries drains as soon
-- as the vendor is back instead of waiting out each retry's backoff.
--
--   circuit.failed(ds)      an attempt failed in a way worth retrying: open
--   circuit.delivered(ds)   an attempt was delivered: close; whoever closes
--                           it pulls every scheduled retry forward to now
--   circuit.tick(ds)        from the mover loop: while open, at most one
--                           probe per PROBE_EVERY_MS across every worker and
--                           node — the earliest scheduled retry is pulled
--                           forward, so its attempt tells whether the vendor
--                           is back
--   circuit.opened_at(redis, pk, name) → ms the circuit opened, or nil
--
-- The state is in Redis (signal:{pk}:circuit:<integration>, holding the
-- time it opened), so every worker and node agrees; each keeps a local hint
-- (ds.circuit_open) only to skip Redis on the common, healthy path. Pulled
-- retries go through the delivery stream like any other entry, so the
-- backlog drains at the destination's rate limit.
local core = require "signal.core"
local queue = require "signal.redis.keys"
local log = require "signal.observe.log"
local redis_script = require "signal.redis.script"

local type, floor, tonumber = type, math.floor, tonumber
local now, monotonic = core.now, core.monotonic

local M = {}

M.PROBE_EVERY_MS = 10000
M.PULL_BATCH = 1000

-- KEYS[1] retry ZSET; ARGV[1] now (ms), ARGV[2] max → members moved to now
M.PULL_SCRIPT = [[
local later = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(later) do redis.call('ZADD', KEYS[1], 'XX', ARGV[1], m) end
return #later
]]
local PULL = redis_script.new(M.PULL_SCRIPT)

-- KEYS[1] retry ZSET, KEYS[2] probe lock; ARGV[1] now (ms), ARGV[2] lock ms
-- → 1 when this caller probes (the earliest retry is due now), else 0
M.PROBE_SCRIPT = [[
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', tonumber(ARGV[2])) then return 0 end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[1] and tonumber(first[2]) > tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], 'XX', ARGV[1], first[1])
end
return 1
]]
local PROBE = redis_script.new(M.PROBE_SCRIPT)

local function ms() return floor(now() * 1000) end

function M.opened_at(redis, pk, name)
  return tonumber((redis:call("GET", queue.circuit(pk, name))))
end

function M.failed(ds)
  if ds.circuit_open then return end
  ds.circuit_open = true
  if ds.redis:call("SET", queue.circuit(ds.pk, ds.name), ms(), "NX") then
    log.warn("destination failing: retries deferred until it answers again",
      { pipeline = ds.pk, integration = ds.name })
  end
end

-- pull_all(ds) → retries pulled forward
local function pull_all(ds)
  local total = 0
  while true do
    local n = PULL:call(ds.redis, 1, ds.retry, ms(), M.PULL_BATCH)
    if type(n) ~= "number" then break end
    total = total + n
    if n < M.PULL_BATCH then break end
  end
  return total
end

function M.delivered(ds)
  if not ds.circuit_open then return end
  ds.circuit_open = false
  if ds.redis:call("DEL", queue.circuit(ds.pk, ds.name)) == 1 then
    local n = pull_all(ds)
    log.info("destination answering again: scheduled retries pulled forward",
      { pipeline = ds.pk, integration = ds.name, retries = n })
  end
end

function M.tick(ds)
  local t = monotonic()
  if t - (ds.circuit_checked or 0) < (ds.probe_every_ms or M.PROBE_EVERY_MS) / 1000 then return end
  ds.circuit_checked = t
  ds.circuit_open = ds.redis:call("EXISTS", queue.circuit(ds.pk, ds.name)) == 1
  if ds.circuit_open then
    PROBE:call(ds.redis, 2, ds.retry, queue.circuit_probe(ds.pk, ds.name), ms(),
               ds.probe_every_ms or M.PROBE_EVERY_MS)
  end
end

return M
