-- signal.collect.visitor — who the visitor is (docs/collector.md): the
-- _dfdid cookie (canonical_id) and the client address behind trusted
-- proxies, for the Lua routes that need them (the identity hub, the SDK
-- routes, the admin API's throttle).
--
--   visitor.canonical_id(ctx, req[, mint]) → id, set_cookie_header | nil
--       the _dfdid cookie's visitor id; when absent (and mint ~= false) a
--       new "dfid_<32 hex>" id and the Set-Cookie header that plants it
--       (signed when cookie_secret is set)
--   visitor.read_cookie(ctx, req)         → id | nil   (never mints; with
--                                           cookie_secret, only a signed id)
--   visitor.client_ip(ctx, req)           → address (X-Forwarded-For honoured
--                                           only from cfg.trusted_proxies)
--   visitor.is_https(ctx, req)            → true when a trusted proxy says
--                                           the browser used https
--   visitor.is_trusted_proxy(ctx, addr)   → true when addr is a trusted proxy
--   visitor.parse_ip(s)                   → 4 or 16 bytes | nil
--
-- The rules are the collector's, in C (engine/collect/visitor.c), reached
-- through core.collect; this module adapts them to request tables.

local core = require "signal.core"

local C = core.collect

local M = {}

M.COOKIE = "_dfdid"

-- Per cfg: its trusted proxies, compiled once (a reload brings a new cfg).
local proxies = setmetatable({}, { __mode = "k" })

local function proxies_of(cfg)
  local p = proxies[cfg]
  if not p then
    p = C.proxies(cfg.trusted_proxies or {})
    proxies[cfg] = p
  end
  return p
end

-- Per cfg: the secrets that sign the cookie, current first (nil: unsigned).
local secrets = setmetatable({}, { __mode = "k" })

local function secrets_of(cfg)
  if not cfg.cookie_secret then return nil end
  local s = secrets[cfg]
  if not s then
    s = { cfg.cookie_secret, cfg.cookie_secret_previous }
    secrets[cfg] = s
  end
  return s
end

-- read_cookie(ctx, req) → the _dfdid visitor id, or nil
function M.read_cookie(ctx, req)
  return (C.read_cookie(req.headers.cookie, secrets_of(ctx.cfg)))
end

-- canonical_id(ctx, req[, mint]) → id, set_cookie_header | nil. With
-- mint == false an absent cookie gives nil (a visitor without the cookie is
-- simply unknown to the identity hub).
function M.canonical_id(ctx, req, mint)
  local keys = secrets_of(ctx.cfg)
  local id, resign = C.read_cookie(req.headers.cookie, keys)
  if (id ~= nil and not resign) or (id == nil and mint == false) then return id, nil end
  id = id or C.visitor_id()
  return id, C.set_cookie(id, M.is_https(ctx, req), ctx.cfg.cookie_domain, keys)
end

M.parse_ip = C.parse_ip

function M.is_trusted_proxy(ctx, addr)
  return proxies_of(ctx.cfg):trusts(addr)
end

function M.client_ip(ctx, req)
  return proxies_of(ctx.cfg):client_ip(req.remote_addr, req.headers["x-forwarded-for"])
end

function M.is_https(ctx, req)
  return proxies_of(ctx.cfg):is_https(req.remote_addr, req.headers["x-forwarded-proto"])
end

return M
