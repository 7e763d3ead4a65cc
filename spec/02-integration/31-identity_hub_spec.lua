-- GET /v1/enrich on a real engine: the IDENTITY_HUB_ORG_ID feature gate,
-- provider validation, first-touch `{}`, the allow-listed slice written by
-- enrichment (never the token, the raw answer or other attributes) and CORS
-- with credentials for the pipelines' origins. The slice is written by
-- enrich.run driven from this spec (standalone) against the sandbox, into
-- the same Redis the engine reads.
local H = require "helpers"
local cjson = require "cjson"
local config = require "signal.config"
local log = require "signal.observe.log"
local enrich = require "signal.destinations.amperity.enrich"

local FIXTURE, fx = H.PROFILES, H.profiles()
local ORG = "org-spec-hub"
local ORIGIN = "https://shop.example.com"

describe("identity hub GET /v1/enrich", function()
  local sb, redis

  local function engine_config(base_url, hub)
    return {
      identity_hub = hub,
      enrichment = { budget_ms = 3000 },
      pipelines = { { key = "dk_test_hub", origins = { ORIGIN }, integrations = { {
        type = "amperity", tenant_subdomain = "acme", tenant_id = fx.tenant, api_key = fx.ingest_token,
        event_stream_id = "esm-demo", source_value = "DATAFLY", profile_api_key = fx.profile_token,
        profile_collection_id = "apc-demo", base_url = base_url,
        linking_keys = { { source = "email", key = "email_sha256", hash = "sha256" },
                         { source = "canonical_id", key = "_dfdid" } },
        browser_attribute_allowlist = "Persona,FavoriteBrand",
      } } } },
    }
  end

  setup(function()
    sb = H.sandbox(FIXTURE)
    redis = H.redis()
    assert(redis:call("FLUSHDB"))
  end)
  teardown(function()
    if sb then sb:stop() end
    if redis then redis:close() end
  end)

  describe("with the hub off", function()
    local eng
    setup(function()
      -- as H.engine, but with IDENTITY_HUB_ORG_ID removed from the inherited environment
      local cfg = engine_config(sb.url, nil)
      cfg.listen = "127.0.0.1:" .. H.free_port()
      cfg.redis, cfg.workers = H.redis_url, 1
      local path = H.write(H.tmp .. "/hub-off.conf.lua", "return " .. H.serialize(cfg) .. "\n")
      eng = H.spawn({ "env", "-u", "IDENTITY_HUB_ORG_ID", H.bin, "run", "-c", path }, "engine-hub-off")
      eng.url = "http://" .. cfg.listen
      H.wait_http(eng.url .. "/healthz", eng)
    end)
    teardown(function() if eng then eng:stop() end end)

    it("answers 404 naming IDENTITY_HUB_ORG_ID", function()
      local res = assert(H.request("GET", eng.url .. "/v1/enrich?provider=amperity"))
      assert.equal(404, res.status)
      local body = H.json(res)
      assert.equal("NOT_FOUND", body.error.code)
      assert.matches("IDENTITY_HUB_ORG_ID", body.error.message)
    end)
  end)

  describe("with the hub on", function()
    local eng

    setup(function()
      eng = H.engine(engine_config(sb.url, { org_id = ORG }))
      -- enrichment of the demo visitor (as the processor does it), writing the browser slice
      local cfg = assert(config.validate(engine_config(sb.url, { org_id = ORG })))
      local p = cfg.pipelines[1]
      local ctx = { cfg = cfg, redis = redis, pipelines = { [p.key] = p }, hub_org_id = ORG }
      log.set_level("error")
      local info = enrich.run(ctx, p, p.integrations[1], { type = "identify", canonical_id = "dfid_hub_jane",
        traits = { email = "jane.doe@example.com" } })
      log.set_level(os.getenv("SIGNAL_LOG_LEVEL") or "info")
      assert(info.resolved, cjson.encode(info))
    end)
    teardown(function() if eng then eng:stop() end end)

    local function get(cookie, origin, query)
      return assert(H.request("GET", eng.url .. "/v1/enrich" .. (query or "?provider=amperity"),
        { Cookie = cookie, Origin = origin }))
    end

    it("returns the allow-listed attributes of the _dfdid cookie's visitor", function()
      local res = get("theme=dark; _dfdid=dfid_hub_jane")
      assert.equal(200, res.status)
      assert.same({ provider = "amperity", attributes = { Persona = "Value Hunter", FavoriteBrand = "Trailblaze" } },
                  H.json(res))
    end)

    it("reads _dfdid among other cookies, not a cookie whose name merely ends in _dfdid", function()
      assert.equal("Value Hunter", H.json(get("x_dfdid=dfid_never_seen; _dfdid=dfid_hub_jane")).attributes.Persona)
      assert.equal('{"provider":"amperity","attributes":{}}', get("x_dfdid=dfid_hub_jane").body)
    end)

    it("never returns the token, the raw Amperity answer or a non-allow-listed attribute", function()
      local body = get("_dfdid=dfid_hub_jane").body
      for _, leak in ipairs({ fx.profile_token, fx.ingest_token, "InternalScore", "LifetimeTier", "profile_id",
                              "links", "3f9c2a71" }) do
        assert.is_nil(body:find(leak, 1, true), leak)
      end
    end)

    it("answers a first-touch visitor (no cookie) with 200 and an empty attributes object", function()
      local res = get(nil)
      assert.equal(200, res.status)
      assert.equal('{"provider":"amperity","attributes":{}}', res.body)
      assert.is_nil(res.headers["set-cookie"])   -- the hub never mints the cookie
    end)

    it("reads the cookie by the collector's rules: up to 128 characters, never a malformed one", function()
      local browser = require "signal.destinations.amperity.browser"
      local long = "dfid_" .. string.rep("h", 123)                     -- 128 characters
      local slice = assert(redis:call("GET", browser.key(ORG, "dfid_hub_jane")))
      assert(redis:call("SET", browser.key(ORG, long), slice, "EX", 60))
      assert(redis:call("SET", browser.key(ORG, long .. "h"), slice, "EX", 60))
      assert(redis:call("SET", browser.key(ORG, "a b"), slice, "EX", 60))
      assert.equal("Value Hunter", H.json(get("_dfdid=" .. long)).attributes.Persona)
      assert.equal("Value Hunter", H.json(get('_dfdid="' .. long .. '"')).attributes.Persona)
      for _, cookie in ipairs({ "_dfdid=" .. long .. "h", "_dfdid=a b" }) do
        local res = get(cookie)
        assert.equal('{"provider":"amperity","attributes":{}}', res.body, cookie)
        assert.is_nil(res.headers["set-cookie"], cookie)
      end
    end)

    it("answers an unresolved visitor with an empty attributes object", function()
      local res = get("_dfdid=dfid_never_seen")
      assert.equal(200, res.status)
      assert.equal('{"provider":"amperity","attributes":{}}', res.body)
    end)

    it("refuses a missing or unknown provider with 400", function()
      local res = get("_dfdid=dfid_hub_jane", nil, "")
      assert.equal(400, res.status)
      assert.equal("MISSING_PROVIDER", H.json(res).error.code)
      res = get("_dfdid=dfid_hub_jane", nil, "?provider=segment")
      assert.equal(400, res.status)
      assert.equal("UNKNOWN_PROVIDER", H.json(res).error.code)
    end)

    it("allows the pipeline's origin with credentials, and no other", function()
      local res = get("_dfdid=dfid_hub_jane", ORIGIN)
      assert.equal(ORIGIN, res.headers["access-control-allow-origin"])
      assert.equal("true", res.headers["access-control-allow-credentials"])
      res = get("_dfdid=dfid_hub_jane", "https://evil.example.net")
      assert.is_nil(res.headers["access-control-allow-origin"])
      -- origins compared as the collector compares them: case, default port
      for _, o in ipairs({ "HTTPS://SHOP.EXAMPLE.COM", "https://shop.example.com:443" }) do
        assert.equal(o, get("_dfdid=dfid_hub_jane", o).headers["access-control-allow-origin"], o)
      end
      assert.is_nil(get("_dfdid=dfid_hub_jane", "https://shop.example.com:444").headers["access-control-allow-origin"])
    end)

    it("answers the CORS preflight for the pipeline's origin only", function()
      local res = assert(H.request("OPTIONS", eng.url .. "/v1/enrich?provider=amperity",
        { Origin = ORIGIN, ["Access-Control-Request-Method"] = "GET" }))
      assert.is_true(res.status == 200 or res.status == 204, tostring(res.status))
      assert.equal(ORIGIN, res.headers["access-control-allow-origin"])
      assert.equal("true", res.headers["access-control-allow-credentials"])
      assert.matches("GET", res.headers["access-control-allow-methods"])
      res = assert(H.request("OPTIONS", eng.url .. "/v1/enrich?provider=amperity",
        { Origin = "https://evil.example.net", ["Access-Control-Request-Method"] = "GET" }))
      assert.is_nil(res.headers["access-control-allow-origin"])
      res = assert(H.request("OPTIONS", eng.url .. "/v1/enrich?provider=amperity",
        { Origin = "HTTPS://SHOP.EXAMPLE.COM:443", ["Access-Control-Request-Method"] = "GET" }))
      assert.equal("HTTPS://SHOP.EXAMPLE.COM:443", res.headers["access-control-allow-origin"])
    end)
  end)

  describe("with cookie_secret set", function()
    local SECRET = "spec-cookie-secret-0123456789abcdef-current"
    local PREVIOUS = "spec-cookie-secret-0123456789abcdef-previous"
    local eng

    -- the documented cookie value: "<id>.<first 32 hex of HMAC-SHA256(secret, id)>"
    local function signed(id, secret)
      return id .. "." .. require("signal.core").hmac_sha256_hex(secret or SECRET, id):sub(1, 32)
    end

    setup(function()
      local cfg = engine_config(sb.url, { org_id = ORG })
      cfg.cookie_secret, cfg.cookie_secret_previous = SECRET, PREVIOUS
      eng = H.engine(cfg)
    end)
    teardown(function() if eng then eng:stop() end end)

    local function get(cookie)
      return assert(H.request("GET", eng.url .. "/v1/enrich?provider=amperity", { Cookie = cookie }))
    end
    local function track(cookie)
      return assert(H.request("POST", eng.url .. "/v1/t", { ["content-type"] = "application/json",
        ["x-pipeline-key"] = "dk_test_hub", origin = ORIGIN, cookie = cookie },
        cjson.encode({ type = "track", event = "Signed", anonymousId = "anon-signed" })))
    end

    it("hands the profile slice only to a cookie this engine signed", function()
      assert.equal("Value Hunter", H.json(get("_dfdid=" .. signed("dfid_hub_jane"))).attributes.Persona)
      -- an id picked by the client, unsigned or signed with another secret, is nobody
      for _, forged in ipairs({ "dfid_hub_jane", signed("dfid_hub_jane", "another-secret-of-32-characters-xx"),
                                signed("dfid_hub_jane"):sub(1, -2) .. "0", signed("dfid_hub_jane"):upper() }) do
        assert.equal('{"provider":"amperity","attributes":{}}', get("_dfdid=" .. forged).body, forged)
      end
    end)

    it("mints signed cookies, keeps a signed one, and replaces a forged one", function()
      local res = track(nil)
      assert.equal(200, res.status, res.body)
      local value = res.headers["set-cookie"]:match("^_dfdid=([^;]+)")
      local id = value:match("^(dfid_%x+)%.%x+$")
      assert.equal(32, #value - #id - 1)
      assert.equal(signed(id), value)
      res = track("_dfdid=" .. value)
      assert.is_nil(res.headers["set-cookie"])
      res = track("_dfdid=dfid_hub_jane")
      local fresh = res.headers["set-cookie"]:match("^_dfdid=(dfid_%x+)%.")
      assert.is_string(fresh)
      assert.are_not.equal("dfid_hub_jane", fresh)
      local ids = {}
      for _, e in ipairs(H.raw_entries("dk_test_hub")) do
        if e.ev.event == "Signed" then ids[#ids + 1] = e.ev.canonical_id end
      end
      assert.same({ id, id, fresh }, ids)
    end)

    it("accepts a cookie signed with cookie_secret_previous and signs it again with cookie_secret", function()
      local res = track("_dfdid=" .. signed("dfid_rotated", PREVIOUS))
      assert.equal(200, res.status)
      assert.equal(signed("dfid_rotated"), res.headers["set-cookie"]:match("^_dfdid=([^;]+)"))
      assert.equal("Value Hunter", H.json(get("_dfdid=" .. signed("dfid_hub_jane", PREVIOUS))).attributes.Persona)
    end)
  end)
end)
