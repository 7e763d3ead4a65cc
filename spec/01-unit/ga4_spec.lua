-- spec/01-unit/ga4_spec.lua — the GA4 destination, from the mapped event to
-- the request: names per vertical (a literal table), e-commerce params,
-- client and session, consent, user properties from Amperity attributes,
-- every Measurement Protocol limit enforced as a counted correction, the
-- merged request of one client, outcomes and explanations. Every body is
-- also checked by the stand-in's own validation (ga4/sandbox.lua), which is
-- written independently from Google's rules.
local T = require "signal.testing"
local core = require "signal.core"
local cjson = require "cjson"
local event = require "signal.pipeline.event"
local metrics = require "signal.observe.metrics"
local config = require "signal.config"
local send = require "signal.destinations.ga4.send"
local payload = require "signal.destinations.ga4.payload"
local identity = require "signal.destinations.ga4.identity"
local standin = require "signal.destinations.ga4.sandbox"

local SETTINGS = { type = "ga4", name = "ga4", measurement_id = "G-TEST123", api_secret = "ga4-secret-xyz",
                   user_properties = "Persona,LifetimeTier" }

local function now_iso(ago) return event.iso8601(core.now() - (ago or 2)) end

-- map(preset, event) → body, warnings (the event is stamped "now")
local function map(preset, ev, over)
  ev.timestamp = ev.timestamp == "keep" and nil or now_iso()
  local opts = { destination = "ga4", preset = preset, event = ev }
  for k, v in pairs(SETTINGS) do opts[k] = v end
  for k, v in pairs(over or {}) do opts[k] = v end
  return T.map(opts)
end

local function track(preset, name, props)
  local ev = T.fixture(preset == "page" and "page" or preset)
  ev.type, ev.event, ev.name, ev.properties = "track", name, nil, props or {}
  return ev
end

local function valid(body)
  local list = standin.validate(cjson.encode(body))
  assert.same({}, list, "the stand-in refused: " .. cjson.encode(list))
end

-- the kinds of corrections counted while fn runs
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

describe("GA4 event names, per vertical", function()
  -- { preset, Segment/Datafly name (or "page"), GA4 name }
  local NAMES = {
    { "retail", "page", "page_view" },
    { "retail", "Product Viewed", "view_item" },
    { "retail", "Product List Viewed", "view_item_list" },
    { "retail", "Product Added", "add_to_cart" },
    { "retail", "Product Removed", "remove_from_cart" },
    { "retail", "Cart Viewed", "view_cart" },
    { "retail", "Checkout Started", "begin_checkout" },
    { "retail", "Payment Info Entered", "add_payment_info" },
    { "retail", "Order Completed", "purchase" },
    { "retail", "Order Refunded", "refund" },
    { "retail", "Products Searched", "search" },
    { "retail", "Signed Up", "sign_up" },
    { "retail", "Logged In", "login" },
    { "retail", "Wishlist Shared Twice", "wishlist_shared_twice" },
    { "travel", "page", "page_view" },
    { "travel", "Flight Searched", "search" },
    { "travel", "hotel_searched", "search" },
    { "travel", "Hotel Viewed", "view_item" },
    { "travel", "Booking Started", "begin_checkout" },
    { "travel", "booking_completed", "purchase" },
    { "travel", "Booking Cancelled", "refund" },
    { "travel", "Signed Up", "sign_up" },
    { "travel", "Loyalty Points Earned", "loyalty_points_earned" },
    { "finance", "page", "page_view" },
    { "finance", "Loan Applied", "generate_lead" },
    { "finance", "card_approved", "qualify_lead" },
    { "finance", "Account Opened", "close_convert_lead" },
    { "finance", "login_succeeded", "login" },
    { "finance", "Signed Up", "sign_up" },
    { "finance", "transaction_completed", "transaction_completed" },
    { "b2b_saas", "page", "page_view" },
    { "b2b_saas", "Signed Up", "sign_up" },
    { "b2b_saas", "logged_in", "login" },
    { "b2b_saas", "Demo Requested", "generate_lead" },
    { "b2b_saas", "Subscription Started", "purchase" },
    { "b2b_saas", "Feature Used", "feature_used" },
    { "media", "page", "page_view" },
    { "media", "Video Playback Started", "video_start" },
    { "media", "video_content_milestone", "video_progress" },
    { "media", "Video Playback Completed", "video_complete" },
    { "media", "Content Shared", "share" },
    { "media", "Signed Up", "sign_up" },
    { "media", "Podcast Subscribed", "podcast_subscribed" },
    { "gaming", "page", "page_view" },
    { "gaming", "Level Started", "level_start" },
    { "gaming", "level_completed", "level_end" },
    { "gaming", "Level Failed", "level_end" },
    { "gaming", "Tutorial Completed", "tutorial_complete" },
    { "gaming", "Achievement Unlocked", "unlock_achievement" },
    { "gaming", "Currency Spent", "spend_virtual_currency" },
    { "gaming", "Item Purchased", "purchase" },
    { "gaming", "Match Completed", "post_score" },
    { "gaming", "Logged In", "login" },
    { "publishing", "page", "page_view" },
    { "publishing", "Article Viewed", "select_content" },
    { "publishing", "Article Shared", "share" },
    { "publishing", "search_performed", "search" },
    { "publishing", "Subscription Started", "purchase" },
    { "publishing", "Newsletter Subscribed", "sign_up" },
    { "publishing", "Paywall Viewed", "paywall_viewed" },
  }
  for _, c in ipairs(NAMES) do
    it(("%s: %s → %s"):format(c[1], c[2], c[3]), function()
      local ev
      if c[2] == "page" then
        ev = T.fixture("page")
      else
        ev = track(c[1], c[2], { product_id = "SKU-1", price = 10, currency = "USD", plan = "team", value = 10 })
      end
      local body = map(c[1], ev)
      assert.equal(c[3], body.events[1].name)
      valid(body)
    end)
  end

  it("sends each vertical's fixture as a valid request", function()
    for _, v in ipairs({ "retail", "travel", "finance", "b2b_saas", "media", "gaming", "publishing" }) do
      local body = map(v, T.fixture(v))
      assert.is_string(body.events[1].name, v)
      valid(body)
    end
  end)

  it("sends nothing for identify, group and alias calls", function()
    local ev = T.fixture("retail")
    ev.type, ev.event = "identify", nil
    assert.is_nil((map("retail", ev)))
  end)
end)

describe("GA4 e-commerce params", function()
  it("makes Order Completed a purchase with transaction_id, value, currency and items", function()
    local body = map("retail", T.fixture("retail"))
    local p = body.events[1].params
    assert.equal("purchase", body.events[1].name)
    assert.equal("ord_50913", p.transaction_id)
    assert.equal(142.5, p.value)
    assert.equal("USD", p.currency)
    assert.equal(10.5, p.tax)
    assert.equal(8, p.shipping)
    assert.equal("SPRING5", p.coupon)
    assert.same({
      { item_id = "SKU-1001", item_name = "Trail Runner 2", price = 89, quantity = 1 },
      { item_id = "SKU-2040", item_name = "Running Socks", price = 20, quantity = 2 },
    }, p.items)
  end)

  it("makes the product a Product Viewed describes its one item", function()
    local body = map("retail", track("retail", "Product Viewed", { product_id = "SKU-9", name = "Shell",
      brand = "Northpeak", category = "jackets", variant = "blue", price = 120, currency = "EUR" }))
    local p = body.events[1].params
    assert.equal(120, p.value)
    assert.equal("EUR", p.currency)
    assert.same({ { item_id = "SKU-9", item_name = "Shell", item_brand = "Northpeak", item_category = "jackets",
                    item_variant = "blue", price = 120 } }, p.items)
  end)

  it("passes GA4-style items through", function()
    local items = { { item_id = "A", item_name = "Alpha", price = 5, quantity = 3 } }
    local body = map("retail", track("retail", "add_to_cart", { items = items, currency = "USD", value = 15 }))
    assert.same(items, body.events[1].params.items)
  end)

  it("makes a search carry search_term and a page_view its page", function()
    local body = map("retail", track("retail", "Products Searched", { query = "trail shoes" }))
    assert.equal("trail shoes", body.events[1].params.search_term)
    body = map("retail", T.fixture("page"))
    local p = body.events[1].params
    assert.equal("https://shop.example.com/c/running-shoes", p.page_location)
    assert.equal("https://www.google.com/", p.page_referrer)
    assert.equal("Running Shoes | Acme", p.page_title)
  end)

  it("sends an unknown event's properties as params of a snake_case custom event", function()
    local body = map("retail", track("retail", "Gift Card Redeemed", { card_id = "gc_1", amount = 25 }))
    assert.equal("gift_card_redeemed", body.events[1].name)
    assert.equal("gc_1", body.events[1].params.card_id)
    assert.equal(25, body.events[1].params.amount)
  end)
end)

describe("GA4 client, session, time and consent", function()
  it("takes client_id from the _ga cookie, else the anonymous id", function()
    assert.equal("1234567890.1713366000", identity.from_ga_cookie("GA1.1.1234567890.1713366000"))
    assert.equal("1234567890.1713366000", identity.from_ga_cookie("GA1.2.1234567890.1713366000"))
    assert.is_nil(identity.from_ga_cookie("junk"))
    local body = map("retail", T.fixture("retail"))
    assert.equal("1234567890.1713366000", body.client_id)
    local ev = T.fixture("retail")
    ev.context.vendor_ids = nil
    assert.equal(ev.anonymous_id, map("retail", ev).client_id)
  end)

  it("sends user_id, session_id and engagement_time_msec so events show in realtime reports", function()
    local body = map("retail", T.fixture("retail"))
    assert.equal("cust_10482", body.user_id)
    local p = body.events[1].params
    assert.equal(1, p.engagement_time_msec)
    assert.is_number(p.session_id)
    -- one datafly.js session is one GA4 session; another is another
    local again = map("retail", T.fixture("travel")).events[1].params.session_id
    assert.equal(p.session_id, again)
    local ev = T.fixture("retail")
    ev.context.session.id = "another-session"
    assert.not_equal(p.session_id, map("retail", ev).events[1].params.session_id)
  end)

  it("uses the _ga_<id> session cookie when the sender passes it (both formats)", function()
    assert.same({ 1713366000, 4 }, { identity.from_session_cookie("GS1.1.1713366000.4.1.1713366100.0.0.0") })
    assert.same({ 1713366001, 7 }, { identity.from_session_cookie("GS2.1.s1713366001$o7$g1$t1713366100$j0$l0$h0") })
    local ev = T.fixture("retail")
    ev.context.vendor_ids.ga_session = "GS2.1.s1713366001$o7$g1$t1713366100$j0$l0$h0"
    assert.equal(1713366001, map("retail", ev).events[1].params.session_id)
  end)

  it("sends the event time as timestamp_micros", function()
    local ev = T.fixture("retail")
    ev.timestamp = "keep"
    local t = core.now() - 3600
    ev.timestamp = event.iso8601(t)
    local opts = { destination = "ga4", preset = "retail", event = ev }
    for k, v in pairs(SETTINGS) do opts[k] = v end
    local body = T.map(opts)
    local ms = math.floor(event.parse_iso8601(ev.timestamp) * 1000 + 0.5)
    assert.equal(ms * 1000, body.timestamp_micros)
    assert.is_true(math.abs(body.timestamp_micros / 1e6 - t) < 0.001)
  end)

  it("does not backdate past 72 hours: the event goes without a timestamp, and says so", function()
    local ev = T.fixture("retail")
    ev.timestamp = event.iso8601(core.now() - 73 * 3600)
    local opts = { destination = "ga4", preset = "retail", event = ev }
    for k, v in pairs(SETTINGS) do opts[k] = v end
    local kinds, body, warnings = counted(function() return T.map(opts) end)
    assert.is_nil(body.timestamp_micros)
    assert.same({ "timestamp_too_old" }, kinds)
    assert.matches("72 h", warnings[1])
    valid(body)
  end)

  it("maps Consent Mode's ad_user_data and ad_personalization", function()
    local ev = T.fixture("retail")
    ev.context.consent = { analytics = true, google = { ad_user_data = "granted", ad_personalization = "denied" } }
    assert.same({ ad_user_data = "GRANTED", ad_personalization = "DENIED" }, map("retail", ev).consent)
    ev = T.fixture("retail")
    ev.context.consent = { analytics = true, marketing = true }
    assert.same({ ad_user_data = "GRANTED", ad_personalization = "GRANTED" }, map("retail", ev).consent)
    ev = T.fixture("retail")
    ev.context.consent = { analytics = true }
    assert.is_nil(map("retail", ev).consent)
  end)
end)

describe("GA4 user properties", function()
  it("are the allow-listed Amperity attributes, nothing else", function()
    local body = map("retail", T.fixture("retail"))
    assert.same({ persona = { value = "Value Hunter" }, lifetime_tier = { value = "Gold" } }, body.user_properties)
    body = map("retail", T.fixture("retail"), { user_properties = { FavoriteBrand = "brand" } })
    assert.same({ brand = { value = "Acme Running" } }, body.user_properties)
    body = map("retail", T.fixture("retail"), { user_properties = {} })
    assert.is_nil(body.user_properties)
  end)

  it("are cut to 36 characters, and the cut is counted and shown", function()
    local ev = T.fixture("retail")
    ev.partner_attrs.amperity.Persona = string.rep("x", 50)
    local kinds, body, warnings = counted(function() return map("retail", ev) end)
    assert.equal(36, #body.user_properties.persona.value)
    assert.same({ "user_property_value_truncated" }, kinds)
    assert.matches("user property 'persona' truncated to 36", warnings[1])
    valid(body)
  end)

  it("are refused at config time when a name is reserved, too long or too many", function()
    local function errors(up)
      local integ = { type = "ga4", measurement_id = "G-ABC123", api_secret = "s", user_properties = up }
      local _, errs = config.validate({ pipelines = { { key = "dk_g", integrations = { integ } } } })
      return table.concat(errs or {}, "\n")
    end
    assert.equal("", errors("Persona,LifetimeTier"))
    assert.matches("first_open_time is reserved", errors({ Persona = "first_open_time" }))
    assert.matches("not a valid name", errors({ Persona = "a_name_that_is_far_too_long_for_ga4" }))
    local many = {}
    for i = 1, 26 do many[i] = "Attr" .. i end
    assert.matches("at most 25 user properties", errors(many))
    local _, errs = config.validate({ pipelines = { { key = "dk_g", integrations = {
      { type = "ga4", measurement_id = "UA-1234-1", api_secret = "s" } } } } })
    assert.matches('measurement id "G%-"', table.concat(errs, "\n"))
  end)
end)

describe("GA4 limits, enforced as counted corrections", function()
  local function custom(name, props) return map("retail", track("retail", name, props)) end

  it("cuts event names to 40 characters", function()
    local kinds, body = counted(function()
      return custom("This Event Name Is Definitely Longer Than Forty Characters", {})
    end)
    assert.is_true(#body.events[1].name <= 40)
    assert.equal("this_event_name_is_definitely_longer_tha", body.events[1].name)
    assert.same({ "event_name_truncated" }, kinds)
    valid(body)
  end)

  it("renames reserved event names and drops reserved prefixes", function()
    local kinds, body = counted(function() return custom("session_start", {}) end)
    assert.equal("custom_session_start", body.events[1].name)
    assert.same({ "event_name_reserved" }, kinds)
    valid(body)
    local kinds2, dropped, warnings = counted(function() return custom("firebase_thing", {}) end)
    assert.is_nil(dropped)
    assert.same({ "event_name_reserved" }, kinds2)
    assert.matches("reserved", warnings[1])
    local kinds3, body3 = counted(function() return custom("3D Model Viewed", {}) end)
    assert.equal("event_3d_model_viewed", body3.events[1].name)
    assert.same({ "event_name_invalid" }, kinds3)
  end)

  it("keeps at most 25 params, GA4's own first", function()
    local props = {}
    for i = 1, 30 do props[("custom_%02d"):format(i)] = i end
    local kinds, body, warnings = counted(function() return custom("Big Event", props) end)
    local p, n = body.events[1].params, 0
    for _ in pairs(p) do n = n + 1 end
    assert.equal(25, n)
    for _, k in ipairs({ "session_id", "engagement_time_msec", "page_location", "page_referrer", "page_title" }) do
      assert.is_not_nil(p[k], k)
    end
    assert.same({ "params_over_limit" }, kinds)
    assert.matches("dropped custom_21", warnings[1])
    valid(body)
  end)

  it("cuts values: 100 characters, page_location 1000, page_referrer 420, page_title 300", function()
    local ev = track("retail", "Long Values", { note = string.rep("a", 150), accent = string.rep("é", 120) })
    ev.context.page.url = "https://shop.example.com/?" .. string.rep("q", 1200)
    ev.context.page.referrer = "https://ref.example.com/" .. string.rep("r", 500)
    ev.context.page.title = string.rep("t", 350)
    local kinds, body = counted(function() return map("retail", ev) end)
    local p = body.events[1].params
    assert.equal(100, #p.note)
    assert.equal(200, #p.accent)                   -- 100 characters of 2 bytes, none split
    assert.equal(1000, #p.page_location)
    assert.equal(420, #p.page_referrer)
    assert.equal(300, #p.page_title)
    assert.equal(5, #kinds)
    for _, k in ipairs(kinds) do assert.equal("param_value_truncated", k) end
    valid(body)
  end)

  it("renames invalid param names and drops reserved ones", function()
    local kinds, body = counted(function()
      return custom("Odd Params", { ["product-id"] = "X1", ga_thing = 1, _private = 2, google_x = 3 })
    end)
    local p = body.events[1].params
    assert.equal("X1", p.product_id)
    assert.is_nil(p.ga_thing)
    assert.is_nil(p._private)
    assert.is_nil(p.google_x)
    table.sort(kinds)
    assert.same({ "param_name_invalid", "param_reserved", "param_reserved", "param_reserved" }, kinds)
    valid(body)
  end)

  it("keeps at most 200 items and keeps the body under 130 kB", function()
    local items = {}
    for i = 1, 250 do
      items[i] = { item_id = "SKU-" .. i }
      for _, k in ipairs({ "item_name", "item_brand", "item_category", "item_variant", "coupon", "affiliation",
                           "item_list_name" }) do
        items[i][k] = string.rep(k:sub(-1), 100)
      end
    end
    local kinds, body = counted(function() return custom("Order Completed", { items = items }) end)
    local json = cjson.encode(body)
    assert.is_true(#json < 130000, #json)
    assert.is_true(#body.events[1].params.items < 200)
    assert.same({ "items_over_limit", "body_too_large" }, kinds)
    valid(body)
  end)
end)

describe("GA4 requests", function()
  local function doc(client, n, ts)
    return { client_id = client, user_id = "u1", timestamp_micros = ts,
             events = { { name = "view_item", params = { n = n } } } }
  end

  it("batches by client, user and consent", function()
    local a = cjson.encode(doc("1.1", 1))
    local b = cjson.encode(doc("2.2", 1))
    assert.equal(send.batch_key(nil, a), send.batch_key(nil, cjson.encode(doc("1.1", 2))))
    assert.not_equal(send.batch_key(nil, a), send.batch_key(nil, b))
    local c = doc("1.1", 3)
    c.consent = { ad_user_data = "DENIED", ad_personalization = "DENIED" }
    assert.not_equal(send.batch_key(nil, a), send.batch_key(nil, cjson.encode(c)))
  end)

  it("merges one client's events into requests of at most 25, each event with its own time", function()
    local t = core.now()
    local docs = {}
    for i = 1, 30 do docs[i] = doc("1.1", i, math.floor((t - 100 + i) * 1000) * 1000) end
    local bodies = send.bodies(docs, t)
    assert.equal(2, #bodies)
    local first = cjson.decode(bodies[1])
    assert.equal(25, #first.events)
    assert.equal(5, #cjson.decode(bodies[2]).events)
    assert.equal("1.1", first.client_id)
    -- integers, not 1.7e+15: the request's time is the first event's
    assert.matches('^{"timestamp_micros":%d+,', bodies[1])
    assert.matches('{"timestamp_micros":%d+,', bodies[1]:sub(30))
    assert.equal(docs[1].timestamp_micros, first.timestamp_micros)
    assert.equal(docs[2].timestamp_micros, first.events[2].timestamp_micros)
    for _, b in ipairs(bodies) do assert.same({}, standin.validate(b)) end
  end)

  it("splits a batch whose body would reach 130 kB", function()
    local docs = {}
    for i = 1, 25 do
      local d = doc("1.1", i)
      local items = {}
      for j = 1, 60 do items[j] = { item_id = "SKU-" .. j, item_name = string.rep("n", 95) } end
      d.events[1].params.items = items
      docs[i] = d
    end
    local bodies = send.bodies(docs, core.now())
    assert.is_true(#bodies > 1)
    local total = 0
    for _, b in ipairs(bodies) do
      assert.is_true(#b < 130000, #b)
      total = total + #cjson.decode(b).events
    end
    assert.equal(25, total)
  end)

  it("drops a timestamp that aged past 72 hours in retries, and counts it", function()
    local t = core.now()
    local bodies, stale = send.bodies({ doc("1.1", 1, math.floor((t - 73 * 3600) * 1000) * 1000) }, t)
    assert.equal(1, stale)
    assert.is_nil(cjson.decode(bodies[1]).timestamp_micros)
  end)

  it("classifies: 2xx delivered, validation messages dropped, 429/5xx retried, other permanent", function()
    assert.equal("delivered", send.classify(204, ""))
    assert.equal("delivered", send.classify(200, '{"validationMessages":[]}'))
    assert.equal("dropped", send.classify(200,
      '{"validationMessages":[{"fieldPath":"events","description":"x","validationCode":"VALUE_INVALID"}]}'))
    assert.equal("retry", send.classify(429, ""))
    assert.equal("retry", send.classify(503, ""))
    assert.equal("permanent", send.classify(400, ""))
    assert.equal("permanent", send.classify(403, ""))
  end)

  it("shows the URL without the api_secret, per region and debug", function()
    local cfg = assert(config.validate({ pipelines = { { key = "dk_g", integrations = {
      { type = "ga4", measurement_id = "G-ABC123", api_secret = "very-secret-value", region = "eu",
        debug = true } } } } })).pipelines[1].integrations[1]
    local p = send.prepare(cfg)
    assert.equal("https://region1.google-analytics.com/debug/mp/collect?measurement_id=G-ABC123"
      .. "&api_secret=very-secret-value", p.url)
    assert.equal("https://region1.google-analytics.com/debug/mp/collect?measurement_id=G-ABC123"
      .. "&api_secret=[REDACTED]", p.shown_url)
    local global = assert(config.validate({ pipelines = { { key = "dk_g", integrations = {
      { type = "ga4", measurement_id = "G-ABC123", api_secret = "x" } } } } })).pipelines[1].integrations[1]
    assert.equal("https://www.google-analytics.com/mp/collect?measurement_id=G-ABC123&api_secret=x",
      send.prepare(global).url)
  end)

  it("explains validation messages in debug mode", function()
    local hint = send.explain({ measurement_id = "G-A" }, { status = 200, class = "dropped", debug = true,
      body = '{"validationMessages":[{"fieldPath":"events[0].name","description":"Event name is reserved.",'
        .. '"validationCode":"NAME_RESERVED"}]}' })
    assert.matches("events%[0%]%.name: Event name is reserved%. %(NAME_RESERVED%)", hint)
    assert.is_nil(send.explain({}, { status = 204, class = "delivered" }))
  end)

  it("finish never forgets the limits it was given", function()
    -- the limits the destination enforces are Google's numbers
    local limits = require "signal.destinations.ga4.limits"
    assert.same({ 25, 25, 25, 40, 100, 24, 36, 130000, 72 * 3600 },
      { limits.MAX_EVENTS, limits.MAX_PARAMS, limits.MAX_USER_PROPERTIES, limits.MAX_NAME, limits.MAX_VALUE,
        limits.MAX_UP_NAME, limits.MAX_UP_VALUE, limits.MAX_BODY, limits.BACKDATE_S })
    assert.same({ page_location = 1000, page_referrer = 420, page_title = 300 }, limits.VALUE_MAX)
    assert.equal(1, payload.ENGAGEMENT_TIME_MSEC)
  end)
end)
