-- signal.deliver.pace — how fast an integration's destination is sent to:
-- its request rate and the payloads per request. The delivery worker sends
-- at this pace; the backlog estimate divides by it.
--
--   local rate, key = pace.rate(cfg.delivery, integ, dest)  -- requests/s, bucket key
--   local n = pace.batch_size(integ, dest)                  -- payloads per request
local tostring, max, min = tostring, math.max, math.min

local M = {}

M.DEFAULT_RATE = 100

-- rate(delivery, integ, dest) → requests per second, and the rate-limit
-- key (the destination's tenant, account or host, prefixed by its type):
-- the integration's rate_limit, else delivery.rate_limit_per_tenant, else
-- the destination's own rate
function M.rate(d, integ, dest)
  local dd = dest.delivery
  local key = dd.rate_limit_key and dd.rate_limit_key(integ) or integ.name
  local rate = integ.rate_limit or (d and d.rate_limit_per_tenant) or dd.rate_limit or M.DEFAULT_RATE
  return rate, integ.type .. ":" .. tostring(key)
end

-- batch_size(integ, dest) → payloads per request: the configured size (when
-- the destination lets the user choose), at most its maximum
function M.batch_size(integ, dest)
  local dd = dest.delivery
  local n = dd.batch_size and dd.batch_size(integ) or 1
  return max(1, min(n, dd.max_batch or 1))
end

return M
