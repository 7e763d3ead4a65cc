-- bench/enrich/enrich_wrk.lua — wrk script: GET /v1/enrich?provider=amperity
-- as datafly.js sends it, each request with the _dfdid cookie of one of
-- VISITORS (default 100) visitors in turn, so every answer is a real
-- allow-listed slice read from Redis (not a first-touch `{}`).
local visitors = tonumber(os.getenv("VISITORS") or "") or 100
local i = 0

request = function()
  i = (i + 1) % visitors
  return wrk.format("GET", "/v1/enrich?provider=amperity", {
    ["Cookie"] = "_dfdid=dfid_bench_" .. i,
    ["Origin"] = "https://shop.example.com",
  })
end
