-- signal.dev.serve_file — entry for `signal serve FILE`: FILE returns a table
-- with start(args) → handler, exactly like the engine's own entry modules.
-- Used by specs (a controllable upstream) and benchmarks (a trivial route).
local M = {}

function M.start(args)
  local app = assert(loadfile(args[1]))()
  local rest = {}
  for i = 2, #args do rest[#rest + 1] = args[i] end
  return app.start(rest)
end

return M
