-- signal.observe.metrics against a real Redis: histograms are recorded as one
-- count per bucket and turned into cumulative Prometheus series at flush.
local H = require "helpers"
local core = require "signal.core"
local metrics = require "signal.observe.metrics"
local queue = require "signal.redis.keys"

describe("metrics", function()
  local redis

  before_each(function()
    redis = assert(core.redis.connect(H.redis_url))
    H.flush_redis()
    metrics._reset()
  end)

  local function stored()
    local list = assert(redis:call("HGETALL", queue.metrics()))
    local t = {}
    for i = 1, #list, 2 do t[list[i]] = tonumber(list[i + 1]) end
    return t
  end

  it("flushes a histogram as cumulative buckets, +Inf, count and sum", function()
    local l = { route = "/x" }
    for _, v in ipairs({ 0.0005, 0.003, 0.2, 50, 0.001 }) do
      metrics.observe("signal_test_seconds", l, v)
    end
    assert.is_true(metrics.flush(redis))
    local m = stored()
    local function b(le) return m['signal_test_seconds_bucket{route="/x",le="' .. le .. '"}'] end
    assert.equal(2, b("0.001"))      -- 0.0005 and 0.001 (le is inclusive)
    assert.equal(2, b("0.0025"))
    assert.equal(3, b("0.005"))
    assert.equal(3, b("0.1"))
    assert.equal(4, b("0.25"))
    assert.equal(4, b("30"))          -- 50 is above every finite bucket
    assert.equal(5, b("+Inf"))
    assert.equal(5, m['signal_test_seconds_count{route="/x"}'])
    assert.near(50.2045, m['signal_test_seconds_sum{route="/x"}'], 1e-9)
    -- a second flush adds only what was observed since
    metrics.observe("signal_test_seconds", l, 0.002)
    assert.is_true(metrics.flush(redis))
    m = stored()
    assert.equal(2, b("0.001"))
    assert.equal(3, b("0.0025"))
    assert.equal(6, b("+Inf"))
  end)

  it("adds counters per labels table and keeps deltas when Redis fails", function()
    local l = { pipeline = "p1" }
    metrics.inc("events_received_total", l, 2)
    metrics.inc("events_received_total", l)
    metrics.inc("events_received_total", { pipeline = "p2" })
    local down = assert(core.redis.connect("redis://127.0.0.1:1/0", { timeout_ms = 200 }))
    assert.is_nil(metrics.flush(down))
    assert.is_true(metrics.flush(redis))
    local m = stored()
    assert.equal(3, m['signal_events_received_total{pipeline="p1"}'])
    assert.equal(1, m['signal_events_received_total{pipeline="p2"}'])
  end)

  it("keeps every delta while Redis refuses writes (out of memory), and flushes them after", function()
    local full = H.redis_server()
    local r = assert(core.redis.connect(full.url))
    finally(function() r:close(); full:stop() end)
    -- a Redis over its memory limit refuses HINCRBY/HSET with -OOM
    assert(r:call("SET", "filler", string.rep("x", 4 * 1024 * 1024)))
    assert(r:call("CONFIG", "SET", "maxmemory-policy", "noeviction"))
    assert(r:call("CONFIG", "SET", "maxmemory", "1mb"))
    metrics.inc("events_rejected_total", { reason = "redis_unavailable" }, 7)
    metrics.observe("signal_test_seconds", { route = "/y" }, 0.2)
    local ok, err = metrics.flush(r)
    assert.is_nil(ok)
    assert.matches("OOM", err)
    assert.is_nil(r:call("HGET", queue.metrics(), 'signal_events_rejected_total{reason="redis_unavailable"}'))
    -- Redis has room again: the same numbers arrive, once
    assert(r:call("CONFIG", "SET", "maxmemory", "0"))
    assert.is_true(metrics.flush(r))
    assert.is_true(metrics.flush(r))
    assert.equal("7", r:call("HGET", queue.metrics(), 'signal_events_rejected_total{reason="redis_unavailable"}'))
    assert.equal("1", r:call("HGET", queue.metrics(), 'signal_test_seconds_count{route="/y"}'))
  end)
end)
