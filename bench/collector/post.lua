-- bench/collector/post.lua — wrk script: POSTs the benchmark event with a
-- fresh messageId per request (so Signal's dedupe never short-circuits a
-- request) and the pipeline key in X-Pipeline-Key, as a server or a
-- datafly.js build with a configured key would.
--   wrk -s post.lua URL -- BODY_FILE PIPELINE_KEY
local prefix, suffix
local n = 0
local run = string.format("%x", os.time()) .. "-" .. tostring(math.random(1e9))

function init(args)
  local f = assert(io.open(args[1], "rb"))
  local body = f:read("*a")
  f:close()
  local a, b = body:find("MESSAGE_ID_PLACEHOLDER", 1, true)
  assert(a, "the body file must contain MESSAGE_ID_PLACEHOLDER")
  prefix, suffix = body:sub(1, a - 1), body:sub(b + 1)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-Pipeline-Key"] = args[2] or "dk_bench"
end

function request()
  n = n + 1
  return wrk.format(nil, nil, nil, prefix .. "bench-" .. run .. "-" .. n .. suffix)
end

-- wrk counts non-2xx answers itself ("Non-2xx or 3xx responses"); run.sh
-- refuses a run that has any, so a fast stream of errors can't pass as speed.
