-- signal.observe.live — live events: the recent events of each pipeline as they
-- went through Signal, for the /live page and GET /v1/admin/live (the
-- the way to check an integration: see the transformed event and the vendor
-- request side by side).
--
-- Layout (queue.lua): per pipeline a LIST of message ids, newest first,
-- capped at cfg.live_events_max, and per event one HASH
--   t        processed at (ms)          in     the input as received (JSON)
--   ev       the event as the collector stored it (JSON, as is)
--   add      what stitching and enrichment added to it: identity,
--            partner_attrs and the providers' flat fields (JSON; merged into
--            `ev` on read)
--   enrich   enrichment info per integration (JSON)    err  processing error
--   out:<integration>            { version, warnings, dropped, skipped } (JSON;
--            skipped: why the event was not sent there, e.g. "consent: needs
--            analytics")
--   p:<integration>              the payload JSON, byte for byte as POSTed
--   req:<integration>:<attempt>:<ms>  one vendor request (ingest.record,
--            JSON; its body is p:<integration>, not stored twice)
-- Everything is in Redis, so any node shows events any node processed.
--
-- Cost control — at thousands of events/s a record lives a fraction of a
-- second before it is trimmed, so writing it must be cheap: nothing is
-- encoded twice (the stored event and payload are the strings already at
-- hand), the processor writes a whole read batch with one HSET per event
-- and one script call that pushes the ids, sets the TTLs, trims the list
-- and deletes the records that fell off (without the DEL a busy pipeline
-- would leave millions of orphan hashes waiting for their TTL), and
-- delivery adds the vendor requests of many events with one script call
-- that writes only into records that still exist, for the same reason.
-- Records expire after TTL_S so an idle pipeline's last events do not stay
-- forever.
--
-- Secrets: every string stored passes signal.observe.log.scrub (registered config
-- secrets, bearer tokens and JWT-shaped strings) on the way in and again on
-- the way out; the request record already shows Authorization as "Bearer
-- [REDACTED]". live.scrub puts a cheap exact pre-check in front of
-- log.scrub, whose bearer pattern (a gsub trying every position) costs ~15
-- µs per KB: a string can only hold a bearer token if it contains "earer", a
-- JWT only if it contains "eyJ", and a secret only if it contains a 12-byte
-- piece of it, all plain (memchr) searches. No false negatives: when any may
-- be present, log.scrub runs.
local core = require "signal.core"
local cjson = require("cjson").new()
local queue = require "signal.redis.keys"
local log = require "signal.observe.log"
local redis_script = require "signal.redis.script"

local type, ipairs, pairs, tonumber, tostring = type, ipairs, pairs, tonumber, tostring
local scrub = log.scrub
local find, sub = string.find, string.sub

cjson.encode_sparse_array(true)
cjson.encode_invalid_numbers(false)

local M = {}

M.TTL_S = 3600

-- probes: for each secret, a piece of it starting at a character that is
-- rare in event JSON (upper case or digit), so memchr skips most positions.
local probes, nprobes = {}, 0

function M.set_secrets(list)
  probes, nprobes = {}, 0
  for _, v in ipairs(list or {}) do
    if type(v) == "string" and #v >= 6 then
      local i = v:find("[%u%d]") or 1
      if #v - i + 1 < 6 then i = 1 end
      nprobes = nprobes + 1
      probes[nprobes] = v:sub(i, i + 11)
    end
  end
end

local REDACTED_TAIL = " [REDACTED]"

local function fast_scrub(s)
  if type(s) ~= "string" then return s end
  if find(s, "eyJ", 1, true) then return scrub(s) end   -- maybe a JWT
  local i = find(s, "earer", 1, true)
  while i do
    -- "Bearer [REDACTED]" (our own request records) needs nothing
    if sub(s, i + 5, i + 15) ~= REDACTED_TAIL then return scrub(s) end
    i = find(s, "earer", i + 16, true)
  end
  for j = 1, nprobes do
    if find(s, probes[j], 1, true) then return scrub(s) end
  end
  return s
end
M.scrub = fast_scrub

-- Size control: the list holds at most cap (live_events_max) records and
-- their bytes at most budget() — live_events_max_bytes, or BUDGET_SHARE of
-- Redis's maxmemory when that is less. Each record's size (its field names
-- and values) is kept in the HASH queue.live_sizes(pk), their sum in the
-- string queue.live_bytes(pk); a push drops the oldest records until both
-- limits hold again.

-- KEYS[1] the list, KEYS[2] the sizes, KEYS[3] the total; ARGV[1] cap,
-- ARGV[2] TTL (s), ARGV[3] byte budget, ARGV[4..] id, bytes (oldest first)
-- → number of records trimmed. The record keys are the list key plus
-- ":<id>" (queue.live_record), in the list's hash slot.
M.PUSH_SCRIPT = [[
local list, sizes, total_key = KEYS[1], KEYS[2], KEYS[3]
local cap, ttl, budget = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local total = tonumber(redis.call('GET', total_key)) or 0
for i = 4, #ARGV, 2 do
  local id, b = ARGV[i], tonumber(ARGV[i + 1])
  redis.call('LPUSH', list, id)
  redis.call('EXPIRE', list .. ':' .. id, ttl)
  total = total + b - (tonumber(redis.call('HGET', sizes, id)) or 0)
  redis.call('HSET', sizes, id, b)
end
local n, trimmed = redis.call('LLEN', list), 0
while n > 0 and (n > cap or total > budget) do
  local id = redis.call('RPOP', list)
  total = total - (tonumber(redis.call('HGET', sizes, id)) or 0)
  redis.call('HDEL', sizes, id)
  redis.call('DEL', list .. ':' .. id)
  n, trimmed = n - 1, trimmed + 1
end
if total < 0 then total = 0 end
redis.call('SET', total_key, total, 'EX', ttl)
redis.call('EXPIRE', list, ttl)
redis.call('EXPIRE', sizes, ttl)
return trimmed
]]

-- KEYS[1] the sizes, KEYS[2] the total, KEYS[3..] records; ARGV[1] the
-- length of a record key's prefix (list key and ":"), then field, value
-- per record → number written
M.ADD_SCRIPT = [[
local n, prefix = 0, tonumber(ARGV[1])
for i = 3, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local f, v = ARGV[2 * i - 4], ARGV[2 * i - 3]
    redis.call('HSET', KEYS[i], f, v)
    local id = string.sub(KEYS[i], prefix + 1)
    if redis.call('HEXISTS', KEYS[1], id) == 1 then
      redis.call('HINCRBY', KEYS[1], id, #f + #v)
      redis.call('INCRBY', KEYS[2], #f + #v)
    end
    n = n + 1
  end
end
return n
]]

-- Both run inside pipelines: callers take the sha from :ensure(redis) and
-- :rerun(redis, cmd) a command that got NOSCRIPT (signal.redis.script).
M.PUSH = redis_script.new(M.PUSH_SCRIPT)
M.ADD = redis_script.new(M.ADD_SCRIPT)

function M.encode(v)
  local ok, s = pcall(cjson.encode, v)
  if ok then return fast_scrub(s) end
  return fast_scrub(cjson.encode(tostring(v)))
end

M.MAX_BYTES = 64 * 1024 * 1024
M.BUDGET_SHARE = 0.05

local max_bytes, maxmemory = M.MAX_BYTES, nil

-- configure(max_bytes): the configured byte cap (live_events_max_bytes)
function M.configure(bytes)
  max_bytes = bytes or M.MAX_BYTES
end

-- budget() → the bytes live records may take: the configured cap, or
-- BUDGET_SHARE of Redis's maxmemory (as last read by watch) when less
function M.budget()
  if maxmemory and maxmemory > 0 then return math.min(max_bytes, math.floor(maxmemory * M.BUDGET_SHARE)) end
  return max_bytes
end

-- Appends the commands recording a batch of processed events to `cmds`.
-- records: list of { id = message_id, fields = { "t", ms, "in", json, … } }
-- Needs the push script's sha (live.PUSH:ensure(redis)) in `push_sha`.
function M.batch_commands(cmds, pk, cap, records, push_sha)
  if cap <= 0 or #records == 0 then return end
  local push = { "EVALSHA", push_sha, 3, queue.live(pk), queue.live_sizes(pk), queue.live_bytes(pk),
                 cap, M.TTL_S, M.budget() }
  for _, rec in ipairs(records) do
    local h = { "HSET", queue.live_record(pk, rec.id) }
    local f = rec.fields
    local bytes = 0
    for i = 1, #f do
      local v = tostring(f[i])
      h[#h + 1] = v
      bytes = bytes + #v
    end
    cmds[#cmds + 1] = h
    push[#push + 1] = rec.id
    push[#push + 1] = bytes
  end
  cmds[#cmds + 1] = push
end

---------------------------------------------------------------------------
-- memory pressure

-- Live events are the first thing to give up when Redis fills: they are a
-- debugging view, while events and payloads are the product. Every worker
-- reads Redis's memory every PRESSURE_EVERY_MS; above PAUSE_AT of maxmemory
-- it stops recording (paused() is true) and worker 0 deletes every
-- pipeline's live records, until usage is back under RESUME_AT. A Redis
-- without maxmemory never pauses them.
M.PAUSE_AT, M.RESUME_AT = 0.8, 0.7
M.PRESSURE_EVERY_MS = 2000

local paused = false

function M.paused() return paused end

-- KEYS[1] a pipeline's live list, KEYS[2] its sizes, KEYS[3] its total
-- → records deleted (the list, sizes and total too)
M.DROP_SCRIPT = [[
local ids = redis.call('LRANGE', KEYS[1], 0, -1)
for _, id in ipairs(ids) do redis.call('UNLINK', KEYS[1] .. ':' .. id) end
redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3])
return #ids
]]
M.DROP = redis_script.new(M.DROP_SCRIPT)

-- memory_share(redis) → used_memory / maxmemory, or nil (no limit, or
-- unknown); and maxmemory (0: no limit)
function M.memory_share(redis)
  local info = redis:call("INFO", "memory")
  if type(info) ~= "string" then return nil end
  local used = tonumber(info:match("\nused_memory:(%d+)"))
  local max = tonumber(info:match("\nmaxmemory:(%d+)"))
  if not used or not max or max == 0 then return nil, max end
  return used / max, max
end

-- watch(redis, pipelines, drop): the pressure task of one worker; drop =
-- true in one worker per process (it frees the records)
function M.watch(redis, pipelines, drop)
  while not core.stopping() do
    local share, max = M.memory_share(redis)
    if max then maxmemory = max end
    if share and not paused and share >= M.PAUSE_AT then
      paused = true
      log.warn("Redis is near its memory limit: live events paused and cleared",
        { used_share = math.floor(share * 100) / 100 })
      if drop then
        for _, pk in ipairs(pipelines) do
          M.DROP:call(redis, 3, queue.live(pk), queue.live_sizes(pk), queue.live_bytes(pk))
        end
      end
    elseif paused and (share == nil or share < M.RESUME_AT) then
      paused = false
      log.info("live events resumed", { used_share = share and math.floor(share * 100) / 100 })
    end
    core.sleep(M.PRESSURE_EVERY_MS)
  end
end

-- request_field(integration, attempt, at_ms) → the record field of one
-- vendor request. It carries the attempt and its start time: a replayed
-- dead letter starts again at attempt 1 and must not overwrite the first try.
function M.request_field(integration, attempt, at_ms)
  return "req:" .. integration .. ":" .. attempt .. ":" .. at_ms
end

-- One command adding many vendor requests (only to records still live).
-- items: list of { message_id, field, json }.
function M.requests_command(pk, items, add_sha)
  local n = #items
  local cmd = { "EVALSHA", add_sha, n + 2, queue.live_sizes(pk), queue.live_bytes(pk) }
  for i = 1, n do cmd[5 + i] = queue.live_record(pk, items[i][1]) end
  local base = 5 + n
  cmd[base + 1] = #queue.live(pk) + 1
  for i = 1, n do
    cmd[base + 2 * i] = items[i][2]
    cmd[base + 2 * i + 1] = items[i][3]
  end
  return cmd
end

local function decode(s)
  if type(s) ~= "string" then return nil end
  local ok, v = pcall(cjson.decode, scrub(s))
  if ok then return v end
  return scrub(s)
end

-- Builds the API view of one record (HGETALL field list).
local function view(pk, id, flat, integrations)
  local f = {}
  for i = 1, #flat, 2 do f[flat[i]] = flat[i + 1] end
  if not f.t then return nil end
  local event = decode(f.ev)
  local added = decode(f.add)
  if type(event) == "table" and type(added) == "table" then
    for k, v in pairs(added) do event[k] = v end
  end
  local ev = {
    message_id = id,
    pipeline = pk,
    processed_at = tonumber(f.t),
    input = decode(f["in"]),
    event = event,
    enrichment = decode(f.enrich),
    error = f.err and scrub(f.err) or nil,
    integrations = {},
  }
  local byname, order = {}, {}
  local function integ(name)
    local x = byname[name]
    if not x then
      x = { name = name, requests = {} }
      byname[name] = x
      order[#order + 1] = name
    end
    return x
  end
  for _, n in ipairs(integrations) do integ(n) end
  for k, v in pairs(f) do
    if sub(k, 1, 4) == "out:" then
      local x = integ(sub(k, 5))
      local o = decode(v)
      if type(o) == "table" then
        x.blueprint_version, x.warnings, x.dropped, x.error = o.version, o.warnings, o.dropped, o.error
        x.skipped = o.skipped
      end
    elseif sub(k, 1, 2) == "p:" then
      local x = integ(sub(k, 3))
      x.body = scrub(v)
      x.payload = decode(v)
    elseif sub(k, 1, 4) == "req:" then
      local name, attempt = k:match("^req:(.+):(%d+):%d+$")
      if name then
        local r = decode(v)
        if type(r) == "table" then
          r.attempt = r.attempt or tonumber(attempt)
          local reqs = integ(name).requests
          reqs[#reqs + 1] = r
        end
      end
    end
  end
  for _, name in ipairs(order) do
    local x = byname[name]
    for _, r in ipairs(x.requests) do
      if r.body == nil then r.body = x.body end
    end
    x.body = nil
    table.sort(x.requests, function(a, b)
      if (a.at or 0) ~= (b.at or 0) then return (a.at or 0) < (b.at or 0) end
      return (a.attempt or 0) < (b.attempt or 0)
    end)
    if x.payload ~= nil or #x.requests > 0 or x.dropped or x.skipped then
      ev.integrations[#ev.integrations + 1] = x
    end
  end
  return ev
end

-- recent(redis, pipeline_cfg, limit, after_id) → list of events newest
-- first | nil, err. With after_id, only the events pushed after that id
-- (used by the SSE stream); the id not being in the window means "all".
function M.recent(redis, p, limit, after_id)
  local pk = p.key
  local ids, err = redis:call("LRANGE", queue.live(pk), 0, limit - 1)
  if not ids then return nil, err end
  if type(ids) ~= "table" then ids = {} end
  local uniq, seen = {}, {}
  for _, id in ipairs(ids) do
    if after_id and id == after_id then break end
    if not seen[id] then
      seen[id] = true
      uniq[#uniq + 1] = id
    end
  end
  if #uniq == 0 then return {} end
  local cmds = {}
  for i, id in ipairs(uniq) do cmds[i] = { "HGETALL", queue.live_record(pk, id) } end
  local res, perr = redis:pipeline(cmds)
  if not res then return nil, perr end
  local names = {}
  for i, integ in ipairs(p.integrations or {}) do names[i] = integ.name end
  local out = {}
  for i, id in ipairs(uniq) do
    if type(res[i]) == "table" and not res[i].err then
      local v = view(pk, id, res[i], names)
      if v then out[#out + 1] = v end
    end
  end
  return out
end

-- Belt and braces for responses: a final scrub of the encoded JSON.
function M.encode_response(v)
  return scrub(cjson.encode(v))
end

return M
