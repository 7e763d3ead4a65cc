-- signal.observe.prometheus — GET /metrics: what signal.observe.metrics
-- gathered in Redis from every worker and node, plus queue gauges computed
-- from Redis at scrape time (so they are exact), in Prometheus text format
-- 0.0.4.
--
--   local text = prometheus.scrape(redis, cfg)
--   prometheus.xinfo_groups(redis, stream)   -- consumer groups of a stream
local core = require "signal.core"
local queue = require "signal.redis.keys"
local metrics = require "signal.observe.metrics"
local backlog = require "signal.deliver.backlog"

local type, pairs, ipairs, tostring, tonumber = type, pairs, ipairs, tostring, tonumber
local concat, sort = table.concat, table.sort
local format, sub = string.format, string.sub

local M = {}


local function family_of(name, typemap)
  for _, suf in ipairs({ "_bucket", "_count", "_sum" }) do
    if sub(name, -#suf) == suf then
      local base = sub(name, 1, -#suf - 1)
      if typemap[base] == "histogram" then return base end
    end
  end
  return name
end

local function le_of(s)
  local le = s:match('le="([^"]*)"')
  if not le then return -1 end
  if le == "+Inf" then return math.huge end
  return tonumber(le) or -1
end

local function fmtnum(v)
  local n = tonumber(v)
  if not n then return tostring(v) end
  if n == math.floor(n) and n < 1e15 and n > -1e15 then return format("%d", n) end
  return format("%.9g", n)
end

-- render(values, typemap) -> Prometheus text. values: series -> value.
function M.render(values, typemap)
  local fams, order = {}, {}
  for s, v in pairs(values) do
    local name = s:match("^([^{]+)") or s
    local fam = family_of(name, typemap)
    local f = fams[fam]
    if not f then
      f = {}
      fams[fam] = f
      order[#order + 1] = fam
    end
    f[#f + 1] = { s = s, v = v, name = name, rest = s:gsub('le="[^"]*"', "") }
  end
  sort(order)
  local out = {}
  for _, fam in ipairs(order) do
    local t = typemap[fam] or "untyped"
    out[#out + 1] = "# HELP " .. fam .. " " .. (metrics.HELP[fam] or fam)
    out[#out + 1] = "# TYPE " .. fam .. " " .. t
    local f = fams[fam]
    sort(f, function(a, b)
      if a.rest ~= b.rest then return a.rest < b.rest end
      if a.name ~= b.name then return a.name < b.name end
      return le_of(a.s) < le_of(b.s)
    end)
    for _, e in ipairs(f) do out[#out + 1] = e.s .. " " .. fmtnum(e.v) end
  end
  out[#out + 1] = ""
  return concat(out, "\n")
end

local function pairs_to_map(list, into)
  into = into or {}
  if type(list) == "table" then
    for i = 1, #list, 2 do into[list[i]] = list[i + 1] end
  end
  return into
end

local function xinfo_groups(redis, key)
  local res = redis:call("XINFO", "GROUPS", key)
  if type(res) ~= "table" then return nil end
  local out = {}
  for _, g in ipairs(res) do
    local m = pairs_to_map(g)
    out[m.name] = m
  end
  return out
end
M.xinfo_groups = xinfo_groups

-- Queue gauges, exact at scrape time (the same numbers /v1/admin/status shows).
function M.queue_gauges(redis, cfg, values, typemap)
  local function put(name, l, v)
    if v == nil or v == core.null then return end
    values[metrics.series_name(name, l)] = v
    typemap[name] = "gauge"
  end
  local cmds, what = {}, {}
  for _, p in ipairs(cfg.pipelines) do
    local pk = p.key
    cmds[#cmds + 1] = { "XLEN", queue.raw(pk) }
    what[#what + 1] = { "signal_queue_length", { pipeline = pk, stream = "raw" } }
    cmds[#cmds + 1] = { "XLEN", queue.raw_dlq(pk) }
    what[#what + 1] = { "signal_dead_letter_depth", { pipeline = pk, integration = "_processor" } }
    for _, integ in ipairs(p.integrations) do
      local l = { pipeline = pk, integration = integ.name }
      cmds[#cmds + 1] = { "XLEN", queue.delivery(pk, integ.name) }
      what[#what + 1] = { "signal_queue_length", { pipeline = pk, stream = "delivery", integration = integ.name } }
      cmds[#cmds + 1] = { "ZCARD", queue.retry(pk, integ.name) }
      what[#what + 1] = { "signal_retry_scheduled", l }
      cmds[#cmds + 1] = { "XLEN", queue.dlq(pk, integ.name) }
      what[#what + 1] = { "signal_dead_letter_depth", l }
    end
  end
  if #cmds > 0 then
    local res = redis:pipeline(cmds)
    if res then
      for i, w in ipairs(what) do
        if type(res[i]) == "number" then put(w[1], w[2], res[i]) end
      end
    end
  end
  -- how far behind each destination is
  local rows = backlog.read(redis, cfg)
  for pk, by_name in pairs(rows or {}) do
    for name, b in pairs(by_name) do
      local l = { pipeline = pk, integration = name }
      put("signal_delivery_backlog", l, b.backlog)
      put("signal_delivery_lag_seconds", l, b.lag_s or 0)
      put("signal_delivery_oldest_pending_seconds", l, b.oldest_pending_s or 0)
      put("signal_delivery_failing", l, b.failing_since and 1 or 0)
    end
  end
  -- pending and lag per consumer group
  for _, p in ipairs(cfg.pipelines) do
    local streams = { { queue.raw(p.key), queue.RAW_GROUP, { pipeline = p.key, stream = "raw" } } }
    for _, integ in ipairs(p.integrations) do
      streams[#streams + 1] = { queue.delivery(p.key, integ.name), queue.DELIVERY_GROUP,
        { pipeline = p.key, stream = "delivery", integration = integ.name } }
    end
    for _, s in ipairs(streams) do
      local groups = xinfo_groups(redis, s[1])
      local g = groups and groups[s[2]]
      if g then
        put("signal_queue_pending", s[3], tonumber(g.pending))
        put("signal_queue_lag", s[3], tonumber(g.lag))
      end
    end
  end
end

function M.scrape(redis, cfg)
  local flushed = metrics.flush(redis)
  local values, typemap = {}, {}
  local res, err = redis:pipeline({
    { "HGETALL", queue.metrics() },
    { "HGETALL", queue.metrics("gauges") },
    { "HGETALL", queue.metrics("types") },
  })
  if not res then return nil, err end
  pairs_to_map(res[1], values)
  pairs_to_map(res[2], values)
  pairs_to_map(res[3], typemap)
  for name, t in pairs(metrics.types()) do if not typemap[name] then typemap[name] = t end end
  if not flushed then
    -- Redis refuses writes (out of memory): what this worker counted since
    -- is not lost, and shows here until it can be flushed
    local c, s = metrics.pending()
    for k, v in pairs(c) do values[k] = (tonumber(values[k]) or 0) + v end
    for k, v in pairs(s) do values[k] = (tonumber(values[k]) or 0) + v end
  end
  if cfg then M.queue_gauges(redis, cfg, values, typemap) end
  return M.render(values, typemap)
end

function M.init(ctx, router)
  router:add("GET", "/metrics", function()
    local body, err = M.scrape(ctx.redis, ctx.cfg)
    if not body then
      return 503, { ["Content-Type"] = "text/plain" }, "metrics unavailable: Redis is unreachable: "
        .. tostring(err) .. "\n"
    end
    return 200, { ["Content-Type"] = "text/plain; version=0.0.4" }, body
  end)
end

return M
