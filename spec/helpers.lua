-- spec/helpers.lua — shared plumbing for the integration specs: the private
-- Redis that tools/test.sh started, real engine processes (bin/signal) on
-- free loopback ports, the Amperity sandbox, and a blocking HTTP client.
-- Nothing here is mocked: specs talk to real servers over loopback.
local core = require "signal.core"
local cjson = require "cjson.safe"

local H = {}

H.root = os.getenv("SIGNAL_ROOT") or "."
-- SIGNAL_BIN runs the specs on another build (make check-memory: the ASan
-- engine); then every process a spec stops is checked for sanitizer reports.
H.bin = os.getenv("SIGNAL_BIN") or (H.root .. "/bin/signal")
H.sanitized = os.getenv("SIGNAL_BIN") ~= nil
H.redis_url = os.getenv("SIGNAL_TEST_REDIS") or "redis://127.0.0.1:6399/0"
H.tmp = os.getenv("SIGNAL_TEST_TMP") or "/tmp/signal-spec"
os.execute("mkdir -p " .. H.tmp)

-- Seeded from the OS: concurrent runs on one machine must not pick the same
-- ports. Kept below Linux's ephemeral range (32768+): a port held by an
-- outgoing connection refuses a probe yet cannot be listened on.
math.randomseed(tonumber(core.random_hex(4), 16))
local next_port = tonumber(os.getenv("SIGNAL_TEST_PORT_BASE") or "") or (20000 + math.random(0, 9000))

local function port_free(port)
  local res = core.http.request { url = "http://127.0.0.1:" .. port .. "/", timeout_ms = 300 }
  return res == nil
end

function H.free_port()
  while true do
    next_port = next_port + 1
    if port_free(next_port) then return next_port end
  end
end

function H.redis()
  return assert(core.redis.connect(H.redis_url))
end

-- Deletes every key of the test database (each spec file starts clean).
function H.flush_redis()
  local r = H.redis()
  assert(r:call("FLUSHDB"))
  r:close()
end

function H.request(method, url, headers, body, timeout_ms)
  return core.http.request { method = method, url = url, headers = headers or {}, body = body,
                             timeout_ms = timeout_ms or 5000 }
end

-- post(engine, path, body (table: JSON-encoded, or string), headers) →
-- response; Content-Type application/json unless headers say otherwise.
-- headers is not modified (the lane spec sends one table to two engines).
function H.post(e, path, body, headers)
  if type(body) ~= "string" then body = cjson.encode(body) end
  local h = { ["Content-Type"] = "application/json" }
  for k, v in pairs(headers or {}) do h[k] = v end
  return assert(H.request("POST", e.url .. path, h, body))
end

function H.json(res)
  return res and cjson.decode(res.body)
end

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
H.sh_quote = sh_quote

-- Serializes a Lua value as Lua source (for config files).
local function serialize(v, indent)
  indent = indent or ""
  local t = type(v)
  if t == "string" then return string.format("%q", v) end
  if t ~= "table" then return tostring(v) end
  local parts, inner = {}, indent .. "  "
  local n = #v
  for i = 1, n do parts[#parts + 1] = inner .. serialize(v[i], inner) end
  local keys = {}
  for k in pairs(v) do if type(k) ~= "number" or k > n or k < 1 then keys[#keys + 1] = k end end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(keys) do
    parts[#parts + 1] = inner .. "[" .. serialize(k) .. "] = " .. serialize(v[k], inner)
  end
  return "{\n" .. table.concat(parts, ",\n") .. "\n" .. indent .. "}"
end
H.serialize = serialize

-- A fresh scratch directory under H.tmp; H.remove_tmpdirs() deletes every
-- one made so far (call it in a teardown).
local made = {}
function H.tmpdir()
  local d = H.tmp .. "/d-" .. core.random_hex(6)
  assert(os.execute("mkdir -p '" .. d .. "'"))
  made[#made + 1] = d
  return d
end

function H.remove_tmpdirs()
  for _, d in ipairs(made) do os.execute("rm -rf '" .. d .. "'") end
  made = {}
end

function H.write(path, content)
  local f = assert(io.open(path, "w"))
  f:write(content)
  f:close()
  return path
end

function H.read(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local Proc = {}
Proc.__index = Proc

-- Starts a background process; its output goes to a log file.
-- env: optional { NAME = value } added to its environment.
function H.spawn(args, name, env)
  local log = H.tmp .. "/" .. name .. "-" .. core.random_hex(4) .. ".log"
  local pidfile = log .. ".pid"
  local quoted = {}
  for k, v in pairs(env or {}) do quoted[#quoted + 1] = k .. "=" .. sh_quote(v) end
  if #quoted > 0 then table.insert(quoted, 1, "env") end
  for _, a in ipairs(args) do quoted[#quoted + 1] = sh_quote(a) end
  os.execute(table.concat(quoted, " ") .. " >" .. log .. " 2>&1 & echo $! >" .. pidfile)
  local pid = assert(tonumber(H.read(pidfile)), "could not start " .. args[1])
  local pids = io.open(H.tmp .. "/pids", "a")
  if pids then pids:write(pid, "\n") pids:close() end
  return setmetatable({ pid = pid, log = log }, Proc)
end

-- os.execute returns 0 under Lua 5.1 semantics, true under 5.2 compat.
local function sh_ok(cmd)
  local r = os.execute(cmd)
  return r == 0 or r == true
end
H.sh_ok = sh_ok

function Proc:alive()
  return sh_ok("kill -0 " .. self.pid .. " 2>/dev/null")
end

function Proc:signal(sig)
  os.execute("kill -" .. sig .. " " .. self.pid .. " 2>/dev/null")
end

-- Stops gracefully (SIGTERM) and waits; SIGKILL after timeout_s.
function Proc:stop(timeout_s)
  self:signal("TERM")
  local deadline = core.monotonic() + (timeout_s or 15)
  while self:alive() and core.monotonic() < deadline do core.sleep(20) end
  if self:alive() then self:signal("KILL") end
  while self:alive() do core.sleep(10) end
  if H.sanitized and self:output():find("Sanitizer", 1, true) then
    error("sanitizer report from " .. self.log .. ":\n" .. self:output(), 2)
  end
end

function Proc:kill()
  self:signal("KILL")
  while self:alive() do core.sleep(10) end
end

function Proc:output() return H.read(self.log) or "" end

-- Waits until url answers (any status). Fails with the process log.
function H.wait_http(url, proc, timeout_s)
  local deadline = core.monotonic() + (timeout_s or 10)
  while core.monotonic() < deadline do
    local res = core.http.request { url = url, timeout_ms = 500 }
    if res then return res end
    if proc and not proc:alive() then
      error("process exited early:\n" .. proc:output(), 2)
    end
    core.sleep(25)
  end
  error("timed out waiting for " .. url .. (proc and ("\n" .. proc:output()) or ""), 2)
end

-- `signal serve FILE`: a controllable upstream for engine specs.
function H.serve(app_file, opts)
  opts = opts or {}
  local port = H.free_port()
  local p = H.spawn({ H.bin, "serve", app_file, "--listen", "127.0.0.1:" .. port,
                      "--workers", tostring(opts.workers or 1) }, "serve")
  p.url = "http://127.0.0.1:" .. port
  H.wait_http(p.url .. "/", p)
  return p
end

-- The sandbox fixture (tenant, both tokens, streams, profiles): the path,
-- and a fresh decoded copy per call (specs may change theirs).
H.PROFILES = H.root .. "/spec/fixtures/profiles.json"
function H.profiles()
  return cjson.decode((assert(H.read(H.PROFILES), "cannot read " .. H.PROFILES)))
end

-- The Amperity sandbox (`signal sandbox`) on a free port.
function H.sandbox(profiles_file)
  local port = H.free_port()
  local p = H.spawn({ H.bin, "sandbox", "--listen", "127.0.0.1:" .. port,
                      "--profiles", profiles_file or H.PROFILES }, "sandbox")
  p.url = "http://127.0.0.1:" .. port
  H.wait_http(p.url .. "/_sandbox/requests", p)
  return p
end

-- Writes cfg (a Lua table) as a config file and starts `signal run` on it.
-- cfg.listen and cfg.redis are filled in when absent; opts.env adds
-- environment variables (e.g. SIGNAL_LOG_LEVEL = "debug").
function H.engine(cfg, opts)
  opts = opts or {}
  cfg.listen = cfg.listen or ("127.0.0.1:" .. H.free_port())
  cfg.redis = cfg.redis or H.redis_url
  cfg.workers = cfg.workers or 1
  local path = opts.config_path or (H.tmp .. "/engine-" .. core.random_hex(4) .. ".conf.lua")
  H.write(path, "return " .. serialize(cfg) .. "\n")
  local p = H.spawn({ H.bin, "run", "-c", path }, "engine", opts.env)
  p.url = "http://" .. cfg.listen
  p.config_path = path
  p.cfg = cfg
  if opts.wait ~= false then H.wait_http(p.url .. "/healthz", p) end
  return p
end

-- Runs `signal exec FILE ARGS…` to completion; returns stdout, exit code.
function H.exec(file, ...)
  local args = { H.bin, "exec", file, ... }
  local quoted = {}
  for i, a in ipairs(args) do quoted[i] = sh_quote(a) end
  local out = H.tmp .. "/exec-" .. core.random_hex(4) .. ".out"
  local ok, _, code = os.execute(table.concat(quoted, " ") .. " >" .. out .. " 2>" .. out .. ".err")
  if type(ok) == "number" then code = ok / 256 end   -- LuaJIT (5.1) returns the raw status
  return H.read(out) or "", code, H.read(out .. ".err") or ""
end

-- Polls fn until it returns a truthy value (or fails after timeout_s).
function H.eventually(fn, timeout_s, what)
  local deadline = core.monotonic() + (timeout_s or 10)
  local last
  while core.monotonic() < deadline do
    last = { fn() }
    if last[1] then return unpack(last) end
    core.sleep(25)
  end
  error("condition not met in " .. (timeout_s or 10) .. " s: " .. (what or "?") ..
        (last and last[2] and (" (" .. tostring(last[2]) .. ")") or ""), 2)
end

---------------------------------------------------------------------------
-- Raw streams and private Redis servers.

-- Parks the processors' consumer group of pipeline pk far in the future, so
-- the engine's processor reads nothing from signal:{pk}:raw and a spec can
-- XRANGE exactly what the collector stored. Call before starting the engine
-- (the processor's XGROUP CREATE then finds the group: BUSYGROUP).
function H.park_processor(pk, redis_url)
  local queue = require "signal.redis.keys"
  local r = assert(core.redis.connect(redis_url or H.redis_url))
  local ok, err = r:call("XGROUP", "CREATE", queue.raw(pk), queue.RAW_GROUP, "9999999999999-0", "MKSTREAM")
  if not ok and not tostring(err):find("BUSYGROUP", 1, true) then error(err) end
  if not ok then assert(r:call("XGROUP", "SETID", queue.raw(pk), queue.RAW_GROUP, "9999999999999-0")) end
  r:close()
end

-- raw_entries(pk[, redis_url]) → list of { id, ev = decoded canonical event,
-- input = decoded input message, ev_json, in_json } from signal:{pk}:raw
function H.raw_entries(pk, redis_url)
  local queue = require "signal.redis.keys"
  local r = assert(core.redis.connect(redis_url or H.redis_url))
  local list = assert(r:call("XRANGE", queue.raw(pk), "-", "+"))
  r:close()
  local out = {}
  for i, e in ipairs(list) do
    local f = queue.fields(e[2])
    out[i] = { id = e[1], ev = cjson.decode(f.ev), input = cjson.decode(f["in"]), ev_json = f.ev, in_json = f["in"] }
  end
  return out
end

-- dedupe_marker(pk, message_id[, ttl_s[, redis_url]]) → the dedupe window
-- hash (signal.collect dedupe_window) holding message_id — the current
-- window or the one before, as the collector looks — and that key's TTL
-- in seconds; nil when neither holds it.
function H.dedupe_marker(pk, mid, ttl_s, redis_url)
  local queue = require "signal.redis.keys"
  ttl_s = ttl_s or 86400
  local w = math.floor(core.now() / ttl_s)
  local r = assert(core.redis.connect(redis_url or H.redis_url))
  for k = 0, 1 do
    local key = queue.dedupe(pk, w - k)
    if r:call("HEXISTS", key, mid) == 1 then
      local ttl = r:call("TTL", key)
      r:close()
      return key, ttl
    end
  end
  r:close()
  return nil
end

-- Empties signal:{pk}:raw but keeps the key and its (parked) group.
function H.clear_raw(pk, redis_url)
  local queue = require "signal.redis.keys"
  local r = assert(core.redis.connect(redis_url or H.redis_url))
  assert(r:call("XTRIM", queue.raw(pk), "MAXLEN", "0"))
  r:close()
end

local RedisServer = {}
RedisServer.__index = RedisServer

-- A private redis-server on a free port (for specs that stop Redis):
-- s.url, s:stop() (SHUTDOWN NOSAVE), s:start() (same port again).
function H.redis_server()
  local s = setmetatable({ port = H.free_port() }, RedisServer)
  s.dir = H.tmp .. "/redis-" .. s.port
  os.execute("mkdir -p " .. s.dir)
  s.url = "redis://127.0.0.1:" .. s.port .. "/0"
  s:start()
  return s
end

function RedisServer:start()
  assert(H.sh_ok("redis-server --port " .. self.port .. " --bind 127.0.0.1 --save '' --appendonly no" ..
                 " --daemonize yes --dir " .. self.dir .. " --pidfile " .. self.dir .. "/redis.pid" ..
                 " --logfile " .. self.dir .. "/redis.log"))
  H.eventually(function()
    local r = core.redis.connect(self.url)
    local pong = r and r:call("PING")
    if r then r:close() end
    return pong == "PONG"
  end, 10, "redis-server on port " .. self.port)
  local pid = tonumber(H.read(self.dir .. "/redis.pid") or "")
  if pid then
    local pids = io.open(H.tmp .. "/pids", "a")
    if pids then pids:write(pid, "\n") pids:close() end
  end
end

function RedisServer:stop()
  os.execute("redis-cli -p " .. self.port .. " SHUTDOWN NOSAVE >/dev/null 2>&1")
  H.eventually(function()
    local r = core.redis.connect(self.url)
    local pong = r and r:call("PING")
    if r then r:close() end
    return pong == nil
  end, 10, "redis-server on port " .. self.port .. " to stop")
end

return H
