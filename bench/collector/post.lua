-- bench/collector/post.lua — wrk script: POSTs the benchmark event with a
-- fresh messageId per request (so Signal's dedupe never short-circuits a
-- request) and the pipeline key in X-Pipeline-Key, as a server or a
-- datafly.js build with a configured key would.
--   wrk -s post.lua URL -- BODY_FILE PIPELINE_KEY
--
-- The load generator shares the two cores with the server it measures, so
-- it must cost as little as it can: the whole request (headers included)
-- is formatted once in init, and each request() only splices a counter
-- into it. The counter has a fixed width (12 digits), so Content-Length
-- never changes (wrk.format per request built a header table and string
-- each time: ~0.5 µs of the shared CPU per request, 7.5 → 7.0 µs of wrk).
local head, tail
local n = 100000000000
local run = string.format("%x", os.time()) .. "-" .. tostring(math.random(1e9))

function init(args)
  local f = assert(io.open(args[1], "rb"))
  local body = f:read("*a")
  f:close()
  local a, b = body:find("MESSAGE_ID_PLACEHOLDER", 1, true)
  assert(a, "the body file must contain MESSAGE_ID_PLACEHOLDER")
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-Pipeline-Key"] = args[2] or "dk_bench"
  local mark = "bench-" .. run .. "-" .. n
  local req = wrk.format(nil, nil, nil, body:sub(1, a - 1) .. mark .. body:sub(b + 1))
  local at = assert(req:find(mark, 1, true))
  head = req:sub(1, at - 1) .. "bench-" .. run .. "-"
  tail = req:sub(at + #mark)
end

function request()
  n = n + 1
  return head .. n .. tail
end

-- wrk counts non-2xx answers itself ("Non-2xx or 3xx responses"); run.sh
-- refuses a run that has any, so a fast stream of errors can't pass as speed.
