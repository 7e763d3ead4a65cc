-- Redis at its memory limit (maxmemory with noeviction): it still answers
-- PING and reads but refuses every write. An engine on such a Redis must say
-- so — /healthz 503 naming the cause — and must not lose count of what it
-- refused: /metrics shows the Redis errors and the rejected events while
-- Redis refuses the metrics' own writes, and nothing is lost once Redis has
-- room again. A private redis-server, a real engine.
local H = require "helpers"
local core = require "signal.core"
local cjson = require "cjson"

local PK = "dk_test_pressure"

describe("an engine whose Redis is out of memory", function()
  local redis, r, eng

  setup(function()
    redis = H.redis_server()
    r = assert(core.redis.connect(redis.url))
    eng = H.engine({ redis = redis.url, workers = 1, pipelines = { { key = PK } } })
  end)
  teardown(function()
    if eng then eng:stop() end
    if r then r:close() end
    if redis then redis:stop() end
  end)

  local function metric(body, series)
    local v = body:match(series:gsub("[%(%)%.%%%+%-%*%?%[%]%^%$]", "%%%0") .. " (%S+)")
    return tonumber(v)
  end

  it("answers /healthz 503 redis_oom, counts what it refused, and recovers", function()
    local ev = { type = "track", event = "Viewed", anonymousId = "a-1" }
    local ok = H.post(eng, "/v1/t", cjson.encode(ev), { ["X-Pipeline-Key"] = PK })
    assert.equal(200, ok.status, ok.body)
    assert.equal(200, assert(H.request("GET", eng.url .. "/healthz")).status)

    assert(r:call("SET", "filler", string.rep("x", 4 * 1024 * 1024)))
    assert(r:call("CONFIG", "SET", "maxmemory-policy", "noeviction"))
    assert(r:call("CONFIG", "SET", "maxmemory", "1mb"))

    for i = 1, 3 do
      ev.messageId = "oom-" .. i
      local res = H.post(eng, "/v1/t", cjson.encode(ev), { ["X-Pipeline-Key"] = PK })
      assert.equal(503, res.status, res.body)
      -- the client retries either way; whoever reads the answer learns the cause
      local err = cjson.decode(res.body).error
      assert.equal("REDIS_OOM", err.code)
      assert.matches("Redis is out of memory", err.message)
      assert.matches("raise maxmemory", err.message)
    end
    local health = assert(H.request("GET", eng.url .. "/healthz"))
    assert.equal(503, health.status)
    local hb = cjson.decode(health.body)
    assert.equal("redis_oom", hb.status)
    assert.equal("REDIS_OOM", hb.error.code)
    assert.matches("memory limit", hb.error.message)

    -- /metrics while Redis refuses the metrics' own writes
    local m = assert(H.request("GET", eng.url .. "/metrics"))
    assert.equal(200, m.status, m.body)
    assert.is_true((metric(m.body, 'signal_redis_errors_total{kind="oom"}') or 0) >= 1, m.body)
    assert.is_true((metric(m.body, 'signal_events_rejected_total{reason="redis_oom"}') or 0) >= 3, m.body)

    -- room again: healthy, and the counts reach Redis, not one lost
    assert(r:call("CONFIG", "SET", "maxmemory", "0"))
    H.eventually(function()
      return assert(H.request("GET", eng.url .. "/healthz")).status == 200
    end, 10, "/healthz 200 once Redis takes writes")
    H.eventually(function()
      local v = r:call("HGET", "signal:metrics", 'signal_events_rejected_total{reason="redis_oom"}')
      return tonumber(v) and tonumber(v) >= 3
    end, 10, "the rejected events counted in Redis")
  end)

  it("drops live events first when Redis nears its limit, and records them again after", function()
    local live = "signal:{" .. PK .. "}:live"
    local function send(id)
      local res = H.post(eng, "/v1/t", cjson.encode({ type = "track", event = "Viewed", anonymousId = "a-2",
                                                      messageId = id }), { ["X-Pipeline-Key"] = PK })
      assert.equal(200, res.status, res.body)
    end
    local function recorded(id)
      return r:call("EXISTS", live .. ":" .. id) == 1
    end
    assert(r:call("DEL", "filler"))
    send("warm-1")
    H.eventually(function() return recorded("warm-1") end, 10, "the live record of an event")

    -- 85 % of maxmemory in use: writes still succeed, live events give way
    local info = r:call("INFO", "memory")
    local used = tonumber(info:match("\nused_memory:(%d+)"))
    assert(r:call("CONFIG", "SET", "maxmemory", tostring(math.floor(used / 0.85))))
    H.eventually(function() return r:call("EXISTS", live) == 0 and not recorded("warm-1") end, 10,
      "the live records cleared")
    send("pressed-1")
    H.eventually(function()
      return #H.raw_entries(PK, redis.url) == 0   -- processed (and acknowledged)
    end, 10, "the event processed")
    assert.is_false(recorded("pressed-1"))

    assert(r:call("CONFIG", "SET", "maxmemory", "0"))
    H.eventually(function()
      send("after-" .. core.random_hex(3))
      return r:call("LLEN", live) > 0
    end, 15, "live events recorded again once Redis has room")
  end)
end)
