-- bench/core/http_out.lua — outbound HTTP requests per second through
-- core.http.request from one engine worker, C concurrent coroutines against
-- a local keep-alive server. Prints JSON.
local core = require "signal.core"
local cjson = require "cjson"
local url, n, c = (...)[1], tonumber((...)[2]) or 20000, tonumber((...)[3]) or 64
local done, failed, started = 0, 0, 0
local t = core.monotonic()
for _ = 1, c do
  core.spawn(function()
    while started < n do
      started = started + 1
      local res = core.http.request { url = url, timeout_ms = 5000 }
      if not res or res.status ~= 200 then failed = failed + 1 end
      done = done + 1
    end
  end)
end
while done < n do core.sleep(2) end
print(cjson.encode { requests = n, failed = failed, concurrency = c,
                     req_s = math.floor(n / (core.monotonic() - t)) })
