-- signal.pipeline.event — time and identity helpers over the canonical
-- event (docs/lua-runtime.md) that the pipeline uses.
--
--   event.days_from_civil(y, m, d)  → days since 1970-01-01
--   event.parse_iso8601(s)          → seconds since the epoch | nil
--   event.is_iso8601(s)             → true for a strict ISO-8601 date-time
--   event.iso8601(t)                → "2026-04-17T15:37:10.484Z"
--   event.identifiers(ev[, out])    → { canonical_id, anonymous_id, user_id, email, phone }
--
-- A Segment/Datafly message becomes a canonical event in the collector, in
-- C (engine/collect/normalize.c): core.collect.normalize is that conversion
-- for Lua (signal.testing uses it).

local type, tostring = type, tostring
local floor = math.floor
local find, sub, format, match = string.find, string.sub, string.format, string.match
local os_date = os.date

local M = {}

---------------------------------------------------------------------------
-- time

local function leap(y) return (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0 end
local MDAYS = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }

-- days since 1970-01-01 of a civil date (proleptic Gregorian)
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local doy = floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end
-- Shared with every module that turns dates into epoch seconds (the
-- payloads' timestamps, HTTP-date Retry-After): one implementation.
M.days_from_civil = days_from_civil

-- parse_iso8601(s) → seconds since epoch (float), or nil.
-- Accepts YYYY-MM-DDThh:mm:ss[.fraction](Z|±hh:mm), fraction 1-9 digits.
function M.parse_iso8601(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, h, mi, se, rest = match(s, "^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)(.*)$")
  if not y then return nil end
  y, mo, d, h, mi, se = y + 0, mo + 0, d + 0, h + 0, mi + 0, se + 0
  if mo < 1 or mo > 12 or d < 1 or h > 23 or mi > 59 or se > 60 then return nil end
  if d > MDAYS[mo] and not (mo == 2 and d == 29 and leap(y)) then return nil end
  local frac = 0
  if sub(rest, 1, 1) == "." then
    local digits, tail = match(rest, "^%.(%d+)(.*)$")
    if not digits or #digits > 9 then return nil end
    frac = ("0." .. digits) + 0
    rest = tail
  end
  local offset
  if rest == "Z" then
    offset = 0
  else
    local sign, oh, om = match(rest, "^([+-])(%d%d):(%d%d)$")
    if not sign then return nil end
    oh, om = oh + 0, om + 0
    if oh > 23 or om > 59 then return nil end
    offset = (oh * 3600 + om * 60) * (sign == "-" and -1 or 1)
  end
  return days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se + frac - offset
end
local parse_iso8601 = M.parse_iso8601

-- is_iso8601(s) → true for a strict ISO-8601 date-time string
function M.is_iso8601(s)
  return parse_iso8601(s) ~= nil
end

local last_sec, last_prefix

-- iso8601(t) → "2026-04-17T15:37:10.484Z" (UTC, milliseconds)
function M.iso8601(t)
  local sec = floor(t)
  local ms = floor((t - sec) * 1000 + 0.5)
  if ms >= 1000 then sec, ms = sec + 1, ms - 1000 end
  if sec ~= last_sec then
    last_prefix = os_date("!%Y-%m-%dT%H:%M:%S", sec)
    last_sec = sec
  end
  return format("%s.%03dZ", last_prefix, ms)
end

---------------------------------------------------------------------------
-- identifiers

local EMPTY = {}

-- a number id as a string: an integer below 1e15 in decimal, else tostring()
local function id_string(v)
  if v == floor(v) and v > -1e15 and v < 1e15 then return format("%d", v) end
  return tostring(v)
end

local function present(v)
  if type(v) == "number" then return id_string(v) end
  if type(v) == "string" and find(v, "%S") then return v end
  return nil
end

local function table_or_empty(v)
  return type(v) == "table" and v or EMPTY
end

-- identifiers(ev[, out]) → { canonical_id, anonymous_id, user_id, email, phone }
-- The event's own values win over those stitched from earlier identifies
-- (ev.identity). email/phone come from traits, context.traits, properties
-- (identify only) then ev.identity. Pass `out` to reuse a table.
function M.identifiers(ev, out)
  out = out or {}
  local traits = table_or_empty(ev.traits)
  local ctx_traits = table_or_empty(table_or_empty(ev.context).traits)
  local props = ev.type == "identify" and table_or_empty(ev.properties) or EMPTY
  local identity = table_or_empty(ev.identity)
  out.canonical_id = present(ev.canonical_id)
  out.anonymous_id = present(ev.anonymous_id) or present(identity.anonymous_id)
  out.user_id = present(ev.user_id) or present(identity.user_id)
  out.email = present(traits.email) or present(ctx_traits.email) or present(props.email)
    or present(identity.email)
  out.phone = present(traits.phone) or present(ctx_traits.phone) or present(props.phone)
    or present(identity.phone)
  return out
end

return M
