-- signal.destinations.meta_capi.sandbox — Meta's Conversions API in
-- `signal sandbox`, for demos and specs:
--
--   POST /{api_version}/{pixel_id}/events?access_token=…   (or a form field)
--        200 {"events_received": N, "fbtrace_id": "…"}
--        400 {"error": {"message", "type", "code", "error_subcode"?, "fbtrace_id"}}
--   GET  /{api_version}/{pixel_id}?fields=id&access_token=…
--        200 {"id": "<pixel>"} — what a token check reads
--   GET  /_sandbox/meta   {"events":[…], "test_events":[…]} received (newest last)
--
-- Checks, each refusing the WHOLE request as Meta does (written here
-- independently of the destination's own code: the stand-in is the vendor):
--   the access token (fixture) — else code 190, OAuthException;
--   the pixel (fixture list) — else code 100, subcode 33;
--   a JSON body with data: a list of 1 to 1,000 events — else code 100;
--   per event: event_name, event_time (Unix seconds, not older than 7 days,
--   not in the future), action_source (one of Meta's), and for website
--   events event_source_url and user_data.client_user_agent; user_data
--   present; em, ph, fn, ln, ct, st, zp, country, db, ge and external_id
--   given as SHA-256 hex (this stand-in is stricter than Meta, which only
--   warns about unhashed values: a hashing bug must not pass a spec) —
--   else code 100 naming data[i] and the field.
--
-- Fixture: { "meta": { "access_token": "…", "pixels": ["1234567890"] } }.
local core = require "signal.core"
local cjson = require("cjson.safe").new()
local http = require "signal.http.response"

local type, ipairs, tostring, tonumber = type, ipairs, tostring, tonumber
local match, find, concat = string.match, string.find, table.concat

local M = { counters = { "meta" }, control = {} }

M.LOG_MAX = 2000

local HASHED = { "em", "ph", "fn", "ln", "ct", "st", "zp", "country", "db", "ge", "external_id" }
local SOURCES = { website = true, app = true, email = true, phone_call = true, chat = true,
                  physical_store = true, system_generated = true, business_messaging = true, other = true }
local JSON = { ["Content-Type"] = "application/json" }

local token, pixels
local events, test_events = {}, {}

function M.load(f)
  local m = type(f.meta) == "table" and f.meta or {}
  token = m.access_token
  pixels = {}
  for _, p in ipairs(type(m.pixels) == "table" and m.pixels or {}) do pixels[tostring(p)] = true end
  events, test_events = {}, {}
end

function M.match(path)
  return find(path, "^/v%d+%.%d+/[^/]+/events$") ~= nil or find(path, "^/v%d+%.%d+/%d+$") ~= nil
end

function M.kind() return "meta" end

local function trace() return "A" .. core.random_hex(10) end

local function refuse(code, message, subcode, kind)
  return 400, JSON, cjson.encode({ error = { message = message, type = kind or "OAuthException", code = code,
    error_subcode = subcode, fbtrace_id = trace() } })
end

local function is_hash(v)
  return type(v) == "string" and #v == 64 and not find(v, "[^0-9a-f]")
end

-- check(ev, now) → nil | what is wrong with one server event
function M.check(ev, now)
  if type(ev) ~= "table" then return "must be an object" end
  if type(ev.event_name) ~= "string" or ev.event_name == "" then return "event_name is required" end
  local t = tonumber(ev.event_time)
  if not t then return "event_time is required (Unix seconds)" end
  if t > 1e11 then return "event_time must be in seconds, not milliseconds" end
  if now - t > 7 * 86400 then
    return "event_time is more than 7 days in the past: the event is too old to be processed"
  end
  if t - now > 60 then return "event_time is in the future" end
  if not SOURCES[ev.action_source] then return "action_source is required and must be one of Meta's" end
  local ud = ev.user_data
  if type(ud) ~= "table" then return "user_data is required" end
  if ev.action_source == "website" then
    if type(ev.event_source_url) ~= "string" or ev.event_source_url == "" then
      return "event_source_url is required for website events"
    end
    if type(ud.client_user_agent) ~= "string" or ud.client_user_agent == "" then
      return "user_data.client_user_agent is required for website events"
    end
  end
  for _, k in ipairs(HASHED) do
    local v = ud[k]
    if v ~= nil then
      local list = type(v) == "table" and v or { v }
      for _, x in ipairs(list) do
        if not is_hash(x) then return "user_data." .. k .. " must be hashed with SHA-256 (lower-case hex)" end
      end
    end
  end
  return nil
end

local function keep(list, item)
  list[#list + 1] = item
  if #list > M.LOG_MAX then table.remove(list, 1) end
end

function M.handle(req)
  local q = http.parse_query(req.query)
  local version, pixel, rest = match(req.path, "^/(v%d+%.%d+)/([^/]+)(.*)$")
  if req.method == "GET" and rest == "" then
    if q.access_token ~= token then return refuse(190, "Invalid OAuth access token - Cannot parse access token") end
    if not pixels[pixel] then
      return refuse(100, "Unsupported get request. Object with ID '" .. pixel .. "' does not exist", 33,
        "GraphMethodException")
    end
    return http.json(200, { id = pixel })
  end
  if req.method ~= "POST" or rest ~= "/events" then return http.error(405, "METHOD_NOT_ALLOWED", "use POST") end
  local body = req.body or ""
  local ct = (req.headers["content-type"] or ""):lower()
  local doc, form_token
  if find(ct, "x-www-form-urlencoded", 1, true) then
    local f = http.parse_query(body)
    form_token = f.access_token
    doc = { data = cjson.decode(f.data or ""), test_event_code = f.test_event_code }
  else
    doc = cjson.decode(body)
  end
  local tok = q.access_token or form_token
  if tok == nil or tok ~= token then
    return refuse(190, "Invalid OAuth access token - Cannot parse access token")
  end
  if not pixels[pixel] then
    return refuse(100, "Unsupported post request. Object with ID '" .. pixel .. "' does not exist, cannot be"
      .. " loaded due to missing permissions, or does not support this operation", 33, "GraphMethodException")
  end
  if type(doc) ~= "table" or type(doc.data) ~= "table" or doc.data[1] == nil then
    return refuse(100, "Invalid parameter: data must be a non-empty array of events")
  end
  if #doc.data > 1000 then
    return refuse(100, "Invalid parameter: at most 1000 events per request, got " .. #doc.data)
  end
  local now = core.now()
  local problems = {}
  for i, ev in ipairs(doc.data) do
    local why = M.check(ev, now)
    if why then problems[#problems + 1] = "data[" .. (i - 1) .. "]: " .. why end
  end
  if #problems > 0 then return refuse(100, "Invalid parameter: " .. concat(problems, "; ")) end
  local into = doc.test_event_code and test_events or events
  for _, ev in ipairs(doc.data) do
    keep(into, { version = version, pixel_id = pixel, test_event_code = doc.test_event_code, event = ev })
  end
  return http.json(200, { events_received = #doc.data, fbtrace_id = trace() })
end

M.control["GET /_sandbox/meta"] = function()
  local function arr(l)
    local parts = {}
    for i, x in ipairs(l) do parts[i] = cjson.encode(x) end
    return "[" .. concat(parts, ",") .. "]"
  end
  return 200, JSON, '{"events":' .. arr(events) .. ',"test_events":' .. arr(test_events) .. "}"
end

return M
