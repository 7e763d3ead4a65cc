-- signal.redis.script — the Redis Lua scripts Signal runs (dedupe +
-- XADD, retry moves, dead-letter replays, the rate-limit bucket, live
-- records), called by SHA-1 so a call sends the hash, not the source.
--
--   local MOVE = redis_script.new [[ … ]]
--   local n, err = MOVE:call(redis, 2, key1, key2, arg)   -- EVALSHA, EVAL if unknown
--   cmds[#cmds + 1] = { "EVALSHA", MOVE:ensure(redis), 1, key, … }  -- in a pipeline
--   if redis_script.noscript(reply.err) then reply = MOVE:rerun(redis, cmd) end
--
-- The SHA-1 is computed here (core.sha1_hex), so a single call never needs
-- a SCRIPT LOAD round trip: a Redis that does not know the script (restart,
-- SCRIPT FLUSH, a failover to a new node) answers NOSCRIPT and gets one
-- EVAL, which also caches it there. Pipelines cannot retry one command
-- inside them, so they first make sure the script is loaded on that
-- connection (SCRIPT LOAD once per connection, remembered weakly); a
-- pipelined call that still meets NOSCRIPT (Redis restarted since) is run
-- again on its own with rerun(), so its work is not lost.
local core = require "signal.core"

local find, type, setmetatable = string.find, type, setmetatable

local M = {}

local Script = {}
Script.__index = Script

function M.new(source)
  return setmetatable({ source = source, sha = core.sha1_hex(source),
                        loaded = setmetatable({}, { __mode = "k" }) }, Script)
end

-- noscript(err) → whether a Redis error says the script is not cached there.
function M.noscript(err)
  return type(err) == "string" and find(err, "NOSCRIPT", 1, true) ~= nil
end
local noscript = M.noscript

-- s:call(redis, nkeys, …) → reply | nil, err
function Script:call(redis, nkeys, ...)
  local res, err = redis:call("EVALSHA", self.sha, nkeys, ...)
  if res == nil and noscript(err) then
    self.loaded[redis] = nil
    res, err = redis:call("EVAL", self.source, nkeys, ...)
  end
  return res, err
end

-- s:ensure(redis) → sha | nil, err: loaded on this connection, for pipelines.
function Script:ensure(redis)
  if self.loaded[redis] then return self.sha end
  local sha, err = redis:call("SCRIPT", "LOAD", self.source)
  if not sha then return nil, err end
  self.loaded[redis] = true
  return self.sha
end

-- s:rerun(redis, cmd) → reply | nil, err: cmd, a pipelined { "EVALSHA",
-- sha, nkeys, … } that got NOSCRIPT, run again as EVAL; the next ensure()
-- loads the script again.
function Script:rerun(redis, cmd)
  self.loaded[redis] = nil
  local args = { "EVAL", self.source }
  for i = 3, #cmd do args[i] = cmd[i] end
  return redis:call(unpack(args, 1, #cmd))
end

return M
