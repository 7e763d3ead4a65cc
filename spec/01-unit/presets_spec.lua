-- spec/01-unit/presets_spec.lua — the Amperity blueprint v1.8.0 presets:
-- the integration page's coverage and event-name tables (literally), the 40+ global
-- mappings, and every handler's property mappings, against the real files.
local blueprint = require "signal.pipeline.blueprint"
local scripts = require "signal.pipeline.scripts"
local T = require "signal.testing"

local CFG = { source_value = "DATAFLY" }

-- Seed, "Pick a vertical preset": the Event coverage column, verbatim.
local SEED_COVERAGE = {
  retail = "pageview, view_item_list, view_item, add_to_cart, view_cart, begin_checkout, purchase",
  travel = "flight_searched, hotel_searched, car_searched, flight_viewed, hotel_viewed, "
    .. "booking_started/completed/cancelled/modified, check_in_completed, check_out_completed, "
    .. "loyalty_points_earned/redeemed, review_submitted",
  finance = "account_opened/closed, kyc_started/completed/failed, login_succeeded/failed, "
    .. "transaction_initiated/completed/failed, payment_made, transfer_completed, "
    .. "card_applied/approved/activated, loan_applied/approved/funded, statement_viewed",
  b2b_saas = "signed_up, logged_in/out, password_reset_requested, trial_started/converted/expired, "
    .. "subscription_started/upgraded/downgraded/cancelled/renewed, feature_used, "
    .. "invitation_sent/accepted, seat_added/removed, integration_connected",
  media = "video_playback_started/paused/resumed/completed, video_content_started/completed/milestone, "
    .. "video_ad_started/completed/skipped, audio_playback_*, podcast_subscribed",
  gaming = "game_started/ended, level_started/completed/failed, achievement_unlocked, tutorial_*, "
    .. "item_purchased/equipped, currency_earned/spent, friend_invited, match_started/completed, "
    .. "leaderboard_viewed",
  publishing = "article_viewed/read/shared/bookmarked, category_viewed, search_performed, "
    .. "newsletter_subscribed/unsubscribed, paywall_viewed, subscription_started/cancelled, "
    .. "comment_posted, author_followed",
}

-- The coverage table's `*` shorthands, expanded.
local WILDCARDS = {
  ["audio_playback_*"] = { "audio_playback_started", "audio_playback_paused",
                           "audio_playback_resumed", "audio_playback_completed" },
  ["tutorial_*"] = { "tutorial_started", "tutorial_completed", "tutorial_skipped" },
}

-- "booking_started/completed" -> booking_started, booking_completed
local function expand(cell)
  local out = {}
  for item in cell:gmatch("[^,%s]+") do
    if WILDCARDS[item] then
      for _, n in ipairs(WILDCARDS[item]) do out[#out + 1] = n end
    else
      local first = item:match("^[^/]+")
      local prefix = first:match("^(.*_)[^_]+$")
      out[#out + 1] = first
      for suffix in item:gmatch("/([^/]+)") do out[#out + 1] = prefix .. suffix end
    end
  end
  return out
end

-- Seed, "Event name mappings" (Retail): Datafly.js event -> Amperity type.
local EVENT_NAME_MAPPINGS = {
  { "page", "pageview" },
  { "view_item", "view_item" },
  { "Product Viewed", "view_item" },
  { "view_item_list", "view_item_list" },
  { "Product List Viewed", "view_item_list" },
  { "add_to_cart", "add_to_cart" },
  { "Product Added", "add_to_cart" },
  { "Product Removed", "remove_from_cart" },
  { "view_cart", "view_cart" },
  { "Cart Viewed", "view_cart" },
  { "begin_checkout", "begin_checkout" },
  { "Checkout Started", "begin_checkout" },
  { "purchase", "purchase" },
  { "Order Completed", "purchase" },
}

-- Every global mapping's output for the full datafly.js page view fixture.
local GLOBAL_EXPECTED = {
  user_id = "cust_10482",
  anonymous_id = "a3f1c2d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
  cookieid = "dfid_abc123",
  amperity_id = "b7e2f0c4-1d3a-4c5e-9f8a-2b6d7e9c0a1f",
  email = "jane.doe@example.com",
  email_sha256 = "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d",
  phone = "+1 212 555 0142",
  phone_sha256 = "8d8f3ecc443c9c404fb19afa523025e42995ac4f01d8e25786e98b2c06b81ea7",
  first_name = "Jane",
  last_name = "Doe",
  group_id = "org_311",
  message_id = "msg_page_0001",
  event_name = "Running Shoes Viewed",
  page_name = "Running Shoes",
  timestamp = "2026-04-17T15:37:10.484Z",
  received_at = "2026-04-17T15:37:10.512Z",
  ip_address = "203.0.113.42",
  user_agent = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
  locale = "en-US",
  timezone = "America/New_York",
  page_url = "https://shop.example.com/c/running-shoes",
  page_path = "/c/running-shoes",
  page_referrer = "https://www.google.com/",
  page_title = "Running Shoes | Acme",
  page_search = "?utm_source=newsletter&utm_medium=email&utm_campaign=spring_sale",
  session_id = "sess_7f3a9c",
  session_count = 4,
  utm_source = "newsletter",
  utm_medium = "email",
  utm_campaign = "spring_sale",
  utm_term = "running shoes",
  utm_content = "hero_banner",
  geo_country = "US",
  geo_region = "NY",
  geo_city = "New York",
  ga_client_id = "1234567890.1713366000",
  fbp = "fb.1.1713366000000.987654321",
  fbc = "fb.1.1713366000000.IwAR0abc",
  ttp = "2fQk1mZ3TtPq",
  screen_width = 1512,
  screen_height = 982,
  screen_density = 2,
  device_type = "desktop",
  os_name = "Mac OS X",
  os_version = "14.4",
  library_name = "datafly.js",
  library_version = "1.8.0",
  user_persona = "Value Hunter",
  user_tier = "Gold",
  favorite_brand = "Acme Running",
  consent_analytics = true,
  consent_marketing = false,
  consent_functional = true,
  consent_ad_storage = "denied",
  consent_analytics_storage = "granted",
  consent_ad_user_data = "denied",
  consent_ad_personalization = "denied",
}

local VERTICALS = { "retail", "travel", "finance", "b2b_saas", "media", "gaming", "publishing" }

local function raw_preset(name)
  local file = "presets/amperity/" .. name .. ".lua"
  return assert(scripts.load(assert(scripts.read(file)), file, { trusted = true }))
end

local function non_empty_attributes(p)
  local n = 0
  for k, v in pairs(p) do
    if k ~= "consent" and v ~= nil and v ~= "" then n = n + 1 end
  end
  return n
end

local function event_named(name)
  local e = T.fixture("page")
  if name == "page" then return e end
  e.type, e.event, e.name = "track", name, nil
  return e
end

-- Segment's own example calls (segment.com/docs/connections/spec), as a
-- server SDK sends them, and the fields each must bring to Amperity; the
-- targets only these calls produce are listed in SEGMENT_TARGETS.
local SEGMENT = {
  { "alias", { type = "alias", previousId = "39239-239239-239239-23923", userId = "507f191e81",
               messageId = "022bb90c-bbac-11e4-8dfc-aa07a5b093db", timestamp = "2015-02-23T22:28:55.111Z" },
    { type = "alias", previous_id = "39239-239239-239239-23923", user_id = "507f191e81" } },
  { "group", { type = "group", groupId = "0e8c78ea9d97a7b8185e8632", userId = "97980cfea0067",
               anonymousId = "507f191e810c19729de860ea", messageId = "022bb90c-bbac-11e4-8dfc-aa07a5b093db",
               timestamp = "2015-02-23T22:28:55.111Z",
               traits = { name = "Initech", industry = "Technology", employees = 329, plan = "enterprise",
                          website = "https://initech.example", ["total billed"] = 830 } },
    { type = "group", group_id = "0e8c78ea9d97a7b8185e8632", group_name = "Initech", group_industry = "Technology",
      group_employees = 329, group_plan = "enterprise", group_website = "https://initech.example",
      full_name = false } },
  { "identify", { type = "identify", userId = "97980cfea0067", anonymousId = "507f191e810c19729de860ea",
                  messageId = "022bb90c-bbac-11e4-8dfc-aa07a5b093db", timestamp = "2015-02-23T22:28:55.111Z",
                  traits = { name = "Peter Gibbons", email = "peter@example.com", plan = "premium", logins = 5,
                             username = "pgibbons", title = "Software Engineer", birthday = "1970-02-19",
                             gender = "male", age = 56, company = { name = "Initech" },
                             address = { street = "6th St", city = "San Francisco", state = "CA",
                                         postalCode = "94103", country = "USA" } } },
    { type = "identify", full_name = "Peter Gibbons", email = "peter@example.com", username = "pgibbons",
      job_title = "Software Engineer", birthday = "1970-02-19", gender = "male", age = 56,
      company_name = "Initech", address_street = "6th St", address_city = "San Francisco",
      address_state = "CA", address_postal_code = "94103", address_country = "USA", group_name = false } },
  { "page", { type = "page", name = "Home", category = "Docs", userId = "97980cfea0067",
              messageId = "022bb90c-bbac-11e4-8dfc-aa07a5b093db", timestamp = "2015-02-23T22:28:55.111Z",
              properties = { title = "Welcome | Initech", url = "http://www.example.com" } },
    { type = "pageview", page_name = "Home", page_category = "Docs" } },
}
local SEGMENT_TARGETS = {}
for _, c in ipairs(SEGMENT) do
  for k, v in pairs(c[3]) do if v then SEGMENT_TARGETS[k] = true end end
end

describe("Amperity presets", function()
  local lib
  setup(function()
    local errs
    lib, errs = blueprint.load{ presets_dir = "presets" }
    assert(lib, errs and table.concat(errs, "\n"))
  end)

  describe("every vertical preset", function()
    for _, v in ipairs(VERTICALS) do
      it(("%s is blueprint v1.8.0 for amperity, passing unmapped events through"):format(v), function()
        local spec = raw_preset(v)
        assert.are.equal("amperity", spec.integration)
        assert.are.equal(v, spec.name)
        assert.are.equal("1.8.0", spec.version)
        assert.are.equal("pass_through", spec.default)
      end)

      it(("%s maps page views to pageview"):format(v), function()
        assert.are.equal("pageview", lib:get(v):map(T.fixture("page"), CFG).type)
      end)

      it(("%s shares the global mappings"):format(v), function()
        local p = lib:get(v):map(T.fixture(v), CFG)
        for _, k in ipairs({ "user_persona", "email_sha256", "page_url", "utm_campaign", "ga_client_id",
                             "geo_city", "consent_marketing" }) do
          assert.is_not_nil(p[k], v .. " lacks " .. k)
        end
      end)

      it(("%s turns its datafly.js fixture into at least 25 flat attributes"):format(v), function()
        local n = non_empty_attributes(lib:get(v):map(T.fixture(v), CFG))
        assert.is_true(n >= 25, ("only %d attributes"):format(n))
      end)
    end
  end)

  describe("covers every event the integration page lists", function()
    for _, v in ipairs(VERTICALS) do
      for _, name in ipairs(expand(SEED_COVERAGE[v])) do
        it(("%s: %s"):format(v, name), function()
          local bp = lib:get(v)
          -- Retail's list names Amperity types; pageview comes from page.
          local input = (v == "retail" and name == "pageview") and "page" or name
          assert.is_not_nil(bp.handlers[input], v .. " has no handler for " .. input)
          assert.are.equal(name, bp:map(event_named(input), CFG).type)
        end)
      end
    end

    it("expands the coverage table's shorthands", function()
      assert.are.same({ "booking_started", "booking_completed", "booking_cancelled", "booking_modified" },
        expand("booking_started/completed/cancelled/modified"))
      assert.are.same({ "logged_in", "logged_out" }, expand("logged_in/out"))
      assert.are.equal(19, #expand(SEED_COVERAGE.finance))
    end)
  end)

  describe("Retail's event name mappings (the integration page's table)", function()
    for _, row in ipairs(EVENT_NAME_MAPPINGS) do
      it(("maps %s to %s"):format(row[1], row[2]), function()
        local p = lib:get("retail"):map(event_named(row[1]), CFG)
        assert.are.equal(row[2], p.type)
      end)
    end
  end)

  describe("global mappings", function()
    it("number at least 40, each with its own target", function()
      local spec = raw_preset("global")
      local targets = {}
      for _, m in ipairs(spec.global.mappings) do
        assert.is_nil(targets[m.target], "duplicate target " .. m.target)
        targets[m.target] = true
      end
      assert.is_true(#spec.global.mappings >= 40, #spec.global.mappings .. " global mappings")
    end)

    it("each produce the expected value from a full datafly.js event", function()
      local e = T.fixture("page")
      e.type, e.event, e.group_id = "track", "Running Shoes Viewed", "org_311"
      local p = lib:get("retail"):map(e, CFG)
      local spec = raw_preset("global")
      for _, m in ipairs(spec.global.mappings) do
        assert.is_true(GLOBAL_EXPECTED[m.target] ~= nil or SEGMENT_TARGETS[m.target] ~= nil,
          "no expectation for " .. m.target)
      end
      for k, v in pairs(GLOBAL_EXPECTED) do
        assert.are.equal(v, p[k], k)
      end
    end)

    for _, c in ipairs(SEGMENT) do
      it("bring every field of Segment's example " .. c[1] .. " call", function()
        for _, v in ipairs(VERTICALS) do
          local p = T.map{ preset = v, source_value = "DATAFLY", event = T.deep_copy(c[2]) }
          for k, want in pairs(c[3]) do
            if want == false then assert.is_nil(p[k], v .. ": " .. k)
            else assert.are.equal(want, p[k], v .. ": " .. k) end
          end
        end
      end)
    end

    it("turn a datafly.js page view with full context into at least 25 flat attributes", function()
      local p = lib:get("retail"):map(T.fixture("page"), CFG)
      local n = non_empty_attributes(p)
      assert.is_true(n >= 25, ("only %d attributes"):format(n))
    end)

    it("prefer the event's traits and fall back to the stitched identity", function()
      local e = T.fixture("page")
      e.traits, e.user_id = {}, nil
      e.identity = { email = "Stitched@Example.com", phone = "+15550100", user_id = "cust_1" }
      local p = lib:get("travel"):map(e, CFG)
      assert.are.equal("stitched@example.com", p.email)
      assert.are.equal("+15550100", p.phone)
      assert.are.equal("cust_1", p.user_id)
    end)

    it("keep a GA client id that is not in cookie form", function()
      local e = T.fixture("page")
      e.context.vendor_ids.ga = "555.666"
      assert.are.equal("555.666", lib:get("retail"):map(e, CFG).ga_client_id)
    end)
  end)

  describe("each handler's property mappings", function()
    -- For every handler mapping that reads a property directly, a value
    -- placed in that property must arrive at its target.
    for _, v in ipairs(VERTICALS) do
      it(("reach their targets in %s"):format(v), function()
        local spec = raw_preset(v)
        local bp = lib:get(v)
        local checked = 0
        for key, h in pairs(spec.events) do
          for i, m in ipairs(h.mappings or {}) do
            local src = type(m.source) == "table" and m.source[1] or m.source
            local prop = type(src) == "string" and src:match("^properties%.([^%.]+)$")
            if prop and not m.fn then
              local e = event_named(key)
              e.properties = { [prop] = "v_" .. prop .. "_" .. i }
              local p = bp:map(e, CFG)
              local want = m.hash and blueprint.hash("v_" .. prop .. "_" .. i) or ("v_" .. prop .. "_" .. i)
              assert.are.equal(want, p[m.target], ("%s %s: %s -> %s"):format(v, key, src, m.target))
              checked = checked + 1
            end
          end
        end
        assert.is_true(checked > 20, v .. ": only " .. checked .. " property mappings")
      end)
    end
  end)

  describe("natural property names per vertical", function()
    local CASES = {
      { "retail", "retail", { type = "purchase", order_id = "ord_50913", value = 142.5, revenue = 142.5,
        tax = 10.5, shipping = 8.0, coupon = "SPRING5", currency = "USD", item_count = 2,
        product_ids = "SKU-1001,SKU-2040", total_quantity = 3, checkout_id = "chk_1188" } },
      { "travel", "travel", { type = "booking_completed", booking_id = "bk_77812", booking_type = "flight",
        origin = "JFK", destination = "LHR", departure_date = "2026-06-01", return_date = "2026-06-14",
        passengers = 2, value = 1840.0, currency = "USD", flight_number = "AA100" } },
      { "finance", "finance", { type = "transaction_completed", transaction_id = "txn_90431",
        amount = 64.2, value = 64.2, currency = "USD", account_id = "acct_5512" } },
      { "b2b_saas", "b2b_saas", { type = "subscription_upgraded", subscription_id = "sub_4410",
        plan = "business", previous_plan = "team", seats = 25, account_id = "org_311" } },
      { "media", "media", { type = "video_content_milestone", content_asset_id = "vid_8812",
        playback_session_id = "vplay_2291", milestone = 50, position = 912, full_episode = true,
        session_id = "sess_7f3a9c" } },
      { "gaming", "gaming", { type = "level_completed", level = 12, level_name = "Crystal Caves",
        score = 48210, game_id = "g_starfall" } },
      { "publishing", "publishing", { type = "article_read", article_id = "art_55120",
        article_title = "How to train for your first marathon", author = "Sam Lee",
        tags = "marathon,training,beginners", read_percent = 100 } },
    }
    for _, c in ipairs(CASES) do
      it(("%s: %s"):format(c[1], c[3].type), function()
        local p = lib:get(c[1]):map(T.fixture(c[2]), CFG)
        for k, want in pairs(c[3]) do assert.are.equal(want, p[k], k) end
      end)
    end

    it("retail reads the first GA4 item when the flat Segment fields are absent", function()
      local e = event_named("view_item")
      e.properties = { currency = "EUR", value = 30,
        items = { { item_id = "G-1", item_name = "Shoe", item_brand = "Acme", price = 30, quantity = 1 } } }
      local p = lib:get("retail"):map(e, CFG)
      assert.are.same({ "G-1", "Shoe", "Acme", 30, 1, "EUR" },
        { p.product_id, p.product_name, p.brand, p.price, p.quantity, p.currency })
    end)

    it("b2b_saas sends an invitee's email hashed only", function()
      local e = event_named("invitation_sent")
      e.properties = { invitee_email = " New.Colleague@Example.com" }
      local p = lib:get("b2b_saas"):map(e, CFG)
      assert.are.equal(blueprint.hash("new.colleague@example.com"), p.invitee_email_sha256)
      for _, v in pairs(p) do assert.are_not.equal(" New.Colleague@Example.com", v) end
    end)
  end)
end)
