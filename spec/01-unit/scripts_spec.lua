-- spec/01-unit/scripts_spec.lua — customer mapping scripts: the restricted
-- environment, the instruction budget, load errors with file:line, layering
-- order, pipeline scoping, runtime failures, hot reload and signal.testing.
-- Fixture scripts live in spec/fixtures/scripts/<case>/.
local blueprint = require "signal.pipeline.blueprint"
local scripts = require "signal.pipeline.scripts"
local reload = require "signal.pipeline.reload"
local T = require "signal.testing"

local CFG = { source_value = "DATAFLY" }
local FIX = "spec/fixtures/scripts/"

local function load_dir(case)
  return blueprint.load{ presets_dir = "presets", scripts_dir = FIX .. case }
end

local H = require "helpers"
local tmpdir = H.tmpdir

local function write(dir, name, src)
  local f = assert(io.open(dir .. "/" .. name, "w"))
  f:write(src)
  f:close()
end

local function load_src(src)
  return scripts.load(src, "inline.lua")
end

describe("customer scripts", function()
  teardown(function()
    H.remove_tmpdirs()
  end)

  describe("the restricted environment refuses", function()
    local CASES = {
      { "os.execute('true')", "'os.execute' is not available in mapping scripts" },
      { "os.getenv('HOME')", "'os.getenv' is not available" },
      { "os.remove('/tmp/x')", "'os.remove' is not available" },
      { "io.open('/etc/passwd')", "'io' is not available" },
      { "require('os')", "'require' is not available" },
      { "load('return 1')", "'load' is not available" },
      { "loadstring('return 1')", "'loadstring' is not available" },
      { "dofile('/etc/passwd')", "'dofile' is not available" },
      { "loadfile('/etc/passwd')", "'loadfile' is not available" },
      { "debug.getinfo(1)", "'debug' is not available" },
      { "getmetatable('').__index.rep('x', 2)", "'getmetatable' is not available" },
      { "setfenv(1, {})", "'setfenv' is not available" },
      { "collectgarbage()", "'collectgarbage' is not available" },
      { "package.loaded.os.execute('true')", "'package' is not available" },
      { "jit.off()", "'jit' is not available" },
      { "print('x')", "'print' is not available" },
      { "string.dump(function() end)", "attempt to call field 'dump'" },
    }
    for _, c in ipairs(CASES) do
      it(c[1], function()
        local v, err = load_src(c[1] .. "\nreturn {}")
        assert.is_nil(v)
        assert.truthy(err:find("^inline%.lua:1: "), err)
        assert.truthy(err:find(c[2], 1, true), err)
      end)
    end

    it("io at the top of a script file, with file and line", function()
      local lib, errs = load_dir("refused_io")
      assert.is_nil(lib)
      assert.are.same({ FIX .. "refused_io/01_io.lua:2: 'io' is not available in mapping scripts" }, errs)
    end)
  end)

  describe("the restricted environment allows", function()
    local CASES = {
      { "string.upper('a') .. ('b'):rep(2)", "Abb" },
      { "table.concat({ 'a', 'b' }, ',')", "a,b" },
      { "math.floor(2.7) + math.max(1, 3)", 5 },
      { "select('#', 1, 2, 3)", 3 },
      { "tostring(12) .. type({})", "12table" },
      { "tonumber('0x10')", 16 },
      { "(function() local n = 0 for _ in pairs({ a = 1, b = 2 }) do n = n + 1 end "
        .. "for _ in ipairs({ 1, 2 }) do n = n + 1 end return n end)()", 4 },
      { "select(2, pcall(error, 'caught'))", "caught" },
      { "type(os.time())", "number" },
      { "os.date('!%Y', 0)", "1970" },
      { "sha256('abc')", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" },
      { "next({ k = 1 })", "k" },
    }
    for _, c in ipairs(CASES) do
      it(c[1], function()
        local v, err = load_src("return " .. c[1])
        assert.is_nil(err)
        assert.are.equal(c[2], v)
      end)
    end

    it("a fresh environment per file, so scripts cannot share globals", function()
      assert.are.equal(1, load_src("shared = 1 return shared"))
      assert.is_nil(load_src("return rawget(_G, 'shared')"))
    end)

    it("no way to modify the engine's string library", function()
      local v = load_src("string.upper = nil return string.upper")
      assert.is_nil(v)
      assert.are.equal("A", ("a"):upper())
    end)
  end)

  describe("the instruction budget", function()
    it("stops an endless loop in a script's main chunk", function()
      local v, err = load_src("while true do end\nreturn {}")
      assert.is_nil(v)
      assert.truthy(err:find("^inline%.lua:1: instruction budget exceeded"), err)
    end)

    it("cannot be swallowed by the script's own pcall", function()
      local v, err = load_src("while true do pcall(function() while true do end end) end")
      assert.is_nil(v)
      assert.truthy(err:find("instruction budget exceeded", 1, true), err)
    end)

    it("stops an endless loop in fn and still maps the event", function()
      local lib = assert(load_dir("runtime_error"))
      local e = T.fixture("retail")
      e.properties.spin = true
      local p, warnings = assert(lib:get("retail")):map(e, CFG)
      assert.are.equal("purchase", p.type)
      assert.are.equal("yes", p.sturdy)
      assert.is_nil(p.spun)
      assert.are.equal(1, #warnings)
      assert.truthy(warnings[1]:find("^" .. FIX .. "runtime_error/01_fragile%.lua:%d+: instruction budget exceeded"),
        warnings[1])
    end)

    it("allows ordinary work well within the budget", function()
      assert.are.equal(5000050000,
        load_src("local s = 0 for i = 1, 100000 do s = s + i end return s"))
    end)
  end)

  describe("a broken script is a load error with file and line", function()
    local CASES = {
      { "broken_syntax", FIX .. "broken_syntax/02_broken.lua:5: '}' expected near 'target'" },
      { "unknown_top_field", FIX .. "unknown_top_field/01_typo.lua: unknown field 'evnets' — did you mean 'events'?" },
      { "unknown_mapping_field", FIX .. "unknown_mapping_field/01_typo.lua: events.view_item.mappings[1]: "
        .. "unknown field 'sorce' — did you mean 'source'?" },
      { "bad_path", FIX .. "bad_path/01_path.lua: global.mappings[1]: invalid source path 'propertes.sku': "
        .. "unknown root 'propertes'" },
      { "probe_error", FIX .. "probe_error/01_probe.lua:6: attempt to index field 'nothing' (a nil value)" },
    }
    for _, c in ipairs(CASES) do
      it(c[1], function()
        local lib, errs = load_dir(c[1])
        assert.is_nil(lib)
        assert.are.equal(1, #errs, table.concat(errs, "\n"))
        assert.are.equal(c[2], errs[1]:sub(1, #c[2]))
      end)
    end

    it("a script that does not return a table", function()
      local d = tmpdir()
      write(d, "01_nothing.lua", "local x = 1")
      local lib, errs = blueprint.load{ presets_dir = "presets", scripts_dir = d }
      assert.is_nil(lib)
      assert.are.equal(d .. "/01_nothing.lua: must return a blueprint table, got nil", errs[1])
    end)

    it("every broken file is reported, not only the first", function()
      local d = tmpdir()
      write(d, "01_a.lua", "return { bogus = 1 }")
      write(d, "02_b.lua", "return {")
      local lib, errs = blueprint.load{ presets_dir = "presets", scripts_dir = d }
      assert.is_nil(lib)
      assert.are.equal(2, #errs)
      assert.truthy(errs[1]:find("01_a.lua: unknown field 'bogus'", 1, true), errs[1])
      assert.truthy(errs[2]:find("02_b.lua:1: ", 1, true), errs[2])
    end)
  end)

  describe("layering", function()
    local lib
    setup(function()
      local errs
      lib, errs = load_dir("layered")
      assert(lib, errs and table.concat(errs, "\n"))
    end)

    it("runs scripts in file-name order, later ones overriding earlier ones", function()
      local p = lib:get("retail"):map(T.fixture("page"), CFG)
      assert.are.equal("02_override", p.layer)
    end)

    it("runs mappings before transforms, and transforms in file-name order", function()
      assert.are.equal("m12", lib:get("retail"):map(T.fixture("page"), CFG).trail)
    end)

    it("lets a script handler override the preset handler's field", function()
      local e = T.fixture("page")
      e.type, e.event, e.properties = "track", "view_item", { product_id = "P-1", sku = "SKU-9", price = 12.5 }
      local p = lib:get("retail"):map(e, CFG)
      assert.are.equal("SKU-9", p.product_id)
      assert.are.equal(1250, p.price_cents)
      assert.are.equal(12.5, p.price)                  -- the preset's own mapping still ran
    end)

    it("applies a script handler keyed like the preset's to the preset's aliases", function()
      local e = T.fixture("page")
      e.type, e.event, e.properties = "track", "Product Viewed", { sku = "SKU-9", price = 1 }
      local p = lib:get("retail"):map(e, CFG)
      assert.are.equal("view_item", p.type)
      assert.are.equal("SKU-9", p.product_id)
    end)

    it("maps an event only a script handles, with the script's type, not flat", function()
      local e = T.fixture("page")
      e.type, e.event, e.properties = "track", "wishlist_added", { product_id = "P-7", colour = "red" }
      local p = lib:get("travel"):map(e, CFG)
      assert.are.equal("add_to_wishlist", p.type)
      assert.are.equal("P-7", p.product_id)
      assert.is_nil(p.colour)
    end)

    it("keeps consent and source out of scripts' reach, and drops tables", function()
      local e = T.fixture("page")
      local p = lib:get("retail"):map(e, CFG)
      assert.are.same(e.context.consent, p.consent)
      assert.are.equal("DATAFLY", p.source)
      assert.is_nil(p.nested)
    end)
  end)

  describe("pipeline scoping", function()
    local lib
    setup(function() lib = assert(load_dir("layered")) end)

    local CASES = {
      -- preset, pipeline key, expected layer, expected scoped_pipeline
      { "retail", "dk_live_demo", "03_scoped", "dk_live_demo" },
      { "retail", "dk_live_other", "02_override", nil },
      { "retail", nil, "02_override", nil },
      { "travel", "dk_live_demo", "02_override", nil },    -- scoped to retail too
    }
    for _, c in ipairs(CASES) do
      it(("%s / %s applies %s"):format(c[1], tostring(c[2]), c[3]), function()
        local e = T.fixture("page")
        e.pipeline_key = c[2]
        local p = lib:get(c[1], c[2]):map(e, CFG)
        assert.are.equal(c[3], p.layer)
        assert.are.equal(c[4], p.scoped_pipeline)
      end)
    end

    it("lists the scripts that apply to each pipeline", function()
      assert.are.same({ FIX .. "layered/01_loyalty.lua", FIX .. "layered/02_override.lua",
                        FIX .. "layered/03_scoped.lua" }, lib:get("retail", "dk_live_demo").script_files)
      assert.are.same({ FIX .. "layered/01_loyalty.lua", FIX .. "layered/02_override.lua" },
        lib:get("retail", "dk_other").script_files)
    end)
  end)

  describe("a script that raises at runtime", function()
    local lib
    setup(function() lib = assert(load_dir("runtime_error")) end)

    it("keeps the event, without that script's contribution", function()
      local e = T.fixture("retail")
      e.properties.explode = "kaboom"
      local p, warnings = lib:get("retail"):map(e, CFG)
      assert.are.equal("purchase", p.type)
      assert.are.equal("ord_50913", p.order_id)
      assert.is_nil(p.fragile)
      assert.are.equal("yes", p.sturdy)
      assert.are.same({ FIX .. "runtime_error/01_fragile.lua:8: boom on kaboom" }, warnings)
    end)

    it("contributes normally to events it does not raise on", function()
      local p, warnings = lib:get("retail"):map(T.fixture("retail"), CFG)
      assert.are.equal("fine", p.fragile)
      assert.is_nil(warnings)
    end)

    it("discards the writes a failing transform made before raising", function()
      local d = tmpdir()
      write(d, "01_t.lua", [[return { transform = function(event, p)
        p.page_url = "half-written"
        if event.properties.fail then error("late failure") end
      end }]])
      local l = assert(blueprint.load{ presets_dir = "presets", scripts_dir = d })
      local e = T.fixture("page")
      e.properties.fail = true
      local p, warnings = l:get("retail"):map(e, CFG)
      assert.are.equal("https://shop.example.com/c/running-shoes", p.page_url)
      assert.truthy(warnings[1]:find("01_t.lua:3: late failure", 1, true), warnings[1])
    end)
  end)

  describe("hot reload", function()
    local d
    local swaps
    setup(function()
      d = tmpdir()
      write(d, "01_a.lua", "return { global = { mappings = { { target = 'rev', default = 1 } } } }")
      swaps = {}
      reload.init{ presets_dir = "presets", scripts_dir = d,
                   on_swap = function(lib, old) swaps[#swaps + 1] = { lib, old } end }
    end)

    it("loads the first version and reports it", function()
      local st = reload.status()
      assert.are.equal(reload.current().version, st.version)
      assert.are.same({}, st.errors)
      assert.truthy(st.loaded_at:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$"))
      assert.are.equal(1, reload.current():get("amperity", "retail"):map(T.fixture("page"), CFG).rev)
    end)

    it("keeps the working version when the new one is broken, recording the errors", function()
      local before = reload.current()
      write(d, "01_a.lua", "return { global = { mappings = { { target = 'rev', default = 2 }, } }")
      local ok, errs = reload.try_reload()
      assert.is_false(ok)
      assert.truthy(errs[1]:find(d .. "/01_a.lua:1: ", 1, true), errs[1])
      assert.are.equal(before, reload.current())
      assert.are.same(errs, reload.status().errors)
      assert.are.equal(before.version, reload.status().version)
      assert.are.equal(1, reload.current():get("amperity", "retail"):map(T.fixture("page"), CFG).rev)
    end)

    it("swaps in a fixed version and clears the errors", function()
      local before = reload.current()
      write(d, "01_a.lua", "return { global = { mappings = { { target = 'rev', default = 3 } } } }")
      assert.is_true((reload.try_reload()))
      assert.are_not.equal(before, reload.current())
      assert.are.same({}, reload.status().errors)
      assert.are.equal(3, reload.current():get("amperity", "retail"):map(T.fixture("page"), CFG).rev)
      assert.are.equal(reload.current(), swaps[#swaps][1])
      assert.are.equal(before, swaps[#swaps][2])
    end)

    it("keeps the same library when nothing changed", function()
      local before, n = reload.current(), #swaps
      assert.is_true((reload.try_reload()))
      assert.are.equal(before, reload.current())
      assert.are.equal(n, #swaps)
    end)

    it("refuses to start when the very first load fails", function()
      local bad = tmpdir()
      write(bad, "01_bad.lua", "return {")
      local ok, err = pcall(reload.init, { presets_dir = "presets", scripts_dir = bad })
      assert.is_false(ok)
      assert.truthy(err:find(bad .. "/01_bad.lua:1: ", 1, true), err)
    end)
  end)

  describe("the example script (examples/scripts)", function()
    local function map(e, preset)
      return T.map{ preset = preset or "retail", scripts_dir = "examples/scripts", event = e }
    end

    it("bands view_item prices and defaults the stock status", function()
      local e = T.fixture("page")
      e.type, e.event = "track", "Product Viewed"
      e.properties = { product_id = "P1", price = 120, currency = "usd" }
      e.traits.loyalty_id = "L-77"
      local p = map(e)
      assert.are.same({ "view_item", "premium", "unknown", "USD", "L-77", "c" },
        { p.type, p.price_band, p.stock_status, p.currency, p.loyalty_id, p.site_section })
    end)

    it("types its custom event and hashes the contact email", function()
      local e = T.fixture("page")
      e.type, e.event = "track", "Store Visit Booked"
      e.properties = { store_id = "S-12", visit_date = "2026-05-02" }
      local p = map(e)
      assert.are.same({ "store_visit_booked", "S-12", "2026-05-02",
                        "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d" },
        { p.type, p.store_id, p.visit_date, p.contact_email_sha256 })
    end)

    it("drops internal test traffic", function()
      local e = T.fixture("retail")
      e.properties.internal_test = true
      assert.is_nil((map(e)))
    end)

    it("leaves pipelines on other presets alone", function()
      local e = T.fixture("travel")
      e.properties.internal_test = true
      local p = map(e, "travel")
      assert.are.equal("booking_completed", p.type)
      assert.is_nil(p.site_section)
    end)
  end)

  describe("signal.testing", function()
    it("maps a canonical fixture through a preset and scripts exactly as the engine does", function()
      local p, warnings = T.map{ preset = "retail", scripts_dir = FIX .. "layered",
                                 pipeline_key = "dk_live_demo", source_value = "ACME",
                                 event = T.fixture("retail") }
      assert.is_nil(warnings)
      assert.are.equal("ACME", p.source)
      assert.are.equal("purchase", p.type)
      assert.are.equal("03_scoped", p.layer)
      local lib = assert(load_dir("layered"))
      assert.are.same(lib:get("retail", "dk_live_demo"):map(T.fixture("retail"), { source_value = "ACME" }), p)
    end)

    it("normalizes a camelCase datafly.js message first", function()
      local p = T.map{ preset = "retail", canonical_id = "dfid_x",
        partner_attrs = { amperity = { Persona = "Value Hunter" } },
        event = { type = "track", event = "Product Added", userId = "u1", anonymousId = "a1",
                  messageId = "m1", timestamp = "2026-04-17T17:37:10.484+02:00",
                  properties = { product_id = "P1", price = 5 },
                  context = { userAgent = "UA/1", ip = "198.51.100.1",
                              consent = { analytics = true } } } }
      assert.are.same({ "add_to_cart", "P1", "u1", "a1", "dfid_x", "UA/1", "198.51.100.1",
                        "2026-04-17T15:37:10.484Z", "Value Hunter", true },
        { p.type, p.product_id, p.user_id, p.anonymous_id, p.cookieid, p.user_agent, p.ip_address,
          p.timestamp, p.user_persona, p.consent.analytics })
    end)

    it("fails loudly when the scripts do not load", function()
      local ok, err = pcall(T.map, { preset = "retail", scripts_dir = FIX .. "broken_syntax",
                                     event = T.fixture("page") })
      assert.is_false(ok)
      assert.truthy(err:find("02_broken.lua:5:", 1, true), err)
    end)

    it("returns a fresh fixture each time", function()
      local a = T.fixture("travel")
      a.properties.booking_id = "changed"
      assert.are.equal("bk_77812", T.fixture("travel").properties.booking_id)
    end)
  end)
end)
