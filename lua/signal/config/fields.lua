-- signal.config.fields — the engine's configuration schema: every top-level
-- key of signal.conf.lua, the pipeline and delivery records, the fields all
-- integrations share, and the checks of their values. Each integration's own
-- fields come from its destination's settings (signal.destinations), chosen
-- by its `type`. One declaration drives validation, the error text and the
-- README's config reference (tools/config-reference.lua).
local core = require "signal.core"
local schema = require "signal.config.schema"
local destinations = require "signal.destinations"
local consent = require "signal.pipeline.consent"

local type, ipairs, tonumber = type, ipairs, tonumber
local quote = schema.quote
local parse_ip = core.collect.parse_ip

local M = {}

local LOG_LEVELS = { "debug", "info", "warn", "error" }

---------------------------------------------------------------------------
-- defaults that need the machine

-- cpu_count() → number of "processor" lines in /proc/cpuinfo, or 2.
function M.cpu_count()
  local f = io.open("/proc/cpuinfo", "r")
  if not f then return 2 end
  local n = 0
  for line in f:lines() do
    if line:find("^processor%s*:") then n = n + 1 end
  end
  f:close()
  return n > 0 and n or 2
end

---------------------------------------------------------------------------
-- checks

local function listen_addr(v)
  local host, port = v:match("^%[([%x:%.]+)%]:(%d+)$")
  if not host then host, port = v:match("^([%w%.%-]+):(%d+)$") end
  if not host then
    return nil, 'must be "host:port" (e.g. "127.0.0.1:8080", "0.0.0.0:8080" or "[::1]:8080"), got ' .. quote(v)
  end
  port = tonumber(port)
  if port < 1 or port > 65535 then
    return nil, "port must be between 1 and 65535, got " .. port
  end
  return true
end

-- The redis URL may carry a password: messages never print it.
local function redis_url(v)
  local ok
  local auth, rest = v:match("^redis://([^/%s]+)(.*)$")
  if auth then
    local host = auth:match("@([^@]*)$") or auth
    ok = host:find("^[%w%.%-]+:?%d*$") or host:find("^%[[%x:]+%]:?%d*$")
    ok = ok and (rest == "" or rest:find("^/%d+$"))
  else
    -- unix:/path[?db=N] or unix://[[user]:password@]/path[?db=N]
    local path = v:match("^unix://[^/%s]*@(/.*)$") or v:match("^unix://(/.*)$") or v:match("^unix:(/.*)$")
    ok = path and (path:find("^/[^%s?]+$") or path:find("^/[^%s?]+%?db=%d+$"))
  end
  if not ok then
    return nil, 'must be "redis://[:password@]host[:port][/db]" or "unix:/path/redis.sock[?db=N]"'
      .. ' (with a password: "unix://:password@/path/redis.sock[?db=N]")'
  end
  return true
end

-- Addresses are parsed by the collector's own rule (core.collect.parse_ip,
-- which matches requests against these ranges): what validates here is
-- exactly what matches there.
local function ip_or_cidr(v)
  local addr, bits = v:match("^([^/]+)/(%d+)$")
  addr = addr or v
  local b = parse_ip(addr)
  if not b then
    return nil, 'must be an IP address or CIDR range (e.g. "10.0.0.0/8", "::1"), got ' .. quote(v)
  end
  -- "::ffff:10.0.0.0/104" is an IPv4 range written in IPv6 bits
  local max = (#b == 16 or addr:find(":", 1, true)) and 128 or 32
  if bits and tonumber(bits) > max then
    return nil, (max == 32 and "IPv4" or "IPv6") .. " prefix length must be 0-" .. max .. ", got " .. bits
  end
  return true
end

local function cookie_domain(v)
  if v:find("^%.?[%w%-]+%.?[%w%.%-]*$") and not v:find("%.%.") and not v:find("%.$") then
    return true
  end
  return nil, 'must be a domain such as "example.com" or ".example.com" (no scheme, port or path), got '
    .. quote(v)
end

local function origin(v)
  if v == "*" then
    return nil, 'must be an exact origin: "*" cannot be used because the collector answers with'
      .. " credentials (the _dfdid cookie)"
  end
  if not v:find("^[Hh][Tt][Tt][Pp][Ss]?://") then
    return nil, 'must start with http:// or https:// (e.g. "https://www.example.com"), got ' .. quote(v)
  end
  if v:find("^%a+://[^/]+/$") then
    return nil, "must not end with a slash (an origin is scheme://host[:port]), got " .. quote(v)
  end
  if v:find("^%a+://[^/]+/") or v:find("[?#]") then
    return nil, "must be an origin (scheme://host[:port]) with no path, got " .. quote(v)
  end
  if not (v:find("^%a+://[%w%.%-]+:?%d*$") or v:find("^%a+://%[[%x:]+%]:?%d*$")) then
    return nil, "must be scheme://host[:port], got " .. quote(v)
  end
  return true
end

-- the form origins are compared in (the collector's rule: lower case, no
-- default port — what browsers send)
local canonical_origin = core.collect.canonical_origin

local function name_token(v)
  if v:find("^[%w_%-]+$") then return true end
  return nil, "must use only letters, digits, '_' and '-', got " .. quote(v)
end

local function no_space(v)
  if v:find("[%s%c]") then return nil, "must not contain spaces or control characters" end
  return true
end

-- The cookie secret signs every visitor id: as hard to guess as a key.
M.COOKIE_SECRET_MIN = 32
local function strong_secret(v)
  if #v < M.COOKIE_SECRET_MIN then
    return nil, "must be at least " .. M.COOKIE_SECRET_MIN .. " characters of a random string (e.g. the output"
      .. " of `openssl rand -hex 32`), got " .. #v
  end
  return true
end

-- The admin API can read every event and replay dead letters: its token must
-- not be guessable (24 characters of a random string are ~140 bits of hex).
M.ADMIN_TOKEN_MIN = 24
local function strong_token(v)
  if #v < M.ADMIN_TOKEN_MIN then
    return nil, "must be at least " .. M.ADMIN_TOKEN_MIN .. " characters of a random string (e.g. the output"
      .. " of `openssl rand -hex 16`), got " .. #v
  end
  return true
end

---------------------------------------------------------------------------
-- schema

-- fields every integration has, before its own
local COMMON_FIELDS = {
  { name = "type", type = "string", required = true,
    description = "Destination type: " .. table.concat(destinations.types(), ", ") .. "." },
  { name = "name", type = "string", non_empty = true, checks = { name_token },
    default = function(rec) return rec.type end, default_doc = "the type",
    description = "Names the integration's delivery stream; unique within a pipeline." },
  { name = "consent_required", type = "array", csv = true,
    elements = { type = "string", one_of = consent.NAMES },
    default_doc = "the destination's rule",
    description = "Consent categories an event needs to be sent to this integration (analytics,"
      .. " marketing = advertising, functional; {} sends every event). Default: the destination's own"
      .. " rule (each destination's page says which)." },
  { name = "rate_limit", type = "number", min = 0.001,
    description = "Maximum requests per second to this destination, shared by every node (default:"
      .. " delivery.rate_limit_per_tenant, else the destination's own rate)." },
}

local integration_records = {}

local known_types = destinations.types

-- integration_schema(type) → the destination's own settings schema, or nil
function M.integration_schema(t)
  local d = destinations.get(t)
  return d and d.settings or nil
end

local function integration_record(t)
  local rec = integration_records[t]
  if rec then return rec end
  local s = M.integration_schema(t)
  if not s then return nil end
  local fields = {}
  for _, f in ipairs(COMMON_FIELDS) do fields[#fields + 1] = f end
  for _, f in ipairs(s.fields) do fields[#fields + 1] = f end
  rec = { fields = fields, entity_checks = s.entity_checks }
  integration_records[t] = rec
  return rec
end

local function select_integration(v)
  local t = v.type
  if t == nil then
    return nil, "type", "is required (known types: " .. table.concat(known_types(), ", ") .. ")"
  end
  if type(t) ~= "string" then
    return nil, "type", "must be a string, got " .. schema.type_name(t)
  end
  local rec = integration_record(t)
  if not rec then
    local known = known_types()
    local hint = schema.suggest(t, known)
    return nil, "type", "unknown integration type " .. quote(t) .. " (known: " .. table.concat(known, ", ")
      .. ")" .. (hint and (' — did you mean "' .. hint .. '"?') or "")
  end
  return rec
end

local DELIVERY = {
  -- Waits double from first_retry_ms up to max_retry_ms (signal.deliver.retry)
  -- and a payload is retried until give_up_after_ms have passed since it was
  -- accepted (or replayed): "retry over 24 h, then dead letter", with a
  -- vendor back after an outage tried again within minutes.
  { name = "attempts", type = "integer", min = 1, max = 1000,
    description = "Delivery attempts per payload before it is dead-lettered (default: no limit; the"
      .. " give_up_after_ms window decides)." },
  { name = "first_retry_ms", type = "integer", min = 1, default = 1000,
    description = "Delay before the first retry; each later wait doubles." },
  { name = "max_retry_ms", type = "integer", min = 1, default = 600000,
    description = "Longest wait between two attempts of a payload." },
  { name = "give_up_after_ms", type = "integer", min = 1000, default = 86400000,
    description = "A payload still failing this long after Signal accepted it (or it was replayed) is"
      .. " dead-lettered." },
  { name = "probe_every_ms", type = "integer", min = 100, max = 3600000, default = 10000,
    description = "While a destination is failing, one scheduled retry is tried this often, so its"
      .. " recovery is noticed and the deferred retries are pulled forward." },
  { name = "rate_limit_per_tenant", type = "number", min = 0.001,
    description = "Maximum requests per second per rate-limit key of every destination (a vendor"
      .. " tenant or account, a webhook host, …), shared by every node; an integration's rate_limit"
      .. " wins (default: each destination's own rate)." },
  { name = "timeout_ms", type = "integer", min = 1, max = 600000, default = 10000,
    description = "Timeout of each vendor request." },
  -- A process that dies leaves its stream entries pending; live consumers
  -- claim them (XAUTOCLAIM) once they have been idle this long. Long enough
  -- not to steal work from a slow but live worker.
  { name = "claim_idle_ms", type = "integer", min = 100, default = 30000,
    description = "Pending stream entries idle this long (a crashed process's) are claimed by live workers." },
}

M.schema = {
  fields = {
    { name = "listen", type = "string", default = "127.0.0.1:8080", checks = { listen_addr },
      description = "Address of the collector, identity hub and admin API." },
    { name = "workers", type = "integer", min = 1, max = 1024, default = function() return M.cpu_count() end,
      default_doc = "CPU count", description = "Worker threads." },
    { name = "redis", type = "string", default = "redis://127.0.0.1:6379/0", checks = { redis_url },
      description = "Redis URL (redis://[:password@]host[:port][/db], unix:/path/redis.sock[?db=N] or"
        .. " unix://:password@/path/redis.sock)." },
    { name = "log_level", type = "string", default = "info", one_of = LOG_LEVELS,
      description = "Minimum log level." },
    { name = "admin_token", type = "string", secret = true, non_empty = true, checks = { no_space, strong_token },
      description = "Bearer token of the admin API, at least 24 characters; unset: admin API off. Failed"
        .. " attempts are throttled per client address." },
    { name = "scripts_dir", type = "string", non_empty = true,
      description = "Directory of customer mapping scripts (hot reloaded); relative to the config file." },
    { name = "trusted_proxies", type = "array", default = {},
      elements = { type = "string", checks = { ip_or_cidr } },
      description = "IPs/CIDRs of proxies whose X-Forwarded-For is honoured." },
    { name = "cookie_domain", type = "string", non_empty = true, checks = { cookie_domain },
      description = "Domain attribute of the _dfdid cookie (default: host-only)." },
    { name = "cookie_secret", type = "string", secret = true, checks = { strong_secret },
      description = "Signs the _dfdid cookie (HMAC-SHA256), so a client cannot pick another visitor's"
        .. " id; unsigned or badly signed cookies are replaced by a new id. At least 32 characters;"
        .. " unset: the cookie is not signed." },
    { name = "cookie_secret_previous", type = "string", secret = true, checks = { strong_secret },
      description = "The former cookie_secret while rotating: cookies it signed are still accepted and"
        .. " set again signed with cookie_secret." },
    { name = "identity_hub", type = "record", default = {},
      fields = {
        { name = "org_id", type = "string", non_empty = true, checks = { name_token },
          description = "Organisation id; the identity hub (/v1/enrich) is on only when set." },
      },
      description = "Identity hub (GET /v1/enrich)." },
    { name = "delivery", type = "record", default = {}, fields = DELIVERY,
      entity_checks = {
        function(rec, report)
          if rec.first_retry_ms and rec.max_retry_ms and rec.max_retry_ms < rec.first_retry_ms then
            report("max_retry_ms", "must be at least first_retry_ms (" .. rec.first_retry_ms .. ")")
          end
        end,
      },
      description = "Delivery retries, rate limit and timeouts." },
    { name = "enrichment", type = "record", default = {},
      fields = {
        { name = "budget_ms", type = "integer", min = 1, max = 60000, default = 500,
          description = "Time budget of profile enrichment per event." },
      },
      description = "Profile enrichment." },
    { name = "dedupe_ttl_s", type = "integer", min = 0, default = 86400,
      description = "How long a messageId is at least remembered for de-duplication: ids are kept in"
        .. " windows of this length, the current and the previous one, so for up to twice as long (0: off)." },
    { name = "live_events_max", type = "integer", min = 0, default = 1000,
      description = "Recent events kept per pipeline for the live view." },
    { name = "live_events_max_bytes", type = "integer", min = 1024, default = 64 * 1024 * 1024,
      description = "Bytes the live view's recent events may take per pipeline; when Redis has a"
        .. " maxmemory, at most 5% of it. The oldest events go first." },
    { name = "pipelines", type = "array", required = true, unique = "key",
      elements = { type = "record", fields = {
        { name = "key", type = "string", required = true, non_empty = true, checks = { name_token },
          description = "Pipeline key (e.g. dk_live_demo)." },
        { name = "origins", type = "array", default = {},
          elements = { type = "string", checks = { origin }, transform = canonical_origin },
          description = "Browser origins allowed by CORS (scheme://host[:port])." },
        { name = "integrations", type = "array", default = {}, unique = "name",
          elements = { type = "record", select = select_integration },
          description = "Destinations of this pipeline's events." },
      } },
      description = "Pipelines: a key, allowed origins and integrations." },
  },
  entity_checks = {
    function(cfg, report)
      if cfg.cookie_secret_previous and not cfg.cookie_secret then
        report("cookie_secret_previous", "is set without cookie_secret (the secret cookies are signed with now)")
      end
    end,
  },
}

return M
