-- signal.deliver.retry — when a failed delivery is tried again.
--
--   local delays = retry.delays(cfg.delivery)       -- once per config
--   local ms = retry.delay_ms(delays, attempt, retry_after_s)
--
-- The schedule is geometric from first_retry_ms to max_retry_ms over
-- `attempts` tries (1 s … 20 h over 8 attempts spans ≈ 23.7 h: retried for
-- about a day, then dead-lettered). Each delay is stretched by a random
-- 0..JITTER so workers and nodes that failed together do not retry in step,
-- and never shortened, so the schedule stays a lower bound; a vendor's
-- Retry-After is honoured when it asks for longer.
local floor, random = math.floor, math.random

local M = {}

M.JITTER = 0.2

-- delays(delivery) → list of attempts-1 delays in ms (before jitter):
-- delay k = first * (max/first)^((k-1)/(attempts-2)), i.e. geometric from
-- first_retry_ms to max_retry_ms. Jitter is added by delay_ms.
function M.delays(d)
  local n = (d.attempts or 8) - 1
  local first, max = d.first_retry_ms or 1000, d.max_retry_ms or 72000000
  local delays = {}
  if n < 1 then return delays end
  if n == 1 then delays[1] = first; return delays end
  local ratio = (max / first) ^ (1 / (n - 1))
  for k = 1, n do delays[k] = floor(first * ratio ^ (k - 1) + 0.5) end
  delays[n] = max
  return delays
end

-- delay_ms(delays, attempt, retry_after_s[, jitter]) → ms until the next
-- attempt
function M.delay_ms(delays, attempt, retry_after_s, jitter)
  local base = delays[attempt] or delays[#delays] or 1000
  local d = base * (1 + (jitter or M.JITTER) * random())
  if retry_after_s and retry_after_s * 1000 > d then d = retry_after_s * 1000 end
  return floor(d + 0.5)
end

return M
