-- Server-side profile enrichment against the real sandbox and real Redis:
-- linking-key order and skipping, hashing, positive/negative caching (with
-- TTLs), transient errors never cached, the profile call when a lookup has
-- no attributes, context personalization and its cache, the browser slice,
-- and — inside one engine task (`signal exec`) — single flight, the time
-- budget and the warnings. Most cases drive enrich.run directly through the
-- standalone (blocking) signal.core; what needs the engine's scheduler runs
-- under `signal exec spec/fixtures/tasks/enrich_run.lua`.
local H = require "helpers"
local cjson = require "cjson"
local cjson_safe = require "cjson.safe"
local core = require "signal.core"
local config = require "signal.config"
local log = require "signal.observe.log"
local enrich = require "signal.destinations.amperity.enrich"
local resolve = require "signal.destinations.amperity.resolve"
local personalize = require "signal.destinations.amperity.personalize"
local browser = require "signal.destinations.amperity.browser"

local FIXTURE, fx = H.PROFILES, H.profiles()
local JANE = "3f9c2a71-8d4e-4b6a-9c1f-0a2b3c4d5e01"
local ADA = "3f9c2a71-8d4e-4b6a-9c1f-0a2b3c4d5e02"
local ORG = "org-spec-enrich"
local OTHER_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzY29wZSI6Im90aGVyIn0.b3RoZXI"

local deep_copy = require("signal.config.schema").deepcopy

describe("profile enrichment", function()
  local sb, redis

  setup(function()
    sb = H.sandbox(FIXTURE)
    redis = H.redis()
    log.set_level("error")   -- the failure cases warn by design; the engine cases check those lines
  end)
  teardown(function()
    log.set_level(os.getenv("SIGNAL_LOG_LEVEL") or "info")
    if sb then sb:stop() end
    if redis then redis:close() end
  end)
  before_each(function()
    assert(redis:call("FLUSHDB"))
    assert.equal(200, H.request("POST", sb.url .. "/_sandbox/reset").status)
  end)

  -- a raw config (as signal.conf.lua would return) with integration overrides
  local function raw_config(over, top)
    local integ = {
      type = "amperity", tenant_subdomain = "acme", tenant_id = fx.tenant,
      api_key = fx.ingest_token, event_stream_id = "esm-demo", source_value = "DATAFLY",
      profile_api_key = fx.profile_token, profile_collection_id = "apc-demo",
      linking_keys = { { source = "email", key = "email_sha256", hash = "sha256" },
                       { source = "canonical_id", key = "_dfdid" },
                       { source = "user_id", key = "customer_id" } },
      browser_attribute_allowlist = "Persona,FavoriteBrand",
      base_url = sb.url,
    }
    for k, v in pairs(over or {}) do integ[k] = v or nil end   -- false removes a setting
    local raw = { redis = H.redis_url, enrichment = { budget_ms = 3000 },
                  pipelines = { { key = "dk_test_enrich", origins = { "https://shop.example.com" },
                                  integrations = { integ } } } }
    for k, v in pairs(top or {}) do raw[k] = v end
    return raw
  end

  -- ctx, pipeline cfg, integration cfg — as signal.app builds them
  local function setup_ctx(over, top)
    local cfg = assert(config.validate(raw_config(over, top)))
    local p = cfg.pipelines[1]
    return { cfg = cfg, redis = redis, pipelines = { [p.key] = p }, hub_org_id = ORG }, p, p.integrations[1]
  end

  local function run(ev, over, top)
    local ctx, p, i = setup_ctx(over, top)
    return enrich.run(ctx, p, i, ev), ev, i
  end

  local function lookups(since)
    return H.json(assert(H.request("GET", sb.url .. "/_sandbox/requests?prefix=/prof/&since=" .. (since or 0)))).requests
  end

  local function stats()
    return H.json(assert(H.request("GET", sb.url .. "/_sandbox/stats")))
  end

  local function fault(spec)
    assert.equal(200, H.request("POST", sb.url .. "/_sandbox/faults", {}, cjson.encode(spec)).status)
  end

  local function exec(spec)
    local file = H.write(H.tmp .. "/enrich-" .. core.random_hex(4) .. ".json", cjson.encode(spec))
    local out, code, err = H.exec(H.root .. "/spec/fixtures/tasks/enrich_run.lua", file)
    assert.equal(0, code, err)
    return cjson.decode(out), err
  end

  local function track(fields)
    local ev = { type = "track", event = "Product Viewed", message_id = core.uuid(), properties = {}, context = {} }
    for k, v in pairs(fields or {}) do ev[k] = v end
    return ev
  end

  describe("resolution", function()
    it("resolves by the first linking key with a value and attaches the profile's attributes", function()
      local info, ev = run(track({ canonical_id = "dfid_new_device", traits = { email = "jane.doe@example.com" } }))
      assert.is_true(info.resolved)
      assert.equal(JANE, info.amperity_id)
      assert.equal("email_sha256", info.via)
      assert.equal("miss", info.cache)
      assert.equal(1, info.calls)
      assert.is_nil(info.error)
      assert.equal(JANE, ev.amperity_id)
      assert.same(fx.collections["apc-demo"].profiles[1].attributes, ev.partner_attrs.amperity)
      local reqs = lookups()
      assert.equal(1, #reqs)
      assert.equal("/prof/lookup/apc-demo/keychain", reqs[1].path)
      assert.same({ email_sha256 = core.sha256_hex("jane.doe@example.com") }, reqs[1].params)
      assert.equal("Bearer " .. fx.profile_token, reqs[1].headers.authorization)
      assert.equal(fx.tenant, reqs[1].headers["amperity-tenant"])
    end)

    it("hashes lower-cased, trimmed values with SHA-256", function()
      local vectors = {
        { "jane.doe@example.com", "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d" },
        { "  Jane.Doe@Example.COM \t", "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d" },
        { "ADA@example.com", "b5fc85e55755f9e0d030a10ab4429b6b2944855f9a0d60077fe832becbc41d72" },
        { "+1 212 555 0142", "8d8f3ecc443c9c404fb19afa523025e42995ac4f01d8e25786e98b2c06b81ea7" },
        { "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" },
      }
      for _, v in ipairs(vectors) do assert.equal(v[2], resolve.hash_value(v[1]), v[1]) end
      -- and that is what goes on the wire
      run(track({ canonical_id = "d1", traits = { email = " ADA@Example.com " } }))
      assert.same({ email_sha256 = vectors[3][2] }, lookups()[1].params)
    end)

    it("tries keys in order, skips those with no value, and moves on after a 404", function()
      local info, ev = run(track({ canonical_id = "dfid_unknown", user_id = "cust_20517" }))
      assert.is_true(info.resolved)
      assert.equal("customer_id", info.via)
      assert.equal(ADA, ev.amperity_id)
      local reqs = lookups()
      assert.equal(2, #reqs)   -- no email on the event: no email_sha256 lookup
      assert.same({ _dfdid = "dfid_unknown" }, reqs[1].params)
      assert.equal(404, reqs[1].status)
      assert.same({ customer_id = "cust_20517" }, reqs[2].params)
      assert.equal(2, info.calls)
    end)

    it("stops at the first match even when a later key names another profile", function()
      local info = run(track({ canonical_id = "dfid_demo_ada", traits = { email = "jane.doe@example.com" } }))
      assert.equal(JANE, info.amperity_id)
      assert.equal(1, #lookups())
    end)

    it("uses traits stitched from an earlier identify (ev.identity)", function()
      local info = run(track({ canonical_id = "dfid_new", identity = { email = "ada@example.com" } }))
      assert.equal(ADA, info.amperity_id)
      assert.equal("email_sha256", info.via)
    end)

    it("follows the configured key order, not a fixed one", function()
      local info = run(track({ canonical_id = "dfid_demo_ada", traits = { email = "jane.doe@example.com" } }),
        { linking_keys = { { source = "canonical_id", key = "_dfdid" },
                           { source = "email", key = "email_sha256", hash = "sha256" } } })
      assert.equal(ADA, info.amperity_id)
      assert.equal("_dfdid", info.via)
    end)

    it("fetches the profile when the lookup answer has no attributes", function()
      assert.equal(200, H.request("POST", sb.url .. "/_sandbox/collections", {}, cjson.encode({
        id = "apc-split", linking_keys = { "_dfdid" }, lookup_attributes = false,
        profiles = { { profile_id = "p-split", keys = { _dfdid = "dfid_split" },
                       attributes = { Persona = "Split Persona", InternalScore = 1 } } } })).status)
      local info, ev = run(track({ canonical_id = "dfid_split" }), { profile_collection_id = "apc-split" })
      assert.is_true(info.resolved)
      assert.equal(2, info.calls)
      assert.equal("Split Persona", ev.partner_attrs.amperity.Persona)
      local reqs = lookups()
      assert.equal("/prof/profiles/apc-split/p-split", reqs[2].path)
    end)

    it("reports an event with no linking key value without calling Amperity", function()
      local info = run(track({ anonymous_id = "anon-1" }))
      assert.is_false(info.resolved)
      assert.equal(0, info.calls)
      assert.matches("no linking key value", info.reason)
      assert.equal(0, stats().lookups)
    end)

    it("passes events through without attributes when too much work is pending", function()
      local max = enrich.MAX_PENDING
      enrich.MAX_PENDING = 0
      local ok, info = pcall(run, track({ canonical_id = "dfid_demo_jane" }))
      enrich.MAX_PENDING = max
      assert(ok, info)
      assert.is_false(info.resolved)
      assert.equal("enrichment saturated", info.error)
      assert.equal(0, stats().lookups)
    end)

    it("skips enrichment without Profile API credentials", function()
      local ev = track({ traits = { email = "jane.doe@example.com" } })
      local info = run(ev, { profile_api_key = false, profile_collection_id = false })
      assert.same({ resolved = false, skipped = "no Profile API credentials" }, info)
      assert.is_nil(ev.partner_attrs)
      assert.equal(0, stats().lookups)
    end)
  end)

  describe("cache", function()
    it("caches a resolution with its attributes for 15 minutes", function()
      local ev = track({ canonical_id = "d1", traits = { email = "jane.doe@example.com" } })
      local first = run(deep_copy(ev))
      assert.equal("miss", first.cache)
      local second, ev2 = run(deep_copy(ev))
      assert.equal("hit", second.cache)
      assert.equal(0, second.calls)
      assert.equal("Value Hunter", ev2.partner_attrs.amperity.Persona)
      assert.equal(1, stats().lookups)
      local _, _, icfg = setup_ctx()
      local key = resolve.cache_key(icfg, "email_sha256", core.sha256_hex("jane.doe@example.com"))
      local pttl = redis:call("PTTL", key)
      assert.is_true(pttl > 5 * 60 * 1000 and pttl <= 15 * 60 * 1000, tostring(pttl))
    end)

    it("caches not-found for 5 minutes, per key, and answers from it without calls", function()
      local ev = track({ canonical_id = "dfid_nobody", traits = { email = "nobody@example.com" } })
      local first = run(deep_copy(ev))
      assert.is_false(first.resolved)
      assert.equal("miss", first.cache)
      assert.equal(3 - 1, first.calls)   -- email and _dfdid; no user_id on the event
      local second = run(deep_copy(ev))
      assert.is_false(second.resolved)
      assert.equal("negative", second.cache)
      assert.equal(0, second.calls)
      assert.equal(2, stats().lookups)
      local _, _, icfg = setup_ctx()
      local key = resolve.cache_key(icfg, "_dfdid", "dfid_nobody")
      assert.equal(resolve.NOT_FOUND, redis:call("GET", key))
      local pttl = redis:call("PTTL", key)
      assert.is_true(pttl > 0 and pttl <= 5 * 60 * 1000, tostring(pttl))
    end)

    it("never stores an identifier in clear in Redis keys or values", function()
      -- (the _dfdid cookie names the browser-cache key by design: it is a device id, not PII)
      run(track({ canonical_id = "device-1", user_id = "cust_10482", traits = { email = "jane.doe@example.com" } }),
          { linking_keys = { { source = "user_id", key = "customer_id" } } })
      run(track({ canonical_id = "device-2", traits = { email = "nobody@example.com" } }))
      local keys = redis:call("KEYS", "*")
      assert.is_true(#keys >= 2)
      for _, k in ipairs(keys) do
        for _, secret in ipairs({ "nobody", "jane", "cust_10482", core.sha256_hex("nobody@example.com") }) do
          assert.is_nil(k:find(secret, 1, true), k)
        end
        if k:find("^signal:amperity:") then
          local v = redis:call("GET", k)
          assert.is_nil(v:find("nobody", 1, true))
        end
      end
    end)

    it("does not cache a 503 as not-found: the next event calls again and resolves", function()
      fault({ prefix = "/prof/lookup", status = 503, times = 1 })
      local ev = track({ canonical_id = "d1", traits = { email = "jane.doe@example.com" } })
      local first = run(deep_copy(ev))
      assert.is_false(first.resolved)
      assert.matches("503", first.error)
      local _, _, icfg = setup_ctx()
      assert.equal(0, redis:call("EXISTS", resolve.cache_key(icfg, "email_sha256", core.sha256_hex("jane.doe@example.com"))))
      local second = run(deep_copy(ev))
      assert.is_true(second.resolved)
      assert.equal("miss", second.cache)
      assert.equal(2, stats().lookups)
    end)

    it("does not cache 429, connection errors or timeouts either", function()
      local ev = track({ canonical_id = "d1", traits = { email = "jane.doe@example.com" } })
      fault({ prefix = "/prof/lookup", status = 429, times = 1, retry_after = "1" })
      assert.matches("429", run(deep_copy(ev)).error)
      local closed = "http://127.0.0.1:" .. H.free_port()
      assert.matches("could not connect", run(deep_copy(ev), { base_url = closed }).error)
      fault({ prefix = "/prof/lookup", latency_ms = 1500, times = 1 })
      assert.matches("timeout after 300 ms", run(deep_copy(ev), { profile_timeout_ms = 300 }).error)
      assert.equal(0, #redis:call("KEYS", "signal:amperity:r:*"))
      assert.is_true(run(deep_copy(ev)).resolved)
    end)

    it("explains a 403 as the wrong (Streaming Ingest) token and does not cache it", function()
      local info = run(track({ canonical_id = "d1", traits = { email = "jane.doe@example.com" } }),
                       { api_key = OTHER_JWT, profile_api_key = fx.ingest_token })
      assert.is_false(info.resolved)
      assert.matches("Profile Read Access JWT, distinct from the Streaming Ingest key", info.error)
      assert.is_nil(info.error:find(fx.ingest_token, 1, true))
      assert.equal(0, #redis:call("KEYS", "signal:amperity:r:*"))
    end)
  end)

  describe("personalization", function()
    local MAPPINGS = {
      { source = "properties.category", target = "pageCategory" },
      { source = "partner_attrs.amperity.LifetimeTier", target = "tierHint" },
      { source = "context.page.path", target = "pagePath" },
    }
    local function shoes_event(category)
      return track({ canonical_id = "dfid_demo_jane", properties = { category = category or "shoes", value = 120 },
                     context = { page = { path = "/c/shoes" } } })
    end
    local ON = { enable_context_personalization = true, personalization_context_mappings = MAPPINGS,
                 browser_attribute_allowlist = "Persona,Recommended,Offer" }

    it("sends the mapped context values as query parameters and attaches amperity_personalized", function()
      local info, ev = run(shoes_event(), ON)
      assert.is_true(info.resolved)
      assert.is_true(info.personalized)
      assert.equal(2, info.calls)
      assert.equal("Trail Runner", ev.partner_attrs.amperity_personalized.Recommended)
      assert.equal("Free express shipping", ev.partner_attrs.amperity_personalized.Offer)
      assert.is_nil(ev.partner_attrs.amperity.Recommended)   -- the plain profile stays plain
      local reqs = lookups()
      assert.equal("/prof/profiles/apc-demo/" .. JANE, reqs[2].path)
      assert.equal("pageCategory=shoes&tierHint=Gold&pagePath=%2Fc%2Fshoes", reqs[2].query)
    end)

    it("answers the same context from a 2-minute cache and a new context with a new call", function()
      run(shoes_event(), ON)
      local again, ev = run(shoes_event(), ON)
      assert.equal(0, again.calls)
      assert.equal("Trail Runner", ev.partner_attrs.amperity_personalized.Recommended)
      assert.equal(1, stats().profiles)
      local _, _, icfg = setup_ctx(ON)
      local key = personalize.cache_key(icfg, JANE, "pageCategory=shoes&tierHint=Gold&pagePath=%2Fc%2Fshoes")
      local pttl = redis:call("PTTL", key)
      assert.is_true(pttl > 0 and pttl <= 2 * 60 * 1000, tostring(pttl))
      local other, ev3 = run(shoes_event("jackets"), ON)
      assert.equal(1, other.calls)
      assert.equal("Storm Shell", ev3.partner_attrs.amperity_personalized.Recommended)
      assert.equal(2, stats().profiles)
    end)

    it("makes no personalized call when the event has none of the context values", function()
      local info, ev = run(track({ canonical_id = "dfid_demo_ada" }), {
        enable_context_personalization = true,
        personalization_context_mappings = { { source = "properties.category", target = "pageCategory" } } })
      assert.is_true(info.resolved)
      assert.is_nil(ev.partner_attrs.amperity_personalized)
      assert.equal(0, stats().profiles)
    end)

    it("does nothing extra when personalization is off", function()
      local _, ev = run(shoes_event(), { personalization_context_mappings = MAPPINGS })
      assert.is_nil(ev.partner_attrs.amperity_personalized)
      assert.equal(0, stats().profiles)
    end)
  end)

  describe("browser cache", function()
    it("holds only allow-listed attributes, personalized ones on top, for 15 minutes", function()
      run(track({ canonical_id = "dfid_browser", traits = { email = "jane.doe@example.com" },
                  properties = { category = "shoes" } }),
          { enable_context_personalization = true, browser_attribute_allowlist = "Persona,Recommended,LifetimeTier",
            personalization_context_mappings = { { source = "properties.category", target = "pageCategory" } } })
      local key = browser.key(ORG, "dfid_browser")
      assert.same({ Persona = "Value Hunter", Recommended = "Trail Runner", LifetimeTier = "Gold" },
                  cjson.decode(redis:call("GET", key)))
      local ttl = redis:call("TTL", key)
      assert.is_true(ttl > 0 and ttl <= 15 * 60, tostring(ttl))
    end)

    it("exposes nothing when the allowlist is empty", function()
      run(track({ canonical_id = "dfid_browser", traits = { email = "jane.doe@example.com" } }),
          { browser_attribute_allowlist = "" })
      assert.equal("{}", redis:call("GET", browser.key(ORG, "dfid_browser")))
    end)

    it("writes nothing for an unresolved visitor", function()
      run(track({ canonical_id = "dfid_nobody" }))
      assert.equal(0, redis:call("EXISTS", browser.key(ORG, "dfid_nobody")))
    end)
  end)

  describe("inside the engine", function()
    local function new_visitor_config(over, top)
      return raw_config(over, top)
    end

    it("shares one lookup between 20 concurrent events of a new visitor", function()
      local r = exec({ config = new_visitor_config(), hub_org_id = ORG, mode = "many", n = 20,
                       events = { track({ canonical_id = "dfid_demo_sam", traits = { email = "sam.rivera@example.com" } }) } })
      assert.equal(20, #r.infos)
      for i = 1, 20 do
        assert.is_true(r.infos[i].resolved, cjson.encode(r.infos[i]))
        assert.equal("Occasional Browser", r.personas[i])
      end
      assert.equal(1, stats().lookups)
      local calls = 0
      for i = 1, 20 do calls = calls + r.infos[i].calls end
      assert.equal(1, calls)
      -- shared inside the worker, without going through the Redis lock
      assert.same({ led = 1, joined = 19, lock_waits = 0 }, r.flight)
    end)

    it("shares one lookup across processes through the Redis lock", function()
      -- the lookup is slow enough that the second process asks while the first one waits
      fault({ prefix = "/prof/lookup", latency_ms = 800 })
      local spec = H.write(H.tmp .. "/enrich-xproc.json", cjson.encode({
        config = new_visitor_config(), mode = "many", n = 5,
        events = { track({ canonical_id = "dfid_demo_ada", traits = { email = "ada@example.com" } }) } }))
      local procs = {}
      for i = 1, 2 do
        procs[i] = H.spawn({ H.bin, "exec", H.root .. "/spec/fixtures/tasks/enrich_run.lua", spec }, "xproc")
      end
      local reports = {}
      for i = 1, 2 do
        H.eventually(function() return not procs[i]:alive() end, 15, "exec " .. i .. " finished")
        reports[i] = cjson.decode(procs[i]:output():match("(%b{})%s*$"))
      end
      for _, r in ipairs(reports) do
        for _, info in ipairs(r.infos) do assert.is_true(info.resolved, cjson.encode(info)) end
      end
      assert.equal(1, stats().lookups)
      assert.equal(1, reports[1].flight.led + reports[2].flight.led)
      assert.equal(1, reports[1].flight.lock_waits + reports[2].flight.lock_waits)
    end)

    it("gives up at the budget without attributes, and the late answer fills the cache", function()
      fault({ prefix = "/prof/lookup", latency_ms = 1000, times = 1 })
      local ev = track({ canonical_id = "d-budget", traits = { email = "jane.doe@example.com" } })
      local raw = new_visitor_config({ profile_timeout_ms = 5000 }, { enrichment = { budget_ms = 200 } })
      local cfg = assert(config.validate(deep_copy(raw)))
      local key = resolve.cache_key(cfg.pipelines[1].integrations[1], "email_sha256",
                                    core.sha256_hex("jane.doe@example.com"))
      local r = exec({ config = raw, hub_org_id = ORG, mode = "timeout", events = { ev }, cache_key = key })
      assert.is_false(r.first.resolved)
      assert.equal("timeout after 200 ms", r.first.error)
      assert.is_false(r.partner_attrs_at_return)
      -- run() returned while the sandbox was still sleeping on the lookup
      assert.equal(0, r.cached_at_return)
      assert.equal(1, r.cached_later)
      assert.equal("hit", r.second.cache)
      assert.equal(0, r.second.calls)
      assert.equal("Value Hunter", r.second_persona)
      assert.equal(1, stats().lookups, cjson.encode(lookups()))
    end)

    it("warns 'partner resolve failed' with the cause and without the token", function()
      local raw = new_visitor_config({ api_key = OTHER_JWT, profile_api_key = fx.ingest_token })
      local r, stderr = exec({ config = raw, mode = "sequence",
                               events = { track({ canonical_id = "d1" }), track({ canonical_id = "d2" }) } })
      assert.matches("Profile Read Access JWT", r.infos[1].error)
      local warns = 0
      for line in stderr:gmatch("[^\n]+") do
        local rec = cjson_safe.decode(line) or {}
        if rec.msg == "partner resolve failed" then
          warns = warns + 1
          assert.equal("dk_test_enrich", rec.pipeline)
          assert.equal("amperity", rec.integration)
          assert.matches("Profile Read Access JWT", rec.reason)
        end
      end
      assert.equal(1, warns)   -- the second, identical failure is rate-limited
      assert.is_nil(stderr:find(fx.ingest_token, 1, true))
      assert.is_nil(stderr:find(OTHER_JWT, 1, true))
    end)

    it("hints once that the collection's linking_keys may not include the configured keys", function()
      local events = {}
      for i = 1, 15 do events[i] = track({ canonical_id = "dfid_acme2_" .. i }) end
      local _, stderr = exec({ config = new_visitor_config({ profile_collection_id = "apc-acme2" }),
                               mode = "sequence", events = events })
      local hints = 0
      for line in stderr:gmatch("[^\n]+") do
        local rec = cjson_safe.decode(line) or {}
        if rec.msg == "partner resolve failed" and rec.reason:find("linking_keys may not include", 1, true) then
          hints = hints + 1
          assert.matches("email_sha256, _dfdid, customer_id", rec.reason)
        end
      end
      assert.equal(1, hints)
    end)
  end)
end)
