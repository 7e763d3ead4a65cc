-- The Amperity integration's own checks of profile enrichment and browser
-- personalization, end to end on a real engine: identify with an email that is in the
-- Amperity collection, then the same device's next (anonymous) event goes out
-- to Amperity carrying the profile's attributes, and /v1/enrich serves the
-- allow-listed slice to that device. Collector → raw stream → processor
-- (identity stitch + enrichment + blueprint) → delivery → sandbox.
local H = require "helpers"
local cjson = require "cjson"

local FIXTURE, fx = H.PROFILES, H.profiles()
local JANE = "3f9c2a71-8d4e-4b6a-9c1f-0a2b3c4d5e01"
local KEY = "dk_test_e2e_enrich"

describe("profile enrichment end to end", function()
  local sb, eng

  setup(function()
    H.flush_redis()
    sb = H.sandbox(FIXTURE)
    eng = H.engine({
      identity_hub = { org_id = "org-spec-e2e" },
      enrichment = { budget_ms = 2000 },
      pipelines = { { key = KEY, origins = { "https://shop.example.com" }, integrations = { {
        type = "amperity", preset = "retail", tenant_subdomain = "acme", tenant_id = fx.tenant,
        api_key = fx.ingest_token, event_stream_id = "esm-demo", source_value = "DATAFLY",
        profile_api_key = fx.profile_token, profile_collection_id = "apc-demo", base_url = sb.url,
        -- email only: the anonymous event can resolve only through the stitched identify
        linking_keys = { { source = "email", key = "email_sha256", hash = "sha256" } },
        browser_attribute_allowlist = "Persona,FavoriteBrand",
        enable_context_personalization = true,
        personalization_context_mappings = { { source = "properties.category", target = "pageCategory" } },
      } } } },
    })
  end)
  teardown(function()
    if eng then eng:stop() end
    if sb then sb:stop() end
  end)

  local function post(path, body, cookie)
    return assert(H.request("POST", eng.url .. path, { ["Content-Type"] = "application/json",
      ["X-Pipeline-Key"] = KEY, Cookie = cookie }, cjson.encode(body)))
  end

  local function delivered(pred)
    return H.eventually(function()
      local reqs = H.json(assert(H.request("GET", sb.url .. "/_sandbox/requests?prefix=/prof/events"))).requests
      for _, r in ipairs(reqs) do
        if r.json and pred(r.json) then return r.json end
      end
    end, 15, "the event reached the sandbox")
  end

  it("identify with a known email, then the next anonymous event carries the Amperity attributes", function()
    local res = post("/v1/i", { anonymousId = "anon-e2e", traits = { email = "jane.doe@example.com" } })
    assert.equal(200, res.status, res.body)
    local dfdid = tostring(res.headers["set-cookie"]):match("_dfdid=([^;]+)")
    assert.is_string(dfdid)
    local cookie = "_dfdid=" .. dfdid
    delivered(function(p) return p.type == "identify" or p.cookieid == dfdid end)

    res = post("/v1/t", { anonymousId = "anon-e2e", event = "Product Viewed", messageId = "m-e2e-next",
                          properties = { category = "shoes", product_id = "SKU-1" } }, cookie)
    assert.equal(200, res.status, res.body)
    local body = delivered(function(p) return p.type == "view_item" and p.cookieid == dfdid end)
    assert.equal("Value Hunter", body.user_persona)
    assert.equal("Trailblaze", body.favorite_brand)
    assert.equal(JANE, body.amperity_id)

    -- the browser slice for this device: allow-listed, personalized on top
    local hub = H.eventually(function()
      local r = assert(H.request("GET", eng.url .. "/v1/enrich?provider=amperity", { Cookie = cookie }))
      local j = H.json(r)
      return j and j.attributes and j.attributes.Persona and j
    end, 10, "/v1/enrich has the visitor")
    assert.same({ provider = "amperity", attributes = { Persona = "Value Hunter", FavoriteBrand = "Trailblaze" } }, hub)

    -- the personalized call carried the event's context
    local profs = H.json(assert(H.request("GET", sb.url .. "/_sandbox/requests?prefix=/prof/profiles/"))).requests
    local seen = false
    for _, r in ipairs(profs) do
      if r.path == "/prof/profiles/apc-demo/" .. JANE and r.params.pageCategory == "shoes" then seen = true end
    end
    assert.is_true(seen)
  end)

  it("counts Profile API cache outcomes in /metrics", function()
    -- the identify resolved with a miss; the next event of the device hit the cache
    local function count(outcome)
      local body = assert(H.request("GET", eng.url .. "/metrics")).body
      local v = body:match('signal_enrichment_total{integration="amperity",outcome="' .. outcome ..
                          '",pipeline="' .. KEY:gsub("%-", "%%-") .. '"} (%d+)')
      return tonumber(v) or 0
    end
    H.eventually(function() return count("miss") >= 1 and count("hit") >= 1 end, 10,
      "a cache miss and a cache hit counted")
  end)
end)
