-- bench/delivery/inject.lua — run under `signal exec` by bench/delivery/run.sh.
--
--   signal exec bench/delivery/inject.lua REDIS_URL PIPELINE N SANDBOX_URL [MODE ENGINE_URL]
--
-- Puts N events into the pipeline and waits until the sandbox has received
-- N ingest requests, then prints one JSON line: n, inject_s (time to enqueue
-- them all), elapsed_s (first enqueue → N-th delivery), rate (delivered
-- events/s) and the sandbox's max_in_flight.
--   MODE=raw (default): XADD canonical events straight into the raw stream,
--     pipelined 500 at a time — what the collector would have stored — so
--     the figure is the processor + delivery path alone.
--   MODE=enqueue: as raw, but exits once the events are enqueued.
--   MODE=collector: POST /v1/batch (50 messages each, 16 in flight) to the
--     engine, so the collector's work shares the same two cores.
-- The event is bench/collector/event.lua's 1.1 KB datafly.js track event;
-- each copy gets its own messageId, visitor ids, product, price, page path
-- and timestamps, of varying lengths, as real traffic has. (Copies that
-- differ only in a fixed-width id are a LuaJIT worst case: its string
-- interning hashes long strings from 4 sampled positions, so same-length
-- near-identical JSON strings all collide and every new one is memcmp'd
-- against the whole chain — a benchmark artifact worth 30 % of the CPU.)
local core = require "signal.core"
local cjson = require "cjson"

local args = ...
local redis_url, pk, n, sandbox, mode, engine_url = args[1], args[2], tonumber(args[3]), args[4],
  args[5] or "raw", args[6]

local f = assert(io.popen("luajit bench/collector/event.lua"))
local input_json = f:read("*a")
f:close()
local input = cjson.decode(input_json)

local random, rhex = math.random, core.random_hex
math.randomseed(tonumber(rhex(4), 16))
local PATHS = { "/p/trail-runner-4-gtx", "/c/shoes", "/", "/cart", "/p/storm-shell-jacket-2026",
                "/search?q=boots", "/p/a", "/account/orders/1842" }

-- vary(i): the template with this copy's own values
local function vary(i)
  input.messageId = "bench-" .. i .. "-" .. rhex(random(4, 12))
  input.anonymousId = rhex(random(8, 16))
  input.userId = random() < 0.5 and ("cust_" .. random(1, 1e6)) or nil
  local p = input.properties
  p.product_id = "SKU-" .. random(1, 1e7)
  p.price = random(100, 100000) / 100
  p.quantity = random(1, 5)
  input.context.page.path = PATHS[random(#PATHS)]
  input.context.session.count = random(1, 300)
  input.timestamp = string.format("2026-04-17T15:%02d:%02d.%03dZ", random(0, 59), random(0, 59), random(0, 999))
end

local function stats()
  local res = core.http.request { url = sandbox .. "/_sandbox/stats", timeout_ms = 5000 }
  return res and cjson.decode(res.body) or {}
end
local base = stats().events or 0

local t0 = core.now()
if mode == "raw" or mode == "enqueue" then
  local ctx = { canonical_id = "dfid_bench", pipeline_key = pk, ip = "203.0.113.7",
                user_agent = input.context.userAgent, received_at = 1776440230.7 }   -- 2026-04-17T15:37:10.700Z
  local r = assert(core.redis.connect(redis_url))
  local raw = "signal:{" .. pk .. "}:raw"
  local sent = 0
  while sent < n do
    local cmds = {}
    for i = 1, math.min(500, n - sent) do
      vary(sent + i)
      input_json = cjson.encode(input)
      local ev_json = assert(core.collect.normalize(input_json, ctx))
      cmds[i] = { "XADD", raw, "*", "ev", ev_json, "in", input_json }
    end
    assert(r:pipeline(cmds))
    sent = sent + #cmds
  end
else
  local batch_n, inflight, sent, failed = 50, 0, 0, 0
  local function post(first, count)
    local msgs = {}
    for i = 1, count do
      vary(first + i)
      msgs[i] = cjson.decode(cjson.encode(input))
    end
    local res = core.http.request { method = "POST", url = engine_url .. "/v1/batch", timeout_ms = 30000,
      headers = { ["content-type"] = "application/json", ["x-pipeline-key"] = pk },
      body = cjson.encode({ batch = msgs }) }
    if not res or res.status ~= 200 then failed = failed + 1 end
    inflight = inflight - 1
  end
  while sent < n do
    if inflight < 16 then
      local c = math.min(batch_n, n - sent)
      inflight = inflight + 1
      core.spawn(post, sent, c)
      sent = sent + c
    else
      core.sleep(1)
    end
  end
  while inflight > 0 do core.sleep(5) end
  if failed > 0 then io.stderr:write("inject: ", failed, " batches failed\n") return 1 end
end
local t1 = core.now()
if mode == "enqueue" then
  print(cjson.encode({ n = n, enqueued_s = t1 - t0 }))
  return 0
end

local st
repeat
  core.sleep(20)
  st = stats()
until (st.events or 0) - base >= n or core.now() - t1 > 600
local t2 = core.now()
local delivered = (st.events or 0) - base
print(cjson.encode({ n = n, delivered = delivered, mode = mode, inject_s = t1 - t0, elapsed_s = t2 - t0,
                     rate = math.floor(delivered / (t2 - t0)), sandbox_max_in_flight = st.max_in_flight }))
return delivered >= n and 0 or 1
