-- bench/collector/layers_app.lua — `signal serve` app that peels the
-- collector's cost into layers, each measured with the same wrk load as
-- run.sh (1 worker, same body), so the gap to nginx can be attributed:
--   POST /const    answers a constant: the engine's own per-request cost
--                  (HTTP parse, request table, coroutine, reply)
--   POST /json     decode + encode the body: nginx's baseline handler, in Signal
--   POST /redis    /json plus one XADD of the body on the shared async
--                  connection: adds the Redis round trip
--   POST /collect  the real collector handler (signal.collector) on a fixed
--                  ctx, no router: what /v1/t costs
local core = require "signal.core"
local cjson = require "cjson.safe"
local collector = require "signal.collector"

local M = {}

function M.start()
  local redis = assert(core.redis.connect(os.getenv("BENCH_REDIS") or "redis://127.0.0.1:6379/0"))
  local H = { ["Content-Type"] = "application/json" }
  local OK = '{"success":true}'
  local ctx = {
    cfg = { dedupe_ttl_s = 86400, trusted_proxies = {} }, redis = redis,
    pipelines = { dk_bench = { key = "dk_bench", origins = {} } },
  }
  local mode = { kind = 1, hint = "track" }
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
    ["/collect"] = function(req) return collector.handle(ctx, mode, req) end,
  }
  return function(req)
    local fn = routes[req.path]
    if not fn then return 404, H, "{}" end
    return fn(req)
  end
end

return M
