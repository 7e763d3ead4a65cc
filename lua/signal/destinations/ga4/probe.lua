-- signal.destinations.ga4.probe — `signal check --live` for GA4: one sample
-- event, built by the destination's own finish step, posted to the
-- validation server (/debug/mp/collect). GA4's /mp/collect answers 2xx even
-- to payloads it discards; the validation server is the only place that
-- says what is wrong. It records nothing, so the probe never adds data to
-- the property. (It does not check api_secret: a wrong secret still
-- validates; the data then never shows up in reports.)
--
--   local ok, message = probe.run(cfg)
local core = require "signal.core"
local cjson = require("cjson.safe").new()
local payload = require "signal.destinations.ga4.payload"
local send = require "signal.destinations.ga4.send"

local tostring, floor = tostring, math.floor

local M = {}

M.SAMPLE_CLIENT_ID = "1234567890.1700000000"

-- sample(cfg) → the body of the sample event (a page_view)
function M.sample(cfg)
  local ev = {
    type = "page", name = "Signal check", message_id = "signal-check", pipeline_key = "signal_check",
    timestamp = require("signal.pipeline.event").iso8601(floor(core.now())),
    anonymous_id = "signal-check",
    context = { page = { url = "https://signal.invalid/check", title = "Signal check" },
                session = { id = "signal-check" }, vendor_ids = { ga = "GA1.1." .. M.SAMPLE_CLIENT_ID } },
  }
  local mapped = { name = "page_view", page_location = ev.context.page.url, page_title = ev.context.page.title }
  return payload.finish(ev, mapped, cfg)
end

-- run(cfg) → ok, message (nothing secret: the URL is never printed)
function M.run(cfg)
  local body = M.sample(cfg)
  local p = send.prepare(cfg, true)
  local ok, res, err = pcall(core.http.request, { method = "POST", url = p.url, headers = p.headers,
    body = cjson.encode(body), timeout_ms = cfg.timeout_ms or 10000 })
  if not ok then return false, "request not sent: " .. tostring(res) end
  if not res then return false, tostring(err) .. ": the validation server at " .. p.host .. " did not answer" end
  if res.status ~= 200 then
    return false, "the validation server answered " .. res.status .. ": check base_url and region"
  end
  local list = send.messages(res.body)
  if not list then return false, "the validation server's answer has no validationMessages" end
  if list[1] == nil then
    return true, "valid (measurement_id " .. tostring(cfg.measurement_id) .. ", sample page_view; the"
      .. " validation server does not check api_secret)"
  end
  return false, #list .. " validation message(s): " .. send.describe(list)
end

return M
