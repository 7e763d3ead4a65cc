-- The collector's C lane (engine/ingest.c) against the Lua path it mirrors.
--
-- Two engines with the same config, each on its own Redis database: L with
-- the lane (the default), P with SIGNAL_INGEST_LANE=off (every request
-- takes lua/signal/collector.lua). The same requests go to both; answers
-- (status, body, headers) and what each stored in its raw stream must be the
-- same, up to what is random or time-dependent (a minted cookie id, a
-- generated messageId, receivedAt). signal_ingest_lane_total proves the
-- lane served L's requests and none of P's. The rest of the collector's
-- behaviour (refusals, batches, gzip, Basic auth …) is 10-collector_spec,
-- which runs with the lane on: those requests are the ones it hands to Lua.
local H = require "helpers"
local cjson = require "cjson"
local core = require "signal.core"

local PK = "dk_lane"
local ORIGIN = "https://www.example.com"

local function db_url(n) return (H.redis_url:gsub("/%d+$", "")) .. "/" .. n end
local L_REDIS, P_REDIS = db_url(7), db_url(8)

local function flush(url)
  local r = assert(core.redis.connect(url))
  assert(r:call("FLUSHDB"))
  r:close()
end

local function config()
  return {
    pipelines = { { key = PK, origins = { ORIGIN } }, { key = "dk_lane_b", origins = {} } },
    -- the test client (127.0.0.1) is a trusted proxy, 10.1.0.0/16 an inner one
    trusted_proxies = { "127.0.0.1", "10.1.0.0/16" },
    cookie_domain = "example.com",
  }
end

local function uid() return "lane-" .. core.random_hex(8) end

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

-- The answer without what is random: the minted id in Set-Cookie.
local function answer(res)
  local h = res.headers
  local cookie = h["set-cookie"] and h["set-cookie"]:gsub("^_dfdid=dfid_%x+", "_dfdid=<minted>")
  return {
    status = res.status, body = res.body, content_type = h["content-type"], vary = h["vary"],
    allow_origin = h["access-control-allow-origin"],
    allow_credentials = h["access-control-allow-credentials"], set_cookie = cookie,
  }
end

-- The stored event without what is random or time-dependent.
local function stored(entry, sent)
  local ev = entry.ev
  assert.is_string(ev.received_at)
  ev.received_at = nil
  if sent.timestamp == nil then
    assert.is_string(ev.timestamp)
    ev.timestamp = nil
  end
  if sent.messageId == nil then
    assert.matches("^%x+%-%x+%-4%x+%-[89ab]%x+%-%x+$", ev.message_id)
    ev.message_id = "<generated>"
  end
  if type(ev.canonical_id) == "string" and ev.canonical_id:match("^dfid_%x+$") then
    ev.canonical_id = "<minted>"
  end
  return { ev = ev, input = entry.input }
end

describe("collector C lane", function()
  local L, P

  setup(function()
    flush(L_REDIS)
    flush(P_REDIS)
    for _, url in ipairs({ L_REDIS, P_REDIS }) do
      H.park_processor(PK, url)
      H.park_processor("dk_lane_b", url)
    end
    local cl, cp = config(), config()
    cl.redis, cp.redis = L_REDIS, P_REDIS
    L = H.engine(cl)
    P = H.engine(cp, { env = { SIGNAL_INGEST_LANE = "off" } })
  end)

  teardown(function()
    if L then L:stop() end
    if P then P:stop() end
  end)

  before_each(function()
    for _, url in ipairs({ L_REDIS, P_REDIS }) do
      H.clear_raw(PK, url)
      H.clear_raw("dk_lane_b", url)
    end
  end)

  -- Every case is one request the lane takes; `pk` names where it is stored.
  local function cases()
    local ctx = { page = { url = "https://www.example.com/p/1", path = "/p/1", referrer = "" },
                  userAgent = "Body-UA/1.0", locale = "en-US", ip = "203.0.113.9" }
    return {
      { "/v1/t", { type = "track", event = "Product Added", anonymousId = "a-1", messageId = uid(),
                   properties = { sku = "S-1", price = 19.5, tags = { "x", "y" } }, context = ctx },
        { ["X-Pipeline-Key"] = PK, Origin = ORIGIN, ["User-Agent"] = "UA-Header/2" } },
      -- no messageId: generated, no dedupe; body key instead of the header
      { "/v1/t", { event = "Signed Up", userId = "u-7", pipelineKey = PK, timestamp = "2026-01-02T03:04:05.678Z" },
        { Origin = "HTTPS://WWW.EXAMPLE.COM:443" } },
      -- writeKey, a page, an origin the pipeline does not list
      { "/v1/p", { name = "Home", anonymousId = "a-2", writeKey = PK, messageId = uid(),
                   properties = { title = "Home" } },
        { Origin = "https://evil.example.net" } },
      -- the cookie: read, not minted
      { "/v1/s", { name = "Cart", anonymousId = "a-3", messageId = uid() },
        { ["X-Pipeline-Key"] = PK, Cookie = "a=b; _dfdid=dfid_0123456789abcdef; c=d" } },
      -- a quoted cookie after another that merely ends in _dfdid
      { "/v1/t", { type = "track", event = "E", anonymousId = "a-4", messageId = uid() },
        { ["X-Pipeline-Key"] = PK, Cookie = "x_dfdid=nope; _dfdid=\"dfid_quoted\"" } },
      -- an invalid cookie value: a new id is minted
      { "/v1/t", { type = "track", event = "E", anonymousId = "a-5", messageId = uid() },
        { ["X-Pipeline-Key"] = PK, Cookie = "_dfdid=bad value!" } },
      -- behind trusted proxies: the first untrusted hop is the client; https → Secure
      { "/v1/t", { type = "track", event = "E", anonymousId = "a-6", messageId = uid() },
        { ["X-Pipeline-Key"] = PK, ["X-Forwarded-For"] = "198.51.100.4, 10.1.2.3",
          ["X-Forwarded-Proto"] = "https" } },
      { "/v1/t", { type = "track", event = "E", anonymousId = "a-7", messageId = uid() },
        { ["X-Pipeline-Key"] = PK, ["X-Forwarded-For"] = "[2001:db8::5]:443, 1.2.3.4:5678",
          ["X-Forwarded-Proto"] = "http" } },
      -- Segment HTTP Tracking API paths: server-side, no cookie, the body's context stands
      { "/v1/track", { event = "Order Completed", userId = "u-9", messageId = uid(), context = ctx,
                       properties = { revenue = 120 } },
        { ["X-Pipeline-Key"] = PK, Cookie = "_dfdid=dfid_ignored" } },
      { "/v1/page", { name = "Docs", anonymousId = "a-8", messageId = uid() }, { ["X-Pipeline-Key"] = PK } },
      { "/v1/screen", { name = "Home", userId = "u-10", messageId = uid() }, { ["X-Pipeline-Key"] = PK } },
      -- what datafly.js sends for one queued event (sdk/README.md): the key and
      -- sentAt in the body, text/plain (no preflight), the cookie
      { "/v1/p", { type = "page", name = "Product Detail", properties = {}, userId = "user-123",
                   anonymousId = "cba00c1b-0fe8-4b85-b9d9-957978be1d99", messageId = uid(),
                   timestamp = "2026-04-17T15:37:10.484Z",
                   context = { page = ctx.page, campaign = { source = "news", medium = "email" },
                               locale = "en-US", timezone = "Europe/London",
                               screen = { width = 1512, height = 982, density = 2 },
                               library = { name = "datafly.js", version = "1.8.0" },
                               userAgent = "Mozilla/5.0 (X11)", session = { id = "s-1", count = 1 },
                               vendorIds = { ga = "GA1.1.111.222" },
                               consent = { analytics = true, marketing = false,
                                           google = { ad_storage = "denied" } } },
                   pipelineKey = PK, sentAt = "2026-04-17T15:37:10.684Z" },
        { ["Content-Type"] = "text/plain;charset=UTF-8", Origin = ORIGIN,
          Cookie = "_dfdid=dfid_0123456789abcdef0123456789abcdef" } },
      -- another pipeline
      { "/v1/t", { type = "track", event = "B", anonymousId = "a-9", messageId = uid() },
        { ["X-Pipeline-Key"] = "dk_lane_b", Origin = ORIGIN }, "dk_lane_b" },
    }
  end

  it("answers and stores every plain event exactly as the Lua path does", function()
    local list = cases()
    for i, c in ipairs(list) do
      local path, body, headers, pk = c[1], c[2], c[3], c[4] or PK
      local rl, rp = post(L, path, body, headers), post(P, path, body, headers)
      assert.same(answer(rp), answer(rl), "answer to case " .. i)
      assert.equal(200, rl.status, "case " .. i)
      local el, ep = H.raw_entries(pk, L_REDIS), H.raw_entries(pk, P_REDIS)
      assert.equal(1, #el, "case " .. i)
      assert.equal(1, #ep, "case " .. i)
      assert.same(stored(ep[1], body), stored(el[1], body), "stored event of case " .. i)
      H.clear_raw(pk, L_REDIS)
      H.clear_raw(pk, P_REDIS)
    end
    -- the lane served L's requests, none of P's
    H.eventually(function()
      return metric(L, 'signal_ingest_lane_total{pipeline="' .. PK .. '"}') == #list - 1
    end, 5, "lane counter on L")
    assert.equal(0, metric(P, 'signal_ingest_lane_total{pipeline="' .. PK .. '"}'))
  end)

  -- The header rules the lane ports from Lua (cookie, forwarding chain, https,
  -- origin) on random mixes, odd spellings included: where the lane cannot
  -- be exact it must decline, so both engines must still agree.
  it("agrees with the Lua path on random mixes of cookies, forwarding headers and origins", function()
    local rnd = math.random
    math.randomseed(20261126)
    local function pick(t) return t[rnd(#t)] end
    local NONE = {}
    local origins = { NONE, ORIGIN, "HTTPS://WWW.EXAMPLE.COM", ORIGIN .. ":443", "http://www.example.com",
                      "https://www.example.com:8443", "null", "https://evil.example" }
    local cookies = { NONE, "_dfdid=dfid_abc", '_dfdid="dfid_q"', "_dfdid=", "_dfdid=a b", "_dfdid=" .. ("x"):rep(129),
                      "a=1; _dfdid=dfid_2; b=3", "x_dfdid=no; _dfdid=dfid_3", " _dfdid = dfid_4 ;", '_dfdid="',
                      "foo=bar", "_dfdid=dfid_5;_dfdid=dfid_6", "_DFDID=dfid_7" }
    local xffs = { NONE, "203.0.113.7", "203.0.113.7, 10.1.0.9", "10.1.0.9, 10.1.2.3", "[2001:db8::1]:8080",
                   "198.51.100.1:443", "fe80::1%eth0, 10.1.2.2", "unknown", " , 192.0.2.4", "010.1.2.3",
                   "192.0.2.9 , 10.1.9.9 ,", "::ffff:10.1.0.1", "2001:db8::/32", "1.2.3", "" }
    local xfps = { NONE, "https", "HTTPS", "http", " https , http", "https;x", "" }
    local uas = { NONE, "Mozilla/5.0", 'quote" and \\ backslash', "" }
    local series = 'signal_ingest_lane_total{pipeline="' .. PK .. '"}'
    local lane0 = metric(L, series)
    for i = 1, 120 do
      local h = {}
      local function maybe(name, v) if v ~= NONE then h[name] = v end end
      maybe("Origin", pick(origins))
      maybe("Cookie", pick(cookies))
      maybe("X-Forwarded-For", pick(xffs))
      maybe("X-Forwarded-Proto", pick(xfps))
      maybe("User-Agent", pick(uas))
      local body = { type = "track", event = "E" .. i, anonymousId = "a-" .. i, messageId = uid() }
      if rnd(2) == 1 then h["X-Pipeline-Key"] = PK else body.pipelineKey = PK end
      local path = pick({ "/v1/t", "/v1/track" })
      local rl, rp = post(L, path, body, h), post(P, path, body, h)
      local what = "case " .. i .. ": " .. cjson.encode(h)
      assert.same(answer(rp), answer(rl), what)
      local el, ep = H.raw_entries(PK, L_REDIS), H.raw_entries(PK, P_REDIS)
      assert.equal(1, #el, what)
      assert.equal(1, #ep, what)
      assert.same(stored(ep[1], body), stored(el[1], body), what)
      H.clear_raw(PK, L_REDIS)
      H.clear_raw(PK, P_REDIS)
    end
    -- most of them were the lane's to serve (89 with this seed; the rest it
    -- declined to Lua: forwarding hops it cannot parse exactly, "unknown",
    -- "010.1.2.3", an empty one …)
    H.eventually(function()
      local served = metric(L, series) - lane0
      return served >= 60, "the lane served " .. served .. " of 120"
    end, 5, "lane share")
  end)

  it("keeps the client address and https from untrusted peers out of the event", function()
    local body = { type = "track", event = "E", anonymousId = "a-1", messageId = uid() }
    -- 127.0.0.1 is trusted, but the hop before it is not: it is the client
    local res = post(L, "/v1/t", body, { ["X-Pipeline-Key"] = PK, ["X-Forwarded-For"] = "192.0.2.1, 192.0.2.2" })
    assert.equal(200, res.status)
    assert.equal("192.0.2.2", H.raw_entries(PK, L_REDIS)[1].ev.context.ip)
  end)

  it("acknowledges a messageId seen before without storing it again, and counts it", function()
    local mid = uid()
    local body = { type = "track", event = "E", anonymousId = "a-1", messageId = mid }
    local dup0 = metric(L, 'signal_events_deduplicated_total{pipeline="' .. PK .. '"}')
    for _ = 1, 3 do
      local res = post(L, "/v1/t", body, { ["X-Pipeline-Key"] = PK })
      assert.equal(200, res.status)
      assert.equal('{"success":true}', res.body)
    end
    local entries = H.raw_entries(PK, L_REDIS)
    assert.equal(1, #entries)
    assert.equal(mid, entries[1].ev.message_id)
    H.eventually(function()
      return metric(L, 'signal_events_deduplicated_total{pipeline="' .. PK .. '"}') == dup0 + 2
    end, 5, "deduplicated counter")
    -- the marker is the Lua path's: the id in the same window hash, which
    -- lives until the end of the window after next (collector.lua dedupe_window)
    local key, ttl = H.dedupe_marker(PK, mid, 86400, L_REDIS)
    assert.is_truthy(key)
    assert.is_true(ttl > 2 * 86400 - 5 and ttl <= 3 * 86400)
    local body_p = { type = "track", event = "E", anonymousId = "a-1", messageId = uid() }
    assert.equal(200, post(P, "/v1/t", body_p, { ["X-Pipeline-Key"] = PK }).status)
    local key_p = H.dedupe_marker(PK, body_p.messageId, 86400, P_REDIS)
    assert.equal(key, key_p)
  end)

  it("answers 503, like the Lua path, when the XADD fails inside the transaction", function()
    -- a key of the wrong type: MULTI queues the XADD, EXEC runs it and it fails
    local raw = "signal:{dk_lane_b}:raw"
    for _, e in ipairs({ L, P }) do
      local url = e == L and L_REDIS or P_REDIS
      local r = assert(core.redis.connect(url))
      assert(r:call("DEL", raw))
      assert(r:call("SET", raw, "not a stream"))
      local mid = uid()
      local res = post(e, "/v1/t", { type = "track", event = "E", anonymousId = "a", messageId = mid },
                       { ["X-Pipeline-Key"] = "dk_lane_b" })
      assert.equal(503, res.status)
      assert.equal("REDIS_UNAVAILABLE", H.json(res).error.code)
      -- the marker committed with it must not make the retry a "duplicate"
      assert(r:call("DEL", raw))
      r:close()
      H.park_processor("dk_lane_b", url)
      res = post(e, "/v1/t", { type = "track", event = "E", anonymousId = "a", messageId = mid },
                 { ["X-Pipeline-Key"] = "dk_lane_b" })
      assert.equal(200, res.status)
      assert.equal(1, #H.raw_entries("dk_lane_b", url))
    end
    -- the same through the store script (batches over collector.CHUNK)
    local r = assert(core.redis.connect(P_REDIS))
    assert(r:call("DEL", raw))
    assert(r:call("SET", raw, "not a stream"))
    local batch = {}
    for i = 1, 301 do batch[i] = { type = "track", event = "E", anonymousId = "a", messageId = uid() } end
    local res = post(P, "/v1/batch", { batch = batch }, { ["X-Pipeline-Key"] = "dk_lane_b" })
    assert.equal(503, res.status)
    assert(r:call("DEL", raw))
    r:close()
    H.park_processor("dk_lane_b", P_REDIS)
    res = post(P, "/v1/batch", { batch = batch }, { ["X-Pipeline-Key"] = "dk_lane_b" })
    assert.equal(200, res.status)
    assert.equal(301, #H.raw_entries("dk_lane_b", P_REDIS))
  end)

  it("records request durations for its routes like the Lua path", function()
    local before = metric(L, 'signal_http_request_duration_seconds_count{method="POST",route="/v1/t"}')
    for _ = 1, 5 do
      post(L, "/v1/t", { type = "track", event = "E", anonymousId = "a", messageId = uid() },
           { ["X-Pipeline-Key"] = PK })
    end
    H.eventually(function()
      return metric(L, 'signal_http_request_duration_seconds_count{method="POST",route="/v1/t"}') == before + 5
    end, 5, "duration histogram")
  end)

  it("hands everything else to Lua: unknown keys, Basic credentials, gzip, identify, bad JSON", function()
    local ev = { type = "track", event = "E", anonymousId = "a", messageId = uid() }
    local res = post(L, "/v1/t", ev, { ["X-Pipeline-Key"] = "dk_nope" })
    assert.equal(401, res.status)
    assert.equal("INVALID_PIPELINE_KEY", H.json(res).error.code)
    res = post(L, "/v1/t", { type = "track", event = "E", anonymousId = "a", messageId = uid(), writeKey = "dk_nope" })
    assert.equal(401, res.status)
    res = post(L, "/v1/t", '{"type":"track","event":"E",', { ["X-Pipeline-Key"] = PK })
    assert.equal(400, res.status)
    assert.equal("INVALID_JSON", H.json(res).error.code)
    res = post(L, "/v1/t", { type = "track", anonymousId = "a" }, { ["X-Pipeline-Key"] = PK })
    assert.equal(400, res.status)
    assert.equal("INVALID_EVENT", H.json(res).error.code)
    res = post(L, "/v1/i", { userId = "u-1", traits = { email = "a@example.com" }, messageId = uid() },
               { ["X-Pipeline-Key"] = PK })
    assert.equal(200, res.status)
    assert.equal("identify", H.raw_entries(PK, L_REDIS)[1].ev.type)
  end)
end)

describe("collector C lane without Redis", function()
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
    local res = post(E, "/v1/t", body, { ["X-Pipeline-Key"] = PK, Origin = ORIGIN })
    assert.equal(503, res.status)
    assert.equal("REDIS_UNAVAILABLE", H.json(res).error.code)
    assert.equal(ORIGIN, res.headers["access-control-allow-origin"])
    assert.is_nil(res.headers["set-cookie"])
    redis:start()
    H.park_processor(PK, redis.url)
    H.eventually(function()
      return post(E, "/v1/t", body, { ["X-Pipeline-Key"] = PK }).status == 200
    end, 15, "200 once Redis is back")
    assert.equal(1, #H.raw_entries(PK, redis.url))
    H.eventually(function()
      return metric(E, 'signal_events_rejected_total{reason="redis_unavailable"}') >= 1
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
