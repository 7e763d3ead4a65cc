-- signal.collect — the event API's configuration. The collector itself
-- is C (engine/collect/): every request to an event route is answered there,
-- before Lua sees it, and its rules are there once (engine/API.md
-- core.collect). This module hands it what only the configuration knows and
-- brings its counters to signal.observe.metrics:
--
--   routes            which paths take one event, a batch, or either, the type
--                     a path implies, and whether its senders are servers
--   pipelines         keys, allowed origins, and their Redis key names
--                     (signal.redis.keys owns the layout)
--   cookie_domain, cookie_secret(_previous), trusted_proxies, dedupe_ttl_s
--                                                  from the config file
--   identity TTL      the stitched traits live as long as the cookie keying them
--   histogram buckets signal.observe.metrics's, for the request durations
--
--   POST /v1/t /v1/p /v1/i /v1/g /v1/s /v1/a          datafly.js, analytics.js (one event)
--   POST /v1/track /v1/page /v1/screen /v1/identify /v1/group /v1/alias
--                                                      Segment HTTP Tracking API (server SDKs)
--   POST /v1/batch /v1/b                               {"batch":[…], context?, sentAt?, writeKey?}
--   POST /v1/events                                    server-side: one event or {"batch":[…]}
--   OPTIONS on each of them                            CORS preflight
--
-- What a 200 promises, what each refusal says and what is stored:
-- docs/collector.md.

local core = require "signal.core"
local queue = require "signal.redis.keys"
local metrics = require "signal.observe.metrics"

local ipairs, pairs = ipairs, pairs

local M = {}

local limits = core.collect.limits
M.MAX_BODY = limits.max_body
M.MAX_MESSAGE = limits.max_message
M.MAX_DEPTH = limits.max_depth

-- path, type hint, what it takes, whether its senders are servers ("basic":
-- when the request has Basic credentials and no Origin, as Segment's server
-- SDKs send batches; browsers always send Origin on a POST)
local TYPES = { { "t", "track" }, { "p", "page" }, { "i", "identify" }, { "g", "group" }, { "s", "screen" },
                { "a", "alias" } }
M.ROUTES = {}
for _, t in ipairs(TYPES) do
  M.ROUTES[#M.ROUTES + 1] = { path = "/v1/" .. t[1], hint = t[2], kind = "single", server_side = false }
  M.ROUTES[#M.ROUTES + 1] = { path = "/v1/" .. t[2], hint = t[2], kind = "single", server_side = true }
end
M.ROUTES[#M.ROUTES + 1] = { path = "/v1/batch", kind = "batch", server_side = "basic" }
M.ROUTES[#M.ROUTES + 1] = { path = "/v1/b", kind = "batch", server_side = "basic" }
M.ROUTES[#M.ROUTES + 1] = { path = "/v1/events", kind = "events", server_side = true }

---------------------------------------------------------------------------
-- counters: the collector counts, signal.observe.metrics publishes

local labels = {}          -- pipeline key → { pipeline = pk }, built once
local reason_labels = {}   -- reason → { reason = r }
local route_labels = {}    -- path → method → { route, method }

local function cached(t, k, make)
  local v = t[k]
  if not v then v = make(); t[k] = v end
  return v
end

local function source()
  local st = core.ingest_stats()
  if st == nil then return end
  for _, p in ipairs(st.pipelines) do
    local l = cached(labels, p.key, function() return { pipeline = p.key } end)
    if p.received > 0 then metrics.inc("events_received_total", l, p.received) end
    if p.accepted > 0 then metrics.inc("events_accepted_total", l, p.accepted) end
    if p.deduplicated > 0 then metrics.inc("events_deduplicated_total", l, p.deduplicated) end
  end
  for reason, n in pairs(st.rejected) do
    metrics.inc("events_rejected_total", cached(reason_labels, reason, function() return { reason = reason } end), n)
  end
  for _, r in ipairs(st.routes) do
    local by_method = cached(route_labels, r.path, function() return {} end)
    local l = cached(by_method, r.method, function() return { route = r.path, method = r.method } end)
    metrics.observe_counts("signal_http_request_duration_seconds", l, r.counts, r.sum)
  end
end

---------------------------------------------------------------------------

-- config(ctx, redis) → the table core.ingest_configure takes
function M.config(ctx, redis)
  local pipelines = {}
  for pk, p in pairs(ctx.pipelines) do
    pipelines[#pipelines + 1] = { key = pk, raw = queue.raw(pk), dedupe = queue.dedupe(pk, ""),
                                  identity = queue.identity(pk, ""), origins = p.origins or {} }
  end
  local cfg = ctx.cfg
  return {
    redis = redis, routes = M.ROUTES, pipelines = pipelines,
    dedupe_ttl = cfg.dedupe_ttl_s or 86400, identity_ttl = limits.cookie_max_age,
    cookie_domain = cfg.cookie_domain, trusted_proxies = cfg.trusted_proxies or {},
    cookie_secret = cfg.cookie_secret, cookie_secret_previous = cfg.cookie_secret_previous,
    buckets = metrics.BUCKETS,
  }
end

function M.init(ctx)
  if not core.in_engine then return end
  -- Its own connection: the collector's commands do not queue behind Lua's,
  -- and its replies are read in C only (lite replies, engine/l_redis.c).
  M.redis = M.redis or assert(core.redis.connect(ctx.cfg.redis))
  if not core.ingest_configure(M.config(ctx, M.redis)) then
    error("the collector could not be configured", 0)
  end
  if not M.counting then
    M.counting = true
    metrics.add_source(source)
  end
end

return M
