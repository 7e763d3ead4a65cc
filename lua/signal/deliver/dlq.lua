-- signal.deliver.dlq — dead letters: list and replay, for `signal dlq` and the
-- admin API (GET /v1/admin/dlq, POST /v1/admin/dlq/replay).
--
--   dlq.list(redis, cfg, { pipeline = K, integration = I, limit = N }) → entries
--   dlq.replay(redis, cfg, { pipeline = K, integration = I, limit = N }) → counts
--   dlq.cli(cfg, "list"|"replay", opts) → exit code (blocking boot state)
--
-- Two kinds of dead letters, both Redis streams (queue.lua):
--   queue.dlq(pk, integration)  payloads delivery gave up on (final status,
--                               or every attempt failed): fields p, m, v, r,
--                               a, h, e, s, k, t
--   queue.raw_dlq(pk)           events the processor could not process at
--                               all (bad JSON …): ev, in, e, t; shown and
--                               selected as integration "_processor"
-- Replay moves entries back where they came from — a payload to its
-- delivery stream with the attempt count reset and a fresh give-up window
-- (field w, the replay time), a raw event to the raw
-- stream — and removes them from the dead letters. Each batch moves with one
-- Lua script (XRANGE + XADD + XDEL) so two concurrent replays never move an
-- entry twice and a crash never loses one.
local core = require "signal.core"
local cjson = require("cjson").new()
local queue = require "signal.redis.keys"
local log = require "signal.observe.log"
local redis_script = require "signal.redis.script"

local type, ipairs, tostring, tonumber = type, ipairs, tostring, tonumber
local floor = math.floor

local M = {}

M.PROCESSOR = "_processor"
M.DEFAULT_LIMIT = 100
M.BATCH = 100

-- KEYS[1] dead letters, KEYS[2] destination stream; ARGV[1] max, ARGV[2]
-- "raw"|"delivery", ARGV[3] now (ms) → number moved
M.REPLAY_SCRIPT = [=[
local entries = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', tonumber(ARGV[1]))
local n = 0
for _, e in ipairs(entries) do
  local f = {}
  for i = 1, #e[2], 2 do f[e[2][i]] = e[2][i + 1] end
  if ARGV[2] == 'raw' then
    redis.call('XADD', KEYS[2], '*', 'ev', f.ev or '', 'in', f['in'] or '')
  elseif f.p and f.p ~= '' then
    redis.call('XADD', KEYS[2], '*', 'p', f.p, 'm', f.m or '', 'v', f.v or '', 'r', f.r or '', 'w', ARGV[3])
  end
  redis.call('XDEL', KEYS[1], e[1])
  n = n + 1
end
return n
]=]

local function targets(cfg, opts)
  local out = {}
  for _, p in ipairs(cfg.pipelines or {}) do
    if not opts.pipeline or opts.pipeline == p.key then
      if not opts.integration or opts.integration == M.PROCESSOR then
        out[#out + 1] = { pipeline = p.key, integration = M.PROCESSOR, key = queue.raw_dlq(p.key),
                          dest = queue.raw(p.key), kind = "raw" }
      end
      for _, integ in ipairs(p.integrations or {}) do
        if not opts.integration or opts.integration == integ.name then
          out[#out + 1] = { pipeline = p.key, integration = integ.name, key = queue.dlq(p.key, integ.name),
                            dest = queue.delivery(p.key, integ.name), kind = "delivery" }
        end
      end
    end
  end
  return out
end

-- check(cfg, opts) → true | nil, message (unknown pipeline or integration)
function M.check(cfg, opts)
  if opts.pipeline then
    local found
    for _, p in ipairs(cfg.pipelines or {}) do if p.key == opts.pipeline then found = p end end
    if not found then return nil, "unknown pipeline " .. tostring(opts.pipeline) end
    if opts.integration and opts.integration ~= M.PROCESSOR then
      local ok
      for _, i in ipairs(found.integrations or {}) do if i.name == opts.integration then ok = true end end
      if not ok then
        return nil, "pipeline " .. opts.pipeline .. " has no integration " .. tostring(opts.integration)
      end
    end
  end
  if opts.limit ~= nil and (not tonumber(opts.limit) or tonumber(opts.limit) < 1) then
    return nil, "limit must be a positive number"
  end
  return true
end

local function decode(s)
  if type(s) ~= "string" or s == "" then return nil end
  local ok, v = pcall(cjson.decode, s)
  if ok then return v end
  return s
end

local function entry_view(t, e)
  local f = queue.fields(e[2] or {})
  local v = {
    id = e[1],
    pipeline = t.pipeline,
    integration = t.integration,
    failed_at = tonumber(f.t) or tonumber((e[1] or ""):match("^(%d+)")),
    error = f.e and log.scrub(f.e) or nil,
  }
  if t.kind == "raw" then
    v.event = decode(log.scrub(f.ev or ""))
    v.input = decode(log.scrub(f["in"] or ""))
    v.raw_id = f.id
  else
    v.message_id = f.m
    v.blueprint_version = f.v
    v.attempts = tonumber(f.a)
    v.status = f.s
    v.kind = f.k
    v.history = decode(f.h)
    v.payload = decode(log.scrub(f.p or ""))
  end
  return v
end

-- list(redis, cfg, opts) → entries (oldest first per stream) | nil, err
function M.list(redis, cfg, opts)
  opts = opts or {}
  local limit = tonumber(opts.limit) or M.DEFAULT_LIMIT
  local out = {}
  for _, t in ipairs(targets(cfg, opts)) do
    if #out >= limit then break end
    local res, err = redis:call("XRANGE", t.key, "-", "+", "COUNT", limit - #out)
    if not res then
      if err then return nil, err end
    elseif type(res) == "table" then
      for _, e in ipairs(res) do out[#out + 1] = entry_view(t, e) end
    end
  end
  return out
end

-- counts(redis, cfg) → { {pipeline, integration, count} … } (non-empty only)
function M.counts(redis, cfg, opts)
  local ts = targets(cfg, opts or {})
  local cmds = {}
  for i, t in ipairs(ts) do cmds[i] = { "XLEN", t.key } end
  if #cmds == 0 then return {} end
  local res, err = redis:pipeline(cmds)
  if not res then return nil, err end
  local out = {}
  for i, t in ipairs(ts) do
    out[#out + 1] = { pipeline = t.pipeline, integration = t.integration, count = tonumber(res[i]) or 0 }
  end
  return out
end

local REPLAY = redis_script.new(M.REPLAY_SCRIPT)

local function run_replay(redis, t, n)
  return REPLAY:call(redis, 2, t.key, t.dest, n, t.kind, floor(core.now() * 1000))
end

-- replay(redis, cfg, opts) → { total = N, streams = { {pipeline, integration, replayed} } } | nil, err
-- opts.limit bounds the total (default: everything).
function M.replay(redis, cfg, opts)
  opts = opts or {}
  local left = tonumber(opts.limit) or math.huge
  local out = { total = 0, streams = {} }
  for _, t in ipairs(targets(cfg, opts)) do
    local moved = 0
    while left > 0 do
      local n, err = run_replay(redis, t, math.min(M.BATCH, left))
      if not n then return nil, err end
      moved = moved + n
      left = left - n
      if n < M.BATCH then break end
    end
    if moved > 0 then
      out.streams[#out.streams + 1] = { pipeline = t.pipeline, integration = t.integration, replayed = moved }
      out.total = out.total + moved
      log.info("dead letters replayed", { pipeline = t.pipeline, integration = t.integration, count = moved })
    end
  end
  return out
end

---------------------------------------------------------------------------
-- CLI: `signal dlq list|replay [-c FILE] [--pipeline K] [--integration I] [--limit N]`

local function iso(ms)
  if not ms then return "-" end
  local s = floor(ms / 1000)
  return os.date("!%Y-%m-%dT%H:%M:%S", s) .. string.format(".%03dZ", ms % 1000)
end

local function pad(s, n)
  s = tostring(s == nil and "-" or s)
  return s .. string.rep(" ", n - #s)
end

-- rows → lines of a left-aligned table; columns as wide as their widest
-- cell (ids are never cut: they are what `replay` and greps need), the last
-- column unpadded.
local function table_lines(rows)
  local widths = {}
  for _, r in ipairs(rows) do
    for i = 1, #r - 1 do widths[i] = math.max(widths[i] or 0, #tostring(r[i])) end
  end
  local out = {}
  for _, r in ipairs(rows) do
    local cells = {}
    for i = 1, #r - 1 do cells[i] = pad(r[i], widths[i]) end
    cells[#r] = tostring(r[#r])
    out[#out + 1] = table.concat(cells, "  ")
  end
  return out
end

function M.cli(cfg, action, opts)
  for _, s in ipairs(require("signal.config").secrets(cfg)) do log.add_secret(s) end
  local ok, cerr = M.check(cfg, opts)
  if not ok then
    io.stderr:write("signal: dlq: ", cerr, "\n")
    return 2
  end
  local redis, err = core.redis.connect(cfg.redis)
  if redis then
    local pong
    pong, err = redis:call("PING")
    if pong ~= "PONG" then redis = nil end
  end
  if not redis then
    io.stderr:write("signal: dlq: Redis is unreachable: ", log.scrub(tostring(err)), "\n")
    return 1
  end

  if action == "list" then
    local entries, lerr = M.list(redis, cfg, opts)
    if not entries then
      io.stderr:write("signal: dlq: ", log.scrub(tostring(lerr)), "\n")
      return 1
    end
    local counts = M.counts(redis, cfg, opts) or {}
    local total = 0
    for _, c in ipairs(counts) do total = total + c.count end
    local rows = { { "PIPELINE", "INTEGRATION", "FAILED AT", "MESSAGE ID", "STATUS", "TRIES", "CAUSE" } }
    for _, e in ipairs(entries) do
      rows[#rows + 1] = { e.pipeline, e.integration, iso(e.failed_at), e.message_id or e.raw_id or e.id,
                          e.status or "-", e.attempts or "-", e.error or "-" }
    end
    for _, line in ipairs(table_lines(rows)) do print(line) end
    print(string.format("%d dead letter%s shown, %d in total", #entries, #entries == 1 and "" or "s", total))
    if total > 0 then print("replay with: signal dlq replay [--pipeline K] [--integration I]") end
    return 0
  end

  local res, rerr = M.replay(redis, cfg, opts)
  if not res then
    io.stderr:write("signal: dlq: replay failed: ", log.scrub(tostring(rerr)), "\n")
    return 1
  end
  for _, s in ipairs(res.streams) do
    print(string.format("replayed %d dead letter%s of %s/%s", s.replayed, s.replayed == 1 and "" or "s",
      s.pipeline, s.integration))
  end
  print(string.format("%d dead letter%s replayed", res.total, res.total == 1 and "" or "s"))
  return 0
end

return M
