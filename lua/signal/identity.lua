-- signal/identity.lua — who the visitor is (DESIGN §5): the _dfdid cookie
-- (canonical_id), the client address behind trusted proxies, and identity
-- stitching (linking-key traits remembered per canonical_id).
--
--   identity.canonical_id(ctx, req[, mint]) → id, set_cookie_header | nil
--       the _dfdid cookie; when absent (and mint ~= false) a new
--       "dfid_<32 hex>" id and the Set-Cookie header that plants it
--   identity.read_cookie(req)              → id | nil   (never mints)
--   identity.client_ip(ctx, req)           → address (X-Forwarded-For honoured
--                                            only from cfg.trusted_proxies)
--   identity.is_https(ctx, req)            → true when a trusted proxy says
--                                            the browser used https
--   identity.linking_keys(ev)              → { email, phone, user_id } | nil
--   identity.stitch(ctx, pk, ev)           → ev.identity | nil[, err]
--
-- Stitching is split between ingest and processing so each side costs one
-- Redis round trip it already makes: the collector writes linking_keys(ev)
-- into signal:{pk}:id:<canonical_id> inside its dedupe+XADD script; the
-- processor calls stitch() (one HGETALL) before enrichment, so a later
-- anonymous event from the same device resolves against Amperity with the
-- email an earlier identify gave.

local core = require "signal.core"
local queue = require "signal.redis.keys"

local type, ipairs, tonumber = type, ipairs, tonumber
local find, match, sub, byte, char, gsub, lower, format =
  string.find, string.match, string.sub, string.byte, string.char, string.gsub, string.lower, string.format
local floor = math.floor
local random_hex = core.random_hex

local M = {}

M.COOKIE = "_dfdid"
-- ~400 days: the longest lifetime browsers keep a cookie (Chrome caps there).
M.COOKIE_MAX_AGE = 34560000
-- The stitched traits live as long as the cookie that keys them.
M.IDENTITY_TTL_S = 34560000

---------------------------------------------------------------------------
-- the _dfdid cookie

-- A cookie value becomes part of Redis keys and of every event: anything
-- but a short token is treated as absent (and replaced when minting).
local function valid_id(v)
  return v ~= nil and #v <= 128 and find(v, "^[%w_%-%.]+$") ~= nil
end

-- read_cookie(req) → the _dfdid value, or nil. Cheap: the common Cookie
-- header is scanned once with a plain find, not split into a table.
function M.read_cookie(req)
  local h = req.headers.cookie
  if h == nil then return nil end
  local i = 1
  while true do
    local a, b = find(h, M.COOKIE .. "=", i, true)
    if not a then return nil end
    -- must start the header or follow "; " (not be the tail of "x_dfdid=")
    local prev = a > 1 and sub(h, a - 1, a - 1) or ";"
    if prev == ";" or prev == " " then
      local v = match(h, "^([^;]*)", b + 1)
      v = match(v, "^%s*(.-)%s*$")
      if sub(v, 1, 1) == '"' and sub(v, -1) == '"' then v = sub(v, 2, -2) end
      if valid_id(v) then return v end
      return nil
    end
    i = b + 1
  end
end

local cookie_suffix = setmetatable({}, { __mode = "k" })  -- cfg → { plain, secure }

local function suffixes(cfg)
  local s = cookie_suffix[cfg]
  if s then return s end
  local base = "; Path=/; Max-Age=" .. M.COOKIE_MAX_AGE .. "; HttpOnly; SameSite=Lax"
  if cfg.cookie_domain then base = base .. "; Domain=" .. cfg.cookie_domain end
  s = { base, base .. "; Secure" }
  cookie_suffix[cfg] = s
  return s
end

-- cookie_suffixes(cfg) → the Set-Cookie attributes after "_dfdid=<id>":
-- plain, and for https (engine/ingest.c plants the same cookie)
function M.cookie_suffixes(cfg)
  local s = suffixes(cfg)
  return s[1], s[2]
end

-- canonical_id(ctx, req[, mint]) → id, set_cookie_header | nil.
-- With mint == false an absent cookie gives nil (the identity hub: a
-- visitor without the cookie is simply unknown).
function M.canonical_id(ctx, req, mint)
  local id = M.read_cookie(req)
  if id ~= nil or mint == false then return id, nil end
  id = "dfid_" .. random_hex(16)
  local s = suffixes(ctx.cfg)
  return id, M.COOKIE .. "=" .. id .. (M.is_https(ctx, req) and s[2] or s[1])
end

---------------------------------------------------------------------------
-- addresses and trusted proxies

-- parse_ip(s) → 4-byte (IPv4, also for IPv4-mapped IPv6) or 16-byte string, or nil
local function parse_ipv4(s)
  local a, b, c, d = match(s, "^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if not a then return nil end
  a, b, c, d = tonumber(a), tonumber(b), tonumber(c), tonumber(d)
  if a > 255 or b > 255 or c > 255 or d > 255 then return nil end
  return char(a, b, c, d)
end

local function parse_ipv6(s)
  if not find(s, ":", 1, true) or not find(s, "^[%x:%.]+$") then return nil end
  local tail4
  local v4 = match(s, ":(%d+%.%d+%.%d+%.%d+)$")
  if v4 then
    tail4 = parse_ipv4(v4)
    if not tail4 then return nil end
    s = sub(s, 1, #s - #v4) .. "0:0"   -- two placeholder groups, replaced below
  end
  local groups = {}
  local head, rest = match(s, "^(.-)::(.*)$")
  local function split(part, out)
    if part == "" then return true end
    for g in (part .. ":"):gmatch("([^:]*):") do
      if not find(g, "^%x%x?%x?%x?$") then return false end
      out[#out + 1] = tonumber(g, 16)
    end
    return true
  end
  if head then
    if find(rest, "::", 1, true) then return nil end
    local h, t = {}, {}
    if not split(head, h) or not split(rest, t) then return nil end
    if #h + #t > 7 then return nil end
    for _, g in ipairs(h) do groups[#groups + 1] = g end
    for _ = 1, 8 - #h - #t do groups[#groups + 1] = 0 end
    for _, g in ipairs(t) do groups[#groups + 1] = g end
  else
    if not split(s, groups) or #groups ~= 8 then return nil end
  end
  local bytes = {}
  for i = 1, 8 do bytes[#bytes + 1] = char(floor(groups[i] / 256), groups[i] % 256) end
  local b = table.concat(bytes)
  if tail4 then b = sub(b, 1, 12) .. tail4 end
  -- ::ffff:a.b.c.d is an IPv4 peer on a dual-stack socket: compare as IPv4
  if sub(b, 1, 12) == "\0\0\0\0\0\0\0\0\0\0\255\255" then return sub(b, 13) end
  return b
end

-- strip(s) → the address of an X-Forwarded-For hop: no spaces, brackets,
-- zone or port ("[::1]:80", "1.2.3.4:5678" and "fe80::1%eth0" occur).
local function strip(s)
  s = match(s, "^%s*(.-)%s*$")
  local v6 = match(s, "^%[([^%]]+)%]")
  if v6 then s = v6
  elseif match(s, "^%d+%.%d+%.%d+%.%d+:%d+$") then s = match(s, "^([^:]+)") end
  return (gsub(s, "%%.*$", ""))
end

local function parse_ip(s)
  if s == nil then return nil end
  return parse_ipv4(s) or parse_ipv6(s)
end
M.parse_ip = parse_ip

-- compile(list) → { { bytes, bits }, … } from cfg.trusted_proxies
local function compile(list)
  local nets = {}
  for _, v in ipairs(list or {}) do
    local addr, bits = match(v, "^([^/]+)/(%d+)$")
    addr = addr or v
    local b = parse_ip(addr)
    if b then
      bits = tonumber(bits) or #b * 8
      -- "::ffff:10.0.0.0/104" style ranges were given in IPv6 bits
      if #b == 4 and find(addr, ":", 1, true) and bits > 32 then bits = bits - 96 end
      nets[#nets + 1] = { bytes = b, bits = bits }
    end
  end
  return nets
end

local function in_net(b, net)
  local nb = net.bytes
  if #b ~= #nb then return false end
  local full = floor(net.bits / 8)
  if full > 0 and sub(b, 1, full) ~= sub(nb, 1, full) then return false end
  local rem = net.bits % 8
  if rem == 0 then return true end
  local shift = 2 ^ (8 - rem)   -- keep the top `rem` bits of the next byte
  return floor(byte(b, full + 1) / shift) == floor(byte(nb, full + 1) / shift)
end

-- Per cfg: compiled networks and a bounded cache of verdicts per address
-- (a collector sees few distinct peers when it is behind a load balancer).
local trust_state = setmetatable({}, { __mode = "k" })
local TRUST_CACHE_MAX = 1024

local function state(cfg)
  local st = trust_state[cfg]
  if st then return st end
  st = { nets = compile(cfg.trusted_proxies), cache = {}, n = 0 }
  trust_state[cfg] = st
  return st
end

local function trusted(st, addr)
  if #st.nets == 0 or addr == nil then return false end
  local v = st.cache[addr]
  if v ~= nil then return v end
  v = false
  local b = parse_ip(addr)
  if b then
    for i = 1, #st.nets do
      if in_net(b, st.nets[i]) then v = true; break end
    end
  end
  if st.n >= TRUST_CACHE_MAX then st.cache, st.n = {}, 0 end
  st.cache[addr] = v
  st.n = st.n + 1
  return v
end

-- trusted_nets(cfg) → { { bytes =, bits = }, … }: cfg.trusted_proxies as
-- compiled here (engine/ingest.c matches addresses against the same list)
function M.trusted_nets(cfg)
  return state(cfg).nets
end

-- is_trusted_proxy(ctx, addr) → true when addr is in cfg.trusted_proxies
function M.is_trusted_proxy(ctx, addr)
  return trusted(state(ctx.cfg), addr)
end

-- client_ip(ctx, req) → the visitor's address. X-Forwarded-For is read only
-- when the direct peer is a trusted proxy, right to left: each hop that is
-- itself a trusted proxy is skipped, the first other one is the client.
-- A malformed hop ends the walk at the last address a trusted proxy vouched
-- for (whatever is left of it could be forged).
function M.client_ip(ctx, req)
  local peer = req.remote_addr
  local xff = req.headers["x-forwarded-for"]
  if xff == nil then return peer end
  local st = state(ctx.cfg)
  if not trusted(st, peer) then return peer end
  local hops = {}
  for h in xff:gmatch("[^,]+") do hops[#hops + 1] = h end
  local client = peer
  for i = #hops, 1, -1 do
    local a = strip(hops[i])
    if parse_ip(a) == nil then return client end
    client = a
    if not trusted(st, a) then return a end
  end
  return client
end

-- is_https(ctx, req) → true when a trusted proxy terminated https for the
-- browser (the engine itself speaks plain HTTP).
function M.is_https(ctx, req)
  local p = req.headers["x-forwarded-proto"]
  if p == nil then return false end
  p = lower(match(p, "^%s*([^,%s]*)"))
  return p == "https" and trusted(state(ctx.cfg), req.remote_addr)
end

---------------------------------------------------------------------------
-- stitching

local function present(v)
  if type(v) == "number" then
    if v ~= floor(v) or v ~= v or v > 1e15 or v < -1e15 then return nil end
    return format("%d", v)
  end
  if type(v) == "string" and find(v, "%S") then return v end
  return nil
end

local EMPTY = {}

-- linking_keys(ev) → { email =, phone =, user_id = } (those present) or nil.
-- Remembered for identify events, and for any event whose traits (or
-- context.traits) carry a linking key; never for an event without a
-- canonical_id (nothing to key it by).
function M.linking_keys(ev)
  if ev.canonical_id == nil then return nil end
  local traits = type(ev.traits) == "table" and ev.traits or EMPTY
  local ctx_traits = type(ev.context) == "table" and type(ev.context.traits) == "table"
    and ev.context.traits or EMPTY
  local email = present(traits.email) or present(ctx_traits.email)
  local phone = present(traits.phone) or present(ctx_traits.phone)
  local uid = present(ev.user_id) or present(traits.user_id) or present(traits.userId)
    or present(ctx_traits.user_id) or present(ctx_traits.userId)
  if ev.type == "identify" then
    local props = type(ev.properties) == "table" and ev.properties or EMPTY
    email = email or present(props.email)
    phone = phone or present(props.phone)
  elseif email == nil and phone == nil and traits.user_id == nil and traits.userId == nil
      and ctx_traits.user_id == nil and ctx_traits.userId == nil then
    return nil   -- a plain event: its userId alone is no identity news
  end
  if email == nil and phone == nil and uid == nil then return nil end
  return { email = email, phone = phone, user_id = uid }
end

-- stitch(ctx, pk, ev) → ev.identity (a table) | nil when nothing is known |
-- nil, err when Redis failed (the caller retries: never treat as a miss).
function M.stitch(ctx, pk, ev)
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
