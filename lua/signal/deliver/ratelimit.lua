-- signal.deliver.ratelimit — the request rate limit of vendor deliveries
-- (vendors cap requests per tenant or account), shared by every worker of
-- every node through one Redis token bucket per rate-limit key (the
-- destination says what its key is: a tenant, an account, a host).
--
--   local lim = ratelimit.get(redis, key, rate_per_s)
--   ratelimit.acquire(lim, want)   -- blocks (yields) until one token is ours
--
-- Why a token bucket with a small burst: the limit is about any one-second
-- window, and a fixed per-second counter lets 2x the rate through across a
-- window boundary. A bucket holding at most `burst` tokens (a tenth of a
-- second's worth) refilled at `rate` lets at most burst + rate requests
-- through in any second, whoever asks. The bucket lives in a Redis hash
-- updated by one Lua script (atomic across nodes); the script uses Redis's
-- own clock so nodes with skewed clocks still share one timeline.
--
-- Why batches: a Redis round trip per request would cost as much as the
-- request bookkeeping itself, so a worker takes up to `want` tokens at once
-- (the entries it is about to send, at most `burst`) and spends them
-- locally. Tokens are taken only for work already in hand, so they are used
-- within the same loop turn and never hoarded.
local core = require "signal.core"
local queue = require "signal.redis.keys"
local redis_script = require "signal.redis.script"

local floor, max, min = math.floor, math.max, math.min

local M = {}

-- KEYS[1] bucket; ARGV: rate (tokens/s), burst, want → { granted, wait_ms }
M.SCRIPT = [[
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(b[1]), tonumber(b[2])
if not tokens or not ts then tokens, ts = burst, now end
if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate / 1000) end
local got = math.min(want, math.floor(tokens))
if got < 0 then got = 0 end
tokens = tokens - got
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts', string.format('%.3f', now))
redis.call('PEXPIRE', KEYS[1], 60000)
local wait = 0
if got < want then wait = math.ceil((1 - tokens) * 1000 / rate) end
if wait < 1 and got < want then wait = 1 end
return { got, wait }
]]

local BUCKET = redis_script.new(M.SCRIPT)
local limiters = {}    -- rate-limit key -> limiter (per worker)

local function script_call(redis, key, rate, burst, want)
  return BUCKET:call(redis, 1, key, rate, burst, want)
end

-- burst(rate) → the bucket size: a tenth of a second of requests, at least 1.
function M.burst(rate)
  return max(1, floor(rate / 10))
end

function M.get(redis, key, rate)
  local lim = limiters[key]
  if lim and lim.rate == rate then return lim end
  lim = { redis = redis, key = queue.ratelimit(key), rate = rate, burst = M.burst(rate),
          tokens = 0, waits = 0 }
  limiters[key] = lim
  return lim
end

-- acquire(lim, want) → true. Takes one token, fetching up to `want` (the
-- caller's batch size) when none are left. Yields while the bucket is empty.
-- When Redis is unreachable it waits too (sending without the limit could
-- breach the vendor's quota on recovery bursts); callers hold no locks.
function M.acquire(lim, want)
  if lim.tokens > 0 then
    lim.tokens = lim.tokens - 1
    return true
  end
  want = min(max(want or 1, 1), lim.burst)
  while true do
    local res = script_call(lim.redis, lim.key, lim.rate, lim.burst, want)
    if res then
      local got, wait = res[1], res[2]
      if got > 0 then
        lim.tokens = lim.tokens + got - 1
        return true
      end
      lim.waits = lim.waits + 1
      core.sleep(max(1, min(wait, 1000)))
    else
      core.sleep(100)
    end
    if core.stopping() then return false end
  end
end

return M
