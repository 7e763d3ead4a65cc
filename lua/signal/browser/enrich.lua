-- signal.browser.enrich — GET /v1/enrich?provider=<name>: the browser's read
-- of its own allow-listed profile slice, from the destination whose browser
-- provider is <name> (signal.destinations).
--
-- datafly.js calls it on init with credentials, so the visitor's `_dfdid`
-- cookie names the visitor. The answer is the one Redis string the
-- provider's enrichment step wrote (already filtered through its allowlist),
-- wrapped as
--   {"provider":"<name>","attributes":{…}}
-- with `attributes: {}` (HTTP 200) for a first-touch or unresolved visitor.
-- Nothing else is read: never a vendor token, never the raw vendor answer,
-- never a non-allow-listed attribute. This endpoint never mints a cookie
-- (the collector does) and never calls a vendor.
--
-- Feature gate: off (404) unless IDENTITY_HUB_ORG_ID or identity_hub.org_id
-- is set, and the message says so (a common setup mistake).
--
-- The cookie and CORS are the collector's rules (engine/collect, through
-- signal.collect.visitor and signal.collect.cors): the cookie is read, never minted; the
-- page is on the pipeline's site and this endpoint on Signal's host, and the
-- request carries the cookie, so the answer names the exact Origin with
-- credentials, for any origin of any pipeline (the request has no pipeline
-- key).
local http = require "signal.http.response"
local log = require "signal.observe.log"
local cors = require "signal.collect.cors"
local visitor = require "signal.collect.visitor"
local destinations = require "signal.destinations"

local tostring = tostring

local M = {}

-- provider name → read(redis, org_id, canonical_id), from the registry
local PROVIDERS, NAMES = {}, {}
for _, d in ipairs(destinations.with("browser")) do
  PROVIDERS[d.browser.provider] = d.browser.read
  NAMES[#NAMES + 1] = d.browser.provider
end
local SUPPORTED = table.concat(NAMES, ", ")
-- datafly.js asks with exactly "provider=<name>": answer that without parsing
local FAST_QUERY = {}
for name in pairs(PROVIDERS) do FAST_QUERY["provider=" .. name] = { provider = name } end

local JSON = "application/json"

-- CORS: the request names no pipeline (datafly.js sends only the cookie),
-- so any configured pipeline's origin is granted (cors.headers_any); a
-- request that names one (?pipelineKey=) gets that pipeline's origins.
local function cors_headers(ctx, req, q)
  local named = q.pipelineKey and ctx.pipelines and ctx.pipelines[q.pipelineKey]
  if named then return cors.headers(ctx, req, named) end
  return cors.headers_any(ctx, req)
end

---------------------------------------------------------------------------
-- handlers

local OFF_MESSAGE = "the identity hub is off: /v1/enrich is feature-gated; set the IDENTITY_HUB_ORG_ID"
  .. " environment variable (or identity_hub.org_id in the config) to your org id and restart"

function M.init(ctx, router)
  router:add("GET", "/v1/enrich", function(req)
    if not ctx.hub_org_id then return http.error(404, "NOT_FOUND", OFF_MESSAGE) end
    -- datafly.js always sends exactly this query: skip the generic parser
    local q = FAST_QUERY[req.query or ""] or http.parse_query(req.query)
    local h = cors_headers(ctx, req, q)
    local provider = q.provider
    if provider == nil or provider == "" then
      return http.error(400, "MISSING_PROVIDER", "provider is required (e.g. /v1/enrich?provider="
        .. (NAMES[1] or "name") .. ")", h)
    end
    local read = PROVIDERS[provider]
    if not read then
      return http.error(400, "UNKNOWN_PROVIDER", 'unknown provider "' .. provider:sub(1, 40)
        .. '" (supported: ' .. SUPPORTED .. ")", h)
    end
    local id = visitor.read_cookie(ctx, req)   -- never minted here
    local attrs = "{}"
    if id and id ~= "" then
      local err
      attrs, err = read(ctx.redis, ctx.hub_org_id, id)
      if not attrs then
        log.warn("identity hub read failed", { provider = provider, reason = tostring(err) })
        return http.error(503, "REDIS_UNAVAILABLE", "profile cache unavailable; retry later", h)
      end
    end
    h["Content-Type"] = JSON
    h["Cache-Control"] = "no-store, private"   -- one visitor's data
    return 200, h, '{"provider":"' .. provider .. '","attributes":' .. attrs .. "}"
  end)

  router:add("OPTIONS", "/v1/enrich", function(req)
    if not ctx.hub_org_id then return http.error(404, "NOT_FOUND", OFF_MESSAGE) end
    return cors.preflight(ctx, req)
  end)
end

return M
