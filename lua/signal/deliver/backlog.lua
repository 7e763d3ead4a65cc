-- signal.deliver.backlog — how far behind each destination is, read from
-- Redis at the moment it is asked (the numbers /metrics and
-- /v1/admin/status show, exact whatever node answers).
--
--   local rows = backlog.read(redis, cfg)   -- rows[pk][integration] = {
--     backlog           payloads not yet delivered: queued or in flight in
--                       the delivery stream, plus scheduled retries
--     retry_scheduled   of which scheduled retries
--     lag_s             age of the oldest payload in the delivery stream
--     oldest_pending_s  age of the oldest payload not yet delivered
--                       (stream or retry schedule), since Signal accepted it
--     failing_since     ms the destination's circuit opened, or nil
--     drain_estimate_s  backlog ÷ (rate limit × batch size): the least time
--                       the backlog needs at the destination's pace, or nil
--                       while the destination is failing
--   }
--
-- One pipelined round trip per pipeline: the oldest stream entry carries
-- the accept time (field r) and the age ZSET scores retries by it.
local core = require "signal.core"
local queue = require "signal.redis.keys"
local destinations = require "signal.destinations"
local pace = require "signal.deliver.pace"

local type, ipairs, tonumber, max = type, ipairs, tonumber, math.max

local M = {}

-- accepted_ms(xrange_reply) → the r field of the first entry, or nil
local function accepted_ms(reply)
  local first = type(reply) == "table" and reply[1]
  local fields = type(first) == "table" and first[2]
  if type(fields) ~= "table" then return nil end
  for i = 1, #fields - 1, 2 do
    if fields[i] == "r" then return tonumber(fields[i + 1]) end
  end
  return nil
end

local function age_s(now_ms, ms) return ms and max(0, (now_ms - ms) / 1000) or nil end

local PER = 5   -- commands per integration

-- read(redis, cfg) → rows | nil, err
function M.read(redis, cfg)
  local out = {}
  local d = cfg.delivery or {}
  for _, p in ipairs(cfg.pipelines or {}) do
    local pk, cmds = p.key, {}
    for _, integ in ipairs(p.integrations or {}) do
      local name = integ.name
      cmds[#cmds + 1] = { "XLEN", queue.delivery(pk, name) }
      cmds[#cmds + 1] = { "ZCARD", queue.retry(pk, name) }
      cmds[#cmds + 1] = { "XRANGE", queue.delivery(pk, name), "-", "+", "COUNT", 1 }
      cmds[#cmds + 1] = { "ZRANGE", queue.age(pk, name), 0, 0, "WITHSCORES" }
      cmds[#cmds + 1] = { "GET", queue.circuit(pk, name) }
    end
    local rows = {}
    out[pk] = rows
    if #cmds > 0 then
      local res, err = redis:pipeline(cmds)
      if not res then return nil, err end
      local now_ms = core.now() * 1000
      for i, integ in ipairs(p.integrations) do
        local b = (i - 1) * PER
        local queued, retries = tonumber(res[b + 1]) or 0, tonumber(res[b + 2]) or 0
        local stream_ms = accepted_ms(res[b + 3])
        local zoldest = type(res[b + 4]) == "table" and tonumber(res[b + 4][2]) or nil
        local oldest = stream_ms
        if zoldest and (not oldest or zoldest < oldest) then oldest = zoldest end
        local failing = tonumber(res[b + 5])
        local total = queued + retries
        local dest = destinations.get(integ.type)
        local per_s = dest and pace.rate(d, integ, dest) * pace.batch_size(integ, dest)
        rows[integ.name] = {
          backlog = total, retry_scheduled = retries,
          lag_s = age_s(now_ms, stream_ms), oldest_pending_s = age_s(now_ms, oldest),
          failing_since = failing,
          drain_estimate_s = (not failing and per_s) and total / per_s or nil,
        }
      end
    end
  end
  return out
end

return M
