-- signal.testing — helpers for customers' busted specs of mapping scripts.
--
--   local T = require "signal.testing"
--   local payload, warnings = T.map{
--     destination = "…",                -- default: the one scripts map for without `integration`
--     preset = "retail", scripts_dir = "my/scripts", pipeline_key = "dk_live_demo",
--     source_value = "DATAFLY",          -- any other field: the integration's settings
--     event = T.fixture("retail"),       -- or a camelCase datafly.js/Segment message
--     -- enrichment results the spec wants on the event (a provider's flat
--     -- fields, such as the resolved profile id, may be given too)
--     -- partner_attrs = { <provider> = { Persona = "Value Hunter" } },
--   }
--   -- payload is exactly the body Signal would POST to that destination.
--
-- Runs under plain `luajit` + busted with build/lua/signal/core.so on the
-- cpath: the same blueprint engine, presets and sandbox as the engine, so a
-- script that passes here behaves the same in production. Load errors raise
-- with every "file:line: message", so a broken script fails the spec loudly.

local blueprint = require "signal.pipeline.blueprint"
local destinations = require "signal.destinations"

local M = {}

-- The repository root, found from this file's own path (lua/signal/testing.lua),
-- so presets and fixtures are found wherever the spec runs from.
local function exists(p)
  local f = io.open(p, "r")
  if f then f:close() return true end
  return false
end

local function root_dir()
  local core = require "signal.core"
  if core.home then return core.home end
  local src = debug.getinfo(1, "S").source
  if src:sub(1, 1) == "@" then
    -- a checkout: <root>/lua/signal/testing.lua with <root>/presets
    local dir = src:sub(2):match("^(.*)/lua/signal/testing%.lua$")
    if dir then return dir end
    if src == "@lua/signal/testing.lua" then return "." end
    -- a LuaRocks install: <luadir>/signal/testing.lua with presets (and the
    -- fixtures) copied under <luadir>/signal/ by `make install-rock`
    local lib = src:sub(2):match("^(.*)/testing%.lua$")
    if lib and exists(lib .. "/presets/" .. destinations.SCRIPT_DEFAULT .. "/global.lua") then return lib end
  end
  return "."
end
M.root = root_dir

local deep_copy = require("signal.config.schema").deepcopy
M.deep_copy = deep_copy

-- fixture(name) -> a fresh canonical event for a vertical ("retail", "travel",
-- "finance", "b2b_saas", "media", "gaming", "publishing") or "page".
-- Each vertical's file holds only its event, properties and page; the
-- shared visitor (_visitor.lua) builds the rest of the event around them.
function M.fixture(name)
  local dir = root_dir() .. "/spec/fixtures/events/"
  local visitor, verr = loadfile(dir .. "_visitor.lua")
  if not visitor then error("signal.testing.fixture: " .. verr, 2) end
  local chunk, err = loadfile(dir .. name .. ".lua")
  if not chunk then error("signal.testing.fixture: " .. err, 2) end
  return deep_copy(chunk(visitor()))
end

-- load{ destination?, presets_dir?, scripts_dir? } -> lib; raises with all
-- load errors.
function M.load(opts)
  opts = opts or {}
  local lib, errors = blueprint.load{
    destination = opts.destination,
    presets_dir = opts.presets_dir or (root_dir() .. "/presets"),
    scripts_dir = opts.scripts_dir,
  }
  if not lib then error("blueprints failed to load:\n  " .. table.concat(errors, "\n  "), 2) end
  return lib
end

-- A camelCase message (Segment/datafly.js wire form) has any of these keys.
local CAMEL_KEYS = { "userId", "anonymousId", "messageId", "sentAt", "receivedAt",
                     "originalTimestamp", "groupId", "previousId" }

local function is_camel(e)
  for _, k in ipairs(CAMEL_KEYS) do
    if e[k] ~= nil then return true end
  end
  local ctx = e.context
  return type(ctx) == "table" and (ctx.userAgent ~= nil or ctx.vendorIds ~= nil)
end

-- canonical(event, opts) -> canonical event. camelCase input (the wire form)
-- goes through the collector's own conversion (core.collect.normalize, the C
-- the engine runs), as a server-side message (its own context.ip / userAgent
-- are kept). It strips what only the server may set (partner_attrs,
-- identity), so the enrichment results a spec wants are given as
-- opts.partner_attrs, opts.identity and the providers' flat fields, and
-- attached afterwards.
function M.canonical(e, opts)
  opts = opts or {}
  local camel = opts.normalize
  if camel == nil then camel = is_camel(e) end
  local out = e
  if camel then
    local core = require "signal.core"
    local cjson = require "cjson"
    local ev_json, errs = core.collect.normalize(cjson.encode(e), {
      canonical_id = opts.canonical_id or e.canonical_id or e.canonicalId or "dfid_test",
      pipeline_key = opts.pipeline_key,
      server_side = true,
    })
    if not ev_json then
      error("signal.testing: event does not normalize: " .. table.concat(errs, "; "), 3)
    end
    out = cjson.decode(ev_json)
  end
  if opts.partner_attrs then out.partner_attrs = opts.partner_attrs end
  if opts.identity then out.identity = opts.identity end
  for f in pairs(destinations.event_fields()) do
    if opts[f] ~= nil then out[f] = opts[f] end
  end
  return out
end

-- map{ event, destination?, preset?, scripts_dir?, presets_dir?, pipeline_key?,
--      canonical_id?, normalize?, partner_attrs?, identity?, <provider fields>?,
--      <the integration's settings, e.g. source_value>? }
--   -> payload | nil (dropped), warnings | nil
function M.map(opts)
  assert(type(opts) == "table", "signal.testing.map expects a table")
  assert(type(opts.event) == "table", "signal.testing.map: event must be a table")
  local lib = M.load(opts)
  local preset = opts.preset
  if preset == nil and lib.dest.mapping.presets then preset = "retail" end
  local bp, err = lib:get(preset, opts.pipeline_key)
  if not bp then error("signal.testing.map: " .. err, 2) end
  local event = M.canonical(opts.event, opts)
  return bp:map(event, opts)
end

return M
