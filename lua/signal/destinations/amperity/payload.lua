-- signal.destinations.amperity.payload — what every Streaming Ingest body
-- carries, whatever the blueprint and the customer's scripts made of it.
--
--   local payload, warning = payload.finish(event, payload, cfg)
--
-- The blueprint (signal.pipeline.blueprint) produces the flat attributes;
-- finish() is the destination's last mapping step, run after every script
-- and transform hook, so no customer code can break what Amperity's
-- real-time ingest requires:
--   source     = cfg.source_value, always (routing depends on it, exactly)
--   type       = what the blueprint chose, else the event name or type
--   cookieid   = canonical_id (the _dfdid cookie)      } filled from the event
--   ip_address, user_agent                              } when the blueprint
--   email, user_id, anonymous_id, amperity_id           } left them out
--   timestamp  = ISO-8601 UTC with milliseconds (2026-04-17T15:37:10.484Z);
--                other ISO forms and epoch numbers are converted
--   consent    = context.consent verbatim (the one nested field) whenever the
--                event has it, absent otherwise — unconditional, no option
-- `amperity_id` is the resolved Amperity profile id: the enrichment step sets
-- `event.amperity_id` (fallback: partner_attrs.amperity.amperity_id).
-- Everything else in the body is a scalar: no arrays, no nil, no tables.

local type, tonumber, floor, format = type, tonumber, math.floor, string.format
local find, match, date = string.find, string.match, os.date

local core_ok, core = pcall(require, "signal.core")
if not core_ok then core = nil end

local M = {}

local function scalar(v)
  local tv = type(v)
  if tv == "string" then return v ~= "" and v or nil end
  if tv == "number" then return v == v and v ~= math.huge and v ~= -math.huge and v or nil end
  return nil
end

-- Days since 1970-01-01 of a civil date: pure arithmetic, timezone-free.
local days_from_civil = require("signal.pipeline.event").days_from_civil

local function from_epoch(secs, ms)
  return date("!%Y-%m-%dT%H:%M:%S", secs) .. format(".%03dZ", ms)
end

local CANONICAL = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$"

-- iso8601(v) -> "YYYY-MM-DDTHH:MM:SS.mmmZ" | nil
-- Accepts that form as is (the common case: one pattern match), other ISO
-- 8601 forms (no or longer fraction, "T" or " ", Z / ±hh:mm / ±hhmm / ±hh
-- offsets, date only) and epoch numbers (seconds, or milliseconds when
-- larger than 1e11).
function M.iso8601(v)
  local tv = type(v)
  if tv == "number" then
    if v ~= v or v == math.huge or v == -math.huge or v < 0 then return nil end
    if v > 1e11 then v = v / 1000 end
    local secs = floor(v)
    return from_epoch(secs, floor((v - secs) * 1000 + 0.5) % 1000)
  end
  if tv ~= "string" then return nil end
  if #v == 24 and find(v, CANONICAL) then return v end
  local Y, Mo, D, rest = match(v, "^%s*(%d%d%d%d)%-(%d%d)%-(%d%d)(.-)%s*$")
  if not Y then return nil end
  local h, mi, s, ms, off = 0, 0, 0, 0, 0
  if rest ~= "" then
    local hh, mm, ss, tail = match(rest, "^[Tt ](%d%d):(%d%d):?(%d?%d?)(.*)$")
    if not hh then return nil end
    h, mi, s = tonumber(hh), tonumber(mm), tonumber(ss) or 0
    local frac, tz = match(tail, "^[%.,](%d+)(.*)$")
    if frac then
      ms = tonumber((frac .. "00"):sub(1, 3))
    else
      tz = tail
    end
    if tz ~= "" and tz ~= "Z" and tz ~= "z" then
      local sign, oh, om = match(tz, "^([%+%-])(%d%d):?(%d?%d?)$")
      if not sign then return nil end
      off = (tonumber(oh) * 60 + (tonumber(om) or 0)) * 60
      if sign == "-" then off = -off end
    end
  end
  local y, m, d = tonumber(Y), tonumber(Mo), tonumber(D)
  if m < 1 or m > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or s > 60 then return nil end
  local secs = days_from_civil(y, m, d) * 86400 + h * 3600 + mi * 60 + s - off
  return from_epoch(secs, ms)
end

local function now_iso()
  local t = core and core.now and core.now() or os.time()
  return M.iso8601(t)
end

-- finish(event, payload, cfg) → payload, warning: the fields Amperity
-- always gets (see top); the warning says when source_value is missing.
function M.finish(e, p, cfg)
  local src = cfg and cfg.source_value
  p.source = src
  if p.type == nil then p.type = scalar(e.event) or scalar(e.type) or "unknown" end
  if p.cookieid == nil then p.cookieid = scalar(e.canonical_id) end
  local ctx = e.context
  if type(ctx) ~= "table" then ctx = nil end
  if ctx then
    if p.ip_address == nil then p.ip_address = scalar(ctx.ip) end
    if p.user_agent == nil then p.user_agent = scalar(ctx.user_agent) end
  end
  local ident = e.identity
  if type(ident) ~= "table" then ident = nil end
  if p.email == nil then
    local traits = e.traits
    p.email = type(traits) == "table" and scalar(traits.email) or ident and scalar(ident.email) or nil
  end
  if p.user_id == nil then p.user_id = scalar(e.user_id) or ident and scalar(ident.user_id) or nil end
  if p.anonymous_id == nil then p.anonymous_id = scalar(e.anonymous_id) end
  if p.amperity_id == nil then
    local id = scalar(e.amperity_id)
    if not id then
      local pa = e.partner_attrs
      pa = type(pa) == "table" and pa.amperity
      id = type(pa) == "table" and scalar(pa.amperity_id) or nil
    end
    p.amperity_id = id
  end
  p.timestamp = M.iso8601(p.timestamp) or M.iso8601(e.timestamp) or M.iso8601(e.received_at)
    or now_iso()
  local consent = ctx and ctx.consent
  if type(consent) == "table" then p.consent = consent else p.consent = nil end
  if not src then
    return p, "source_value is not configured: Amperity routes events without the right source to _unknown"
  end
  return p
end

return M
