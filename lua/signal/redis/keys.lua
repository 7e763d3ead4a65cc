-- signal.redis.keys — the Redis key layout every module shares. All keys of a
-- pipeline carry the hash tag {pipeline_key}, so a pipeline's streams, dedupe
-- keys and Lua scripts live in one Redis Cluster slot.
--
--   raw stream       signal:{pk}:raw                 fields ev (canonical JSON), in (input JSON)
--   delivery stream  signal:{pk}:out:<integration>   fields p (payload JSON), m (message_id), …
--   retry schedule   signal:{pk}:retry:<integration> ZSET scored by due time (ms)
--   dead letters     signal:{pk}:dlq:<integration>   stream: payload, error, attempt history
--   dedupe           signal:{pk}:dedupe:<window>     HASH message_id → 1; window = floor(unix s /
--                                                    dedupe_ttl_s), the current and previous kept
--   identity         signal:{pk}:id:<canonical_id>   HASH email, phone, user_id
--   live events      signal:{pk}:live                LIST of message ids (newest first)
--                    signal:{pk}:live:<message_id>   HASH of the event's record
--
-- Keys outside a pipeline (built by their modules, listed here for one map;
-- docs/architecture.md lists every key, with the destinations' own):
--   rate limit       signal:{rl:<type>:<key>}   token bucket per destination rate-limit key
--   metrics          signal:metrics, signal:metrics:gauges, signal:metrics:types
--   destinations     signal:<provider>:…        enrichment caches, in the destination's folder
--   browser slices   signal:hub:<org_id>:<provider>:<canonical_id>
local M = {}

M.RAW_GROUP = "processors"
M.DELIVERY_GROUP = "delivery"

local function k(pk, ...) return "signal:{" .. pk .. "}:" .. table.concat({ ... }, ":") end

function M.raw(pk) return k(pk, "raw") end
function M.delivery(pk, integration) return k(pk, "out", integration) end
function M.retry(pk, integration) return k(pk, "retry", integration) end
function M.dlq(pk, integration) return k(pk, "dlq", integration) end
-- the retry ZSET's members again, scored by when Signal accepted each event
-- (the retry ZSET is scored by due time): the oldest pending age
function M.age(pk, integration) return k(pk, "age", integration) end
-- a failing destination: when it opened (ms); and the probe's lock
function M.circuit(pk, integration) return k(pk, "circuit", integration) end
function M.circuit_probe(pk, integration) return k(pk, "circuit", integration, "probe") end
function M.dedupe(pk, window) return k(pk, "dedupe", window) end
function M.identity(pk, canonical_id) return k(pk, "id", canonical_id) end
function M.live(pk) return k(pk, "live") end
function M.live_record(pk, message_id) return k(pk, "live", message_id) end
-- the live records' sizes (HASH message_id → bytes) and their sum: not under
-- "live:" (message ids are the client's, so any name there could be one)
function M.live_sizes(pk) return k(pk, "livesize") end
function M.live_bytes(pk) return k(pk, "livebytes") end

-- Converts a flat XRANGE/XREADGROUP field list { "ev", "…", "in", "…" } to a map.
function M.fields(list)
  local t = {}
  for i = 1, #list, 2 do t[list[i]] = list[i + 1] end
  return t
end

-- Shapes these keys hold:
--   delivery stream fields: p (payload JSON), m (message_id), v (blueprint
--     version), r (raw stream entry time, ms), w (replay time, ms: restarts
--     the give-up window), a (attempts made), h (attempt history JSON) — w
--     only on replayed entries, a and h on entries moved back from the retry
--     ZSET
--   retry ZSET member: JSON {p, m, v, r, w, a, h}, score = due time (ms);
--     the age ZSET holds the same members scored by r
--   dead letters (per integration): p, m, v, r, a, h, e (cause), s (last
--     status), k (final|exhausted), t (failed at, ms)
--   raw dead letters signal:{pk}:dlq                stream: ev, in, e, t — events the
--                                                    processor could not process at all
--   live record HASH fields: t, in, ev, enrich, err, out:<integration> (payload,
--     version, warnings JSON), req:<integration>:<attempt>:<ms> (vendor request JSON)
--   rate limit       signal:{rl:<type>:<key>}        HASH token bucket (tokens, ts), all nodes
--   metrics          signal:metrics                  HASH series -> value (counters, histograms)
--                    signal:metrics:gauges           HASH series -> value (last writer wins)
--                    signal:metrics:types            HASH metric name -> counter|gauge|histogram
function M.raw_dlq(pk) return k(pk, "dlq") end
-- admin failures   signal:admin:fail:<client ip>   STRING counter, 60 s: throttles admin auth
function M.admin_failures(ip) return "signal:admin:fail:" .. ip end
-- health probe     signal:health:<node>            STRING, 10 s: /healthz's write check
function M.health(node) return "signal:health:" .. node end
function M.ratelimit(key) return "signal:{rl:" .. key .. "}" end
function M.metrics(kind) return kind and ("signal:metrics:" .. kind) or "signal:metrics" end

return M
