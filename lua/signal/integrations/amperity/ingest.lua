-- signal.integrations.amperity.ingest — one Streaming Ingest request and what
-- its outcome means (seed "Event ingest" and "Troubleshooting", DESIGN §3).
--
--   local res, err = ingest.send(integ, payload_json, timeout_ms)
--   local class = ingest.classify(status, err)   -- "ok"|"drop"|"retry"|"final"
--   local hint = ingest.explain(integ, status, err, body) -- what to fix, or nil
--   local secs = ingest.retry_after(res.headers["retry-after"], now)
--   local rec = ingest.record(integ, payload_json, res, err, …) -- for live events
--
-- The request: POST {base_url}/prof/events/{event_stream_id} with headers
-- Amperity-Tenant: {tenant_id}, Authorization: Bearer {api_key} and
-- Content-Type: application/json; the body is the flat payload the
-- blueprint built (Content-Length is set by the HTTP client). URL and header
-- table are built once per integration config, not per event.
--
-- Outcomes: 202 accepted; 204 the stream is in drop mode (accepted, nothing
-- published: not retried, but warned about); 429, 500, 502, 503, 504,
-- timeouts and network errors (DNS included: resolvers fail transiently)
-- are retried; 400/401/403/404/409/411/413/415 — and any other status,
-- which retrying will not change — are final and dead-lettered at once.
-- Messages never contain the API key: the request record redacts the
-- Authorization header and callers scrub with signal.log.scrub as well.
local core = require "signal.core"

local type, tonumber, tostring, floor = type, tonumber, tostring, math.floor
local find, match, sub, format = string.find, string.match, string.sub, string.format

local M = {}

M.RESPONSE_MAX = 2048   -- bytes of a vendor response kept in live events

local prepared = setmetatable({}, { __mode = "k" })   -- integ cfg -> { url, headers, … }

local function prepare(integ)
  local p = prepared[integ]
  if p then return p end
  local url = integ.base_url .. "/prof/events/" .. integ.event_stream_id
  p = {
    url = url,
    headers = {
      ["Amperity-Tenant"] = integ.tenant_id,
      ["Authorization"] = "Bearer " .. tostring(integ.api_key),
      ["Content-Type"] = "application/json",
    },
    -- what live events and dead letters show instead
    shown_headers = {
      ["Amperity-Tenant"] = integ.tenant_id,
      ["Authorization"] = "Bearer [REDACTED]",
      ["Content-Type"] = "application/json",
    },
    host = match(integ.base_url, "^%a+://([^/:]+)") or integ.base_url,
  }
  prepared[integ] = p
  return p
end
M.prepare = prepare

-- The request object is rebuilt per call (the C side reads it synchronously
-- and keeps nothing), but url and headers are shared.
function M.send(integ, body, timeout_ms)
  local p = prepare(integ)
  return core.http.request { method = "POST", url = p.url, headers = p.headers, body = body,
                             timeout_ms = timeout_ms or integ.timeout_ms or 10000 }
end

local RETRY_STATUS = { [429] = true, [500] = true, [502] = true, [503] = true, [504] = true }

-- classify(status, err) → "ok" | "drop" | "retry" | "final"
function M.classify(status, err)
  if not status then return "retry" end          -- timeout, DNS, refused, TLS, reset
  if status == 202 or status == 200 or status == 201 then return "ok" end
  if status == 204 then return "drop" end
  if RETRY_STATUS[status] then return "retry" end
  return "final"
end

-- outcome label for metrics: the status, or the class of a network error
function M.outcome(status, err)
  if status then return tostring(status) end
  err = tostring(err or "")
  if find(err, "^timeout") then return "timeout" end
  if find(err, "resolve", 1, true) then return "dns" end
  if find(err, "connect", 1, true) then return "connect" end
  if find(err, "^TLS") then return "tls" end
  return "error"
end

local function snippet(body)
  if type(body) ~= "string" or body == "" then return "" end
  body = body:gsub("%s+", " ")
  if #body > 200 then body = sub(body, 1, 200) .. "…" end
  return ": " .. body
end

-- explain(integ, status, err, body) → the troubleshooting line (seed's table)
-- for this outcome, or nil when there is nothing to fix.
function M.explain(integ, status, err, body)
  local stream, tenant = integ.event_stream_id, integ.tenant_id
  if not status then
    err = tostring(err or "request failed")
    if find(err, "resolve", 1, true) then
      return err .. ": check tenant_subdomain (" .. tostring(integ.tenant_subdomain)
        .. "): it is the host part of your Amperity dashboard URL (acme for https://acme.amperity.com)"
    end
    if find(err, "^timeout") then
      return err .. ": Amperity did not answer in time; retrying"
    end
    if find(err, "connect", 1, true) then
      return err .. ": check base_url / network access to " .. prepare(integ).host .. "; retrying"
    end
    return err
  end
  if status == 202 or status == 200 or status == 201 then return nil end
  if status == 204 then
    return "stream " .. stream .. " is in drop mode: Amperity accepted the event (204) but published"
      .. " nothing; switch the stream to accept mode in Sources > Streams"
  end
  if status == 401 or status == 403 then
    return "Amperity rejected the api_key (" .. status .. "): the Streaming Ingest JWT is expired, revoked"
      .. " or has the wrong scope (a Profile API key is rejected here); regenerate it in Settings >"
      .. " Security > API Keys with Streaming Ingest Write Access"
  end
  if status == 404 then
    return "stream " .. stream .. " not found for tenant " .. tostring(tenant) .. " (404): check"
      .. " event_stream_id (the esm- Event Stream ID from Sources > Streams) and tenant_id"
  end
  if status == 409 then
    return "stream " .. stream .. " is in reject mode (409): switch it to accept mode in Sources > Streams"
  end
  if status == 413 then
    return "payload too large (413): Amperity accepts at most 64 KB per event; drop large properties in"
      .. " a mapping script"
  end
  if status == 400 then
    return "Amperity refused the body as malformed (400)" .. snippet(body)
  end
  if status == 411 or status == 415 then
    return "Amperity refused the request framing (" .. status .. ")" .. snippet(body)
  end
  if status == 429 then
    return "rate limited by Amperity (429): retrying after Retry-After; lower"
      .. " delivery.rate_limit_per_tenant if this persists"
  end
  if RETRY_STATUS[status] then
    return "Amperity is temporarily unavailable (" .. status .. "); retrying with backoff"
  end
  return "unexpected status " .. status .. " from Amperity" .. snippet(body)
end

-- Days since 1970-01-01 of a civil date: pure arithmetic, timezone-free.
local days_from_civil = require("signal.event").days_from_civil

local MONTHS = { jan = 1, feb = 2, mar = 3, apr = 4, may = 5, jun = 6,
                 jul = 7, aug = 8, sep = 9, oct = 10, nov = 11, dec = 12 }

-- retry_after(value, now) → seconds to wait (≥ 0) | nil. Accepts delta
-- seconds ("120") and an HTTP date ("Wed, 21 Oct 2015 07:28:00 GMT").
function M.retry_after(v, now)
  if type(v) ~= "string" then return nil end
  local n = tonumber(match(v, "^%s*(%d+%.?%d*)%s*$"))
  if n then return n end
  local d, mon, y, hh, mm, ss = match(v, "(%d%d?)[%s%-]+(%a%a%a)[%s%-]+(%d%d%d?%d?)%s+(%d%d):(%d%d):(%d%d)")
  if not d then return nil end
  local m = MONTHS[mon:lower()]
  if not m then return nil end
  y = tonumber(y)
  if y < 100 then y = y + (y < 70 and 2000 or 1900) end
  local t = days_from_civil(y, m, tonumber(d)) * 86400 + tonumber(hh) * 3600 + tonumber(mm) * 60
    + tonumber(ss)
  local secs = t - (now or core.now())
  return secs > 0 and secs or 0
end

local function truncate(s, n)
  if type(s) ~= "string" then return s end
  if #s <= n then return s end
  return sub(s, 1, n) .. "…[truncated " .. (#s - n) .. " bytes]"
end
M.truncate = truncate

-- record(integ, body, res, err, attempt, started_at, duration_s, hint) → the
-- live-event view of one request: method, URL, redacted headers, body,
-- status, response (truncated), duration, attempt, error. The delivery
-- worker passes body = nil: live events show the recorded payload (the same
-- bytes) as the body rather than storing it twice.
function M.record(integ, body, res, err, attempt, started_at, duration_s, hint)
  local p = prepare(integ)
  return {
    attempt = attempt,
    at = floor(started_at * 1000),
    method = "POST",
    url = p.url,
    headers = p.shown_headers,
    body = body,
    status = res and res.status or nil,
    response = res and truncate(res.body, M.RESPONSE_MAX) or nil,
    retry_after = res and res.headers and res.headers["retry-after"] or nil,
    duration_ms = floor(duration_s * 1000 * 10 + 0.5) / 10,
    error = err,
    hint = hint,
  }
end

return M
