-- signal.deliver.retry — when a failed delivery is tried again, and when
-- Signal gives up on it.
--
--   local policy = retry.policy(cfg.delivery)         -- once per config
--   local ms = retry.delay_ms(policy, attempt, retry_after_s)
--   local why = retry.exhausted(policy, attempt, accepted_ms, now_ms)
--
-- The wait doubles from first_retry_ms after each failed attempt and is
-- capped at max_retry_ms (10 minutes by default): a vendor back after an
-- outage is tried again within minutes, not hours. A payload is given up
-- (dead-lettered, replayable) once give_up_after_ms (24 h by default) have
-- passed since Signal accepted it, or after `attempts` tries when that is
-- set. Each wait is stretched by a random 0..JITTER so workers and nodes that
-- failed together do not retry in step, and never shortened, so the schedule
-- stays a lower bound; a vendor's Retry-After is honoured when it asks for
-- longer. signal.deliver.outcome also pulls scheduled retries forward as
-- soon as the vendor is seen healthy again (the circuit).
local floor, random, min = math.floor, math.random, math.min

local M = {}

M.JITTER = 0.2
M.FIRST_MS, M.MAX_MS = 1000, 600000
M.GIVE_UP_MS = 24 * 3600 * 1000

-- delays(delivery) → the waits in ms (before jitter), attempt by attempt:
-- first, 2 × first, … up to max; later attempts wait the last one.
function M.delays(d)
  local first, max = d.first_retry_ms or M.FIRST_MS, d.max_retry_ms or M.MAX_MS
  local n = d.attempts and (d.attempts - 1) or 64
  local delays, wait = {}, first
  for k = 1, n do
    delays[k] = min(wait, max)
    if wait >= max then break end
    wait = wait * 2
  end
  return delays
end

-- policy(delivery) → { delays, attempts (nil: no limit), give_up_ms }
function M.policy(d)
  return { delays = M.delays(d), attempts = d.attempts, give_up_ms = d.give_up_after_ms or M.GIVE_UP_MS }
end

-- delay_ms(policy, attempt, retry_after_s[, jitter]) → ms until the next
-- attempt (a bare delays list is accepted for policy)
function M.delay_ms(policy, attempt, retry_after_s, jitter)
  local delays = policy.delays or policy
  local base = delays[attempt] or delays[#delays] or M.FIRST_MS
  local d = base * (1 + (jitter or M.JITTER) * random())
  if retry_after_s and retry_after_s * 1000 > d then d = retry_after_s * 1000 end
  return floor(d + 0.5)
end

-- exhausted(policy, attempt, accepted_ms, now_ms) → nil while the payload
-- may be tried again, else why not: "attempts" or "window"
function M.exhausted(policy, attempt, accepted_ms, now_ms)
  if policy.attempts and attempt >= policy.attempts then return "attempts" end
  if accepted_ms and now_ms - accepted_ms >= policy.give_up_ms then return "window" end
  return nil
end

return M
