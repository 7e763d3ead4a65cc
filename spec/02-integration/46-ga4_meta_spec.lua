-- GA4 and Meta's Conversions API end to end, beside Amperity in one
-- pipeline: events go in through the real collector, are enriched once with
-- the visitor's Amperity profile, and reach the sandbox's stand-ins of the
-- three vendors over loopback. Assertions are on what the stand-ins
-- received and accepted (GA4's "collected" list applies Google's rules;
-- Meta's refuses what Meta refuses), on live events and on /metrics.
local H = require "helpers"
local K = require "fixtures.tasks.delivery_kit"
local cjson = require "cjson"
local core = require "signal.core"
local queue = require "signal.redis.keys"

local FIXTURE, fx = H.PROFILES, H.profiles()
local PK = "dk_test_ga4_meta"
local PIXEL = fx.meta.pixels[1]
local JANE_EMAIL_SHA = "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d"
local UA = "Mozilla/5.0 (X11; Linux x86_64) SignalSpec/1.0"
local GA_COOKIE = "GA1.1.1234567890.1713366000"

local GRANTED = { analytics = true, marketing = true }

describe("a pipeline with Amperity, GA4 and Meta", function()
  local sb, eng

  local function get(path)
    local res = assert(H.request("GET", sb.url .. path))
    assert.equal(200, res.status, res.body)
    return cjson.decode(res.body)
  end

  local function requests(prefix) return get("/_sandbox/requests?limit=100000&prefix=" .. prefix).requests end

  -- one track event through the collector, as a browser sends it
  local function send(name, props, consent, extra)
    local mid = "mid-" .. core.uuid()
    local msg = { type = "track", event = name, anonymousId = "anon-" .. core.random_hex(4), messageId = mid,
                  properties = props or {}, traits = { email = "jane.doe@example.com" },
                  context = { consent = consent, vendorIds = { ga = GA_COOKIE, fbp = "fb.1.1713366000000.42" },
                              session = { id = "sess-spec-1", count = 2 },
                              page = { url = "https://shop.example.com/checkout?fbclid=IwAR_spec",
                                       title = "Checkout", search = "?fbclid=IwAR_spec" } } }
    for k, v in pairs(extra or {}) do msg[k] = v end
    local res = assert(H.request("POST", eng.url .. "/v1/t", { ["content-type"] = "application/json",
      ["x-pipeline-key"] = PK, ["user-agent"] = UA }, cjson.encode(msg)))
    assert(res.status == 200, "collector answered " .. res.status .. ": " .. res.body)
    return mid
  end

  local function ga4_collected(pred, what)
    return H.eventually(function()
      for _, c in ipairs(get("/_sandbox/ga4").collected) do
        if pred(c) then return c end
      end
    end, 20, what or "GA4 collected the event")
  end

  local function meta_received(mid)
    return H.eventually(function()
      for _, r in ipairs(get("/_sandbox/meta").events) do
        if r.event.event_id == mid then return r end
      end
    end, 20, "Meta received the event")
  end

  setup(function()
    H.flush_redis()
    sb = H.sandbox(FIXTURE)
    local amp = K.integ(sb, { profile_api_key = fx.profile_token, profile_collection_id = "apc-demo",
      linking_keys = { { source = "email", key = "email_sha256", hash = "sha256" } } })
    eng = K.engine(K.config({ [PK] = {
      amp,
      { type = "ga4", measurement_id = "G-SPEC123", api_secret = fx.ga4.api_secret, base_url = sb.url,
        user_properties = "Persona" },
      { type = "meta_capi", name = "meta", pixel_id = PIXEL, access_token = fx.meta.access_token,
        base_url = sb.url, custom_data_attributes = { PredictedCLV = "predicted_ltv" } },
      { type = "meta_capi", name = "meta_bad", pixel_id = PIXEL, access_token = "EAAGrevokedTokenSpec77",
        base_url = sb.url, consent_required = {} },
    } }, { enrichment = { budget_ms = 2000 }, live_events_max = 200 }))
  end)
  teardown(function()
    if eng then eng:stop() end
    if sb then sb:stop() end
  end)

  before_each(function() K.reset(sb) end)

  it("delivers one event to all three, with the visitor's Amperity attribute in GA4 and Meta", function()
    local order = "ord-" .. core.random_hex(6)
    local mid = send("Order Completed", { order_id = order, value = 109, currency = "usd",
      products = { { product_id = "SKU-1001", name = "Trail Runner 2", price = 89, quantity = 1 },
                   { product_id = "SKU-2040", name = "Running Socks", price = 10, quantity = 2 } } }, GRANTED)
    -- Amperity, with the consent nested as the page sent it
    local amp = K.wait_delivered(sb, { mid })[mid][1].json
    assert.same(GRANTED, amp.consent)
    -- GA4: a purchase of the browser's client, the Persona as a user property
    local c = ga4_collected(function(x) return x.params and x.params.transaction_id == order end)
    assert.equal("G-SPEC123", c.measurement_id)
    assert.equal("purchase", c.name)
    assert.equal("1234567890.1713366000", c.client_id)
    assert.same({ persona = { value = "Value Hunter" } }, c.user_properties)
    assert.equal(109, c.params.value)
    assert.equal("usd", c.params.currency)
    assert.equal(2, #c.params.items)
    assert.equal("SKU-1001", c.params.items[1].item_id)
    assert.is_number(c.params.session_id)
    assert.equal(1, c.params.engagement_time_msec)
    assert.is_true(math.abs(c.timestamp_micros / 1e6 - core.now()) < 120)
    -- Meta: a Purchase deduplicated by the messageId, hashed email, predicted value
    local m = meta_received(mid).event
    assert.equal("Purchase", m.event_name)
    assert.equal(JANE_EMAIL_SHA, m.user_data.em)
    assert.equal(UA, m.user_data.client_user_agent)
    assert.equal("fb.1.1713366000000.42", m.user_data.fbp)
    assert.matches("^fb%.1%.%d+%.IwAR_spec$", m.user_data.fbc)
    assert.equal(1240.5, m.custom_data.predicted_ltv)
    assert.equal("USD", m.custom_data.currency)
    assert.equal(order, m.custom_data.order_id)
    assert.same({ "SKU-1001", "SKU-2040" }, m.custom_data.content_ids)
    assert.is_true(math.abs(m.event_time - core.now()) < 120)
    -- the credentials went where the vendors expect them
    local g = requests("/mp/collect")[1]
    assert.equal(fx.ga4.api_secret, g.params.api_secret)
    assert.equal("G-SPEC123", g.params.measurement_id)
    local mr
    for _, r in ipairs(requests("/v")) do if r.status == 200 then mr = r end end
    assert.equal(fx.meta.access_token, mr.params.access_token)
  end)

  it("sends to each destination only what the visitor consented to; Amperity gets every event", function()
    local order = "ord-" .. core.random_hex(6)
    local mid = send("Order Completed", { order_id = order, value = 5, currency = "USD" },
                     { analytics = true, marketing = false })
    local none = send("Order Completed", { order_id = order .. "-none", value = 5, currency = "USD" }, nil)
    local delivered = K.wait_delivered(sb, { mid, none })
    assert.same({ analytics = true, marketing = false }, delivered[mid][1].json.consent)
    assert.is_nil(delivered[none][1].json.consent)
    ga4_collected(function(x) return x.params and x.params.transaction_id == order end)
    -- meta_bad sends regardless (consent_required = {}): once it was tried, Meta's turn is over
    H.eventually(function()
      for _, r in ipairs(requests("/v")) do
        if r.status == 400 and r.body:find(order .. "-none", 1, true) then return true end
      end
    end, 20, "the integration without a consent rule was tried")
    for _, r in ipairs(get("/_sandbox/meta").events) do
      assert.not_equal(mid, r.event.event_id)
      assert.not_equal(none, r.event.event_id)
    end
    for _, x in ipairs(get("/_sandbox/ga4").collected) do
      assert.not_equal(order .. "-none", x.params and x.params.transaction_id)
    end
    -- visible in live events and counted
    local live = H.eventually(function()
      local ev = K.live_event(eng, PK, mid)
      local i = K.live_integration(ev, "meta")
      return i and i.skipped and i
    end, 10, "the live event says why Meta was skipped")
    assert.equal("consent: needs marketing", live.skipped)
    local ev = K.live_event(eng, PK, none)
    assert.equal("consent: needs analytics", K.live_integration(ev, "ga4").skipped)
    assert.is_nil(K.live_integration(ev, "amperity").skipped)
    H.eventually(function()
      return (K.metric(eng, 'signal_payloads_consent_blocked_total{integration="meta",pipeline="' .. PK .. '"}')
        or 0) >= 2
    end, 10, "the blocked events are counted")
  end)

  it("sends one client's events to GA4 in requests of at most 25", function()
    local batch = {}
    local tag = core.random_hex(4)
    for i = 1, 30 do
      batch[i] = { type = "track", event = "Product Viewed", anonymousId = "anon-batch", messageId = "mid-b-" .. i
        .. "-" .. tag, properties = { product_id = "SKU-" .. tag, price = i, currency = "USD" },
        context = { consent = GRANTED, vendorIds = { ga = "GA1.1.555." .. tag:byte(1) },
                    page = { url = "https://shop.example.com/p" } } }
    end
    local res = assert(H.request("POST", eng.url .. "/v1/batch", { ["content-type"] = "application/json",
      ["x-pipeline-key"] = PK, ["user-agent"] = UA }, cjson.encode({ batch = batch })))
    assert.equal(200, res.status, res.body)
    local reqs = H.eventually(function()
      local n, list = 0, {}
      for _, r in ipairs(requests("/mp/collect")) do
        if r.json and r.json.client_id == "555." .. tag:byte(1) then
          n = n + #r.json.events
          list[#list + 1] = r
        end
      end
      return n >= 30 and list
    end, 20, "GA4 received the 30 events")
    local total = 0
    for _, r in ipairs(reqs) do
      assert.is_true(#r.json.events <= 25)
      total = total + #r.json.events
    end
    assert.equal(30, total)
    assert.is_true(#reqs < 30, "events were merged: " .. #reqs .. " requests")
  end)

  it("dead-letters what Meta refuses for a bad token, says what to do, and shows no secret", function()
    local mid = send("Product Viewed", { product_id = "SKU-1", price = 3, currency = "USD" }, GRANTED)
    local dlq = H.eventually(function()
      for _, e in ipairs(K.xrange(H.redis(), queue.dlq(PK, "meta_bad"))) do
        if e.m == mid then return e end
      end
    end, 20, "the refused event is a dead letter")
    assert.equal("400", dlq.s)
    assert.equal("final", dlq.k)
    assert.matches("access_token %(code 190%)", dlq.e)
    assert.matches("Conversions API", dlq.e)
    meta_received(mid)
    local live = H.eventually(function()
      local ev = K.live_event(eng, PK, mid)
      local bad, ga4 = K.live_integration(ev, "meta_bad"), K.live_integration(ev, "ga4")
      return bad and bad.requests[1] and ga4 and ga4.requests[1] and { ev = ev, bad = bad.requests[1],
                                                                        ga4 = ga4.requests[1] }
    end, 10, "the live event has both requests")
    assert.equal(400, live.bad.status)
    assert.matches("access_token=%[REDACTED%]$", live.bad.url)
    assert.matches("api_secret=%[REDACTED%]$", live.ga4.url)
    local raw = cjson.encode(live.ev)
    assert.is_nil(raw:find(fx.ga4.api_secret, 1, true))
    assert.is_nil(raw:find(fx.meta.access_token, 1, true))
    assert.is_nil(raw:find("EAAGrevokedTokenSpec77", 1, true))
  end)

  it("retries Meta's rate limits with backoff, then delivers", function()
    K.fault(sb, { prefix = "/v23.0/" .. PIXEL .. "/events", status = 400, times = 2,
      body = cjson.encode({ error = { message = "(#17) User request limit reached", type = "OAuthException",
                                      code = 17, fbtrace_id = "ArateSpec" } }) })
    local mid = send("Product Added", { product_id = "SKU-7", price = 7, currency = "USD" }, GRANTED)
    meta_received(mid)
    H.eventually(function()
      return (K.metric(eng, 'signal_delivery_retries_total{integration="meta",pipeline="' .. PK .. '"}') or 0) >= 1
    end, 10, "the retry is counted")
  end)

  it("shows and counts every correction it made to fit GA4's limits", function()
    -- an event no preset handler knows: its properties go as params
    local tag = "t-" .. core.random_hex(6)
    local mid = send("Gift Wrapped", { tag = tag, gift_message = string.rep("x", 150), ga_internal = "no" }, GRANTED)
    local c = ga4_collected(function(x) return x.params and x.params.tag == tag end)
    assert.equal("gift_wrapped", c.name)
    assert.equal(100, #c.params.gift_message)
    assert.is_nil(c.params.ga_internal)
    local integ = H.eventually(function()
      local i = K.live_integration(K.live_event(eng, PK, mid), "ga4")
      return i and i.warnings and i
    end, 10, "the live event has the corrections")
    local text = table.concat(integ.warnings, "\n")
    assert.matches("param gift_message truncated to 100 characters", text)
    assert.matches("ga_internal' uses a prefix reserved by Google", text)
    H.eventually(function()
      return (K.metric(eng, 'signal_payload_corrections_total{integration="ga4",kind="param_value_truncated",'
        .. 'pipeline="' .. PK .. '"}') or 0) >= 1
    end, 10, "the correction is counted")
  end)

  it("checks the configuration against the vendors with signal check --live", function()
    local path = H.tmp .. "/live-" .. core.random_hex(4) .. ".conf.lua"
    H.write(path, "return " .. H.serialize({ pipelines = { { key = PK, integrations = {
      { type = "ga4", measurement_id = "G-SPEC123", api_secret = fx.ga4.api_secret, base_url = sb.url },
      { type = "meta_capi", pixel_id = PIXEL, access_token = fx.meta.access_token, base_url = sb.url,
        test_event_code = "TEST4242" },
      { type = "meta_capi", name = "bad", pixel_id = PIXEL, access_token = "EAAGwrongSpecToken", base_url = sb.url },
    } } } }) .. "\n")
    local out = H.tmp .. "/live-" .. core.random_hex(4) .. ".out"
    local ok, _, code = os.execute(H.sh_quote(H.bin) .. " check --live -c " .. H.sh_quote(path) .. " >" .. out
      .. " 2>&1")
    if type(ok) == "number" then code = ok / 256 end
    local text = H.read(out)
    assert.equal(1, code, text)
    assert.matches(PK .. " ga4 %(ga4%): ok: valid", text)
    assert.matches(PK .. " meta_capi %(meta_capi%): ok: pixel " .. PIXEL .. ": a test PageView was received", text)
    assert.matches(PK .. " bad %(meta_capi%): FAILED: Meta rejected the access_token %(code 190%)", text)
    assert.is_nil(text:find(fx.meta.access_token, 1, true))
    -- the probe used the validation server and Meta's Test Events, nothing else
    assert.equal(1, #requests("/debug/mp/collect"))
    assert.equal(0, #requests("/mp/collect"))
    assert.equal(1, #get("/_sandbox/meta").test_events)
  end)
end)
