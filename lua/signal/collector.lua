-- signal/collector.lua — the event API (DESIGN §2): every way an event enters
-- Signal, and the promise behind its 200: the event is in the pipeline's raw
-- stream in Redis.
--
--   POST /v1/t /v1/p /v1/i /v1/g /v1/s /v1/a          datafly.js, analytics.js (one event)
--   POST /v1/track /v1/page /v1/screen /v1/identify /v1/group /v1/alias
--                                                      Segment HTTP Tracking API (server SDKs)
--   POST /v1/batch /v1/b                               {"batch":[…], context?, sentAt?, writeKey?}
--   POST /v1/events                                    server-side: one event or {"batch":[…]}
--   OPTIONS on each of them                            CORS preflight (signal.cors)
--
-- One request costs: one JSON decode, event.normalize and one JSON encode per
-- event (two in a batch or when the body carries its key: the input message
-- is stored too, minus credentials) — or, for a plain single event, one pass
-- of core.event_json in C — and its storage: messageIds seen in the last
-- cfg.dedupe_ttl_s are dropped, the rest XADDed to signal:{pk}:raw,
-- identify traits remembered for stitching. Standalone, and for batches
-- over CHUNK messages, that is SCRIPT below (one MULTI/EXEC of several
-- scripts for a big batch, still one round trip); in the engine otherwise,
-- the group commit below.
--
-- Group commit (inside the engine, requests of up to CHUNK messages): the
-- requests of one pipeline handled in the same event-loop turn are stored
-- together, each waiting (suspended) for its slice of the answer. Without a
-- script: one HMGET of their messageIds per dedupe window (the current and
-- the previous one, see dedupe_window), then one MULTI/EXEC with an XADD
-- (+ identity stitching) per new message and one HSET of the new ids into
-- the current window.
-- A Redis script costs several times the commands in it (its arguments are
-- copied into Redis's Lua, whose GC then owns kilobytes per event), so this
-- is what keeps Redis off the critical path under load. What the script
-- closes and this leaves open: two copies of one messageId in flight at the
-- same moment on different workers may both be stored (neither had been
-- accepted when the other was checked; copies within one batch are caught).
-- Nothing can be lost: the XADDs and their markers commit together or not
-- at all.
--
-- Raw stream entry (signal:{pk}:raw, no MAXLEN — see docs/collector.md):
--   ev  the canonical event JSON (lua/signal/README.md)
--   in  the input message JSON as received, minus writeKey/pipelineKey
--
-- Answers: 200 {"success":true} once stored (duplicates too: acknowledged,
-- not enqueued again); 400 INVALID_JSON / INVALID_EVENT / INVALID_BATCH (a
-- batch is atomic: every bad index listed, nothing stored); 401
-- INVALID_PIPELINE_KEY; 413 PAYLOAD_TOO_LARGE; 415 UNSUPPORTED_MEDIA_TYPE (an
-- unknown Content-Encoding); 503 REDIS_UNAVAILABLE (never a 200 that was not
-- stored: clients retry).

local core = require "signal.core"
local cjson_safe = require "cjson.safe"
local event = require "signal.pipeline.event"
local queue = require "signal.redis.keys"
local cors = require "signal.cors"
local identity = require "signal.identity"
local log = require "signal.observe.log"
local metrics = require "signal.observe.metrics"
local redis_script = require "signal.redis.script"

local type, pairs, ipairs, tostring, next, unpack = type, pairs, ipairs, tostring, next, unpack
local find, byte, char, lower, match, format =
  string.find, string.byte, string.char, string.lower, string.match, string.format
local concat = table.concat
local floor = math.floor
local now, gunzip, null = core.now, core.gunzip, core.null
local IN_ENGINE = core.in_engine
local event_json = core.event_json
local normalize = event.normalize

local M = {}

---------------------------------------------------------------------------
-- limits (hostile input: explicit, documented constants)

M.MAX_BODY = 500 * 1024      -- per request body, after gunzip too (Segment's 500 KB)
M.MAX_MESSAGE = 32 * 1024    -- per message (Segment's 32 KB)
-- Real events nest a handful of levels (batch → message → context → page);
-- 32 leaves room for rich properties while bounding every recursive walk
-- (cjson, blueprints, customer scripts) that later touches the event.
M.MAX_DEPTH = 32

-- One decoder, strict JSON: no NaN/Infinity/hex that re-encoding would refuse.
local decoder = cjson_safe.new()
decoder.decode_max_depth(M.MAX_DEPTH)
decoder.decode_invalid_numbers(false)
local decode = decoder.decode

local encoder = cjson_safe.new()
encoder.encode_number_precision(14)   -- the most this lua-cjson build allows
local encode = encoder.encode

local JSON = "application/json"
local OK_BODY = '{"success":true}'

---------------------------------------------------------------------------
-- the store script

-- KEYS[1] raw stream. ARGV: dedupe ttl (0: off), identity ttl, the current
-- dedupe window's hash, identity-key prefix, the previous window's hash,
-- the current one's expiry (unix s), a stale window to UNLINK ("" none),
-- then per message: mid ("" = no dedupe: Signal made the id up), ev, in,
-- canonical_id, n, and n field/value pairs for the identity hash. Plain
-- arguments, not one packed blob: Redis runs scripts in an interpreted Lua
-- 5.1, where parsing a blob cost more than the XADD itself. The keys it builds share KEYS[1]'s {pk} hash tag: one
-- Redis Cluster slot. The marker is set after its XADD: a script is not
-- rolled back when a command fails (an XADD on a key of another type), and
-- a marker without its event would make the client's retry a "duplicate".
M.SCRIPT = [[
local raw, dttl, ittl = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local cur, idp, prev, expire_at = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if ARGV[7] ~= "" then redis.call("UNLINK", ARGV[7]) end
local i, n = 8, #ARGV
local added, dups, marked = 0, 0, false
while i <= n do
  local mid, np = ARGV[i], tonumber(ARGV[i + 4])
  if mid == "" or dttl == 0 or (redis.call("HEXISTS", cur, mid) == 0 and redis.call("HEXISTS", prev, mid) == 0) then
    redis.call("XADD", raw, "*", "ev", ARGV[i + 1], "in", ARGV[i + 2])
    if mid ~= "" and dttl > 0 then
      redis.call("HSET", cur, mid, "1")
      marked = true
    end
    if np > 0 then
      local ikey = idp .. ARGV[i + 3]
      redis.call("HSET", ikey, unpack(ARGV, i + 5, i + 4 + np * 2))
      redis.call("EXPIRE", ikey, ittl)
    end
    added = added + 1
  else
    dups = dups + 1
  end
  i = i + 5 + np * 2
end
if marked then redis.call("EXPIREAT", cur, expire_at) end
return { added, dups }
]]

-- The engine caps one Redis command at 4096 arguments: a message takes at
-- most 11, so bigger batches are split into scripts of CHUNK messages run
-- inside one MULTI/EXEC (still atomic: no other command runs in between).
M.CHUNK = 300

-- Called by SHA-1 (signal.redis.script): no SCRIPT LOAD round trip, EVAL
-- once on a Redis that does not know it yet.
local STORE = redis_script.new(M.SCRIPT)
M.sha1_hex = core.sha1_hex
M.SCRIPT_SHA = STORE.sha

local SCRIPT = M.SCRIPT
local IDENTITY_TTL = identity.IDENTITY_TTL_S

-- transaction(redis, cmds) → EXEC's reply array | nil, err[, exec]. cmds
-- starts with MULTI and ends with EXEC; an EXECABORT (a command refused
-- while queued, e.g. OOM) means nothing ran, and names the first refusal.
-- A command that failed as it ran (WRONGTYPE: something else holds the
-- key) fails the answer too — its event is not stored, so no 200 — and the
-- array comes third: MULTI does not roll back, the caller undoes the rest.
local function transaction(redis, cmds)
  local replies, err = redis:pipeline(cmds)
  if replies == nil then return nil, err end
  local exec = replies[#cmds]
  if type(exec) ~= "table" or exec.err then
    local queued = replies[2]
    return nil, (type(exec) == "table" and exec.err) or (type(queued) == "table" and queued.err)
      or "MULTI/EXEC failed"
  end
  for i = 1, #exec do
    local r = exec[i]
    if type(r) == "table" and r.err then return nil, r.err, exec end
  end
  return exec
end

-- Dedupe windows (docs/collector.md "Dedupe"). The ids a pipeline accepts
-- at time t go into one hash per window of dedupe_ttl_s seconds,
-- signal:{pk}:dedupe:<floor(t / ttl)>; an id is a duplicate while it is in
-- the current window or the previous one, so it is remembered for at least
-- ttl and at most twice that. Why not one key with a TTL per id: under
-- the collector bench a field of one HSET per group cost Redis 0.9 µs per
-- event, a key with its own expiry 2.5 µs (SET … EX: a keyspace entry, an
-- expiry entry, a command per event); and an id takes 99 bytes instead of
-- 149, so one to two windows hold about what one TTL's keys did. A window is deleted with UNLINK (freed off
-- Redis's main thread) by the first group commit of the window two after
-- it; its EXPIREAT, one window later still, only covers an engine that was
-- not running then. Windows follow each engine's clock: hosts a few
-- seconds apart only blur the edges.
local unlinked = setmetatable({}, { __mode = "k" })   -- keys_of(pk) → last window seen
local expiring = setmetatable({}, { __mode = "k" })   -- keys_of(pk) → last window with its EXPIREAT run

-- dedupe_window(keys, dttl) → current hash, previous hash, the current
-- one's EXPIREAT, the window to UNLINK (nil unless this is the first
-- commit of a new window in this worker), the window's number
local function dedupe_window(keys, dttl)
  local w = floor(now() / dttl)
  local stale
  if (unlinked[keys] or -1) < w then
    unlinked[keys] = w
    stale = keys.dedupe .. (w - 2)
  end
  return keys.dedupe .. w, keys.dedupe .. (w - 1), (w + 3) * dttl, stale, w
end

-- store(ctx, keys, args, ends, n) → added, duplicates | nil, err.
-- args: every message's script arguments, flat; ends[i]: index of message
-- i's last argument.
local function store(ctx, keys, args, ends, n)
  local redis = ctx.redis
  local dttl = ctx.cfg.dedupe_ttl_s or 86400
  local cur, prev, expire_at, stale = "", "", 0, nil
  if dttl > 0 then cur, prev, expire_at, stale = dedupe_window(keys, dttl) end
  stale = stale or ""
  local res, err
  if n <= M.CHUNK then
    res, err = STORE:call(redis, "1", keys.raw, dttl, IDENTITY_TTL, cur, keys.id, prev, expire_at, stale,
                          unpack(args, 1, ends[n]))
    if type(res) ~= "table" then return nil, err or "unexpected reply" end
    return res[1], res[2]
  end
  -- EVAL, not EVALSHA, inside MULTI: a NOSCRIPT there would fail one chunk
  -- after others ran. Big batches are rare; the script text is small.
  local cmds = { { "MULTI" } }
  local first = 1
  for m = M.CHUNK, n + M.CHUNK - 1, M.CHUNK do
    local last = ends[m < n and m or n]
    local cmd = { "EVAL", SCRIPT, "1", keys.raw, dttl, IDENTITY_TTL, cur, keys.id, prev, expire_at, stale }
    stale = ""
    for j = first, last do cmd[#cmd + 1] = args[j] end
    cmds[#cmds + 1] = cmd
    first = last + 1
  end
  cmds[#cmds + 1] = { "EXEC" }
  local exec
  exec, err = transaction(redis, cmds)
  if exec == nil then return nil, err end
  local added, dups = 0, 0
  for i = 1, #exec do
    local r = exec[i]
    if type(r) ~= "table" or r.err then return nil, r and r.err or "unexpected reply" end
    added, dups = added + r[1], dups + r[2]
  end
  return added, dups
end

-- Group commit (see the file-top comment). A batch is the open list of one
-- pipeline's messages for this loop turn; its first request spawns the
-- task that sends it, which runs after every request read in this turn.
local suspend, wakeup, spawn, running = core.suspend, core.wakeup, core.spawn, coroutine.running
local GROUP_MAX_ARGS = 3600          -- under the engine's 4096 arguments per command
local open_batch = {}                -- pk → the batch still taking requests

local MULTI, EXEC = { "MULTI" }, { "EXEC" }

-- seen_markers(ctx, b, win) → dup (message index → true) | nil, err: one
-- HMGET per dedupe window (win: dedupe_window's, nil when dedupe is off)
local function seen_markers(ctx, b, win)
  local dup = {}
  if win == nil then return dup end
  local args, starts = b.args, b.starts
  local cur, prev = { "HMGET", win[1] }, { "HMGET", win[2] }
  local idx, in_batch = {}, {}
  for m = 1, b.nmsg do
    local mid = args[starts[m]]
    if mid ~= "" then
      if in_batch[mid] then
        dup[m] = true
      else
        in_batch[mid] = true
        cur[#cur + 1] = mid
        prev[#prev + 1] = mid
        idx[#idx + 1] = m
      end
    end
  end
  if #idx == 0 then return dup end
  local replies, err = ctx.redis:pipeline({ cur, prev })
  if replies == nil then return nil, err end
  for w = 1, 2 do
    local vals = replies[w]
    if type(vals) ~= "table" or vals.err then
      return nil, type(vals) == "table" and vals.err or "unexpected HMGET reply"
    end
    for i = 1, #idx do
      if vals[i] ~= null and vals[i] ~= nil then dup[idx[i]] = true end
    end
  end
  return dup
end

-- unmark_failed(ctx, cmds, ran, mids, win): an XADD that failed inside EXEC
-- left its id in the window's hash (the HSET after it ran): without
-- removing it the client's retry of the 503 would be acknowledged as a
-- duplicate and the event never stored. mids[i]: the id of cmds[i]'s XADD.
local function unmark_failed(ctx, cmds, ran, mids, win)
  if win == nil then return end
  local del = { "HDEL", win[1] }
  for i = 2, #cmds - 1 do
    local r = ran[i - 1]
    if mids[i] and type(r) == "table" and r.err then del[#del + 1] = mids[i] end
  end
  if #del > 2 then ctx.redis:call(unpack(del)) end
end

-- commit_batch(ctx, b, dup, win) → true | nil, err: one MULTI/EXEC
local function commit_batch(ctx, b, dup, win)
  local args, starts, keys = b.args, b.starts, b.keys
  local cmds, mids = { MULTI }, {}
  local mark = win and { "HSET", win[1] }
  if win and win[4] then cmds[2] = { "UNLINK", win[4] } end
  for m = 1, b.nmsg do
    if not dup[m] then
      local s = starts[m]
      local mid, np = args[s], tonumber(args[s + 4])
      cmds[#cmds + 1] = { "XADD", keys.raw, "*", "ev", args[s + 1], "in", args[s + 2] }
      if mid ~= "" and mark then
        mids[#cmds] = mid
        mark[#mark + 1] = mid
        mark[#mark + 1] = "1"
      end
      if np > 0 then
        local ikey = keys.id .. args[s + 3]
        local hset = { "HSET", ikey }
        for j = 1, np * 2 do hset[j + 2] = args[s + 4 + j] end
        cmds[#cmds + 1] = hset
        cmds[#cmds + 1] = { "EXPIRE", ikey, IDENTITY_TTL }
      end
    end
  end
  if #cmds == 1 then return true end   -- every message was a duplicate, nothing to unlink
  -- the EXPIREAT goes with each group until one has run in this window
  -- (the deadline does not change): the C lane's rule too
  local expire = false
  if mark and #mark > 2 then
    cmds[#cmds + 1] = mark
    expire = expiring[keys] ~= win[5]
    if expire then cmds[#cmds + 1] = { "EXPIREAT", win[1], win[3] } end
  end
  cmds[#cmds + 1] = EXEC
  local exec, err, ran = transaction(ctx.redis, cmds)
  if exec == nil then
    if ran then unmark_failed(ctx, cmds, ran, mids, win) end
    return nil, err
  end
  if expire and (expiring[keys] or -1) < win[5] then expiring[keys] = win[5] end
  return true
end

local function send_batch(ctx, pk, b)
  if open_batch[pk] == b then open_batch[pk] = nil end
  local dttl = ctx.cfg.dedupe_ttl_s or 86400
  local win = dttl > 0 and { dedupe_window(b.keys, dttl) } or nil
  local dup, err = seen_markers(ctx, b, win)
  if dup then err = select(2, commit_batch(ctx, b, dup, win)) end
  local waiters = b.waiters
  for i = 1, #waiters do
    local w = waiters[i]
    if err then
      w.err = err
    else
      local dups = 0
      for m = w.first, w.last do
        if dup[m] then dups = dups + 1 end
      end
      w.added, w.dups = w.last - w.first + 1 - dups, dups
    end
    w.done = true
    wakeup(w.co)
  end
end

-- store_grouped(ctx, pk, keys, args, ends, n) → added, duplicates | nil, err
local function store_grouped(ctx, pk, keys, args, ends, n)
  local nargs = ends[n]
  local b = open_batch[pk]
  if b == nil or b.nargs + nargs > GROUP_MAX_ARGS then
    b = { keys = keys, args = {}, starts = {}, nargs = 0, nmsg = 0, waiters = {} }
    open_batch[pk] = b
    spawn(send_batch, ctx, pk, b)
  end
  local bargs, base, starts, nmsg = b.args, b.nargs, b.starts, b.nmsg
  for i = 1, nargs do bargs[base + i] = args[i] end
  for m = 1, n do starts[nmsg + m] = base + (m == 1 and 1 or ends[m - 1] + 1) end
  b.nargs = base + nargs
  local w = { co = running(), first = nmsg + 1, last = nmsg + n }
  b.nmsg = nmsg + n
  b.waiters[#b.waiters + 1] = w
  repeat suspend() until w.done
  if w.err then return nil, w.err end
  return w.added, w.dups
end

---------------------------------------------------------------------------
-- per-pipeline and per-reason constants, built once

local pipeline_keys = {}   -- pk → { raw, seen, id, labels }

local function keys_of(pk)
  local k = pipeline_keys[pk]
  if k then return k end
  k = { raw = queue.raw(pk), dedupe = queue.dedupe(pk, ""), id = queue.identity(pk, ""),
        labels = { pipeline = pk } }
  pipeline_keys[pk] = k
  return k
end

local reason_labels = {}
local function count_rejected(reason, n)
  if metrics.inc then
    local l = reason_labels[reason]
    if not l then l = { reason = reason }; reason_labels[reason] = l end
    metrics.inc("events_rejected_total", l, n or 1)
  end
end

---------------------------------------------------------------------------
-- credentials

local B64 = {}
do
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  for i = 1, 64 do B64[byte(alphabet, i)] = i - 1 end
  B64[byte("-")], B64[byte("_")] = 62, 63   -- base64url, seen from some clients
end

local function b64decode(s)
  s = match(s, "^(.-)=*$")
  if #s % 4 == 1 then return nil end
  local out = {}
  for i = 1, #s, 4 do
    local a, b, c, d = byte(s, i, i + 3)
    a, b = B64[a], B64[b]
    if a == nil or b == nil then return nil end
    local vc, vd = c and B64[c], d and B64[d]
    if (c and vc == nil) or (d and vd == nil) then return nil end
    local v = a * 262144 + b * 4096 + (vc or 0) * 64 + (vd or 0)
    out[#out + 1] = char(floor(v / 65536) % 256)
    if c then out[#out + 1] = char(floor(v / 256) % 256) end
    if d then out[#out + 1] = char(v % 256) end
  end
  return concat(out)
end
M.b64decode = b64decode

-- Basic credentials repeat on every request of an SDK: decode each once.
local basic_cache, basic_n = {}, 0
local BASIC_CACHE_MAX = 256

-- basic_user(authorization) → the HTTP Basic username, or nil
local function basic_user(auth)
  local v = basic_cache[auth]
  if v ~= nil then return v or nil end
  v = false
  local b64 = match(auth, "^%s*[Bb][Aa][Ss][Ii][Cc]%s+(%S+)%s*$")
  local plain = b64 and b64decode(b64)
  if plain then
    local user = match(plain, "^([^:]*)")
    if user ~= "" then v = user end
  end
  if basic_n >= BASIC_CACHE_MAX then basic_cache, basic_n = {}, 0 end
  basic_cache[auth] = v
  basic_n = basic_n + 1
  return v or nil
end

local KEY_HELP = 'send it in the X-Pipeline-Key header, as "pipelineKey" or "writeKey" in the JSON body,'
  .. " or as the HTTP Basic username (Authorization: Basic base64(key + \":\"))"

---------------------------------------------------------------------------
-- responses

-- An error before the pipeline is known (401, a bad body) still lets a page
-- of any configured origin read it: otherwise a wrong key would surface in
-- the browser as an opaque CORS failure instead of this message.
local function respond_error(ctx, req, pipeline, status, code, message, details)
  local h = { ["Content-Type"] = JSON }
  if pipeline then cors.headers(ctx, req, pipeline, h) else cors.headers_any(ctx, req, h) end
  local err = { code = code, message = message, details = details }
  return status, h, encode({ error = err })
end

local function reject(ctx, req, pipeline, n, reason, status, code, message, details)
  count_rejected(reason, n)
  return respond_error(ctx, req, pipeline, status, code, message, details)
end

local function kb(n) return format("%d KB (%d bytes)", n / 1024, n) end

---------------------------------------------------------------------------
-- one message → its stored form

local CREDENTIALS = { "writeKey", "pipelineKey", "write_key", "pipeline_key" }

local function has_credentials(m)
  return m.writeKey ~= nil or m.pipelineKey ~= nil or m.write_key ~= nil or m.pipeline_key ~= nil
end

-- input_json(m) → the message as stored in `in` (credentials removed)
local function input_json(m)
  for i = 1, #CREDENTIALS do m[CREDENTIALS[i]] = nil end
  return encode(m)
end

-- client_message_id(m) → true when the sender chose the id (dedupe applies)
local function client_message_id(m)
  local v = m.messageId
  if v == nil or v == null then v = m.message_id end
  return (type(v) == "string" and v ~= "") or type(v) == "number"
end

local LINK_FIELDS = { "email", "phone", "user_id" }

-- pack(args, ev, ev_json, in_json, dedupe) appends one message's script
-- arguments to args; returns the index of its last one
local function pack(args, ev, ev_json, in_json, dedupe)
  local k = #args
  args[k + 1] = dedupe and ev.message_id or ""
  args[k + 2] = ev_json
  args[k + 3] = in_json
  local lk = identity.linking_keys(ev)
  if lk == nil then
    args[k + 4] = ""
    args[k + 5] = "0"
    return k + 5
  end
  args[k + 4] = ev.canonical_id
  local np = 0
  for i = 1, 3 do
    local f = LINK_FIELDS[i]
    if lk[f] then
      args[k + 6 + np * 2] = f
      args[k + 7 + np * 2] = lk[f]
      np = np + 1
    end
  end
  args[k + 5] = np
  return k + 5 + np * 2
end

local function merge_context(batch_ctx, m)
  local c = m.context
  if c == nil or c == null then
    m.context = batch_ctx
  elseif type(c) == "table" then
    local merged = {}
    for k, v in pairs(batch_ctx) do merged[k] = v end
    for k, v in pairs(c) do merged[k] = v end   -- the message's own values win
    m.context = merged
  end
end

---------------------------------------------------------------------------
-- request handling

-- The Content-Type is not enforced (analytics.js and datafly.js send JSON as
-- text/plain; curl sends form-urlencoded): the body is JSON or it is refused,
-- and an odd type is named in the INVALID_JSON message as the likely cause.
local function acceptable_type(ct)
  if ct == nil or ct == "" then return true end
  ct = lower(ct)
  return find(ct, "json", 1, true) ~= nil or find(ct, "^%s*text/plain") ~= nil
end

-- Each route has a mode { kind, hint, server_side }: kind says which bodies
-- it takes (one event, a batch, or either for /v1/events), hint is the
-- event type its path implies, server_side whether its senders are servers
-- (true, or "basic": when the request has Basic credentials and no Origin).
local SINGLE, BATCH, EVENTS = 1, 2, 3

local commit

-- The fast path (core.event_json, engine/l_event.c): one C pass turns a
-- plain single event into its canonical JSON with no Lua tables and no
-- cjson. It declines (nil) anything unusual or invalid, which then takes
-- the general path below, where every error message comes from.
local ONE_END = { 5 }
-- event_json reads its ctx synchronously: one table serves every request.
-- buffer: the event comes back as a signal.buf (only Redis reads it).
local fast_ctx = { buffer = true }

-- fast(ctx, mode, req, src, pk, pipeline, basic) → status, headers, body |
-- nil, cid, set_cookie when the general path must handle the request
local function fast(ctx, mode, req, src, pk, pipeline, basic)
  local headers = req.headers
  local server_side = mode.server_side == true
  local cid, set_cookie
  if not server_side then cid, set_cookie = identity.canonical_id(ctx, req) end
  local c = fast_ctx
  c.pipeline_key, c.basic_key, c.canonical_id = pk, basic, cid
  c.ip, c.user_agent, c.received_at = identity.client_ip(ctx, req), headers["user-agent"], now()
  c.type_hint, c.server_side = mode.hint, server_side
  local ev_json, mid, dedupe, key, in_json = event_json(src, c)
  if ev_json == nil then return nil, cid, set_cookie end
  if not pipeline then
    pipeline = ctx.pipelines[key]
    if not pipeline then
      return reject(ctx, req, nil, 1, "invalid_pipeline_key", 401, "INVALID_PIPELINE_KEY",
                    "unknown pipeline key: the key given is not configured on this collector; " .. KEY_HELP)
    end
    pk = key
  end
  local keys = keys_of(pk)
  if metrics.inc then metrics.inc("events_received_total", keys.labels, 1) end
  local args = { dedupe and mid or "", ev_json, in_json or src, "", "0" }
  return commit(ctx, req, pipeline, pk, keys, args, ONE_END, 1, set_cookie)
end

-- handle(ctx, mode, req) → status, headers, body
local function handle(ctx, mode, req)
  local headers = req.headers
  local pipelines = ctx.pipelines
  -- The engine's requests carry the body as a buffer (see sg_buf in
  -- engine/l_core.h); req.body makes the string only when needed.
  local src = rawget(req, "body_buf") or req.body or ""
  local size = #src

  if size > M.MAX_BODY then
    return reject(ctx, req, nil, 1, "too_large", 413, "PAYLOAD_TOO_LARGE",
                  "request body is " .. size .. " bytes; the limit is " .. kb(M.MAX_BODY) .. " per request")
  end

  -- A key in the header is authoritative: refuse an unknown one before
  -- spending anything on the body.
  local pk = headers["x-pipeline-key"]
  if pk == "" then pk = nil end
  local pipeline = pk and pipelines[pk]
  if pk and not pipeline then
    return reject(ctx, req, nil, 1, "invalid_pipeline_key", 401, "INVALID_PIPELINE_KEY",
                  "the pipeline key in the X-Pipeline-Key header is not configured on this collector; "
                  .. KEY_HELP)
  end
  local auth = headers.authorization
  local basic = auth and basic_user(auth)

  local enc = headers["content-encoding"]
  local cid, set_cookie, cid_known
  if event_json and mode.kind == SINGLE and enc == nil and size <= M.MAX_MESSAGE then
    local status, h, b = fast(ctx, mode, req, src, pk, pipeline, basic)
    if status then return status, h, b end
    cid, set_cookie, cid_known = h, b, true
  end
  local body = type(src) == "string" and src or req.body
  if enc ~= nil then
    enc = lower(match(enc, "^%s*(.-)%s*$"))
    if enc == "gzip" or enc == "x-gzip" then
      local plain, err = gunzip(body, M.MAX_BODY)
      if plain == nil then
        if err == "too large" then
          return reject(ctx, req, pipeline, 1, "too_large", 413, "PAYLOAD_TOO_LARGE",
                        "request body is over " .. kb(M.MAX_BODY) .. " once decompressed; that is the limit")
        end
        return reject(ctx, req, pipeline, 1, "invalid_body", 400, "INVALID_BODY",
                      "Content-Encoding is gzip but " .. (match(err, "^gzip: (.*)$") or err))
      end
      body = plain
    elseif enc ~= "identity" and enc ~= "" then
      return reject(ctx, req, pipeline, 1, "unsupported_media_type", 415, "UNSUPPORTED_MEDIA_TYPE",
                    "Content-Encoding must be gzip or identity")
    end
  end
  local doc, derr = decode(body)
  if doc == nil then
    if body == "" then derr = "the body is empty" end
    local ct = headers["content-type"]
    if not acceptable_type(ct) then   -- the likely cause: say so
      derr = derr .. " (Content-Type is " .. ct .. "; send JSON as application/json or text/plain)"
    end
    return reject(ctx, req, pipeline, 1, "invalid_json", 400, "INVALID_JSON",
                  "body is not valid JSON: " .. tostring(derr))
  end
  local kind = mode.kind
  if type(doc) ~= "table" or (next(doc) ~= nil and doc[1] ~= nil) then
    if kind == BATCH then
      return reject(ctx, req, pipeline, 1, "invalid_batch", 400, "INVALID_BATCH",
                    'body must be a JSON object {"batch": […]}')
    end
    return reject(ctx, req, pipeline, 1, "invalid_event", 400, "INVALID_EVENT",
                  kind == EVENTS and 'body must be a JSON object: one event, or {"batch": […]}'
                  or "body must be a JSON object: one event")
  end

  if not pipeline then
    pk = doc.pipelineKey
    if pk == nil or pk == null or pk == "" then pk = doc.writeKey end
    if pk == nil or pk == null or pk == "" then pk = basic end
    if pk == nil or pk == null or pk == "" then
      return reject(ctx, req, nil, 1, "invalid_pipeline_key", 401, "INVALID_PIPELINE_KEY",
                    "missing pipeline key: " .. KEY_HELP)
    end
    pipeline = type(pk) == "string" and pipelines[pk]
    if not pipeline then
      return reject(ctx, req, nil, 1, "invalid_pipeline_key", 401, "INVALID_PIPELINE_KEY",
                    "unknown pipeline key: the key given is not configured on this collector; " .. KEY_HELP)
    end
  end
  local keys = keys_of(pk)

  -- Server-side senders act for a visitor: their own context.ip/userAgent
  -- stand, and no cookie is read or minted for them.
  local server_side = kind == EVENTS or mode.server_side == true
    or (mode.server_side == "basic" and basic ~= nil and headers.origin == nil)

  local list = doc.batch
  local batched = kind == BATCH or (kind == EVENTS and list ~= nil)
  if batched then
    if type(list) ~= "table" or (next(list) ~= nil and list[1] == nil) then
      return reject(ctx, req, pipeline, 1, "invalid_batch", 400, "INVALID_BATCH",
                    '"batch" must be an array of messages')
    end
    if list[1] == nil then
      return reject(ctx, req, pipeline, 1, "invalid_batch", 400, "INVALID_BATCH", '"batch" is empty')
    end
  end
  local n = batched and #list or 1

  if metrics.inc then metrics.inc("events_received_total", keys.labels, n) end

  if not server_side and not cid_known then cid, set_cookie = identity.canonical_id(ctx, req) end

  local sent_at = batched and doc.sentAt or nil
  if sent_at == null then sent_at = nil end
  local nctx = {
    pipeline_key = pk, canonical_id = cid, ip = identity.client_ip(ctx, req),
    user_agent = headers["user-agent"], received_at = now(), type_hint = mode.hint,
    server_side = server_side, sent_at = sent_at,
  }

  local args, ends = {}, {}
  if not batched then
    local in_json, ierr = body, nil
    if has_credentials(doc) then in_json, ierr = input_json(doc) end
    if in_json == nil then
      return reject(ctx, req, pipeline, 1, "invalid_event", 400, "INVALID_EVENT",
                    "invalid event: it cannot be stored as JSON: " .. tostring(ierr))
    end
    if #in_json > M.MAX_MESSAGE then
      return reject(ctx, req, pipeline, 1, "too_large", 413, "PAYLOAD_TOO_LARGE",
                    "the event is " .. #in_json .. " bytes; the limit is " .. kb(M.MAX_MESSAGE) .. " per message")
    end
    local dedupe = client_message_id(doc)
    local ev, errs = normalize(doc, nctx)
    if ev == nil then
      local details = {}
      for i = 1, #errs do details[i] = { reason = errs[i] } end
      return reject(ctx, req, pipeline, 1, "invalid_event", 400, "INVALID_EVENT",
                    "invalid event: " .. concat(errs, "; "), details)
    end
    local ev_json, eerr = encode(ev)
    if ev_json == nil then
      return reject(ctx, req, pipeline, 1, "invalid_event", 400, "INVALID_EVENT",
                    "invalid event: " .. tostring(eerr))
    end
    ends[1] = pack(args, ev, ev_json, in_json, dedupe)
  else
    local batch_ctx = doc.context
    if type(batch_ctx) ~= "table" or next(batch_ctx) == nil then batch_ctx = nil end
    local bad, big
    for i = 1, n do
      local m = list[i]
      if type(m) ~= "table" or (next(m) ~= nil and m[1] ~= nil) then
        bad = bad or {}
        bad[#bad + 1] = { index = i - 1, reason = "message must be a JSON object" }
      else
        local in_json, ierr = input_json(m)
        if in_json == nil then     -- e.g. 1e999: decodes to inf, which JSON cannot hold
          bad = bad or {}
          bad[#bad + 1] = { index = i - 1, reason = "message cannot be stored as JSON: " .. tostring(ierr) }
        elseif #in_json > M.MAX_MESSAGE then
          big = big or {}
          big[#big + 1] = { index = i - 1, reason = "message is " .. #in_json .. " bytes; the limit is "
                            .. kb(M.MAX_MESSAGE) }
        elseif big == nil then   -- once one is too large, the answer is 413: stop working
          local dedupe = client_message_id(m)
          if batch_ctx then merge_context(batch_ctx, m) end
          local ev, errs = normalize(m, nctx)
          local ev_json, eerr
          if ev then
            ev_json, eerr = encode(ev)
            if ev_json == nil then errs = { tostring(eerr) } end
          end
          if ev_json == nil then
            bad = bad or {}
            bad[#bad + 1] = { index = i - 1, reason = concat(errs, "; "), reasons = errs }
          elseif bad == nil then
            ends[#ends + 1] = pack(args, ev, ev_json, in_json, dedupe)
          end
        end
      end
    end
    if big then
      local idx = {}
      for i = 1, #big do idx[i] = big[i].index end
      return reject(ctx, req, pipeline, n, "too_large", 413, "PAYLOAD_TOO_LARGE",
                    "message" .. (#big > 1 and "s " or " ") .. concat(idx, ", ") .. " of the batch "
                    .. (#big > 1 and "are" or "is") .. " over the limit of " .. kb(M.MAX_MESSAGE)
                    .. " per message; nothing was accepted", big)
    end
    if bad then
      local idx = {}
      for i = 1, #bad do idx[i] = bad[i].index end
      return reject(ctx, req, pipeline, n, "invalid_batch", 400, "INVALID_BATCH",
                    #bad .. " of " .. n .. " messages are invalid (index " .. concat(idx, ", ")
                    .. "); the batch is atomic, nothing was accepted", bad)
    end
  end

  return commit(ctx, req, pipeline, pk, keys, args, ends, n, set_cookie)
end

-- commit(…) → the answer once the request's messages are stored (or not)
function commit(ctx, req, pipeline, pk, keys, args, ends, n, set_cookie)
  local added, dups
  if IN_ENGINE and n <= M.CHUNK then
    added, dups = store_grouped(ctx, pk, keys, args, ends, n)
  else
    added, dups = store(ctx, keys, args, ends, n)
  end
  if added == nil then
    local t = now()
    if t - (M.last_store_warn or 0) > 1 then   -- one line a second while Redis is down
      M.last_store_warn = t
      log.warn("collector could not store events", { pipeline = pk, error = tostring(dups) })
    end
    return reject(ctx, req, pipeline, n, "redis_unavailable", 503, "REDIS_UNAVAILABLE",
                  "events could not be stored (Redis is unavailable); nothing was accepted, retry later",
                  nil)
  end
  if metrics.inc then
    if added > 0 then metrics.inc("events_accepted_total", keys.labels, added) end
    if dups > 0 then metrics.inc("events_deduplicated_total", keys.labels, dups) end
  end

  local h = cors.headers(ctx, req, pipeline, { ["Content-Type"] = JSON })
  if set_cookie then h["Set-Cookie"] = set_cookie end
  return 200, h, OK_BODY
end

---------------------------------------------------------------------------
-- routes

local SHORT = { t = "track", p = "page", i = "identify", g = "group", s = "screen", a = "alias" }

function M.init(ctx, router)
  local function preflight(req) return cors.preflight(ctx, req) end
  local function route(path, mode)
    router:add("POST", path, function(req) return handle(ctx, mode, req) end)
    router:add("OPTIONS", path, preflight)
  end
  for short, t in pairs(SHORT) do
    route("/v1/" .. short, { kind = SINGLE, hint = t })                     -- datafly.js, analytics.js
    route("/v1/" .. t, { kind = SINGLE, hint = t, server_side = true })     -- Segment HTTP Tracking API
  end
  -- A batch is server-side when it comes like a Segment server SDK's:
  -- Basic credentials and no Origin (browsers always send Origin on POST).
  route("/v1/batch", { kind = BATCH, server_side = "basic" })
  route("/v1/b", { kind = BATCH, server_side = "basic" })
  route("/v1/events", { kind = EVENTS })
  M.configure_lane(ctx)
end

---------------------------------------------------------------------------
-- the C lane (engine/ingest.c)

-- The engine serves plain track/page/screen events of the single-event
-- routes in C, end to end, with the same stream entries, dedupe markers,
-- cookie, CORS headers and metrics as handle() above; anything else it
-- hands to handle(). SIGNAL_INGEST_LANE=off turns it off (every request
-- then takes the Lua path: a way to tell the two apart when in doubt).
local LANE_HINTS = { track = true, page = true, screen = true }   -- what core.event_json converts

local function lane_stats_source()
  local st = core.ingest_stats()
  if st == nil then return end
  for _, p in ipairs(st.pipelines) do
    local labels = keys_of(p.key).labels
    if p.received > 0 then
      metrics.inc("events_received_total", labels, p.received)
      metrics.inc("ingest_lane_total", labels, p.received)
    end
    if p.accepted > 0 then metrics.inc("events_accepted_total", labels, p.accepted) end
    if p.deduplicated > 0 then metrics.inc("events_deduplicated_total", labels, p.deduplicated) end
  end
  if st.rejected_unavailable > 0 then count_rejected("redis_unavailable", st.rejected_unavailable) end
  for _, r in ipairs(st.routes) do
    metrics.observe_counts("signal_http_request_duration_seconds", { route = r.path, method = "POST" },
                           r.counts, r.sum)
  end
end

-- configure_lane(ctx) → true when the engine's lane serves this collector
function M.configure_lane(ctx)
  if not (IN_ENGINE and core.ingest_configure and event_json) then return false end
  if os.getenv("SIGNAL_INGEST_LANE") == "off" then return false end
  local routes = {}
  for short, t in pairs(SHORT) do
    if LANE_HINTS[t] then
      routes[#routes + 1] = { path = "/v1/" .. short, hint = t, server_side = false }
      routes[#routes + 1] = { path = "/v1/" .. t, hint = t, server_side = true }
    end
  end
  local pipelines = {}
  for pk, p in pairs(ctx.pipelines) do
    local keys = keys_of(pk)
    pipelines[#pipelines + 1] = { key = pk, raw = keys.raw, dedupe = keys.dedupe, origins = p.origins or {} }
  end
  -- Its own connection: the lane's commands do not queue behind Lua's, and
  -- its replies are read in C only (lite replies, engine/l_redis.c).
  local conn = M.lane_redis or core.redis.connect(ctx.cfg.redis)
  if not conn then return false end
  M.lane_redis = conn
  local plain, secure = identity.cookie_suffixes(ctx.cfg)
  local ok = core.ingest_configure({
    redis = conn, dedupe_ttl = ctx.cfg.dedupe_ttl_s or 86400, max_message = M.MAX_MESSAGE,
    routes = routes, pipelines = pipelines, cookie_plain = plain, cookie_secure = secure,
    nets = identity.trusted_nets(ctx.cfg), buckets = metrics.BUCKETS,
  })
  if ok and not M.lane_source then
    M.lane_source = true
    metrics.add_source(lane_stats_source)
  end
  return ok
end

-- exposed for specs and benchmarks
M.handle = handle

return M
