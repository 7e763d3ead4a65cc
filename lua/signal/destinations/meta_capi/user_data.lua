-- signal.destinations.meta_capi.user_data — Meta's customer information
-- parameters: normalized, then SHA-256 hex, exactly as Meta matches them;
-- and the browser ids (fbc, fbp) that are sent as they are.
--
-- Hashed (after normalizing; a value that already is 64 hex digits is taken
-- as a hash and only lower-cased, so nothing is ever hashed twice):
--   em          trimmed, lower-cased
--   ph          digits only, leading zeros dropped (so "+1 212 555 0142" and
--               "001 212 555 0142" are one number); send numbers with their
--               country code — a national number cannot be completed here
--   fn, ln      lower-cased, punctuation and spaces removed
--   ct          lower-cased, spaces and punctuation removed
--   st          lower-cased letters only (a 2-letter code, e.g. "ny")
--   zp          lower-cased, spaces removed; US ZIP+4 cut to its 5 digits
--   country     lower-cased letters (ISO 3166-1 alpha-2, e.g. "us")
--   db          digits only (YYYYMMDD)
--   ge          "f" or "m"
--   external_id trimmed (ids are case-sensitive: not lower-cased)
-- Not hashed: client_ip_address, client_user_agent, fbc, fbp.
--
-- fbc: the _fbc cookie (datafly.js: context.vendor_ids.fbc), else built
-- from an fbclid in the page URL as fb.1.<event time in ms>.<fbclid>, the
-- format the pixel itself writes. fbp: the _fbp cookie.
local core = require "signal.core"

local type, tostring, ipairs, floor = type, tostring, ipairs, math.floor
local find, gsub, lower, match, char = string.find, string.gsub, string.lower, string.match, string.char
local sha256_hex = core.sha256_hex

local M = {}

local function trim(s) return (match(s, "^%s*(.-)%s*$")) end

M.NORMALIZE = {
  em = function(s) return lower(trim(s)) end,
  ph = function(s) return (gsub(gsub(s, "%D", ""), "^0+", "")) end,
  fn = function(s) return (gsub(lower(s), "[%p%s]", "")) end,
  ln = function(s) return (gsub(lower(s), "[%p%s]", "")) end,
  ct = function(s) return (gsub(lower(s), "[%p%s]", "")) end,
  st = function(s) return (gsub(lower(s), "[^%a]", "")) end,
  zp = function(s)
    s = gsub(lower(s), "%s", "")
    return match(s, "^(%d%d%d%d%d)%-%d%d%d%d$") or s
  end,
  country = function(s) return (gsub(lower(s), "[^%a]", "")) end,
  db = function(s) return (gsub(s, "%D", "")) end,
  ge = function(s)
    local c = match(lower(trim(s)), "^(%a)")
    return (c == "f" or c == "m") and c or ""
  end,
  external_id = trim,
}
M.HASHED = { "em", "ph", "fn", "ln", "ct", "st", "zp", "country", "db", "ge", "external_id" }
M.PLAIN = { "client_ip_address", "client_user_agent", "fbc", "fbp" }

-- is_hash(s) → true for 64 hex digits: a value hashed already
function M.is_hash(s)
  return #s == 64 and not find(s, "%X")
end

-- hash(key, v) → the SHA-256 hex of the normalized value | nil (nothing left)
function M.hash(key, v)
  local tv = type(v)
  if tv == "number" then v = tostring(v) elseif tv ~= "string" then return nil end
  if M.is_hash(v) then return lower(v) end
  local s = M.NORMALIZE[key](v)
  if s == nil or s == "" then return nil end
  return sha256_hex(s)
end

-- hashed(key, v) → one hash, or a list of them for a list of values
function M.hashed(key, v)
  if type(v) ~= "table" then return M.hash(key, v) end
  local out = {}
  for _, x in ipairs(v) do
    local h = M.hash(key, x)
    if h then out[#out + 1] = h end
  end
  return out[1] and out or nil
end

local function unescape(s)
  return (gsub(s, "%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
end

-- fbclid(e) → the fbclid of the page's URL (or its query string) | nil
function M.fbclid(e)
  local ctx = e.context
  local page = type(ctx) == "table" and ctx.page or nil
  if type(page) ~= "table" then return nil end
  for _, s in ipairs({ page.search, page.url }) do
    if type(s) == "string" then
      local v = match(s, "[?&]fbclid=([^&#]+)")
      if v and v ~= "" then return unescape(v) end
    end
  end
  return nil
end

-- fbc(e, time_s) → the _fbc cookie, or one built from fbclid | nil
function M.fbc(e, time_s)
  local ctx = e.context
  local vids = type(ctx) == "table" and ctx.vendor_ids or nil
  local c = type(vids) == "table" and vids.fbc or nil
  if type(c) == "string" and c ~= "" then return c end
  local id = M.fbclid(e)
  if not id then return nil end
  return "fb.1." .. floor((time_s or core.now()) * 1000) .. "." .. id
end

-- fbp(e) → the _fbp cookie | nil
function M.fbp(e)
  local ctx = e.context
  local vids = type(ctx) == "table" and ctx.vendor_ids or nil
  local c = type(vids) == "table" and vids.fbp or nil
  return type(c) == "string" and c ~= "" and c or nil
end

return M
