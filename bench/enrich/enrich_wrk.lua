-- bench/enrich/enrich_wrk.lua — wrk script: GET /v1/enrich?provider=amperity
-- as datafly.js sends it, each request with the _dfdid cookie of one of
-- VISITORS (default 100) visitors in turn, so every answer is a real
-- allow-listed slice read from Redis (not a first-touch `{}`).
--
-- PACE_MS=n: each connection waits n ms between requests (wrk's delay()),
-- so C connections offer about C × 1000 / n requests/s — a fixed offered load
-- (Debian's wrk has no -R): 50 connections × 10 ms ≈ 5,000 req/s.
local visitors = tonumber(os.getenv("VISITORS") or "") or 100
local pace = tonumber(os.getenv("PACE_MS") or "")
local i = 0

if pace then
  delay = function() return pace end
end

request = function()
  i = (i + 1) % visitors
  return wrk.format("GET", "/v1/enrich?provider=amperity", {
    ["Cookie"] = "_dfdid=dfid_bench_" .. i,
    ["Origin"] = "https://shop.example.com",
  })
end
