-- signal.destinations.amperity.profile — the Profile API on the wire.
--
--   GET {base}/prof/lookup/{collection}/keychain?{key}={value}   (resolve.lua)
--   GET {base}/prof/profiles/{collection}/{amperity_id}[?ctx…]   (profile attributes,
--                                                                personalize.lua)
-- with `Authorization: Bearer {profile_api_key}` and `Amperity-Tenant`.
--
-- Every answer is classified once, here, into an outcome the callers cache
-- or not:
--   { kind = "found", id, attributes }     200
--   { kind = "not_found", status }         404 (and 400: Amperity refuses a
--                                          key that is not in the collection's
--                                          linking_keys — permanent until an
--                                          admin changes the collection)
--   { kind = "error", transient, reason }  401/403/other (transient = false:
--                                          configuration, never cached) and
--                                          timeouts, connection errors, 429 and
--                                          5xx (transient = true: never cached
--                                          as not-found; the next event retries)
-- `reason` names the cause with no secret and no looked-up value in it (the
-- URL can carry an unhashed identifier, so it is never logged).
local core = require "signal.core"
local cjson = require("cjson.safe").new()
local http = require "signal.http.response"

local type, tostring = type, tostring
local request = core.http.request

local M = {}

-- Per integration config table: the bits every call needs, built once per
-- config load (a reload brings new tables; old ones are collected).
local prepared = setmetatable({}, { __mode = "k" })

function M.prepare(icfg, budget_ms)
  local p = prepared[icfg]
  if p then return p end
  local col = http.escape(icfg.profile_collection_id)
  p = {
    headers = { Authorization = "Bearer " .. icfg.profile_api_key, ["Amperity-Tenant"] = icfg.tenant_id,
                Accept = "application/json" },
    lookup_base = icfg.base_url .. "/prof/lookup/" .. col .. "/keychain?",
    profile_base = icfg.base_url .. "/prof/profiles/" .. col .. "/",
    timeout_ms = icfg.profile_timeout_ms or budget_ms or 500,
  }
  prepared[icfg] = p
  return p
end

local REASON = {
  [401] = "Profile API rejected profile_api_key (401): the token is invalid or expired; generate a new"
    .. " Profile Read Access JWT under Settings > Security > API Keys",
  [403] = "Profile API refused profile_api_key (403): it must be a Profile Read Access JWT, distinct from"
    .. " the Streaming Ingest key (api_key); Amperity rejects cross-scope usage",
  [429] = "Profile API rate limit (429); will retry on a later event",
}

-- classify(res, err, what) → outcome (see the file header)
function M.classify(res, err, what)
  if not res then
    return { kind = "error", transient = true, reason = what .. " failed: " .. tostring(err) }
  end
  local s = res.status
  if s == 200 then
    local body = cjson.decode(res.body or "")
    if type(body) ~= "table" or type(body.profile_id) ~= "string" then
      return { kind = "error", transient = true, reason = what .. ": invalid JSON answer from the Profile API" }
    end
    local attrs = body.attributes
    if type(attrs) ~= "table" then attrs = nil end
    return { kind = "found", id = body.profile_id, attributes = attrs }
  end
  if s == 404 then return { kind = "not_found", status = 404 } end
  if s == 400 then return { kind = "not_found", status = 400 } end
  if REASON[s] then
    return { kind = "error", transient = s == 429, status = s, reason = REASON[s] }
  end
  if s >= 500 then
    return { kind = "error", transient = true, status = s,
             reason = what .. ": Profile API answered " .. s .. "; will retry on a later event" }
  end
  return { kind = "error", transient = false, status = s, reason = what .. ": Profile API answered " .. s }
end

-- lookup(p, key, value) → outcome (one linking key, already hashed if configured)
function M.lookup(p, key, value)
  local res, err = request { method = "GET", url = p.lookup_base .. http.escape(key) .. "=" .. http.escape(value),
                             headers = p.headers, timeout_ms = p.timeout_ms }
  return M.classify(res, err, "lookup")
end

-- get(p, amperity_id, query) → outcome; query is "" or "a=1&b=2" (already escaped)
function M.get(p, id, query)
  local url = p.profile_base .. http.escape(id)
  if query and query ~= "" then url = url .. "?" .. query end
  local res, err = request { method = "GET", url = url, headers = p.headers, timeout_ms = p.timeout_ms }
  local o = M.classify(res, err, "profile")
  if o.kind == "found" and o.attributes == nil then o.attributes = {} end
  return o
end

return M
