-- signal/processor.lua — placeholder until its issue lands; see lua/signal/README.md.
local M = {}
function M.init(ctx, router) end
return M
