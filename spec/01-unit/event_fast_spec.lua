-- spec/01-unit/event_fast_spec.lua — the collector's conversion on the bytes
-- clients send (core.collect.normalize and core.collect.convert, the C the
-- engine runs: engine/collect/): what the canonical event and the stored
-- input hold for the shapes SDKs send; numbers copied digit for digit;
-- escapes, whitespace, nesting and number spellings at the limits; and,
-- against lua-cjson (which decoded bodies before the reader was C), that
-- the reader takes exactly the bodies cjson takes and refuses the others
-- with cjson's own message, on systematic edits and random byte edits.

local core = require "signal.core"
local cjson_safe = require "cjson.safe"
local event = require "signal.pipeline.event"
local T = require "signal.testing"

local concat = table.concat
local C = core.collect

local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"
local RECEIVED = 1776440230.5124         -- 2026-04-17T15:37:10.512Z

-- lua-cjson with the collector's former decoder settings: the reference for
-- which bodies are JSON, and for the decoder's messages
local decoder = cjson_safe.new()
decoder.decode_max_depth(32)
decoder.decode_invalid_numbers(false)
local decode = decoder.decode

local BASE_CTX = {
  pipeline_key = "dk_live_demo", canonical_id = "dfid_abc123", ip = "203.0.113.7",
  user_agent = "Mozilla/5.0 (spec)", received_at = RECEIVED, server_side = false,
}

local function ctx(over)
  local c = {}
  for k, v in pairs(BASE_CTX) do c[k] = v end
  for k, v in pairs(over or {}) do
    if v == "<nil>" then c[k] = nil else c[k] = v end
  end
  return c
end

-- a request body through convert(), as the collector takes it on /v1/t
local function request(body, over)
  local o = { kind = "single", pipelines = { "dk_live_demo", "pk_body", "wk_body", "basic_k" },
              header_key = "dk_live_demo", canonical_id = "dfid_abc123", ip = "203.0.113.7",
              user_agent = "Mozilla/5.0 (spec)", received_at = RECEIVED, type_hint = "track" }
  for k, v in pairs(over or {}) do
    if v == "<nil>" then o[k] = nil else o[k] = v end
  end
  return C.convert(body, o)
end

-- the one stored message of an accepted body
local function stored(body, over)
  local res = request(body, over)
  assert(res.status == 200, "refused: " .. tostring(res.body))
  assert.equal(1, #res.events)
  return res.events[1], assert(decode(res.events[1].ev))
end

-- the refusal of a body: its status and decoded error
local function refusal(body, over)
  local res = request(body, over)
  assert(res.status ~= 200, "accepted: " .. body:sub(1, 200))
  return res.status, assert(decode(res.body)).error
end

---------------------------------------------------------------------------
-- corpus helpers: compact JSON objects as lists of raw members

local function bench_event()
  local f = assert(io.open("bench/collector/event.lua"))
  local src = f:read("*a")
  f:close()
  local ev = assert(src:match("%[%[\n?(.-)%]%]"))
  return (ev:gsub("%s+$", ""):gsub("MESSAGE_ID_PLACEHOLDER", "7d0a8f3e-2b61-4c1e-9a55-0f3c2d1e4b7a"))
end
local BENCH = bench_event()

-- split(s) → the raw `"key":value` members of the compact object s
local function split(s)
  assert(s:sub(1, 1) == "{" and s:sub(-1) == "}", "not an object: " .. s)
  local out, depth, instr, esc, start = {}, 0, false, false, 2
  for i = 1, #s do
    local ch = s:sub(i, i)
    if instr then
      if esc then esc = false
      elseif ch == "\\" then esc = true
      elseif ch == '"' then instr = false end
    elseif ch == '"' then instr = true
    elseif ch == "{" or ch == "[" then depth = depth + 1
    elseif ch == "}" or ch == "]" then
      depth = depth - 1
      if depth == 0 and i > start then out[#out + 1] = s:sub(start, i - 1) end
    elseif ch == "," and depth == 1 then
      out[#out + 1] = s:sub(start, i - 1)
      start = i + 1
    end
  end
  return out
end

local function key_of(m) return m:match('^"(.-)":') end
local function value_of(m) return m:match('^".-":(.*)$') end

-- set(obj, key, raw) → obj with key's value replaced by raw (appended when
-- absent); raw nil removes it
local function set(obj, key, raw)
  local ms, found = split(obj), false
  local out = {}
  for _, m in ipairs(ms) do
    if key_of(m) == key then
      found = true
      if raw ~= nil then out[#out + 1] = '"' .. key .. '":' .. raw end
    else
      out[#out + 1] = m
    end
  end
  if not found and raw ~= nil then out[#out + 1] = '"' .. key .. '":' .. raw end
  return "{" .. concat(out, ",") .. "}"
end

local function get(obj, key)
  for _, m in ipairs(split(obj)) do
    if key_of(m) == key then return value_of(m) end
  end
end

-- the same inside the body's context (or a context object: path "page")
local function set_ctx(body, key, raw, nested)
  local c = get(body, "context")
  if nested then
    c = set(c, nested, set(get(c, nested), key, raw))
  else
    c = set(c, key, raw)
  end
  return set(body, "context", c)
end

-- whitespace (all four JSON kinds) around every structural character
local function spaced(s)
  local out, instr, esc = {}, false, false
  for i = 1, #s do
    local ch = s:sub(i, i)
    if instr then
      if esc then esc = false
      elseif ch == "\\" then esc = true
      elseif ch == '"' then instr = false end
      out[#out + 1] = ch
    elseif ch == '"' then
      instr = true
      out[#out + 1] = ch
    elseif ch:find("[{}%[%],:]") then
      out[#out + 1] = " \n\t" .. ch .. "\r\n  "
    else
      out[#out + 1] = ch
    end
  end
  return "\n\t " .. concat(out) .. " \r\n"
end

local function J(v) return assert(cjson_safe.encode(v)) end

-- datafly.js bodies: emit() + buildRequest() stamping pipelineKey and sentAt
local function datafly(type_, fields)
  local m = {
    '"type":' .. J(type_),
  }
  for _, f in ipairs(fields) do m[#m + 1] = f end
  m[#m + 1] = '"anonymousId":"5b0e7c1a-3f2d-4e8b-9c6a-1d2e3f4a5b6c"'
  m[#m + 1] = '"messageId":"a1b2c3d4-e5f6-4789-8abc-def012345678"'
  m[#m + 1] = '"timestamp":"2026-04-17T15:37:10.484Z"'
  m[#m + 1] = '"context":{"page":{"url":"https://shop.example.com/c/running-shoes?utm_source=news",'
    .. '"path":"/c/running-shoes","referrer":"","title":"Running Shoes | Acme","search":"?utm_source=news"},'
    .. '"campaign":{"source":"news"},"locale":"en-GB","timezone":"Europe/London",'
    .. '"screen":{"width":1512,"height":982,"density":2},"library":{"name":"datafly.js","version":"1.8.0"},'
    .. '"userAgent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",'
    .. '"session":{"id":"1f2e3d4c-5b6a-4798-8a7b-6c5d4e3f2a1b","count":1},'
    .. '"vendorIds":{"ga":"GA1.1.1234567890.1713366000","fbp":"fb.1.1713366000000.987654321"},'
    .. '"consent":{"analytics":true,"marketing":false,"google":{"ad_storage":"denied","analytics_storage":"granted"}}}'
  m[#m + 1] = '"pipelineKey":"dk_live_demo"'
  m[#m + 1] = '"sentAt":"2026-04-17T15:37:10.684Z"'
  return "{" .. concat(m, ",") .. "}"
end

local DF_PAGE = datafly("page", { '"name":"Running Shoes"',
  '"properties":{"category":"shoes","url":"https://shop.example.com/c/running-shoes"}' })
local DF_TRACK = datafly("track", { '"event":"Product Added"',
  '"properties":{"product_id":"SKU-1","price":89,"quantity":1,"currency":"GBP"}',
  '"userId":"cust_10482"' })


---------------------------------------------------------------------------

-- The objects the conversion writes itself (the event, its context and the
-- context objects it converts) never repeat a key.
local function assert_unique_keys(obj, where)
  where = where or "$"
  local seen = {}
  for _, m in ipairs(split(obj)) do
    local k = key_of(m)
    assert(k, "member without a plain key at " .. where .. ": " .. m)
    assert(not seen[k], "duplicate key " .. k .. " at " .. where)
    seen[k] = true
    local v = value_of(m)
    if where == "$" and k == "context" then assert_unique_keys(v, "$.context") end
    if where == "$.context" and v:sub(1, 1) == "{" and ({ page = 1, campaign = 1, screen = 1, library = 1,
        session = 1, device = 1, os = 1, geo = 1, vendor_ids = 1 })[k] then
      assert_unique_keys(v, "$.context." .. k)
    end
  end
end

---------------------------------------------------------------------------

describe("the collector's conversion", function()
  it("turns the benchmark event into the canonical event", function()
    local ev_json, mid, dedupe = C.normalize(BENCH, ctx({ type_hint = "track" }))
    assert.equal("7d0a8f3e-2b61-4c1e-9a55-0f3c2d1e4b7a", mid)
    assert.is_true(dedupe)
    local ev = decode(ev_json)
    assert.equal("track", ev.type)
    assert.equal("cust_10482", ev.user_id)
    assert.equal("dfid_abc123", ev.canonical_id)
    assert.equal("dk_live_demo", ev.pipeline_key)
    assert.equal("2026-04-17T15:37:10.512Z", ev.received_at)
    assert.equal("203.0.113.7", ev.context.ip)
    assert.equal("Mozilla/5.0 (spec)", ev.context.user_agent)
    assert.equal("GA1.1.1234567890.1713366000", ev.context.vendor_ids.ga)
    assert.is_nil(ev.context.userAgent)
    assert.is_nil(ev.messageId)
    assert_unique_keys(ev_json)
    assert(ev_json:find('"message_id":"[^"]*"}$'), "message_id is the last member: " .. ev_json)
  end)

  it("takes a signal.buf as well as a string", function()
    local a = C.normalize(BENCH, ctx({ received_at = RECEIVED }))
    local b = C.normalize(core.buffer(BENCH), ctx({ received_at = RECEIVED }))
    assert.equal(a, b)
  end)

  it("stores a datafly.js event without its pipelineKey, keyed by it", function()
    local res = request(DF_PAGE, { header_key = "<nil>", type_hint = "page" })
    assert.equal(200, res.status, res.body)
    assert.equal("dk_live_demo", res.pipeline)
    local e = res.events[1]
    assert.is_true(e.dedupe)
    assert.equal("a1b2c3d4-e5f6-4789-8abc-def012345678", e.message_id)
    local input = decode(e["in"])
    assert.is_nil(input.pipelineKey)
    assert.equal("Running Shoes", input.name)
    assert.equal("page", decode(e.ev).type)
  end)

  it("reads JSON whitespace anywhere, giving the same event", function()
    for _, body in ipairs({ DF_TRACK, BENCH }) do
      local compact = select(2, stored(body))
      local spaced_ev = select(2, stored(spaced(body)))
      assert.same(compact, spaced_ev)
    end
    -- a body without credentials is stored byte for byte
    local e = stored(spaced(BENCH))
    assert.equal(spaced(BENCH), e["in"])
  end)

  it("makes a fresh v4 uuid for a message without an id, and does not dedupe it", function()
    local body = set(BENCH, "messageId", nil)
    local a, b = stored(body), stored(body)
    assert.matches(UUID, a.message_id)
    assert.is_false(a.dedupe)
    assert.not_equal(a.message_id, b.message_id)
    assert.equal(a.message_id, decode(a.ev).message_id)
  end)

  it("dedupes only ids the sender chose as messageId or message_id", function()
    local function mid(k, v) return set(set(BENCH, "messageId", nil), k, v) end
    assert.is_true(stored(mid("message_id", '"m-1"')).dedupe)
    assert.is_true(stored(mid("messageId", "42")).dedupe)
    assert.equal("42", stored(mid("messageId", "42")).message_id)
    local e = stored(mid("MessageId", '"m-2"'))
    assert.is_false(e.dedupe)
    assert.equal("m-2", e.message_id)
    assert.equal("m-3", stored(mid("messageId", '"m\\u002d3"')).message_id)
    assert.matches(UUID, stored(mid("messageId", '""')).message_id)
  end)

  it("takes the message's canonicalId only without a cookie", function()
    local body = set(BENCH, "canonicalId", '"dfid_body"')
    assert.equal("dfid_abc123", select(2, stored(body)).canonical_id)
    assert.equal("dfid_body", select(2, stored(body, { canonical_id = "<nil>" })).canonical_id)
  end)

  it("converts odd keys at the top level, in context and in context objects", function()
    local cases = { { "HTTPServer", "http_server" }, { "aB1c", "a_b1c" }, { "already_snake", "already_snake" },
                    { "X", "x" }, { "getHTTPResponseCode", "get_http_response_code" }, { "", "" },
                    { "userIDs", "user_i_ds" }, { "IP", "ip" }, { "x-y.z", "x-y.z" } }
    for _, c in ipairs(cases) do
      local ev = select(2, stored(set(BENCH, c[1], '"v"')))
      assert.equal("v", ev[c[2]], c[1])
      ev = select(2, stored(set_ctx(BENCH, c[1], '{"innerCamel":1}')))
      if c[2] ~= "ip" then assert.same({ innerCamel = 1 }, ev.context[c[2]], c[1]) end
      ev = select(2, stored(set_ctx(BENCH, c[1], '"v"', "page")))
      assert.equal("v", ev.context.page[c[2]], c[1])
    end
    local ev = select(2, stored(set_ctx(BENCH, "innerCamel", '"v"', "campaign")))
    assert.equal("v", ev.context.campaign.inner_camel)
    ev = select(2, stored(set_ctx(BENCH, "myThing", '{"innerCamel":1}')))
    assert.equal(1, ev.context.my_thing.innerCamel)
  end)

  it("drops what only the server sets, and the credentials", function()
    for _, k in ipairs({ "partnerAttrs", "partner_attrs", "identity", "receivedAt", "writeKey", "pipeline_key" }) do
      local e, ev = stored(set(BENCH, k, '{"x":1}'))
      if k == "pipeline_key" then assert.equal("dk_live_demo", ev.pipeline_key) else assert.is_nil(ev[k]) end
      assert.is_nil(ev.partner_attrs)
      assert.is_nil(ev.identity)
      assert.equal("2026-04-17T15:37:10.512Z", ev.received_at)
      if k == "writeKey" or k == "pipeline_key" then assert.is_nil(decode(e["in"])[k]) end
    end
  end)

  it("takes properties and context arrays as the Lua collector did, and refuses scalars", function()
    assert.same({}, select(2, stored(set(BENCH, "properties", "[]"))).properties)
    assert.same({ 1, 2 }, select(2, stored(set(BENCH, "properties", "[1,2]"))).properties)
    local _, err = refusal(set(BENCH, "properties", '"x"'))
    assert.matches("properties: must be an object", err.message)
    local ev = select(2, stored(set(BENCH, "context", "[1]")))
    assert.same({ ip = "203.0.113.7", user_agent = "Mozilla/5.0 (spec)" }, ev.context)
    assert.equal("x", select(2, stored(set_ctx(BENCH, "page", '"x"'))).context.page)
    assert.same({ "a" }, select(2, stored(set_ctx(BENCH, "page", '["a"]'))).context.page)
  end)

  it("takes context.ip and user_agent from the connection for browsers, the message's for servers", function()
    local msg = set_ctx(set_ctx(BENCH, "ip", '"198.51.100.9"'), "userAgent", '"Visitor/1"')
    local cases = {
      -- server_side, ctx ip, body → expected ip, user_agent
      { false, "203.0.113.7", msg, "203.0.113.7", "Mozilla/5.0 (spec)" },
      { true, "203.0.113.7", msg, "198.51.100.9", "Visitor/1" },
      { true, "203.0.113.7", set(BENCH, "context", nil), "203.0.113.7", "Mozilla/5.0 (spec)" },
      { true, "203.0.113.7", set_ctx(BENCH, "ip", "null"), core.null, BENCH:match('"userAgent":"([^"]+)"') },
      { false, "<nil>", msg, "198.51.100.9", "Mozilla/5.0 (spec)" },
    }
    for i, c in ipairs(cases) do
      local ev = decode((C.normalize(c[3], ctx({ server_side = c[1], ip = c[2] }))))
      assert.equal(c[4], ev.context.ip, "case " .. i)
      assert.equal(c[5], ev.context.user_agent, "case " .. i)
    end
    local q = decode((C.normalize(BENCH, ctx({ user_agent = 'UA "quoted" \\ \1' }))))
    assert.equal('UA "quoted" \\ \1', q.context.user_agent)
  end)

  it("finds the pipeline key in the header, pipelineKey, writeKey, then the Basic username", function()
    local nokey = { header_key = "<nil>" }
    assert.equal(401, request(BENCH, nokey).status)
    assert.equal("basic_k", request(BENCH, { header_key = "<nil>", basic_key = "basic_k" }).pipeline)
    assert.equal("pk_body", request(set(BENCH, "pipelineKey", '"pk_body"'), nokey).pipeline)
    assert.equal("wk_body", request(set(BENCH, "writeKey", '"wk_body"'), nokey).pipeline)
    assert.equal("wk_body", request(set(set(BENCH, "pipelineKey", '""'), "writeKey", '"wk_body"'), nokey).pipeline)
    assert.equal("wk_body", request(set(set(BENCH, "pipelineKey", "null"), "writeKey", '"wk_body"'), nokey).pipeline)
    assert.equal("pk_body", request(set(set(BENCH, "pipelineKey", '"pk_body"'), "writeKey", '"wk_body"'), nokey).pipeline)
    assert.equal("pk_body", request(set(BENCH, "pipelineKey", '"pk\\u005fbody"'), nokey).pipeline)
    assert.equal(401, request(set(BENCH, "pipelineKey", "42"), nokey).status)
    assert.equal("dk_live_demo", request(set(BENCH, "pipelineKey", '"pk_body"')).pipeline)   -- the header's
    assert.equal(401, request(BENCH, { header_key = "dk_unknown" }).status)
  end)

  it("checks timestamp, sentAt and originalTimestamp as ISO-8601", function()
    local good = { "2026-04-17T15:37:10Z", "2026-04-17T15:37:10.4Z", "2026-04-17T15:37:10.123456789Z",
                   "2024-02-29T00:00:00Z", "2026-04-17T15:37:60Z", "2026-04-17T15:37:10+23:59",
                   "2026-04-17T15:37:10.484-05:00", "0000-01-01T00:00:00Z", "2000-02-29T12:00:00Z" }
    local bad = { "2026-13-17T15:37:10Z", "2026-00-17T15:37:10Z", "2026-02-30T15:37:10Z",
                  "2023-02-29T15:37:10Z", "1900-02-29T00:00:00Z", "2026-04-31T00:00:00Z",
                  "2026-04-00T00:00:00Z", "2026-04-17T24:00:00Z", "2026-04-17T15:60:00Z",
                  "2026-04-17T15:37:61Z", "2026-04-17T15:37:10.1234567890Z", "2026-04-17T15:37:10.Z",
                  "2026-04-17T15:37:10+24:00", "2026-04-17T15:37:10+05:60", "2026-04-17T15:37:10",
                  "2026-04-17T15:37:10z", "2026-04-17 15:37:10Z", "2026-04-17T15:37:10+0500",
                  "2026-04-17T15:37:10Z ", "26-04-17T15:37:10Z", "2026-4-17T15:37:10Z",
                  "2026-04-17T15:37:10.484ZZ", "" }
    for field, wire in pairs({ timestamp = "timestamp", sentAt = "sentAt", originalTimestamp = "originalTimestamp" }) do
      for _, t in ipairs(good) do
        assert.equal(200, request(set(BENCH, field, J(t))).status, field .. " " .. t)
        assert.equal(event.is_iso8601(t), true, t)
      end
      for _, t in ipairs(bad) do
        local _, err = refusal(set(BENCH, field, J(t)))
        assert.matches(wire .. ": must be an ISO%-8601 date%-time", err.message)
        assert.equal(event.is_iso8601(t), false, t)
      end
      local _, err = refusal(set(BENCH, field, "1713366000"))
      assert.matches(wire .. ": must be an ISO%-8601", err.message)
    end
    -- an escape is decoded first
    assert.equal(200, request(set(BENCH, "timestamp", '"2026-04-17T15:37:10\\u005a"')).status)
  end)

  it("formats received_at as signal.pipeline.event.iso8601 does, rounding included", function()
    for _, t in ipairs({ 0, 1, 1776440230.0004, 1776440230.0005, 1776440230.9995, 1776440230.99951,
                         1776440230.999999, 951782400.5, 4102444799.9996, 1234567890.1235 }) do
      local ev = decode((C.normalize(BENCH, ctx({ received_at = t }))))
      assert.equal(event.iso8601(t), ev.received_at)
    end
  end)

  it("takes nesting to depth 32 and refuses 33 with the decoder's message", function()
    for depth = 30, 34 do
      for _, inner in ipairs({ string.rep("[", depth - 2) .. "1" .. string.rep("]", depth - 2),
                               string.rep('{"k":', depth - 2) .. "1" .. string.rep("}", depth - 2) }) do
        local body = set(BENCH, "properties", '{"d":' .. inner .. "}")
        local res = request(body)
        if depth <= 32 then
          assert.equal(200, res.status, "depth " .. depth)
        else
          assert.equal(400, res.status, "depth " .. depth)
          local err = decode(res.body).error
          assert.equal("INVALID_JSON", err.code)
          assert.equal("body is not valid JSON: " .. select(2, decode(body)), err.message)
          assert.matches("Found too many nested data structures %(33%)", err.message)
        end
      end
    end
  end)

  it("copies numbers digit for digit, writing cjson's lenient spellings as JSON", function()
    for _, n in ipairs({ "-0", "0", "1.5e3", "1E+2", "0.1234567890123456789", "12345678901234567890",
                         "1234567890123456789", "1e-999", "-1.5E-3", "1e307", "9.99e307", "1.7976931348623157e308" }) do
      local e = stored(set(BENCH, "properties", '{"n":' .. n .. ',"a":[' .. n .. "]}"))
      assert(e.ev:find('"properties":{"n":' .. n:gsub("[%+%.%-]", "%%%0") .. ',"a":%[' .. n:gsub("[%+%.%-]", "%%%0") .. "%]}"),
             "not byte-exact: " .. n .. " in " .. e.ev)
    end
    for lenient, strict in pairs({ ["1."] = "1", ["-.5"] = "-0.5", ["1.e5"] = "1e5", ["-0."] = "-0" }) do
      local e = stored(set(BENCH, "properties", '{"n":' .. lenient .. "}"))
      assert(e.ev:find('"properties":{"n":' .. strict:gsub("[%.%-]", "%%%0") .. "}", 1), lenient .. " → " .. e.ev)
      assert(e["in"]:find('"n":' .. strict:gsub("[%.%-]", "%%%0") .. "}", 1), lenient .. " → " .. e["in"])
    end
    for _, n in ipairs({ "1e999", "-1e999", "2e308", "1000e306" }) do
      local _, err = refusal(set(BENCH, "properties", '{"n":' .. n .. "}"))
      assert.equal("invalid event: Cannot serialise number: must not be NaN or Inf", err.message)
    end
    for _, n in ipairs({ "01", "-01", ".5", "+1", "0x10", "NaN", "Infinity", "-", "1e", "1e+", "--1", "1.5.3" }) do
      local body = set(BENCH, "properties", '{"n":' .. n .. "}")
      local _, err = refusal(body)
      assert.equal("body is not valid JSON: " .. select(2, decode(body)), err.message)
    end
  end)

  it("keeps escapes and raw bytes in strings, refusing what cjson refuses", function()
    local ok = { [["caf\u00e9 \ud83d\ude00 \"q\" \\ \/ \b\f\n\r\t"]], [["\u0000"]], '"café 😀"',
                 '"\255\254 not utf-8"', [["\u00E9\uD83D\uDE00"]], '"\127"', '"tab\there"' }
    for _, s in ipairs(ok) do
      local body = set(BENCH, "properties", '{"s":' .. s .. "}")
      local ev = select(2, stored(body))
      assert.equal(decode(body).properties.s, ev.properties.s)
    end
    for _, s in ipairs({ [["\ud83d"]], [["\ude00"]], [["\ud83d\u0041"]], [["\ud83dx"]], [["\x"]], [["\u12"]],
                         [["\u12G4"]], '"nul\0here"', [["\]] }) do
      local body = set(BENCH, "properties", '{"s":' .. s .. "}")
      local _, err = refusal(body)
      assert.equal("body is not valid JSON: " .. select(2, decode(body)), err.message)
    end
  end)

  it("refuses what is not JSON with cjson's message", function()
    local bodies = { BENCH .. "x", BENCH .. "}", BENCH .. ",", BENCH:sub(1, -2) .. ",}",
                     set(BENCH, "properties", '{"a":1,}'), set(BENCH, "properties", '{"a":[1,2,]}'),
                     set(BENCH, "properties", '{"a" 1}'), set(BENCH, "properties", '{"a":1 "b":2}'),
                     set(BENCH, "properties", "{,}"), set(BENCH, "properties", '{"a":tru}'),
                     "\239\187\191" .. BENCH, "{'type':'track'}", BENCH:gsub('"type"', "type", 1), " " }
    for i = 0, #BENCH - 1, 7 do bodies[#bodies + 1] = BENCH:sub(1, i) end
    for _, b in ipairs(bodies) do
      local res = request(b)
      assert.equal(400, res.status, b:sub(1, 80))
      local err = decode(res.body).error
      assert.equal("INVALID_JSON", err.code)
      local why = b == "" and "the body is empty" or select(2, decode(b))
      assert.equal("body is not valid JSON: " .. why, err.message)
    end
    -- JSON, but not an event
    for _, b in ipairs({ "null", "42", '"str"', "[1]" }) do
      local status, err = refusal(b)
      assert.equal(400, status)
      assert.equal("body must be a JSON object: one event", err.message)
    end
  end)

  it("refuses a message over 32 KB and takes one of exactly 32 KB", function()
    local function sized(n)
      local b = set(BENCH, "properties", '{"blob":""}')
      return set(BENCH, "properties", '{"blob":"' .. string.rep("x", n - #b) .. '"}')
    end
    assert.equal(32768, #sized(32768))
    assert.equal(200, request(sized(32768)).status)
    local status, err = refusal(sized(32769))
    assert.equal(413, status)
    assert.equal("the event is 32769 bytes; the limit is 32 KB (32768 bytes) per message", err.message)
  end)

  it("takes any number of members and any key length", function()
    local body = BENCH
    for i = 1, 200 do body = set(body, "extraField" .. i, tostring(i)) end
    assert.equal(200, select(2, stored(body)).extra_field200)
    assert.equal(1, select(2, stored(set(BENCH, string.rep("aB", 200), "1")))[string.rep("a_b", 200)])
  end)

  it("reads the event fixtures, canonical events as a server sends them", function()
    for _, name in ipairs({ "page", "retail", "travel", "finance", "b2b_saas", "media", "gaming", "publishing" }) do
      local fx = T.fixture(name)
      local e, ev = stored(J(fx), { kind = "events", server_side = true, canonical_id = "<nil>", type_hint = "<nil>" })
      assert.equal(fx.type, ev.type, name)
      assert.is_nil(ev.identity, name)
      assert.is_nil(ev.partner_attrs, name)
      assert.equal("dk_live_demo", ev.pipeline_key, name)
      assert.same(fx.traits, ev.traits, name)
      assert.is_table(e.link, name)   -- their traits carry linking keys
    end
  end)

  it("takes exactly the bodies cjson takes, on random byte edits of the benchmark event", function()
    local seed = 12345
    local function rnd(n)   -- small LCG: the same corpus on every run
      seed = (seed * 1103515245 + 12345) % 2147483648
      return seed % n + 1
    end
    local alphabet = '{}[]":,\\ \t\n0123456789-+.eEabcdfnrtuxyzABCZ_\0\31\127\200'
    local taken, refused = 0, 0
    for _ = 1, 3000 do
      local b = BENCH
      for _ = 1, rnd(3) do
        local pos, op = rnd(#b), rnd(3)
        local i = rnd(#alphabet)
        local ch = alphabet:sub(i, i)
        if op == 1 then b = b:sub(1, pos - 1) .. ch .. b:sub(pos + 1)
        elseif op == 2 then b = b:sub(1, pos - 1) .. b:sub(pos + 1)
        else b = b:sub(1, pos - 1) .. ch .. b:sub(pos) end
      end
      local res = request(b)
      local doc, derr = decode(b)
      if doc == nil then
        assert.equal(400, res.status, b)
        assert.equal("body is not valid JSON: " .. derr, decode(res.body).error.message)
        refused = refused + 1
      else
        assert.not_equal("INVALID_JSON", res.status ~= 200 and decode(res.body).error.code or nil, b)
        if res.status == 200 then
          taken = taken + 1
          assert_unique_keys(res.events[1].ev)
          assert.is_table(decode(res.events[1].ev))
          assert.is_table(decode(res.events[1]["in"]))
        end
      end
    end
    assert(taken > 100 and refused > 100, taken .. " taken, " .. refused .. " refused")
  end)
end)

describe("core.collect.normalize arguments", function()
  it("raises on a body that is no string or buffer, or a missing ctx", function()
    assert.has_error(function() C.normalize(nil, ctx()) end)
    assert.has_error(function() C.normalize(BENCH) end)
  end)

  it("gives the decoder's reason for a message that is not JSON", function()
    local ev, errs = C.normalize("{", ctx())
    assert.is_nil(ev)
    assert.matches("Expected object key string but found T_END", errs[1])
  end)
end)
