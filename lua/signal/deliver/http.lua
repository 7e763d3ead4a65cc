-- signal.deliver.http — what HTTP destinations share about one delivery
-- request: sending it, reading Retry-After, and turning the answer into the
-- outcome the delivery loop acts on.
--
--   local outcome = dhttp.post(req, timeout_ms, classify)
--     req      { method = "POST", url, headers, body,
--                shown_url?, shown_headers }   -- what live events may show:
--                                              -- no token, no secret query
--     classify(status, body) → "delivered" | "retry" | "permanent" | "dropped"
--              (only called with a status; network errors are always "retry")
--   outcome = { class, status, error, retry_after_s, label, response,
--               request = { method, url, headers }, duration_s,
--               new_connections (0 on a reused connection), http_version }
--
-- `label` is the metrics label of the outcome: the status code, or the kind
-- of network failure (timeout, dns, connect, tls, error). `response` is the
-- vendor's body, truncated to RESPONSE_MAX for live events.
local core = require "signal.core"
local event = require "signal.pipeline.event"

local type, tonumber, tostring = type, tonumber, tostring
local find, match, sub = string.find, string.match, string.sub
local monotonic, now = core.monotonic, core.now

local M = {}

M.RESPONSE_MAX = 2048   -- bytes of a vendor response kept in live events

-- The statuses retrying can change; anything else a vendor answers is final.
M.RETRY_STATUS = { [408] = true, [429] = true, [500] = true, [502] = true, [503] = true, [504] = true }

-- label(status, err) → metrics label: the status, or the class of a
-- network error
function M.label(status, err)
  if status then return tostring(status) end
  err = tostring(err or "")
  if find(err, "^timeout") then return "timeout" end
  if find(err, "resolve", 1, true) then return "dns" end
  if find(err, "connect", 1, true) then return "connect" end
  if find(err, "^TLS") then return "tls" end
  return "error"
end

local MONTHS = { jan = 1, feb = 2, mar = 3, apr = 4, may = 5, jun = 6,
                 jul = 7, aug = 8, sep = 9, oct = 10, nov = 11, dec = 12 }

-- retry_after(value, now) → seconds to wait (≥ 0) | nil. Accepts delta
-- seconds ("120") and an HTTP date ("Wed, 21 Oct 2015 07:28:00 GMT").
function M.retry_after(v, t)
  if type(v) ~= "string" then return nil end
  local n = tonumber(match(v, "^%s*(%d+%.?%d*)%s*$"))
  if n then return n end
  local d, mon, y, hh, mm, ss = match(v, "(%d%d?)[%s%-]+(%a%a%a)[%s%-]+(%d%d%d?%d?)%s+(%d%d):(%d%d):(%d%d)")
  if not d then return nil end
  local m = MONTHS[mon:lower()]
  if not m then return nil end
  y = tonumber(y)
  if y < 100 then y = y + (y < 70 and 2000 or 1900) end
  local secs = event.days_from_civil(y, m, tonumber(d)) * 86400 + tonumber(hh) * 3600
    + tonumber(mm) * 60 + tonumber(ss) - (t or now())
  return secs > 0 and secs or 0
end

-- truncate(s, n) → s, or its first n bytes and how many were cut
function M.truncate(s, n)
  if type(s) ~= "string" or #s <= n then return s end
  return sub(s, 1, n) .. "…[truncated " .. (#s - n) .. " bytes]"
end

-- post(req, timeout_ms, classify) → outcome (see the top of the file)
function M.post(req, timeout_ms, classify)
  local t0 = monotonic()
  local ok, res, err = pcall(core.http.request, {
    method = req.method or "POST", url = req.url, headers = req.headers, body = req.body,
    timeout_ms = timeout_ms,
  })
  local out = {
    request = { method = req.method or "POST", url = req.shown_url or req.url, headers = req.shown_headers },
    duration_s = monotonic() - t0,
  }
  if not ok then
    -- a request the HTTP client refuses to build will never succeed
    out.class, out.error, out.label = "permanent", "request not sent: " .. tostring(res), "error"
    return out
  end
  if not res then
    out.class, out.error, out.label = "retry", tostring(err or "request failed"), M.label(nil, err)
    return out
  end
  out.status, out.label = res.status, tostring(res.status)
  out.new_connections, out.http_version = res.new_connections, res.http_version
  out.response = M.truncate(res.body, M.RESPONSE_MAX)
  out.body = res.body
  out.class = classify(res.status, res.body)
  local ra = res.headers and res.headers["retry-after"]
  if ra then
    out.retry_after = ra
    if out.class == "retry" then out.retry_after_s = M.retry_after(ra) end
  end
  return out
end

-- snippet(body) → ": <first 200 bytes, whitespace folded>" for a message
function M.snippet(body)
  if type(body) ~= "string" or body == "" then return "" end
  body = body:gsub("%s+", " ")
  if #body > 200 then body = sub(body, 1, 200) .. "…" end
  return ": " .. body
end

return M
