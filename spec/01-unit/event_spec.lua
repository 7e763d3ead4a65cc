-- spec/01-unit/event_spec.lua — Segment/Datafly camelCase messages → the
-- canonical snake_case event (docs/lua-runtime.md) and message validation,
-- as the collector does them (engine/collect/normalize.c, through
-- core.collect.normalize); and signal.pipeline.event's ISO-8601 and identity-fields
-- helpers.

local event = require "signal.pipeline.event"
local core = require "signal.core"
local cjson = require "cjson"
local collector = require "signal.collect"

-- normalize(msg, ctx), as the collector's C conversion runs it on the
-- message's JSON: → the decoded event | nil, reasons
local normalize = {}
function normalize.normalize(msg, c)
  local body = type(msg) == "string" and msg or cjson.encode(msg)
  local ev_json, errs = core.collect.normalize(body, c)
  if not ev_json then return nil, errs end
  return cjson.decode(ev_json)
end

local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"
local RECEIVED = 1776440230.484          -- 2026-04-17T15:37:10.484Z

local function ctx(over)
  local c = { canonical_id = "dfid_abc123", pipeline_key = "dk_live_demo", ip = "203.0.113.7",
              user_agent = "Mozilla/5.0 (spec)", received_at = RECEIVED }
  for k, v in pairs(over or {}) do
    if v == "<nil>" then c[k] = nil else c[k] = v end
  end
  return c
end

local function track(over)
  local m = { type = "track", event = "Product Viewed", anonymousId = "anon-1",
              properties = { product_id = "sku-1" } }
  for k, v in pairs(over or {}) do
    if v == "<nil>" then m[k] = nil else m[k] = v end
  end
  return m
end

local function normalize_ok(msg, c)
  local ev, errs = normalize.normalize(msg, c or ctx())
  assert(ev, "expected a valid event, got: " .. table.concat(errs or {}, "; "))
  assert.is_nil(errs)
  return ev
end

-- exactly one reason, containing `phrase`
local function rejected(msg, c, phrase)
  local ev, errs = normalize.normalize(msg, c or ctx())
  assert.is_nil(ev)
  assert(errs and #errs == 1, "expected one reason, got: " .. table.concat(errs or {}, "; "))
  assert(errs[1]:find(phrase, 1, true), "expected '" .. phrase .. "' in: " .. errs[1])
end

describe("normalize key conversion", function()
  it("converts top-level camelCase keys to snake_case", function()
    local ev = normalize_ok({
      type = "track", event = "Order Completed", userId = "u-1", anonymousId = "a-1",
      messageId = "m-1", sentAt = "2026-04-17T15:37:09.000Z",
      originalTimestamp = "2026-04-17T15:37:08.000Z", timestamp = "2026-04-17T15:37:08.500Z",
    })
    assert.equal("u-1", ev.user_id)
    assert.equal("a-1", ev.anonymous_id)
    assert.equal("m-1", ev.message_id)
    assert.equal("2026-04-17T15:37:09.000Z", ev.sent_at)
    assert.equal("2026-04-17T15:37:08.000Z", ev.original_timestamp)
    assert.equal("2026-04-17T15:37:08.500Z", ev.timestamp)
    assert.is_nil(ev.userId)
    assert.is_nil(ev.anonymousId)
    assert.is_nil(ev.messageId)
  end)

  it("converts context keys and the keys of its known objects", function()
    local ev = normalize_ok(track({ context = {
      userAgent = "ignored-for-browser", locale = "en-US", timezone = "Europe/London",
      page = { url = "https://shop.example.com/p?x=1", path = "/p", referrer = "", title = "P", search = "?x=1" },
      campaign = { source = "news", medium = "email", name = "spring" },
      screen = { width = 1440, height = 900, density = 2 },
      library = { name = "datafly.js", version = "1.2.0" },
      session = { id = "s-1", count = 3 },
      device = { advertisingId = "ad-1", adTrackingEnabled = true },
      os = { name = "macOS", version = "14" },
      geo = { country = "GB" },
      vendorIds = { ga = "GA1.1.1", fbp = "fb.1.2" },
    } }))
    local c = ev.context
    assert.equal("en-US", c.locale)
    assert.equal("/p", c.page.path)
    assert.equal("spring", c.campaign.name)
    assert.equal(1440, c.screen.width)
    assert.equal("datafly.js", c.library.name)
    assert.equal("s-1", c.session.id)
    assert.same({ advertising_id = "ad-1", ad_tracking_enabled = true }, c.device)
    assert.equal("GB", c.geo.country)
    assert.same({ ga = "GA1.1.1", fbp = "fb.1.2" }, c.vendor_ids)
    assert.is_nil(c.vendorIds)
    assert.is_nil(c.userAgent)
  end)

  it("keeps properties, traits and context.consent verbatim", function()
    local props = { productId = "sku-1", Price = 10, nested = { camelKey = 1 } }
    local consent = { analytics = true, marketing = false, categories = { C0001 = true, C0002 = false },
                      google = { ad_storage = "denied", analyticsStorage = "granted" } }
    local ev = normalize_ok({ type = "identify", userId = "u-1", traits = { firstName = "Ada" },
                              properties = props, context = { consent = consent } })
    assert.same({ productId = "sku-1", Price = 10, nested = { camelKey = 1 } }, ev.properties)
    assert.same({ firstName = "Ada" }, ev.traits)
    assert.same({ analytics = true, marketing = false, categories = { C0001 = true, C0002 = false },
                  google = { ad_storage = "denied", analyticsStorage = "granted" } }, ev.context.consent)
  end)

  it("keeps unknown fields, converting only their top-level or context key", function()
    local ev = normalize_ok(track({ customField = { innerCamel = 1 }, integrations = { ["Google Analytics"] = false },
                                    context = { userAgentData = { mobile = false, platformVersion = "14" } } }))
    assert.same({ innerCamel = 1 }, ev.custom_field)
    assert.same({ ["Google Analytics"] = false }, ev.integrations)
    assert.same({ mobile = false, platformVersion = "14" }, ev.context.user_agent_data)
  end)

  it("prefers the camelCase spelling when a key is sent both ways, in either order", function()
    local ev = normalize_ok('{"type":"track","event":"E","userId":"camel","user_id":"snake"}')
    assert.equal("camel", ev.user_id)
    ev = normalize_ok('{"type":"track","event":"E","user_id":"snake","userId":"camel"}')
    assert.equal("camel", ev.user_id)
    ev = normalize_ok('{"type":"track","event":"E","context":{"page":{"page_title":"s","pageTitle":"c"}}}')
    assert.equal("c", ev.context.page.page_title)
  end)

  it("keeps the last value of a key sent twice, as JSON decoders do", function()
    local ev = normalize_ok('{"type":"track","event":"first","userId":"u","event":"last"}')
    assert.equal("last", ev.event)
    -- a null last value drops the key: the earlier value is gone too
    rejected('{"type":"track","event":"E","userId":"u","userId":null}', ctx({ canonical_id = "<nil>" }),
             "userId or anonymousId is required")
  end)

  it("decodes escaped keys and values before applying the rules", function()
    local ev = normalize_ok('{"\\u0074ype":"tr\\u0061ck","ev\\u0065nt":"E","\\u0075serId":"u"}')
    assert.equal("track", ev.type)
    assert.equal("u", ev.user_id)
    rejected('{"type":"track","event":"\\u0020","userId":"u"}', nil, 'event: track events need a non-empty string')
  end)

  it("strips writeKey and pipelineKey and sets pipeline_key from the request", function()
    local ev = normalize_ok(track({ writeKey = "wk_secret", pipelineKey = "dk_other" }))
    assert.is_nil(ev.writeKey)
    assert.is_nil(ev.write_key)
    assert.is_nil(ev.pipelineKey)
    assert.equal("dk_live_demo", ev.pipeline_key)
  end)

  it("drops partner_attrs and identity sent by a client", function()
    local ev = normalize_ok(track({ partner_attrs = { amperity = { Persona = "VIP" } },
                                    partnerAttrs = { amperity = {} }, identity = { email = "x@example.com" } }))
    assert.is_nil(ev.partner_attrs)
    assert.is_nil(ev.partnerAttrs)
    assert.is_nil(ev.identity)
  end)

  it("drops top-level nulls", function()
    local ev = normalize_ok(track({ userId = core.null, extra = core.null }))
    assert.is_nil(ev.user_id)
    assert.is_nil(ev.extra)
  end)
end)

describe("normalize validation", function()
  it("fills the type from the endpoint when the body has none", function()
    local ev = normalize_ok({ anonymousId = "a", name = "Home" }, ctx({ type_hint = "page" }))
    assert.equal("page", ev.type)
  end)

  it("accepts a body type that agrees with the endpoint", function()
    assert.equal("screen", normalize_ok({ type = "screen", anonymousId = "a" }, ctx({ type_hint = "screen" })).type)
  end)

  it("rejects a body type that disagrees with the endpoint", function()
    rejected(track(), ctx({ type_hint = "page" }), 'type: "track" does not match the endpoint, which takes page events')
  end)

  it("rejects an unknown type", function()
    rejected(track({ type = "trak" }), nil, "type: must be one of track, page, screen, identify, group, alias")
  end)

  it("requires a type when the endpoint gives none", function()
    rejected(track({ type = "<nil>" }), nil, "type: is required")
  end)

  it("requires a track event name", function()
    rejected(track({ event = "<nil>" }), nil, 'event: track events need a non-empty string "event"')
  end)

  it("rejects a blank track event name", function()
    rejected(track({ event = "  " }), nil, 'event: track events need a non-empty string "event"')
  end)

  it("rejects a non-string track event name", function()
    rejected(track({ event = 42 }), nil, 'event: track events need a non-empty string "event"')
  end)

  it("requires userId, anonymousId or a canonical id", function()
    rejected(track({ anonymousId = "<nil>" }), ctx({ canonical_id = "<nil>" }), "userId or anonymousId is required")
  end)

  it("counts an empty userId as absent", function()
    rejected(track({ anonymousId = "", userId = "" }), ctx({ canonical_id = "<nil>" }), "userId or anonymousId is required")
  end)

  it("accepts a message identified only by the _dfdid cookie", function()
    local ev = normalize_ok(track({ anonymousId = "<nil>" }))
    assert.equal("dfid_abc123", ev.canonical_id)
  end)

  it("uses a message's canonicalId only when the request has none", function()
    assert.equal("dfid_server", normalize_ok(track({ canonicalId = "dfid_server" }),
                                             ctx({ canonical_id = "<nil>" })).canonical_id)
    assert.equal("dfid_abc123", normalize_ok(track({ canonicalId = "dfid_forged" })).canonical_id)
  end)

  it("turns a numeric userId into a string", function()
    assert.equal("12345", normalize_ok(track({ userId = 12345 })).user_id)
    assert.equal("1000", normalize_ok('{"type":"track","event":"E","userId":1e3}').user_id)
    assert.equal("1.5", normalize_ok('{"type":"track","event":"E","userId":1.5}').user_id)
  end)

  it("keeps every digit of an integer id longer than a double holds", function()
    assert.equal("1234567890123456789",
                 normalize_ok('{"type":"track","event":"E","userId":1234567890123456789}').user_id)
  end)

  it("rejects a userId that is not a string or number", function()
    rejected(track({ userId = { id = 1 } }), nil, "userId: must be a string")
  end)

  it("requires groupId for group events", function()
    rejected({ type = "group", userId = "u" }, nil, "groupId: is required for group events")
  end)

  it("requires previousId for alias events", function()
    rejected({ type = "alias", userId = "u" }, nil, "previousId: is required for alias events")
  end)

  it("rejects a timestamp that is not ISO-8601", function()
    rejected(track({ timestamp = "2026-04-17 15:37:10" }), nil, "timestamp: must be an ISO-8601 date-time")
  end)

  it("rejects a sentAt that is not ISO-8601", function()
    rejected(track({ sentAt = 1776440230484 }), nil, "sentAt: must be an ISO-8601 date-time")
  end)

  it("rejects an originalTimestamp that is not ISO-8601", function()
    rejected(track({ originalTimestamp = "yesterday" }), nil, "originalTimestamp: must be an ISO-8601 date-time")
  end)

  it("rejects properties that are not an object", function()
    rejected(track({ properties = "sku-1" }), nil, "properties: must be an object")
  end)

  it("rejects a context that is not an object", function()
    rejected(track({ context = 5 }), nil, "context: must be an object")
  end)

  it("rejects a message that is not an object", function()
    local ev, errs = normalize.normalize('"track"', ctx())
    assert.is_nil(ev)
    assert.same({ "message must be a JSON object" }, errs)
  end)

  it("returns every reason at once", function()
    local ev, errs = normalize.normalize({ type = "track", timestamp = "nope", properties = 1 },
                                         ctx({ canonical_id = "<nil>" }))
    assert.is_nil(ev)
    assert.equal(4, #errs)
  end)
end)

describe("normalize fields set by Signal", function()
  it("assigns a uuid message_id when the message has none", function()
    local a, b = normalize_ok(track()), normalize_ok(track())
    assert.matches(UUID, a.message_id)
    assert.not_equal(a.message_id, b.message_id)
  end)

  it("keeps the message's messageId", function()
    assert.equal("node-next-1776440230484-abc", normalize_ok(track({ messageId = "node-next-1776440230484-abc" })).message_id)
  end)

  it("sets received_at from the request time as ISO-8601 UTC milliseconds", function()
    assert.equal("2026-04-17T15:37:10.484Z", normalize_ok(track()).received_at)
  end)

  it("sets received_at to now when the request gives no time", function()
    local before = core.now()
    local ev = normalize_ok(track(), ctx({ received_at = "<nil>" }))
    local t = event.parse_iso8601(ev.received_at)
    assert.is_true(t >= before - 0.001 and t <= core.now() + 0.001)
  end)

  it("keeps the message's timestamp", function()
    assert.equal("2026-04-17T17:00:00+02:00", normalize_ok(track({ timestamp = "2026-04-17T17:00:00+02:00" })).timestamp)
  end)

  it("corrects originalTimestamp for client clock skew using sentAt", function()
    -- client clock 60 s fast: sent "15:38:10.484", received 15:37:10.484
    local ev = normalize_ok(track({ originalTimestamp = "2026-04-17T15:38:08.484Z", sentAt = "2026-04-17T15:38:10.484Z" }))
    assert.equal("2026-04-17T15:37:08.484Z", ev.timestamp)
  end)

  it("uses a batch's sentAt for skew correction", function()
    local body = cjson.encode({ batch = { track({ originalTimestamp = "2026-04-17T15:38:08.484Z" }) },
                                sentAt = "2026-04-17T15:38:10.484Z" })
    local res = core.collect.convert(body, { kind = "batch", pipelines = { "dk_live_demo" },
                                             header_key = "dk_live_demo", received_at = RECEIVED,
                                             canonical_id = "dfid_abc123" })
    assert.equal(200, res.status, res.body)
    local ev = cjson.decode(res.events[1].ev)
    assert.equal("2026-04-17T15:37:08.484Z", ev.timestamp)
    assert.equal("2026-04-17T15:38:10.484Z", ev.sent_at)
  end)

  it("uses originalTimestamp as is without sentAt", function()
    assert.equal("2026-04-17T15:00:00.000Z", normalize_ok(track({ originalTimestamp = "2026-04-17T15:00:00.000Z" })).timestamp)
  end)

  it("defaults timestamp to received_at", function()
    assert.equal("2026-04-17T15:37:10.484Z", normalize_ok(track()).timestamp)
  end)

  it("takes a browser event's ip and user agent from the connection, not the body", function()
    local ev = normalize_ok(track({ context = { ip = "10.9.9.9", userAgent = "Spoofed/1.0" } }))
    assert.equal("203.0.113.7", ev.context.ip)
    assert.equal("Mozilla/5.0 (spec)", ev.context.user_agent)
  end)

  it("keeps a server-side source's ip and user agent from the body", function()
    local ev = normalize_ok(track({ context = { ip = "198.51.100.4", userAgent = "Visitor/1.0" } }),
                            ctx({ server_side = true }))
    assert.equal("198.51.100.4", ev.context.ip)
    assert.equal("Visitor/1.0", ev.context.user_agent)
  end)

  it("fills a server-side event's missing ip and user agent from the connection", function()
    local ev = normalize_ok(track(), ctx({ server_side = true }))
    assert.equal("203.0.113.7", ev.context.ip)
    assert.equal("Mozilla/5.0 (spec)", ev.context.user_agent)
  end)

  it("merges context.traits under traits for identify, traits winning", function()
    local ev = normalize_ok({ type = "identify", userId = "u-1",
                              traits = { email = "ada@example.com", plan = "pro" },
                              context = { traits = { email = "old@example.com", phone = "+441234" } } })
    assert.same({ email = "ada@example.com", plan = "pro", phone = "+441234" }, ev.traits)
  end)

  it("leaves traits alone for track events", function()
    local ev = normalize_ok(track({ context = { traits = { email = "ada@example.com" } } }))
    assert.is_nil(ev.traits)
    assert.same({ email = "ada@example.com" }, ev.context.traits)
  end)
end)

describe("event.is_iso8601", function()
  local cases = {
    { "2026-04-17T15:37:10.484Z", true },
    { "2026-04-17T15:37:10Z", true },
    { "2026-04-17T15:37:10+02:00", true },
    { "2026-04-17T15:37:10.123456789-05:30", true },
    { "2024-02-29T00:00:00Z", true },
    { "2026-04-17 15:37:10Z", false },
    { "2026-04-17", false },
    { "2026-04-17T15:37:10", false },
    { "2026-04-17T15:37:10+0200", false },
    { "2026-04-17T15:37:10.Z", false },
    { "2026-04-17T15:37:10.484z", false },
    { "2026-13-01T00:00:00Z", false },
    { "2023-02-29T00:00:00Z", false },
    { "2026-04-31T00:00:00Z", false },
    { "2026-04-17T24:00:00Z", false },
    { "2026-04-17T15:37:10.1234567890Z", false },
    { "2026-04-17T15:37:10Z ", false },
    { 1776440230, false },
  }
  for _, case in ipairs(cases) do
    it(("says %s for %q"):format(tostring(case[2]), tostring(case[1])), function()
      assert.equal(case[2], event.is_iso8601(case[1]))
    end)
  end
end)

describe("event.iso8601", function()
  it("formats epoch seconds as UTC with milliseconds", function()
    assert.equal("2026-04-17T15:37:10.484Z", event.iso8601(RECEIVED))
  end)

  it("formats the epoch", function()
    assert.equal("1970-01-01T00:00:00.000Z", event.iso8601(0))
  end)

  it("rounds to the millisecond, carrying into the next second", function()
    assert.equal("2026-04-17T15:37:11.000Z", event.iso8601(1776440230.9996))
  end)

  it("round-trips through parse_iso8601", function()
    assert.equal(RECEIVED, event.parse_iso8601(event.iso8601(RECEIVED)) )
  end)

  it("parses an offset into UTC", function()
    assert.equal(event.parse_iso8601("2026-04-17T15:37:10Z"), event.parse_iso8601("2026-04-17T17:37:10+02:00"))
  end)
end)

describe("key conversion to snake_case", function()
  local cases = {
    { "userId", "user_id" }, { "anonymousId", "anonymous_id" }, { "userAgent", "user_agent" },
    { "originalTimestamp", "original_timestamp" }, { "HTTPServer", "http_server" },
    { "already_snake", "already_snake" }, { "ip", "ip" }, { "utm_source", "utm_source" },
    { "page2Title", "page2_title" },
  }
  for _, case in ipairs(cases) do
    it(("converts %s to %s"):format(case[1], case[2]), function()
      assert.equal(case[2], core.collect.snake(case[1]))
    end)
  end
end)

describe("event.identifiers", function()
  it("reads email and phone from traits", function()
    local ids = event.identifiers(normalize_ok({ type = "identify", userId = "u-1",
                                                 traits = { email = "ada@example.com", phone = "+441234" } }))
    assert.same({ canonical_id = "dfid_abc123", user_id = "u-1", email = "ada@example.com", phone = "+441234" }, ids)
  end)

  it("reads email from context.traits of a track event", function()
    local ids = event.identifiers(normalize_ok(track({ context = { traits = { email = "ada@example.com" } } })))
    assert.equal("ada@example.com", ids.email)
    assert.equal("anon-1", ids.anonymous_id)
  end)

  it("reads email from properties for identify only", function()
    assert.equal("ada@example.com", event.identifiers(normalize_ok({ type = "identify", userId = "u",
      properties = { email = "ada@example.com" } })).email)
    assert.is_nil(event.identifiers(normalize_ok(track({ properties = { email = "ada@example.com" } }))).email)
  end)

  it("falls back to traits stitched from an earlier identify", function()
    local ev = normalize_ok(track())
    ev.identity = { email = "ada@example.com", phone = "+441234", user_id = "u-9" }
    local ids = event.identifiers(ev)
    assert.equal("ada@example.com", ids.email)
    assert.equal("+441234", ids.phone)
    assert.equal("u-9", ids.user_id)
  end)

  it("prefers the event's own values over stitched ones", function()
    local ev = normalize_ok(track({ userId = "u-1", context = { traits = { email = "new@example.com" } } }))
    ev.identity = { email = "old@example.com", user_id = "u-old" }
    local ids = event.identifiers(ev)
    assert.equal("new@example.com", ids.email)
    assert.equal("u-1", ids.user_id)
  end)

  it("skips blank values", function()
    local ev = normalize_ok({ type = "identify", userId = "u", traits = { email = "  " } })
    ev.identity = { email = "kept@example.com" }
    assert.equal("kept@example.com", event.identifiers(ev).email)
  end)

  it("fills a given table, clearing stale fields", function()
    local out = { email = "stale@example.com" }
    local ids = event.identifiers(normalize_ok(track()), out)
    assert.equal(out, ids)
    assert.is_nil(ids.email)
    assert.equal("anon-1", ids.anonymous_id)
  end)
end)

describe("the collector's routes", function()
  it("map each single-event endpoint to its type hint", function()
    local hints = {}
    for _, r in ipairs(collector.ROUTES) do hints[r.path] = r.hint end
    assert.same({ ["/v1/t"] = "track", ["/v1/p"] = "page", ["/v1/i"] = "identify", ["/v1/g"] = "group",
                  ["/v1/s"] = "screen", ["/v1/a"] = "alias", ["/v1/track"] = "track", ["/v1/page"] = "page",
                  ["/v1/identify"] = "identify", ["/v1/group"] = "group", ["/v1/screen"] = "screen",
                  ["/v1/alias"] = "alias" }, hints)
  end)
end)
