-- signal/queue.lua — the Redis key layout every module shares. All keys of a
-- pipeline carry the hash tag {pipeline_key}, so a pipeline's streams, dedupe
-- keys and Lua scripts live in one Redis Cluster slot.
--
--   raw stream       signal:{pk}:raw                 fields ev (canonical JSON), in (input JSON)
--   delivery stream  signal:{pk}:out:<integration>   fields p (payload JSON), m (message_id), …
--   retry schedule   signal:{pk}:retry:<integration> ZSET scored by due time (ms)
--   dead letters     signal:{pk}:dlq:<integration>   stream: payload, error, attempt history
--   dedupe           signal:{pk}:seen:<message_id>   24 h
--   identity         signal:{pk}:id:<canonical_id>   HASH email, phone, user_id
--   live events      signal:{pk}:live                LIST of message ids (newest first)
--                    signal:{pk}:live:<message_id>   HASH of the event's record
local M = {}

M.RAW_GROUP = "processors"
M.DELIVERY_GROUP = "delivery"

local function k(pk, ...) return "signal:{" .. pk .. "}:" .. table.concat({ ... }, ":") end

function M.raw(pk) return k(pk, "raw") end
function M.delivery(pk, integration) return k(pk, "out", integration) end
function M.retry(pk, integration) return k(pk, "retry", integration) end
function M.dlq(pk, integration) return k(pk, "dlq", integration) end
function M.seen(pk, message_id) return k(pk, "seen", message_id) end
function M.identity(pk, canonical_id) return k(pk, "id", canonical_id) end
function M.live(pk) return k(pk, "live") end
function M.live_record(pk, message_id) return k(pk, "live", message_id) end

-- Converts a flat XRANGE/XREADGROUP field list { "ev", "…", "in", "…" } to a map.
function M.fields(list)
  local t = {}
  for i = 1, #list, 2 do t[list[i]] = list[i + 1] end
  return t
end

return M
