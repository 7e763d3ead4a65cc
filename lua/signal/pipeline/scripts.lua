-- signal.pipeline.scripts — loads blueprint files (presets and customer scripts) into a
-- restricted environment and runs customer code under an instruction budget.
--
-- A customer script is a Lua file in `scripts_dir` that returns a blueprint
-- table. It is loaded into a fresh environment per file with only
-- pure functions: string/table/math, pairs/ipairs/next, tostring/tonumber/
-- type/select/error/pcall/assert/unpack/setmetatable, os.time/os.date/os.clock
-- and a `sha256(s)` helper. There is no io, no os.execute, no require, no
-- load/loadstring/dofile and no debug: a mapping script transforms one event
-- and must not reach the filesystem, the network or the engine's state.
-- Touching anything else raises "'io' is not available in mapping scripts",
-- which surfaces as a load error with file and line.
--
-- Budget: every call into customer code (the chunk itself at load, a mapping
-- `fn`, a `transform`) runs with a count hook; an event may spend at most
-- BUDGET virtual-machine instructions in customer code, then the call raises
-- "instruction budget exceeded". Caveat (LuaJIT): hooks only run in the
-- interpreter, never inside compiled traces, so every customer chunk is
-- compiled with `jit.off(chunk, true)` (recursively: all functions it
-- defines). Customer code therefore never JIT-compiles, which is the price
-- of being interruptible; presets are trusted and keep the JIT. The budget
-- counts instructions, not time or memory: a single C call such as
-- `string.rep(s, 1e9)` is one instruction and is not bounded by it.

local core_ok, core = pcall(require, "signal.core")
if not core_ok then core = nil end

local type, pairs, pcall, error, setfenv = type, pairs, pcall, error, setfenv
local loadstring, select = loadstring, select
local sethook, gethook = debug.sethook, debug.gethook
local jit = jit

local M = {}

M.BUDGET = 1000000             -- instructions per event in customer code
local TICK = 1000              -- hook granularity (instructions per hook call)

-- ---------------------------------------------------------------------------
-- Directory listing and file reading.

local lfs_ok, lfs = pcall(require, "lfs")
if not lfs_ok then lfs = nil end

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- list_lua(dir) -> sorted list of "*.lua" file names | nil, err
-- Sorted with plain byte order, so "01_base.lua" < "10_extra.lua" < "a.lua":
-- the documented file-name order of script layering.
function M.list_lua(dir)
  local names = {}
  if lfs then
    local attr = lfs.attributes(dir)
    if not attr or attr.mode ~= "directory" then
      return nil, ("%s: no such directory"):format(dir)
    end
    for name in lfs.dir(dir) do
      if name:sub(-4) == ".lua" and name:sub(1, 1) ~= "." then
        local a = lfs.attributes(dir .. "/" .. name)
        if a and a.mode == "file" then names[#names + 1] = name end
      end
    end
  else
    -- No lfs: the file names come from ls. Used at load time only.
    local p = io.popen("ls -1A " .. shell_quote(dir) .. " 2>/dev/null && echo __OK__")
    local out = p and p:read("*a") or ""
    if p then p:close() end
    if not out:find("__OK__\n$") then
      return nil, ("%s: no such directory"):format(dir)
    end
    for name in out:gmatch("[^\n]+") do
      if name ~= "__OK__" and name:sub(-4) == ".lua" and name:sub(1, 1) ~= "." then
        names[#names + 1] = name
      end
    end
  end
  table.sort(names)
  return names
end

function M.read(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  return s
end

-- ---------------------------------------------------------------------------
-- Instruction budget.

local ticks = 0          -- hook calls left for the current event
local exhausted = false  -- set when the budget ran out: scripts' pcall rethrows

local function budget_hook()
  ticks = ticks - 1
  if ticks <= 0 then
    exhausted = true
    error(("instruction budget exceeded (%d instructions per event)"):format(M.BUDGET), 2)
  end
end

-- Start a new event's budget. Called once per event before any customer code.
function M.reset_budget()
  ticks = M.BUDGET / TICK
  exhausted = false
end

-- Restores whatever hook was installed before (a coverage tool, a debugger).
local function finish(saved_fn, saved_mask, saved_count, ok, ...)
  if saved_fn then sethook(saved_fn, saved_mask, saved_count) else sethook() end
  return ok, ...
end

-- guard(fn, ...) -> true, results... | false, err
-- pcall with the instruction budget armed for the duration of the call.
function M.guard(fn, ...)
  local hf, hm, hc = gethook()
  sethook(budget_hook, "", TICK)
  return finish(hf, hm, hc, pcall(fn, ...))
end

-- ---------------------------------------------------------------------------
-- Restricted environment.

local function copy(t, drop)
  local out = {}
  for k, v in pairs(t) do
    if not (drop and drop[k]) then out[k] = v end
  end
  return out
end

local function refuse(name)
  return function(_, k)
    error(("'%s%s' is not available in mapping scripts"):format(name, tostring(k)), 2)
  end
end

-- A script's own pcall must not swallow the budget error, or
-- `while true do pcall(spin) end` would never stop.
local function rethrow(ok, ...)
  if not ok and exhausted then error((...), 0) end
  return ok, ...
end
local function script_pcall(f, ...) return rethrow(pcall(f, ...)) end

local function sha256(s)
  if type(s) ~= "string" and type(s) ~= "number" then
    error("sha256 expects a string", 2)
  end
  if not core then error("sha256 needs signal.core (build/lua/signal/core.so)", 2) end
  return core.sha256_hex(tostring(s))
end

-- Helpers every blueprint file (presets and customer scripts) may use:
--   prop("price")           → { source = "properties.price", target = "price" }
--   prop("sku", "item_sku") → { source = "properties.sku", target = "item_sku" }
--   join(a, b, …)           → one new list holding the mappings of a, b, …
local function prop(name, target)
  return { source = "properties." .. name, target = target or name }
end

local function join(...)
  local out = {}
  for i = 1, select("#", ...) do
    for _, m in ipairs((select(i, ...))) do out[#out + 1] = m end
  end
  return out
end

-- new_env() -> a fresh environment table for one blueprint file.
function M.new_env()
  local os_safe = setmetatable(
    { time = os.time, date = os.date, clock = os.clock },
    { __index = refuse("os.") })
  local env = {
    string = copy(string, { dump = true }),
    table = copy(table),
    math = copy(math),
    os = os_safe,
    pairs = pairs, ipairs = ipairs, next = next,
    tostring = tostring, tonumber = tonumber, type = type, select = select,
    error = error, assert = assert, pcall = script_pcall,
    unpack = unpack, setmetatable = setmetatable, rawget = rawget,
    rawset = rawset, rawequal = rawequal,
    sha256 = sha256, prop = prop, join = join,
  }
  env._G = env
  -- Unknown globals (io, require, debug, load, dofile, print, a typo…) raise
  -- with the name, so a refusal reads as a clear error with file and line.
  return setmetatable(env, { __index = refuse("") })
end

-- load(source, chunkname, opts) -> value returned by the chunk | nil, err
-- opts.trusted: presets — keep the JIT, no budget (they are our code).
-- Errors are "chunkname:line: message" (chunkname is the file path).
function M.load(source, chunkname, opts)
  local trusted = opts and opts.trusted
  local chunk, err = loadstring(source, "@" .. chunkname)
  if not chunk then return nil, err end
  setfenv(chunk, M.new_env())
  if not trusted and jit then jit.off(chunk, true) end
  local ok, res
  if trusted then
    ok, res = pcall(chunk)
  else
    M.reset_budget()
    ok, res = M.guard(chunk)
  end
  if not ok then return nil, M.located(chunkname, res) end
  return res
end

-- located(file, err) -> "file:line: message" when the error carries a
-- position, else "file: message", so every error names its file.
function M.located(file, err)
  err = type(err) == "string" and err or ("error object is a %s value"):format(type(err))
  if err:sub(1, #file + 1) == file .. ":" then return err end
  return file .. ": " .. err
end

-- ---------------------------------------------------------------------------
-- Probe event: a complete canonical event (as datafly.js sends after
-- normalization) used to run each script once at load time, so a script that
-- raises on a normal event is rejected before it replaces a working version.
-- Every enrichment provider's probe attributes are on it
-- (partner_attrs.<provider>), and its flat fields hold "probe".
function M.probe_event(name)
  local ev = {
    type = "track", event = name or "probe_event",
    message_id = "probe-0001", timestamp = "2026-04-17T15:37:10.484Z",
    received_at = "2026-04-17T15:37:10.512Z", sent_at = "2026-04-17T15:37:10.480Z",
    user_id = "u_probe", anonymous_id = "anon_probe", canonical_id = "dfid_probe",
    group_id = "g_probe", pipeline_key = "dk_probe",
    properties = {
      product_id = "SKU-1", sku = "SKU-1", name = "Probe", price = 10.5,
      quantity = 2, currency = "USD", value = 21, order_id = "ord_1",
      category = "probe", items = { { item_id = "SKU-1", price = 10.5, quantity = 2 } },
      products = { { product_id = "SKU-1", price = 10.5, quantity = 2 } },
    },
    traits = { email = "probe@example.com", phone = "+15550100", first_name = "Pro" },
    identity = { email = "probe@example.com", phone = "+15550100", user_id = "u_probe" },
    context = {
      ip = "203.0.113.7", user_agent = "Mozilla/5.0 (probe)", locale = "en-US",
      timezone = "UTC",
      page = { url = "https://shop.example.com/p?q=1", path = "/p", referrer = "",
               title = "Probe", search = "?q=1" },
      campaign = { source = "google", medium = "cpc", name = "probe" },
      session = { id = "s_probe", count = 1 },
      geo = { country = "US", region = "CA", city = "San Francisco" },
      vendor_ids = { ga = "GA1.1.1.1" },
      library = { name = "datafly.js", version = "1.8.0" },
      consent = { analytics = true, marketing = false, functional = true },
    },
    partner_attrs = {},
  }
  for _, d in ipairs(require("signal.destinations").with("enrichment")) do
    local e = d.enrichment
    local attrs = {}
    for k, v in pairs(e.probe or {}) do attrs[k] = v end
    ev.partner_attrs[e.provider] = attrs
    for _, f in ipairs(e.fields or {}) do ev[f] = "probe" end
  end
  return ev
end

return M
