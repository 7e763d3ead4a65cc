-- signal.pipeline.enrich — enrichment orchestration: before any destination
-- maps an event, every enrichment provider configured in the pipeline runs
-- once on it, so all its destinations see the same partner_attrs.
--
--   local infos = enrich.run(ps, ev)   -- { [integration name] = info } | nil
--
-- A provider is a destination that declares `enrichment` (see
-- signal.destinations): run(ctx, pipeline, cfg, ev) sets
-- ev.partner_attrs[provider] (and its flat fields) and returns an info table
-- for live events; it bounds its own time and never raises on a vendor or
-- Redis failure. One that raises anyway (an engine bug) costs that provider's
-- attributes for this event, not the event: the error is its info.
local pcall, tostring = pcall, tostring

local M = {}

-- run(ps, ev) → infos by integration name, or nil when no provider ran.
-- ps: the processor's pipeline state (ctx, p, integrations with dest, cfg).
function M.run(ps, ev)
  local infos
  local its = ps.integrations
  for i = 1, #its do
    local it = its[i]
    local e = it.dest.enrichment
    if e then
      local ok, info = pcall(e.run, ps.ctx, ps.p, it.cfg, ev)
      if not ok then info = { error = tostring(info) } end
      if info ~= nil then
        infos = infos or {}
        infos[it.name] = info
      end
    end
  end
  return infos
end

return M
