-- tools/collect-diff.lua — the C collector's conversion (core.collect.convert)
-- against the Lua collector it replaced, on a large randomized corpus.
--
--   luajit tools/collect-diff.lua [N] [SEED]      (after `make`; from the repository root)
--
-- The oracle is the Lua code as it was at ORACLE (git show): signal.event
-- normalize, identity.linking_keys and collector.lua's request handling
-- (decode → shape → pipeline key → batch → per message: stored input, size,
-- normalize, encode), run under the same cjson settings. Each body of the
-- corpus goes through both; they must give the same refusal (status, code,
-- message, details) or the same stored messages (ev and in equal after
-- decoding, numbers within 1e-12, the same message id and dedupe flag, the
-- same linking keys). The corpus: random messages, batches and /v1/events
-- bodies built from the fields the rules look at (valid and invalid values,
-- both spellings of a name, escapes, odd numbers, nesting), random byte
-- edits of valid bodies (the decoder's messages), and the event fixtures of
-- spec/fixtures/events. Prints counts and the first differences; exits 1 on
-- any difference that is not one of the deliberate ones (DELIBERATE below).
local ORACLE = "937e3d3"

package.path = "lua/?.lua;" .. package.path
package.cpath = "build/lua/?.so;" .. package.cpath
local core = require "signal.core"
local cjson_safe = require "cjson.safe"
local null = core.null

local N = tonumber(arg[1]) or 20000
local SEED = tonumber(arg[2]) or 20261206

---------------------------------------------------------------------------
-- the oracle

local function git_module(path, name)
  local f = assert(io.popen("git show " .. ORACLE .. ":" .. path))
  local src = f:read("*a")
  f:close()
  assert(#src > 0, "cannot read " .. path .. " at " .. ORACLE)
  return assert(load(src, "@" .. ORACLE .. ":" .. path))(name)
end

local event = git_module("lua/signal/event.lua", "signal.event")
local identity = git_module("lua/signal/identity.lua", "signal.identity")

local decoder = cjson_safe.new()
decoder.decode_max_depth(32)
decoder.decode_invalid_numbers(false)
local decode = decoder.decode
local encoder = cjson_safe.new()
encoder.encode_number_precision(14)
local encode = encoder.encode

local MAX_MESSAGE = 32 * 1024
local KEY_HELP = 'send it in the X-Pipeline-Key header, as "pipelineKey" or "writeKey" in the JSON body,'
  .. " or as the HTTP Basic username (Authorization: Basic base64(key + \":\"))"
local CREDENTIALS = { "writeKey", "pipelineKey", "write_key", "pipeline_key" }

local function kb(n) return string.format("%d KB (%d bytes)", n / 1024, n) end

local function refuse(status, code, message, details)
  return { status = status, code = code, message = message, details = details }
end

local function has_credentials(m)
  return m.writeKey ~= nil or m.pipelineKey ~= nil or m.write_key ~= nil or m.pipeline_key ~= nil
end

local function input_json(m)
  for i = 1, #CREDENTIALS do m[CREDENTIALS[i]] = nil end
  return encode(m)
end

local function client_message_id(m)
  local v = m.messageId
  if v == nil or v == null then v = m.message_id end
  return (type(v) == "string" and v ~= "") or type(v) == "number"
end

local function merge_context(batch_ctx, m)
  local c = m.context
  if c == nil or c == null then
    m.context = batch_ctx
  elseif type(c) == "table" then
    local merged = {}
    for k, v in pairs(batch_ctx) do merged[k] = v end
    for k, v in pairs(c) do merged[k] = v end
    m.context = merged
  end
end

local function acceptable_type(ct)
  if ct == nil or ct == "" then return true end
  ct = ct:lower()
  return ct:find("json", 1, true) ~= nil or ct:find("^%s*text/plain") ~= nil
end

local function stored(ev, ev_json, in_json, dedupe)
  return { ev = ev_json, ["in"] = in_json, message_id = ev.message_id, dedupe = dedupe,
           canonical_id = ev.canonical_id, link = identity.linking_keys(ev) }
end

-- collector.lua handle(), from the body on
local function oracle(body, o)
  local pk = o.header_key
  if pk == "" then pk = nil end
  local known = {}
  for _, k in ipairs(o.pipelines) do known[k] = true end
  if pk and not known[pk] then
    return refuse(401, "INVALID_PIPELINE_KEY", "the pipeline key in the X-Pipeline-Key header is not configured"
                  .. " on this collector; " .. KEY_HELP)
  end
  local doc, derr = decode(body)
  if doc == nil then
    if body == "" then derr = "the body is empty" end
    if not acceptable_type(o.content_type) then
      derr = derr .. " (Content-Type is " .. o.content_type .. "; send JSON as application/json or text/plain)"
    end
    return refuse(400, "INVALID_JSON", "body is not valid JSON: " .. tostring(derr))
  end
  local kind = o.kind
  if type(doc) ~= "table" or (next(doc) ~= nil and doc[1] ~= nil) then
    if kind == "batch" then return refuse(400, "INVALID_BATCH", 'body must be a JSON object {"batch": […]}') end
    return refuse(400, "INVALID_EVENT", kind == "events" and 'body must be a JSON object: one event, or {"batch": […]}'
                  or "body must be a JSON object: one event")
  end
  if not pk then
    pk = doc.pipelineKey
    if pk == nil or pk == null or pk == "" then pk = doc.writeKey end
    if pk == nil or pk == null or pk == "" then pk = o.basic_key end
    if pk == nil or pk == null or pk == "" then
      return refuse(401, "INVALID_PIPELINE_KEY", "missing pipeline key: " .. KEY_HELP)
    end
    if not (type(pk) == "string" and known[pk]) then
      return refuse(401, "INVALID_PIPELINE_KEY",
                    "unknown pipeline key: the key given is not configured on this collector; " .. KEY_HELP)
    end
  end
  local list = doc.batch
  local batched = kind == "batch" or (kind == "events" and list ~= nil)
  if batched then
    if type(list) ~= "table" or (next(list) ~= nil and list[1] == nil) then
      return refuse(400, "INVALID_BATCH", '"batch" must be an array of messages')
    end
    if list[1] == nil then return refuse(400, "INVALID_BATCH", '"batch" is empty') end
  end
  local n = batched and #list or 1
  local sent_at = batched and doc.sentAt or nil
  if sent_at == null then sent_at = nil end
  local nctx = { pipeline_key = pk, canonical_id = (not o.server_side) and o.canonical_id or nil, ip = o.ip,
                 user_agent = o.user_agent, received_at = o.received_at, type_hint = o.type_hint,
                 server_side = o.server_side, sent_at = sent_at }
  if not batched then
    local in_json, ierr = body, nil
    if has_credentials(doc) then in_json, ierr = input_json(doc) end
    if in_json == nil then
      return refuse(400, "INVALID_EVENT", "invalid event: it cannot be stored as JSON: " .. tostring(ierr))
    end
    if #in_json > MAX_MESSAGE then
      return refuse(413, "PAYLOAD_TOO_LARGE", "the event is " .. #in_json .. " bytes; the limit is "
                    .. kb(MAX_MESSAGE) .. " per message")
    end
    local dedupe = client_message_id(doc)
    local ev, errs = event.normalize(doc, nctx)
    if ev == nil then
      local details = {}
      for i = 1, #errs do details[i] = { reason = errs[i] } end
      return refuse(400, "INVALID_EVENT", "invalid event: " .. table.concat(errs, "; "), details)
    end
    local ev_json, eerr = encode(ev)
    if ev_json == nil then return refuse(400, "INVALID_EVENT", "invalid event: " .. tostring(eerr)) end
    return { status = 200, events = { stored(ev, ev_json, in_json, dedupe) }, n = 1 }
  end
  local batch_ctx = doc.context
  if type(batch_ctx) ~= "table" or next(batch_ctx) == nil then batch_ctx = nil end
  local bad, big, out = nil, nil, {}
  for i = 1, n do
    local m = list[i]
    if type(m) ~= "table" or (next(m) ~= nil and m[1] ~= nil) then
      bad = bad or {}
      bad[#bad + 1] = { index = i - 1, reason = "message must be a JSON object" }
    else
      local in_json, ierr = input_json(m)
      if in_json == nil then
        bad = bad or {}
        bad[#bad + 1] = { index = i - 1, reason = "message cannot be stored as JSON: " .. tostring(ierr) }
      elseif #in_json > MAX_MESSAGE then
        big = big or {}
        big[#big + 1] = { index = i - 1, reason = "message is " .. #in_json .. " bytes; the limit is " .. kb(MAX_MESSAGE) }
      elseif big == nil then
        local dedupe = client_message_id(m)
        if batch_ctx then merge_context(batch_ctx, m) end
        local ev, errs = event.normalize(m, nctx)
        local ev_json, eerr
        if ev then
          ev_json, eerr = encode(ev)
          if ev_json == nil then errs = { tostring(eerr) } end
        end
        if ev_json == nil then
          bad = bad or {}
          bad[#bad + 1] = { index = i - 1, reason = table.concat(errs, "; "), reasons = errs }
        elseif bad == nil then
          out[#out + 1] = stored(ev, ev_json, in_json, dedupe)
        end
      end
    end
  end
  if big then
    local idx = {}
    for i = 1, #big do idx[i] = big[i].index end
    return refuse(413, "PAYLOAD_TOO_LARGE", "message" .. (#big > 1 and "s " or " ") .. table.concat(idx, ", ")
                  .. " of the batch " .. (#big > 1 and "are" or "is") .. " over the limit of " .. kb(MAX_MESSAGE)
                  .. " per message; nothing was accepted", big)
  end
  if bad then
    local idx = {}
    for i = 1, #bad do idx[i] = bad[i].index end
    return refuse(400, "INVALID_BATCH", #bad .. " of " .. n .. " messages are invalid (index "
                  .. table.concat(idx, ", ") .. "); the batch is atomic, nothing was accepted", bad)
  end
  return { status = 200, events = out, n = n }
end

---------------------------------------------------------------------------
-- comparing

local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

-- DELIBERATE: the differences that are improvements, documented in
-- docs/collector.md. Each is counted, not failed:
--   digits   a number id or name written as an integer with more digits
--            than a double holds keeps them ("1234567890123456789"), where
--            the Lua collector wrote tostring()'s "1.2345678901235e+18"
--   array traits   identify with traits a non-empty array and context.traits
--            an object: traits stay the array, where the Lua collector
--            merged the two into an object with keys "1", "2", …
local deliberate = {}
local hit

local function same(a, b, path)
  path = path or "$"
  if type(a) == "number" and type(b) == "number" then
    if a == b or (a ~= a and b ~= b) or math.abs(a - b) <= 1e-12 * math.max(math.abs(a), math.abs(b)) then
      return true
    end
    return false, path .. ": " .. tostring(a) .. " ~= " .. tostring(b)
  end
  if type(a) ~= type(b) then return false, path .. ": " .. type(a) .. " ~= " .. type(b) end
  if type(a) ~= "table" then
    if a == b then return true end
    if type(a) == "string" and type(b) == "string" and a:find("^%-?%d+$") and tonumber(a)
        and string.format("%.14g", tonumber(a)) == b then
      hit = "digits"
      return true
    end
    return false, path .. ": " .. tostring(a) .. " ~= " .. tostring(b)
  end
  for k, v in pairs(a) do
    local ok, why = same(v, b[k], path .. "." .. tostring(k))
    if not ok then return false, why end
  end
  for k in pairs(b) do
    if a[k] == nil then return false, path .. "." .. tostring(k) .. ": missing on the left" end
  end
  return true
end

-- c, l: the results of core.collect.convert and of the oracle → nil, or why they differ
local function differ(c, l)
  if c.status ~= l.status then
    return "status " .. c.status .. " ~= " .. l.status .. " (C: " .. tostring(c.body) .. " | Lua: "
      .. tostring(l.message) .. ")"
  end
  if c.status ~= 200 then
    local err = assert(decode(c.body), c.body).error
    if err.code ~= l.code then return "code " .. err.code .. " ~= " .. l.code end
    if err.message ~= l.message then return "message:\n  C:   " .. err.message .. "\n  Lua: " .. l.message end
    local ok, why = same(err.details, l.details, "details")
    if not ok then return why end
    return nil
  end
  if #c.events ~= #l.events then return "events " .. #c.events .. " ~= " .. #l.events end
  for i, ce in ipairs(c.events) do
    local le = l.events[i]
    local cev, lev = decode(ce.ev), decode(le.ev)
    if not cev then return "event " .. i .. " is not JSON: " .. ce.ev end
    -- ids made up on both sides
    if type(cev.message_id) == "string" and type(lev.message_id) == "string" and cev.message_id:find(UUID)
        and lev.message_id:find(UUID) and cev.message_id ~= lev.message_id then
      cev.message_id, lev.message_id = "<uuid>", "<uuid>"
    end
    local lct = type(lev.context) == "table" and lev.context.traits
    if type(lev.traits) == "table" and lev.traits["1"] ~= nil
        and ((type(cev.traits) == "table" and cev.traits[1] ~= nil) or (type(lct) == "table" and lct[1] ~= nil)) then
      hit = "array traits"
      cev.traits, lev.traits = nil, nil
    end
    local ok, why = same(cev, lev, "ev[" .. i .. "]")
    if not ok then return why .. "\n  C:   " .. ce.ev .. "\n  Lua: " .. le.ev end
    ok, why = same(decode(ce["in"]), decode(le["in"]), "in[" .. i .. "]")
    if not ok then return why .. "\n  C:   " .. ce["in"] .. "\n  Lua: " .. le["in"] end
    if ce.dedupe ~= le.dedupe then return "dedupe of " .. i end
    if le.dedupe and not same(ce.message_id, le.message_id) then return "message id of " .. i end
    if not same(ce.canonical_id, le.canonical_id) then return "canonical_id of " .. i end
    ok, why = same(ce.link, le.link, "link[" .. i .. "]")
    if not ok then return why end
  end
  return nil
end

---------------------------------------------------------------------------
-- the corpus

math.randomseed(SEED)
local rnd = math.random
local function pick(t) return t[rnd(#t)] end
local function chance(p) return rnd() < p end

local function jstr(s)   -- a JSON string, sometimes with escapes where none are needed
  local out = encode(s)
  if chance(0.1) then
    out = out:gsub("[a-z]", function(c) if chance(0.2) then return string.format("\\u%04x", c:byte()) end end)
  end
  return out
end

local TYPES = { "track", "page", "screen", "identify", "group", "alias" }
local TIMES = { "2026-04-17T15:37:10.484Z", "2026-04-17T15:37:10Z", "2026-04-17T17:00:00+02:00",
                "2024-02-29T00:00:00.123456789-05:30", "2026-04-17 15:37:10", "yesterday", "2023-02-29T00:00:00Z",
                "2026-04-17T15:37:60Z", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z", "2026-13-01T00:00:00Z" }
local NUMBERS = { "0", "-0", "42", "12345", "1.5", "-2.25e3", "1e3", "12345678901234", "123456789012345",
                  "1234567890123456789", "1e15", "1e20", "0.1", "1.", "-.5", "1e999", "-1e999", "1E+2", "1e-999" }

local function scalar()
  local r = rnd(9)
  if r == 1 then return pick(NUMBERS) end
  if r == 2 then return pick({ "true", "false", "null" }) end
  if r == 3 then return '""' end
  if r == 4 then return jstr(pick({ " ", "  ", "\t", "x y", "é", "a/b", 'q"q', "b\\s" })) end
  if r == 5 then return "{}" end
  if r == 6 then return "[]" end
  if r == 7 then return '"\\u0000z"' end
  return jstr("v" .. rnd(100))
end

local function value(depth)
  if depth > 3 or chance(0.55) then return scalar() end
  if chance(0.5) then
    local items = {}
    for i = 1, rnd(0, 3) do items[i] = value(depth + 1) end
    return "[" .. table.concat(items, ",") .. "]"
  end
  local m = {}
  for i = 1, rnd(0, 4) do
    m[i] = jstr(pick({ "a", "b", "camelKey", "snake_key", "Upper", "email", "phone", "userId", "user_id", "x" }))
      .. ":" .. value(depth + 1)
  end
  return "{" .. table.concat(m, ",") .. "}"
end

local function obj(members) return "{" .. table.concat(members, ",") .. "}" end
local function objval()
  local m = {}
  for i = 1, rnd(0, 4) do
    m[i] = jstr(pick({ "a", "camelKey", "snake_key", "email", "phone", "userId", "user_id", "price", "x" }))
      .. ":" .. value(2)
  end
  return "{" .. table.concat(m, ",") .. "}"
end
local function member(k, v) return jstr(k) .. ":" .. v end

local NESTED_KEYS = { "url", "path", "referrer", "pageTitle", "page_title", "adTrackingEnabled", "id", "HTTPServer" }

local function context()
  if chance(0.08) then return pick({ "null", '"ctx"', "5", "[]", "[1,2]" }) end
  local m = {}
  if chance(0.6) then
    local p = {}
    for i = 1, rnd(0, 4) do p[i] = member(pick(NESTED_KEYS), value(3)) end
    m[#m + 1] = member(pick({ "page", "campaign", "screen", "library", "session", "device", "os", "geo",
                              "vendorIds", "vendor_ids" }), chance(0.9) and obj(p) or value(3))
  end
  if chance(0.4) then m[#m + 1] = member(pick({ "userAgent", "user_agent" }), chance(0.8) and jstr("UA/" .. rnd(9)) or scalar()) end
  if chance(0.4) then m[#m + 1] = member("ip", chance(0.8) and jstr("198.51.100." .. rnd(200)) or scalar()) end
  if chance(0.3) then m[#m + 1] = member("locale", jstr("en-US")) end
  if chance(0.3) then
    local t = {}
    for i = 1, rnd(0, 3) do
      t[i] = member(pick({ "email", "phone", "user_id", "userId", "plan" }),
                    chance(0.7) and jstr(pick({ "a@x.com", "+1 555", "u-9", " ", "" })) or scalar())
    end
    m[#m + 1] = member(pick({ "traits", "traits", "Traits" }), chance(0.9) and obj(t) or value(2))
  end
  if chance(0.3) then m[#m + 1] = member("consent", value(2)) end
  if chance(0.2) then m[#m + 1] = member(pick({ "customThing", "other_thing" }), value(2)) end
  return obj(m)
end

local function id_value()
  local r = rnd(10)
  if r <= 5 then return jstr(pick({ "u-1", "anon-2", "c@d", "x" .. rnd(999) })) end
  if r == 6 then return '""' end
  if r == 7 then return pick(NUMBERS) end
  return scalar()
end

-- one message: fields chosen at random, each valid or not; a "clean"
-- message is valid but for the odd field (most of the corpus is stored)
local function message(opts)
  local m = {}
  local function add(k, v) m[#m + 1] = member(k, v) end
  if chance(0.75) then
    local t = pick(TYPES)
    add("type", jstr(t))
    add(pick({ "anonymousId", "userId", "anonymous_id" }), chance(0.95) and jstr("a-" .. rnd(99)) or pick(NUMBERS))
    if t == "track" or chance(0.2) then add("event", jstr(pick({ "Order Completed", "Signed Up", "Product Viewed" }))) end
    if t == "group" then add("groupId", id_value()) end
    if t == "alias" then add("previousId", id_value()) end
    if chance(0.7) then add("messageId", jstr("m-" .. rnd(1e6))) end
    if chance(0.5) then add("properties", chance(0.9) and objval() or value(1)) end
    if chance(0.3) then add("traits", chance(0.9) and objval() or value(1)) end
    if chance(0.7) then add("context", context()) end
    for _, f in ipairs({ "timestamp", "sentAt", "originalTimestamp" }) do
      if chance(0.2) then add(f, jstr(pick(TIMES))) end
    end
    if chance(0.2) then add(pick({ "writeKey", "pipelineKey" }), jstr(pick(opts.keys))) end
    if chance(0.2) then add(pick({ "integrations", "customField", "_metadata", "HTTPCode", "userId" }), value(1)) end
    for i = #m, 2, -1 do local j = rnd(i); m[i], m[j] = m[j], m[i] end
    return obj(m)
  end
  if chance(0.8) then add("type", chance(0.9) and jstr(pick(TYPES)) or scalar()) end
  if chance(0.7) then add("event", chance(0.85) and jstr(pick({ "Order Completed", "Signed Up", " " })) or scalar()) end
  if chance(0.3) then add("name", chance(0.7) and jstr("Home") or scalar()) end
  for _, f in ipairs({ { "userId", "user_id" }, { "anonymousId", "anonymous_id" }, { "groupId", "group_id" },
                       { "previousId", "previous_id" }, { "canonicalId", "canonical_id" } }) do
    if chance(f[1] == "anonymousId" and 0.6 or 0.25) then add(chance(0.8) and f[1] or f[2], id_value()) end
    if chance(0.05) then add(f[2], id_value()) end    -- both spellings
  end
  if chance(0.6) then add(chance(0.9) and "messageId" or "message_id", chance(0.8) and jstr("m-" .. rnd(1e6)) or id_value()) end
  for _, f in ipairs({ "timestamp", "sentAt", "originalTimestamp" }) do
    if chance(0.25) then add(f, chance(0.85) and jstr(pick(TIMES)) or scalar()) end
  end
  if chance(0.5) then add("properties", chance(0.9) and value(1) or scalar()) end
  if chance(0.3) then add("traits", chance(0.85) and value(1) or scalar()) end
  if chance(0.7) then add("context", context()) end
  if chance(0.15) then add(pick({ "writeKey", "pipelineKey", "write_key", "pipeline_key" }),
                           chance(0.7) and jstr(pick(opts.keys)) or scalar()) end
  if chance(0.1) then add(pick({ "partnerAttrs", "identity", "receivedAt", "partner_attrs" }), value(2)) end
  if chance(0.2) then add(pick({ "integrations", "customField", "_metadata", "channel", "HTTPCode" }), value(1)) end
  if chance(0.02) then add("userId", "null") end
  -- shuffle
  for i = #m, 2, -1 do local j = rnd(i); m[i], m[j] = m[j], m[i] end
  return obj(m)
end

local function body_of(kind, keys)
  if kind == "single" or (kind == "events" and chance(0.5)) then return message({ keys = keys }) end
  local b = {}
  local list = {}
  for i = 1, rnd(1, 5) do
    list[i] = chance(0.95) and message({ keys = keys }) or pick({ "5", '"x"', "[]", "[1]", "null", "{}" })
  end
  b[#b + 1] = member("batch", chance(0.97) and "[" .. table.concat(list, ",") .. "]" or scalar())
  if chance(0.4) then b[#b + 1] = member("context", context()) end
  if chance(0.3) then b[#b + 1] = member("sentAt", chance(0.8) and jstr(pick(TIMES)) or scalar()) end
  if chance(0.6) then b[#b + 1] = member(pick({ "writeKey", "pipelineKey" }), jstr(pick(keys))) end
  return obj(b)
end

local function spaced(s)   -- JSON whitespace around structure, outside strings
  local out, instr, esc = {}, false, false
  for i = 1, #s do
    local ch = s:sub(i, i)
    if instr then
      if esc then esc = false elseif ch == "\\" then esc = true elseif ch == '"' then instr = false end
    elseif ch == '"' then instr = true
    elseif ch:find("[{}%[%],:]") and chance(0.3) then ch = pick({ " ", "\n", "\t", "\r\n" }) .. ch .. " " end
    out[#out + 1] = ch
  end
  return table.concat(out)
end

local function mutate(s)
  local alphabet = '{}[]":,\\ \t\n0123456789-+.eEabcdfnrtuxyzABCZ_\0\31\127\200'
  for _ = 1, rnd(3) do
    local pos, i = rnd(#s), rnd(#alphabet)
    local ch, op = alphabet:sub(i, i), rnd(3)
    if op == 1 then s = s:sub(1, pos - 1) .. ch .. s:sub(pos + 1)
    elseif op == 2 then s = s:sub(1, pos - 1) .. s:sub(pos + 1)
    else s = s:sub(1, pos - 1) .. ch .. s:sub(pos) end
  end
  return s
end

local function request(kind)
  local keys = { "dk_a", "dk_b" }
  local o = { kind = kind, pipelines = keys, received_at = 1776440230.5124 + rnd(0, 1000) / 7,
              server_side = chance(0.3), ip = chance(0.9) and ("203.0.113." .. rnd(200)) or nil,
              user_agent = chance(0.8) and 'Mozilla/5.0 "x" \\' or nil,
              content_type = pick({ nil, "application/json", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded" }) }
  if kind == "single" then o.type_hint = chance(0.8) and pick(TYPES) or nil end
  if chance(0.75) then o.header_key = pick({ "dk_a", "dk_b", "dk_a", "dk_b", "dk_a", "dk_b", "dk_nope", "" }) end
  if chance(0.3) then o.basic_key = pick({ "dk_b", "dk_b", "dk_zz" }) end
  if not o.server_side and chance(0.85) then o.canonical_id = "dfid_" .. string.format("%032x", rnd(1e9)) end
  return o
end

---------------------------------------------------------------------------
-- the run

local ran, agreed, failures, kinds, messages = 0, 0, {}, {}, 0
local function run(body, o, what)
  local ok, l = pcall(oracle, body, o)
  if not ok then return end                  -- the oracle raised (it never did in the collector: pcall'd cjson)
  local c = core.collect.convert(body, o)
  ran = ran + 1
  messages = messages + (l.events and #l.events or 0)
  local key = l.status .. (l.code and (" " .. l.code) or "")
  kinds[key] = (kinds[key] or 0) + 1
  hit = nil
  local why = differ(c, l)
  if why then
    failures[#failures + 1] = what .. ": " .. why .. "\n  body: " .. body:sub(1, 3000)
  elseif hit then
    deliberate[hit] = (deliberate[hit] or 0) + 1
  else
    agreed = agreed + 1
  end
end

for i = 1, N do
  local kind = pick({ "single", "single", "batch", "events" })
  local o = request(kind)
  local body = body_of(kind, { "dk_a", "dk_b", "dk_a", "dk_b", "dk_unknown" })
  if chance(0.2) then body = spaced(body) end
  run(body, o, "random " .. i)
  if chance(0.15) then run(mutate(body), o, "mutated " .. i) end
end

-- the event fixtures, as a server sends a canonical event (and camelCase forms)
local function loadfixture(name)
  local visitor = assert(loadfile("spec/fixtures/events/_visitor.lua"))
  return assert(loadfile("spec/fixtures/events/" .. name .. ".lua"))(visitor())
end
for _, name in ipairs({ "retail", "travel", "finance", "b2b_saas", "media", "gaming", "publishing", "page" }) do
  local ev = loadfixture(name)
  for _, ss in ipairs({ true, false }) do
    run(encode(ev), { kind = "events", pipelines = { "dk_a" }, header_key = "dk_a", received_at = 1776440230.5,
                      server_side = ss, ip = "203.0.113.7", canonical_id = not ss and "dfid_fixture" or nil },
        "fixture " .. name)
  end
end

local order = {}
for k in pairs(kinds) do order[#order + 1] = k end
table.sort(order)
local ndel = 0
for _, v in pairs(deliberate) do ndel = ndel + v end
print(string.format("corpus: %d bodies (seed %d): %d agree, %d differ deliberately, %d differ",
                    ran, SEED, agreed, ndel, #failures))
print(string.format("stored messages compared: %d", messages))
print("bodies by the oracle's answer:")
for _, k in ipairs(order) do print(string.format("  %-40s %d", k, kinds[k])) end
for k, v in pairs(deliberate) do print(string.format("deliberate (%s): %d", k, v)) end
for i = 1, math.min(#failures, 15) do print("\n" .. failures[i]) end
os.exit(#failures == 0 and 0 or 1)
