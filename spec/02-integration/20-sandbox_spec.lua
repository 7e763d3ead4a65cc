-- The Amperity sandbox (`signal sandbox`) driven over HTTP: the ingest and
-- Profile API answers Signal relies on (auth, tenant, token scope, stream
-- modes, content type, size, lookups, profile shape, personalization) and the
-- control API specs use (recording, faults, stats, runtime profiles/streams).
local H = require "helpers"
local cjson = require "cjson"
local core = require "signal.core"

local FIXTURE, fx = H.PROFILES, H.profiles()
local JANE_ID = "3f9c2a71-8d4e-4b6a-9c1f-0a2b3c4d5e01"
local JANE_EMAIL_SHA = core.sha256_hex("jane.doe@example.com")

describe("Amperity sandbox", function()
  local sb

  setup(function() sb = H.sandbox(FIXTURE) end)
  teardown(function() if sb then sb:stop() end end)
  before_each(function() assert.equal(200, H.request("POST", sb.url .. "/_sandbox/reset").status) end)

  local function ingest(stream, body, headers)
    local h = { ["Amperity-Tenant"] = fx.tenant, Authorization = "Bearer " .. fx.ingest_token,
                ["Content-Type"] = "application/json" }
    -- false removes a default header
    for k, v in pairs(headers or {}) do h[k] = v or nil end
    return assert(H.request("POST", sb.url .. "/prof/events/" .. stream, h, body))
  end

  local function prof(path, token, tenant)
    return assert(H.request("GET", sb.url .. path, {
      ["Amperity-Tenant"] = tenant or fx.tenant, Authorization = "Bearer " .. (token or fx.profile_token) }))
  end

  local function requests(query)
    return H.json(assert(H.request("GET", sb.url .. "/_sandbox/requests" .. (query or "")))).requests
  end

  local function stats()
    return H.json(assert(H.request("GET", sb.url .. "/_sandbox/stats")))
  end

  local function fault(spec)
    local res = assert(H.request("POST", sb.url .. "/_sandbox/faults", {}, cjson.encode(spec)))
    assert.equal(200, res.status, res.body)
  end

  describe("real-time ingest", function()
    it("accepts one JSON object from the tenant's ingest token with 202", function()
      assert.equal(202, ingest("esm-demo", '{"source":"DATAFLY","type":"pageview"}').status)
    end)

    it("matches the Amperity-Tenant header name case-insensitively", function()
      local res = ingest("esm-demo", '{"type":"x"}', { ["Amperity-Tenant"] = false, ["AMPERITY-TENANT"] = fx.tenant })
      assert.equal(202, res.status)
    end)

    it("refuses another tenant and a missing tenant header with 401", function()
      assert.equal(401, ingest("esm-demo", '{"type":"x"}', { ["Amperity-Tenant"] = "globex" }).status)
      assert.equal(401, ingest("esm-demo", '{"type":"x"}', { ["Amperity-Tenant"] = false }).status)
    end)

    it("refuses an unknown or missing token with 401", function()
      assert.equal(401, ingest("esm-demo", '{"type":"x"}', { Authorization = "Bearer eyJnope.eyJnope.sig" }).status)
      assert.equal(401, ingest("esm-demo", '{"type":"x"}', { Authorization = false }).status)
    end)

    it("refuses the Profile API token with 403 naming the cross-scope use", function()
      local res = ingest("esm-demo", '{"type":"x"}', { Authorization = "Bearer " .. fx.profile_token })
      assert.equal(403, res.status)
      assert.matches("Streaming Ingest", H.json(res).message)
      assert.matches("cross%-scope", H.json(res).message)
    end)

    it("answers an unknown stream with Amperity's stream-not-found body", function()
      local res = ingest("esm-abc123", '{"type":"x"}')
      assert.equal(404, res.status)
      assert.same({ error = "stream-not-found", message = "No stream esm-abc123 for tenant", stream = "esm-abc123" },
                  H.json(res))
    end)

    it("answers 204 for a stream in drop mode and 409 for one in reject mode", function()
      assert.equal(204, ingest("esm-drop", '{"type":"x"}').status)
      assert.equal(409, ingest("esm-reject", '{"type":"x"}').status)
    end)

    it("needs Content-Type application/json (charset allowed), else 415", function()
      assert.equal(415, ingest("esm-demo", '{"type":"x"}', { ["Content-Type"] = "text/plain" }).status)
      assert.equal(415, ingest("esm-demo", '{"type":"x"}', { ["Content-Type"] = false }).status)
      assert.equal(202, ingest("esm-demo", '{"type":"x"}', { ["Content-Type"] = "application/json; charset=utf-8" }).status)
    end)

    it("refuses arrays, empty objects and malformed JSON with 400", function()
      assert.equal(400, ingest("esm-demo", '[{"type":"x"}]').status)
      assert.equal(400, ingest("esm-demo", '{}').status)
      assert.equal(400, ingest("esm-demo", '{"type":').status)
      assert.equal(400, ingest("esm-demo", '"pageview"').status)
    end)

    it("accepts a 64 KB body and refuses one byte more with 413", function()
      local function body_of(n)
        local head = '{"pad":"'
        return head .. string.rep("x", n - #head - 2) .. '"}'
      end
      assert.equal(65536, #body_of(65536))
      assert.equal(202, ingest("esm-demo", body_of(65536)).status)
      assert.equal(413, ingest("esm-demo", body_of(65537)).status)
    end)
  end)

  describe("Profile API", function()
    it("resolves a keychain lookup to the profile with attributes", function()
      local res = prof("/prof/lookup/apc-demo/keychain?email_sha256=" .. JANE_EMAIL_SHA)
      assert.equal(200, res.status)
      local p = H.json(res)
      assert.equal("apc-demo", p.collection_id)
      assert.equal(JANE_ID, p.profile_id)
      assert.equal("Value Hunter", p.attributes.Persona)
      assert.same({ "dfid_demo_jane" }, p.links._dfdid)
    end)

    it("resolves through the older /prof/profiles/{c}/lookup form and every listed device id", function()
      assert.equal(JANE_ID, H.json(prof("/prof/profiles/apc-demo/lookup?customer_id=cust_10482")).profile_id)
      assert.equal("3f9c2a71-8d4e-4b6a-9c1f-0a2b3c4d5e03",
                   H.json(prof("/prof/lookup/apc-demo/keychain?_dfdid=dfid_demo_sam_tablet")).profile_id)
    end)

    it("url-decodes the looked-up value", function()
      assert.equal(200, prof("/prof/lookup/apc-demo/keychain?_dfdid=dfid%5Fdemo%5Fjane").status)
    end)

    it("answers 404 when no profile matches", function()
      assert.equal(404, prof("/prof/lookup/apc-demo/keychain?_dfdid=dfid_nobody").status)
    end)

    it("needs exactly one key (400 for none or two)", function()
      assert.equal(400, prof("/prof/lookup/apc-demo/keychain").status)
      assert.equal(400, prof("/prof/lookup/apc-demo/keychain?_dfdid=a&customer_id=b").status)
      assert.equal(400, prof("/prof/lookup/apc-demo/keychain?_dfdid=a&_dfdid=b").status)
    end)

    it("refuses a key outside the collection's linking_keys with 400", function()
      local res = prof("/prof/lookup/apc-demo/keychain?loyalty_id=L1")
      assert.equal(400, res.status)
      assert.matches("not a linking key", H.json(res).message)
    end)

    it("answers 404 to every lookup on the ACME2 collection (linking_keys [])", function()
      assert.equal(404, prof("/prof/lookup/apc-acme2/keychain?email_sha256=" .. JANE_EMAIL_SHA).status)
    end)

    it("refuses the Streaming Ingest token with 403 and a bad token with 401", function()
      local res = prof("/prof/lookup/apc-demo/keychain?_dfdid=dfid_demo_jane", fx.ingest_token)
      assert.equal(403, res.status)
      assert.matches("Profile Read Access", H.json(res).message)
      assert.equal(401, prof("/prof/profiles/apc-demo/" .. JANE_ID, "nope").status)
      assert.equal(401, prof("/prof/profiles/apc-demo/" .. JANE_ID, nil, "globex").status)
    end)

    it("serves a profile in Amperity's shape, with no data wrapper", function()
      local res = prof("/prof/profiles/apc-demo/" .. JANE_ID)
      assert.equal(200, res.status)
      local p = H.json(res)
      local keys = {}
      for k in pairs(p) do keys[#keys + 1] = k end
      table.sort(keys)
      assert.same({ "attributes", "collection_id", "created_at", "links", "profile_id", "updated_at" }, keys)
      assert.same(fx.collections["apc-demo"].profiles[1].attributes, p.attributes)
      assert.equal(404, prof("/prof/profiles/apc-demo/no-such-id").status)
    end)

    it("applies the profile's personalized rules to the context query parameters", function()
      local plain = H.json(prof("/prof/profiles/apc-demo/" .. JANE_ID)).attributes
      assert.is_nil(plain.Recommended)
      local shoes = H.json(prof("/prof/profiles/apc-demo/" .. JANE_ID .. "?pageCategory=shoes")).attributes
      assert.equal("Trail Runner", shoes.Recommended)
      assert.equal("promo", shoes.HeroVariant)
      assert.equal("Value Hunter", shoes.Persona)
      local other = H.json(prof("/prof/profiles/apc-demo/" .. JANE_ID .. "?pageCategory=socks&tierHint=Gold")).attributes
      assert.equal("Best Sellers", other.Recommended)
      assert.equal("Free express shipping", other.Offer)
    end)

    it("can answer lookups without attributes (lookup_attributes = false)", function()
      assert.equal(200, H.request("POST", sb.url .. "/_sandbox/collections", {}, cjson.encode({
        id = "apc-split", linking_keys = { "_dfdid" }, lookup_attributes = false,
        profiles = { { profile_id = "p-split", keys = { _dfdid = "d1" }, attributes = { Persona = "X" } } } })).status)
      local p = H.json(prof("/prof/lookup/apc-split/keychain?_dfdid=d1"))
      assert.equal("p-split", p.profile_id)
      assert.is_nil(p.attributes)
      assert.equal("X", H.json(prof("/prof/profiles/apc-split/p-split")).attributes.Persona)
    end)
  end)

  describe("control API", function()
    it("records every request with method, path, query, headers, body, decoded json and status", function()
      ingest("esm-demo", '{"source":"DATAFLY","n":1}')
      prof("/prof/lookup/apc-demo/keychain?_dfdid=dfid_demo_ada")
      local all = requests()
      assert.equal(2, #all)
      local ev = all[1]
      assert.equal("POST", ev.method)
      assert.equal("/prof/events/esm-demo", ev.path)
      assert.equal(202, ev.status)
      assert.equal(fx.tenant, ev.headers["amperity-tenant"])
      assert.same({ source = "DATAFLY", n = 1 }, ev.json)
      assert.equal('{"source":"DATAFLY","n":1}', ev.body)
      assert.is_number(ev.time)
      assert.equal("_dfdid=dfid_demo_ada", all[2].query)
      assert.same({ _dfdid = "dfid_demo_ada" }, all[2].params)
      assert.is_true(all[2].seq > ev.seq)
    end)

    it("filters recorded requests by path prefix and sequence number", function()
      ingest("esm-demo", '{"n":1}')
      prof("/prof/lookup/apc-demo/keychain?_dfdid=dfid_demo_ada")
      ingest("esm-demo", '{"n":2}')
      local evs = requests("?prefix=/prof/events")
      assert.equal(2, #evs)
      local later = requests("?prefix=/prof/events&since=" .. evs[1].seq)
      assert.equal(1, #later)
      assert.equal(2, later[1].json.n)
      assert.same({}, requests("?prefix=/prof/nothing"))
    end)

    it("answers an empty request list as a JSON array", function()
      local res = assert(H.request("GET", sb.url .. "/_sandbox/requests"))
      assert.matches('"requests":%[%]', res.body)
    end)

    it("injects a status fault a given number of times, with Retry-After and body", function()
      fault({ prefix = "/prof/events", status = 503, times = 2, retry_after = "1", body = '{"error":"busy"}' })
      local r1 = ingest("esm-demo", '{"n":1}')
      assert.equal(503, r1.status)
      assert.equal("1", r1.headers["retry-after"])
      assert.equal('{"error":"busy"}', r1.body)
      assert.equal(503, ingest("esm-demo", '{"n":2}').status)
      assert.equal(202, ingest("esm-demo", '{"n":3}').status)
      -- faulted calls are recorded and counted like the others
      assert.same({ 503, 503, 202 }, (function()
        local s = {}
        for _, r in ipairs(requests("?prefix=/prof/events")) do s[#s + 1] = r.status end
        return s
      end)())
      assert.equal(3, stats().events)
    end)

    it("keeps a fault without times until reset, and only on its prefix", function()
      fault({ prefix = "/prof/lookup", status = 500 })
      for _ = 1, 3 do assert.equal(500, prof("/prof/lookup/apc-demo/keychain?_dfdid=dfid_demo_jane").status) end
      assert.equal(200, prof("/prof/profiles/apc-demo/" .. JANE_ID).status)
      assert.equal(202, ingest("esm-demo", '{"n":1}').status)
      H.request("POST", sb.url .. "/_sandbox/reset")
      assert.equal(200, prof("/prof/lookup/apc-demo/keychain?_dfdid=dfid_demo_jane").status)
    end)

    it("serves other requests while one sleeps on a latency fault", function()
      fault({ prefix = "/prof/lookup", latency_ms = 2000, times = 1 })
      local out, code, err = H.exec(H.root .. "/spec/fixtures/tasks/sandbox_concurrency.lua", sb.url, fx.tenant,
                                    fx.profile_token)
      assert.equal(0, code, err)
      local r = cjson.decode(out)
      assert.equal("fast", r.order[1].name)
      assert.equal(200, r.order[1].status)
      assert.equal("slow", r.order[2].name)
      assert.equal(200, r.order[2].status)   -- latency alone does not change the answer
      assert.equal(2, stats().max_in_flight)
    end)

    it("counts calls per kind", function()
      ingest("esm-demo", '{"n":1}')
      prof("/prof/lookup/apc-demo/keychain?_dfdid=dfid_demo_jane")
      prof("/prof/profiles/apc-demo/lookup?_dfdid=dfid_demo_jane")
      prof("/prof/profiles/apc-demo/" .. JANE_ID)
      local s = stats()
      assert.equal(1, s.events)
      assert.equal(2, s.lookups)
      assert.equal(1, s.profiles)
      assert.equal(4, s.requests)
    end)

    it("adds a profile at run time, and reset forgets it", function()
      local res = assert(H.request("POST", sb.url .. "/_sandbox/profiles", {}, cjson.encode({
        collection = "apc-demo", profile_id = "p-new", keys = { customer_id = "cust_new" },
        attributes = { Persona = "New Visitor" } })))
      assert.equal(201, res.status)
      local p = H.json(prof("/prof/lookup/apc-demo/keychain?customer_id=cust_new"))
      assert.equal("p-new", p.profile_id)
      assert.equal("New Visitor", p.attributes.Persona)
      H.request("POST", sb.url .. "/_sandbox/reset")
      assert.equal(404, prof("/prof/lookup/apc-demo/keychain?customer_id=cust_new").status)
    end)

    it("sets a stream's mode at run time", function()
      local function mode(m)
        assert.equal(200, H.request("POST", sb.url .. "/_sandbox/streams", {}, cjson.encode({ id = "esm-demo", mode = m })).status)
      end
      mode("drop");    assert.equal(204, ingest("esm-demo", '{"n":1}').status)
      mode("reject");  assert.equal(409, ingest("esm-demo", '{"n":1}').status)
      mode("missing"); assert.equal(404, ingest("esm-demo", '{"n":1}').status)
      mode("accept");  assert.equal(202, ingest("esm-demo", '{"n":1}').status)
    end)

    it("refuses a fault with neither status nor latency", function()
      assert.equal(400, H.request("POST", sb.url .. "/_sandbox/faults", {}, '{"prefix":"/prof/events"}').status)
    end)
  end)

  describe("SANDBOX_LATENCY_MS", function()
    it("holds every /prof answer while the control API still answers", function()
      local port = H.free_port()
      local p = H.spawn({ "env", "SANDBOX_LATENCY_MS=3000", H.bin, "sandbox", "--listen", "127.0.0.1:" .. port,
                          "--profiles", FIXTURE }, "sandbox-latency")
      local url = "http://127.0.0.1:" .. port
      local ok, err = pcall(function()
        H.wait_http(url .. "/_sandbox/requests", p)
        local lookup = H.spawn({ "curl", "-s", "-o", "/dev/null", "-H", "Amperity-Tenant: " .. fx.tenant,
          "-H", "Authorization: Bearer " .. fx.profile_token,
          url .. "/prof/lookup/apc-demo/keychain?_dfdid=dfid_demo_jane" }, "curl-lookup")
        -- seen in flight by the (undelayed) stats call: the lookup is being held
        H.eventually(function()
          return H.json(assert(H.request("GET", url .. "/_sandbox/stats"))).in_flight == 1
        end, 2.5, "the lookup is held")
        H.eventually(function() return not lookup:alive() end, 10, "the lookup finished")
        local recorded = H.json(assert(H.request("GET", url .. "/_sandbox/requests"))).requests
        assert.equal(1, #recorded)
        assert.equal(200, recorded[1].status)
      end)
      p:stop()
      assert(ok, err)
    end)
  end)
end)
