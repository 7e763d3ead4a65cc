-- Delivery to Amperity's Streaming Ingest, end to end: events go in through
-- the real collector, through the processor and delivery workers of a real
-- engine (2 workers, real Redis), to the Amperity sandbox; the assertions
-- are on what the sandbox received and recorded (and on Redis). Each status
-- class of the Streaming Ingest contract has its case; retry timing is checked only as
-- causality and ordering from the sandbox's own request timestamps (a
-- retry never starts before its Retry-After / schedule, delays grow).
local H = require "helpers"
local K = require "fixtures.tasks.delivery_kit"
local cjson = require "cjson"
local queue = require "signal.redis.keys"
local retry = require "signal.deliver.retry"
local dhttp = require "signal.deliver.http"
local ingest = require "signal.destinations.amperity.send"

describe("delivery outcome rules", function()
  it("classifies statuses as the Streaming Ingest contract says", function()
    local cases = {
      { 202, "delivered" }, { 204, "dropped" },
      { 429, "retry" }, { 500, "retry" }, { 502, "retry" }, { 503, "retry" }, { 504, "retry" },
      { 400, "permanent" }, { 401, "permanent" }, { 403, "permanent" }, { 404, "permanent" },
      { 409, "permanent" }, { 411, "permanent" }, { 413, "permanent" }, { 415, "permanent" },
    }
    for _, c in ipairs(cases) do
      assert.equal(c[2], ingest.classify(c[1]), tostring(c[1]))
    end
    -- a request that got no answer (timeout, DNS, refused) is retried
    local o = dhttp.post({ url = "http://acme-signal-spec.invalid/prof/events/esm-x", headers = {}, body = "{}" },
                         2000, ingest.classify)
    assert.equal("retry", o.class)
    assert.is_nil(o.status)
  end)

  it("reads Retry-After as seconds or as an HTTP date", function()
    assert.equal(7, dhttp.retry_after("7", 0))
    assert.equal(1.5, dhttp.retry_after(" 1.5 ", 0))
    -- Wed, 21 Oct 2015 07:28:00 GMT = 1445412480
    assert.equal(30, dhttp.retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412450))
    assert.equal(0, dhttp.retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412490))
    assert.is_nil(dhttp.retry_after("soon", 0))
    assert.is_nil(dhttp.retry_after(nil, 0))
  end)

  it("never schedules a retry sooner than Retry-After, nor than the schedule", function()
    local delays = { 100, 250 }
    for _ = 1, 50 do
      local d = retry.delay_ms(delays, 1, nil)
      assert.is_true(d >= 100 and d <= 120)
      assert.is_true(retry.delay_ms(delays, 1, 2) >= 2000)
      assert.is_true(retry.delay_ms(delays, 2, 0.1) >= 250)
    end
  end)

  it("names the cause of every final outcome as the troubleshooting table does", function()
    local i = { event_stream_id = "esm-abc123", tenant_id = "acme", tenant_subdomain = "acmee",
                base_url = "https://acmee.amperity.com", api_key = "secret-jwt-value" }
    local function explain(status, err, body) return ingest.explain(i, { status = status, error = err, body = body }) end
    assert.matches("check tenant_subdomain %(acmee%)", explain(nil, "could not resolve host acmee.amperity.com"))
    assert.matches("host part of your Amperity dashboard URL", explain(nil, "could not resolve host x"))
    for _, s in ipairs({ 401, 403 }) do
      local m = explain(s)
      assert.matches("Streaming Ingest JWT is expired", m)
      assert.matches("Streaming Ingest Write Access", m)
    end
    assert.matches("stream esm%-abc123 not found", explain(404))
    assert.matches("drop mode", explain(204))
    assert.matches("reject mode", explain(409))
    assert.is_nil(explain(202))
    for _, s in ipairs({ 204, 400, 401, 403, 404, 409, 413, 429, 503 }) do
      assert.is_nil(explain(s, nil, "body"):find("secret-jwt-value", 1, true))
    end
  end)
end)

describe("delivery to the Amperity sandbox", function()
  local sb, engine, redis, scripts_dir
  local delays

  setup(function()
    H.flush_redis()
    redis = H.redis()
    sb = H.sandbox(K.FIXTURE)
    scripts_dir = H.tmp .. "/delivery-scripts-" .. require("signal.core").random_hex(3)
    os.execute("mkdir -p " .. scripts_dir)
    H.write(scripts_dir .. "/10_explode.lua", [[
-- raises on events with properties.explode (the probe event has none)
return {
  pipelines = { "dk_script" },
  global = { mappings = {
    { target = "script_ran", default = "yes" },
    { source = "properties.explode", target = "exploded", fn = function(v)
        if v then error("kaboom on purpose") end
        return nil
      end },
  } },
}
]])
    local cfg = K.config({
      dk_ok = { K.integ(sb) },
      dk_drop = { K.integ(sb, { event_stream_id = "esm-drop" }) },
      dk_400 = { K.integ(sb, { event_stream_id = "esm-b400" }) },
      dk_401 = { K.integ(sb, { api_key = K.WRONG_JWT }) },
      dk_403 = { K.integ(sb, { api_key = K.fx.profile_token }) },
      dk_404 = { K.integ(sb, { event_stream_id = "esm-missing" }) },
      dk_409 = { K.integ(sb, { event_stream_id = "esm-reject" }) },
      dk_retry = { K.integ(sb, { event_stream_id = "esm-retry" }) },
      dk_ra = { K.integ(sb, { event_stream_id = "esm-ra" }) },
      dk_backoff = { K.integ(sb, { event_stream_id = "esm-backoff" }) },
      dk_exhaust = { K.integ(sb, { event_stream_id = "esm-exhaust" }) },
      dk_two = { K.integ(sb, { name = "good", event_stream_id = "esm-good" }),
                 K.integ(sb, { name = "down", event_stream_id = "esm-down" }) },
      dk_dns = { K.integ(sb, { base_url = "http://acme-signal-spec.invalid" }) },
      dk_script = { K.integ(sb) },
    }, { scripts_dir = scripts_dir })
    delays = retry.delays(cfg.delivery)
    engine = H.engine(cfg)
  end)

  teardown(function()
    if engine then engine:stop() end
    if sb then sb:stop() end
    if redis then redis:close() end
  end)

  before_each(function()
    K.reset(sb)
    for _, s in ipairs({ "esm-b400", "esm-retry", "esm-ra", "esm-backoff", "esm-exhaust", "esm-good",
                         "esm-down" }) do
      K.stream_mode(sb, s, "accept")
    end
  end)

  it("POSTs the blueprint's flat payload with exactly the Streaming Ingest headers", function()
    local consent = { analytics = true, marketing = false, categories = { C0001 = true, C0002 = false },
                      google = { ad_storage = "denied" } }
    local mid = K.send(engine, "dk_ok", { product_id = "SKU-9", price = 25 },
      { context = { consent = consent, page = { path = "/p/sku-9" } } })
    local by = K.wait_delivered(sb, { mid }, "esm-demo")
    assert.equal(1, #by[mid])
    local r = by[mid][1]
    assert.equal("POST", r.method)
    assert.equal("/prof/events/esm-demo", r.path)
    assert.equal("acme", r.headers["amperity-tenant"])
    assert.equal("Bearer " .. K.fx.ingest_token, r.headers["authorization"])
    assert.equal("application/json", r.headers["content-type"])
    assert.equal(tostring(#r.body), r.headers["content-length"])
    assert.equal(202, r.status)
    local body = r.json
    assert.equal("DATAFLY", body.source)
    assert.equal("view_item", body.type)
    assert.equal("SKU-9", body.product_id)
    assert.matches("^dfid_", body.cookieid)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", body.timestamp)
    assert.same(consent, body.consent)
    for k, v in pairs(body) do
      if k ~= "consent" then assert.is_true(type(v) ~= "table", k .. " is not flat") end
    end
    -- what was sent is exactly what the live event shows as the transformed payload
    local ev = H.eventually(function()
      local e = K.live_event(engine, "dk_ok", mid)
      local i = K.live_integration(e, "amperity")
      return i and #i.requests == 1 and i
    end, 10, "live event with its request")
    assert.same(ev.payload, cjson.decode(r.body))
    assert.equal(r.body, ev.requests[1].body)
  end)

  it("keeps vendor connections alive: far fewer connections opened than requests sent", function()
    local series = '{integration="amperity",pipeline="dk_ok"}'
    local before = K.metric(engine, "signal_vendor_connections_opened_total" .. series) or 0
    local sent_before = K.metric(engine, 'signal_deliveries_total{integration="amperity",pipeline="dk_ok",status="202"}')
      or 0
    local mids = K.send_many(engine, "dk_ok", 60)
    K.wait_delivered(sb, mids, "esm-demo")
    local sent = H.eventually(function()
      local n = K.metric(engine, 'signal_deliveries_total{integration="amperity",pipeline="dk_ok",status="202"}')
      return n and n - sent_before >= 60 and n - sent_before
    end, 10, "the deliveries counted")
    local opened = (K.metric(engine, "signal_vendor_connections_opened_total" .. series) or 0) - before
    assert.is_true(opened < sent / 3, opened .. " connections opened for " .. sent .. " requests")
  end)

  it("treats 204 as delivered and warns that the stream is in drop mode", function()
    local mid = K.send(engine, "dk_drop")
    K.wait_delivered(sb, { mid }, "esm-drop")
    local req = H.eventually(function()
      local i = K.live_integration(K.live_event(engine, "dk_drop", mid), "amperity")
      return i and i.requests[1]
    end, 10, "live request")
    assert.equal(204, req.status)
    assert.matches("stream esm%-drop is in drop mode", req.hint)
    assert.matches('"msg":"the destination accepted the delivery but dropped it"', engine:output())
    assert.matches("stream esm%-drop is in drop mode", engine:output())
    -- done: nothing retried, nothing dead-lettered
    H.eventually(function() return redis:call("XLEN", queue.delivery("dk_drop", "amperity")) == 0 end, 5)
    assert.equal(0, redis:call("ZCARD", queue.retry("dk_drop", "amperity")))
    assert.equal(0, redis:call("XLEN", queue.dlq("dk_drop", "amperity")))
    assert.equal(1, #K.requests(sb, "esm-drop"))
  end)

  local finals = {
    { pk = "dk_400", status = 400, cause = "malformed", stream = "esm-b400",
      prepare = function() K.fault(sb, { prefix = "/prof/events/esm-b400", status = 400,
                                         body = '{"error":"bad-request","message":"not an object"}' }) end },
    { pk = "dk_401", status = 401, cause = "Streaming Ingest Write Access", stream = "esm-demo" },
    { pk = "dk_403", status = 403, cause = "Streaming Ingest JWT is expired, revoked or has the wrong scope",
      stream = "esm-demo" },
    { pk = "dk_404", status = 404, cause = "stream esm%-missing not found for tenant acme", stream = "esm-missing" },
    { pk = "dk_409", status = 409, cause = "reject mode", stream = "esm-reject" },
  }
  for _, c in ipairs(finals) do
    it("dead-letters a " .. c.status .. " at once, with the cause", function()
      if c.prepare then c.prepare() end
      local mid = K.send(engine, c.pk)
      local dl = H.eventually(function()
        local list = K.xrange(redis, queue.dlq(c.pk, "amperity"))
        return #list > 0 and list
      end, 10, "a dead letter")
      assert.equal(1, #dl)
      assert.equal(mid, dl[1].m)
      assert.equal(tostring(c.status), dl[1].s)
      assert.equal("final", dl[1].k)
      assert.equal("1", dl[1].a)
      assert.matches(c.cause, dl[1].e)
      assert.equal("DATAFLY", cjson.decode(dl[1].p).source)
      local history = cjson.decode(dl[1].h)
      assert.equal(1, #history)
      assert.equal(c.status, history[1].status)
      -- exactly one attempt reached Amperity, and none is scheduled
      assert.equal(1, #K.requests(sb, c.stream))
      assert.equal(0, redis:call("ZCARD", queue.retry(c.pk, "amperity")))
      assert.is_nil(dl[1].e:find(K.fx.ingest_token, 1, true))
      assert.is_nil(dl[1].e:find(K.fx.profile_token, 1, true))
      -- and the live event's request names the same cause
      local req = H.eventually(function()
        local i = K.live_integration(K.live_event(engine, c.pk, mid), "amperity")
        return i and i.requests[1]
      end, 10, "live request")
      assert.equal(c.status, req.status)
      assert.matches(c.cause, req.hint)
    end)
  end

  it("retries a 503 and delivers the same payload on the next attempt", function()
    K.fault(sb, { prefix = "/prof/events/esm-retry", status = 503, times = 1 })
    local mid = K.send(engine, "dk_retry")
    local reqs = H.eventually(function()
      local by = K.by_mid(K.requests(sb, "esm-retry"))
      return by[mid] and #by[mid] == 2 and by[mid]
    end, 10, "two attempts")
    assert.equal(503, reqs[1].status)
    assert.equal(202, reqs[2].status)
    assert.equal(reqs[1].body, reqs[2].body)
    assert.is_true(reqs[2].time - reqs[1].time >= delays[1] / 1000)
    local i = H.eventually(function()
      local x = K.live_integration(K.live_event(engine, "dk_retry", mid), "amperity")
      return x and #x.requests == 2 and x
    end, 10, "both attempts in the live event")
    assert.same({ 1, 2 }, { i.requests[1].attempt, i.requests[2].attempt })
    assert.same({ 503, 202 }, { i.requests[1].status, i.requests[2].status })
    assert.equal(0, redis:call("XLEN", queue.dlq("dk_retry", "amperity")))
  end)

  it("waits at least Retry-After before retrying a 429", function()
    K.fault(sb, { prefix = "/prof/events/esm-ra", status = 429, times = 1, retry_after = 2 })
    local mid = K.send(engine, "dk_ra")
    local reqs = H.eventually(function()
      local by = K.by_mid(K.requests(sb, "esm-ra"))
      return by[mid] and #by[mid] == 2 and by[mid]
    end, 15, "the retry after a 429")
    assert.equal(429, reqs[1].status)
    assert.equal(202, reqs[2].status)
    -- causality: the retry started no sooner than the answer's Retry-After
    assert.is_true(reqs[2].time - (reqs[1].time + reqs[1].duration_ms / 1000) >= 2,
      "retried after " .. (reqs[2].time - reqs[1].time) .. " s")
  end)

  it("spaces retries on the growing schedule", function()
    K.fault(sb, { prefix = "/prof/events/esm-backoff", status = 503, times = 4 })
    local mid = K.send(engine, "dk_backoff")
    local reqs = H.eventually(function()
      local by = K.by_mid(K.requests(sb, "esm-backoff"))
      return by[mid] and #by[mid] == 5 and by[mid]
    end, 20, "five attempts")
    assert.equal(202, reqs[5].status)
    local gaps = {}
    for k = 1, 4 do
      gaps[k] = reqs[k + 1].time - reqs[k].time
      assert.is_true(gaps[k] >= delays[k] / 1000, "attempt " .. (k + 1) .. " came before its due time")
    end
    for k = 1, 3 do
      assert.is_true(gaps[k + 1] > gaps[k], "gap " .. (k + 1) .. " did not grow: "
        .. table.concat(gaps, ", "))
    end
  end)

  it("dead-letters after the last attempt, with the payload, the error and every attempt", function()
    K.fault(sb, { prefix = "/prof/events/esm-exhaust", status = 503 })
    local mid = K.send(engine, "dk_exhaust")
    local dl = H.eventually(function()
      local list = K.xrange(redis, queue.dlq("dk_exhaust", "amperity"))
      return #list > 0 and list[1]
    end, 20, "a dead letter")
    assert.equal(mid, dl.m)
    assert.equal("exhausted", dl.k)
    assert.equal("5", dl.a)
    assert.equal("503", dl.s)
    assert.matches("gave up after 5 attempts", dl.e)
    assert.equal("DATAFLY", cjson.decode(dl.p).source)
    local h = cjson.decode(dl.h)
    assert.equal(5, #h)
    for k = 1, 5 do
      assert.equal(k, h[k].attempt)
      assert.equal(503, h[k].status)
    end
    local by = K.by_mid(K.requests(sb, "esm-exhaust"))
    assert.equal(5, #by[mid])
    assert.equal(0, redis:call("ZCARD", queue.retry("dk_exhaust", "amperity")))
  end)

  it("keeps delivering to one integration while another one's stream is down", function()
    K.fault(sb, { prefix = "/prof/events/esm-down", status = 503, latency_ms = 3000 })
    local mids = K.send_many(engine, "dk_two", 20)
    K.wait_delivered(sb, mids, "esm-good")
    local down = H.eventually(function()
      local r = K.requests(sb, "esm-down")
      return #r > 0 and r
    end, 15, "the down stream's first answer")
    local first_down_done = math.huge
    for _, r in ipairs(down) do
      first_down_done = math.min(first_down_done, r.time + r.duration_ms / 1000)
    end
    for _, r in ipairs(K.requests(sb, "esm-good")) do
      assert.equal(202, r.status)
      assert.is_true(r.time + r.duration_ms / 1000 < first_down_done,
        "a delivery to the healthy stream waited for the failing one")
    end
  end)

  it("says to check tenant_subdomain when the Amperity host does not resolve", function()
    local mid = K.send(engine, "dk_dns")
    local req = H.eventually(function()
      local i = K.live_integration(K.live_event(engine, "dk_dns", mid), "amperity")
      return i and i.requests[1]
    end, 15, "the failed attempt in the live event")
    assert.is_nil(req.status)
    assert.matches("could not resolve host acme%-signal%-spec%.invalid", req.error)
    assert.matches("check tenant_subdomain", req.hint)
    assert.matches("host part of your Amperity dashboard URL", req.hint)
    assert.matches("check tenant_subdomain", engine:output())
  end)

  it("delivers an event whose script raised, without that script's contribution", function()
    local bad = K.send(engine, "dk_script", { product_id = "SKU-1", explode = true })
    local good = K.send(engine, "dk_script", { product_id = "SKU-2" })
    local by = K.wait_delivered(sb, { bad, good }, "esm-demo")
    assert.is_nil(by[bad][1].json.script_ran)
    assert.is_nil(by[bad][1].json.exploded)
    assert.equal("SKU-1", by[bad][1].json.product_id)
    assert.equal("yes", by[good][1].json.script_ran)
    local i = K.live_integration(K.live_event(engine, "dk_script", bad), "amperity")
    assert.matches("10_explode%.lua:%d+: kaboom on purpose", table.concat(i.warnings or {}, "\n"))
  end)
end)
