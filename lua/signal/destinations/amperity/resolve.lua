-- signal.destinations.amperity.resolve — which Amperity profile is this
-- visitor?
--
-- The integration's linking_keys are tried in order; each takes its value
-- from the event's identifiers (signal.pipeline.event.identifiers: canonical_id,
-- anonymous_id, user_id, email, phone — the event's own, else those stitched
-- from an earlier identify). A key whose value is empty is skipped; `hash =
-- "sha256"` sends the SHA-256 of the lower-cased, trimmed value. The first
-- lookup answering 200 wins; 404 moves on to the next key.
--
-- Cache (Redis), one entry per (tenant, collection, key, value):
--   signal:amperity:r:<sha256(tenant NUL collection NUL key NUL value)>
--     '{"found":true,"id":"…","attributes":{…}}'   15 min
--     '{"found":false}'                              5 min
-- The key is a hash, so no identifier — hashed or not — is stored in clear.
-- Transient failures (timeouts, connection errors, 429, 5xx) are never
-- cached. All candidate entries are read with one MGET, so a returning
-- visitor costs one Redis round trip whatever the number of keys.
--
-- When the lookup's answer already carries `attributes` (Amperity's lookup
-- returns the same profile document as GET /prof/profiles/{c}/{id}), they are
-- used as the profile's attributes and the second call is skipped; otherwise
-- profile.get fetches them. Both land in the same cache entry.
local core = require "signal.core"
local cjson = require("cjson.safe").new()
local event = require "signal.pipeline.event"
local flight = require "signal.destinations.amperity.flight"
local profile = require "signal.destinations.amperity.profile"

local type, pairs, ipairs, tostring, unpack = type, pairs, ipairs, tostring, unpack
local lower, match = string.lower, string.match
local sha256 = core.sha256_hex
local null = core.null

local M = {}

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end
M.copy = copy

M.FOUND_TTL_MS = 15 * 60 * 1000
M.NOT_FOUND_TTL_MS = 5 * 60 * 1000
M.NOT_FOUND = '{"found":false}'

-- hash_value(v) → lower-case hex SHA-256 of the lower-cased, trimmed value
function M.hash_value(v)
  return sha256(lower(match(v, "^%s*(.-)%s*$")))
end

-- cache_key(icfg, key, value) → the Redis key of one resolution (value as sent)
function M.cache_key(icfg, key, value)
  return "signal:amperity:r:" .. sha256(icfg.tenant_id .. "\0" .. icfg.profile_collection_id .. "\0" .. key
    .. "\0" .. value)
end

-- candidates(icfg, ev) → list of { key, value, source, cache_key }, in linking_keys order
function M.candidates(icfg, ev)
  local ids = event.identifiers(ev)
  local out = {}
  for _, lk in ipairs(icfg.linking_keys or {}) do
    local v = ids[lk.source]
    if type(v) == "string" and match(v, "%S") then
      if lk.hash == "sha256" then v = M.hash_value(v) end
      out[#out + 1] = { key = lk.key, value = v, source = lk.source, cache_key = M.cache_key(icfg, lk.key, v) }
    end
  end
  return out
end

local function encode_found(id, attrs)
  return cjson.encode({ found = true, id = id, attributes = attrs })
end

-- cache entry → outcome
local function decode(enc)
  if enc == M.NOT_FOUND then return { kind = "not_found", cached = true } end
  local v = cjson.decode(enc)
  if type(v) ~= "table" or not v.found or type(v.id) ~= "string" then
    return { kind = "not_found", cached = true }
  end
  local attrs = v.attributes
  if type(attrs) ~= "table" then attrs = {} end
  return { kind = "found", id = v.id, attributes = attrs, cached = true }
end
M.decode = decode

-- one linking key against Amperity: lookup (+ profile when needed) → outcome, encoded, ttl
local function fetch_one(p, c, st)
  st.calls = st.calls + 1
  local o = profile.lookup(p, c.key, c.value)
  if o.kind == "found" and o.attributes == nil then
    st.calls = st.calls + 1
    local po = profile.get(p, o.id, nil)
    if po.kind ~= "found" then
      if po.kind == "not_found" then o = po else return po, nil end
    else
      o.attributes = po.attributes
    end
  end
  if o.kind == "found" then return o, encode_found(o.id, o.attributes), M.FOUND_TTL_MS end
  if o.kind == "not_found" then return o, M.NOT_FOUND, M.NOT_FOUND_TTL_MS end
  return o, nil    -- errors: never cached
end

-- resolve(ctx, icfg, cands, st) → result
--   st = { calls = 0, statuses = {} } (counters this event's work adds to)
--   result = { found = true, id, attributes, via, cache = "hit"|"miss" }
--          | { found = false, cache = "negative"|"miss"|nil, reason? }
--          | { found = false, error = "…", transient = bool, cache = … }
-- `cands` comes from M.candidates (computed by the caller before any I/O).
function M.resolve(ctx, _icfg, cands, st, p)
  if #cands == 0 then
    return { found = false, reason = "no linking key value on the event" }
  end
  local redis = ctx.redis
  local keys = { "MGET" }
  for i, c in ipairs(cands) do keys[i + 1] = c.cache_key end
  local cached, rerr = redis:call(unpack(keys))
  if type(cached) ~= "table" then
    return { found = false, error = "redis: " .. tostring(rerr), transient = true }
  end

  local called = false
  for i, c in ipairs(cands) do
    local enc = cached[i]
    local o
    if type(enc) == "string" and enc ~= null then
      o = decode(enc)
    else
      called = true
      local shared
      o, shared = flight.once(redis, c.cache_key, function() return fetch_one(p, c, st) end, decode)
      -- waiters of one flight get the leader's outcome: give each event its own table
      if shared and o.attributes then o = { kind = o.kind, id = o.id, attributes = copy(o.attributes) } end
      if o.status == 400 then st.refused = c.key end
      if o.kind == "not_found" and not o.cached then st.fresh_not_found = (st.fresh_not_found or 0) + 1 end
    end
    if o.kind == "found" then
      return { found = true, id = o.id, attributes = o.attributes, via = c.key, cache = called and "miss" or "hit" }
    end
    if o.kind == "error" or o.error then
      return { found = false, error = o.reason or o.error, transient = o.transient, cache = "miss" }
    end
  end
  return { found = false, cache = called and "miss" or "negative" }
end

return M
