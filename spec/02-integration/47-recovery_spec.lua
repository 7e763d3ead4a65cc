-- Recovery after a vendor outage, end to end (real engine, real Redis, the
-- Amperity sandbox): while the vendor fails, the destination's circuit is
-- open and /metrics and /v1/admin/status say how far behind it is; once the
-- vendor answers again, the deferred retries are pulled forward instead of
-- waiting out their backoff. A payload still failing after the give-up
-- window is dead-lettered, and a replay gives it a fresh window. Timing is
-- asserted only as causality: a retry is due at a recorded time, and the
-- delivery happened before it.
local H = require "helpers"
local K = require "fixtures.tasks.delivery_kit"
local cjson = require "cjson"
local queue = require "signal.redis.keys"
local now = require("signal.core").now

-- waits until n payloads of the retry ZSET `key` are due at least `ahead_s`
-- from now → { [message_id] = due time (s) } of those
local function wait_deferred(redis, key, n, ahead_s)
  return H.eventually(function()
    local got = redis:call("ZRANGEBYSCORE", key, math.floor((now() + ahead_s) * 1000), "+inf", "WITHSCORES")
    if type(got) ~= "table" or #got < 2 * n then return false, "deferred: " .. (#(got or {}) / 2) end
    local due = {}
    for i = 1, #got, 2 do due[cjson.decode(got[i]).m] = tonumber(got[i + 1]) / 1000 end
    return due
  end, 20, n .. " deferred retries")
end

describe("recovery after a vendor outage", function()
  local sb, engine, redis

  setup(function()
    H.flush_redis()
    redis = H.redis()
    sb = H.sandbox(K.FIXTURE)
    -- the first retry is 30 s out: only the circuit can bring it sooner
    engine = H.engine(K.config({ rc_outage = { K.integ(sb, { event_stream_id = "esm-outage" }) } },
      { delivery = { first_retry_ms = 30000, max_retry_ms = 600000, probe_every_ms = 300 } }))
  end)

  teardown(function()
    if engine then engine:stop() end
    if sb then sb:stop() end
    if redis then redis:close() end
  end)

  it("shows the backlog while the vendor fails and drains it as soon as the vendor is back", function()
    K.reset(sb)
    K.stream_mode(sb, "esm-outage", "accept")
    K.fault(sb, { prefix = "/prof/events/esm-outage", status = 503 })
    local mids = K.send_many(engine, "rc_outage", 12)
    -- all but the one a probe may have just pulled forward are due ≥ 20 s out
    local due = wait_deferred(redis, queue.retry("rc_outage", "amperity"), #mids - 1, 20)
    H.eventually(function() return redis:call("ZCARD", queue.retry("rc_outage", "amperity")) == #mids end,
      10, "every payload scheduled")

    -- failing: the circuit is open and every number says so
    assert.is_truthy(redis:call("GET", queue.circuit("rc_outage", "amperity")))
    local l = '{integration="amperity",pipeline="rc_outage"}'
    assert.equal(#mids, K.metric(engine, "signal_delivery_backlog" .. l))
    assert.equal(1, K.metric(engine, "signal_delivery_failing" .. l))
    assert.is_true(K.metric(engine, "signal_delivery_oldest_pending_seconds" .. l) > 0)
    local res, st = K.admin(engine, "GET", "/v1/admin/status")
    assert.equal(200, res.status)
    local row = st.pipelines[1].integrations[1]
    assert.equal(#mids, row.backlog)
    assert.equal(#mids, row.retry_scheduled)
    assert.is_number(row.failing_since)
    assert.is_true(row.oldest_pending_s > 0)
    assert.is_nil(row.drain_estimate_s)   -- unknown while the vendor fails

    -- the vendor is back: a probe succeeds and every deferred retry follows
    local latest_due = 0
    for _, t in pairs(due) do latest_due = math.max(latest_due, t) end
    K.reset(sb)
    K.stream_mode(sb, "esm-outage", "accept")
    local by = K.wait_status(sb, mids, "esm-outage", 202, 25)
    for m, t in pairs(due) do
      for _, r in ipairs(by[m]) do
        if r.status == 202 then
          assert.is_true(r.time < t, m .. " waited out its backoff instead of being pulled forward")
        end
      end
    end
    assert.is_true(now() < latest_due, "the backlog drained only when its retries came due")
    H.eventually(function()
      return redis:call("ZCARD", queue.retry("rc_outage", "amperity")) == 0
        and redis:call("ZCARD", queue.age("rc_outage", "amperity")) == 0
        and redis:call("EXISTS", queue.circuit("rc_outage", "amperity")) == 0
    end, 10, "retry schedule, age index and circuit cleared")
    assert.equal(0, K.metric(engine, "signal_delivery_backlog" .. l))
    assert.equal(0, K.metric(engine, "signal_delivery_failing" .. l))
    assert.matches("destination answering again: scheduled retries pulled forward", engine:output())
    res, st = K.admin(engine, "GET", "/v1/admin/status")
    assert.equal(200, res.status)
    row = st.pipelines[1].integrations[1]
    assert.equal(0, row.backlog)
    assert.is_nil(row.failing_since)
    assert.equal(0, row.drain_estimate_s)
  end)
end)

describe("the give-up window", function()
  local sb, engine, redis

  setup(function()
    H.flush_redis()
    redis = H.redis()
    sb = H.sandbox(K.FIXTURE)
    engine = H.engine(K.config({ rc_window = { K.integ(sb, { event_stream_id = "esm-window" }) } },
      { delivery = { first_retry_ms = 200, max_retry_ms = 400, give_up_after_ms = 2000,
                     probe_every_ms = 5000 } }))
  end)

  teardown(function()
    if engine then engine:stop() end
    if sb then sb:stop() end
    if redis then redis:close() end
  end)

  it("dead-letters a payload still failing after the window, and a replay starts a fresh one", function()
    K.reset(sb)
    K.stream_mode(sb, "esm-window", "accept")
    K.fault(sb, { prefix = "/prof/events/esm-window", status = 503 })
    local mid = K.send(engine, "rc_window")
    local dl = H.eventually(function()
      local list = K.xrange(redis, queue.dlq("rc_window", "amperity"))
      return #list > 0 and list[1]
    end, 20, "a dead letter")
    assert.equal(mid, dl.m)
    assert.equal("exhausted", dl.k)
    assert.matches("gave up 2 s after it was accepted %(%d+ attempts%)", dl.e)
    -- the waits are capped at max_retry_ms: many attempts fit in the window
    assert.is_true(tonumber(dl.a) >= 4, dl.a .. " attempts")
    assert.equal(0, redis:call("ZCARD", queue.age("rc_window", "amperity")))

    -- replayed after the window: a failure is retried (then delivered), not
    -- given up at once
    K.reset(sb)
    K.stream_mode(sb, "esm-window", "accept")
    K.fault(sb, { prefix = "/prof/events/esm-window", status = 503, times = 1 })
    local res, body = K.admin(engine, "POST", "/v1/admin/dlq/replay?pipeline=rc_window&integration=amperity")
    assert.equal(200, res.status, res.body)
    assert.equal(1, body.replayed)
    local by = K.wait_status(sb, { mid }, "esm-window", 202, 15)
    assert.same({ 503, 202 }, { by[mid][1].status, by[mid][2].status })
    assert.equal(0, redis:call("XLEN", queue.dlq("rc_window", "amperity")))
  end)
end)
