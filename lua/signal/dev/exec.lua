-- signal.dev.exec — entry for `signal exec FILE [ARGS…]`: runs a Lua file as
-- one engine task on a single worker, so scripts (specs, benchmarks, ops
-- one-offs) get the non-blocking primitives. The process exits with the
-- number the file returns (0 when it returns nothing).
local M = {}

function M.start(args)
  local file = args[1]
  local chunk, err = loadfile(file)
  if not chunk then error(err, 0) end
  local rest = {}
  for i = 2, #args do rest[#rest + 1] = args[i] end
  return function()
    local code = chunk(rest)
    return type(code) == "number" and code or 0
  end
end

return M
