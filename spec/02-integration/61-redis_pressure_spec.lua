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

describe("live events in bytes", function()
  local redis, r, small, big
  local PK_SMALL, PK_BIG = "dk_test_live_small", "dk_test_live_big"

  setup(function()
    redis = H.redis_server()
    r = assert(core.redis.connect(redis.url))
    small = H.engine({ redis = redis.url, workers = 1, live_events_max_bytes = 20000, pipelines = { { key = PK_SMALL } } })
    big = H.engine({ redis = redis.url, workers = 1, pipelines = { { key = PK_BIG } } })
  end)
  teardown(function()
    if small then small:stop() end
    if big then big:stop() end
    if r then r:close() end
    if redis then redis:stop() end
  end)

  local function send(eng, pk, id, pad)
    local res = H.post(eng, "/v1/t", cjson.encode({ type = "track", event = "Viewed", anonymousId = "a-3",
      messageId = id, properties = { pad = string.rep("p", pad) } }), { ["X-Pipeline-Key"] = pk })
    assert.equal(200, res.status, res.body)
  end

  -- what the live records of pk take: ids listed, their bytes (field names
  -- and values, as stored), the recorded sizes and total
  local function usage(pk)
    local list = "signal:{" .. pk .. "}:live"
    local ids = r:call("LRANGE", list, 0, -1)
    local bytes = 0
    for _, id in ipairs(ids) do
      for _, v in ipairs(r:call("HGETALL", list .. ":" .. id)) do bytes = bytes + #v end
    end
    local sizes = r:call("HGETALL", "signal:{" .. pk .. "}:livesize")
    local sum, n = 0, 0
    for i = 2, #sizes, 2 do sum, n = sum + tonumber(sizes[i]), n + 1 end
    return { ids = ids, bytes = bytes, sizes = n, sum = sum,
             total = tonumber(r:call("GET", "signal:{" .. pk .. "}:livebytes")) }
  end

  it("keeps a pipeline's live records within live_events_max_bytes, dropping the oldest", function()
    for i = 1, 40 do send(small, PK_SMALL, "small-" .. i, 2000) end
    local u = H.eventually(function()
      local x = usage(PK_SMALL)
      return x.ids[1] == "small-40" and x
    end, 15, "the newest event recorded")
    assert.is_true(#u.ids >= 2 and #u.ids < 20, #u.ids .. " records kept")
    assert.is_true(u.bytes <= 20000, u.bytes .. " bytes kept")
    assert.equal(u.bytes, u.total)
    assert.equal(u.bytes, u.sum)
    assert.equal(#u.ids, u.sizes)
    -- the dropped records are gone, not left for their TTL
    assert.equal(0, r:call("EXISTS", "signal:{" .. PK_SMALL .. "}:live:small-1"))
  end)

  it("takes at most 5% of Redis's maxmemory", function()
    local info = r:call("INFO", "memory")
    local used = tonumber(info:match("\nused_memory:(%d+)"))
    local maxmemory = math.max(8 * 1024 * 1024, used * 3)
    assert(r:call("CONFIG", "SET", "maxmemory", tostring(maxmemory)))
    local budget = math.floor(maxmemory * 0.05)
    local n = 0
    local u = H.eventually(function()
      n = n + 1
      send(big, PK_BIG, "big-" .. n, 30000)
      local x = usage(PK_BIG)
      return n * 30000 > 2 * budget and x.ids[1] == "big-" .. n and x.total and x.total <= budget and x
    end, 30, "live records within 5% of maxmemory")
    assert.is_true(#u.ids < n / 2, #u.ids .. " of " .. n .. " kept")
    assert.equal(u.bytes, u.total)
    assert(r:call("CONFIG", "SET", "maxmemory", "0"))
  end)
end)
