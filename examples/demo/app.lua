-- examples/demo/app.lua — serves the demo storefront (index.html, demo.css,
-- demo.js in this folder) for `make run` and the browser end-to-end test:
--
--   SIGNAL_DEMO_ENGINE_PORT=8080 bin/signal serve examples/demo/app.lua --listen 127.0.0.1:8000
--
-- The page loads datafly.js from the engine at {page hostname}:{engine port}.
-- The hostname is the one the browser used to reach THIS page (taken from the
-- Host header), not a fixed 127.0.0.1: the _dfdid cookie is set by the
-- engine, and a page on localhost talking to an engine on 127.0.0.1 would be
-- cross-site, so the cookie would be missing from later calls. Same host, other
-- port, is same-site, so the cookie works.
--
-- Files are read on every request so an edit shows up on reload (it is a
-- demo; three small files).
local M = {}

-- Directory of this file, as `signal serve` loaded it (relative to the cwd).
local DIR = (debug.getinfo(1, "S").source:match("^@(.*/)")) or "./"

local TYPES = {
  html = "text/html; charset=utf-8",
  css = "text/css; charset=utf-8",
  js = "application/javascript; charset=utf-8",
}
local FILES = { ["/"] = "index.html", ["/index.html"] = "index.html",
                ["/demo.css"] = "demo.css", ["/demo.js"] = "demo.js" }

local function read(name)
  local f = io.open(DIR .. name, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- Only a plain hostname or a bracketed IPv6 literal is echoed into the page:
-- the Host header is client-controlled, so anything else falls back.
local function page_hostname(req)
  local host = req.headers.host or ""
  local name = host:match("^(%[[%x:%.]+%])") or host:match("^([%w%.%-]+)")
  if name and #name <= 253 and (#host == #name or host:sub(#name + 1):match("^:%d+$")) then
    return name
  end
  return "127.0.0.1"
end

function M.start()
  local port = os.getenv("SIGNAL_DEMO_ENGINE_PORT") or "8080"
  if not port:match("^%d+$") then error("SIGNAL_DEMO_ENGINE_PORT must be a port number", 0) end
  local pipeline = os.getenv("SIGNAL_DEMO_PIPELINE") or "dk_live_demo"
  if not pipeline:match("^[%w_%-]+$") then error("SIGNAL_DEMO_PIPELINE must be a pipeline key", 0) end

  return function(req)
    if req.method ~= "GET" and req.method ~= "HEAD" then
      return 405, { ["Content-Type"] = "text/plain", Allow = "GET, HEAD" }, "method not allowed\n"
    end
    if req.path == "/favicon.ico" then return 204, {}, "" end
    local name = FILES[req.path]
    local body = name and read(name)
    if not body then return 404, { ["Content-Type"] = "text/plain" }, "not found\n" end
    if name == "index.html" then
      local engine = "http://" .. page_hostname(req) .. ":" .. port
      body = body:gsub("{{ENGINE}}", engine):gsub("{{PIPELINE}}", pipeline)
    end
    return 200, {
      ["Content-Type"] = TYPES[name:match("%.(%w+)$")],
      ["Cache-Control"] = "no-store",
    }, body
  end
end

return M
