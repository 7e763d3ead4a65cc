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
end)
