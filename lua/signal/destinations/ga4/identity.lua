-- signal.destinations.ga4.identity — who and when a GA4 event is about:
-- client_id, session_id, consent signals and the event time, from the
-- canonical event.
--
-- client_id: the browser's own GA client id when the page had the `_ga`
--   cookie (datafly.js sends it as context.vendor_ids.ga: "GA1.1.<a>.<b>" →
--   "<a>.<b>"), so server events join the visitor gtag.js already counts;
--   else Signal's anonymous id (then the visitor only shows in realtime
--   reports and as a new user, which is all GA4 can do with an id it never
--   saw), else the _dfdid canonical id.
-- session_id: GA4 stitches a server event into a session by the session
--   id of the `_ga_<measurement id without G->` cookie ("GS1.1.<sid>.<n>…"
--   or "GS2.1.s<sid>$o<n>$…"). datafly.js does not read that cookie; a
--   sender that has it passes it as context.vendor_ids.ga_session
--   (camelCase gaSession). Without it the session is datafly.js's own
--   (context.session.id, 30 minutes of inactivity as GA counts), turned
--   into a stable number, since GA4 session ids are numeric: events of one
--   datafly.js session share a GA4 session, though not gtag.js's.
-- consent: Consent Mode's ad_user_data / ad_personalization ("granted" /
--   "denied" under context.consent.google), else the same keys under
--   context.consent.categories (booleans), else the marketing boolean;
--   unknown stays absent (GA4 then applies the property's defaults).
local core = require "signal.core"
local event = require "signal.pipeline.event"

local type, tonumber, tostring, floor = type, tonumber, tostring, math.floor
local match, sub = string.match, string.sub
local sha256_hex = core.sha256_hex

local M = {}

local function str(v)
  local tv = type(v)
  if tv == "string" then return v ~= "" and v or nil end
  if tv == "number" then return tostring(v) end
  return nil
end

-- from_ga_cookie(v) → "<a>.<b>" from "GA1.1.<a>.<b>" (any GA1.n prefix), the
-- value itself when it is already "<a>.<b>", else nil
function M.from_ga_cookie(v)
  if type(v) ~= "string" then return nil end
  return match(v, "^GA%d+%.%d+%.(%d+%.%d+)$") or match(v, "^(%d+%.%d+)$")
end

-- client_id(e) → the client id (see the top) and where it came from
function M.client_id(e)
  local ctx = e.context
  local vids = type(ctx) == "table" and ctx.vendor_ids or nil
  local id = type(vids) == "table" and M.from_ga_cookie(vids.ga) or nil
  if id then return id, "ga_cookie" end
  id = str(e.anonymous_id)
  if id then return id, "anonymous_id" end
  return str(e.canonical_id), "canonical_id"
end

-- from_session_cookie(v) → session id (number), session number | nil
function M.from_session_cookie(v)
  if type(v) ~= "string" then return nil end
  local sid, n = match(v, "^GS1%.%d+%.(%d+)%.(%d+)")
  if not sid then sid, n = match(v, "^GS2%.%d+%.s(%d+)%$o(%d+)") end
  if not sid then return nil end
  return tonumber(sid), tonumber(n)
end

-- A datafly.js session id (a UUID) as a GA4 session id: the first 32 bits
-- of its SHA-256, so it is stable for the session and numeric. A numeric
-- id is used as it is.
local derived, nderived = {}, 0
local function derive(id)
  local n = tonumber(id)
  if n and n >= 0 and n == floor(n) then return n end
  local d = derived[id]
  if d then return d end
  d = tonumber(sub(sha256_hex(id), 1, 8), 16)
  if nderived >= 4096 then derived, nderived = {}, 0 end
  derived[id] = d
  nderived = nderived + 1
  return d
end

-- session_id(e) → number | nil, and where it came from
function M.session_id(e)
  local ctx = e.context
  if type(ctx) ~= "table" then return nil end
  local vids = ctx.vendor_ids
  if type(vids) == "table" then
    local sid = M.from_session_cookie(vids.ga_session)
    if sid then return sid, "ga_session_cookie" end
  end
  local s = ctx.session
  local id = type(s) == "table" and str(s.id) or nil
  if id then return derive(id), "datafly_session" end
  return nil
end

local STATE = { granted = "GRANTED", denied = "DENIED" }

local function signal_of(c, key)
  local g = c.google
  if type(g) == "table" and STATE[g[key]] then return STATE[g[key]] end
  local cats = c.categories
  if type(cats) == "table" and type(cats[key]) == "boolean" then return cats[key] and "GRANTED" or "DENIED" end
  if type(c.marketing) == "boolean" then return c.marketing and "GRANTED" or "DENIED" end
  return nil
end

-- consent(e) → { ad_user_data, ad_personalization } | nil
function M.consent(e)
  local ctx = e.context
  local c = type(ctx) == "table" and ctx.consent or nil
  if type(c) ~= "table" then return nil end
  local aud, ap = signal_of(c, "ad_user_data"), signal_of(c, "ad_personalization")
  if not aud and not ap then return nil end
  return { ad_user_data = aud, ad_personalization = ap }
end

-- time_s(e) → the event time in seconds since the epoch (float) | nil
function M.time_s(e)
  return event.parse_iso8601(e.timestamp) or event.parse_iso8601(e.received_at)
end

return M
