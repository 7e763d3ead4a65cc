-- signal.destinations.amperity.browser — the allow-listed slice of a
-- visitor's profile that the browser may see.
--
-- After enrichment the merged attributes (partner_attrs.amperity, with
-- amperity_personalized laid on top) are filtered through
-- browser_attribute_allowlist and written, already JSON-encoded, to one Redis
-- key per org + provider + _dfdid:
--   signal:hub:<org_id>:amperity:<canonical_id>    '{"Persona":"Value Hunter"}'   15 min
-- GET /v1/enrich (signal.browser.enrich) returns that string as is. Only this
-- filter decides what leaves the server: an empty allowlist writes `{}`, the
-- token and the raw Amperity answer are never written here. The key carries
-- no hash tag: visitors of one org spread over a Redis Cluster's slots.
local cjson = require("cjson.safe").new()

local type, pairs, ipairs, next = type, pairs, ipairs, next

local M = {}

M.TTL_S = 15 * 60
M.PROVIDER = "amperity"

local allow_sets = setmetatable({}, { __mode = "k" })

-- allowlist(icfg) → set of attribute names (built once per config load)
function M.allowlist(icfg)
  local s = allow_sets[icfg]
  if s then return s end
  s = {}
  for _, name in ipairs(icfg.browser_attribute_allowlist or {}) do s[name] = true end
  allow_sets[icfg] = s
  return s
end

function M.key(org_id, canonical_id)
  return "signal:hub:" .. org_id .. ":" .. M.PROVIDER .. ":" .. canonical_id
end

-- filter(allow, attrs, personalized) → table of allow-listed attributes only
function M.filter(allow, attrs, personalized)
  local out = {}
  if next(allow) == nil then return out end
  for _, src in ipairs({ attrs or {}, personalized or {} }) do
    for k, v in pairs(src) do
      if allow[k] then out[k] = v end
    end
  end
  return out
end

-- write(redis, org_id, icfg, canonical_id, attrs, personalized) → ok, err
function M.write(redis, org_id, icfg, canonical_id, attrs, personalized)
  if not org_id or type(canonical_id) ~= "string" or canonical_id == "" then return true end
  local body = cjson.encode(M.filter(M.allowlist(icfg), attrs, personalized))
  if not body then return nil, "attributes are not JSON-encodable" end
  return redis:call("SET", M.key(org_id, canonical_id), body, "EX", M.TTL_S)
end

-- read(redis, org_id, canonical_id) → JSON object string (the stored one, or
-- "{}" for a visitor with none) | nil, err when Redis fails
function M.read(redis, org_id, canonical_id)
  local v, err = redis:call("GET", M.key(org_id, canonical_id))
  if err then return nil, err end
  if type(v) == "string" and v:sub(1, 1) == "{" then return v end
  return "{}"
end

return M
