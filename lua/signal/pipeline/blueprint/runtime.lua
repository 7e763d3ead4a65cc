-- signal.pipeline.blueprint.runtime — maps one canonical event through a
-- compiled blueprint into one destination payload. This is the per-event hot
-- path: it only calls the accessors signal.pipeline.blueprint.compile built
-- and writes tables.
--
--   local bp = runtime.new{ … }                 -- built by signal.pipeline.blueprint
--   local payload, warnings = bp:map(event, cfg) -- nil payload: nothing to deliver
--
-- Order for one event:
--   1. the base: with a preset, the destination's global mappings
--      (presets/<destination>/global.lua), then the vertical's own `global`,
--      then the preset's event handler, matched by name or alias (the event
--      name is `event` for track, else the type). No handler anywhere →
--      `default`: "pass_through" writes the properties into the payload
--      (see flatten), "drop" maps the event to nothing. Without a preset the
--      base is the destination's base(event, cfg).
--   2. customer scripts in file-name order: each one's global mappings, then
--      its handler for the event (a script handler keyed like a preset
--      handler, e.g. `view_item`, also applies to the preset's aliases such as
--      "Product Viewed").
--   3. transform(event, payload) hooks: the preset's, then each script's, in
--      order. Return a table (the new payload), nil (keep the payload) or
--      false (drop the event).
--   4. the destination's finish(event, payload, cfg): the fields it always
--      sends, which therefore no script can remove or forge, and the
--      vendor's limits (its corrections are returned as warnings).
-- The handler's `type` is written to the destination's type_target (e.g.
-- a `type` field of the vendor's body) when it declares one.
--
-- Payload shapes, declared by the destination: "flat" — every value is a
-- scalar and targets are plain names; pass-through joins nested keys with
-- "_" and writes arrays as JSON strings. "nested" — a dotted target
-- ("user_data.em") builds objects, values may be tables, pass-through copies
-- the properties as they are.
--
-- Value rules: a mapping reads its source; nil or "" counts as missing and is
-- replaced by `default`; then `fn(value, event)` runs (always, even on nil, so
-- a fn can compute a value from the whole event); then `hash = "sha256"`
-- lower-cases, trims and hashes. A result that is still nil or "" (or, in a
-- flat payload, not a scalar) leaves the target untouched, so later layers
-- only ever add or override and never blank out an earlier value.
--
-- Customer code failures: a script whose fn or transform raises (or runs out
-- of its instruction budget, see signal.pipeline.scripts) on one event
-- contributes nothing to that event — its writes are staged and discarded —
-- and the error "file:line: message" is returned in `warnings` for live
-- events. The event itself is still mapped and delivered: one bad line in a
-- customer script must not stop a CDP's data flow, and the warning makes it
-- visible.
local core = require "signal.core"
local scripts = require "signal.pipeline.scripts"

local type, pairs, next, tostring, pcall = type, pairs, next, tostring, pcall
local lower = string.lower
local sha256_hex = core.sha256_hex
local guard = scripts.guard
local huge = math.huge

local new_tab
do
  local ok, tn = pcall(require, "table.new")
  new_tab = ok and tn or function() return {} end
end

local cjson_ok, cjson = pcall(require, "cjson")
if not cjson_ok then cjson = nil end

local M = {}

M.MAX_FLATTEN_DEPTH = 6

-- ---------------------------------------------------------------------------
-- Hashing (`hash = "sha256"`): lower-cased, trimmed, hex SHA-256 — the
-- normalization hashed linking keys and hashed PII fields share. The same
-- email is usually hashed for every event of a visitor, so results are
-- memoised in a bounded table.

local hash_cache, hash_count, HASH_CACHE_MAX = {}, 0, 4096

local function hash_norm(v)
  local h = hash_cache[v]
  if h then return h end
  local s = lower(tostring(v)):match("^%s*(.-)%s*$")
  if s == "" then return nil end
  h = sha256_hex(s)
  if hash_count >= HASH_CACHE_MAX then hash_cache, hash_count = {}, 0 end
  hash_cache[v] = h
  hash_count = hash_count + 1
  return h
end
M.hash = hash_norm

local function is_scalar(v, tv)
  return tv == "string" or tv == "boolean" or (tv == "number" and v == v and v ~= huge and v ~= -huge)
end

-- ---------------------------------------------------------------------------
-- Mapping lists

-- value(m, e) → the mapping's value for event e (nil: leave the target)
local function value(m, e)
  local v = m.get(e)
  if v == nil or v == "" then v = m.default end
  local f = m.fn
  if f ~= nil then v = f(v, e) end
  if v == nil or v == "" then return nil end
  if m.hash then
    local tv = type(v)
    if tv == "string" or tv == "number" then return hash_norm(v) end
    return nil
  end
  return v
end

-- run_flat(list, event, out): scalars into plain targets
local function run_flat(list, e, out)
  for i = 1, list.n do
    local m = list[i]
    local v = value(m, e)
    if v ~= nil and is_scalar(v, type(v)) then out[m.target] = v end
  end
end

-- A nested payload starts as a shallow copy of the event, so its objects
-- are the event's own, which every other destination maps from too. A dotted
-- target therefore copies each object on its path the first time it writes
-- into it; `owned` marks the objects this mapping made or copied (weak: they
-- live as long as their payload).
local owned = setmetatable({}, { __mode = "k" })

-- child(t, k) → t[k] as an object this mapping may write into
local function child(t, k)
  local c = t[k]
  if type(c) ~= "table" then
    c = {}
  elseif not owned[c] then
    local copy = {}
    for a, b in pairs(c) do copy[a] = b end
    c = copy
  else
    return c
  end
  owned[c] = true
  t[k] = c
  return c
end

-- set(out, keys, v): out.a.b.c = v, copying or making the objects on the way
local function set(out, keys, v)
  local t = out
  for i = 1, #keys - 1 do t = child(t, keys[i]) end
  t[keys[#keys]] = v
end

-- merge(p, staged): what a guarded script wrote (into a fresh table) laid
-- onto the payload: objects its dotted targets made are merged key by key,
-- any other value replaces
local function merge(p, staged)
  for k, v in pairs(staged) do
    if type(v) == "table" and owned[v] then merge(child(p, k), v) else p[k] = v end
  end
end

-- run_nested(list, event, out): any JSON value; dotted targets build objects
local function run_nested(list, e, out)
  for i = 1, list.n do
    local m = list[i]
    local v = value(m, e)
    local tv = type(v)
    if v ~= nil and (tv == "table" or is_scalar(v, tv)) then
      if m.keys then set(out, m.keys, v) else out[m.target] = v end
    end
  end
end

-- Pass-through, flat: nested tables join their keys with "_" ({cart={id=1}}
-- -> cart_id); arrays become JSON strings ("[{\"sku\":\"A\"}]") so the data
-- stays parseable on the destination's side; empty tables, nulls and "" are
-- skipped. Keys already written by mappings are never overwritten.
local function flatten(t, prefix, out, depth)
  for k, v in pairs(t) do
    local key = type(k) == "string" and k or tostring(k)
    if prefix then key = prefix .. "_" .. key end
    local tv = type(v)
    if tv == "table" then
      if v[1] ~= nil then
        if out[key] == nil and cjson then
          local ok, s = pcall(cjson.encode, v)
          if ok then out[key] = s end
        end
      elseif depth < M.MAX_FLATTEN_DEPTH and next(v) ~= nil then
        flatten(v, key, out, depth + 1)
      end
    elseif out[key] == nil and v ~= "" and is_scalar(v, tv) then
      out[key] = v
    end
  end
end
M.flatten = flatten

-- Pass-through, nested: the properties as they are, under keys not yet set.
local function copy_properties(t, out)
  for k, v in pairs(t) do
    if type(k) == "string" and out[k] == nil and v ~= "" then out[k] = v end
  end
end

-- After customer transforms, flat: keep only string keys with scalar values.
local function sanitize(p)
  for k, v in pairs(p) do
    if type(k) ~= "string" or v == "" or not is_scalar(v, type(v)) then p[k] = nil end
  end
end

local function shallow_copy(t)
  local c = new_tab(0, 64)
  for k, v in pairs(t) do c[k] = v end
  return c
end

-- The name an event is matched by: the event name for track, else its type.
local function event_name(e)
  local t = e.type
  if t == "track" or t == nil then return e.event end
  return t
end
M.event_name = event_name

-- ---------------------------------------------------------------------------
-- One event

-- A guarded script's contribution is staged here, then merged on success.
-- One table reused for every event: nothing yields while mapping.
local stage = {}

local function clear(t) for k in pairs(t) do t[k] = nil end end

local function run_script(run, s, sh, e, out)
  if s.global then run(s.global, e, out) end
  if sh then run(sh.mappings, e, out) end
end

local function add_warning(w, msg)
  if not w then return { msg } end
  w[#w + 1] = msg
  return w
end

local Blueprint = {}
Blueprint.__index = Blueprint

-- base(bp, e, name, cfg) → payload, handler | nil (dropped)
local function base(bp, e, name, cfg)
  if bp.preset then
    local p = new_tab(0, 64)
    local tt = bp.type_target
    if tt and name ~= nil then p[tt] = name end
    bp.run(bp.global, e, p)
    local ph = name ~= nil and bp.handlers[name] or nil
    if ph then
      if tt then p[tt] = ph.type end
      bp.run(ph.mappings, e, p)
      return p, ph
    end
    if name ~= nil and bp.script_handled[name] then return p end
    if bp.drop_unmapped then return nil end
    local props = e.properties
    if type(props) == "table" then
      if bp.nested then copy_properties(props, p) else flatten(props, nil, p, 1) end
    end
    return p
  end
  -- no preset: "drop" drops what no script has a handler for
  if bp.drop_unmapped and not (name ~= nil and bp.script_handled[name]) then return nil end
  return bp.base_fn and bp.base_fn(e, cfg) or new_tab(0, 16)
end

local function apply_scripts(bp, e, p, name, ph, warnings)
  -- One instruction budget per event for all customer code: every script's
  -- fns here and its transform below.
  scripts.reset_budget()
  local run, tt = bp.run, bp.type_target
  local list = bp.scripts
  for i = 1, bp.nscripts do
    local s = list[i]
    local by = s.by_name
    local sh = nil
    if name ~= nil then sh = by[name] or (ph and by[ph.key]) or nil end
    if s.guarded then
      local ok, err = guard(run_script, run, s, sh, e, stage)
      if ok then
        merge(p, stage)
        if tt and sh and sh.type then p[tt] = sh.type end
      else
        warnings = add_warning(warnings, scripts.located(s.file, err))
      end
      clear(stage)
    else
      if s.global then run(s.global, e, p) end
      if sh then
        run(sh.mappings, e, p)
        if tt and sh.type then p[tt] = sh.type end
      end
    end
  end
  return warnings
end

-- apply_transforms(bp, e, p, warnings) → payload | false (dropped), warnings
local function apply_transforms(bp, e, p, warnings)
  local list = bp.transforms
  for i = 1, bp.ntransforms do
    local t = list[i]
    if t.trusted then
      local r = t.fn(e, p)
      if r == false then return false, warnings end
      if type(r) == "table" then p = r end
    else
      -- The hook gets a copy so a transform that raises halfway leaves no
      -- partial edits behind.
      local c = shallow_copy(p)
      local ok, r = guard(t.fn, e, c)
      if not ok then
        warnings = add_warning(warnings, scripts.located(t.file, r))
      elseif r == false then
        return false, warnings
      elseif r == nil then
        p = c
      elseif type(r) == "table" then
        p = r
      else
        warnings = add_warning(warnings, ("%s: transform must return a table, nil or false, got %s")
          :format(t.file, type(r)))
      end
    end
  end
  if not bp.nested then sanitize(p) end
  return p, warnings
end

-- bp:apply(event, cfg) → payload | nil (dropped), warnings | nil: steps 1-3
function Blueprint:apply(e, cfg)
  local name = event_name(e)
  local p, ph = base(self, e, name, cfg)
  if p == nil then return nil end
  local warnings
  if self.nscripts > 0 then warnings = apply_scripts(self, e, p, name, ph, nil) end
  if self.ntransforms > 0 then
    p, warnings = apply_transforms(self, e, p, warnings)
    if p == false then return nil, warnings end
  end
  return p, warnings
end

-- bp:map(event, cfg) → payload | nil, warnings | nil, corrections: the
-- whole body, with the destination's own fields (cfg is the pipeline's
-- integration config). finish may return one warning (a string) or the
-- list of corrections it made to fit the vendor's limits; those end the
-- warnings list, and `corrections` says how many of them there are (the
-- destination counts them itself; they are not script warnings).
function Blueprint:map(e, cfg)
  local p, warnings = self:apply(e, cfg)
  if p == nil then return nil, warnings end
  local finish = self.finish
  local ncorr = 0
  if finish then
    local w
    p, w = finish(e, p, cfg)
    if type(w) == "table" then
      for i = 1, #w do warnings = add_warning(warnings, w[i]) end
      ncorr = #w
    elseif w then
      warnings = add_warning(warnings, w)
    end
  end
  return p, warnings, ncorr
end

-- new(fields) → a blueprint. fields: name, destination, version,
-- preset (the compiled preset unit, or nil), global, handlers, scripts,
-- transforms, default, shape ("flat" | "nested"), type_target, finish,
-- base_fn.
function M.new(f)
  local bp = setmetatable(f, Blueprint)
  bp.nested = f.shape == "nested"
  bp.run = bp.nested and run_nested or run_flat
  bp.nscripts = #f.scripts
  bp.ntransforms = #f.transforms
  bp.drop_unmapped = f.default == "drop"
  return bp
end

return M
