-- signal.config — loads signal.conf.lua and validates it.
--
-- The config file is Lua returning a table. It runs in a small sandbox: the
-- basic libraries (string, table, math), `os.getenv` (so secrets come from the
-- environment) and `os.time`/`os.date`, but no io, require, load or debug.
-- The table is checked against one declarative schema (signal.config.fields,
-- validated by signal.config.schema) that dispatches each integration to its
-- destination's own settings on `type`. Every problem is reported, each as
-- `file: field.path: message`; messages never contain a secret. On success
-- the returned table is the normalized config: defaults filled, JSON/CSV
-- settings decoded into lists.
--
--   local cfg, errors = config.load("signal.conf.lua")
--
-- A relative `scripts_dir` is resolved against the config file's directory,
-- so `signal check -c /etc/signal/signal.conf.lua` finds /etc/signal/scripts.

local schema = require "signal.config.schema"
local fields = require "signal.config.fields"

local type, ipairs, pairs, tostring = type, ipairs, pairs, tostring
local setfenv, loadstring, pcall = setfenv, loadstring, pcall

local M = {}

M.schema = fields.schema
M.integration_schema = fields.integration_schema
M.cpu_count = fields.cpu_count

---------------------------------------------------------------------------
-- secrets

local function redis_password(url)
  local userinfo = type(url) == "string" and (url:match("^redis://([^/@]*)@") or url:match("^unix://([^/@]*)@/"))
  if not userinfo or userinfo == "" then return nil end
  return userinfo:match(":(.*)$") or userinfo
end

-- secrets(cfg) → list of every secret value in cfg (for log scrubbing).
function M.secrets(cfg)
  local list, seen = {}, {}
  local function add(v)
    if type(v) == "string" and v ~= "" and not seen[v] then
      seen[v] = true
      list[#list + 1] = v
    end
  end
  add(cfg.admin_token)
  add(redis_password(cfg.redis))
  for _, p in ipairs(type(cfg.pipelines) == "table" and cfg.pipelines or {}) do
    for _, i in ipairs(type(p.integrations) == "table" and p.integrations or {}) do
      local s = type(i.type) == "string" and fields.integration_schema(i.type)
      for _, f in ipairs(s and s.fields or {}) do
        if f.secret then
          local v = i[f.name]
          if type(v) == "table" then
            for _, x in pairs(v) do add(x) end
          else
            add(v)
          end
        end
      end
    end
  end
  return list
end

---------------------------------------------------------------------------
-- loading

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

local function sandbox()
  return {
    os = { getenv = os.getenv, time = os.time, date = os.date, clock = os.clock },
    string = copy(string), table = copy(table), math = copy(math),
    pairs = pairs, ipairs = ipairs, next = next, select = select, type = type,
    tostring = tostring, tonumber = tonumber, unpack = unpack, error = error,
    assert = assert, pcall = pcall, rawget = rawget, rawequal = rawequal,
  }
end

-- Lua's "near '<token>'" can quote a string literal of the file: hide it
-- when it might be a credential.
local function redact_near(msg)
  return (msg:gsub("near '(.-)'$", function(tok)
    if schema.looks_secret(tok) or tok:find('^["\']') and #tok > 12 then
      return "near a string literal"
    end
  end))
end

-- Lua shortens long chunk names ("...conf.lua:3: x"): put the full path back.
local function with_path(msg, path)
  local line, rest = msg:match("^.-:(%d+): (.*)$")
  if line then return path .. ":" .. line .. ": " .. rest end
  return path .. ": " .. msg
end

local function dirname(path)
  return path:match("^(.*)/[^/]*$")
end

-- validate(raw, file) → cfg, nil | nil, { "file: path: message", … }
function M.validate(raw, file)
  file = file or "signal.conf.lua"
  local cfg, errors = schema.validate(fields.schema, raw)
  if #errors > 0 then
    return nil, schema.format(errors, file)
  end
  return cfg
end

-- load(path) → cfg, nil | nil, { "file: path: message" | "file:line: message", … }
function M.load(path)
  path = path or "signal.conf.lua"
  local f, err = io.open(path, "rb")
  if not f then
    return nil, { path .. ": cannot read config: " .. tostring(err):gsub("^[^:]*: ", "") }
  end
  local src = f:read("*a")
  f:close()
  local chunk, perr = loadstring(src, "@" .. path)
  if not chunk then
    return nil, { with_path(redact_near(perr), path) }
  end
  setfenv(chunk, sandbox())
  local ok, raw = pcall(chunk)
  if not ok then
    local msg = type(raw) == "string" and with_path(raw, path)
      or (path .. ": error: " .. schema.type_name(raw))
    return nil, { msg }
  end
  if type(raw) ~= "table" then
    return nil, { path .. ": must return a table (return { listen = …, pipelines = { … } }), got "
      .. schema.type_name(raw) }
  end
  local cfg, errors = M.validate(raw, path)
  if not cfg then return nil, errors end
  local dir = dirname(path)
  if cfg.scripts_dir and dir and dir ~= "." and not cfg.scripts_dir:find("^/") then
    cfg.scripts_dir = dir .. "/" .. cfg.scripts_dir
  end
  return cfg
end

-- count(cfg) → pipelines, integrations
function M.count(cfg)
  local np, ni = 0, 0
  for _, p in ipairs(cfg.pipelines or {}) do
    np = np + 1
    ni = ni + #(p.integrations or {})
  end
  return np, ni
end

return M
