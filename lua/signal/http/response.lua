-- signal.http.response — response helpers shared by every handler: JSON bodies,
-- the one error shape of the contract ({"error":{"code","message"}}), query
-- string and cookie parsing.
local cjson = require("cjson").new()

local M = {}

local JSON = "application/json"

function M.json(status, value, headers)
  headers = headers or {}
  headers["Content-Type"] = JSON
  return status, headers, cjson.encode(value)
end

function M.error(status, code, message, headers)
  headers = headers or {}
  headers["Content-Type"] = JSON
  return status, headers, cjson.encode({ error = { code = code, message = message } })
end

local function unescape(s)
  s = s:gsub("+", " ")
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end
M.unescape = unescape

function M.escape(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- "a=1&a=2&b=x%20y" -> { { "a", "1" }, { "a", "2" }, { "b", "x y" } }: every
-- pair, in order (for callers that must see repeated names).
function M.query_pairs(q)
  local out = {}
  if not q or q == "" then return out end
  for pair in q:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    out[#out + 1] = { unescape(k), unescape(v) }
  end
  return out
end

-- "a=1&b=x%20y" -> { a = "1", b = "x y" } (first value wins).
function M.parse_query(q)
  local out = {}
  for _, p in ipairs(M.query_pairs(q)) do
    if out[p[1]] == nil then out[p[1]] = p[2] end
  end
  return out
end

-- "a=1; _dfdid=xyz" -> { a = "1", _dfdid = "xyz" }
function M.parse_cookies(header)
  local out = {}
  if not header then return out end
  for pair in header:gmatch("[^;]+") do
    local k, v = pair:match("^%s*([^=]+)=%s*(.-)%s*$")
    if k and out[k] == nil then out[k] = v end
  end
  return out
end

return M
