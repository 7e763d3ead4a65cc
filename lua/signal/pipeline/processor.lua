-- signal.pipeline.processor — raw stream → pipeline → delivery streams.
--
-- Per worker, one reader task per pipeline consumes keys.raw(pk) with the
-- consumer group keys.RAW_GROUP (signal.redis.consumer). For each entry:
--   decode `ev` → identity stitch → enrichment by every provider of the
--   pipeline (signal.pipeline.enrich) → for each integration whose consent
--   rule the event meets (signal.pipeline.consent; the others are counted
--   and shown as skipped in live events), one payload mapped by its
--   destination's blueprint (signal.pipeline.blueprint) → XADDed to
--   keys.delivery(pk, name) → the live-event record → XACK + XDEL of the
--   raw entry.
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
--     a mapping) goes to the raw dead-letter stream keys.raw_dlq(pk) with
--     its cause, and is acknowledged (`signal dlq replay --integration
--     _processor` puts it back);
--   * Redis failing mid-batch leaves the raw entries pending: the batch is
--     retried with backoff, and if the process dies they are re-claimed
--     (signal.redis.consumer's claim loop). At-least-once: a crash between
--     the delivery XADD and the XACK reprocesses the event, and the
--     duplicate payload carries the same message_id.
--
-- Hot reload: init() calls reload.init (once per worker), which loads the
-- presets and customer scripts, watches their directories (inotify) and
-- registers the SIGHUP / POST /v1/admin/reload callback. A first load that
-- fails raises, so the engine does not start without working blueprints.
local core = require "signal.core"
local cjson = require("cjson").new()
local queue = require "signal.redis.keys"
local consumer = require "signal.redis.consumer"
local destinations = require "signal.destinations"
local enrich = require "signal.pipeline.enrich"
local consent = require "signal.pipeline.consent"
local log = require "signal.observe.log"
local metrics = require "signal.observe.metrics"
local reload = require "signal.pipeline.reload"
local blueprint = require "signal.pipeline.blueprint"
local live = require "signal.observe.live"
local stitch = require "signal.pipeline.stitch"
local redis_script = require "signal.redis.script"

local type, ipairs, pairs, pcall, tostring = type, ipairs, pairs, pcall, tostring
local monotonic, spawn, sleep, stopping = core.monotonic, core.spawn, core.sleep, core.stopping
local floor, min = math.floor, math.min
local decode, encode = cjson.decode, cjson.encode
local scrub = live.scrub

cjson.encode_sparse_array(true)
cjson.encode_invalid_numbers(false)

local M = {}

M.MAX_INFLIGHT = 1000       -- entries being processed per pipeline per worker
M.WARN_EVERY_S = 10         -- script warnings: at most one log line per integration per this

local entry_ms = consumer.entry_ms

---------------------------------------------------------------------------
-- one event

local function dead(batch, i, cause, evjson, injson)
  batch.dead[#batch.dead + 1] = { i = i, cause = cause, ev = evjson, input = injson }
end

-- decode_entry(flist) → ev | nil, evjson, injson, cause (when ev is nil)
local function decode_entry(flist)
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
    return nil, evjson, injson, cause
  end
  return ev, evjson, injson
end

-- stitch_event(batch, i, ev) → true, or false when the engine is stopping and the
-- entry stays pending. A Redis failure is not "nothing known": wait for
-- Redis rather than send the event without the identity it has.
local function stitch_event(batch, i, ev)
  local ps = batch.ps
  local delay = 100
  while true do
    local sok, _, serr = pcall(stitch.run, ps.ctx, ps.pk, ev)
    if not sok then
      log.warn("identity stitch failed", { pipeline = ps.pk, reason = tostring(serr) })
      return true
    end
    if not serr then return true end
    if stopping() then
      batch.keep[i] = true      -- left pending: a later claim processes it
      return false
    end
    sleep(delay)
    delay = min(delay * 2, 2000)
  end
end

local function warn_mapping(ps, it, warnings, mid)
  metrics.inc("signal_script_warnings_total", it.labels, 1)
  local t = monotonic()
  if t - it.warned_at >= M.WARN_EVERY_S then
    it.warned_at = t
    log.warn("mapping warning (event delivered without the failing script's part)",
      { pipeline = ps.pk, integration = it.name, warning = warnings[1], message_id = mid })
  end
end

-- map_one(batch, it, ev, lib, mid, rms, record) → failure message | nil.
-- rms: the raw entry's time (ms), kept with the payload for the delivery
-- latency metric.
local function map_one(batch, it, ev, lib, mid, rms, record)
  local ps, version = batch.ps, lib.version
  local skip = it.consent and consent.blocked(it.consent, ev)
  if skip then
    metrics.inc("signal_payloads_consent_blocked_total", it.labels, 1)
    if record then
      record[#record + 1] = "out:" .. it.name
      record[#record + 1] = live.encode({ version = version, skipped = skip })
    end
    return nil
  end
  local bp, berr = lib:get(it.type, it.preset, ps.pk)
  local payload, warnings, ncorrected
  if bp then
    local mok
    mok, payload, warnings, ncorrected = pcall(bp.map, bp, ev, it.cfg)
    if not mok then berr, payload, warnings = tostring(payload), nil, nil end
  end
  if berr then
    log.error("mapping failed", { pipeline = ps.pk, integration = it.name, reason = berr })
    if record then
      record[#record + 1] = "out:" .. it.name
      record[#record + 1] = live.encode({ error = berr, version = version })
    end
    return it.name .. ": mapping failed: " .. berr
  end
  -- the destination's own corrections (counted by it) are not script warnings
  if warnings and #warnings > (ncorrected or 0) then warn_mapping(ps, it, warnings, mid) end
  local pj, failed
  if payload ~= nil then
    local eok
    eok, pj = pcall(encode, payload)
    if not eok then
      failed = it.name .. ": payload is not JSON-encodable: " .. pj
      pj = nil
    else
      batch.outs[#batch.outs + 1] = { "XADD", it.stream, "*", "p", pj, "m", mid, "v", version,
                                      "r", rms }
      batch.out_labels[#batch.out_labels + 1] = it.labels
    end
  else
    metrics.inc("signal_payloads_dropped_total", it.labels, 1)
  end
  if record then
    record[#record + 1] = "out:" .. it.name
    record[#record + 1] = scrub(encode({ version = version, warnings = warnings, dropped = payload == nil or nil }))
    if pj then
      record[#record + 1] = "p:" .. it.name
      record[#record + 1] = scrub(pj)
    end
  end
  return failed
end

-- what stitching and enrichment added to the stored event, for live events
local function additions(ev)
  local add, any = { identity = ev.identity, partner_attrs = ev.partner_attrs }, false
  if ev.identity ~= nil or ev.partner_attrs ~= nil then any = true end
  for f in pairs(destinations.event_fields()) do
    if ev[f] ~= nil then add[f] = ev[f]; any = true end
  end
  return any and add or nil
end

local function finish_record(batch, record, mid, ev, evjson, injson, infos, failed)
  record[#record + 1] = "in"
  record[#record + 1] = scrub(injson or "null")
  -- the stored event as is, plus what this step added (not re-encoded)
  record[#record + 1] = "ev"
  record[#record + 1] = scrub(evjson)
  local add = additions(ev)
  if add then
    record[#record + 1] = "add"
    record[#record + 1] = live.encode(add)
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

local function process_entry(batch, i, flist)
  local ps = batch.ps
  local t0 = monotonic()
  local ev, evjson, injson, cause = decode_entry(flist)
  if not ev then return dead(batch, i, cause, evjson, injson) end
  local mid = ev.message_id
  if type(mid) ~= "string" or mid == "" then mid = batch.ids[i] end
  if not stitch_event(batch, i, ev) then return end
  local infos = enrich.run(ps, ev)
  local record = batch.live_on and { "t", floor(core.now() * 1000) } or nil
  local lib = reload.current()
  local rms = entry_ms(batch.ids[i]) or ""
  local failed
  for _, it in ipairs(ps.integrations) do
    local f = map_one(batch, it, ev, lib, mid, rms, record)
    if f then failed = (failed and (failed .. "; ") or "") .. f end
  end
  if failed then dead(batch, i, failed, evjson, injson) end
  if record then finish_record(batch, record, mid, ev, evjson, injson, infos, failed) end
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
        local r = res[i]
        if type(r) == "table" and r.err and redis_script.noscript(r.err) and cmds[i][1] == "EVALSHA" then
          local again, aerr = live.PUSH:rerun(redis, cmds[i])
          r = again ~= nil and again or { err = aerr }
        end
        if type(r) == "table" and r.err then
          log.warn("could not record live events", { pipeline = pk, reason = r.err })
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
                  live_on = ps.live_max > 0 and not live.paused() }
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

local function warn_plain(_, msg, fields) log.warn(msg, fields) end

local function reader(ps)
  consumer.read_loop(ps, queue.RAW_GROUP, M.MAX_INFLIGHT, dispatch, warn_plain)
end

local function claimer(ps)
  consumer.claim_loop(ps, queue.RAW_GROUP, M.MAX_INFLIGHT, dispatch, function(n)
    log.info("claimed raw events from a stopped consumer", { pipeline = ps.pk, count = n })
  end)
end

---------------------------------------------------------------------------

function M.init(ctx)
  local cfg = ctx.cfg
  local presets_dir = core.home and (core.home .. "/presets") or blueprint.default_presets_dir()
  local lib = reload.init { presets_dir = presets_dir, scripts_dir = cfg.scripts_dir }

  live.set_secrets(require("signal.config").secrets(cfg))
  live.configure(cfg.live_events_max_bytes)
  M.states = {}
  local settings = consumer.settings(cfg)
  if core.in_engine and (cfg.live_events_max or 0) > 0 then
    local keys = {}
    for i, p in ipairs(cfg.pipelines) do keys[i] = p.key end
    spawn(live.watch, ctx.redis, keys, core.worker_id == 0)
  end
  for _, p in ipairs(cfg.pipelines) do
    local pk = p.key
    local its = {}
    for _, integ in ipairs(p.integrations or {}) do
      local _, gerr = lib:get(integ.type, integ.preset, pk)
      if gerr then error("pipeline " .. pk .. ", integration " .. integ.name .. ": " .. gerr, 0) end
      local dest = destinations.get(integ.type)
      its[#its + 1] = {
        cfg = integ, name = integ.name, type = integ.type, preset = integ.preset,
        dest = dest,
        -- the integration's consent_required ({} = none) wins over the
        -- destination's declared default
        consent = consent.rule(integ.consent_required or (dest.consent and dest.consent.requires)),
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
