-- signal/processor.lua — raw stream → pipeline → delivery streams.
--
-- Per worker, one reader task per pipeline consumes queue.raw(pk) with the
-- consumer group queue.RAW_GROUP (consumer "<node>-w<worker>") on its own
-- Redis connection, because XREADGROUP … BLOCK would stall every other
-- command queued behind it on the shared one. For each entry:
--   decode `ev` → identity stitch (signal.identity, when present) →
--   enrichment per Amperity integration (…amperity.enrich, when present) →
--   blueprint per integration (reload.current():get(preset, pk):map(ev, integ))
--   → one payload per integration XADDed to queue.delivery(pk, name) →
--   the live-event record → XACK + XDEL of the raw entry.
-- The entries of one read are processed concurrently, one coroutine each
-- (bounded by MAX_INFLIGHT per pipeline), so one slow enrichment does not
-- serialize the batch; the last coroutine of a batch to finish writes the
-- whole batch in two pipelined round trips: first the delivery XADDs and
-- live records, then — only if every XADD succeeded — XACK and XDEL.
--
-- Failure rules:
--   * a customer script that raises contributes nothing to that event; the
--     event is still delivered and the warning goes to the live event;
--   * an entry that cannot be processed at all (bad JSON, an engine bug in
--     a mapping) goes to the raw dead-letter stream queue.raw_dlq(pk) with
--     its cause, and is acknowledged (`signal dlq replay --integration
--     _processor` puts it back);
--   * Redis failing mid-batch leaves the raw entries pending: the batch is
--     retried with backoff, and if the process dies they are re-claimed.
-- Crash safety: every CLAIM_INTERVAL a claimer task XAUTOCLAIMs entries idle
-- longer than claim_idle_ms (30 s by default; cfg.delivery.claim_idle_ms)
-- from consumers that died,
-- and processes them the same way. At-least-once: a crash between the
-- delivery XADD and the XACK reprocesses the event, and the duplicate payload
-- carries the same message_id.
--
-- Hot reload: init() calls reload.init (once per worker), which loads the
-- presets and customer scripts, watches their directories (inotify) and
-- registers the SIGHUP / POST /v1/admin/reload callback. A first load that
-- fails raises, so the engine does not start without working blueprints.
local core = require "signal.core"
local cjson = require("cjson").new()
local queue = require "signal.redis.keys"
local log = require "signal.observe.log"
local metrics = require "signal.observe.metrics"
local reload = require "signal.pipeline.reload"
local blueprint = require "signal.pipeline.blueprint"
local live = require "signal.observe.live"
local redis_script = require "signal.redis.script"

local type, ipairs, pairs, pcall, tostring, tonumber = type, ipairs, pairs, pcall, tostring, tonumber
local monotonic, spawn, sleep, stopping = core.monotonic, core.spawn, core.sleep, core.stopping
local floor, min, max = math.floor, math.min, math.max
local match = string.match
local decode, encode = cjson.decode, cjson.encode
local scrub = live.scrub

cjson.encode_sparse_array(true)
cjson.encode_invalid_numbers(false)

local M = {}

M.READ_COUNT = 100          -- entries per XREADGROUP
M.BLOCK_MS = 1000           -- XREADGROUP BLOCK: also how fast a stop is noticed
M.MAX_INFLIGHT = 1000       -- entries being processed per pipeline per worker
M.CLAIM_IDLE_MS = 30000
M.CONSUMER_GC_IDLE_MS = 600000   -- empty consumers idle this long are removed
M.WARN_EVERY_S = 10         -- script warnings: at most one log line per integration per this

local identity, enrich        -- optional modules, resolved once in init

-- settings(cfg) → { claim_idle_ms, claim_interval_ms } shared with delivery.
function M.settings(cfg)
  local d = cfg.delivery or {}
  local idle = tonumber(d.claim_idle_ms) or M.CLAIM_IDLE_MS
  idle = max(10, floor(idle))
  return { claim_idle_ms = idle, claim_interval_ms = min(5000, max(50, floor(idle / 2))) }
end

-- optional(name) → module | nil. Absent modules are normal (they land in
-- their own issues); a module that exists but fails to load is an error.
function M.optional(name)
  local ok, mod = pcall(require, name)
  if ok then return mod end
  if not tostring(mod):find("module '" .. name .. "' not found", 1, true) then
    log.error("optional module failed to load", { module = name, reason = tostring(mod) })
  end
  return nil
end

-- Group creation is idempotent: BUSYGROUP means it exists.
function M.ensure_group(redis, stream, group)
  local ok, err = redis:call("XGROUP", "CREATE", stream, group, "0", "MKSTREAM")
  if ok or (err and err:find("BUSYGROUP", 1, true)) then return true end
  return nil, err
end

-- entry_ms("1712345678901-0") → 1712345678901 (the XADD time)
local function entry_ms(id) return tonumber(match(id, "^(%d+)")) end
M.entry_ms = entry_ms

---------------------------------------------------------------------------
-- one event

local function dead(batch, i, cause, evjson, injson)
  batch.dead[#batch.dead + 1] = { i = i, cause = cause, ev = evjson, input = injson }
end

local function process_entry(batch, i, flist)
  local ps = batch.ps
  local t0 = monotonic()
  local id = batch.ids[i]
  local evjson, injson
  if type(flist) == "table" then
    for j = 1, #flist - 1, 2 do
      local k = flist[j]
      if k == "ev" then evjson = flist[j + 1] elseif k == "in" then injson = flist[j + 1] end
    end
  end
  local ok, ev = pcall(decode, evjson or "")
  if not ok or type(ev) ~= "table" then
    local cause = evjson == nil and "raw entry has no ev field"
      or ("event is not valid JSON: " .. tostring(ok and "not an object" or ev))
    return dead(batch, i, cause, evjson, injson)
  end
  local mid = ev.message_id
  if type(mid) ~= "string" or mid == "" then mid = id end
  local pk = ps.pk
  if identity then
    -- A Redis failure is not "nothing known": wait for Redis rather than
    -- send the event without the identity it has (signal.identity's rule).
    local delay = 100
    while true do
      local sok, sres, serr = pcall(identity.stitch, ps.ctx, pk, ev)
      if not sok then
        log.warn("identity stitch failed", { pipeline = pk, reason = tostring(sres) })
        break
      end
      if not serr then break end
      if stopping() then
        batch.keep[i] = true      -- left pending: a later claim processes it
        return
      end
      sleep(delay)
      delay = min(delay * 2, 2000)
    end
  end
  local infos
  if enrich then
    for _, it in ipairs(ps.integrations) do
      if it.type == "amperity" then
        local eok, info = pcall(enrich.run, ps.ctx, ps.p, it.cfg, ev)
        if not eok then info = { error = tostring(info) } end
        if info ~= nil then
          infos = infos or {}
          infos[it.name] = info
        end
      end
    end
  end

  local record = batch.live_on and { "t", floor(core.now() * 1000) } or nil
  local lib = reload.current()
  local version = lib.version
  local rms = entry_ms(id) or ""
  local failed
  for _, it in ipairs(ps.integrations) do
    local bp, berr = lib:get(it.preset, pk)
    local payload, warnings
    if bp then
      local mok
      mok, payload, warnings = pcall(bp.map, bp, ev, it.cfg)
      if not mok then berr, payload, warnings = tostring(payload), nil, nil end
    end
    if berr then
      failed = (failed and (failed .. "; ") or "") .. it.name .. ": mapping failed: " .. berr
      log.error("mapping failed", { pipeline = pk, integration = it.name, reason = berr })
      if record then
        record[#record + 1] = "out:" .. it.name
        record[#record + 1] = live.encode({ error = berr, version = version })
      end
    else
      if warnings then
        metrics.inc("signal_script_warnings_total", it.labels, 1)
        local t = monotonic()
        if t - it.warned_at >= M.WARN_EVERY_S then
          it.warned_at = t
          log.warn("mapping warning (event delivered without the failing script's part)",
            { pipeline = pk, integration = it.name, warning = warnings[1], message_id = mid })
        end
      end
      local pj
      if payload ~= nil then
        local eok
        eok, pj = pcall(encode, payload)
        if not eok then
          failed = (failed and (failed .. "; ") or "") .. it.name .. ": payload is not JSON-encodable: " .. pj
          pj = nil
        else
          batch.outs[#batch.outs + 1] = { "XADD", it.stream, "*", "p", pj, "m", mid, "v", version, "r", rms }
          batch.out_labels[#batch.out_labels + 1] = it.labels
        end
      else
        metrics.inc("signal_payloads_dropped_total", it.labels, 1)
      end
      if record then
        record[#record + 1] = "out:" .. it.name
        record[#record + 1] = scrub(encode({ version = version, warnings = warnings,
                                             dropped = payload == nil or nil }))
        if pj then
          record[#record + 1] = "p:" .. it.name
          record[#record + 1] = scrub(pj)
        end
      end
    end
  end
  if failed then dead(batch, i, failed, evjson, injson) end
  if record then
    record[#record + 1] = "in"
    record[#record + 1] = scrub(injson or "null")
    -- the stored event as is, plus what this step added (not re-encoded)
    record[#record + 1] = "ev"
    record[#record + 1] = scrub(evjson)
    if ev.identity ~= nil or ev.partner_attrs ~= nil or ev.amperity_id ~= nil then
      record[#record + 1] = "add"
      record[#record + 1] = live.encode({ identity = ev.identity, partner_attrs = ev.partner_attrs,
                                          amperity_id = ev.amperity_id })
    end
    if infos then
      record[#record + 1] = "enrich"
      record[#record + 1] = live.encode(infos)
    end
    if failed then
      record[#record + 1] = "err"
      record[#record + 1] = scrub(failed)
    end
    batch.records[#batch.records + 1] = { id = mid, fields = record }
  end
  metrics.observe("signal_event_processing_duration_seconds", ps.labels, monotonic() - t0)
end

-- The coroutine of one entry. Whatever happens inside, the batch's count
-- goes down, so the batch is always written and acknowledged.
local function run_entry(batch, i, flist)
  local ok, err = pcall(process_entry, batch, i, flist)
  if not ok then
    log.error("processing an event failed", { pipeline = batch.ps.pk, id = batch.ids[i], reason = tostring(err) })
    local f = type(flist) == "table" and queue.fields(flist) or {}
    dead(batch, i, "processing failed: " .. tostring(err), f.ev, f["in"])
  end
  batch.left = batch.left - 1
  if batch.left == 0 then M.flush(batch) end
end

---------------------------------------------------------------------------
-- one batch

-- Runs cmds until Redis takes them (backoff), or gives up when stopping:
-- the raw entries then stay pending and a later claim processes them.
local function run_until_ok(redis, cmds, what, pk)
  local delay = 100
  while true do
    local res, err = redis:pipeline(cmds)
    if res then return res end
    log.warn(what .. " failed; retrying", { pipeline = pk, reason = err })
    if stopping() then return nil end
    sleep(delay)
    delay = min(delay * 2, 2000)
  end
end

function M.flush(batch)
  local ps = batch.ps
  local redis = ps.redis
  local pk = ps.pk
  local now_ms = floor(core.now() * 1000)
  local cmds = {}
  for _, c in ipairs(batch.outs) do cmds[#cmds + 1] = c end
  local nouts = #cmds
  for _, d in ipairs(batch.dead) do
    cmds[#cmds + 1] = { "XADD", ps.raw_dlq, "*", "ev", d.ev or "", "in", d.input or "", "e", scrub(d.cause),
                        "t", now_ms, "id", batch.ids[d.i] }
  end
  local ndead = #batch.dead
  local live_first = #cmds + 1
  if batch.live_on and #batch.records > 0 then
    local sha = live.PUSH:ensure(redis)
    if sha then live.batch_commands(cmds, pk, ps.live_max, batch.records, sha) end
  end
  local ok = true
  if #cmds > 0 then
    local res = run_until_ok(redis, cmds, "writing processed events", pk)
    if not res then ok = false
    else
      for i = 1, nouts + ndead do
        if type(res[i]) == "table" and res[i].err then
          ok = false
          log.error("could not enqueue a payload", { pipeline = pk, reason = res[i].err })
        end
      end
      for i = live_first, #cmds do
        if type(res[i]) == "table" and res[i].err then
          if redis_script.noscript(res[i].err) then live.PUSH:forget(redis) end
          log.warn("could not record live events", { pipeline = pk, reason = res[i].err })
          break
        end
      end
    end
  end
  if ok then
    local ack = { "XACK", ps.stream, queue.RAW_GROUP }
    local del = { "XDEL", ps.stream }
    for i, id in ipairs(batch.ids) do
      if not batch.keep[i] then ack[#ack + 1] = id; del[#del + 1] = id end
    end
    if #ack > 3 then run_until_ok(redis, { ack, del }, "acknowledging raw events", pk) end
    metrics.inc("signal_events_processed_total", ps.labels, batch.n - ndead)
    if ndead > 0 then
      metrics.inc("signal_events_dead_lettered_total", ps.labels, ndead)
      for _, d in ipairs(batch.dead) do
        log.warn("event dead-lettered by the processor", { pipeline = pk, id = batch.ids[d.i], cause = d.cause })
      end
    end
    for i, l in ipairs(batch.out_labels) do
      metrics.inc("signal_payloads_enqueued_total", l, 1)
      batch.out_labels[i] = nil
    end
  end
  for _, id in ipairs(batch.ids) do ps.active[id] = nil end
  ps.inflight = ps.inflight - batch.n
end

-- dispatch(ps, entries): starts one coroutine per entry of a read.
local function dispatch(ps, entries)
  local n = 0
  local batch = { ps = ps, ids = {}, outs = {}, out_labels = {}, dead = {}, records = {}, keep = {},
                  live_on = ps.live_max > 0 }
  local flists = {}
  for _, e in ipairs(entries) do
    local id = type(e) == "table" and e[1]
    if type(id) == "string" and not ps.active[id] then
      n = n + 1
      batch.ids[n] = id
      flists[n] = e[2]
      ps.active[id] = true
    end
  end
  if n == 0 then return 0 end
  batch.n, batch.left = n, n
  ps.inflight = ps.inflight + n
  for i = 1, n do spawn(run_entry, batch, i, flists[i]) end
  return n
end
M.dispatch = dispatch

---------------------------------------------------------------------------
-- tasks

-- consume(st, group, max_inflight, dispatch, warn): the read loop shared by
-- the processor and the delivery workers. st holds conn (a dedicated
-- connection: XREADGROUP BLOCK), stream, consumer and inflight (entries
-- being worked on, so reads never exceed max_inflight). Creates the group
-- when missing (again after a NOGROUP, e.g. the stream was deleted); Redis
-- errors back off 100 ms → 2 s; returns once the engine is stopping.
-- warn(key, msg, fields) reports problems (callers may throttle).
function M.consume(st, group, max_inflight, dispatch, warn)
  local delay = 100
  local grouped = false
  while not stopping() do
    if not grouped then
      local ok, err = M.ensure_group(st.conn, st.stream, group)
      if ok then grouped = true else
        warn("group", "cannot create consumer group; retrying", { stream = st.stream, reason = err })
        sleep(delay); delay = min(delay * 2, 2000)
      end
    elseif st.inflight >= max_inflight then
      sleep(2)
    else
      local res, err = st.conn:call("XREADGROUP", "GROUP", group, st.consumer,
        "COUNT", min(M.READ_COUNT, max_inflight - st.inflight), "BLOCK", M.BLOCK_MS,
        "STREAMS", st.stream, ">")
      if type(res) == "table" then
        delay = 100
        local s = res[1]
        if type(s) == "table" and type(s[2]) == "table" then dispatch(st, s[2]) end
      elseif err then
        if err:find("NOGROUP", 1, true) then grouped = false
        else
          warn("read", "reading the stream failed; retrying", { stream = st.stream, reason = err })
          sleep(delay); delay = min(delay * 2, 2000)
        end
      end
    end
  end
end

local function warn_plain(_, msg, fields) log.warn(msg, fields) end

local function reader(ps)
  M.consume(ps, queue.RAW_GROUP, M.MAX_INFLIGHT, dispatch, warn_plain)
end

-- claim(redis, stream, group, consumer, idle_ms, active, fn) → number claimed.
-- XAUTOCLAIM from every consumer; entries this worker is already working on
-- (its own, slow) are skipped. Shared with signal.deliver.worker.
function M.claim(redis, stream, group, consumer, idle_ms, fn, arg, room)
  local cursor, total = "0-0", 0
  for _ = 1, 20 do
    if room and room() <= 0 then break end
    local res, err = redis:call("XAUTOCLAIM", stream, group, consumer, idle_ms, cursor, "COUNT", 100)
    if type(res) ~= "table" then
      if err and not err:find("NOGROUP", 1, true) then
        log.warn("claiming pending entries failed", { stream = stream, reason = err })
      end
      break
    end
    cursor = res[1]
    local entries = res[2]
    if type(entries) == "table" and #entries > 0 then
      local list = {}
      for _, e in ipairs(entries) do
        if type(e) == "table" and type(e[2]) == "table" then list[#list + 1] = e end
      end
      if #list > 0 then
        total = total + fn(arg, list)
      end
    end
    if cursor == "0-0" or type(cursor) ~= "string" then break end
  end
  return total
end

-- gc_consumers: consumers that hold nothing and have not been seen for
-- CONSUMER_GC_IDLE_MS (processes that stopped or died long ago).
function M.gc_consumers(redis, stream, group, own)
  local list = redis:call("XINFO", "CONSUMERS", stream, group)
  if type(list) ~= "table" then return end
  for _, c in ipairs(list) do
    local m = {}
    for i = 1, #c - 1, 2 do m[c[i]] = c[i + 1] end
    if m.name ~= own and tonumber(m.pending) == 0 and (tonumber(m.idle) or 0) > M.CONSUMER_GC_IDLE_MS then
      redis:call("XGROUP", "DELCONSUMER", stream, group, m.name)
    end
  end
end

-- sleep_unless_stopping(ms): sleeps in short steps so a stop is noticed.
local function nap(ms)
  local deadline = monotonic() + ms / 1000
  while not stopping() do
    local left = (deadline - monotonic()) * 1000
    if left <= 0 then return true end
    sleep(min(left, 250))
  end
  return false
end
M.nap = nap

-- claim_loop(st, group, max_inflight, dispatch, on_claimed): the crash-safety
-- loop shared with signal.deliver.worker. Every claim interval it takes over
-- entries a dead consumer left pending (within this worker's free room) and
-- hands them to dispatch; now and then worker 0 removes consumers that are
-- gone and own nothing.
function M.claim_loop(st, group, max_inflight, dispatch, on_claimed)
  local room = function() return max_inflight - st.inflight end
  local rounds = 0
  while nap(st.settings.claim_interval_ms) do
    local n = M.claim(st.redis, st.stream, group, st.consumer, st.settings.claim_idle_ms, dispatch, st, room)
    if n > 0 then on_claimed(n) end
    rounds = rounds + 1
    if core.worker_id == 0 and rounds % 20 == 0 then
      M.gc_consumers(st.redis, st.stream, group, st.consumer)
    end
  end
end

local function claimer(ps)
  M.claim_loop(ps, queue.RAW_GROUP, M.MAX_INFLIGHT, dispatch, function(n)
    log.info("claimed raw events from a stopped consumer", { pipeline = ps.pk, count = n })
  end)
end

---------------------------------------------------------------------------

function M.init(ctx, router)
  local cfg = ctx.cfg
  local presets_dir = core.home and (core.home .. "/presets") or blueprint.default_presets_dir()
  local lib = reload.init { presets_dir = presets_dir, scripts_dir = cfg.scripts_dir }
  identity = M.optional("signal.identity")
  if identity and type(identity.stitch) ~= "function" then identity = nil end
  enrich = M.optional("signal.destinations.amperity.enrich")
  if enrich and type(enrich.run) ~= "function" then enrich = nil end

  live.set_secrets(require("signal.config").secrets(cfg))
  M.states = {}
  local settings = M.settings(cfg)
  for _, p in ipairs(cfg.pipelines) do
    local pk = p.key
    local its = {}
    for _, integ in ipairs(p.integrations or {}) do
      local _, gerr = lib:get(integ.preset or "retail", pk)
      if gerr then error("pipeline " .. pk .. ", integration " .. integ.name .. ": " .. gerr, 0) end
      its[#its + 1] = {
        cfg = integ, name = integ.name, type = integ.type, preset = integ.preset or "retail",
        stream = queue.delivery(pk, integ.name),
        labels = metrics.labels({ pipeline = pk, integration = integ.name }),
        warned_at = -math.huge,
      }
    end
    local ps = {
      ctx = ctx, p = p, pk = pk, integrations = its,
      stream = queue.raw(pk), raw_dlq = queue.raw_dlq(pk),
      consumer = ctx.node .. "-w" .. tostring(core.worker_id),
      redis = ctx.redis,
      conn = nil,
      inflight = 0, active = {},
      live_max = cfg.live_events_max or 0,
      labels = metrics.labels({ pipeline = pk }),
      settings = settings,
    }
    M.states[pk] = ps
    if core.in_engine then
      local conn, cerr = core.redis.connect(cfg.redis)
      if not conn then error(cerr, 0) end
      ps.conn = conn
      spawn(reader, ps)
      spawn(claimer, ps)
    end
  end
end

return M
