-- bench/core/redis_rt.lua — Redis round trips per second from Lua inside
-- one engine worker (`signal exec`): sequential calls from one coroutine,
-- the same from 50 concurrent coroutines (hiredis pipelines them on one
-- socket), and explicit pipelines of 100 commands. Prints JSON.
local core = require "signal.core"
local cjson = require "cjson"
local url, n = (...)[1], tonumber((...)[2]) or 100000
local r = assert(core.redis.connect(url))
local out = {}

local t = core.monotonic()
for _ = 1, n / 5 do r:call("SET", "bench:k", "v") end
out.sequential_ops_s = math.floor((n / 5) / (core.monotonic() - t))

local conc, done = 50, 0
t = core.monotonic()
for _ = 1, conc do
  core.spawn(function()
    for _ = 1, n / conc do r:call("SET", "bench:k", "v") end
    done = done + 1
  end)
end
while done < conc do core.sleep(1) end
out.concurrent50_ops_s = math.floor(n / (core.monotonic() - t))

local batch = {}
for i = 1, 100 do batch[i] = { "SET", "bench:k", "v" } end
t = core.monotonic()
for _ = 1, n / 100 do r:pipeline(batch) end
out.pipelined100_ops_s = math.floor(n / (core.monotonic() - t))
print(cjson.encode(out))
