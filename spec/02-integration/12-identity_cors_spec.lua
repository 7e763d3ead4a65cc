-- signal.identity and signal.cors as other modules call them (the identity
-- hub, the SDK routes, the processor): table-driven cases for the parts the
-- collector specs only touch through HTTP — X-Forwarded-For walks with IPv4,
-- IPv6 and CIDRs, cookie parsing, linking keys, and CORS grants.
local identity = require "signal.identity"
local cors = require "signal.cors"
local collector = require "signal.collector"

local function ctx_with(proxies, extra)
  local cfg = { trusted_proxies = proxies }
  for k, v in pairs(extra or {}) do cfg[k] = v end
  return { cfg = cfg, pipelines = {
    a = { key = "a", origins = { "https://www.example.com" } },
    b = { key = "b", origins = { "https://shop.example.org", "http://localhost:3000" } },
  } }
end

local function req(peer, headers) return { remote_addr = peer, headers = headers or {}, query = "" } end

describe("identity.client_ip", function()
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
  }
  for i, c in ipairs(cases) do
    it("case " .. i .. ": peer " .. c[2] .. ", X-Forwarded-For " .. tostring(c[3]) .. " → " .. c[4], function()
      local ctx = ctx_with(c[1])
      assert.equal(c[4], identity.client_ip(ctx, req(c[2], { ["x-forwarded-for"] = c[3] })))
    end)
  end

  it("parses addresses to 4 or 16 bytes, refusing malformed ones", function()
    assert.equal(4, #identity.parse_ip("192.0.2.1"))
    assert.equal(16, #identity.parse_ip("2001:db8::1"))
    assert.equal(16, #identity.parse_ip("::"))
    assert.equal(identity.parse_ip("192.0.2.1"), identity.parse_ip("::ffff:192.0.2.1"))
    for _, bad in ipairs({ "256.1.1.1", "1.2.3", "1::2::3", "12345::1", "example.com", "" }) do
      assert.is_nil(identity.parse_ip(bad), bad)
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
    }
    for _, c in ipairs(cases) do
      assert.equal(c[2], identity.read_cookie(req("127.0.0.1", { cookie = c[1] })), c[1])
    end
  end)

  it("mints with mint ~= false only, with Secure only behind a trusted https proxy", function()
    local ctx = ctx_with({ "127.0.0.1" }, { cookie_domain = ".example.com" })
    assert.is_nil(identity.canonical_id(ctx, req("127.0.0.1"), false))
    local id, set = identity.canonical_id(ctx, req("127.0.0.1", { ["x-forwarded-proto"] = "https" }))
    assert.matches("^dfid_%x+$", id)
    assert.equal("_dfdid=" .. id .. "; Path=/; Max-Age=34560000; HttpOnly; SameSite=Lax; Domain=.example.com; Secure",
                 set)
    local _, plain = identity.canonical_id(ctx, req("192.0.2.1", { ["x-forwarded-proto"] = "https" }))
    assert.is_nil(plain:find("Secure", 1, true))
    local same, none = identity.canonical_id(ctx, req("127.0.0.1", { cookie = "_dfdid=dfid_x" }))
    assert.equal("dfid_x", same)
    assert.is_nil(none)
  end)

  it("takes linking keys from identify traits, and from other events only when traits carry one", function()
    local lk = identity.linking_keys
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
    local p = ctx.pipelines.a
    local h = cors.headers(ctx, req("1.1.1.1", { origin = "https://www.example.com" }), p)
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
end)

describe("collector internals", function()
  it("decodes Basic credentials (standard and url-safe base64)", function()
    assert.equal("dk_live_demo:", collector.b64decode("ZGtfbGl2ZV9kZW1vOg=="))
    assert.equal("abc", collector.b64decode("YWJj"))
    assert.equal("\251\255", collector.b64decode("-_8"))
    assert.is_nil(collector.b64decode("a$b="))
  end)

  it("computes the script's SHA-1 locally (FIPS 180 vectors)", function()
    assert.equal("a9993e364706816aba3e25717850c26c9cd0d89d", collector.sha1_hex("abc"))
    assert.equal("da39a3ee5e6b4b0d3255bfef95601890afd80709", collector.sha1_hex(""))
    assert.equal("84983e441c3bd26ebaae4aa1f95129e5e54670f1",
                 collector.sha1_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))
  end)
end)
