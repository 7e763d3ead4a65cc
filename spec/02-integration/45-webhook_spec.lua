-- The webhook destination, end to end beside Amperity in one pipeline: events
-- go in through the real collector, are enriched once with the visitor's
-- Amperity profile, and reach both the Amperity sandbox and the sandbox's
-- webhook receiver, which checks every X-Signal-Signature the way a careful
-- receiver does (HMAC over the raw body, constant-time compare, timestamp
-- tolerance). The spec verifies the signatures again itself, from the bytes
-- the receiver recorded. Retries, dead letters, live events and metrics are
-- the delivery core's, unchanged.
local H = require "helpers"
local K = require "fixtures.tasks.delivery_kit"
local cjson = require "cjson"
local core = require "signal.core"
local webhook = require "signal.destinations.webhook"
local standin = require "signal.destinations.webhook.sandbox"

local FIXTURE, fx = H.PROFILES, H.profiles()
local SECRET = "whsec-spec-3c9d1e7a5b20f486"
local JANE = "3f9c2a71-8d4e-4b6a-9c1f-0a2b3c4d5e01"

describe("the webhook destination's contract", function()
  it("signs as t=<unix>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">", function()
    local sig = webhook.signature("key", "1700000000", '{"a":1}')
    assert.equal("t=1700000000,v1=" .. core.hmac_sha256_hex("key", '1700000000.{"a":1}'), sig)
  end)

  it("is verified by the receiver only with the same secret, the same bytes and a fresh time", function()
    local r = { secret = SECRET, tolerance_s = 300 }
    local body, t = '{"event":"x"}', 1700000000
    local sig = webhook.signature(SECRET, tostring(t), body)
    assert.is_true(standin.verify(r, sig, body, t + 10))
    assert.is_nil(standin.verify(r, sig, body .. " ", t))
    assert.is_nil(standin.verify({ secret = "another-secret-000000", tolerance_s = 300 }, sig, body, t))
    local ok, why = standin.verify(r, sig, body, t + 301)
    assert.is_nil(ok)
    assert.matches("tolerance", why)
    assert.is_nil(standin.verify(r, nil, body, t))
    assert.is_nil(standin.verify(r, "v1=abc", body, t))
  end)

  it("classifies statuses: 2xx delivered, 408/429/5xx retried, the rest permanent", function()
    for _, c in ipairs({ { 200, "delivered" }, { 204, "delivered" }, { 408, "retry" }, { 429, "retry" },
                         { 500, "retry" }, { 503, "retry" }, { 400, "permanent" }, { 401, "permanent" },
                         { 404, "permanent" }, { 410, "permanent" } }) do
      assert.equal(c[2], webhook.classify(c[1]), tostring(c[1]))
    end
  end)

  it("refuses a secret too short to sign with and headers Signal sets itself", function()
    local config = require "signal.config"
    local function errors(over)
      local integ = { type = "webhook", url = "https://hooks.example.com/in", signing_secret = SECRET }
      for k, v in pairs(over) do integ[k] = v end
      local _, errs = config.validate({ pipelines = { { key = "dk_w", integrations = { integ } } } })
      return table.concat(errs or {}, "\n")
    end
    assert.matches("signing_secret: must be at least 16 characters", errors({ signing_secret = "short" }))
    assert.matches("cannot set Content%-Type", errors({ headers = { ["Content-Type"] = "text/plain" } }))
    assert.matches("url: must be an http", errors({ url = "ftp://x" }))
    assert.equal("", errors({ headers = { Authorization = "Bearer receiver-token" }, batch_size = 10 }))
  end)
end)

describe("a pipeline with Amperity and a webhook", function()
  local sb, eng
  local PK = "dk_test_webhook"

  local function hooks(path)
    local res = assert(H.request("GET", sb.url .. "/_sandbox/requests?limit=100000&prefix=" .. (path or "/hooks/")))
    return cjson.decode(res.body).requests
  end

  -- every event the webhook receiver accepted, by message_id
  local function received(path)
    local out = {}
    for _, r in ipairs(hooks(path)) do
      if r.status == 200 then
        local list = r.json[1] ~= nil and r.json or { r.json }
        for _, ev in ipairs(list) do out[ev.message_id] = { event = ev, request = r } end
      end
    end
    return out
  end

  local function wait_received(mids, path)
    return H.eventually(function()
      local got = received(path)
      for _, m in ipairs(mids) do if not got[m] then return false end end
      return got
    end, 20, "the webhook received every event")
  end

  local function receiver(path, secret)
    local res = assert(H.request("POST", sb.url .. "/_sandbox/webhooks", { ["content-type"] = "application/json" },
      cjson.encode({ path = path, secret = secret or SECRET })))
    assert.equal(200, res.status, res.body)
  end

  local function hook(name, over)
    local i = { type = "webhook", name = name, url = sb.url .. "/hooks/" .. name, signing_secret = SECRET,
                headers = { Authorization = "Bearer receiver-token-4411" } }
    for k, v in pairs(over or {}) do i[k] = v end
    return i
  end

  setup(function()
    H.flush_redis()
    sb = H.sandbox(FIXTURE)
    local amp = K.integ(sb, { profile_api_key = fx.profile_token, profile_collection_id = "apc-demo",
      linking_keys = { { source = "email", key = "email_sha256", hash = "sha256" } } })
    eng = K.engine(K.config({ [PK] = { amp, hook("orders"), hook("batched", { batch_size = 5 }),
                                       hook("slow", { timeout_ms = 20000 }) } },
                            { enrichment = { budget_ms = 2000 }, live_events_max = 200 }))
  end)
  teardown(function()
    if eng then eng:stop() end
    if sb then sb:stop() end
  end)

  before_each(function()
    K.reset(sb)
    receiver("/hooks/orders")
    receiver("/hooks/batched")
    receiver("/hooks/slow")
  end)

  it("delivers every event to both, signed, with Amperity's attributes in the webhook payload", function()
    local mids = {}
    for i = 1, 3 do
      mids[i] = K.send(eng, PK, { product_id = "SKU-" .. i, price = 10 * i },
                       { traits = { email = "jane.doe@example.com" } })
    end
    K.wait_delivered(sb, mids)
    local got = wait_received(mids, "/hooks/orders")
    for _, m in ipairs(mids) do
      local ev, r = got[m].event, got[m].request
      -- the enrichment ran once and every destination sees it
      assert.equal("Value Hunter", ev.partner_attrs.amperity.Persona)
      assert.equal(JANE, ev.amperity_id)
      -- nested JSON as the pipeline has it
      assert.equal("Product Viewed", ev.event)
      assert.is_table(ev.properties)
      -- the signature verifies over the bytes received, with the shared secret
      local t, sig = r.headers["x-signal-signature"]:match("^t=(%d+),v1=(%x+)$")
      assert.equal(core.hmac_sha256_hex(SECRET, t .. "." .. r.body), sig)
      assert.is_true(math.abs(core.now() - tonumber(t)) < 300)
      assert.equal("Bearer receiver-token-4411", r.headers.authorization)
      assert.equal("application/json", r.headers["content-type"])
    end
  end)

  it("sends batches as JSON arrays of at most batch_size events", function()
    local mids = K.send_many(eng, PK, 12)
    wait_received(mids, "/hooks/batched")
    local sizes = {}
    for _, r in ipairs(hooks("/hooks/batched")) do
      if r.status == 200 then
        assert.is_true(r.json[1] ~= nil, "a batched request is a JSON array")
        assert.is_true(#r.json <= 5)
        sizes[#sizes + 1] = #r.json
      end
    end
    local total = 0
    for _, n in ipairs(sizes) do total = total + n end
    assert.equal(12, total)
    assert.is_true(#sizes < 12, "events were batched: " .. table.concat(sizes, ","))
  end)

  it("retries a webhook that is down without delaying Amperity, then delivers", function()
    K.fault(sb, { prefix = "/hooks/orders", status = 503, times = 1000 })
    local mids = K.send_many(eng, PK, 5)
    -- Amperity has every event while the webhook has none of them
    K.wait_delivered(sb, mids)
    H.eventually(function()
      local failed = 0
      for _, r in ipairs(hooks("/hooks/orders")) do if r.status == 503 then failed = failed + 1 end end
      return failed >= 5
    end, 15, "the webhook was tried and answered 503")
    assert.same({}, received("/hooks/orders"))
    H.eventually(function()
      return (K.metric(eng, 'signal_delivery_retries_total{integration="orders",pipeline="' .. PK .. '"}') or 0) >= 5
    end, 10, "the retries are counted")
    -- the receiver is back: the retries deliver
    assert.equal(200, H.request("DELETE", sb.url .. "/_sandbox/faults").status)
    wait_received(mids, "/hooks/orders")
  end)

  it("keeps delivering to Amperity while a slow webhook holds its requests", function()
    K.fault(sb, { prefix = "/hooks/slow", latency_ms = 4000 })
    local mids = K.send_many(eng, PK, 6)
    K.wait_delivered(sb, mids)
    -- every Amperity delivery is done while the slow webhook has not answered one
    local answered = 0
    for _, r in ipairs(hooks("/hooks/slow")) do if r.status == 200 then answered = answered + 1 end end
    assert.equal(0, answered)
    wait_received(mids, "/hooks/slow")
  end)

  it("dead-letters what the receiver refuses, says why, and shows the request in live events", function()
    receiver("/hooks/orders", "a-different-secret-9999")
    local mid = K.send(eng, PK)
    local dlq = H.eventually(function()
      for _, e in ipairs(K.xrange(H.redis(), require("signal.redis.keys").dlq(PK, "orders"))) do
        if e.m == mid then return e end
      end
    end, 15, "the refused event is a dead letter")
    assert.equal("401", dlq.s)
    assert.equal("final", dlq.k)
    assert.matches("signing_secret", dlq.e)
    -- the live event names the request without the secret, the signature or the header's value
    local live = H.eventually(function()
      local ev = K.live_event(eng, PK, mid)
      local i = K.live_integration(ev, "orders")
      return i and i.requests and i.requests[1] and { ev = ev, req = i.requests[1] }
    end, 10, "the live event has the webhook request")
    assert.equal(401, live.req.status)
    assert.equal("[REDACTED]", live.req.headers.Authorization)
    assert.matches("^t=%d+,v1=%[REDACTED%]$", live.req.headers["X-Signal-Signature"])
    local raw = cjson.encode(live.ev)
    assert.is_nil(raw:find(SECRET, 1, true))
    assert.is_nil(raw:find("receiver-token-4411", 1, true))
  end)
end)
