-- Crash safety: an engine SIGKILLed with 30 deliveries in flight loses
-- nothing. The sandbox holds every ingest request (latency fault) until all
-- 30 are in flight, the engine is killed, the sandbox is reset (so the
-- killed engine's requests, which it never saw answered, are not counted),
-- and a new engine on the same Redis claims the pending entries
-- (XAUTOCLAIM) and delivers every one. At-least-once: duplicates are
-- allowed and counted, and they carry the same message_id.
local H = require "helpers"
local K = require "fixtures.tasks.delivery_kit"
local cjson = require "cjson"
local queue = require "signal.redis.keys"

describe("crash safety", function()
  local sb, redis, first, second

  setup(function()
    H.flush_redis()
    redis = H.redis()
    sb = H.sandbox(K.FIXTURE)
  end)

  teardown(function()
    if first and first:alive() then first:kill() end
    if second then second:stop() end
    if sb then sb:stop() end
    if redis then redis:close() end
  end)

  it("delivers all 30 events in flight when the engine is SIGKILLed", function()
    local cfg = K.config({ dk_crash = { K.integ(sb) } })
    first = H.engine(cfg)
    K.fault(sb, { prefix = "/prof/events/esm-demo", latency_ms = 8000 })
    local mids = K.send_many(first, "dk_crash", 30)
    -- every one of the 30 is now a request the sandbox is holding
    H.eventually(function()
      local st = cjson.decode(assert(H.request("GET", sb.url .. "/_sandbox/stats")).body)
      return st.in_flight == 30, st.in_flight .. " in flight"
    end, 15, "30 requests in flight")
    local pending = redis:call("XPENDING", queue.delivery("dk_crash", "amperity"), queue.DELIVERY_GROUP)
    assert.equal(30, pending[1])

    first:kill()
    K.reset(sb)   -- clears the fault; the held requests of the dead engine are not recorded

    cfg.listen = nil
    cfg.delivery = cfg.delivery or {}
    cfg.delivery.claim_idle_ms = 1000
    second = K.engine(cfg)
    local by = K.wait_delivered(sb, mids, "esm-demo", 30)
    local distinct, total = 0, 0
    for _, m in ipairs(mids) do
      distinct = distinct + 1
      total = total + #by[m]
      for _, r in ipairs(by[m]) do
        assert.equal(202, r.status)
        assert.equal(m, r.json.message_id)
      end
    end
    assert.equal(30, distinct)
    assert.is_true(total >= 30)
    print(("\n  crash safety: 30 distinct message ids delivered, %d duplicate(s)"):format(total - 30))
    -- and nothing is left behind
    H.eventually(function()
      local p = redis:call("XPENDING", queue.delivery("dk_crash", "amperity"), queue.DELIVERY_GROUP)
      return p[1] == 0, p[1] .. " still pending"
    end, 10, "no pending deliveries")
    assert.equal(0, redis:call("XLEN", queue.dlq("dk_crash", "amperity")))
  end)

  it("processes raw events a killed processor had read but not finished", function()
    -- entries read by a consumer that no longer exists, never acknowledged
    local pk = "dk_crash_raw"
    local raw = queue.raw(pk)
    redis:call("XGROUP", "CREATE", raw, queue.RAW_GROUP, "0", "MKSTREAM")
    local mids = {}
    for i = 1, 5 do
      mids[i] = "mid-raw-" .. i .. "-" .. require("signal.core").random_hex(3)
      local ev = { type = "track", event = "Product Viewed", message_id = mids[i], anonymous_id = "a",
                   canonical_id = "dfid_crash", pipeline_key = pk, properties = { product_id = "SKU" },
                   timestamp = "2026-04-17T15:37:10.484Z" }
      assert(redis:call("XADD", raw, "*", "ev", cjson.encode(ev), "in", "{}"))
    end
    local read = redis:call("XREADGROUP", "GROUP", queue.RAW_GROUP, "dead-node-w0", "COUNT", 10,
      "STREAMS", raw, ">")
    assert.equal(5, #read[1][2])

    local cfg = K.config({ [pk] = { K.integ(sb) } })
    cfg.delivery = cfg.delivery or {}
    cfg.delivery.claim_idle_ms = 200
    local engine = K.engine(cfg)
    local by = K.wait_delivered(sb, mids, "esm-demo", 20)
    engine:stop()
    for _, m in ipairs(mids) do assert.equal(202, by[m][1].status) end
    assert.equal(0, redis:call("XPENDING", raw, queue.RAW_GROUP)[1])
  end)
end)
