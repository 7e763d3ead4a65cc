-- signal/cors.lua — CORS for every browser-facing route (collector, identity
-- hub, SDK). The collector answers with credentials (the _dfdid cookie), so
-- a grant always names the one requesting origin (never "*", which browsers
-- refuse together with credentials) and carries `Vary: Origin` so shared
-- caches keep one answer per origin.
--
--   cors.headers(ctx, req, pipeline[, into]) → headers table for a response
--   cors.headers_any(ctx, req[, into])        → same, granting the origins of
--                                               every pipeline (routes with no
--                                               key: /v1/enrich, the SDK file)
--   cors.preflight(ctx, req)                  → 204, headers, ""  (OPTIONS)
--
-- An origin not in the pipeline's `origins` gets no Access-Control-Allow-*
-- header at all. The request itself is still processed when its key is
-- valid: CORS is enforced by the browser (it hides the answer from the
-- page), not a server-side access control — a pipeline key is public.
--
-- A preflight carries neither a body nor credentials, so the pipeline is
-- usually unknown: it is granted when the origin is in ANY pipeline's
-- origins, or — when the preflight names a pipeline (an X-Pipeline-Key
-- header, or ?pipelineKey= / ?writeKey= in the query, as some proxies and
-- SDK builds send) — in that pipeline's origins.
--
-- Origins are compared in the canonical form config.lua stores them in
-- (lower case, no default port). Sets are built once per pipeline table and
-- kept in weak tables, so a config swapped in by a reload gets fresh sets.

local pairs, ipairs = pairs, ipairs
local lower, gsub, match = string.lower, string.gsub, string.match

local M = {}

M.ALLOW_METHODS = "POST, GET, OPTIONS"
M.ALLOW_HEADERS = "Content-Type, X-Pipeline-Key, Authorization, Content-Encoding"
-- Chrome caps at 2 h, Firefox at 24 h: ask for the most either honours.
M.MAX_AGE = "7200"

local sets = setmetatable({}, { __mode = "k" })       -- pipeline → { origin = true }
local any_sets = setmetatable({}, { __mode = "k" })   -- ctx.pipelines → { origin = true }

local function pipeline_set(p)
  local s = sets[p]
  if s then return s end
  s = {}
  for _, o in ipairs(p.origins or {}) do s[o] = true end
  sets[p] = s
  return s
end

local function any_set(pipelines)
  local s = any_sets[pipelines]
  if s then return s end
  s = {}
  for _, p in pairs(pipelines) do
    for _, o in ipairs(p.origins or {}) do s[o] = true end
  end
  any_sets[pipelines] = s
  return s
end

-- allowed(set, origin) → the canonical origin when set holds it
local function allowed(set, origin)
  if set[origin] then return origin end
  -- Browsers already send the canonical form; only odd clients pay this.
  local o = lower(origin)
  o = gsub(o, "^(https://.-):443$", "%1")
  o = gsub(o, "^(http://.-):80$", "%1")
  if set[o] then return o end
  return nil
end

local function grant(h, origin)
  h["Access-Control-Allow-Origin"] = origin
  h["Access-Control-Allow-Credentials"] = "true"
end

-- headers(ctx, req, pipeline[, into]) → `into` (or a new table) with the CORS
-- headers of an actual (non-preflight) response. pipeline may be nil (key
-- unknown): then nothing is granted.
function M.headers(_ctx, req, pipeline, into)
  local h = into or {}
  local origin = req.headers.origin
  if origin == nil then return h end
  h["Vary"] = "Origin"
  if pipeline ~= nil then
    local o = allowed(pipeline_set(pipeline), origin)
    if o then grant(h, origin) end
  end
  return h
end

-- headers_any(ctx, req[, into]) → like headers(), for a route that has no
-- pipeline key: an origin listed by any pipeline is granted.
function M.headers_any(ctx, req, into)
  local h = into or {}
  local origin = req.headers.origin
  if origin == nil then return h end
  h["Vary"] = "Origin"
  if allowed(any_set(ctx.pipelines), origin) then grant(h, origin) end
  return h
end

-- is_allowed(pipeline, origin) → true when the pipeline's origins hold origin
function M.is_allowed(pipeline, origin)
  return origin ~= nil and allowed(pipeline_set(pipeline), origin) ~= nil
end

local function query_key(q)
  if q == nil or q == "" then return nil end
  return match(q, "[?&]?pipelineKey=([%w_%-]+)") or match(q, "[?&]?writeKey=([%w_%-]+)")
end

-- preflight(ctx, req) → 204, headers, "" for an OPTIONS request.
function M.preflight(ctx, req)
  local h = {}
  local origin = req.headers.origin
  if origin == nil then return 204, h, "" end
  h["Vary"] = "Origin"
  local hint = req.headers["x-pipeline-key"] or query_key(req.query)
  local set
  if hint ~= nil and ctx.pipelines[hint] ~= nil then
    set = pipeline_set(ctx.pipelines[hint])
  else
    set = any_set(ctx.pipelines)
  end
  if allowed(set, origin) then
    grant(h, origin)
    h["Access-Control-Allow-Methods"] = M.ALLOW_METHODS
    h["Access-Control-Allow-Headers"] = M.ALLOW_HEADERS
    h["Access-Control-Max-Age"] = M.MAX_AGE
  end
  return 204, h, ""
end

return M
