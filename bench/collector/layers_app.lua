-- bench/collector/layers_app.lua — `signal serve` app that peels the
-- collector's cost into layers, each measured with the same wrk load as
-- run.sh (1 worker, same body), so the gap to nginx can be attributed:
--   POST /const    answers a constant: the engine's own per-request cost
--                  (HTTP parse, request table, coroutine, reply)
--   POST /json     decode + encode the body: nginx's baseline handler, in Signal
--   POST /redis    /json plus one XADD of the body on the shared async
--                  connection: adds the Redis round trip
--   POST /collect  the collector (engine/collect, in C) configured with this
--                  one route and a fixed pipeline: what /v1/t costs
local core = require "signal.core"
local cjson = require "cjson.safe"
local queue = require "signal.redis.keys"

local M = {}

function M.start()
  local redis = assert(core.redis.connect(os.getenv("BENCH_REDIS") or "redis://127.0.0.1:6379/0"))
  local H = { ["Content-Type"] = "application/json" }
  local OK = '{"success":true}'
  -- the collector answers /collect itself, before this handler is asked
  assert(core.ingest_configure {
    redis = assert(core.redis.connect(os.getenv("BENCH_REDIS") or "redis://127.0.0.1:6379/0")),
    routes = { { path = "/collect", hint = "track", kind = "single", server_side = false } },
    pipelines = { { key = "dk_bench", raw = queue.raw("dk_bench"), dedupe = queue.dedupe("dk_bench", ""),
                    identity = queue.identity("dk_bench", ""), origins = {} } },
    dedupe_ttl = 86400, identity_ttl = core.collect.limits.cookie_max_age, trusted_proxies = {}, buckets = {},
  })
  local routes = {
    ["/const"] = function() return 200, H, OK end,
    ["/json"] = function(req)
      local t = cjson.decode(req.body)
      cjson.encode(t)
      return 200, H, OK
    end,
    ["/redis"] = function(req)
      local t = cjson.decode(req.body)
      local s = cjson.encode(t)
      local id, err = redis:call("XADD", "bench:layers", "MAXLEN", "~", "10000", "*", "ev", s)
      if not id then return 503, H, err end
      return 200, H, OK
    end,
  }
  return function(req)
    local fn = routes[req.path]
    if not fn then return 404, H, "{}" end
    return fn(req)
  end
end

return M
