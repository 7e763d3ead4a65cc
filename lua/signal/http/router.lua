-- signal.http.router — method + path → handler. Exact paths are a hash
-- lookup; patterned routes ("/v1/js/:key/datafly.js") are tried in order.
-- Each request already runs in its own coroutine (engine/worker.c), so a
-- handler may use every signal.core primitive.
local http = require "signal.http.response"

local M = {}
M.__index = M

function M.new()
  return setmetatable({ exact = {}, patterns = {} }, M)
end

local function compile(path)
  local names = {}
  local pat = "^" .. path:gsub("[%-%.%+%[%]%(%)%$%^%%%?%*]", "%%%0"):gsub(":(%w+)", function(n)
    names[#names + 1] = n
    return "([^/]+)"
  end) .. "$"
  return pat, names
end

-- r:add("POST", "/v1/t", fn) ; r:add("GET", "/v1/js/:key/datafly.js", fn)
-- method may be a list. fn(req, params) returns status, headers, body.
function M:add(methods, path, fn)
  if type(methods) == "string" then methods = { methods } end
  for _, m in ipairs(methods) do
    if path:find(":", 1, true) then
      local pat, names = compile(path)
      self.patterns[#self.patterns + 1] = { method = m, pat = pat, names = names, fn = fn, path = path }
    else
      local by_method = self.exact[path]
      if not by_method then by_method = {}; self.exact[path] = by_method end
      by_method[m] = fn
    end
  end
  return self
end

-- Sets req.route to the matched route ("/v1/t", "/v1/js/:key/datafly.js")
-- so metrics can label by route without the path's unbounded values.
function M:dispatch(req)
  local by_method = self.exact[req.path]   -- path, then method: no string built per request
  local fn = by_method and by_method[req.method]
  if fn then
    req.route = req.path
    return fn(req, nil)
  end
  for _, r in ipairs(self.patterns) do
    if r.method == req.method then
      local caps = { req.path:match(r.pat) }
      if caps[1] then
        local params = {}
        for i, n in ipairs(r.names) do params[n] = caps[i] end
        req.route = r.path
        return r.fn(req, params)
      end
    end
  end
  -- Same path, other method → 405 rather than a misleading 404.
  if by_method then
    return http.error(405, "METHOD_NOT_ALLOWED", req.method .. " is not supported on " .. req.path)
  end
  return http.error(404, "NOT_FOUND", "no route for " .. req.method .. " " .. req.path)
end

function M:handler()
  return function(req) return self:dispatch(req) end
end

return M
