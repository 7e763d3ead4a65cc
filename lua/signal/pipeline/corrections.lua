-- signal.pipeline.corrections — how a destination reports a change it made
-- to a payload so the vendor accepts it (a name renamed, a value truncated,
-- a timestamp not backdated): never silently. Each correction is
--   * counted: signal_payload_corrections_total{pipeline,integration,kind};
--   * a warning string in the list the destination's finish() returns, which
--     the blueprint runtime appends to the event's warnings (Live Events).
--
--   local list = corrections.add(list, event, cfg, "param_value_truncated",
--                                "GA4 limit: param 'x' truncated to 100 characters")
--
-- Also the UTF-8 helpers vendors' character limits need (a limit counts
-- characters, and a cut must not split one).
local metrics = require "signal.observe.metrics"

local type, byte, sub = type, string.byte, string.sub

local M = {}

M.METRIC = "signal_payload_corrections_total"

-- label strings per pipeline, integration and kind: built once, kept (the
-- kinds are a small fixed set per destination)
local label_cache = {}

local function labels(pk, name, kind)
  local per = label_cache[pk]
  if not per then per = {}; label_cache[pk] = per end
  local k = name .. "\0" .. kind
  local l = per[k]
  if not l then
    l = metrics.labels({ pipeline = pk, integration = name, kind = kind })
    per[k] = l
  end
  return l
end

-- add(list, event, cfg, kind, message) → list (created when nil) with
-- message appended; the correction is counted under kind
function M.add(list, e, cfg, kind, message)
  local pk = type(e) == "table" and e.pipeline_key or nil
  local name = type(cfg) == "table" and (cfg.name or cfg.type) or nil
  metrics.inc(M.METRIC, labels(type(pk) == "string" and pk or "", type(name) == "string" and name or "", kind), 1)
  if not list then return { message } end
  list[#list + 1] = message
  return list
end

-- utf8_len(s) → number of characters (continuation bytes not counted)
function M.utf8_len(s)
  local n = 0
  for i = 1, #s do
    local b = byte(s, i)
    if b < 0x80 or b >= 0xC0 then n = n + 1 end
  end
  return n
end

-- utf8_cut(s, n) → s, or its first n characters (never half a character)
function M.utf8_cut(s, n)
  if #s <= n then return s end           -- n bytes hold at most n characters
  local count = 0
  for i = 1, #s do
    local b = byte(s, i)
    if b < 0x80 or b >= 0xC0 then
      count = count + 1
      if count > n then return sub(s, 1, i - 1) end
    end
  end
  return s
end

return M
