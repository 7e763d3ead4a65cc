-- signal.collect.cors — CORS headers for the browser-facing routes Lua serves
-- (the identity hub, the SDK routes). The collector answers its own
-- preflights and requests in C; the rules — a grant names the one
-- requesting origin with credentials, `Vary: Origin`, origins compared in
-- their canonical form, a preflight granted for any pipeline's origins
-- unless it names a pipeline — are engine/collect/cors.c's, reached through
-- core.collect.cors (docs/collector.md "CORS").
--
--   cors.headers(ctx, req, pipeline[, into]) → headers table for a response
--   cors.headers_any(ctx, req[, into])        → same, granting the origins of
--                                               every pipeline (routes with no
--                                               key: /v1/enrich, the SDK file)
--   cors.preflight(ctx, req)                  → 204, headers, ""  (OPTIONS)

local core = require "signal.core"

local M = {}

-- Per ctx.pipelines: the compiled rules (a reload brings a new table).
local compiled = setmetatable({}, { __mode = "k" })

local function rules(ctx)
  local c = compiled[ctx.pipelines]
  if not c then
    c = core.collect.cors(ctx.pipelines)
    compiled[ctx.pipelines] = c
  end
  return c
end

-- headers(ctx, req, pipeline[, into]): pipeline may be nil (key unknown):
-- then nothing is granted
function M.headers(ctx, req, pipeline, into)
  return rules(ctx):headers(req.headers.origin, pipeline and pipeline.key, into)
end

function M.headers_any(ctx, req, into)
  return rules(ctx):headers_any(req.headers.origin, into)
end

function M.preflight(ctx, req)
  return 204, rules(ctx):preflight(req.headers.origin, req.headers["x-pipeline-key"], req.query), ""
end

return M
