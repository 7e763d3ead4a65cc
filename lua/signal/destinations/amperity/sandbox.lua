-- signal.destinations.amperity.sandbox — Amperity's stand-in in `signal
-- sandbox` (signal.dev.sandbox records the requests, injects faults and runs
-- the control API; this module answers as Amperity does).
--
-- It answers the two Amperity surfaces Signal talks to — real-time ingest
-- (`POST /prof/events/{esm}`) and the Profile API (keychain lookups,
-- profiles, context-sensitive personalization) — from the fixture file, the
-- way Amperity's documentation says it answers.
--
-- Fixture (spec/fixtures/profiles.json is the reference copy):
--   {
--     "tenant": "acme",                       -- expected Amperity-Tenant value
--     "ingest_token": "eyJ…", "profile_token": "eyJ…",   -- Bearer tokens by scope
--     "streams": { "esm-demo": "accept", "esm-drop": "drop", "esm-off": "reject" },
--     "collections": {
--       "apc-demo": {
--         "linking_keys": ["email_sha256", "_dfdid", "customer_id"],
--         "unknown_key_status": 400,          -- lookup on a key not in linking_keys
--                                             -- (400 like Amperity; 404 mimics a
--                                             -- collection without linking keys)
--         "lookup_attributes": true,          -- lookups carry "attributes" (default)
--         "profiles": [ {
--           "profile_id": "…",
--           "keys": { "email_sha256": "<sha256 hex>", "_dfdid": ["dfid_a", "dfid_b"] },
--           "attributes": { "Persona": "Value Hunter", … },
--           "personalized": { "pageCategory": { "shoes": { "Recommended": "Trail Runner" },
--                                               "*": { "Recommended": "Best Sellers" } } },
--           "created_at": "…", "updated_at": "…", "links": { … }   -- optional
--         } ] } } }
--
-- Personalization: a `GET /prof/profiles/{c}/{id}` with query parameters
-- answers the profile's attributes with, for each parameter (in name order),
-- the rule `personalized[name][value]` (or `personalized[name]["*"]`) laid
-- on top. So a spec sees context values arrive and change the answer.
--
-- Control routes it adds:
--   POST /_sandbox/profiles    {"collection":"apc-…", "profile_id"?, "keys", "attributes", "personalized"?}
--   POST /_sandbox/streams     {"id":"esm-…","mode":"accept"|"drop"|"reject"|"missing"}
--   POST /_sandbox/collections {"id":"apc-…","linking_keys":[…],"unknown_key_status"?,"lookup_attributes"?}
local core = require "signal.core"
local cjson = require("cjson.safe").new()
local http = require "signal.http.response"

local type, pairs, ipairs, next, tonumber, tostring = type, pairs, ipairs, next, tonumber, tostring
local find, lower = string.find, string.lower

local M = { prefix = "/prof/", counters = { "events", "lookups", "profiles" }, control = {} }

local MAX_EVENT_BYTES = 65536   -- Amperity's ingest limit
local JSON = { ["Content-Type"] = "application/json" }

local tenant, ingest_token, profile_token
local streams                     -- esm id → mode
local collections                 -- apc id → { linking_keys = set, list, index = {key → {value → profile}}, by_id, … }

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

local function ctl_error(status, message)
  return http.error(status, "BAD_REQUEST", message)
end

local function body_json(req)
  local v = cjson.decode(req.body or "")
  if type(v) ~= "table" then return nil end
  return v
end

-- Amperity's own error shape on /prof: flat {"error":"…","message":"…"}.
local function amp_error(status, code, message, extra)
  local body = { error = code, message = message }
  if extra then for k, v in pairs(extra) do body[k] = v end end
  return status, { ["Content-Type"] = "application/json" }, cjson.encode(body)
end


local query_pairs = http.query_pairs


local function index_profile(col, p)
  local old = col.by_id[p.profile_id]
  if old then
    for key, values in pairs(old.keys or {}) do
      if type(values) ~= "table" then values = { values } end
      for _, v in ipairs(values) do
        if col.index[key] and col.index[key][v] == old then col.index[key][v] = nil end
      end
    end
  end
  col.by_id[p.profile_id] = p
  for key, values in pairs(p.keys or {}) do
    if type(values) ~= "table" then values = { values } end
    col.index[key] = col.index[key] or {}
    for _, v in ipairs(values) do col.index[key][tostring(v)] = p end
  end
end

local function stamp(p)
  p.created_at = p.created_at or "2025-11-02T09:14:00Z"
  p.updated_at = p.updated_at or p.created_at
  if p.links == nil then
    local links = {}
    for key, values in pairs(p.keys or {}) do
      links[key] = type(values) == "table" and values or { values }
    end
    p.links = links
  end
  p.attributes = p.attributes or {}
  return p
end

local function new_collection(id, spec)
  local lk = spec.linking_keys or {}
  local set = {}
  for _, k in ipairs(lk) do set[k] = true end
  local col = {
    id = id, linking_keys = set, linking_list = lk, index = {}, by_id = {},
    unknown_key_status = tonumber(spec.unknown_key_status) or 400,
    lookup_attributes = spec.lookup_attributes ~= false,
  }
  for _, p in ipairs(spec.profiles or {}) do
    p = stamp(copy(p))
    p.profile_id = p.profile_id or core.uuid()
    index_profile(col, p)
  end
  return col
end


-- load(fixture): state back to what the fixture file says
function M.load(f)
  tenant = f.tenant or "acme"
  ingest_token = f.ingest_token
  profile_token = f.profile_token
  streams = copy(f.streams or {})
  collections = {}
  for id, spec in pairs(f.collections or {}) do collections[id] = new_collection(id, spec) end
end


local function bearer(req)
  local a = req.headers["authorization"]
  return a and a:match("^[Bb]earer%s+(%S+)%s*$")
end

local function check_tenant(req)
  local t = req.headers["amperity-tenant"]
  if t == nil then
    return amp_error(401, "unauthorized", "Missing Amperity-Tenant header")
  end
  if t ~= tenant then
    return amp_error(401, "unauthorized", "Unknown tenant " .. t)
  end
end

-- scope = "ingest" | "profile"
local function check_token(req, scope)
  local tok = bearer(req)
  local want, other = ingest_token, profile_token
  if scope == "profile" then want, other = profile_token, ingest_token end
  if tok ~= nil and tok == want then return nil end
  if tok ~= nil and tok == other then
    if scope == "profile" then
      return amp_error(403, "forbidden", "Token lacks Profile Read Access: this is a Streaming Ingest"
        .. " token; profile reads need a separate Profile API JWT (cross-scope usage is rejected)")
    end
    return amp_error(403, "forbidden", "Token lacks Streaming Ingest Write Access: this is a Profile"
      .. " Read Access token (cross-scope usage is rejected)")
  end
  return amp_error(401, "unauthorized", "Invalid, expired or missing bearer token")
end

---------------------------------------------------------------------------
-- endpoints

local function ingest(req, stream)
  local err = { check_tenant(req) }
  if err[1] then return err[1], err[2], err[3] end
  err = { check_token(req, "ingest") }
  if err[1] then return err[1], err[2], err[3] end
  local mode = streams[stream]
  if mode == nil then
    return amp_error(404, "stream-not-found", "No stream " .. stream .. " for tenant", { stream = stream })
  end
  local h = req.headers
  if h["content-length"] == nil and h["transfer-encoding"] == nil then
    return amp_error(411, "length-required", "Content-Length header is required")
  end
  local body = req.body or ""
  if #body > MAX_EVENT_BYTES then
    return amp_error(413, "payload-too-large", "Event body is " .. #body .. " bytes; the limit is 64 KB")
  end
  local ct = h["content-type"]
  if ct == nil or lower(ct):match("^%s*([^;%s]+)") ~= "application/json" then
    return amp_error(415, "unsupported-media-type", "Content-Type must be application/json")
  end
  if not find(body, "^%s*{") then
    return amp_error(400, "bad-request", "Body must be one JSON object (arrays are not accepted)")
  end
  local v = cjson.decode(body)
  if type(v) ~= "table" or next(v) == nil then
    return amp_error(400, "bad-request", "Body must be a JSON object with at least one property")
  end
  if mode == "drop" then return 204, {}, "" end
  if mode == "reject" then
    return amp_error(409, "stream-rejecting", "Stream " .. stream .. " is in reject mode", { stream = stream })
  end
  return 202, JSON, '{"status":"accepted"}'
end

local function check_profile_auth(req)
  local err = { check_tenant(req) }
  if err[1] then return err end
  err = { check_token(req, "profile") }
  if err[1] then return err end
end

-- The Profile API preamble: tenant and profile token, then the collection.
-- Returns the collection, or nil and the error answer as a list.
local function profile_collection(req, collection_id)
  local err = check_profile_auth(req)
  if err then return nil, err end
  local col = collections[collection_id]
  if not col then
    return nil, { amp_error(404, "collection-not-found", "No collection " .. collection_id .. " for tenant") }
  end
  return col
end

local function profile_body(col, p, attributes)
  return cjson.encode({ collection_id = col.id, profile_id = p.profile_id, attributes = attributes,
                        created_at = p.created_at, updated_at = p.updated_at, links = p.links })
end

-- GET …/keychain?{key}={value} and the older …/lookup?{key}={value}
local function lookup(req, collection_id)
  local col, err = profile_collection(req, collection_id)
  if not col then return err[1], err[2], err[3] end
  local q = query_pairs(req.query)
  if #q ~= 1 then
    return amp_error(400, "bad-request", "Exactly one linking key is required, got " .. #q)
  end
  local key, value = q[1][1], q[1][2]
  if not col.linking_keys[key] then
    if col.unknown_key_status == 404 then
      return amp_error(404, "not-found", "No profile matches " .. key)
    end
    return amp_error(400, "bad-request", "Key " .. key .. " is not a linking key of collection "
      .. collection_id)
  end
  local p = col.index[key] and col.index[key][value]
  if not p then return amp_error(404, "not-found", "No profile matches " .. key) end
  if col.lookup_attributes then
    return 200, JSON, profile_body(col, p, p.attributes)
  end
  return 200, JSON, cjson.encode({ collection_id = col.id, profile_id = p.profile_id, links = p.links })
end

-- attributes with the personalized rules of the query's context applied
local function personalize(p, q)
  local rules = p.personalized
  if not rules or #q == 0 then return p.attributes end
  table.sort(q, function(a, b) return a[1] < b[1] end)
  local out = copy(p.attributes)
  for _, pair in ipairs(q) do
    local by_value = rules[pair[1]]
    local over = by_value and (by_value[pair[2]] or by_value["*"])
    if over then for k, v in pairs(over) do out[k] = v end end
  end
  return out
end

local function profile(req, collection_id, id)
  local col, err = profile_collection(req, collection_id)
  if not col then return err[1], err[2], err[3] end
  local p = col.by_id[http.unescape(id)]
  if not p then return amp_error(404, "not-found", "No profile " .. id) end
  return 200, JSON, profile_body(col, p, personalize(p, query_pairs(req.query)))
end

-- kind(path) → "events" | "lookups" | "profiles" | nil (the stats counters)
function M.kind(path)
  if find(path, "^/prof/events/") then return "events" end
  if find(path, "^/prof/lookup/") or find(path, "^/prof/profiles/[^/]+/lookup$") then return "lookups" end
  if find(path, "^/prof/profiles/") then return "profiles" end
  return nil
end

function M.handle(req)
  local path = req.path
  local stream = path:match("^/prof/events/([^/]+)$")
  if stream then
    if req.method ~= "POST" then return amp_error(405, "method-not-allowed", "Use POST") end
    return ingest(req, stream)
  end
  if req.method ~= "GET" then return amp_error(405, "method-not-allowed", "Use GET") end
  local c = path:match("^/prof/lookup/([^/]+)/keychain$")
  if c then return lookup(req, c) end
  local c2, id = path:match("^/prof/profiles/([^/]+)/([^/]+)$")
  if c2 and id == "lookup" then return lookup(req, c2) end
  if c2 then return profile(req, c2, id) end
  return amp_error(404, "not-found", "No such endpoint " .. path)
end


M.control["POST /_sandbox/profiles"] = function(req)
  local v = body_json(req)
  if not v then return ctl_error(400, "body must be a JSON object") end
  local cid = v.collection
  if type(cid) ~= "string" then return ctl_error(400, "collection is required") end
  local col = collections[cid]
  if not col then
    local lk = {}
    for key in pairs(v.keys or {}) do lk[#lk + 1] = key end
    col = new_collection(cid, { linking_keys = lk })
    collections[cid] = col
  end
  local p = stamp({ profile_id = v.profile_id or core.uuid(), keys = v.keys or {}, attributes = v.attributes,
                    personalized = v.personalized, created_at = v.created_at, updated_at = v.updated_at,
                    links = v.links })
  index_profile(col, p)
  return http.json(201, { collection_id = cid, profile_id = p.profile_id })
end

M.control["POST /_sandbox/streams"] = function(req)
  local v = body_json(req)
  if not v or type(v.id) ~= "string" then return ctl_error(400, 'body must be {"id":"esm-…","mode":"…"}') end
  local mode = v.mode
  if mode == "missing" then
    streams[v.id] = nil
  elseif mode == "accept" or mode == "drop" or mode == "reject" then
    streams[v.id] = mode
  else
    return ctl_error(400, "mode must be accept, drop, reject or missing")
  end
  return http.json(200, { id = v.id, mode = mode })
end

M.control["POST /_sandbox/collections"] = function(req)
  local v = body_json(req)
  if not v or type(v.id) ~= "string" then return ctl_error(400, 'body must be {"id":"apc-…",…}') end
  collections[v.id] = new_collection(v.id, v)
  return http.json(200, { id = v.id })
end


return M
