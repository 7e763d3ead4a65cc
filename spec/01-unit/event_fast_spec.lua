-- spec/01-unit/event_fast_spec.lua — core.event_json, the collector's C fast
-- path for one event, against the Lua path it stands in for:
--   cjson.decode (collector.lua's decoder settings) → credential stripping →
--   signal.pipeline.event.normalize → cjson.encode (precision 14).
-- Differential: for every message of the corpus, when the fast path answers
-- the Lua path must accept the message and produce the same event (equal
-- after decoding), the same message id / dedupe flag / pipeline key / stored
-- input; when it returns nil the Lua path decides. Some cases also pin that
-- the fast path IS taken (or is not), so it cannot silently always fall back.

local core = require "signal.core"
local cjson_safe = require "cjson.safe"
local event = require "signal.pipeline.event"
local identity = require "signal.identity"
local T = require "signal.testing"

local null = core.null
local concat = table.concat

local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"
local RECEIVED = 1776440230.5124         -- 2026-04-17T15:37:10.512Z

-- the collector's codecs (lua/signal/collector.lua)
local decoder = cjson_safe.new()
decoder.decode_max_depth(32)
decoder.decode_invalid_numbers(false)
local decode = decoder.decode
local encoder = cjson_safe.new()
encoder.encode_number_precision(14)
local encode = encoder.encode

---------------------------------------------------------------------------
-- the Lua path, as collector.lua's handle() runs it for one event

local CREDENTIALS = { "writeKey", "pipelineKey", "write_key", "pipeline_key" }

local function lua_path(body, c)
  local doc = decode(body)
  if type(doc) ~= "table" or (next(doc) ~= nil and doc[1] ~= nil) then return nil end
  local pk = c.pipeline_key
  if pk == "" then pk = nil end
  if not pk then
    pk = doc.pipelineKey
    if pk == nil or pk == null or pk == "" then pk = doc.writeKey end
    if pk == nil or pk == null or pk == "" then pk = c.basic_key end
    if pk == nil or pk == null or pk == "" or type(pk) ~= "string" then return nil end   -- 401
  end
  local in_json
  if doc.writeKey ~= nil or doc.pipelineKey ~= nil or doc.write_key ~= nil or doc.pipeline_key ~= nil then
    for i = 1, #CREDENTIALS do doc[CREDENTIALS[i]] = nil end
    in_json = encode(doc)
    if in_json == nil then return nil end
  end
  local v = doc.messageId
  if v == nil or v == null then v = doc.message_id end
  local dedupe = (type(v) == "string" and v ~= "") or type(v) == "number"
  local ev = event.normalize(doc, {
    pipeline_key = pk, canonical_id = c.canonical_id, ip = c.ip, user_agent = c.user_agent,
    received_at = c.received_at, type_hint = c.type_hint, server_side = c.server_side,
  })
  if ev == nil then return nil end
  local ev_json = encode(ev)
  if ev_json == nil then return nil end
  return { ev = ev, ev_json = ev_json, dedupe = dedupe, pk = pk, in_json = in_json }
end

-- deep equality after decoding: numbers within 1e-12 (relative), [] == {}
-- (cjson decodes both to an empty table)
local function same(a, b, path)
  path = path or "$"
  if type(a) == "number" and type(b) == "number" then
    if a == b or math.abs(a - b) <= 1e-12 * math.max(math.abs(a), math.abs(b)) then return true end
    return false, path .. ": " .. a .. " ~= " .. b
  end
  if type(a) ~= type(b) then return false, path .. ": " .. type(a) .. " ~= " .. type(b) end
  if type(a) ~= "table" then
    if a == b then return true end
    return false, path .. ": " .. tostring(a) .. " ~= " .. tostring(b)
  end
  for k, v in pairs(a) do
    local ok, why = same(v, b[k], path .. "." .. tostring(k))
    if not ok then return false, why end
  end
  for k in pairs(b) do
    if a[k] == nil then return false, path .. "." .. tostring(k) .. ": missing" end
  end
  return true
end

-- the message's own id, as normalize reads it (any spelling of messageId)
local function client_id(body)
  local doc = decode(body)
  for k, v in pairs(doc) do
    if type(k) == "string" and event.snake(k) == "message_id" and v ~= null and v ~= "" then
      return v
    end
  end
end

local BASE_CTX = {
  pipeline_key = "dk_live_demo", canonical_id = "dfid_abc123", ip = "203.0.113.7",
  user_agent = "Mozilla/5.0 (spec)", received_at = RECEIVED, type_hint = nil, server_side = false,
}

local function ctx(over)
  local c = {}
  for k, v in pairs(BASE_CTX) do c[k] = v end
  for k, v in pairs(over or {}) do
    if v == "<nil>" then c[k] = nil else c[k] = v end
  end
  return c
end

local stats = { fast = 0, fallback = 0, lua_ok = 0 }

local split, key_of, value_of   -- corpus helpers, below

-- The objects event_json writes itself (the event, its context and the
-- context objects it converts) must not repeat a key: a decoder keeping the
-- last one would hide that.
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
    if where == "$.context" and v:sub(1, 1) == "{" and event.snake(k) == k
        and ({ page = 1, campaign = 1, screen = 1, library = 1, session = 1, device = 1, os = 1,
               geo = 1, vendor_ids = 1 })[k] then
      assert_unique_keys(v, "$.context." .. k)
    end
  end
end

-- check(body, c, expect) → "fast" | "fallback"; expect: "fast", "fallback"
-- or nil (either, as long as the two paths agree)
local function check(body, c, expect)
  c = c or ctx()
  local n = select("#", core.event_json(body, c))
  local f = { core.event_json(body, c) }
  local l = lua_path(body, c)
  if l then stats.lua_ok = stats.lua_ok + 1 end
  if f[1] == nil then
    assert.equal(1, n, "a fallback returns a single nil")
    if expect == "fast" then
      error("fast path not taken for: " .. body:sub(1, 300), 2)
    end
    stats.fallback = stats.fallback + 1
    return "fallback", l
  end
  if expect == "fallback" then error("expected a fallback, fast path answered: " .. f[1], 2) end
  stats.fast = stats.fast + 1
  assert.equal(5, n)
  assert(l, "fast path accepted a message the Lua path rejects:\n" .. body)
  local fe, le = decode(f[1]), decode(l.ev_json)
  assert(type(fe) == "table", "ev_json is not JSON: " .. f[1])
  -- message id: the client's, or a fresh v4 uuid on both sides
  local mid = client_id(body)
  if mid then
    assert.equal(le.message_id, fe.message_id)
  else
    assert.matches(UUID, fe.message_id)
    assert.matches(UUID, le.message_id)
    fe.message_id, le.message_id = nil, nil
  end
  local ok, why = same(fe, le)
  assert(ok, "events differ at " .. tostring(why) .. "\nfast: " .. f[1] .. "\nlua:  " .. l.ev_json)
  assert_unique_keys(f[1])
  assert.equal(f[2], decode(f[1]).message_id)
  assert(f[1]:find('"message_id":"[^"]*"}$'), "message_id is not the last member: " .. f[1])
  assert.equal(l.dedupe, f[3])
  assert.equal(l.pk, f[4])
  if l.in_json then
    assert.is_string(f[5])
    local fi = decode(f[5])
    assert(fi, "in_json is not JSON: " .. f[5])
    local iok, iwhy = same(fi, decode(l.in_json))
    assert(iok, "in_json differs at " .. tostring(iwhy) .. "\nfast: " .. f[5] .. "\nlua:  " .. l.in_json)
  else
    assert.is_nil(f[5])
  end
  -- the caller gives no traits to linking_keys: there must be none to give
  assert.is_nil(identity.linking_keys(l.ev))
  return "fast", l
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
function split(s)
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

function key_of(m) return m:match('^"(.-)":') end
function value_of(m) return m:match('^".-":(.*)$') end

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

-- browser request without header key: the key is in the body
local DF_CTX = { canonical_id = "dfid_abc123", ip = "203.0.113.7", user_agent = "Mozilla/5.0 (spec)",
                 received_at = RECEIVED, server_side = false }

---------------------------------------------------------------------------

describe("core.event_json takes the fast path", function()
  it("for the benchmark event, producing the Lua path's event", function()
    local kind = check(BENCH, ctx({ type_hint = "track" }), "fast")
    assert.equal("fast", kind)
    local ev_json, mid, dedupe, key, in_json = core.event_json(BENCH, ctx({ type_hint = "track" }))
    assert.equal("7d0a8f3e-2b61-4c1e-9a55-0f3c2d1e4b7a", mid)
    assert.is_true(dedupe)
    assert.equal("dk_live_demo", key)
    assert.is_nil(in_json)
    local ev = decode(ev_json)
    assert.equal("cust_10482", ev.user_id)
    assert.equal("dfid_abc123", ev.canonical_id)
    assert.equal("2026-04-17T15:37:10.512Z", ev.received_at)
    assert.equal("203.0.113.7", ev.context.ip)
    assert.equal("Mozilla/5.0 (spec)", ev.context.user_agent)
    assert.equal("GA1.1.1234567890.1713366000", ev.context.vendor_ids.ga)
    assert.is_nil(ev.context.userAgent)
    assert.is_nil(ev.messageId)
  end)

  it("returns the same event as a signal.buf when ctx.buffer is set", function()
    local c = ctx({ type_hint = "track" })
    local as_string, mid = core.event_json(BENCH, c)
    c.buffer = true
    local as_buf, mid2, dedupe = core.event_json(core.buffer(BENCH), c)
    assert.equal("userdata", type(as_buf))
    assert.equal(#as_string, #as_buf)
    assert.equal(as_string, tostring(as_buf))
    assert.equal(mid, mid2)
    assert.is_true(dedupe)
  end)

  it("for a datafly.js page event carrying pipelineKey and sentAt", function()
    check(DF_PAGE, DF_CTX, "fast")
    local ev_json, mid, dedupe, key, in_json = core.event_json(DF_PAGE, DF_CTX)
    assert.equal("dk_live_demo", key)
    assert.equal("a1b2c3d4-e5f6-4789-8abc-def012345678", mid)
    assert.is_true(dedupe)
    local stored = decode(in_json)
    assert.is_nil(stored.pipelineKey)
    assert.equal("Running Shoes", stored.name)
    assert.equal("page", decode(ev_json).type)
  end)

  it("for a datafly.js track event, through /v1/t (hint) and /v1/track (server side)", function()
    check(DF_TRACK, DF_CTX, "fast")
    local hinted = {}
    for k, v in pairs(DF_CTX) do hinted[k] = v end
    hinted.type_hint = "track"
    check(DF_TRACK, hinted, "fast")
    hinted.server_side, hinted.canonical_id = true, nil
    check(DF_TRACK, hinted, "fast")
    local ev = decode((core.event_json(DF_TRACK, hinted)))
    assert.equal("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
                 ev.context.user_agent)
  end)

  it("for an analytics.js-style event with writeKey (and whitespace everywhere)", function()
    local body = set(set(DF_TRACK, "pipelineKey", nil), "writeKey", '"wk_123"')
    check(body, DF_CTX, "fast")
    check(spaced(body), DF_CTX, "fast")
    local _, _, _, key, in_json = core.event_json(spaced(body), DF_CTX)
    assert.equal("wk_123", key)
    assert.is_nil(decode(in_json).writeKey)
  end)

  it("with a fresh v4 uuid and no dedupe when the message has no id", function()
    local body = set(BENCH, "messageId", nil)
    check(body, ctx(), "fast")
    local ev_json, mid, dedupe = core.event_json(body, ctx())
    assert.matches(UUID, mid)
    assert.is_false(dedupe)
    assert.equal(mid, decode(ev_json).message_id)
    local _, mid2 = core.event_json(body, ctx())
    assert.not_equal(mid, mid2)
  end)
end)

describe("core.event_json on the event fixtures", function()
  for _, name in ipairs({ "page", "retail", "travel", "finance", "b2b_saas", "media", "gaming", "publishing" }) do
    it(name .. ": falls back with traits, matches the Lua path without", function()
      local fx = T.fixture(name)
      assert(fx.type == "track" or fx.type == "page")
      check(J(fx), ctx({ type_hint = fx.type }), "fallback")   -- traits: identity needs the Lua path
      fx.traits = nil
      -- canonical, snake_case events are valid input too (pipeline_key,
      -- received_at, identity and partner_attrs are dropped)
      check(J(fx), ctx({ type_hint = fx.type }), "fast")
      check(J(fx), ctx({ server_side = true, canonical_id = "<nil>" }), "fast")
      local ev = decode((core.event_json(J(fx), ctx())))
      assert.is_nil(ev.identity)
      assert.is_nil(ev.partner_attrs)
      assert.equal("dk_live_demo", ev.pipeline_key)
    end)
  end
end)

describe("core.event_json agrees with the Lua path", function()
  local TOP = split(BENCH)
  local VALUES = { "null", '""', "42", '{"a":1}', "[1,2]", "true", '"x"' }

  for _, m in ipairs(TOP) do
    local k = key_of(m)
    it("when " .. k .. " is removed or replaced", function()
      local fast = 0
      if check(set(BENCH, k, nil), ctx()) == "fast" then fast = fast + 1 end
      for _, v in ipairs(VALUES) do
        if check(set(BENCH, k, v), ctx()) == "fast" then fast = fast + 1 end
      end
      -- every field but type, event and the ids' absence can be mangled
      -- somehow and still take the fast path (e.g. set to null)
      assert(fast >= 1 or k == "type", "no variant of " .. k .. " took the fast path")
    end)
  end

  it("on type values and type/hint combinations", function()
    for _, t in ipairs({ '"identify"', '"group"', '"alias"', '"TRACK"', '"tr\\u0061ck"', "5", '""' }) do
      check(set(BENCH, "type", t), ctx(), "fallback")
    end
    check(set(set(BENCH, "type", '"page"'), "event", nil), ctx(), "fast")
    check(set(BENCH, "type", '"screen"'), ctx(), "fast")
    check(BENCH, ctx({ type_hint = "page" }), "fallback")          -- mismatch: Lua rejects
    check(set(BENCH, "type", nil), ctx({ type_hint = "page" }), "fast")
    check(set(BENCH, "type", nil), ctx({ type_hint = "screen" }), "fast")
    check(set(BENCH, "type", nil), ctx({ type_hint = "identify" }), "fallback")
    check(set(BENCH, "type", nil), ctx(), "fallback")              -- no type at all: Lua rejects
    check(set(BENCH, "type", "null"), ctx({ type_hint = "track" }), "fast")
    assert.is_nil(lua_path(BENCH, ctx({ type_hint = "page" })))
  end)

  it("on track/page event and name values", function()
    for _, v in ipairs({ '""', '"   "', "42", "null", '"\\u0041dded"', "{}" }) do
      check(set(BENCH, "event", v), ctx(), "fallback")
    end
    check(set(BENCH, "event", '" x "'), ctx(), "fast")
    check(set(BENCH, "event", '"Añadido 😀"'), ctx(), "fast")
    local page = set(set(BENCH, "type", '"page"'), "event", nil)
    check(set(page, "event", "42"), ctx(), "fast")                 -- page: event is just a field
    check(set(page, "name", '"Home"'), ctx(), "fast")
    check(set(page, "name", '""'), ctx(), "fast")
    check(set(page, "name", "null"), ctx(), "fast")
    check(set(page, "name", "42"), ctx(), "fallback")              -- Lua makes it "42"
    check(set(page, "name", "{}"), ctx(), "fallback")              -- Lua rejects
  end)

  it("on messageId spellings and values", function()
    local function mid(k, v) return set(set(BENCH, "messageId", nil), k, v) end
    check(mid("messageId", '""'), ctx(), "fast")
    check(mid("messageId", "null"), ctx(), "fast")
    check(mid("message_id", '"m-1"'), ctx(), "fast")
    check(mid("MessageId", '"m-2"'), ctx(), "fast")     -- normalize reads it; no dedupe
    assert.is_false(select(3, core.event_json(mid("MessageId", '"m-2"'), ctx())))
    assert.is_true(select(3, core.event_json(mid("message_id", '"m-1"'), ctx())))
    check(mid("messageId", "42"), ctx(), "fallback")
    check(mid("messageId", '"m\\u002d3"'), ctx(), "fallback")
    check(mid("messageId", "{}"), ctx(), "fallback")
    check(set(mid("messageId", '"a"'), "message_id", '"b"'), ctx(), "fallback")
  end)

  it("on ids: strings, empty, numbers and the canonical id from ctx", function()
    local anon_only = set(BENCH, "userId", nil)
    local none = set(anon_only, "anonymousId", nil)
    check(none, ctx(), "fast")                                           -- the cookie is enough
    check(none, ctx({ canonical_id = "<nil>" }), "fallback")             -- no id at all
    check(none, ctx({ canonical_id = "" }), "fallback")
    check(set(none, "canonicalId", '"dfid_server"'), ctx({ canonical_id = "<nil>", server_side = true }), "fast")
    check(set(none, "canonicalId", '""'), ctx({ canonical_id = "<nil>" }), "fallback")
    check(set(BENCH, "canonicalId", '"dfid_body"'), ctx(), "fast")       -- ctx wins
    assert.equal("dfid_abc123", decode((core.event_json(set(BENCH, "canonicalId", '"dfid_body"'), ctx()))).canonical_id)
    check(set(BENCH, "canonicalId", '"dfid_body"'), ctx({ canonical_id = "<nil>" }), "fast")
    check(set(BENCH, "canonicalId", '"dfid_body"'), ctx({ canonical_id = "" }), "fast")
    check(set(none, "userId", '""'), ctx(), "fast")
    check(set(anon_only, "userId", "12345"), ctx(), "fallback")          -- Lua: "12345"
    check(set(BENCH, "groupId", '"org_1"'), ctx(), "fast")
    check(set(BENCH, "groupId", '""'), ctx(), "fast")
    check(set(BENCH, "previousId", '"p_1"'), ctx(), "fast")
    check(set(BENCH, "groupId", "7"), ctx(), "fallback")
    check(set(BENCH, "anonymousId", '"a\\u0062c"'), ctx(), "fallback")
    check(set(BENCH, "anonymousId", "{}"), ctx(), "fallback")
  end)

  it("on camelCase/snake_case duplicates and repeated keys", function()
    check(set(BENCH, "user_id", '"other"'), ctx(), "fallback")
    check(set(BENCH, "anonymous_id", '"other"'), ctx(), "fallback")
    check(set(BENCH, "Event", '"Other"'), ctx(), "fallback")
    check(set(BENCH, "Context", "{}"), ctx(), "fallback")
    check(BENCH:sub(1, -2) .. ',"userId":"dup"}', ctx(), "fallback")
    check(BENCH:sub(1, -2) .. ',"userId":null}', ctx(), "fallback")
    check(set_ctx(BENCH, "user_agent", '"x"'), ctx(), "fallback")
    check(set_ctx(BENCH, "URL", '"x"', "page"), ctx(), "fallback")
    check(set_ctx(BENCH, "url", '"x"', "page"):gsub('"path"', '"url"', 1), ctx(), "fallback")
    -- not converted: properties keep their duplicates (cjson: the last wins)
    check(set(BENCH, "properties", '{"a":1,"a":2,"aB":3,"a_b":4}'), ctx(), "fast")
  end)

  it("on odd keys at the top level, in context and in context objects", function()
    for _, k in ipairs({ "HTTPServer", "aB1c", "already_snake", "X", "ABCDef", "a1B2C3",
                         "getHTTPResponseCode", "__x__", "", "Ünïcode", "userIDs", "IP", "x-y.z" }) do
      check(set(BENCH, k, '"v"'), ctx(), "fast")
      check(set_ctx(BENCH, k, '{"inner":1}'), ctx(), "fast")
      check(set_ctx(BENCH, k, '"v"', "page"), ctx(), "fast")
    end
    check(set(BENCH, "\\u0041b", "1"), ctx(), "fallback")      -- escaped key
    local ev = decode((core.event_json(set(BENCH, "getHTTPResponseCode", "1"), ctx())))
    assert.equal(1, ev.get_http_response_code)
    ev = decode((core.event_json(set_ctx(BENCH, "innerCamel", '"v"', "campaign"), ctx())))
    assert.equal("v", ev.context.campaign.inner_camel)
    -- objects not in CONTEXT_NESTED keep their keys
    ev = decode((core.event_json(set_ctx(BENCH, "myThing", '{"innerCamel":1}'), ctx())))
    assert.equal(1, ev.context.my_thing.innerCamel)
  end)

  it("on the dropped and refused top-level fields", function()
    for _, k in ipairs({ "partnerAttrs", "identity", "receivedAt", "received_at", "writeKey",
                         "write_key", "pipeline_key" }) do
      check(set(BENCH, k, '{"x":1}'), ctx(), "fast")
      check(set(BENCH, k, "null"), ctx(), "fast")
    end
    check(set(BENCH, "traits", '{"email":"a@b.c"}'), ctx(), "fallback")
    check(set(BENCH, "traits", "null"), ctx(), "fallback")
    check(set(BENCH, "batch", "[]"), ctx(), "fallback")
    check(set_ctx(BENCH, "traits", '{"email":"a@b.c"}'), ctx(), "fallback")
    check(set_ctx(BENCH, "traits", "null"), ctx(), "fast")
    local ev = decode((core.event_json(set(BENCH, "partnerAttrs", '{"x":1}'), ctx())))
    assert.is_nil(ev.partner_attrs)
  end)

  it("on properties and context shapes", function()
    check(set(BENCH, "properties", "{}"), ctx(), "fast")
    check(set(BENCH, "properties", "[]"), ctx(), "fallback")     -- accepted by Lua, rare
    check(set(BENCH, "properties", '"x"'), ctx(), "fallback")
    check(set(BENCH, "context", "{}"), ctx(), "fast")
    check(set(BENCH, "context", "null"), ctx(), "fast")
    check(set(BENCH, "context", "[]"), ctx(), "fallback")
    check(set(BENCH, "context", '"x"'), ctx(), "fallback")
    check(set_ctx(BENCH, "page", "[]"), ctx(), "fast")
    check(set_ctx(BENCH, "page", '"x"'), ctx(), "fast")
    check(set_ctx(BENCH, "page", "{}"), ctx(), "fast")
    check(set_ctx(BENCH, "page", "null"), ctx(), "fast")
    check(set_ctx(BENCH, "deepCamel", '{"a":{"bC":[{"dE":1}]}}', "page"), ctx(), "fast")
  end)

  it("on context.ip and userAgent for browser and server-side traffic", function()
    local variants = {}
    local no_ua = set_ctx(BENCH, "userAgent", nil)
    for _, b in ipairs({ BENCH, no_ua }) do
      variants[#variants + 1] = b
      variants[#variants + 1] = set_ctx(b, "ip", '"198.51.100.9"')
      variants[#variants + 1] = set_ctx(b, "ip", "null")
      variants[#variants + 1] = set_ctx(b, "userAgent", "null")
      variants[#variants + 1] = set(b, "context", nil)
    end
    local n = 0
    for _, b in ipairs(variants) do
      for _, ss in ipairs({ true, false }) do
        for _, ip in ipairs({ "203.0.113.7", "<nil>" }) do
          for _, ua in ipairs({ 'UA "quoted" \\ \1', "<nil>" }) do
            check(b, ctx({ server_side = ss, ip = ip, user_agent = ua }), "fast")
            n = n + 1
          end
        end
      end
    end
    assert.equal(80, n)
    local ev = decode((core.event_json(set_ctx(BENCH, "ip", '"198.51.100.9"'), ctx({ server_side = true }))))
    assert.equal("198.51.100.9", ev.context.ip)
    ev = decode((core.event_json(set_ctx(BENCH, "ip", '"198.51.100.9"'), ctx())))
    assert.equal("203.0.113.7", ev.context.ip)
  end)

  it("on the pipeline key sources", function()
    local c = ctx({ pipeline_key = "<nil>" })
    check(BENCH, c, "fallback")                                       -- none: 401
    check(BENCH, ctx({ pipeline_key = "<nil>", basic_key = "basic_k" }), "fast")
    check(BENCH, ctx({ pipeline_key = "", basic_key = "basic_k" }), "fast")
    check(set(BENCH, "pipelineKey", '"pk_body"'), c, "fast")
    check(set(BENCH, "writeKey", '"wk_body"'), c, "fast")
    check(set(set(BENCH, "pipelineKey", '""'), "writeKey", '"wk_body"'), c, "fast")
    check(set(set(BENCH, "pipelineKey", "null"), "writeKey", '"wk_body"'), c, "fast")
    check(set(set(BENCH, "pipelineKey", '"pk_body"'), "writeKey", '"wk_body"'), c, "fast")
    check(set(BENCH, "pipelineKey", '""'), ctx({ pipeline_key = "<nil>", basic_key = "b" }), "fast")
    check(set(BENCH, "write_key", '"wk_snake"'), ctx({ pipeline_key = "<nil>", basic_key = "b" }), "fast")
    check(set(BENCH, "pipelineKey", "42"), c, "fallback")              -- Lua: 401
    check(set(BENCH, "pipelineKey", '"pk\\u0031"'), c, "fallback")
    check(set(BENCH, "pipelineKey", "42"), ctx(), "fast")              -- header key: body's is dropped
    check(set(BENCH, "pipelineKey", "{}"), ctx(), "fast")
    assert.equal("pk_body", select(4, core.event_json(set(BENCH, "pipelineKey", '"pk_body"'), c)))
    assert.equal("dk_live_demo", select(4, core.event_json(set(BENCH, "pipelineKey", '"pk_body"'), ctx())))
  end)

  it("on ISO-8601 rules for timestamp, sentAt and originalTimestamp", function()
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
                  "2026-04-17T15:37:10.484ZZ", "2026-04-17T15:37:10\\u005a", "" }
    for _, field in ipairs({ "timestamp", "sentAt" }) do
      for _, t in ipairs(good) do check(set(BENCH, field, J(t)), ctx(), "fast") end
      for _, t in ipairs(bad) do check(set(BENCH, field, J(t):gsub("\\\\u", "\\u")), ctx(), "fallback") end
      check(set(BENCH, field, "1713366000"), ctx(), "fallback")
    end
    for _, t in ipairs(good) do check(set(BENCH, "originalTimestamp", J(t)), ctx(), "fast") end
    for _, t in ipairs(bad) do check(set(BENCH, "originalTimestamp", J(t)), ctx(), "fallback") end
    -- no timestamp: received_at stands in; originalTimestamp → the Lua path's skew correction
    check(set(BENCH, "timestamp", nil), ctx(), "fast")
    assert.equal("2026-04-17T15:37:10.512Z", decode((core.event_json(set(BENCH, "timestamp", nil), ctx()))).timestamp)
    check(set(set(BENCH, "timestamp", nil), "originalTimestamp", '"2026-04-17T15:37:10.000Z"'), ctx(), "fallback")
  end)

  it("formats received_at like event.iso8601 (rounding included)", function()
    for _, t in ipairs({ 0, 1, 1776440230.0004, 1776440230.0005, 1776440230.9995, 1776440230.99951,
                         1776440230.999999, 951782400.5, 4102444799.9996, 1234567890.1235 }) do
      local ev_json = core.event_json(BENCH, ctx({ received_at = t }))
      assert.equal(event.iso8601(t), decode(ev_json).received_at)
      check(BENCH, ctx({ received_at = t }), "fast")
    end
    check(BENCH, ctx({ received_at = "2026-04-17T15:37:10.512Z" }), "fallback")
    check(BENCH, ctx({ received_at = -1 }), "fallback")
    check(BENCH, ctx({ received_at = 0 / 0 }), "fallback")
  end)

  it("on nesting depth 31, 32 and 33", function()
    local taken = {}
    for depth = 30, 34 do
      -- top-level object (1) → properties (2) → depth - 2 arrays
      local inner = string.rep("[", depth - 2) .. "1" .. string.rep("]", depth - 2)
      local body = set(BENCH, "properties", '{"d":' .. inner .. "}")
      taken[depth] = check(body, ctx())
      local inner_obj = string.rep('{"k":', depth - 2) .. "1" .. string.rep("}", depth - 2)
      check(set(BENCH, "properties", '{"d":' .. inner_obj .. "}"), ctx())
      -- context (2) → page (3) → depth - 3 arrays
      local ci = string.rep("[", depth - 3) .. "1" .. string.rep("]", depth - 3)
      check(set_ctx(BENCH, "deep", ci, "page"), ctx())
    end
    assert.equal("fast", taken[31])
    assert.equal("fast", taken[32])
    assert.equal("fallback", taken[33])
    assert.is_nil(lua_path(set(BENCH, "properties", '{"d":' .. string.rep("[", 31) .. string.rep("]", 31) .. "}"), ctx()))
  end)

  it("on number spellings", function()
    local fast = { "-0", "0", "1.5e3", "1E+2", "0.1234567890123456789", "12345678901234567890", "1e-999",
                   "-1.5E-3", "123456789012345678901234567890e-20", "0.0000001e300", "1e307", "9.99e307" }
    local fallback = { "1e999", "-1e999", "2e308", "1.7976931348623157e308", "1000e306", "01", "-01", "1.",
                       "-.5", ".5", "+1", "0x10", "NaN", "Infinity", "-", "1e", "1e+", "--1", "1.5.3" }
    for _, n in ipairs(fast) do
      check(set(BENCH, "properties", '{"n":' .. n .. ',"a":[' .. n .. "]}"), ctx(), "fast")
      check(set_ctx(BENCH, "width", n, "screen"), ctx(), "fast")
    end
    for _, n in ipairs(fallback) do
      check(set(BENCH, "properties", '{"n":' .. n .. "}"), ctx(), "fallback")
      check(set(BENCH, "custom", n), ctx(), "fallback")
    end
    assert.is_nil(lua_path(set(BENCH, "properties", '{"n":1e999}'), ctx()))   -- inf: cjson cannot encode it
  end)

  it("on string escapes, unicode and raw bytes", function()
    local fast = { [["caf\u00e9 \ud83d\ude00 \"q\" \\ \/ \b\f\n\r\t"]], [["\u0000"]], '"café 😀"',
                   '"\255\254 not utf-8"', [["\u00E9\uD83D\uDE00"]], '"\127"' }
    local fallback = { [["\ud83d"]], [["\ude00"]], [["\ud83d\u0041"]], [["\ud83dx"]], [["\x"]],
                       [["\u12"]], [["\u12G4"]], [["\u12g4"]], '"tab\there"', '"nl\nhere"', '"nul\0here"', [["\]] }
    for _, s in ipairs(fast) do
      check(set(BENCH, "properties", '{"s":' .. s .. "}"), ctx(), "fast")
      check(set_ctx(BENCH, "title", s, "page"), ctx(), "fast")
      check(set(BENCH, "customField", s), ctx(), "fast")
    end
    for _, s in ipairs(fallback) do
      check(set(BENCH, "properties", '{"s":' .. s .. "}"), ctx(), "fallback")
    end
    -- escapes where normalize compares the value: left to the Lua path
    check(set(BENCH, "event", [["Product\u0020Added"]]), ctx(), "fallback")
    check(set(set(BENCH, "type", '"page"'), "name", [["caf\u00e9"]]), ctx(), "fallback")
  end)

  it("on invalid JSON: truncations, trailing garbage, trailing commas", function()
    for i = 0, #BENCH - 1, 7 do check(BENCH:sub(1, i), ctx(), "fallback") end
    for _, b in ipairs({ BENCH .. "x", BENCH .. "}", BENCH .. ",", BENCH .. "\0", BENCH .. BENCH,
                         BENCH:sub(1, -2) .. ",}", set(BENCH, "properties", '{"a":1,}'),
                         set(BENCH, "properties", '{"a":[1,2,]}'), set(BENCH, "properties", '{"a" 1}'),
                         set(BENCH, "properties", '{"a":1 "b":2}'), set(BENCH, "properties", "{,}"),
                         set(BENCH, "properties", '{"a":tru}'), set(BENCH, "properties", '{"a":nul}'),
                         "\239\187\191" .. BENCH, "[" .. BENCH .. "]", "", "null", "42", '"str"', "{}", "[]",
                         "{'type':'track'}", BENCH:gsub('"type"', "type", 1) }) do
      check(b, ctx(), "fallback")
    end
    -- whitespace is fine anywhere JSON allows it, including a trailing newline
    check(BENCH .. "\n", ctx(), "fast")
    check(spaced(BENCH), ctx(), "fast")
  end)

  it("on bodies over the fast path's size bound", function()
    local big = set(BENCH, "properties", '{"blob":"' .. string.rep("x", 70 * 1024) .. '"}')
    check(big, ctx(), "fallback")
    local ok_size = set(BENCH, "properties", '{"blob":"' .. string.rep("x", 30 * 1024) .. '"}')
    check(ok_size, ctx(), "fast")
  end)

  it("on many members (past the per-object key table) and long keys", function()
    local body = BENCH
    for i = 1, 60 do body = set(body, "extraField" .. i, tostring(i)) end
    check(body, ctx(), "fallback")
    body = BENCH
    for i = 1, 40 do body = set(body, "extraField" .. i, tostring(i)) end
    check(body, ctx(), "fast")
    check(set(BENCH, string.rep("aB", 60), "1"), ctx(), "fast")
    check(set(BENCH, string.rep("aB", 70), "1"), ctx(), "fallback")
  end)

  it("on random byte-level mutations of the benchmark event", function()
    local seed = 12345
    local function rnd(n)   -- small LCG: the same corpus on every run
      seed = (seed * 1103515245 + 12345) % 2147483648
      return seed % n + 1
    end
    local alphabet = '{}[]":,\\ \t\n0123456789-+.eEabcdfnrtuxyzABCZ_\0\31\127\200'
    local n_fast, n_lua_ok = 0, 0
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
      local kind, l = check(b, ctx())
      if kind == "fast" then n_fast = n_fast + 1 end
      if l then n_lua_ok = n_lua_ok + 1 end
    end
    -- the corpus exercises both outcomes
    assert(n_fast > 100, "only " .. n_fast .. " mutations took the fast path")
    assert(n_lua_ok > n_fast, "some mutations must be Lua-only")
  end)
end)

describe("core.event_json arguments", function()
  it("raises on a non-string body or a missing ctx, like other primitives", function()
    assert.has_error(function() core.event_json(nil, ctx()) end)
    assert.has_error(function() core.event_json(BENCH) end)
  end)

  it("falls back on ctx values of unexpected types", function()
    check(BENCH, ctx({ ip = 42 }), "fallback")
    check(BENCH, ctx({ canonical_id = 42 }), "fallback")
    assert.is_nil(core.event_json(BENCH, ctx({ type_hint = true })))   -- normalize would raise
    check(BENCH, ctx({ sent_at = "2026-04-17T15:37:10.684Z" }), "fallback")   -- batches only
    assert(stats.fast > 0 and stats.fallback > 0)
  end)
end)
