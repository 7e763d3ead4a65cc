-- The collector (engine/collect) under hard conditions: random mixes of cookies,
-- forwarding chains, https claims, origins and user agents on every kind of
-- route; repeated messageIds; Redis stopped, stalled past the command
-- timeout, or failing a command inside the transaction.
--
-- The random mixes are table-driven: every header value comes with what it
-- must do (the visitor id it names or a fresh one, the client address, a
-- Secure cookie, a CORS grant), so each combination's answer and stored
-- event are known in advance.
local H = require "helpers"
local cjson = require "cjson"
local core = require "signal.core"

local PK = "dk_lane"
local ORIGIN = "https://www.example.com"

local function db_url(n) return (H.redis_url:gsub("/%d+$", "")) .. "/" .. n end
local REDIS = db_url(7)

local function uid() return "one-" .. core.random_hex(8) end

local post = H.post

-- metric(engine, series) → its value in /metrics, or 0
local function metric(e, series)
  local res = assert(H.request("GET", e.url .. "/metrics"))
  for line in res.body:gmatch("[^\n]+") do
    local name, v = line:match("^(%S+) (%S+)$")
    if name == series then return tonumber(v) end
  end
  return 0
end

describe("collector, one path", function()
  local E

  setup(function()
    local r = assert(core.redis.connect(REDIS))
    assert(r:call("FLUSHDB"))
    r:close()
    H.park_processor(PK, REDIS)
    H.park_processor("dk_lane_b", REDIS)
    -- the test client (127.0.0.1) is a trusted proxy, 10.1.0.0/16 an inner one
    E = H.engine({ redis = REDIS, pipelines = { { key = PK, origins = { ORIGIN } }, { key = "dk_lane_b", origins = {} } },
                   trusted_proxies = { "127.0.0.1", "10.1.0.0/16" }, cookie_domain = "example.com" })
  end)

  teardown(function()
    if E then E:stop() end
  end)

  before_each(function()
    H.clear_raw(PK, REDIS)
    H.clear_raw("dk_lane_b", REDIS)
  end)

  it("applies the cookie, address, https and origin rules to random mixes, on every kind of route", function()
    local rnd = math.random
    math.randomseed(20261126)
    local function pick(t) return t[rnd(#t)] end
    local NONE = {}
    local MINT = {}
    -- value → what it must do
    local cookies = {
      { NONE, MINT }, { "_dfdid=dfid_abc", "dfid_abc" }, { '_dfdid="dfid_q"', "dfid_q" }, { "_dfdid=", MINT },
      { "_dfdid=a b", MINT }, { "_dfdid=" .. ("x"):rep(129), MINT }, { "_dfdid=" .. ("x"):rep(128), ("x"):rep(128) },
      { "a=1; _dfdid=dfid_2; b=3", "dfid_2" }, { "x_dfdid=no; _dfdid=dfid_3", "dfid_3" },
      { " _dfdid = dfid_4 ;", MINT }, { '_dfdid="', MINT }, { "foo=bar", MINT },
      { "_dfdid=dfid_5;_dfdid=dfid_6", "dfid_5" }, { "_DFDID=dfid_7", MINT },
    }
    local xffs = {
      { NONE, "127.0.0.1" }, { "203.0.113.7", "203.0.113.7" }, { "203.0.113.7, 10.1.0.9", "203.0.113.7" },
      { "10.1.0.9, 10.1.2.3", "10.1.0.9" }, { "[2001:db8::1]:8080", "2001:db8::1" },
      { "198.51.100.1:443", "198.51.100.1" }, { "fe80::1%eth0, 10.1.2.2", "fe80::1" },
      { "unknown", "127.0.0.1" }, { " , 192.0.2.4", "192.0.2.4" }, { "010.1.2.3", "010.1.2.3" },
      { "192.0.2.9 , 10.1.9.9 ,", "192.0.2.9" }, { "::ffff:10.1.0.1", "::ffff:10.1.0.1" },
      { "2001:db8::/32", "127.0.0.1" }, { "1.2.3", "127.0.0.1" }, { "", "127.0.0.1" },
      { "203.0.113.9, 198.51.100.1, 10.1.0.5", "198.51.100.1" },
    }
    local xfps = { { NONE, false }, { "https", true }, { "HTTPS", true }, { "http", false },
                   { " https , http", true }, { "https;x", false }, { "", false } }
    local origins = { { NONE, false }, { ORIGIN, true }, { "HTTPS://WWW.EXAMPLE.COM", true }, { ORIGIN .. ":443", true },
                      { "http://www.example.com", false }, { "https://www.example.com:8443", false },
                      { "null", false }, { "https://evil.example", false } }
    -- (an empty value makes the client send no User-Agent at all)
    local uas = { NONE, "Mozilla/5.0", 'quote" and \\ backslash', "" }
    local routes = {
      { "/v1/t", false }, { "/v1/p", false }, { "/v1/track", true }, { "/v1/batch", false }, { "/v1/events", true },
    }
    for i = 1, 120 do
      local h, c, x, p, o, ua = {}, pick(cookies), pick(xffs), pick(xfps), pick(origins), pick(uas)
      local function maybe(name, v) if v ~= NONE then h[name] = v end end
      maybe("Cookie", c[1])
      maybe("X-Forwarded-For", x[1])
      maybe("X-Forwarded-Proto", p[1])
      maybe("Origin", o[1])
      maybe("User-Agent", ua)
      local route = pick(routes)
      local path, server = route[1], route[2]
      local m = { type = path == "/v1/p" and "page" or "track", event = "E" .. i, anonymousId = "a-" .. i,
                  messageId = uid(), context = { ip = "192.0.2.200", userAgent = "Body-UA/1" } }
      if rnd(2) == 1 then h["X-Pipeline-Key"] = PK else m.pipelineKey = PK end
      local body = m
      if path == "/v1/batch" then
        body = { batch = { m } }
        if m.pipelineKey then body.writeKey, m.pipelineKey = PK, nil end
      end
      local what = "case " .. i .. " " .. path .. ": " .. cjson.encode(h)
      local res = post(E, path, body, h)
      assert.equal(200, res.status, what .. " " .. res.body)
      -- CORS
      assert.equal(o[1] ~= NONE and "Origin" or nil, res.headers["vary"], what)
      assert.equal(o[2] and o[1] or nil, res.headers["access-control-allow-origin"], what)
      assert.equal(o[2] and "true" or nil, res.headers["access-control-allow-credentials"], what)
      -- the cookie: read or minted (Secure behind a trusted https proxy) for browsers; servers get none
      local entries = H.raw_entries(PK, REDIS)
      assert.equal(1, #entries, what)
      local ev = entries[1].ev
      local set = res.headers["set-cookie"]
      if server then
        assert.is_nil(set, what)
        assert.is_nil(ev.canonical_id, what)
      elseif c[2] == MINT then
        assert.equal(ev.canonical_id, set:match("^_dfdid=(dfid_%x+);"), what)
        assert.equal(p[2], set:find("; Secure", 1, true) ~= nil, what)
        assert.truthy(set:find("; Domain=example.com", 1, true), what)
      else
        assert.is_nil(set, what)
        assert.equal(c[2], ev.canonical_id, what)
      end
      -- the client address and user agent: the connection's for browsers; a
      -- server's own stand
      assert.equal(server and "192.0.2.200" or x[2], ev.context.ip, what)
      local sent_ua = ua ~= NONE and ua ~= "" and ua or nil
      assert.equal(server and "Body-UA/1" or sent_ua or "Body-UA/1", ev.context.user_agent, what)
      assert.is_nil(entries[1].input.pipelineKey, what)
      H.clear_raw(PK, REDIS)
    end
  end)

  it("acknowledges a messageId seen before without storing it again, on every route, and counts it", function()
    local mid = uid()
    local dup0 = metric(E, 'signal_events_deduplicated_total{pipeline="' .. PK .. '"}')
    local m = { type = "track", event = "E", anonymousId = "a-1", messageId = mid }
    for _, c in ipairs({ { "/v1/t", m }, { "/v1/track", m }, { "/v1/batch", { batch = { m, m } } },
                         { "/v1/events", m }, { "/v1/events", { batch = { m } } } }) do
      local res = post(E, c[1], c[2], { ["X-Pipeline-Key"] = PK })
      assert.equal(200, res.status, c[1])
      assert.equal('{"success":true}', res.body)
    end
    local entries = H.raw_entries(PK, REDIS)
    assert.equal(1, #entries)
    assert.equal(mid, entries[1].ev.message_id)
    H.eventually(function()
      return metric(E, 'signal_events_deduplicated_total{pipeline="' .. PK .. '"}') == dup0 + 5
    end, 5, "deduplicated counter")
    -- the marker: the id in the current window's hash, which lives until
    -- the end of the window after next
    local key, ttl = H.dedupe_marker(PK, mid, 86400, REDIS)
    assert.is_truthy(key)
    assert.is_true(ttl > 2 * 86400 - 5 and ttl <= 3 * 86400)
  end)

  it("answers 503 when an XADD fails inside the transaction, and takes the retry", function()
    -- a key of the wrong type: MULTI queues the XADD, EXEC runs it and it fails
    local raw = "signal:{dk_lane_b}:raw"
    local r = assert(core.redis.connect(REDIS))
    for _, n in ipairs({ 1, 600 }) do           -- one event, and a batch bigger than a group
      local batch = {}
      for i = 1, n do batch[i] = { type = "track", event = "E", anonymousId = "a", messageId = uid() } end
      local path, body = "/v1/t", batch[1]
      if n > 1 then path, body = "/v1/batch", { batch = batch } end
      assert(r:call("DEL", raw))
      assert(r:call("SET", raw, "not a stream"))
      local res = post(E, path, body, { ["X-Pipeline-Key"] = "dk_lane_b" })
      assert.equal(503, res.status)
      assert.equal("REDIS_UNAVAILABLE", H.json(res).error.code)
      -- the markers committed with it must not make the retry a "duplicate"
      assert(r:call("DEL", raw))
      H.park_processor("dk_lane_b", REDIS)
      res = post(E, path, body, { ["X-Pipeline-Key"] = "dk_lane_b" })
      assert.equal(200, res.status)
      assert.equal(n, #H.raw_entries("dk_lane_b", REDIS))
      H.clear_raw("dk_lane_b", REDIS)
    end
    r:close()
  end)

  it("records request durations by route and method", function()
    local series = 'signal_http_request_duration_seconds_count{method="POST",route="/v1/batch"}'
    local pre = 'signal_http_request_duration_seconds_count{method="OPTIONS",route="/v1/batch"}'
    local before, before_pre = metric(E, series), metric(E, pre)
    for _ = 1, 5 do
      post(E, "/v1/batch", { batch = { { type = "track", event = "E", anonymousId = "a", messageId = uid() } } },
           { ["X-Pipeline-Key"] = PK })
    end
    post(E, "/v1/batch", "{", { ["X-Pipeline-Key"] = PK })           -- a refusal is a request too
    assert(H.request("OPTIONS", E.url .. "/v1/batch", { Origin = ORIGIN }))
    H.eventually(function()
      return metric(E, series) == before + 6 and metric(E, pre) == before_pre + 1
    end, 5, "duration histograms")
  end)
end)

describe("collector, one path, without Redis", function()
  local redis, E

  setup(function()
    redis = H.redis_server()
    H.park_processor(PK, redis.url)
    E = H.engine({ pipelines = { { key = PK, origins = { ORIGIN } } }, redis = redis.url })
  end)

  teardown(function()
    if E then E:stop() end
    if redis then redis:stop() end
  end)

  it("answers 503 with CORS and no cookie while Redis is down, then stores again", function()
    redis:stop()
    local body = { type = "track", event = "E", anonymousId = "a", messageId = uid() }
    for _, c in ipairs({ { "/v1/t", body }, { "/v1/batch", { batch = { body } } } }) do
      local res = post(E, c[1], c[2], { ["X-Pipeline-Key"] = PK, Origin = ORIGIN })
      assert.equal(503, res.status, c[1])
      assert.equal("REDIS_UNAVAILABLE", H.json(res).error.code)
      assert.equal(ORIGIN, res.headers["access-control-allow-origin"])
      assert.is_nil(res.headers["set-cookie"])
    end
    redis:start()
    H.park_processor(PK, redis.url)
    H.eventually(function()
      return post(E, "/v1/t", body, { ["X-Pipeline-Key"] = PK }).status == 200
    end, 15, "200 once Redis is back")
    assert.equal(1, #H.raw_entries(PK, redis.url))
    H.eventually(function()
      return metric(E, 'signal_events_rejected_total{reason="redis_unavailable"}') >= 2
    end, 5, "rejected counter")
  end)

  it("answers 503 when Redis stalls past the command timeout, and nothing is half-stored", function()
    -- SIGSTOP: Redis keeps its connections but answers nothing, a stall the
    -- engine's 5 s command timeout must end (DEBUG SLEEP is disabled in Redis 7)
    local pid = assert(tonumber(H.read(redis.dir .. "/redis.pid")))
    assert(H.sh_ok("kill -STOP " .. pid))
    finally(function() os.execute("kill -CONT " .. pid .. " 2>/dev/null") end)
    local body = { type = "track", event = "E", anonymousId = "a", messageId = uid() }
    local res = assert(H.request("POST", E.url .. "/v1/t", { ["X-Pipeline-Key"] = PK }, cjson.encode(body), 10000))
    assert.equal(503, res.status)
    assert.equal("REDIS_UNAVAILABLE", H.json(res).error.code)
    assert(H.sh_ok("kill -CONT " .. pid))
    -- a retry is stored: the timed-out commit either ran whole or not at all
    H.eventually(function()
      return post(E, "/v1/t", body, { ["X-Pipeline-Key"] = PK }).status == 200
    end, 10, "200 after the stall")
    local n = 0
    for _, e in ipairs(H.raw_entries(PK, redis.url)) do
      if e.ev.message_id == body.messageId then n = n + 1 end
    end
    assert.equal(1, n)
  end)
end)
