-- bench/pipeline/run.lua — pipeline throughput without network:
-- normalize (the collector's C conversion) → decode → blueprint map (retail
-- preset + the example customer script) → encode, per core, beside a bare cjson decode+encode of the same
-- 1.1 KB datafly.js event in the same run. Target: ≥ 40 % of the bare trip.
--   luajit bench/pipeline/run.lua          (after `make`, from the repo root)
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/lua/?.so;" .. package.cpath
local core = require "signal.core"
local cjson = require "cjson"
local blueprint = require "signal.pipeline.blueprint"

local N = tonumber(arg[1]) or 200000
local input = cjson.encode {
  type = "track", event = "Product Added", messageId = "m-7f3c2a9e-1b4d-4c8e-9f21-0a6b5c4d3e2f",
  anonymousId = "a-2c9f1e7b-5d3a-4b8c-8e6f-1a2b3c4d5e6f", userId = "user-123",
  timestamp = "2026-11-26T15:37:10.484Z", sentAt = "2026-11-26T15:37:10.600Z",
  properties = { product_id = "SKU-4417", sku = "SKU-4417", name = "Trail Runner 2", brand = "Acme",
                 category = "Shoes/Running", price = 89.99, currency = "USD", quantity = 1,
                 value = 89.99 },
  context = {
    page = { url = "https://www.example.com/shoes/trail-runner-2?utm_source=newsletter&utm_medium=email",
             path = "/shoes/trail-runner-2",
             title = "Trail Runner 2 | Acme" },
    campaign = { source = "newsletter", medium = "email", name = "black-friday" },
    locale = "en-US", timezone = "America/New_York",
    userAgent = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) Chrome/131.0",
    screen = { width = 1440, height = 900, density = 2 }, library = { name = "datafly.js", version = "1.8.0" },
    vendorIds = { ga = "GA1.1.1234567890.1732600000", fbp = "fb.1.1732600000.987654321" },
    consent = { analytics = true, marketing = false, functional = true,
                categories = { C0001 = true, C0002 = true, C0003 = true, C0004 = false },
                google = { ad_storage = "denied", analytics_storage = "granted",
                           ad_user_data = "denied", ad_personalization = "denied" } },
  },
}
local lib = assert(blueprint.load { presets_dir = "presets", scripts_dir = "examples/scripts" })
local bp = assert(lib:get("retail", "dk_live_demo"))
local integ = { source_value = "DATAFLY" }
local ctx = { canonical_id = "dfid_4f1e2d3c", pipeline_key = "dk_live_demo", ip = "203.0.113.7",
              user_agent = "Mozilla/5.0", received_at = 1764171430.7 }   -- 2026-11-26T15:37:10.700Z

local function bench(fn)
  for _ = 1, N / 10 do fn() end   -- warm up the JIT
  local t = core.monotonic()
  for _ = 1, N do fn() end
  return N / (core.monotonic() - t)
end

local bare = bench(function() return cjson.encode(cjson.decode(input)) end)
local full = bench(function()
  local ev = cjson.decode((core.collect.normalize(input, ctx)))
  return cjson.encode((bp:map(ev, integ)))
end)
print(string.format("event size: %d bytes, iterations: %d", #input, N))
print(string.format("bare cjson decode+encode:          %8.0f events/s/core", bare))
print(string.format("normalize+decode+map+encode:       %8.0f events/s/core (%.0f%% of bare)", full, 100 * full / bare))
