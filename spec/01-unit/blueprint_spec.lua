-- spec/01-unit/blueprint_spec.lua — signal.pipeline.blueprint and the Amperity body
-- (signal.destinations.amperity.payload): mapping semantics, pass-through,
-- consent, hashing, validation errors, versions. Runs against the real
-- presets and the real signal.core (sha256).
local blueprint = require "signal.pipeline.blueprint"
local transform = require "signal.destinations.amperity.payload"
local T = require "signal.testing"
local cjson = require "cjson"

local CFG = { source_value = "DATAFLY" }

local H = require "helpers"
local tmpdir = H.tmpdir

-- A scripts_dir holding the given { ["01_x.lua"] = "source" } files.
local function scripts_dir(files)
  local d = tmpdir()
  for name, src in pairs(files) do
    local f = assert(io.open(d .. "/" .. name, "w"))
    f:write(src)
    f:close()
  end
  return d
end

local function load(files)
  return blueprint.load{ presets_dir = "presets", scripts_dir = files and scripts_dir(files) or nil }
end

local function bp_with(script_src, preset)
  local lib, errs = load({ ["01_test.lua"] = script_src })
  assert(lib, errs and table.concat(errs, "\n"))
  return assert(lib:get(preset or "retail"))
end


-- Amperity bodies: no arrays, no nested tables except consent.
local function assert_flat(p)
  for k, v in pairs(p) do
    assert.are.equal("string", type(k))
    if k ~= "consent" then
      assert.is_true(type(v) == "string" or type(v) == "number" or type(v) == "boolean",
        ("%s is a %s"):format(k, type(v)))
      assert.are_not.equal("", v, k .. " is empty")
    end
  end
end

describe("signal.pipeline.blueprint", function()
  local lib
  teardown(function()
    H.remove_tmpdirs()
  end)
  setup(function()
    local errs
    lib, errs = blueprint.load{ presets_dir = "presets" }
    assert(lib, errs and table.concat(errs, "\n"))
  end)

  describe("loading", function()
    it("loads the seven vertical presets", function()
      assert.are.same({ "b2b_saas", "finance", "gaming", "media", "publishing", "retail", "travel" },
        lib.preset_names)
    end)

    it("gives the loaded set a short hex version id", function()
      assert.truthy(lib.version:match("^%x%x%x%x%x%x%x%x%x%x%x%x$"), lib.version)
    end)

    it("keeps the version when nothing changed and changes it when a script does", function()
      local d = scripts_dir({ ["01_a.lua"] = "return { global = { mappings = { { target = 'a', default = 1 } } } }" })
      local v1 = assert(blueprint.load{ presets_dir = "presets", scripts_dir = d }).version
      local v2 = assert(blueprint.load{ presets_dir = "presets", scripts_dir = d }).version
      assert.are.equal(v1, v2)
      assert.are_not.equal(lib.version, v1)
      local f = assert(io.open(d .. "/01_a.lua", "w"))
      f:write("return { global = { mappings = { { target = 'a', default = 2 } } } }")
      f:close()
      local v3 = assert(blueprint.load{ presets_dir = "presets", scripts_dir = d }).version
      assert.are_not.equal(v1, v3)
    end)

    it("returns the same compiled blueprint for the same preset and pipeline", function()
      assert.are.equal(lib:get("retail", "dk_a"), lib:get("retail", "dk_a"))
      assert.are_not.equal(lib:get("retail", "dk_a"), lib:get("travel", "dk_a"))
    end)

    it("names the valid presets when asked for an unknown one", function()
      local bp, err = lib:get("grocery")
      assert.is_nil(bp)
      assert.are.equal("unknown preset 'grocery' (valid: b2b_saas, finance, gaming, media, "
        .. "publishing, retail, travel)", err)
    end)

    it("reports a missing presets directory", function()
      local l, errs = blueprint.load{ presets_dir = "/nonexistent/presets" }
      assert.is_nil(l)
      assert.truthy(errs[1]:find("/nonexistent/presets/amperity: no such directory", 1, true), errs[1])
    end)

    it("reports a missing scripts directory", function()
      local l, errs = blueprint.load{ presets_dir = "presets", scripts_dir = "/nonexistent/scripts" }
      assert.is_nil(l)
      assert.truthy(errs[1]:find("/nonexistent/scripts", 1, true))
    end)
  end)

  describe("refuses an invalid mapping entry, naming file and field", function()
    local CASES = {
      { "{ sorce = 'properties.sku', target = 'sku' }",
        "global.mappings[1]: unknown field 'sorce' — did you mean 'source'?" },
      { "{ source = 'properties.sku' }", "global.mappings[1]: target must be a non-empty string" },
      { "{ source = 'properties.sku', target = '' }", "target must be a non-empty string" },
      { "{ source = 'context.consent', target = 'consent' }", "target 'consent' is reserved" },
      { "{ target = 'source', default = 'X' }", "target 'source' is reserved" },
      { "{ source = 'propertes.sku', target = 'sku' }", "unknown root 'propertes'" },
      { "{ source = 42, target = 'sku' }", "source must be a path string or a list of path strings" },
      { "{ source = {}, target = 'sku' }", "source must be a path string or a list of path strings" },
      { "{ source = 'traits.email', target = 'e', hash = 'md5' }", "hash must be \"sha256\", got md5" },
      { "{ source = 'traits.email', target = 'e', hash = 'SHA256' }", "hash must be \"sha256\"" },
      { "{ source = 'traits.email', target = 'e', fn = 'upper' }", "fn must be a function" },
      { "{ source = 'traits.email', target = 'e', default = {} }", "default must be a string, number or boolean" },
      { "{ target = 'e' }", "a mapping needs source, fn or default" },
      { "'properties.sku'", "a mapping must be a table" },
    }
    for _, c in ipairs(CASES) do
      it(c[1], function()
        local l, errs = load({ ["01_bad.lua"] = "return { global = { mappings = { " .. c[1] .. " } } }" })
        assert.is_nil(l)
        assert.are.equal(1, #errs, table.concat(errs, "\n"))
        assert.truthy(errs[1]:find("/01_bad.lua: ", 1, true), errs[1])
        assert.truthy(errs[1]:find(c[2], 1, true), errs[1])
      end)
    end

    it("refuses an unknown field in an event handler", function()
      local l, errs = load({ ["01_bad.lua"] =
        "return { events = { x = { type = 'x', mapings = {} } } }" })
      assert.is_nil(l)
      assert.truthy(errs[1]:find("events.x: unknown field 'mapings' — did you mean 'mappings'?", 1, true), errs[1])
    end)

    it("refuses an event name handled twice in one file", function()
      local l, errs = load({ ["01_bad.lua"] =
        "return { events = { a = { aliases = { 'B' } }, B = { } } }" })
      assert.is_nil(l)
      assert.truthy(errs[1]:find("event name 'B' is already handled", 1, true), errs[1])
    end)

    it("refuses a default other than pass_through or drop", function()
      local l, errs = load({ ["01_bad.lua"] = "return { default = 'forward' }" })
      assert.is_nil(l)
      assert.truthy(errs[1]:find("default: must be \"pass_through\" or \"drop\"", 1, true), errs[1])
    end)

    it("refuses a script scoped to an unknown preset", function()
      local l, errs = load({ ["01_bad.lua"] = "return { presets = { 'grocery' } }" })
      assert.is_nil(l)
      assert.truthy(errs[1]:find("unknown preset 'grocery'", 1, true), errs[1])
    end)
  end)

  describe("mapping values", function()
    local e
    before_each(function() e = T.fixture("page") end)

    it("uses default when the source is missing or empty", function()
      local bp = bp_with([[return { global = { mappings = {
        { source = "properties.currency", target = "currency", default = "USD" },
        { source = "properties.blank", target = "blank", default = "filled" },
        { source = "properties.category", target = "cat", default = "other" },
      } } }]])
      e.properties.blank = ""
      local p = bp:map(e, CFG)
      assert.are.equal("USD", p.currency)
      assert.are.equal("filled", p.blank)
      assert.are.equal("shoes", p.cat)
    end)

    it("calls fn with the value and the event, after default", function()
      local bp = bp_with([[return { global = { mappings = {
        { source = "properties.category", target = "cat_upper", fn = function(v) return v:upper() end },
        { target = "event_kind", fn = function(v, event) return event.type .. ":" .. tostring(v) end },
        { source = "properties.none", target = "d", default = "x", fn = function(v) return v .. "!" end },
      } } }]])
      local p = bp:map(e, CFG)
      assert.are.equal("SHOES", p.cat_upper)
      assert.are.equal("page:nil", p.event_kind)
      assert.are.equal("x!", p.d)
    end)

    it("never writes nil, empty strings, tables or NaN", function()
      local bp = bp_with([[return { global = { mappings = {
        { target = "t", fn = function() return { 1, 2 } end },
        { target = "n", fn = function() return 0/0 end },
        { target = "i", fn = function() return math.huge end },
        { target = "s", fn = function() return "" end },
        { target = "z", fn = function() return nil end },
        { target = "f", fn = function() return false end },
      } } }]])
      local p = bp:map(e, CFG)
      for _, k in ipairs({ "t", "n", "i", "s", "z" }) do assert.is_nil(p[k], k) end
      assert.are.equal(false, p.f)
    end)

    it("does not blank out an earlier layer's value when a later source is missing", function()
      local bp = bp_with([[return { global = { mappings = {
        { source = "properties.no_such_title", target = "page_title" },
      } } }]])
      assert.are.equal("Running Shoes | Acme", bp:map(e, CFG).page_title)
    end)

    it("takes the first present path of a source list", function()
      local bp = bp_with([[return { global = { mappings = {
        { source = { "properties.nope", "properties.category", "context.page.path" }, target = "first" },
      } } }]])
      assert.are.equal("shoes", bp:map(e, CFG).first)
    end)
  end)

  describe("sha256 hashing", function()
    -- Independent vectors (Python hashlib) of the lower-cased, trimmed input.
    local VECTORS = {
      { "  Jane.Doe@Example.com ", "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d" },
      { "jane.doe@example.com", "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d" },
      { "\tFOO@EXAMPLE.COM\n", "321ba197033e81286fedb719d60d4ed5cecaed170733cb4a92013811afc0e3b6" },
      { "+1 212 555 0142 ", "8d8f3ecc443c9c404fb19afa523025e42995ac4f01d8e25786e98b2c06b81ea7" },
      { "ABC", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" },
    }
    for _, v in ipairs(VECTORS) do
      it(("hashes %q lower-cased and trimmed"):format(v[1]), function()
        local bp = bp_with([[return { global = { mappings = {
          { source = "properties.secret", target = "secret_sha256", hash = "sha256" },
        } } }]])
        local e = T.fixture("page")
        e.properties.secret = v[1]
        assert.are.equal(v[2], bp:map(e, CFG).secret_sha256)
      end)
    end

    it("writes nothing for a value that is blank after trimming", function()
      local bp = bp_with([[return { global = { mappings = {
        { source = "properties.secret", target = "secret_sha256", hash = "sha256" },
      } } }]])
      local e = T.fixture("page")
      e.properties.secret = "   "
      assert.is_nil(bp:map(e, CFG).secret_sha256)
    end)

    it("hashes the preset's email_sha256 from traits before identity", function()
      local bp = lib:get("retail")
      local e = T.fixture("page")
      e.traits.email = "  Jane.Doe@Example.com "
      e.identity.email = "someone.else@example.com"
      local p = bp:map(e, CFG)
      assert.are.equal("86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d", p.email_sha256)
      assert.are.equal("jane.doe@example.com", p.email)
    end)
  end)

  describe("the Amperity body", function()
    it("always carries source, type, cookieid, ip_address, user_agent, timestamp and identity", function()
      local e = T.fixture("retail")
      local p = lib:get("retail"):map(e, CFG)
      assert.are.same({
        source = "DATAFLY", type = "purchase", cookieid = "dfid_abc123",
        ip_address = "203.0.113.42", user_agent = e.context.user_agent,
        timestamp = "2026-04-17T15:37:10.484Z", email = "jane.doe@example.com",
        user_id = "cust_10482", anonymous_id = "a3f1c2d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
        amperity_id = "b7e2f0c4-1d3a-4c5e-9f8a-2b6d7e9c0a1f",
      }, {
        source = p.source, type = p.type, cookieid = p.cookieid, ip_address = p.ip_address,
        user_agent = p.user_agent, timestamp = p.timestamp, email = p.email,
        user_id = p.user_id, anonymous_id = p.anonymous_id, amperity_id = p.amperity_id,
      })
    end)

    it("fills the required fields even when a transform removed them", function()
      local bp = bp_with([[return { transform = function(event, p)
        p.cookieid, p.ip_address, p.user_agent, p.timestamp, p.type = nil, nil, nil, nil, nil
        p.email, p.user_id, p.anonymous_id, p.amperity_id = nil, nil, nil, nil
      end }]])
      local p = bp:map(T.fixture("retail"), CFG)
      for _, k in ipairs({ "source", "type", "cookieid", "ip_address", "user_agent", "timestamp",
                           "email", "user_id", "anonymous_id", "amperity_id" }) do
        assert.is_not_nil(p[k], k)
      end
      assert.are.equal("Order Completed", p.type)
    end)

    it("takes the resolved amperity_id from partner_attrs when the event has none", function()
      local e = T.fixture("page")
      e.amperity_id = nil
      e.partner_attrs.amperity.amperity_id = "amp_from_attrs"
      assert.are.equal("amp_from_attrs", lib:get("retail"):map(e, CFG).amperity_id)
    end)

    it("leaves out identity fields the visitor does not have", function()
      local e = { type = "track", event = "x", canonical_id = "dfid_9", timestamp = "2026-04-17T15:37:10.484Z" }
      local p = lib:get("retail"):map(e, CFG)
      assert.are.same({ source = "DATAFLY", type = "x", cookieid = "dfid_9",
                        event_name = "x", timestamp = "2026-04-17T15:37:10.484Z" }, p)
    end)

    it("warns when no source_value is configured", function()
      local p, warnings = lib:get("retail"):map(T.fixture("page"))
      assert.is_nil(p.source)
      assert.truthy(warnings[1]:find("source_value", 1, true))
    end)

    it("contains no arrays and no nested tables except consent", function()
      for _, v in ipairs({ "page", "retail", "travel", "finance", "b2b_saas", "media", "gaming", "publishing" }) do
        local p = lib:get(v == "page" and "retail" or v):map(T.fixture(v), CFG)
        assert_flat(p)
        local body = cjson.encode(p)
        local no_consent = body:gsub('"consent":%b{}', "")
        assert.is_nil(no_consent:find("[", 1, true), body)
      end
    end)

    describe("normalizes timestamps to ISO-8601 UTC with milliseconds", function()
      local CASES = {
        { "2026-04-17T15:37:10.484Z", "2026-04-17T15:37:10.484Z" },
        { "2026-04-17T15:37:10Z", "2026-04-17T15:37:10.000Z" },
        { "2026-04-17T15:37:10.4Z", "2026-04-17T15:37:10.400Z" },
        { "2026-04-17T15:37:10.484123Z", "2026-04-17T15:37:10.484Z" },
        { "2026-04-17T17:37:10.484+02:00", "2026-04-17T15:37:10.484Z" },
        { "2026-04-17T10:37:10.484-0500", "2026-04-17T15:37:10.484Z" },
        { "2026-04-18T00:07:10.484+08:30", "2026-04-17T15:37:10.484Z" },
        { "2026-04-17 15:37:10", "2026-04-17T15:37:10.000Z" },
        { "2026-04-17", "2026-04-17T00:00:00.000Z" },
        { "2024-02-29T23:59:59.999Z", "2024-02-29T23:59:59.999Z" },
        { "2024-03-01T00:30:00+01:00", "2024-02-29T23:30:00.000Z" },
        { 1776440230.484, "2026-04-17T15:37:10.484Z" },
        { 1776440230484, "2026-04-17T15:37:10.484Z" },
      }
      for _, c in ipairs(CASES) do
        it(tostring(c[1]), function()
          assert.are.equal(c[2], transform.iso8601(c[1]))
        end)
      end

      it("falls back to received_at for an unparseable timestamp", function()
        local e = T.fixture("page")
        e.timestamp = "yesterday"
        assert.are.equal("2026-04-17T15:37:10.512Z", lib:get("retail"):map(e, CFG).timestamp)
      end)

      for _, bad in ipairs({ "yesterday", "2026-13-01T00:00:00Z", "2026-04-17T25:00:00Z", "2026-04-17T10:00:00+5" }) do
        it(("rejects %q"):format(bad), function() assert.is_nil(transform.iso8601(bad)) end)
      end
    end)
  end)

  describe("consent", function()
    it("sends the consent object verbatim", function()
      local e = T.fixture("retail")
      local expected = T.deep_copy(e.context.consent)
      local p = lib:get("retail"):map(e, CFG)
      assert.are.same(expected, p.consent)
      assert.are.same({
        analytics = true, marketing = false, functional = true,
        categories = { C0001 = true, C0002 = false, ad_personalization = false },
        google = { ad_storage = "denied", ad_user_data = "denied",
                   ad_personalization = "denied", analytics_storage = "granted" },
      }, cjson.decode(cjson.encode(p)).consent)
    end)

    it("sends a partial consent object as it is", function()
      local e = T.fixture("page")
      e.context.consent = { categories = { C0003 = true } }
      assert.are.same({ categories = { C0003 = true } }, lib:get("travel"):map(e, CFG).consent)
    end)

    it("leaves consent out when the event has none", function()
      local e = T.fixture("page")
      e.context.consent = nil
      local p = lib:get("retail"):map(e, CFG)
      assert.is_nil(p.consent)
      assert.is_nil(p.consent_analytics)
    end)

    it("cannot be removed or forged by a script", function()
      local bp = bp_with([[return { transform = function(event, p)
        p.consent = event.context.consent and nil or { analytics = true }
        return p
      end }]])
      local e = T.fixture("page")
      assert.are.same(e.context.consent, bp:map(e, CFG).consent)
      e.context.consent = nil
      assert.is_nil(bp:map(e, CFG).consent)
    end)
  end)

  describe("pass-through of unmapped events", function()
    local bp
    before_each(function() bp = lib:get("retail") end)

    it("keeps the event name exactly as the type", function()
      local e = T.fixture("page")
      e.type, e.event = "track", "Custom Thing Happened"
      assert.are.equal("Custom Thing Happened", bp:map(e, CFG).type)
    end)

    it("writes properties flat, joining nested keys with _", function()
      local e = T.fixture("page")
      e.type, e.event = "track", "quiz_completed"
      e.properties = { score = 7, passed = true, quiz = { id = "q1", meta = { level = "hard" } } }
      local p = bp:map(e, CFG)
      assert.are.equal(7, p.score)
      assert.are.equal(true, p.passed)
      assert.are.equal("q1", p.quiz_id)
      assert.are.equal("hard", p.quiz_meta_level)
      assert.is_nil(p.quiz)
    end)

    it("sends arrays as JSON strings and skips empty tables", function()
      local e = T.fixture("page")
      e.type, e.event = "track", "quiz_completed"
      e.properties = { answers = { "a", "c" }, picks = { { id = 1 } }, empty = {} }
      local p = bp:map(e, CFG)
      assert.are.equal('["a","c"]', p.answers)
      assert.are.equal('[{"id":1}]', p.picks)
      assert.is_nil(p.empty)
      assert_flat(p)
    end)

    it("never overwrites a mapped field with a property of the same name", function()
      local e = T.fixture("page")
      e.type, e.event = "track", "quiz_completed"
      e.properties = { page_url = "spoofed", type = "spoofed", source = "spoofed", cookieid = "spoofed" }
      local p = bp:map(e, CFG)
      assert.are.equal("https://shop.example.com/c/running-shoes", p.page_url)
      assert.are.equal("quiz_completed", p.type)
      assert.are.equal("DATAFLY", p.source)
      assert.are.equal("dfid_abc123", p.cookieid)
    end)

    it("passes through identify, screen, group and alias with their type as the name", function()
      for _, t in ipairs({ "identify", "screen", "group", "alias" }) do
        local e = T.fixture("page")
        e.type, e.name = t, nil
        assert.are.equal(t, bp:map(e, CFG).type)
      end
    end)

    it("drops unmapped events when a script sets default = \"drop\"", function()
      local dbp = bp_with([[return { default = "drop" }]])
      local e = T.fixture("page")
      e.type, e.event = "track", "quiz_completed"
      assert.is_nil((dbp:map(e, CFG)))
      e.event = "Product Viewed"
      assert.are.equal("view_item", dbp:map(e, CFG).type)
    end)
  end)

  describe("transform hooks", function()
    it("can drop an event by returning false", function()
      local bp = bp_with([[return { transform = function(event, p)
        if event.properties.internal then return false end
      end }]])
      local e = T.fixture("page")
      assert.is_not_nil((bp:map(e, CFG)))
      e.properties.internal = true
      assert.is_nil((bp:map(e, CFG)))
    end)

    it("can replace the payload with a new table", function()
      local bp = bp_with([[return { transform = function(event, p)
        return { type = "custom", only = "this" }
      end }]])
      local p = bp:map(T.fixture("page"), CFG)
      assert.are.equal("custom", p.type)
      assert.are.equal("this", p.only)
      assert.is_nil(p.page_url)
      assert.are.equal("DATAFLY", p.source)      -- the integration's fields are still added
      assert.are.equal("dfid_abc123", p.cookieid)
    end)

    it("refuses at load a transform that returns something else on the probe event", function()
      local l, errs = load({ ["01_t.lua"] = [[return { transform = function(event, p) return "oops" end }]] })
      assert.is_nil(l)
      assert.truthy(errs[1]:find("/01_t.lua: transform must return a table, nil or false, got string",
        1, true), errs[1])
    end)

    it("warns when a transform returns something else and keeps the payload", function()
      local bp = bp_with([[return { transform = function(event, p)
        if event.properties.oops then return "oops" end
      end }]])
      local e = T.fixture("page")
      e.properties.oops = true
      local p, warnings = bp:map(e, CFG)
      assert.are.equal("pageview", p.type)
      assert.truthy(warnings[1]:find("transform must return a table, nil or false, got string", 1, true))
    end)
  end)
end)

describe("nested payloads (a destination without presets: the webhook)", function()
  local function webhook_bp(src)
    local lib, errs = blueprint.load{ destination = "webhook", presets_dir = "presets",
                                      scripts_dir = scripts_dir({ ["01_hook.lua"] = src }) }
    assert(lib, errs and table.concat(errs, "\n"))
    return assert(lib:get(nil, "dk_hook"))
  end

  it("starts from the enriched event and writes dotted targets as objects", function()
    local bp = webhook_bp([[return { integration = "webhook", global = { mappings = {
      { source = "partner_attrs.amperity.Persona", target = "customer.persona" },
      { source = "properties.products", target = "order.items" },
    } } }]])
    local e = T.fixture("retail")
    e.partner_attrs = { amperity = { Persona = "Value Hunter" } }
    local p = bp:map(e, {})
    assert.equal("Value Hunter", p.customer.persona)
    assert.same(e.properties.products, p.order.items)
    assert.equal(e.message_id, p.message_id)
    assert.same(e.partner_attrs, p.partner_attrs)
  end)

  for _, guarded in ipairs({ false, true }) do
    it("copies the event's objects it writes into, leaving the event as it was"
       .. (guarded and " (a script with fn)" or ""), function()
      local fn = guarded and ", fn = function(v) return v end" or ""
      local bp = webhook_bp([[return { integration = "webhook", global = { mappings = {
        { source = "properties.category", target = "context.page.section"]] .. fn .. [[ },
      } } }]])
      local e = T.fixture("retail")
      e.properties.category = "shoes"
      local before = cjson.encode(e)
      local p = bp:map(e, {})
      assert.equal("shoes", p.context.page.section)
      -- the rest of the objects on the way is kept
      assert.equal(e.context.page.url, p.context.page.url)
      assert.equal(e.context.user_agent, p.context.user_agent)
      -- and the event every other destination maps from is untouched
      assert.equal(before, cjson.encode(e))
      assert.is_nil(e.context.page.section)
    end)
  end

  it("drops what no script handles when a script says default = \"drop\"", function()
    local bp = webhook_bp([[return { integration = "webhook", default = "drop",
      events = { ["Order Completed"] = { mappings = { { source = "properties.order_id", target = "order" } } } } }]])
    local e = T.fixture("retail")
    e.event = "Order Completed"
    e.properties.order_id = "ord-7"
    assert.equal("ord-7", bp:map(e, {}).order)
    e.event = "Product Viewed"
    assert.is_nil((bp:map(e, {})))
  end)
end)
