-- signal.observe.log — structured logging: one JSON object per line on stderr.
--
-- log.warn("partner resolve failed", { pipeline = k, reason = err })
--
-- Secrets never reach a log line: field names that look like credentials are
-- replaced wholesale, and every secret value registered with add_secret()
-- (the config's API keys, the admin token) is scrubbed from the whole line,
-- whatever field or message it hides in.
local core = require "signal.core"
local cjson = require("cjson").new()

local M = {}

local LEVELS = { debug = 10, info = 20, warn = 30, error = 40 }
local threshold = LEVELS[os.getenv("SIGNAL_LOG_LEVEL") or ""] or LEVELS.info
local secrets = {}          -- list of literal strings to scrub
local REDACTED = "[REDACTED]"

local SECRET_FIELDS = {
  api_key = true, profile_api_key = true, authorization = true, admin_token = true,
  token = true, password = true, secret = true, cookie = true,
}

function M.set_level(name)
  local l = LEVELS[name]
  if not l then return nil, "log level must be one of debug, info, warn, error" end
  threshold = l
  return true
end

function M.enabled(level) return (LEVELS[level] or 0) >= threshold end

-- Registers a value that must never be printed (ignores short/empty values,
-- which would scrub innocent text).
function M.add_secret(value)
  if type(value) == "string" and #value >= 6 then
    for _, s in ipairs(secrets) do if s == value then return end end
    secrets[#secrets + 1] = value
    table.sort(secrets, function(a, b) return #a > #b end)  -- longest first
  end
end

local function plain_find_replace(s, needle, repl)
  local out, i = {}, 1
  while true do
    local a, b = s:find(needle, i, true)
    if not a then break end
    out[#out + 1] = s:sub(i, a - 1)
    out[#out + 1] = repl
    i = b + 1
  end
  if i == 1 then return s end
  out[#out + 1] = s:sub(i)
  return table.concat(out)
end

-- Scrubs registered secrets, bearer tokens and anything shaped like a JWT
-- (three base64url parts, the first two JSON objects: "eyJ…") from any
-- string: a page or a server may put someone's token in an event property.
function M.scrub(s)
  if type(s) ~= "string" then return s end
  for _, v in ipairs(secrets) do s = plain_find_replace(s, v, REDACTED) end
  s = s:gsub("([Bb]earer%s+)[%w%-%._~%+/=]+", "%1" .. REDACTED)
  if s:find("eyJ", 1, true) then
    s = s:gsub("eyJ[%w_%-]+%.eyJ[%w_%-]+%.[%w_%-]*", REDACTED)
  end
  return s
end

local function iso_now()
  local t = core.now()
  local ms = math.floor((t % 1) * 1000)
  return os.date("!%Y-%m-%dT%H:%M:%S", math.floor(t)) .. string.format(".%03dZ", ms)
end

local function emit(level, msg, fields)
  if LEVELS[level] < threshold then return end
  local rec = { ts = iso_now(), level = level, msg = msg, worker = core.worker_id }
  if fields then
    for k, v in pairs(fields) do
      if SECRET_FIELDS[k] then v = REDACTED end
      if rec[k] == nil then rec[k] = v end
    end
  end
  local ok, line = pcall(cjson.encode, rec)
  if not ok then line = cjson.encode({ ts = rec.ts, level = level, msg = tostring(msg) }) end
  core.log_write(M.scrub(line))
end

function M.debug(msg, fields) emit("debug", msg, fields) end
function M.info(msg, fields) emit("info", msg, fields) end
function M.warn(msg, fields) emit("warn", msg, fields) end
function M.error(msg, fields) emit("error", msg, fields) end

return M
