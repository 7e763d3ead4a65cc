-- The engine core driven for real: bin/signal serving a Lua app, and engine
-- tasks (`signal exec`) using the non-blocking HTTP and Redis primitives.
local H = require "helpers"
local cjson = require "cjson"
local core = require "signal.core"

describe("engine core", function()
  local upstream

  setup(function()
    upstream = H.serve(H.root .. "/spec/fixtures/apps/upstream.lua")
  end)

  teardown(function()
    if upstream then upstream:stop() end
  end)

  it("prints its version", function()
    local f = io.popen(H.bin .. " --version")
    local v = f:read("*a")
    f:close()
    assert.matches("^signal 1%.8%.0 %(LuaJIT", v)
  end)

  it("serves a Lua route and answers unknown routes with the JSON error shape", function()
    local res = assert(H.request("GET", upstream.url .. "/hello"))
    assert.equal(200, res.status)
    assert.equal("hello", res.body)
    res = assert(H.request("GET", upstream.url .. "/nope"))
    assert.equal(404, res.status)
    assert.same({ error = { code = "NOT_FOUND", message = "no route for GET /nope" } }, H.json(res))
  end)

  it("holds 1000 concurrent outbound requests in one worker without blocking it", function()
    local out, code, err = H.exec(H.root .. "/spec/fixtures/tasks/http_concurrency.lua", upstream.url, "1000")
    assert.equal(0, code, err)
    local r = cjson.decode(out)
    assert.equal(1000, r.ok, tostring(r.first_err))
    assert.equal(0, r.failed)
    -- the ticker coroutine kept running while 1000 requests were pending
    assert.is_true(r.ticks_while_held > 0)
    -- and the upstream (one worker, 1000 requests held) still answered /hello
    assert.equal(200, r.hello_status)
    assert.is_true(r.hello_before_release)
  end)

  it("streams a chunked reply and notices when the client goes away", function()
    local res = assert(H.request("GET", upstream.url .. "/stream?n=3"))
    assert.equal(200, res.status)
    assert.equal("chunked", res.headers["transfer-encoding"])
    assert.equal("data: 1\n\ndata: 2\n\ndata: 3\n\n", res.body)
    -- a client that gives up: the handler's next write fails and it returns
    local _, err = H.request("GET", upstream.url .. "/stream_forever", nil, nil, 200)
    assert.matches("^timeout", err)
    H.eventually(function()
      return assert(H.request("GET", upstream.url .. "/stream_ended")).body == "1"
    end, 10, "the streaming handler to see the client leave")
  end)

  it("reuses keep-alive connections and reports timeouts, refusals and DNS failures clearly", function()
    local out, code, err = H.exec(H.root .. "/spec/fixtures/tasks/http_client.lua", upstream.url)
    assert.equal(0, code, err)
    local r = cjson.decode(out)
    for i = 2, 5 do assert.equal(r.peers[1], r.peers[i]) end
    assert.matches("^timeout after 200 ms", r.timeout_err)
    assert.matches("^could not connect to 127%.0%.0%.1:1", r.connect_err)
    assert.equal("could not resolve host acme.amperity.invalid", r.dns_err)
    assert.same({ status = 200, len = 5000, tenant = "acme", ctype = "application/json" }, r.echo)
    assert.same({ status = 503, retry_after = "7" }, r.status)
  end)

  it("reconnects to Redis after the server restarts and selects the db again", function()
    local port = H.free_port()
    local dir = H.tmp .. "/redis-restart"
    os.execute("mkdir -p " .. dir)
    assert.is_true(H.sh_ok("redis-server --port " .. port .. " --save '' --appendonly no --daemonize yes --dir " ..
                           dir .. " >/dev/null"))
    core.sleep(200)
    local out, code, err = H.exec(H.root .. "/spec/fixtures/tasks/redis_reconnect.lua", tostring(port), dir)
    assert.equal(0, code, err)
    local r = cjson.decode(out)
    assert.equal("PONG", r.before)
    assert.equal("OK", r.set)
    assert.is_nil(r.down_value)
    assert.matches("^redis unavailable", r.down_err)
    assert.equal("PONG", r.after)
    assert.matches("db=3", r.db_after)
  end)

  it("authenticates and selects the db from the URL, over TCP and a unix socket", function()
    local port = H.free_port()
    local dir = H.tmp .. "/redis-auth-" .. port
    local sock = dir .. "/redis.sock"
    os.execute("mkdir -p " .. dir)
    assert.is_true(H.sh_ok("redis-server --port " .. port .. " --bind 127.0.0.1 --requirepass s3cret-pw" ..
      " --unixsocket " .. sock .. " --save '' --appendonly no --daemonize yes --dir " .. dir ..
      " --pidfile " .. dir .. "/redis.pid >/dev/null"))
    local tcp = "redis://:s3cret-pw@127.0.0.1:" .. port .. "/2"
    H.eventually(function()
      local r = core.redis.connect(tcp)
      return r and r:call("PING") == "PONG"
    end, 10, "the password-protected redis-server")
    -- the blocking (standalone) side
    local r = core.redis.connect(tcp)
    assert.matches("db=2", r:call("CLIENT", "INFO"))
    r:close()
    -- the engine's async side, over TCP and the unix socket
    local out, code, err = H.exec(H.root .. "/spec/fixtures/tasks/redis_auth_unix.lua", tcp,
                                  "unix://:s3cret-pw@" .. sock .. "?db=5")
    os.execute("redis-cli -p " .. port .. " -a s3cret-pw --no-auth-warning shutdown nosave >/dev/null 2>&1")
    assert.equal(0, code, err)
    local res = cjson.decode(out)
    assert.equal("OK", res["1"].set)
    assert.matches("db=2", res["1"].info)
    assert.equal("OK", res["2"].set)
    assert.matches("db=5", res["2"].info)
    assert.matches("addr=/", res["2"].info)      -- really the unix socket
    -- a wrong password: reported (log + NOAUTH on the command), not a crash
    assert.same(cjson.null, res.wrong[1])
    assert.matches("NOAUTH", res.wrong[2])
    assert.matches("WRONGPASS", err)
  end)

  it("answers a stalled Redis with a timeout error and drops the late replies", function()
    local s = H.redis_server()
    local pid = assert(tonumber(H.read(s.dir .. "/redis.pid")))
    local out, code, err = H.exec(H.root .. "/spec/fixtures/tasks/redis_stall.lua", tostring(s.port), tostring(pid))
    s:stop()
    assert.equal(0, code, err)
    local r = cjson.decode(out)
    assert.equal("PONG", r.before)
    assert.same({ cjson.null, "redis timeout after 300 ms" }, r.stalled)
    assert.same({ cjson.null, "redis timeout after 300 ms" }, r.stalled_pipeline)
    assert.equal("PONG", r.after)
    assert.same({ "OK", "2" }, r.after_pipeline)
  end)

  it("refuses to start when the port is taken, with a message saying so", function()
    local port = upstream.url:match(":(%d+)$")
    local _, code = H.exec("/dev/null")  -- warm-up: exec of an empty file exits 0
    assert.equal(0, code)
    local f = io.popen(H.bin .. " serve " .. H.root .. "/spec/fixtures/apps/upstream.lua --listen 127.0.0.1:" ..
                       port .. " 2>&1; echo \"exit=$?\"")
    local text = f:read("*a")
    f:close()
    assert.matches("address already in use", text)
    assert.matches("exit=1", text)
  end)

  it("fails a task that calls coroutine.yield directly instead of hanging", function()
    local file = H.write(H.tmp .. "/bad_yield.lua", "coroutine.yield() return 0")
    local _, code, err = H.exec(file)
    assert.equal(1, code)
    assert.matches("only signal.core primitives may suspend", err)
  end)
end)

describe("signal.core standalone (blocking) module", function()
  it("hashes SHA-256 test vectors", function()
    assert.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", core.sha256_hex(""))
    assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", core.sha256_hex("abc"))
    assert.equal("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
                 core.sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))
  end)

  it("runs Redis commands and pipelines, with nil and error replies", function()
    local r = H.redis()
    assert.equal("OK", r:call("SET", "spec:k", "1"))
    assert.equal(2, r:call("INCR", "spec:k"))
    assert.is_nil(r:call("GET", "spec:missing"))
    local v, err = r:call("LPUSH", "spec:k", "x")
    assert.is_nil(v)
    assert.matches("WRONGTYPE", err)
    local rep = assert(r:pipeline({ { "SET", "spec:a", "1" }, { "GET", "spec:a" }, { "HGET", "spec:a", "f" },
                                    { "MGET", "spec:a", "spec:none" } }))
    assert.equal("OK", rep[1])
    assert.equal("1", rep[2])
    assert.matches("WRONGTYPE", rep[3].err)
    assert.equal("1", rep[4][1])
    assert.equal(core.null, rep[4][2])
    r:close()
  end)

  it("reports an unreachable Redis as nil, 'redis unavailable: …'", function()
    local r = core.redis.connect("redis://127.0.0.1:1/0")
    local v, err = r:call("PING")
    assert.is_nil(v)
    assert.matches("^redis unavailable", err)
  end)

  it("makes blocking HTTP requests with the same result shape", function()
    local up = H.serve(H.root .. "/spec/fixtures/apps/upstream.lua")
    local res = assert(core.http.request { url = up.url .. "/hello" })
    assert.equal(200, res.status)
    assert.equal("hello", res.body)
    assert.equal("text/plain", res.headers["content-type"])
    up:stop()
  end)
end)
