-- signal.browser.sdk — serves the browser SDK (sdk/datafly.js).
--
--   GET /datafly.js                      the SDK alone; the page calls datafly.init
--   GET /v1/js/{pipeline_key}/datafly.js the "JS Builder": the SDK followed by
--                                        datafly.init({...}) for that pipeline
--
-- The built config holds only public values: the collector endpoint, the
-- pipeline key and — when an integration of the pipeline has a browser
-- provider with something to give (signal.destinations: browser.enabled) —
-- the enrich block naming those providers. Never a token: the SDK has no use
-- for one and the browser must never see one.
local core = require "signal.core"
local cjson = require "cjson"
local http = require "signal.http.response"
local destinations = require "signal.destinations"
local cors = require "signal.collect.cors"
local visitor = require "signal.collect.visitor"

local M = {}

local JS = "application/javascript; charset=utf-8"

local function read_sdk()
  local path = (core.home or ".") .. "/sdk/datafly.js"
  local f, err = io.open(path, "rb")
  if not f then error("cannot read the browser SDK: " .. tostring(err), 0) end
  local s = f:read("*a")
  f:close()
  return s
end

-- The collector's public origin as the browser reached it: https when a
-- trusted proxy says so (the collector's rule, signal.collect.visitor).
local function endpoint_for(ctx, req)
  local host = req.headers.host or "127.0.0.1"
  local proto = visitor.is_https(ctx, req) and "https" or "http"
  return proto .. "://" .. host
end

-- providers(ctx, p) → the browser providers the pipeline's page may ask
local function providers(ctx, p)
  local list, seen = {}, {}
  if not ctx.hub_org_id then return list end
  for _, integ in ipairs(p.integrations or {}) do
    local d = destinations.get(integ.type)
    local b = d and d.browser
    if b and not seen[b.provider] and b.enabled(ctx, integ) then
      seen[b.provider] = true
      list[#list + 1] = b.provider
    end
  end
  return list
end

function M.build_init(ctx, p, endpoint)
  local init = { pipelineKey = p.key, endpoint = endpoint }
  local list = providers(ctx, p)
  if #list > 0 then
    init.enrich = { endpoint = endpoint, providers = list }
  end
  return "\ndatafly.init(" .. cjson.encode(init) .. ");\n"
end

function M.init(ctx, router)
  local sdk = read_sdk()
  local built = {}   -- pipeline key .. endpoint → script, built once

  router:add({ "GET", "HEAD" }, "/datafly.js", function()
    return 200, { ["Content-Type"] = JS, ["Cache-Control"] = "public, max-age=300" }, sdk
  end)

  router:add({ "GET", "HEAD" }, "/v1/js/:key/datafly.js", function(req, params)
    local p = ctx.pipelines[params.key]
    if not p then
      return http.error(404, "INVALID_PIPELINE_KEY", "no pipeline with key " .. params.key:sub(1, 64))
    end
    local endpoint = endpoint_for(ctx, req)
    local cache_key = p.key .. "\0" .. endpoint
    local body = built[cache_key]
    if not body then
      body = sdk .. M.build_init(ctx, p, endpoint)
      built[cache_key] = body
    end
    local headers = { ["Content-Type"] = JS, ["Cache-Control"] = "public, max-age=300" }
    return 200, cors.headers(ctx, req, p, headers), body
  end)
end

return M
