-- Secrets never leave the server (the quality bar): with every failure path
-- exercised at debug log level — an ingest key the vendor refuses, a
-- Profile API key refused with 403, dead letters, live events, the browser
-- endpoints — neither API key nor the admin token appears in the engine's
-- log, in any admin answer, or in anything served to a browser.
local H = require "helpers"
local cjson = require "cjson"
local core = require "signal.core"

local fx = H.profiles()
local ADMIN = "secret-admin-token-" .. core.random_hex(6)

describe("secrets", function()
  local sandbox, engine, pk

  setup(function()
    H.flush_redis()
    pk = "dk_secret_" .. core.random_hex(3)
    sandbox = H.sandbox()
    -- every call fails: ingest refused (401), profile lookups refused (403)
    for _, f in ipairs { { prefix = "/prof/events", status = 401 }, { prefix = "/prof/lookup", status = 403 } } do
      assert.equal(200, H.request("POST", sandbox.url .. "/_sandbox/faults", { ["content-type"] = "application/json" },
        cjson.encode(f)).status)
    end
    engine = H.engine({
      admin_token = ADMIN, log_level = "debug", identity_hub = { org_id = "org-secrets" },
      pipelines = { { key = pk, origins = { "http://shop.example" }, integrations = { {
        type = "amperity", preset = "retail", base_url = sandbox.url,
        tenant_subdomain = "acme", tenant_id = fx.tenant, api_key = fx.ingest_token,
        event_stream_id = "esm-demo", source_value = "DATAFLY",
        profile_api_key = fx.profile_token, profile_collection_id = "apc-demo",
        linking_keys = { { source = "email", key = "email_sha256", hash = "sha256" },
                         { source = "canonical_id", key = "_dfdid" } },
        browser_attribute_allowlist = "Persona",
      } } } },
    })
  end)

  teardown(function()
    if engine then engine:stop() end
    if sandbox then sandbox:stop() end
  end)

  it("appear in no log line, admin answer or browser response, even when every call fails", function()
    local auth = { authorization = "Bearer " .. ADMIN }
    local id = "secret-" .. core.random_hex(4)
    local res = assert(H.request("POST", engine.url .. "/v1/i", { ["content-type"] = "application/json",
      ["x-pipeline-key"] = pk, cookie = "_dfdid=dfid_secret_visitor" }, cjson.encode {
      type = "identify", userId = "u-1", messageId = id, traits = { email = "jane.doe@example.com" } }))
    assert.equal(200, res.status)
    -- wait until the refused delivery is dead-lettered (401 is final)
    local dlq = H.eventually(function()
      local r = assert(H.request("GET", engine.url .. "/v1/admin/dlq?pipeline=" .. pk .. "&integration=amperity", auth))
      local body = H.json(r)
      return body and body.entries and #body.entries > 0 and r
    end, 20, "the dead letter")
    local answers = {
      dlq,
      assert(H.request("GET", engine.url .. "/v1/admin/live?pipeline=" .. pk .. "&limit=10", auth)),
      assert(H.request("GET", engine.url .. "/v1/admin/status", auth)),
      assert(H.request("GET", engine.url .. "/metrics")),
      assert(H.request("GET", engine.url .. "/v1/js/" .. pk .. "/datafly.js")),
      assert(H.request("GET", engine.url .. "/v1/enrich?provider=amperity",
        { cookie = "_dfdid=dfid_secret_visitor", origin = "http://shop.example" })),
      assert(H.request("POST", engine.url .. "/v1/t", { ["x-pipeline-key"] = "nope" }, "{}")),
    }
    -- the live record shows the vendor request, with its Authorization redacted
    assert.matches("esm%-demo", answers[2].body)
    assert.matches("REDACTED", answers[2].body)
    -- the warnings really were logged (so the scan below scans something)
    local log = engine:output()
    assert.matches("partner resolve failed", log)
    assert.matches("Streaming Ingest", log)
    for _, secret in ipairs { fx.ingest_token, fx.profile_token, ADMIN } do
      local probe = secret:sub(-24)   -- any recognisable piece counts as a leak
      assert.is_nil(log:find(probe, 1, true), "a secret in the engine log")
      for i, a in ipairs(answers) do
        assert.is_nil(a.body:find(probe, 1, true), "a secret in answer " .. i)
        for k, v in pairs(a.headers) do
          assert.is_nil(tostring(v):find(probe, 1, true), "a secret in header " .. k .. " of answer " .. i)
        end
      end
    end
  end)

  it("are not echoed by signal check, whatever field they land in", function()
    local cfg = H.write(H.tmp .. "/secret-check.conf.lua", "return " .. H.serialize {
      redis = "redis://:" .. ADMIN .. "@127.0.0.1:1/0",
      pipelines = { { key = pk, integrations = { {
        type = "amperity", tenant_subdomain = fx.ingest_token, tenant_id = "acme",
        api_key = fx.profile_token, event_stream_id = "is-" .. ADMIN, source_value = "DATAFLY",
        profile_api_key = fx.profile_token,
      } } } },
    })
    local f = io.popen(H.bin .. " check -c " .. cfg .. " 2>&1; echo exit=$?")
    local out = f:read("*a")
    f:close()
    assert.matches("exit=1", out)
    assert.matches("tenant_subdomain", out)
    assert.matches("must differ", out)
    for _, secret in ipairs { fx.ingest_token, fx.profile_token, ADMIN } do
      assert.is_nil(out:find(secret:sub(-24), 1, true), "a secret in signal check's output:\n" .. out)
    end
  end)
end)
