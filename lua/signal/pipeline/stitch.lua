-- signal.pipeline.stitch — identity stitching: the traits a visitor's
-- identify gave (email, phone, user id) put back on their later events.
--
--   local identity, err = stitch.run(ctx, pk, ev)
--     → ev.identity (a table) | nil when nothing is known |
--       nil, err when Redis failed (the caller retries: never a miss)
--
-- Stitching is split between ingest and processing so each side costs one
-- Redis round trip it already makes: the collector's commit remembers an
-- event's linking keys (engine/collect/stitch.c) in
-- signal:{pk}:id:<canonical_id>; the processor calls run() (one HGETALL)
-- before enrichment, so a later anonymous event from the same device is
-- enriched with the email an earlier identify gave.
local queue = require "signal.redis.keys"

local M = {}

function M.run(ctx, pk, ev)
  local cid = ev.canonical_id
  if cid == nil then return nil end
  local list, err = ctx.redis:call("HGETALL", queue.identity(pk, cid))
  if list == nil then return nil, err end
  if #list == 0 then return nil end
  local id = {}
  for i = 1, #list, 2 do id[list[i]] = list[i + 1] end
  ev.identity = id
  return id
end

return M
