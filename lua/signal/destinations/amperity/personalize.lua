-- signal.destinations.amperity.personalize — context-sensitive
-- personalization.
--
-- With enable_context_personalization, each personalization_context_mappings
-- entry {source, target} reads `source` from the current event (signal.pipeline.path:
-- context.*, properties.*, traits.*, partner_attrs.*, flat fields) and sends
-- it as the query parameter `target` on
--   GET /prof/profiles/{collection}/{amperity_id}?pageCategory=shoes&cartValue=120
-- The answer's attributes become partner_attrs.amperity_personalized.
--
-- Paths are compiled once per config load (weak table keyed by the
-- integration's config table), never parsed per event. Parameters follow the
-- mappings' order; empty values (nil, "", tables) are left out, and an event
-- with no context value at all makes no call. `partner_attrs.amperity.*`
-- sources see the attributes just resolved for this event (e.g. a tierHint
-- from LifetimeTier), through a view of the event — the event itself is not
-- touched until enrichment is complete.
--
-- Cache: signal:amperity:p:<sha256(tenant NUL collection NUL amperity_id NUL
-- query)>, '{"attributes":{…}}', 2 min. So the same visitor in the same
-- context makes one call per 2 minutes; a new context (another category) is
-- a new entry. Errors are not cached.
local core = require "signal.core"
local cjson = require("cjson.safe").new()
local http = require "signal.http.response"
local path = require "signal.pipeline.path"
local log = require "signal.observe.log"
local flight = require "signal.destinations.amperity.flight"
local profile = require "signal.destinations.amperity.profile"

local type, pairs, ipairs, tostring, floor, format, concat = type, pairs, ipairs, tostring, math.floor, string.format,
  table.concat
local sha256 = core.sha256_hex

local M = {}

M.TTL_MS = 2 * 60 * 1000

local compiled = setmetatable({}, { __mode = "k" })
local NONE = {}

-- compile(icfg) → list of { get = fn, name = "pageCategory=" } or nil when off
function M.compile(icfg)
  local c = compiled[icfg]
  if c then return c ~= NONE and c or nil end
  if not icfg.enable_context_personalization or #(icfg.personalization_context_mappings or {}) == 0 then
    compiled[icfg] = NONE
    return nil
  end
  c = {}
  for _, m in ipairs(icfg.personalization_context_mappings) do
    local get, err = path.compile(m.source)
    if get then
      c[#c + 1] = { get = get, name = http.escape(m.target) .. "=" }
    else
      -- the config schema accepted it; a path the compiler refuses can never
      -- have a value, so drop it once, loudly, rather than per event
      log.warn("personalization mapping ignored", { integration = icfg.name, source = m.source, reason = err })
    end
  end
  if #c == 0 then c = NONE end
  compiled[icfg] = c
  return c ~= NONE and c or nil
end

local function param(v)
  local t = type(v)
  if t == "string" then return v ~= "" and v or nil end
  if t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return nil end
    if v == floor(v) and v > -1e15 and v < 1e15 then return format("%d", v) end
    return format("%.14g", v)
  end
  if t == "boolean" then return tostring(v) end
  return nil
end

-- query(mappings, view) → "pageCategory=shoes&cartValue=120" or "" (no context value)
function M.query(mappings, view)
  local parts, n = {}, 0
  for i = 1, #mappings do
    local m = mappings[i]
    local v = param(m.get(view))
    if v then
      n = n + 1
      parts[n] = m.name .. http.escape(v)
    end
  end
  return concat(parts, "&")
end

function M.cache_key(icfg, id, query)
  return "signal:amperity:p:" .. sha256(icfg.tenant_id .. "\0" .. icfg.profile_collection_id .. "\0" .. id
    .. "\0" .. query)
end

local function decode(enc)
  local v = cjson.decode(enc)
  local attrs = type(v) == "table" and type(v.attributes) == "table" and v.attributes or {}
  return { kind = "found", attributes = attrs, cached = true }
end

-- fetch(ctx, icfg, p, id, query, st) → { kind = "found", attributes, cached } | outcome error
-- (query non-empty; p = profile.prepare(…))
function M.fetch(ctx, icfg, p, id, query, st)
  local key = M.cache_key(icfg, id, query)
  local redis = ctx.redis
  local enc = redis:call("GET", key)
  if type(enc) == "string" then return decode(enc) end
  local o, shared = flight.once(redis, key, function()
    st.calls = st.calls + 1
    local r = profile.get(p, id, query)
    if r.kind == "found" then
      return r, cjson.encode({ attributes = r.attributes }), M.TTL_MS
    end
    return r, nil
  end, decode)
  if shared and o.attributes then
    local c = {}
    for k, v in pairs(o.attributes) do c[k] = v end
    o = { kind = o.kind, attributes = c }
  end
  return o
end

return M
