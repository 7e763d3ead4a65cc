-- The per-tenant rate limit, shared by every worker through Redis: with
-- rate_limit_per_tenant = 20 and 60 events queued at once over two workers
-- and two pipelines of the same tenant, the requests the sandbox received
-- never exceed the limit within any one-second window (plus the bucket's
-- burst and a few requests of transit slack). Checked on the sandbox's own
-- arrival timestamps: what Amperity would see, not how fast our code ran.
local H = require "helpers"
local K = require "fixtures.tasks.delivery_kit"
local ratelimit = require "signal.deliver.ratelimit"

describe("per-tenant rate limit", function()
  local sb, engine
  local RATE = 20

  setup(function()
    H.flush_redis()
    sb = H.sandbox(K.FIXTURE)
    engine = H.engine(K.config({
      dk_rl_a = { K.integ(sb) },
      dk_rl_b = { K.integ(sb, { event_stream_id = "esm-2VP6va3Zn" }) },
    }, { delivery = { rate_limit_per_tenant = RATE, first_retry_ms = 100, max_retry_ms = 1600, attempts = 5 } }))
  end)

  teardown(function()
    if engine then engine:stop() end
    if sb then sb:stop() end
  end)

  it("keeps every one-second window of deliveries within the tenant's limit", function()
    local mids = {}
    for _ = 1, 30 do
      mids[#mids + 1] = K.send(engine, "dk_rl_a")
      mids[#mids + 1] = K.send(engine, "dk_rl_b")
    end
    K.wait_delivered(sb, mids, nil, 30)
    local times = {}
    for _, r in ipairs(K.requests(sb)) do times[#times + 1] = r.time end
    table.sort(times)
    assert.equal(60, #times)
    -- slack: a token is taken when a request leaves; a busy machine can delay
    -- a few in transit so they land together (without the limit all 60 land
    -- within a fraction of a second, so this still proves the limit)
    local allowed = RATE + ratelimit.burst(RATE) + 5
    local worst = 0
    for i = 1, #times do
      local n = 0
      for j = i, #times do
        if times[j] - times[i] < 1.0 then n = n + 1 else break end
      end
      if n > worst then worst = n end
    end
    print(("\n  rate limit: at most %d requests in any 1 s window (limit %d/s, burst %d)"):format(worst, RATE, ratelimit.burst(RATE)))
    assert.is_true(worst <= allowed, worst .. " requests within one second (limit " .. RATE .. ")")
    -- and the limit is what spread them: 60 requests at 20/s take ~3 s
    assert.is_true(times[#times] - times[1] >= (60 - allowed) / RATE)
  end)
end)
