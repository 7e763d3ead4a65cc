-- spec/01-unit/path_spec.lua — signal.pipeline.path: blueprint source paths compile
-- once into accessors over the canonical event; bad paths are load errors.
local path = require "signal.pipeline.path"

local EVENT = {
  type = "track", event = "Product Viewed", name = "Home",
  user_id = "u1", anonymous_id = "a1", canonical_id = "dfid_1", message_id = "m1",
  timestamp = "2026-04-17T15:37:10.484Z", received_at = "2026-04-17T15:37:10.512Z",
  sent_at = "2026-04-17T15:37:10.480Z", group_id = "g1", previous_id = "p0",
  pipeline_key = "dk_live_demo", amperity_id = "amp_1",
  properties = { price = 9.5, ["Product Name"] = "Trail Runner", nested = { a = { b = { c = "deep" } } },
                 items = { { item_id = "SKU-1" }, { item_id = "SKU-2" } } },
  traits = { email = "jane@example.com" },
  identity = { phone = "+15550100" },
  context = { ip = "203.0.113.7", page = { path = "/p" }, consent = { google = { ad_storage = "denied" } } },
  partner_attrs = { amperity = { Persona = "Value Hunter" } },
}

describe("signal.pipeline.path", function()
  describe("compiles a valid path into an accessor", function()
    local CASES = {
      { "event", "Product Viewed" },
      { "type", "track" },
      { "name", "Home" },
      { "user_id", "u1" },
      { "anonymous_id", "a1" },
      { "canonical_id", "dfid_1" },
      { "message_id", "m1" },
      { "timestamp", "2026-04-17T15:37:10.484Z" },
      { "received_at", "2026-04-17T15:37:10.512Z" },
      { "sent_at", "2026-04-17T15:37:10.480Z" },
      { "group_id", "g1" },
      { "previous_id", "p0" },
      { "pipeline_key", "dk_live_demo" },
      { "amperity_id", "amp_1" },
      { "properties.price", 9.5 },
      { "properties.Product Name", "Trail Runner" },
      { "properties.nested.a.b.c", "deep" },
      { "properties.items.2.item_id", "SKU-2" },
      { "traits.email", "jane@example.com" },
      { "identity.phone", "+15550100" },
      { "context.ip", "203.0.113.7" },
      { "context.page.path", "/p" },
      { "context.consent.google.ad_storage", "denied" },
      { "partner_attrs.amperity.Persona", "Value Hunter" },
    }
    for _, c in ipairs(CASES) do
      it(("reads %s"):format(c[1]), function()
        local get = assert(path.compile(c[1]))
        assert.are.equal(c[2], get(EVENT))
      end)
    end
  end)

  describe("returns nil instead of raising when the event lacks the value", function()
    local CASES = {
      { "properties.missing" },
      { "properties.price.currency" },              -- walks into a number
      { "context.page.url" },
      { "context.geo.country" },                    -- whole subtree absent
      { "properties.nested.a.x.y.z" },              -- deep path, absent midway
      { "properties.items.9.item_id" },
      { "partner_attrs.other.Persona" },
    }
    for _, c in ipairs(CASES) do
      it(c[1], function()
        local get = assert(path.compile(c[1]))
        assert.is_nil(get(EVENT))
        assert.is_nil(get({ properties = "not a table", context = 5 }))
      end)
    end
  end)

  describe("refuses an invalid path at load time", function()
    local CASES = {
      { "", "empty" },
      { "propertes.price", "unknown root 'propertes'" },
      { "properties", "name a field inside properties" },
      { "context", "name a field inside context" },
      { "partner_attrs.amperity", "partner_attrs.<provider>.<attribute>" },
      { "user_id.first", "flat event field" },
      { "properties..price", "empty or space-padded segment" },
      { "properties.price.", "empty or space-padded segment" },
      { "properties. price", "empty or space-padded segment" },
      { "context.1", "no array part" },
    }
    for _, c in ipairs(CASES) do
      it(("'%s'"):format(c[1]), function()
        local get, err = path.compile(c[1])
        assert.is_nil(get)
        assert.truthy(err:find(c[2], 1, true), err)
      end)
    end

    it("names the valid roots in the error", function()
      local _, err = path.compile("ctx.ip")
      assert.truthy(err:find("context.*", 1, true), err)
      assert.truthy(err:find("canonical_id", 1, true), err)
    end)

    it("refuses a non-string source", function()
      local get, err = path.compile(42)
      assert.is_nil(get)
      assert.truthy(err:find("string", 1, true))
    end)
  end)

  describe("a fallback list", function()
    it("returns the first value that is neither nil nor empty", function()
      local get = assert(path.compile_list({ "traits.phone", "properties.empty", "identity.phone" }))
      assert.are.equal("+15550100", get({ traits = {}, properties = { empty = "" },
                                          identity = { phone = "+15550100" } }))
    end)

    it("prefers the earlier path when both have a value", function()
      local get = assert(path.compile_list({ "traits.email", "identity.email" }))
      assert.are.equal("now@example.com",
        get({ traits = { email = "now@example.com" }, identity = { email = "then@example.com" } }))
    end)

    it("returns nil when no path has a value", function()
      local get = assert(path.compile_list({ "traits.email", "identity.email" }))
      assert.is_nil(get({}))
    end)

    it("fails on the first bad path", function()
      local get, err = path.compile_list({ "traits.email", "trait.email" })
      assert.is_nil(get)
      assert.truthy(err:find("trait.email", 1, true))
    end)
  end)

  it("parses a path into keys once, numbers for array indexes", function()
    assert.are.same({ "properties", "items", 1, "item_id" }, path.parse("properties.items.1.item_id"))
  end)
end)
