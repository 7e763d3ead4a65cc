-- signal.destinations.amperity.enrich — Amperity as an enrichment provider:
-- the visitor's profile attributes on every event, within a time budget.
--
--   local enrich = require "signal.destinations.amperity.enrich"
--   local info = enrich.run(ctx, pipeline_cfg, integration_cfg, ev)
--
-- On success it sets ev.amperity_id, ev.partner_attrs.amperity (the
-- profile's attributes) and, with context personalization,
-- ev.partner_attrs.amperity_personalized; it writes the browser cache
-- (browser.lua) when the identity hub is on; and it returns, for live events:
--   { resolved = true|false, amperity_id, via = "email_sha256",
--     cache = "hit"|"miss"|"negative", calls = n, personalized = bool,
--     error = "…"|nil, duration_ms = … }
-- or { resolved = false, skipped = "no Profile API credentials" }.
--
-- It never raises on vendor or Redis failures and never takes longer than
-- ctx.cfg.enrichment.budget_ms (default 500): the work runs in its own
-- core.spawn'ed task and the caller waits on it with a deadline. On timeout
-- the event goes on with no attributes (error = "timeout after N ms"); the
-- task is not cancelled — it finishes in the background and fills the cache,
-- so the visitor's next event is a hit. Only the caller touches `ev`, and only
-- when the work finished in time, so a late task never mutates an event that
-- has moved on. (Standalone, under busted, core.spawn runs the task to
-- completion at once; the budget is then bounded by profile_timeout_ms.)
--
-- Steps (each in its module): resolve.lua (linking keys, cache, single
-- flight) → personalize.lua (context params, 2-min cache) → browser.lua
-- (allow-listed slice for /v1/enrich). Warnings "partner resolve failed"
-- name the cause without secrets, rate-limited per worker.
local core = require "signal.core"
local log = require "signal.observe.log"
local flight = require "signal.destinations.amperity.flight"
local resolve = require "signal.destinations.amperity.resolve"
local profile = require "signal.destinations.amperity.profile"
local personalize = require "signal.destinations.amperity.personalize"
local browser = require "signal.destinations.amperity.browser"

local type, ipairs, pcall, tostring, setmetatable, floor = type, ipairs, pcall, tostring, setmetatable, math.floor
local monotonic, spawn = core.monotonic, core.spawn

local M = {}

M.HINT_EVERY_S = 60         -- the linking-keys hint, per integration
M.WARN_EVERY_S = 10         -- the same failure reason, per integration
M.HINT_AFTER = 10           -- visitors not matched by any key before the hint
-- Work tasks outlive a timed-out run (they fill the cache). During a vendor
-- outage with long timeouts they could pile up: past this many per worker,
-- new events skip enrichment (reported as an error) until some finish.
M.MAX_PENDING = 2000

local pending = 0

local SKIPPED = "no Profile API credentials"

---------------------------------------------------------------------------
-- rate-limited warnings (per worker)

local last_warn = {}        -- pipeline/integration/reason → monotonic time
local suppressed = {}
local misses = {}           -- pipeline/integration → visitors unmatched since the last match

-- `class` groups reasons whose text varies (counts) under one limit
local function warn(pcfg, icfg, reason, every, class)
  local k = (pcfg.key or "?") .. "\0" .. (icfg.name or "amperity") .. "\0" .. (class or reason)
  local t = monotonic()
  local last = last_warn[k]
  if last and t - last < (every or M.WARN_EVERY_S) then
    suppressed[k] = (suppressed[k] or 0) + 1
    return
  end
  last_warn[k] = t
  local n = suppressed[k]
  suppressed[k] = nil
  log.warn("partner resolve failed", { pipeline = pcfg.key, integration = icfg.name or "amperity",
                                       provider = "amperity", reason = reason, suppressed = n })
end

local function key_list(icfg)
  local names = {}
  for i, lk in ipairs(icfg.linking_keys or {}) do names[i] = lk.key end
  return table.concat(names, ", ")
end

-- After a run of visitors that no configured key matched (every lookup 404),
-- say that the collection's linking_keys may not include the keys configured
-- — at most once a minute.
local function note_unmatched(pcfg, icfg)
  local k = (pcfg.key or "?") .. "\0" .. (icfg.name or "amperity")
  local n = (misses[k] or 0) + 1
  misses[k] = n
  if n >= M.HINT_AFTER then
    warn(pcfg, icfg, "no linking key matched for the last " .. n .. " visitors looked up: the collection's"
      .. " linking_keys may not include the keys configured (" .. key_list(icfg) .. "); ask your Amperity"
      .. " admin to add them (e.g. email_sha256, _dfdid)", M.HINT_EVERY_S, "hint:linking_keys")
  end
end

local function note_matched(pcfg, icfg)
  misses[(pcfg.key or "?") .. "\0" .. (icfg.name or "amperity")] = nil
end

---------------------------------------------------------------------------
-- the work (runs in its own task)

-- A view of the event where partner_attrs.amperity is the just-resolved
-- profile, for personalization sources like partner_attrs.amperity.LifetimeTier.
local function view_of(ev, id, attrs)
  local pa = ev.partner_attrs
  local vpa = setmetatable({ amperity = attrs }, { __index = type(pa) == "table" and pa or nil })
  return setmetatable({ partner_attrs = vpa, amperity_id = id }, { __index = ev })
end

local function work(ctx, _pcfg, icfg, ev, cands, box)
  local st = { calls = 0 }
  box.st = st
  local p = profile.prepare(icfg, ctx.cfg and ctx.cfg.enrichment and ctx.cfg.enrichment.budget_ms)
  local r = resolve.resolve(ctx, icfg, cands, st, p)
  local out = { resolved = r.found, cache = r.cache, error = r.error, reason = r.reason }
  if r.found then
    out.amperity_id, out.via, out.attributes = r.id, r.via, r.attributes
    local mappings = personalize.compile(icfg)
    if mappings then
      local q = personalize.query(mappings, view_of(ev, r.id, r.attributes))
      if q ~= "" then
        local po = personalize.fetch(ctx, icfg, p, r.id, q, st)
        if po.kind == "found" then
          out.personalized = po.attributes
        else
          out.personalize_error = po.reason or po.error or "personalized profile not found"
        end
      end
    end
  end
  -- the browser slice is written before the caller is told: once run()
  -- returns, /v1/enrich already answers with it
  if r.found and ctx.hub_org_id then
    local ok, err = browser.write(ctx.redis, ctx.hub_org_id, icfg, ev.canonical_id, out.attributes,
                                  out.personalized)
    if not ok then out.browser_error = tostring(err) end
  end
  out.calls = st.calls
  return out, st
end

local function run_work(ctx, pcfg, icfg, ev, cands, box)
  local ok, out, st = pcall(work, ctx, pcfg, icfg, ev, cands, box)
  if not ok then
    out = { resolved = false, error = "internal error: " .. tostring(out) }
    st = box.st or { calls = 0 }
    out.calls = st.calls
  end
  -- logging here, not in the caller: a timed-out run still reports its cause
  if out.error then
    warn(pcfg, icfg, out.error)
  elseif out.personalize_error then
    warn(pcfg, icfg, "personalization: " .. out.personalize_error)
  elseif out.resolved then
    note_matched(pcfg, icfg)
  elseif out.cache == "miss" then
    if st.refused then
      warn(pcfg, icfg, "Amperity refused linking key " .. st.refused .. " (400): it is not in the collection's"
        .. " linking_keys; ask your Amperity admin to add it, or remove it from linking_keys",
        M.HINT_EVERY_S, "refused:" .. st.refused)
    end
    note_unmatched(pcfg, icfg)
  end
  if out.browser_error then warn(pcfg, icfg, "browser cache: " .. out.browser_error) end
  box.out = out
  box.done = true
  pending = pending - 1
end

---------------------------------------------------------------------------
-- entry

local function ms_since(t0)
  return floor((monotonic() - t0) * 1000 * 100 + 0.5) / 100
end

-- pending_work() → enrichment tasks running in this worker (metrics, specs)
function M.pending_work() return pending end

-- enabled(icfg) → true when the integration can call the Profile API
function M.enabled(icfg)
  return type(icfg.profile_api_key) == "string" and icfg.profile_api_key ~= ""
    and type(icfg.profile_collection_id) == "string" and icfg.profile_collection_id ~= ""
end

local function run(ctx, pcfg, icfg, ev)
  if not M.enabled(icfg) then return { resolved = false, skipped = SKIPPED } end
  local t0 = monotonic()
  local budget = ctx.cfg and ctx.cfg.enrichment and ctx.cfg.enrichment.budget_ms or 500

  -- no I/O yet: identifiers and hashes are read from the event now, while it
  -- is certainly this event
  local ok, cands = pcall(resolve.candidates, icfg, ev)
  if not ok then
    return { resolved = false, error = "internal error: " .. tostring(cands), calls = 0, duration_ms = ms_since(t0) }
  end
  if #cands == 0 then
    return { resolved = false, reason = "no linking key value on the event", calls = 0, duration_ms = ms_since(t0) }
  end

  if pending >= M.MAX_PENDING then
    warn(pcfg, icfg, "enrichment saturated: " .. pending .. " Profile API lookups still pending in this worker;"
      .. " events pass without attributes until they finish", nil, "saturated")
    return { resolved = false, error = "enrichment saturated", calls = 0, duration_ms = ms_since(t0) }
  end
  local box = {}
  pending = pending + 1
  spawn(run_work, ctx, pcfg, icfg, ev, cands, box)
  if not flight.await(box, t0 + budget / 1000) then
    warn(pcfg, icfg, "timeout after " .. budget .. " ms (enrichment.budget_ms): the event went on without"
      .. " attributes; the lookup continues in the background and fills the cache", nil, "timeout")
    return { resolved = false, error = "timeout after " .. budget .. " ms",
             calls = box.st and box.st.calls or 0, duration_ms = ms_since(t0) }
  end

  local out = box.out
  local info = { resolved = out.resolved, amperity_id = out.amperity_id, via = out.via, cache = out.cache,
                 calls = out.calls, error = out.error, reason = out.reason, duration_ms = ms_since(t0) }
  if out.resolved then
    ev.amperity_id = out.amperity_id
    local pa = ev.partner_attrs
    if type(pa) ~= "table" then
      pa = {}
      ev.partner_attrs = pa
    end
    pa.amperity = out.attributes
    if out.personalized then
      pa.amperity_personalized = out.personalized
      info.personalized = true
    end
    if out.personalize_error then info.error = "personalization: " .. out.personalize_error end
  end
  return info
end

-- Metrics: one counter by outcome — the cache hits and misses of the
-- Profile API cache, or why there was no lookup — and a duration histogram.
-- Label tables are built once per series (metrics caches their rendering).
local metrics = require "signal.observe.metrics"
local series = {}

local function outcome_of(info)
  if info.skipped then return "skipped" end
  if info.error then
    if info.error:find("^timeout") then return "timeout" end
    if info.error == "enrichment saturated" then return "saturated" end
    if not info.resolved then return "error" end
  end
  if info.cache then return info.cache end          -- hit | miss | negative
  if info.reason then return "no_linking_key" end
  return info.resolved and "resolved" or "unresolved"
end

function M.run(ctx, pcfg, icfg, ev)
  local info = run(ctx, pcfg, icfg, ev)
  local outcome = outcome_of(info)
  local key = pcfg.key .. "\0" .. (icfg.name or "amperity") .. "\0" .. outcome
  local s = series[key]
  if not s then
    s = { count = { pipeline = pcfg.key, integration = icfg.name or "amperity", outcome = outcome },
          time = { pipeline = pcfg.key, integration = icfg.name or "amperity" } }
    series[key] = s
  end
  metrics.inc("signal_enrichment_total", s.count, 1)
  if info.duration_ms then metrics.observe("signal_enrichment_duration_seconds", s.time, info.duration_ms / 1000) end
  return info
end

return M
