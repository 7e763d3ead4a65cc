-- The engine's HTTP/1.1 server (engine/server.c) spoken to byte by byte over
-- a raw socket: framing, keep-alive, pipelining, chunked bodies, Expect,
-- HTTP/1.0, and the JSON errors for hostile or broken requests.
local H = require "helpers"
local cjson = require "cjson"
local socket = require "socket"

-- A raw connection to the server with a response reader.
local function connect(port)
  local s = assert(socket.tcp())
  s:settimeout(5)
  assert(s:connect("127.0.0.1", port))
  return s
end

-- read_response(s) → { status, version, headers (lower-case), body } | nil, err
-- Reads exactly one response: Content-Length, chunked, or to the close.
-- read_head(s) → the status line and the headers (lower-case names), or
-- nil, err; the body, if any, is left unread
local function read_head(s)
  local line, err = s:receive("*l")
  if not line then return nil, err end
  local headers = {}
  while true do
    local h = assert(s:receive("*l"))
    if h == "" then break end
    local k, v = h:match("^([^:]+):%s*(.*)$")
    headers[k:lower()] = v
  end
  return line, headers
end

local function read_response(s)
  local line, headers = read_head(s)
  if not line then return nil, headers end
  local version, status = line:match("^HTTP/(1%.%d) (%d%d%d)")
  assert(version, "bad status line: " .. line)
  local res = { status = tonumber(status), version = version, headers = headers }
  if res.status == 100 then return res end
  local te, cl = res.headers["transfer-encoding"], tonumber(res.headers["content-length"])
  if te == "chunked" then
    local parts = {}
    while true do
      local size = tonumber(assert(s:receive("*l")), 16)
      if size == 0 then assert(s:receive("*l")) break end
      parts[#parts + 1] = assert(s:receive(size))
      assert(s:receive("*l"))
    end
    res.body = table.concat(parts)
  elseif cl then
    res.body = cl > 0 and assert(s:receive(cl)) or ""
  else
    res.body = s:receive("*a")
  end
  return res
end

-- Whether the server closed the connection (reads EOF within a second).
local function closed(s)
  s:settimeout(1)
  local _, err = s:receive(1)
  return err == "closed"
end

describe("HTTP server", function()
  local app, port

  setup(function()
    app = H.serve(H.root .. "/spec/fixtures/apps/upstream.lua")
    port = tonumber(app.url:match(":(%d+)$"))
  end)

  teardown(function()
    if app then app:stop() end
  end)

  it("answers pipelined requests in order on one keep-alive connection", function()
    local s = connect(port)
    s:send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /slow?ms=50 HTTP/1.1\r\nHost: x\r\n\r\n" ..
           "GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
    local a, b, c = read_response(s), read_response(s), read_response(s)
    assert.same({ 200, "hello" }, { a.status, a.body })
    assert.same({ 200, "slept 50" }, { b.status, b.body })
    assert.equal(200, c.status)
    assert.matches("^127%.0%.0%.1:%d+$", c.body)
    assert.is_nil(a.headers.connection)           -- HTTP/1.1: keep-alive is implied
    assert.is_truthy(a.headers.date)
    s:send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")  -- still open
    assert.equal("hello", read_response(s).body)
    s:close()
  end)

  it("serves 20,000 pipelined requests in one stream, answering every one", function()
    -- 2.6 MB of replies outgrow the socket buffers and the server's reply backlog:
    -- it must hold back, resume as the client reads, and lose nothing
    local s = connect(port)
    local n = 20000
    local one = "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
    s:settimeout(0)
    local data, sent, buf = string.rep(one, n), 0, {}
    -- read until the server has been silent for 2 s (or 60 s in all)
    local deadline, idle_since = socket.gettime() + 60, socket.gettime()
    while socket.gettime() < deadline and socket.gettime() - idle_since < 2 do
      if sent < #data then
        local i, _, partial = s:send(data, sent + 1)
        sent = i or partial or sent
      end
      local chunk, _, part = s:receive(65536)
      chunk = chunk or part
      if chunk and #chunk > 0 then
        buf[#buf + 1] = chunk
        idle_since = socket.gettime()
      else
        socket.sleep(0.002)
      end
    end
    local all = table.concat(buf)
    local _, replies = all:gsub("HTTP/1%.1 200 OK", "")
    local _, bodies = all:gsub("\r\n\r\nhello", "")
    assert.equal(n, replies)
    assert.equal(n, bodies)
    s:close()
  end)

  it("sends no body with 204 and keeps the next response framed", function()
    local s = connect(port)
    s:send("GET /status?code=204 HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.equal("HTTP/1.1 204 No Content", (read_head(s)))
    assert.equal("hello", read_response(s).body)
    s:close()
  end)

  it("reads a request that arrives a few bytes at a time", function()
    local s = connect(port)
    local req = "POST /echo?a=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nX-Thing: one\r\n" ..
                "x-thing: two\r\n\r\nhello world"
    for i = 1, #req, 7 do
      s:send(req:sub(i, i + 6))
      socket.sleep(0.002)
    end
    local res = read_response(s)
    assert.equal(200, res.status)
    local echo = cjson.decode(res.body)
    assert.equal("hello world", echo.body)
    assert.equal("one, two", echo.headers["x-thing"])   -- names lower-cased, repeats joined
    s:close()
  end)

  it("decodes a chunked request body", function()
    local s = connect(port)
    s:send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" ..
           "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
    local res = read_response(s)
    assert.equal(200, res.status)
    assert.equal("hello world", cjson.decode(res.body).body)
    s:close()
  end)

  it("answers Expect: 100-continue before the body is sent", function()
    local s = connect(port)
    s:send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    local cont = read_response(s)
    assert.equal(100, cont.status)
    s:send("ping")
    local res = read_response(s)
    assert.equal(200, res.status)
    assert.equal("ping", cjson.decode(res.body).body)
    s:close()
  end)

  it("speaks HTTP/1.0: closes by default, keeps alive when asked", function()
    local s = connect(port)
    s:send("GET /hello HTTP/1.0\r\n\r\n")
    local res = read_response(s)
    assert.same({ "1.0", 200, "hello", "close" }, { res.version, res.status, res.body, res.headers.connection })
    assert.is_true(closed(s))
    s = connect(port)
    s:send("GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    res = read_response(s)
    assert.equal("keep-alive", res.headers.connection)
    s:send("GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert.equal("hello", read_response(s).body)
    s:close()
  end)

  it("closes after a reply when the client sends Connection: close", function()
    local s = connect(port)
    s:send("GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    local res = read_response(s)
    assert.same({ 200, "close" }, { res.status, res.headers.connection })
    assert.is_true(closed(s))
  end)

  it("answers HEAD with the length but no body", function()
    local s = connect(port)
    -- /hello is a GET route: the router's 405 has a JSON body, which HEAD omits
    s:send("HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    local line, headers = read_head(s)
    assert.equal("HTTP/1.1 405 Method Not Allowed", line)
    assert.is_true(tonumber(headers["content-length"]) > 0)
    -- the next bytes are the second response, not a body
    assert.equal("hello", read_response(s).body)
    s:close()
  end)

  -- Each refusal: status, JSON error code, and the connection closed.
  local function refused(raw, status, code, message)
    local s = connect(port)
    s:send(raw)
    local res = assert(read_response(s))
    assert.equal(status, res.status)
    assert.equal("application/json", res.headers["content-type"])
    local e = cjson.decode(res.body).error
    assert.equal(code, e.code)
    assert.matches(message, e.message)
    assert.is_true(closed(s))
  end

  it("refuses a header section over 16 KB with 431", function()
    refused("GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " .. string.rep("a", 17 * 1024) .. "\r\n\r\n",
            431, "HEADERS_TOO_LARGE", "16 KB")
  end)

  it("refuses a body over 1 MB with 413 without waiting for it", function()
    refused("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n", 413,
            "PAYLOAD_TOO_LARGE", "1 MB")
  end)

  it("refuses malformed requests with 400, unknown methods with 405, unknown encodings with 501", function()
    refused("GARBAGE\r\n\r\n", 400, "BAD_REQUEST", "request line")
    refused("GET /hello HTTP/2.0\r\n\r\n", 400, "BAD_REQUEST", "HTTP/1")
    refused("GET /hello HTTP/1.1\r\nNo colon here\r\n\r\n", 400, "BAD_REQUEST", "header")
    refused("POST /echo HTTP/1.1\r\nContent-Length: 12x\r\n\r\n", 400, "BAD_REQUEST", "Content%-Length")
    refused("POST /echo HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
            "BAD_REQUEST", "both")
    refused("POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "BAD_REQUEST", "chunk")
    refused("BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n", 405, "METHOD_NOT_ALLOWED", "method")
    refused("POST /echo HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "NOT_IMPLEMENTED", "chunked")
  end)

  it("keeps serving after clients vanish mid-request", function()
    for _ = 1, 20 do
      local s = connect(port)
      s:send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npartial")
      s:close()
    end
    local s = connect(port)
    s:send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.equal("hello", read_response(s).body)
    s:close()
  end)
end)
