-- bench/core/hello_app.lua — the trivial Lua route for the HTTP server
-- benchmark: measures the engine's request path (evhttp → coroutine → Lua
-- handler → reply) with no application work.
local M = {}
function M.start()
  local headers = { ["Content-Type"] = "text/plain" }
  return function(_req)
    return 200, headers, "ok"
  end
end
return M
