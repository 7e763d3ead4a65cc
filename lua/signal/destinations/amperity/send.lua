-- signal.destinations.amperity.send — one Streaming Ingest request and what
-- its outcome means.
--
--   local outcome = send.send(cfg, { payload_json }, timeout_ms)
--   local class = send.classify(status)   -- delivered | dropped | retry | permanent
--   local hint = send.explain(cfg, outcome) -- what to fix, or nil
--
-- The request: POST {base_url}/prof/events/{event_stream_id} with headers
-- Amperity-Tenant: {tenant_id}, Authorization: Bearer {api_key} and
-- Content-Type: application/json; the body is the one flat payload the
-- blueprint built (Amperity takes no arrays: a batch is always one event;
-- Content-Length is set by the HTTP client). URL and header tables are
-- built once per integration config, not per event.
--
-- Outcomes: 202 accepted; 204 the stream is in drop mode (accepted, nothing
-- published: not retried, but warned about); 429, 500, 502, 503, 504,
-- timeouts and network errors (DNS included: resolvers fail transiently)
-- are retried; 400/401/403/404/409/411/413/415 — and any other status,
-- which retrying will not change — are permanent and dead-lettered at once.
-- Messages never contain the API key: the request view redacts the
-- Authorization header and the delivery loop scrubs every message too.
local dhttp = require "signal.deliver.http"

local tostring = tostring
local find, match = string.find, string.match
local snippet = dhttp.snippet

local M = {}

local prepared = setmetatable({}, { __mode = "k" })   -- integ cfg -> { url, headers, … }

local function prepare(cfg)
  local p = prepared[cfg]
  if p then return p end
  p = {
    url = cfg.base_url .. "/prof/events/" .. cfg.event_stream_id,
    headers = {
      ["Amperity-Tenant"] = cfg.tenant_id,
      ["Authorization"] = "Bearer " .. tostring(cfg.api_key),
      ["Content-Type"] = "application/json",
    },
    -- what live events and dead letters show instead
    shown_headers = {
      ["Amperity-Tenant"] = cfg.tenant_id,
      ["Authorization"] = "Bearer [REDACTED]",
      ["Content-Type"] = "application/json",
    },
    host = match(cfg.base_url, "^%a+://([^/:]+)") or cfg.base_url,
  }
  prepared[cfg] = p
  return p
end
M.prepare = prepare

local RETRY_STATUS = { [429] = true, [500] = true, [502] = true, [503] = true, [504] = true }

-- classify(status) → "delivered" | "dropped" | "retry" | "permanent"
function M.classify(status)
  if status == 202 or status == 200 or status == 201 then return "delivered" end
  if status == 204 then return "dropped" end
  if RETRY_STATUS[status] then return "retry" end
  return "permanent"
end

-- send(cfg, batch, timeout_ms) → outcome. batch holds one payload: the
-- destination declares max_batch = 1.
function M.send(cfg, batch, timeout_ms)
  local p = prepare(cfg)
  return dhttp.post({ url = p.url, headers = p.headers, shown_headers = p.shown_headers, body = batch[1] },
                    timeout_ms, M.classify)
end

-- explain(cfg, outcome) → the troubleshooting line for this outcome, or nil
-- when there is nothing to fix.
function M.explain(cfg, o)
  local status, err, body = o.status, o.error, o.body or o.response
  local stream, tenant = cfg.event_stream_id, cfg.tenant_id
  if not status then
    err = tostring(err or "request failed")
    if find(err, "resolve", 1, true) then
      return err .. ": check tenant_subdomain (" .. tostring(cfg.tenant_subdomain)
        .. "): it is the host part of your Amperity dashboard URL (acme for https://acme.amperity.com)"
    end
    if find(err, "^timeout") then
      return err .. ": Amperity did not answer in time; retrying"
    end
    if find(err, "connect", 1, true) then
      return err .. ": check base_url / network access to " .. prepare(cfg).host .. "; retrying"
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
    return "rate limited by Amperity (429): retrying after Retry-After; lower the integration's"
      .. " rate_limit (or delivery.rate_limit_per_tenant) if this persists"
  end
  if RETRY_STATUS[status] then
    return "Amperity is temporarily unavailable (" .. status .. "); retrying with backoff"
  end
  return "unexpected status " .. status .. " from Amperity" .. snippet(body)
end

return M
