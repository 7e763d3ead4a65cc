-- The collector's rules (engine/collect, in C) as the Lua modules reach
-- them — signal.collect.visitor and signal.collect.cors for the identity hub and the SDK
-- routes, core.collect for the rest: table-driven cases for what the
-- collector specs only touch through HTTP — X-Forwarded-For walks with
-- IPv4, IPv6 and CIDRs, cookie parsing, linking keys, CORS grants, Basic
-- credentials.
local core = require "signal.core"
local cjson = require "cjson"
local visitor = require "signal.collect.visitor"
local cors = require "signal.collect.cors"

local function ctx_with(proxies, extra)
  local cfg = { trusted_proxies = proxies }
  for k, v in pairs(extra or {}) do cfg[k] = v end
  return { cfg = cfg, pipelines = {
    a = { key = "a", origins = { "https://www.example.com" } },
    b = { key = "b", origins = { "https://shop.example.org", "http://localhost:3000" } },
  } }
end

local function req(peer, headers) return { remote_addr = peer, headers = headers or {}, query = "" } end

describe("visitor.client_ip", function()
  local cases = {
    -- trusted proxies, peer, X-Forwarded-For, expected client
    { { "127.0.0.1" }, "127.0.0.1", nil, "127.0.0.1" },
    { { "127.0.0.1" }, "127.0.0.1", "203.0.113.9", "203.0.113.9" },
    { { "10.0.0.0/8" }, "127.0.0.1", "203.0.113.9", "127.0.0.1" },                    -- untrusted peer
    { { "10.0.0.0/8" }, "10.9.8.7", "198.51.100.1, 203.0.113.9, 10.0.0.5", "203.0.113.9" },
    { { "10.0.0.0/8" }, "10.9.8.7", "10.0.0.1, 10.0.0.2", "10.0.0.1" },               -- all trusted: leftmost
    { { "10.0.0.0/8" }, "10.9.8.7", "garbage, 10.0.0.2", "10.0.0.2" },                -- stop at a bad hop
    { { "192.168.1.128/25" }, "192.168.1.200", "1.1.1.1", "1.1.1.1" },
    { { "192.168.1.128/25" }, "192.168.1.100", "1.1.1.1", "192.168.1.100" },
    { { "2001:db8::/32" }, "2001:db8:1::5", "[2001:db8::9]:443, 2606:4700::1111", "2606:4700::1111" },
    { { "::1" }, "::1", "203.0.113.9:51234", "203.0.113.9" },                          -- port stripped
    { { "10.0.0.0/8" }, "::ffff:10.1.1.1", "203.0.113.9", "203.0.113.9" },              -- IPv4-mapped peer
    { { "fe80::/10" }, "fe80::1", "fe80::2%eth0, 198.51.100.7", "198.51.100.7" },
    { { "10.0.0.0/8" }, "10.9.8.7", "203.0.113.9, 198.51.100.1, 10.0.0.5", "198.51.100.1" }, -- from the right
    { { "10.0.0.0/8" }, "10.9.8.7", " , 192.0.2.4", "192.0.2.4" },                     -- empty hops
    { { "10.0.0.0/8" }, "10.9.8.7", "010.1.2.3", "010.1.2.3" },                        -- decimal parts
    { { "10.0.0.0/8" }, "10.9.8.7", "unknown", "10.9.8.7" },
    { { "127.0.0.1", "10.1.0.0/16" }, "127.0.0.1", "198.51.100.4, 10.1.2.3", "198.51.100.4" },
  }
  for i, c in ipairs(cases) do
    it("case " .. i .. ": peer " .. c[2] .. ", X-Forwarded-For " .. tostring(c[3]) .. " → " .. c[4], function()
      local ctx = ctx_with(c[1])
      assert.equal(c[4], visitor.client_ip(ctx, req(c[2], { ["x-forwarded-for"] = c[3] })))
    end)
  end

  it("parses addresses to 4 or 16 bytes, refusing malformed ones", function()
    assert.equal(4, #visitor.parse_ip("192.0.2.1"))
    assert.equal(16, #visitor.parse_ip("2001:db8::1"))
    assert.equal(16, #visitor.parse_ip("::"))
    assert.equal(visitor.parse_ip("192.0.2.1"), visitor.parse_ip("::ffff:192.0.2.1"))
    for _, bad in ipairs({ "256.1.1.1", "1.2.3", "1::2::3", "12345::1", "example.com", "" }) do
      assert.is_nil(visitor.parse_ip(bad), bad)
    end
  end)
end)

describe("identity cookie", function()
  it("reads _dfdid from a Cookie header among others, not from look-alike names", function()
    local cases = {
      { "_dfdid=dfid_abc", "dfid_abc" },
      { "a=1; _dfdid=dfid_abc; b=2", "dfid_abc" },
      { "x_dfdid=evil; _dfdid=dfid_ok", "dfid_ok" },
      { "x_dfdid=evil", nil },
      { '_dfdid="dfid_quoted"', "dfid_quoted" },
      { "_dfdid=has space", nil },
      { "_dfdid=" .. string.rep("a", 200), nil },
      { "_dfdid=" .. string.rep("a", 128), string.rep("a", 128) },   -- the longest one taken
      { "_dfdid=" .. string.rep("a", 129), nil },
      { "_dfdid=" .. string.rep("b", 64) .. "c", string.rep("b", 64) .. "c" },
      { " _dfdid = dfid_4 ;", nil },          -- no "_dfdid=" in it
      { "_dfdid= dfid_4 ;", "dfid_4" },
      { '_dfdid="', nil },
      { "_dfdid=dfid_5;_dfdid=dfid_6", "dfid_5" },
      { "_DFDID=dfid_7", nil },
      { "a=1, _dfdid=dfid_8", "dfid_8" },   -- two Cookie headers, joined
    }
    for _, c in ipairs(cases) do
      assert.equal(c[2], visitor.read_cookie(ctx_with({}), req("127.0.0.1", { cookie = c[1] })), c[1])
    end
  end)

  it("mints with mint ~= false only, with Secure only behind a trusted https proxy", function()
    local ctx = ctx_with({ "127.0.0.1" }, { cookie_domain = ".example.com" })
    assert.is_nil(visitor.canonical_id(ctx, req("127.0.0.1"), false))
    local id, set = visitor.canonical_id(ctx, req("127.0.0.1", { ["x-forwarded-proto"] = "https" }))
    assert.matches("^dfid_%x+$", id)
    assert.equal("_dfdid=" .. id .. "; Path=/; Max-Age=34560000; HttpOnly; SameSite=Lax; Domain=.example.com; Secure",
                 set)
    local _, plain = visitor.canonical_id(ctx, req("192.0.2.1", { ["x-forwarded-proto"] = "https" }))
    assert.is_nil(plain:find("Secure", 1, true))
    local same, none = visitor.canonical_id(ctx, req("127.0.0.1", { cookie = "_dfdid=dfid_x" }))
    assert.equal("dfid_x", same)
    assert.is_nil(none)
  end)

  it("takes linking keys from identify traits, and from other events only when traits carry one", function()
    local function lk(ev) return core.collect.linking_keys(cjson.encode(ev)) end
    assert.same({ email = "a@x.com", user_id = "u1" },
                lk({ type = "identify", canonical_id = "c", user_id = "u1", traits = { email = "a@x.com" } }))
    assert.same({ phone = "+1 555", user_id = "u2" },
                lk({ type = "identify", canonical_id = "c", properties = { phone = "+1 555" }, user_id = "u2" }))
    assert.is_nil(lk({ type = "track", canonical_id = "c", user_id = "u1", properties = { email = "a@x.com" } }))
    assert.same({ email = "b@x.com", user_id = "u1" },
                lk({ type = "track", canonical_id = "c", user_id = "u1", context = { traits = { email = "b@x.com" } } }))
    assert.is_nil(lk({ type = "identify", user_id = "u1", traits = { email = "a@x.com" } }))  -- no device
    assert.same({ user_id = "42" }, lk({ type = "identify", canonical_id = "c", user_id = 42 }))
  end)
end)

describe("cors", function()
  local ctx = ctx_with({})

  it("grants the pipeline's own origins on responses, canonicalising case and default ports", function()
    local cases = {
      { "https://www.example.com", true }, { "HTTPS://WWW.EXAMPLE.COM", true },
      { "https://www.example.com:443", true }, { "HTTPS://WWW.EXAMPLE.COM:443", true },
      { "http://www.example.com", false }, { "https://www.example.com:8443", false },
      { "https://www.example.com.evil.net", false }, { "null", false }, { "https://evil.example", false },
    }
    for _, c in ipairs(cases) do
      local h = cors.headers(ctx, req("1.1.1.1", { origin = c[1] }), ctx.pipelines.a)
      assert.equal(c[2] and c[1] or nil, h["Access-Control-Allow-Origin"], c[1])
    end
    -- the form configured origins are stored in (config.lua)
    assert.equal("https://www.example.com", core.collect.canonical_origin("HTTPS://WWW.Example.COM:443"))
    assert.equal("http://localhost:3000", core.collect.canonical_origin("http://LOCALHOST:3000"))
    assert.equal("http://x.example", core.collect.canonical_origin("http://x.example:80"))
    local h = cors.headers(ctx, req("1.1.1.1", { origin = "HTTP://LOCALHOST:3000" }), ctx.pipelines.b)
    assert.equal("HTTP://LOCALHOST:3000", h["Access-Control-Allow-Origin"])
    h = cors.headers(ctx, req("1.1.1.1", { origin = "http://localhost:80" }), ctx.pipelines.b)
    assert.is_nil(h["Access-Control-Allow-Origin"])   -- :80 is not :3000
    local p = ctx.pipelines.a
    h = cors.headers(ctx, req("1.1.1.1", { origin = "https://www.example.com" }), p)
    assert.equal("https://www.example.com", h["Access-Control-Allow-Origin"])
    assert.equal("true", h["Access-Control-Allow-Credentials"])
    h = cors.headers(ctx, req("1.1.1.1", { origin = "HTTPS://WWW.EXAMPLE.COM:443" }), p)
    assert.equal("HTTPS://WWW.EXAMPLE.COM:443", h["Access-Control-Allow-Origin"])   -- echoed as sent
    h = cors.headers(ctx, req("1.1.1.1", { origin = "https://shop.example.org" }), p)
    assert.is_nil(h["Access-Control-Allow-Origin"])
    assert.equal("Origin", h["Vary"])
    h = cors.headers(ctx, req("1.1.1.1", {}), p)
    assert.is_nil(next(h))
  end)

  it("grants any pipeline's origins for key-less routes and preflights", function()
    local h = cors.headers_any(ctx, req("1.1.1.1", { origin = "http://localhost:3000" }))
    assert.equal("http://localhost:3000", h["Access-Control-Allow-Origin"])
    local status, ph, body = cors.preflight(ctx, req("1.1.1.1", { origin = "https://www.example.com" }))
    assert.equal(204, status)
    assert.equal("", body)
    assert.equal("https://www.example.com", ph["Access-Control-Allow-Origin"])
    local _, none = cors.preflight(ctx, req("1.1.1.1", { origin = "https://evil.example.net" }))
    assert.is_nil(none["Access-Control-Allow-Origin"])
    assert.is_nil(none["Access-Control-Allow-Methods"])
  end)

  it("grants a preflight that names a pipeline for that pipeline's origins only", function()
    local function pre(origin, key, query)
      local r = req("1.1.1.1", { origin = origin, ["x-pipeline-key"] = key })
      r.query = query or ""
      return select(2, cors.preflight(ctx, r))["Access-Control-Allow-Origin"]
    end
    assert.is_nil(pre("https://shop.example.org", "a"))
    assert.equal("https://shop.example.org", pre("https://shop.example.org", "b"))
    assert.equal("https://shop.example.org", pre("https://shop.example.org", "unknown"))   -- any pipeline's
    assert.is_nil(pre("https://shop.example.org", nil, "writeKey=a"))
    assert.equal("https://shop.example.org", pre("https://shop.example.org", nil, "x=1&pipelineKey=b"))
  end)
end)

describe("keys", function()
  it("decodes Basic credentials (standard and url-safe base64)", function()
    local b64 = core.collect.b64decode
    assert.equal("dk_live_demo:", b64("ZGtfbGl2ZV9kZW1vOg=="))
    assert.equal("abc", b64("YWJj"))
    assert.equal("\251\255", b64("-_8"))
    assert.is_nil(b64("a$b="))
    local cases = {
      { "Basic ZGtfbGl2ZV9kZW1vOg==", "dk_live_demo" }, { "basic ZGtfbGl2ZV9kZW1vOg", "dk_live_demo" },
      { "  Basic   ZGtfbGl2ZV9kZW1vOnNlY3JldA==  ", "dk_live_demo" }, { "Bearer ZGtf", nil },
      { "Basic Om5vdXNlcg==", nil }, { "Basic", nil }, { "Basic a$b=", nil }, { "Basic YWJj ZGVm", nil },
    }
    for _, c in ipairs(cases) do assert.equal(c[2], core.collect.basic_user(c[1]), c[1]) end
  end)

  it("computes SHA-1 locally (FIPS 180 vectors)", function()
    assert.equal("a9993e364706816aba3e25717850c26c9cd0d89d", core.sha1_hex("abc"))
    assert.equal("da39a3ee5e6b4b0d3255bfef95601890afd80709", core.sha1_hex(""))
    assert.equal("84983e441c3bd26ebaae4aa1f95129e5e54670f1",
                 core.sha1_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))
  end)
end)
