-- bench/enrich/workload.lua — the enrichment workload, run as one engine task
-- (`signal exec bench/enrich/workload.lua MODE CONFIG SANDBOX_URL [ENGINE_URL]`):
--
--   setup      add V visitors to the sandbox (profile bench-<i>, _dfdid
--              dfid_bench_<i>, email bench<i>@example.com) — V = $VISITORS (100)
--   direct     N events ($EVENTS, 1000) of those V visitors (event i → visitor
--              i % V) through enrich.run, C at a time ($CONC, 50), exactly as
--              the processor calls it; then reports the sandbox's Profile API
--              calls and enrich.run's own latency (p50/p99 of duration_ms) per
--              cache state. Run twice: cold (empty cache) then warm.
--   collector  the same N events POSTed to the engine's /v1/t with each
--              visitor's _dfdid cookie; waits until the processor has
--              delivered all N to the sandbox, then reports the calls.
--   hub        fills the browser cache of the V visitors (one enrich.run
--              each) so /v1/enrich has something to serve to wrk.
-- Prints one JSON line.
local core = require "signal.core"
local cjson = require "cjson"
local config = require "signal.config"
local enrich = require "signal.destinations.amperity.enrich"

local args = ...
local mode, config_path, sandbox = args[1], args[2], args[3]
local engine_url = args[4]
local V = tonumber(os.getenv("VISITORS") or "") or 100
local N = tonumber(os.getenv("EVENTS") or "") or 1000
local C = tonumber(os.getenv("CONC") or "") or 50

local function http(method, url, body, headers)
  headers = headers or {}
  headers["Content-Type"] = "application/json"
  local res, err = core.http.request { method = method, url = url, body = body, headers = headers, timeout_ms = 10000 }
  assert(res, err)
  return res
end

local function stats()
  return cjson.decode(http("GET", sandbox .. "/_sandbox/stats").body)
end

local function pct(list, p)
  if #list == 0 then return 0 end
  table.sort(list)
  return list[math.max(1, math.ceil(#list * p))]
end

local cfg = assert(config.load(config_path))
local pcfg = cfg.pipelines[1]
local icfg = pcfg.integrations[1]
local redis = assert(core.redis.connect(cfg.redis))
local ctx = { cfg = cfg, redis = redis, pipelines = { [pcfg.key] = pcfg }, hub_org_id = cfg.identity_hub.org_id }

local CATEGORIES = { "shoes", "jackets", "packs" }

local function event_of(i)
  local v = i % V
  return { type = "track", event = "Product Viewed", message_id = "bench-" .. i, canonical_id = "dfid_bench_" .. v,
           traits = {}, identity = { email = "bench" .. v .. "@example.com" },
           properties = { category = CATEGORIES[i % #CATEGORIES + 1] }, context = { page = { path = "/p" } } }
end

local out = { mode = mode, visitors = V, events = N }

if mode == "setup" then
  http("POST", sandbox .. "/_sandbox/reset")
  for v = 0, V - 1 do
    http("POST", sandbox .. "/_sandbox/profiles", cjson.encode({
      collection = icfg.profile_collection_id, profile_id = "bench-" .. v,
      keys = { email_sha256 = core.sha256_hex("bench" .. v .. "@example.com"), _dfdid = "dfid_bench_" .. v },
      attributes = { Persona = "Value Hunter", FavoriteBrand = "Trailblaze", LifetimeTier = "Gold",
                     InternalScore = v / V },
      personalized = { pageCategory = { shoes = { Recommended = "Trail Runner" } } } }))
  end
  out.added = V

elseif mode == "direct" then
  local before = stats()
  local durations = { hit = {}, miss = {}, negative = {} }
  local next_i, done, resolved, errors = 0, 0, 0, 0
  local t0 = core.monotonic()
  for _ = 1, C do
    core.spawn(function()
      while next_i < N do
        local i = next_i
        next_i = next_i + 1
        local info = enrich.run(ctx, pcfg, icfg, event_of(i))
        if info.resolved then resolved = resolved + 1 end
        if info.error then errors = errors + 1 end
        local d = durations[info.cache or "miss"] or durations.miss
        d[#d + 1] = info.duration_ms
        done = done + 1
      end
    end)
  end
  while done < N do core.sleep(5) end
  local elapsed = core.monotonic() - t0
  local after = stats()
  out.resolved, out.errors = resolved, errors
  out.lookups = after.lookups - before.lookups
  out.profile_calls = after.profiles - before.profiles
  out.calls_per_1000_events = math.floor((out.lookups + out.profile_calls) * 1000 / N + 0.5)
  out.events_per_s = math.floor(N / elapsed)
  for k, d in pairs(durations) do
    if #d > 0 then out["ms_" .. k] = { n = #d, p50 = pct(d, 0.5), p99 = pct(d, 0.99) } end
  end

elseif mode == "collector" then
  local before = stats()
  local key = pcfg.key
  local next_i, done = 0, 0
  for _ = 1, C do
    core.spawn(function()
      while next_i < N do
        local i = next_i
        next_i = next_i + 1
        local ev = event_of(i)
        local body = cjson.encode({ event = ev.event, anonymousId = "anon-" .. (i % V), messageId = ev.message_id,
                                    properties = ev.properties, context = { traits = { email = ev.identity.email } } })
        local res = http("POST", engine_url .. "/v1/t", body, { ["X-Pipeline-Key"] = key,
                                                                Cookie = "_dfdid=" .. ev.canonical_id })
        assert(res.status == 200, res.body)
        done = done + 1
      end
    end)
  end
  while done < N do core.sleep(5) end
  local deadline = core.monotonic() + 60
  local s = stats()
  while s.events - before.events < N and core.monotonic() < deadline do
    core.sleep(100)
    s = stats()
  end
  out.delivered = s.events - before.events
  out.lookups = s.lookups - before.lookups
  out.profile_calls = s.profiles - before.profiles
  out.calls_per_1000_events = math.floor((out.lookups + out.profile_calls) * 1000 / N + 0.5)

elseif mode == "hub" then
  local n = 0
  for v = 0, V - 1 do
    local info = enrich.run(ctx, pcfg, icfg, event_of(v))
    if info.resolved then n = n + 1 end
  end
  out.browser_keys = n
end

print(cjson.encode(out))
