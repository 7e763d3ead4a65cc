-- The admin API, live events and /metrics of a real two-worker engine:
-- token checks (404 while admin_token is unset, 401 for a wrong token), what
-- /v1/admin/status reports, live events that show the transformed payload
-- and the vendor request with every secret redacted, the SSE stream, the
-- /live page, reload through the API, and Prometheus counters that add up
-- across workers.
local H = require "helpers"
local K = require "fixtures.tasks.delivery_kit"
local cjson = require "cjson"
local core = require "signal.core"

describe("admin API", function()
  local sb, engine, off, redis, scripts_dir
  local PROFILE_KEY

  setup(function()
    H.flush_redis()
    redis = H.redis()
    sb = H.sandbox(K.FIXTURE)
    PROFILE_KEY = K.fx.profile_token
    scripts_dir = H.tmp .. "/admin-scripts-" .. core.random_hex(3)
    os.execute("mkdir -p " .. scripts_dir)
    engine = H.engine(K.config({
      dk_admin = { K.integ(sb, {
        profile_api_key = PROFILE_KEY, profile_collection_id = "apc-demo",
        linking_keys = { { source = "email", key = "email_sha256", hash = "sha256" } } }) },
      dk_metrics = { K.integ(sb) },
      dk_count = { K.integ(sb) },
    }, { scripts_dir = scripts_dir, trusted_proxies = { "127.0.0.1" } }))
    off = H.engine(K.config({ dk_off = { K.integ(sb) } }, { admin_token = false }))
  end)

  teardown(function()
    if engine then engine:stop() end
    if off then off:stop() end
    if sb then sb:stop() end
    if redis then redis:close() end
  end)

  before_each(function() K.reset(sb) end)

  it("answers 404 on every admin route while admin_token is unset", function()
    for _, r in ipairs({ { "GET", "/v1/admin/status" }, { "POST", "/v1/admin/reload" },
                         { "GET", "/v1/admin/live?pipeline=dk_off" }, { "GET", "/v1/admin/dlq" },
                         { "POST", "/v1/admin/dlq/replay" }, { "GET", "/v1/admin/live/stream" },
                         { "GET", "/live" } }) do
      local res, body = K.admin(off, r[1], r[2], "anything")
      assert.equal(404, res.status, r[2])
      assert.equal("admin API is off: set admin_token", body.error.message)
    end
  end)

  it("answers 401 to a missing or wrong token and accepts both header forms", function()
    local res = assert(H.request("GET", engine.url .. "/v1/admin/status"))
    assert.equal(401, res.status)
    res = K.admin(engine, "GET", "/v1/admin/status", K.ADMIN .. "x")
    assert.equal(401, res.status)
    assert.equal("UNAUTHORIZED", cjson.decode(res.body).error.code)
    res = assert(H.request("GET", engine.url .. "/v1/admin/status", { ["x-admin-token"] = "nope" }))
    assert.equal(401, res.status)
    res = assert(H.request("GET", engine.url .. "/v1/admin/status", { ["x-admin-token"] = K.ADMIN }))
    assert.equal(200, res.status)
    res = K.admin(engine, "GET", "/v1/admin/status")
    assert.equal(200, res.status)
  end)

  it("throttles failed authentication per client address, across workers, and logs it", function()
    local attacker = { ["x-forwarded-for"] = "203.0.113.9" }
    finally(function() redis:call("DEL", "signal:admin:fail:203.0.113.9") end)
    for i = 1, 10 do
      local h = { authorization = "Bearer guess-" .. i }
      for k, v in pairs(attacker) do h[k] = v end
      assert.equal(401, assert(H.request("GET", engine.url .. "/v1/admin/status", h)).status)
    end
    -- locked out, even with the right token
    local h = { authorization = "Bearer " .. K.ADMIN }
    for k, v in pairs(attacker) do h[k] = v end
    local res = assert(H.request("GET", engine.url .. "/v1/admin/status", h))
    assert.equal(429, res.status)
    assert.equal("TOO_MANY_ATTEMPTS", cjson.decode(res.body).error.code)
    local wait = tonumber(res.headers["retry-after"])
    assert.is_true(wait ~= nil and wait >= 1 and wait <= 60)
    -- another address is not
    assert.equal(200, (K.admin(engine, "GET", "/v1/admin/status")).status)
    H.eventually(function()
      return engine:output():find('"msg":"admin authentication failed"', 1, true)
        and engine:output():find('"client":"203.0.113.9"', 1, true)
    end, 5, "the failures are logged with the client address")
  end)

  it("reports blueprint versions, queue depths, retries and dead letters", function()
    local mid = K.send(engine, "dk_metrics")
    K.wait_delivered(sb, { mid }, "esm-demo")
    local res, st = K.admin(engine, "GET", "/v1/admin/status")
    assert.equal(200, res.status)
    assert.matches("^%x+$", st.blueprints.version)
    local p
    for _, x in ipairs(st.pipelines) do if x.key == "dk_metrics" then p = x end end
    assert.is_table(p)
    assert.equal(0, p.raw.pending)
    assert.equal(0, p.processor_dead_letters)
    local i = p.integrations[1]
    assert.equal("amperity", i.name)
    assert.equal("esm-demo", i.event_stream_id)
    assert.equal(0, i.retry_scheduled)
    assert.equal(0, i.dead_letters)
    assert.is_true(i.delivery.consumers >= 1)
    assert.is_nil(res.body:find(K.fx.ingest_token, 1, true))
    assert.is_nil(res.body:find(PROFILE_KEY, 1, true))
  end)

  it("shows live events with the payload and a redacted vendor request, and no secret anywhere", function()
    local mid = K.send(engine, "dk_admin", {
      product_id = "SKU-7",
      note = "pasted by mistake: Bearer " .. K.fx.ingest_token,
      other = PROFILE_KEY,
      admin = K.ADMIN,
    }, { userId = "u-1", context = { traits = { email = "jane.doe@example.com" } } })
    local by = K.wait_delivered(sb, { mid }, "esm-demo")
    local got = H.eventually(function()
      local events, body = K.live(engine, "dk_admin")
      for _, e in ipairs(events) do
        local i = K.live_integration(e, "amperity")
        if e.message_id == mid and i and #i.requests == 1 then return { e, body } end
      end
    end, 10, "the live event with its request")
    local ev, raw = got[1], got[2]
    for _, secret in ipairs({ K.fx.ingest_token, PROFILE_KEY, K.ADMIN }) do
      assert.is_nil(raw:find(secret, 1, true), "a secret leaked into /v1/admin/live")
    end
    assert.equal("Product Viewed", ev.input.event)
    assert.equal("Product Viewed", ev.event.event)
    assert.equal("dk_admin", ev.pipeline)
    assert.is_table(ev.enrichment.amperity)
    local i = K.live_integration(ev, "amperity")
    assert.equal("view_item", i.payload.type)
    assert.equal("SKU-7", i.payload.product_id)
    assert.matches("^%x+$", i.blueprint_version)
    local req = i.requests[1]
    assert.equal("POST", req.method)
    assert.equal(sb.url .. "/prof/events/esm-demo", req.url)
    assert.equal("Bearer [REDACTED]", req.headers.Authorization)
    assert.equal("acme", req.headers["Amperity-Tenant"])
    assert.equal("application/json", req.headers["Content-Type"])
    assert.equal(202, req.status)
    assert.equal('{"status":"accepted"}', req.response)
    assert.equal(1, req.attempt)
    assert.is_number(req.duration_ms)
    -- the request really carried the token; only the record hides it
    assert.equal("Bearer " .. K.fx.ingest_token, by[mid][1].headers.authorization)
    -- the SSE stream: a client that connects now gets the events that come after
    local out = H.tmp .. "/sse-" .. mid .. ".txt"
    os.execute("curl -s -N --max-time 6 -D " .. out .. ".h -H 'Authorization: Bearer " .. K.ADMIN .. "' '" ..
               engine.url .. "/v1/admin/live/stream?pipeline=dk_admin' >" .. out .. " 2>/dev/null &")
    H.eventually(function() return (H.read(out) or ""):find(": connected", 1, true) end, 5, "the stream to open")
    local later = K.send(engine, "dk_admin", { product_id = "SKU-8", other = PROFILE_KEY })
    local body = H.eventually(function()
      local b = H.read(out) or ""
      return b:find("id: " .. later, 1, true) and b
    end, 15, "the new event on the open stream")
    assert.matches("text/event%-stream", H.read(out .. ".h"))
    assert.matches("event: live", body)
    assert.is_nil(body:find("id: " .. mid, 1, true))   -- it started at "now"
    assert.is_nil(body:find(PROFILE_KEY, 1, true))
    -- a reconnecting EventSource resumes after Last-Event-ID
    local out2 = out .. ".2"
    os.execute("curl -s -N --max-time 3 -H 'Last-Event-ID: " .. mid .. "' '" .. engine.url ..
               "/v1/admin/live/stream?pipeline=dk_admin&token=" .. K.ADMIN .. "' >" .. out2 .. " 2>/dev/null")
    assert.truthy((H.read(out2) or ""):find("id: " .. later, 1, true))
  end)

  it("keeps recording live events when Redis forgot its scripts (a restart, SCRIPT FLUSH)", function()
    local function recorded(mids)
      H.eventually(function()
        for _, mid in ipairs(mids) do
          local i = K.live_integration(K.live_event(engine, "dk_metrics", mid), "amperity")
          if not (i and #i.requests == 1) then return false end
        end
        return true
      end, 10, "every live event with its request")
    end
    -- warm: both workers' connections have loaded the live scripts
    local warm = K.send_many(engine, "dk_metrics", 12)
    K.wait_delivered(sb, warm, "esm-demo")
    recorded(warm)
    assert.equal("OK", redis:call("SCRIPT", "FLUSH"))
    -- the next events' records and their vendor requests are not lost to NOSCRIPT
    local mids = K.send_many(engine, "dk_metrics", 12)
    K.wait_delivered(sb, mids, "esm-demo")
    recorded(mids)
  end)

  it("serves the /live page with its two tabs", function()
    local res = assert(H.request("GET", engine.url .. "/live"))
    assert.equal(200, res.status)
    assert.matches("text/html", res.headers["content-type"])
    assert.matches("Transformed Event", res.body)
    assert.matches("Vendor Request", res.body)
    assert.is_nil(res.body:find(K.ADMIN, 1, true))
  end)

  it("reloads scripts through the API and keeps the working version when a script is broken", function()
    local _, before = K.admin(engine, "GET", "/v1/admin/status")
    H.write(scripts_dir .. "/20_extra.lua", 'return { global = { mappings = { { target = "extra", default = "1" } } } }\n')
    local res, body = K.admin(engine, "POST", "/v1/admin/reload")
    assert.equal(200, res.status)
    assert.is_true(body.ok)
    assert.are_not.equal(before.blueprints.version, body.version)
    local good = body.version
    -- the new version maps the next event, in whichever worker processes it
    H.eventually(function()
      local mid = K.send(engine, "dk_metrics")
      local by = K.wait_delivered(sb, { mid }, "esm-demo")
      return by[mid][1].json.extra == "1"
    end, 10, "events mapped by the reloaded scripts")

    H.write(scripts_dir .. "/30_broken.lua", "return { global = { mappings = { { target = } } }\n")
    res, body = K.admin(engine, "POST", "/v1/admin/reload")
    assert.equal(422, res.status)
    assert.is_false(body.ok)
    assert.equal(good, body.version)
    assert.matches("30_broken%.lua:1:", table.concat(body.errors, "\n"))
    local _, st = K.admin(engine, "GET", "/v1/admin/status")
    assert.equal(good, st.blueprints.version)
    assert.matches("30_broken%.lua:1:", table.concat(st.blueprints.errors, "\n"))
    os.remove(scripts_dir .. "/30_broken.lua")
    os.remove(scripts_dir .. "/20_extra.lua")
    assert.equal(200, K.admin(engine, "POST", "/v1/admin/reload").status)
  end)

  it("exports Prometheus counters that add up across workers", function()
    -- a pipeline only this case uses: its counters start at zero
    local function m(series) return K.metric(engine, series) or 0 end
    local L = '{integration="amperity",pipeline="dk_count",status="202"}'
    local mids = K.send_many(engine, "dk_count", 12)
    K.wait_delivered(sb, mids, "esm-demo")
    H.eventually(function()
      return m("signal_deliveries_total" .. L) == 12, m("signal_deliveries_total" .. L)
    end, 10, "12 deliveries counted")
    H.eventually(function()
      return m('signal_events_accepted_total{pipeline="dk_count"}') == 12
        and m('signal_events_processed_total{pipeline="dk_count"}') == 12
    end, 10, "12 accepted and processed events counted")
    local res = assert(H.request("GET", engine.url .. "/metrics"))
    assert.matches("text/plain", res.headers["content-type"])
    assert.matches("# TYPE signal_deliveries_total counter", res.body)
    assert.matches("# TYPE signal_delivery_request_duration_seconds histogram", res.body)
    assert.matches('signal_delivery_request_duration_seconds_bucket{integration="amperity",pipeline="dk_count",le="%+Inf"} 12',
      res.body)
    assert.equal(12, m('signal_delivery_request_duration_seconds_count{integration="amperity",pipeline="dk_count"}'))
    assert.equal(0, m('signal_queue_pending{pipeline="dk_count",stream="raw"}'))
    H.eventually(function()
      return m('signal_queue_length{integration="amperity",pipeline="dk_count",stream="delivery"}') == 0
    end, 5, "the delivery stream drained")
    assert.equal(0, m('signal_dead_letter_depth{integration="amperity",pipeline="dk_count"}'))
    -- request latency by route (other cases post too: at least these 12)
    assert.matches("# TYPE signal_http_request_duration_seconds histogram", res.body)
    assert.is_true(m('signal_http_request_duration_seconds_count{method="POST",route="/v1/t"}') >= 12)
    -- enrichment outcomes: this integration has no Profile API key
    assert.equal(12, m('signal_enrichment_total{integration="amperity",outcome="skipped",pipeline="dk_count"}'))
    assert.is_nil(res.body:find(K.fx.ingest_token, 1, true))
  end)
end)
