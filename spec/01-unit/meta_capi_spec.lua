-- spec/01-unit/meta_capi_spec.lua — the Meta Conversions API destination:
-- standard event names per vertical (a literal table), custom_data for
-- catalogs, hashing with known vectors (sha256sum of the normalized value),
-- never hashing twice, fbc from fbclid, the 7-day rule, deduplication ids,
-- and Meta's error codes. Every server event is also checked by the
-- stand-in's own rules (meta_capi/sandbox.lua).
local T = require "signal.testing"
local core = require "signal.core"
local cjson = require "cjson"
local event = require "signal.pipeline.event"
local metrics = require "signal.observe.metrics"
local config = require "signal.config"
local ud = require "signal.destinations.meta_capi.user_data"
local send = require "signal.destinations.meta_capi.send"
local standin = require "signal.destinations.meta_capi.sandbox"

local SETTINGS = { type = "meta_capi", name = "meta", pixel_id = "1234567890", access_token = "EAAGtoken",
                   custom_data_attributes = { PredictedCLV = "predicted_ltv" } }

-- known vectors: printf '%s' <normalized> | sha256sum
local SHA = {
  ["jane.doe@example.com"] = "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d",
  ["12125550142"] = "9ccb6dd66e198e10a558972160d5ce7439017b09612f0e176f96a09078af6015",
  jane = "81f8f6dde88365f3928796ec7aa53f72820b06db8664f5fe76a7eb13e24546a2",
  doe = "799ef92a11af918e3fb741df42934f3b568ed2d93ac1df74f1b8d41a27932a6f",
  cust_10482 = "643eb5e088470a5d0eda00a63788177a589ff29836f5bfc144f1ef76a325b720",
  newyork = "350c754ba4d38897693aa077ef43072a859d23f613443133fecbbd90a3512ca5",
  ny = "1b06e2003f8420d6fa42badd8f77ec0f706b976b7a48b13c567dc5a559681683",
  ["10001"] = "e443169117a184f91186b401133b20be670c7c0896f9886075e5d9b81e9d076b",
  us = "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621",
}

local function map(preset, ev, over, keep_time)
  if not keep_time then ev.timestamp = event.iso8601(core.now() - 2) end
  local opts = { destination = "meta_capi", preset = preset, event = ev }
  for k, v in pairs(SETTINGS) do opts[k] = v end
  for k, v in pairs(over or {}) do opts[k] = v end
  return T.map(opts)
end

local function track(preset, name, props)
  local ev = T.fixture(preset)
  ev.type, ev.event, ev.name, ev.properties = "track", name, nil, props or {}
  return ev
end

local function valid(server_event)
  assert.is_nil(standin.check(server_event, core.now()))
end

local function counted(fn)
  local s = spy.on(metrics, "inc")
  local out = { fn() }
  local kinds = {}
  for _, call in ipairs(s.calls) do
    if call.vals[1] == "signal_payload_corrections_total" then
      kinds[#kinds + 1] = tostring(call.vals[2]):match('kind="([^"]+)"')
    end
  end
  metrics.inc:revert()
  return kinds, unpack(out)
end

describe("Meta event names, per vertical", function()
  -- { preset, Segment/Datafly name (or "page"), Meta event_name }
  local NAMES = {
    { "retail", "page", "PageView" },
    { "retail", "Product Viewed", "ViewContent" },
    { "retail", "Product Added", "AddToCart" },
    { "retail", "Product Added to Wishlist", "AddToWishlist" },
    { "retail", "Checkout Started", "InitiateCheckout" },
    { "retail", "Payment Info Entered", "AddPaymentInfo" },
    { "retail", "Order Completed", "Purchase" },
    { "retail", "Products Searched", "Search" },
    { "retail", "Signed Up", "CompleteRegistration" },
    { "retail", "Lead Generated", "Lead" },
    { "retail", "Gift Card Redeemed", "Gift Card Redeemed" },
    { "travel", "page", "PageView" },
    { "travel", "Flight Searched", "Search" },
    { "travel", "hotel_viewed", "ViewContent" },
    { "travel", "Booking Started", "InitiateCheckout" },
    { "travel", "booking_completed", "Purchase" },
    { "travel", "Signed Up", "CompleteRegistration" },
    { "finance", "page", "PageView" },
    { "finance", "Loan Applied", "SubmitApplication" },
    { "finance", "account_opened", "CompleteRegistration" },
    { "finance", "Lead Generated", "Lead" },
    { "finance", "Contact Requested", "Contact" },
    { "finance", "transaction_completed", "transaction_completed" },
    { "b2b_saas", "page", "PageView" },
    { "b2b_saas", "Signed Up", "CompleteRegistration" },
    { "b2b_saas", "trial_started", "StartTrial" },
    { "b2b_saas", "Subscription Started", "Subscribe" },
    { "b2b_saas", "Demo Requested", "Lead" },
    { "b2b_saas", "Demo Scheduled", "Schedule" },
    { "media", "page", "PageView" },
    { "media", "Video Content Started", "ViewContent" },
    { "media", "podcast_subscribed", "Subscribe" },
    { "media", "Signed Up", "CompleteRegistration" },
    { "gaming", "page", "PageView" },
    { "gaming", "Item Purchased", "Purchase" },
    { "gaming", "Signed Up", "CompleteRegistration" },
    { "gaming", "level_completed", "level_completed" },
    { "publishing", "page", "PageView" },
    { "publishing", "Article Viewed", "ViewContent" },
    { "publishing", "search_performed", "Search" },
    { "publishing", "Subscription Started", "Subscribe" },
    { "publishing", "Newsletter Subscribed", "Lead" },
    { "publishing", "Signed Up", "CompleteRegistration" },
  }
  for _, c in ipairs(NAMES) do
    it(("%s: %s → %s"):format(c[1], c[2], c[3]), function()
      local ev
      if c[2] == "page" then ev = T.fixture("page")
      else ev = track(c[1], c[2], { product_id = "SKU-1", price = 10, currency = "usd", item_id = "it_1" }) end
      local se = map(c[1], ev)
      assert.equal(c[3], se.event_name)
      valid(se)
    end)
  end

  it("sends each vertical's fixture as a valid server event", function()
    for _, v in ipairs({ "retail", "travel", "finance", "b2b_saas", "media", "gaming", "publishing" }) do
      valid(map(v, T.fixture(v)))
    end
  end)

  it("sends nothing for identify, group and alias calls", function()
    local ev = T.fixture("retail")
    ev.type, ev.event = "identify", nil
    assert.is_nil((map("retail", ev)))
  end)
end)

describe("Meta custom_data", function()
  it("carries a purchase's value, currency, order, contents and the Amperity attribute", function()
    local ev = T.fixture("retail")
    ev.partner_attrs.amperity.PredictedCLV = 1240.5
    local cd = map("retail", ev).custom_data
    assert.equal(142.5, cd.value)
    assert.equal("USD", cd.currency)
    assert.equal("ord_50913", cd.order_id)
    assert.equal("product", cd.content_type)
    assert.same({ "SKU-1001", "SKU-2040" }, cd.content_ids)
    assert.same({ { id = "SKU-1001", quantity = 1, item_price = 89 }, { id = "SKU-2040", quantity = 2, item_price = 20 } },
      cd.contents)
    assert.equal(3, cd.num_items)
    assert.equal(1240.5, cd.predicted_ltv)
    -- only allow-listed attributes
    assert.is_nil(cd.Persona)
    assert.is_nil(cd.persona)
  end)

  it("upper-cases the currency and describes a viewed product", function()
    local cd = map("retail", track("retail", "Product Viewed", { product_id = "SKU-9", name = "Shell",
      category = "jackets", price = 120, currency = "eur" })).custom_data
    assert.equal("EUR", cd.currency)
    assert.equal(120, cd.value)
    assert.same({ "SKU-9" }, cd.content_ids)
    assert.equal("Shell", cd.content_name)
    assert.equal("jackets", cd.content_category)
  end)

  it("puts an unknown event's properties in custom_data", function()
    local se = map("retail", track("retail", "Gift Card Redeemed", { card_id = "gc_1", amount = 25 }))
    assert.equal("gc_1", se.custom_data.card_id)
    assert.equal(25, se.custom_data.amount)
  end)
end)

describe("Meta user_data", function()
  it("normalizes then hashes per Meta's rules (known vectors)", function()
    -- { key, raw value, normalized value whose sha256 is expected }
    local CASES = {
      { "em", "  Jane.Doe@Example.COM ", "jane.doe@example.com" },
      { "ph", "+1 (212) 555-0142", "12125550142" },
      { "ph", "001 212 555 0142", "12125550142" },
      { "fn", "Jane", "jane" },
      { "ln", "Doe.", "doe" },
      { "ct", "New York", "newyork" },
      { "st", "NY", "ny" },
      { "zp", "10001-1234", "10001" },
      { "country", "US", "us" },
      { "external_id", " cust_10482 ", "cust_10482" },
    }
    for _, c in ipairs(CASES) do
      assert.equal(SHA[c[3]], ud.hash(c[1], c[2]), c[1] .. " " .. c[2])
    end
  end)

  it("never hashes a hash twice", function()
    local h = SHA["jane.doe@example.com"]
    assert.equal(h, ud.hash("em", h))
    assert.equal(h, ud.hash("em", h:upper()))
  end)

  it("hashes what the event has, and leaves ip, user agent, fbp and fbc as they are", function()
    local se = map("retail", T.fixture("retail"))
    local u = se.user_data
    assert.equal(SHA["jane.doe@example.com"], u.em)
    assert.equal(SHA["12125550142"], u.ph)
    assert.equal(SHA.jane, u.fn)
    assert.equal(SHA.doe, u.ln)
    assert.equal(SHA.cust_10482, u.external_id)
    assert.equal("203.0.113.42", u.client_ip_address)
    assert.matches("^Mozilla/5%.0", u.client_user_agent)
    assert.equal("fb.1.1713366000000.987654321", u.fbp)
    assert.equal("fb.1.1713366000000.IwAR0abc", u.fbc)
  end)

  it("hashes the address from the visitor's traits", function()
    local ev = T.fixture("retail")
    ev.traits.address = { city = "New York", state = "NY", postal_code = "10001", country = "US" }
    local u = map("retail", ev).user_data
    assert.equal(SHA.newyork, u.ct)
    assert.equal(SHA.ny, u.st)
    assert.equal(SHA["10001"], u.zp)
    assert.equal(SHA.us, u.country)
  end)

  it("builds fbc from an fbclid in the page URL when there is no _fbc cookie", function()
    local ev = T.fixture("retail")
    ev.context.vendor_ids.fbc = nil
    ev.context.page.url = "https://shop.example.com/p?utm_source=fb&fbclid=IwAR2xyz_ABC&x=1"
    ev.context.page.search = "?utm_source=fb&fbclid=IwAR2xyz_ABC&x=1"
    local se = map("retail", ev)
    local t = event.parse_iso8601(ev.timestamp)
    assert.equal("fb.1." .. math.floor(t * 1000) .. ".IwAR2xyz_ABC", se.user_data.fbc)
    ev = T.fixture("retail")
    ev.context.vendor_ids.fbc = nil
    assert.is_nil(map("retail", ev).user_data.fbc)
  end)
end)

describe("Meta server events", function()
  it("use the messageId as event_id and the event time in seconds", function()
    local ev = T.fixture("retail")
    local t = core.now() - 600
    ev.timestamp = event.iso8601(t)
    local se = map("retail", ev, nil, true)
    assert.equal("msg_retail_0001", se.event_id)
    assert.equal(math.floor(t), se.event_time)
    assert.equal("website", se.action_source)
    assert.equal("https://shop.example.com/checkout/complete", se.event_source_url)
  end)

  it("are not sent when older than 7 days, and the refusal is counted", function()
    local ev = T.fixture("retail")
    ev.timestamp = event.iso8601(core.now() - 8 * 86400)
    local kinds, se, warnings = counted(function() return map("retail", ev, nil, true) end)
    assert.is_nil(se)
    assert.same({ "event_too_old" }, kinds)
    assert.matches("older than 7 days", warnings[1])
    ev.timestamp = event.iso8601(core.now() - 6 * 86400)
    assert.is_table((map("retail", ev, nil, true)))
  end)

  it("are not sent from a website without a page URL or user agent (Meta refuses the request)", function()
    local ev = T.fixture("retail")
    ev.context.user_agent = nil
    local kinds, se = counted(function() return map("retail", ev) end)
    assert.is_nil(se)
    assert.same({ "website_fields_missing" }, kinds)
    -- a system_generated event needs neither
    ev = T.fixture("retail")
    ev.context.user_agent, ev.context.page = nil, nil
    se = map("retail", ev, { action_source = "system_generated" })
    assert.equal("system_generated", se.action_source)
    valid(se)
  end)

  it("cuts custom event names to 50 characters", function()
    local kinds, se = counted(function()
      return map("retail", track("retail", string.rep("Long Custom Event ", 4), {}))
    end)
    assert.equal(50, #se.event_name)
    assert.same({ "event_name_truncated" }, kinds)
  end)
end)

describe("Meta requests and outcomes", function()
  local cfg = assert(config.validate({ pipelines = { { key = "dk_m", integrations = {
    { type = "meta_capi", pixel_id = "1234567890", access_token = "EAAGsecret-token-value",
      test_event_code = "TEST42" } } } } })).pipelines[1].integrations[1]

  it("posts to /{api_version}/{pixel}/events and shows the URL without the token", function()
    local p = send.prepare(cfg)
    assert.equal("https://graph.facebook.com/v23.0/1234567890/events?access_token=EAAGsecret-token-value", p.url)
    assert.equal("https://graph.facebook.com/v23.0/1234567890/events?access_token=[REDACTED]", p.shown_url)
    assert.equal('],"test_event_code":"TEST42"}', p.tail)
  end)

  it("classifies Meta's error codes", function()
    local function err(code, status)
      return send.classify(status or 400, cjson.encode({ error = { message = "m", type = "OAuthException",
        code = code, fbtrace_id = "AbC" } }))
    end
    assert.equal("delivered", send.classify(200, '{"events_received":1}'))
    assert.equal("permanent", err(190))
    assert.equal("permanent", err(190, 500))      -- a token error is final whatever the status
    for _, code in ipairs({ 4, 17, 32, 613, 80004 }) do assert.equal("retry", err(code), tostring(code)) end
    assert.equal("retry", err(2, 500))
    assert.equal("permanent", err(100))
    assert.equal("retry", send.classify(503, "upstream"))
    assert.equal("permanent", send.classify(404, ""))
  end)

  it("explains a token error with what to do, and a rate limit as retried", function()
    local body = cjson.encode({ error = { message = "Error validating access token: Session has expired",
      type = "OAuthException", code = 190, error_subcode = 463, fbtrace_id = "AxYz" } })
    local hint = send.explain(cfg, { status = 400, class = "permanent", body = body })
    assert.matches("access_token %(code 190, subcode 463%)", hint)
    assert.matches("Events Manager > Settings > Conversions API", hint)
    assert.matches("fbtrace_id AxYz", hint)
    hint = send.explain(cfg, { status = 400, class = "retry",
      body = cjson.encode({ error = { message = "User request limit reached", code = 17 } }) })
    assert.matches("rate limit %(code 17%)", hint)
    assert.matches("retrying", hint)
  end)

  it("says when Meta received fewer events than sent", function()
    local hint = send.explain(cfg, { status = 200, class = "dropped", received = 1, sent = 3,
      body = '{"events_received":1}' })
    assert.matches("received 1 of 3 events", hint)
  end)

  it("refuses settings Meta would refuse", function()
    local function errors(over)
      local integ = { type = "meta_capi", pixel_id = "1234567890", access_token = "EAAG" }
      for k, v in pairs(over) do integ[k] = v end
      local _, errs = config.validate({ pipelines = { { key = "dk_m", integrations = { integ } } } })
      return table.concat(errs or {}, "\n")
    end
    assert.equal("", errors({}))
    assert.matches("pixel_id: must be the pixel", errors({ pixel_id = "px-1" }))
    assert.matches("api_version: must be a Graph API version", errors({ api_version = "23" }))
    assert.matches("action_source: must be one of", errors({ action_source = "web" }))
    assert.matches("access_token: must not contain spaces", errors({ access_token = "EAAG token" }))
  end)
end)

describe("the Meta stand-in's rules", function()
  local function se(over)
    local e = { event_name = "Purchase", event_time = math.floor(core.now()), action_source = "website",
                event_source_url = "https://x.example/", user_data = { client_user_agent = "UA",
                em = SHA["jane.doe@example.com"] } }
    for k, v in pairs(over or {}) do e[k] = v end
    return e
  end
  it("refuses what Meta refuses", function()
    assert.is_nil(standin.check(se(), core.now()))
    assert.matches("7 days", standin.check(se({ event_time = math.floor(core.now()) - 8 * 86400 }), core.now()))
    assert.matches("milliseconds", standin.check(se({ event_time = math.floor(core.now() * 1000) }), core.now()))
    assert.matches("event_source_url", standin.check(se({ event_source_url = false }), core.now()))
    assert.matches("client_user_agent", standin.check(se({ user_data = { em = SHA.jane } }), core.now()))
    assert.matches("hashed", standin.check(se({ user_data = { client_user_agent = "UA", em = "jane@x.com" } }),
      core.now()))
  end)
end)
