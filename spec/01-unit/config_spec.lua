-- spec/01-unit/config_spec.lua — signal.config, signal.config.schema, the Amperity
-- integration schema and `signal check`: loading, defaults, every field rule
-- (exact field path + key phrase of the message) and that no secret value
-- ever appears in an error.

local config = require "signal.config"
local check = require "signal.dev.check"
local schema = require "signal.config.schema"
local retry = require "signal.deliver.retry"
local amperity_schema = require "signal.destinations.amperity.settings"

local FIXTURES = "spec/fixtures/configs/"
local FILE = "signal.conf.lua"

local INGEST_KEY = "eyJhbGciOiJIUzI1NiJ9.eyJzY29wZSI6InNwZWMtaW5nZXN0In0.c3BlYy1pbmdlc3Qtc2lnbmF0dXJl"
local PROFILE_KEY = "eyJhbGciOiJIUzI1NiJ9.eyJzY29wZSI6InNwZWMtcHJvZmlsZSJ9.c3BlYy1wcm9maWxlLXNpZ25hdHVyZQ"
local ADMIN_TOKEN = "spec-admin-token-7f3a9c5e1b" -- not JWT-shaped: only scrubbing hides it
local REDIS_PASSWORD = "spec-redis-pass-91b2"

local SECRETS = { INGEST_KEY, PROFILE_KEY, ADMIN_TOKEN, REDIS_PASSWORD,
                  "c3BlYy1pbmdlc3Qtc2lnbmF0dXJl", "c3BlYy1wcm9maWxlLXNpZ25hdHVyZQ" }

local function amperity(over)
  local i = {
    type = "amperity", tenant_subdomain = "acme", tenant_id = "acme",
    api_key = INGEST_KEY, event_stream_id = "esm-2VP6va3Zn", source_value = "DATAFLY",
    profile_api_key = PROFILE_KEY, profile_collection_id = "apc-vPsQheAm",
  }
  for k, v in pairs(over or {}) do
    if v == "<nil>" then i[k] = nil else i[k] = v end
  end
  return i
end

-- a valid raw config; `over` patches top-level fields, `integration` the
-- first pipeline's single integration
local function raw(over, integration)
  local r = {
    admin_token = ADMIN_TOKEN,
    redis = "redis://:" .. REDIS_PASSWORD .. "@127.0.0.1:6379/0",
    pipelines = { {
      key = "dk_test_spec", origins = { "https://www.example.com" },
      integrations = { amperity(integration) },
    } },
  }
  for k, v in pairs(over or {}) do
    if v == "<nil>" then r[k] = nil else r[k] = v end
  end
  return r
end

local function assert_no_secret(lines)
  for _, line in ipairs(lines) do
    for _, s in ipairs(SECRETS) do
      assert(not line:find(s, 1, true), "secret leaked in error: " .. line)
    end
  end
end

local function errors_of(r)
  local cfg, errs = config.validate(r, FILE)
  if cfg then assert.is_nil(errs) end
  return errs or {}
end

-- exactly one error, at `path`, containing `phrase`; returns its message
local function expect_error(r, path, phrase)
  local errs = errors_of(r)
  assert_no_secret(errs)
  local prefix = FILE .. ": " .. path .. ": "
  assert(#errs == 1, "expected exactly one error at " .. path .. ", got:\n" .. table.concat(errs, "\n"))
  local e = errs[1]
  assert(e:sub(1, #prefix) == prefix, "expected path " .. path .. ", got: " .. e)
  assert(e:find(phrase, 1, true), "expected '" .. phrase .. "' in: " .. e)
  return e:sub(#prefix + 1)
end

local function valid(r)
  local cfg, errs = config.validate(r, FILE)
  assert(cfg, "expected a valid config, got:\n" .. table.concat(errs or {}, "\n"))
  return cfg
end

local function cpuinfo_processors()
  local n = 0
  for line in io.lines("/proc/cpuinfo") do
    if line:find("^processor%s*:") then n = n + 1 end
  end
  return n
end

describe("config.load", function()
  it("loads the demo config and normalizes the Amperity settings", function()
    local cfg, errs = config.load("examples/signal.conf.lua")
    assert.is_nil(errs)
    assert.equal("127.0.0.1:8080", cfg.listen)
    local p = cfg.pipelines[1]
    assert.equal("dk_live_demo", p.key)
    assert.same({ "http://127.0.0.1:8000", "http://localhost:8000", "http://127.0.0.1:8080", "http://localhost:8080" }, p.origins)
    local a = p.integrations[1]
    assert.equal("amperity", a.name)
    assert.equal("retail", a.preset)
    assert.equal("http://127.0.0.1:8091", a.base_url)
    assert.equal("esm-demo", a.event_stream_id)
    assert.equal("apc-demo", a.profile_collection_id)
    assert.same({ { source = "email", key = "email_sha256", hash = "sha256" },
                  { source = "canonical_id", key = "_dfdid" } }, a.linking_keys)
    assert.same({ "Persona", "FavoriteBrand", "LifetimeTier" }, a.browser_attribute_allowlist)
    assert.is_truthy(cfg.identity_hub.org_id)
  end)

  it("fills every default for a minimal config", function()
    local cfg, errs = config.load(FIXTURES .. "minimal.conf.lua")
    assert.is_nil(errs)
    assert.equal("127.0.0.1:8080", cfg.listen)
    assert.equal("redis://127.0.0.1:6379/0", cfg.redis)
    assert.equal("info", cfg.log_level)
    assert.is_nil(cfg.scripts_dir)
    assert.is_nil(cfg.cookie_domain)
    assert.is_nil(cfg.admin_token)
    assert.same({}, cfg.trusted_proxies)
    assert.same({ first_retry_ms = 1000, max_retry_ms = 600000, give_up_after_ms = 86400000,
                  probe_every_ms = 10000, timeout_ms = 10000, claim_idle_ms = 30000 }, cfg.delivery)
    assert.same({ budget_ms = 500 }, cfg.enrichment)
    assert.equal(86400, cfg.dedupe_ttl_s)
    assert.equal(1000, cfg.live_events_max)
    assert.same({}, cfg.identity_hub)
    assert.same({ { key = "dk_test_minimal", origins = {}, integrations = {} } }, cfg.pipelines)
  end)

  it("defaults workers to the number of processors in /proc/cpuinfo", function()
    local cfg = config.load(FIXTURES .. "minimal.conf.lua")
    local expected = cpuinfo_processors()
    if expected == 0 then expected = 2 end
    assert.equal(expected, cfg.workers)
  end)

  it("keeps every explicitly configured value", function()
    local cfg, errs = config.load(FIXTURES .. "valid.conf.lua")
    assert.is_nil(errs)
    assert.equal("0.0.0.0:8080", cfg.listen)
    assert.equal(4, cfg.workers)
    assert.equal("debug", cfg.log_level)
    assert.same({ "10.0.0.0/8", "127.0.0.1", "::1", "fd00::/8" }, cfg.trusted_proxies)
    assert.equal(".example.com", cfg.cookie_domain)
    assert.same({ attempts = 5, first_retry_ms = 500, max_retry_ms = 3600000, give_up_after_ms = 86400000,
                  probe_every_ms = 10000, rate_limit_per_tenant = 250, timeout_ms = 5000,
                  claim_idle_ms = 30000 }, cfg.delivery)
    assert.equal(300, cfg.enrichment.budget_ms)
    local a = cfg.pipelines[1].integrations[1]
    assert.equal("amperity_eu", a.name)
    assert.equal("travel", a.preset)
    assert.equal("https://acme.amperity.com", a.base_url)
    assert.is_true(a.enable_context_personalization)
    assert.same({ { source = "properties.category", target = "pageCategory" },
                  { source = "context.page.path", target = "pagePath" },
                  { source = "partner_attrs.amperity.LifetimeTier", target = "tierHint" } },
                a.personalization_context_mappings)
    assert.same({ "Persona", "FavoriteBrand", "LifetimeTier" }, a.browser_attribute_allowlist)
    assert.same({}, cfg.pipelines[2].integrations)
  end)

  it("gives the config file os.getenv", function()
    local cfg = config.load(FIXTURES .. "valid.conf.lua")
    assert.equal("org-from-env", cfg.identity_hub.org_id)
  end)

  it("resolves a relative scripts_dir against the config file's directory", function()
    local cfg = config.load(FIXTURES .. "valid.conf.lua")
    assert.equal(FIXTURES .. "scripts", cfg.scripts_dir)
  end)

  it("reports a syntax error as file:line: message", function()
    local cfg, errs = config.load(FIXTURES .. "syntax_error.conf.lua")
    assert.is_nil(cfg)
    assert.equal(1, #errs)
    assert.matches("^spec/fixtures/configs/syntax_error%.conf%.lua:6: '}' expected", errs[1])
  end)

  it("does not echo a secret string literal in a syntax error", function()
    local _, errs = config.load(FIXTURES .. "syntax_error_secret.conf.lua")
    assert.equal(1, #errs)
    assert.matches("^spec/fixtures/configs/syntax_error_secret%.conf%.lua:5: ", errs[1])
    assert.is_nil(errs[1]:find("eyJ", 1, true))
    assert.is_nil(errs[1]:find("bGVha2VkLXNlY3JldA", 1, true))
  end)

  it("reports a runtime error as file:line: message", function()
    local cfg, errs = config.load(FIXTURES .. "runtime_error.conf.lua")
    assert.is_nil(cfg)
    assert.same({ "spec/fixtures/configs/runtime_error.conf.lua:3: attempt to concatenate a nil value" }, errs)
  end)

  it("runs the config file without io", function()
    local _, errs = config.load(FIXTURES .. "sandbox_io.conf.lua")
    assert.equal(1, #errs)
    assert.matches("^spec/fixtures/configs/sandbox_io%.conf%.lua:2: attempt to index global 'io'", errs[1])
  end)

  it("refuses a file that does not return a table", function()
    local _, errs = config.load(FIXTURES .. "not_a_table.conf.lua")
    assert.equal(1, #errs)
    assert.matches("^spec/fixtures/configs/not_a_table%.conf%.lua: must return a table", errs[1])
  end)

  it("reports a missing file", function()
    local _, errs = config.load(FIXTURES .. "no_such.conf.lua")
    assert.same({ "spec/fixtures/configs/no_such.conf.lua: cannot read config: No such file or directory" }, errs)
  end)

  it("reports every problem of a file at once, each with its field path", function()
    local _, errs = config.load(FIXTURES .. "invalid_many.conf.lua")
    local F = "spec/fixtures/configs/invalid_many.conf.lua: "
    local expected = {
      F .. 'listn: unknown field (did you mean "listen"?)',
      F .. "workers: must be between 1 and 1024",
      F .. "delivery.attempts: must be an integer",
      F .. "pipelines[1].origins[1]: must not end with a slash",
      F .. 'pipelines[1].integrations[1].tenant_subdomain: must be just the tenant subdomain',
      F .. 'pipelines[1].integrations[1].event_stream_id: must start with "esm-"',
      F .. "pipelines[1].integrations[1].linking_keys[1].hash: must be one of sha256",
    }
    assert.equal(#expected, #errs)
    for i, prefix in ipairs(expected) do
      assert.equal(prefix, errs[i]:sub(1, #prefix))
    end
    assert.is_nil(table.concat(errs, "\n"):find("bWFueS1zZWNyZXQ", 1, true))
  end)
end)

describe("config retry schedule", function()
  it("doubles the wait from the first retry and caps it at 10 minutes by default", function()
    local cfg = valid(raw())
    local delays = retry.delays(cfg.delivery)
    assert.same({ 1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000, 512000, 600000 }, delays)
    -- later attempts wait the cap, never longer
    assert.equal(600000, retry.delay_ms(retry.policy(cfg.delivery), 40, nil, 0))
  end)

  it("gives up 24 hours after the payload was accepted, not after a number of attempts", function()
    local policy = retry.policy(valid(raw()).delivery)
    local accepted = 1700000000000
    assert.is_nil(retry.exhausted(policy, 150, accepted, accepted + 23 * 3600 * 1000))
    assert.equal("window", retry.exhausted(policy, 150, accepted, accepted + 24 * 3600 * 1000))
  end)

  it("gives up after `attempts` tries when that is configured", function()
    local policy = retry.policy({ attempts = 3, first_retry_ms = 1000, max_retry_ms = 9000 })
    assert.is_nil(retry.exhausted(policy, 2, 0, 1))
    assert.equal("attempts", retry.exhausted(policy, 3, 0, 1))
  end)

  it("has a single delay for two attempts and none for one", function()
    assert.same({ 1000 }, retry.delays({ attempts = 2, first_retry_ms = 1000, max_retry_ms = 9000 }))
    assert.same({}, retry.delays({ attempts = 1, first_retry_ms = 1000, max_retry_ms = 9000 }))
  end)

  it("waits at least as long as the vendor's Retry-After asks", function()
    local policy = retry.policy({ first_retry_ms = 1000, max_retry_ms = 9000 })
    assert.equal(30000, retry.delay_ms(policy, 1, 30, 0))
    assert.equal(1000, retry.delay_ms(policy, 1, 0.5, 0))
  end)
end)

describe("config top-level fields", function()
  it("accepts the valid base config", function()
    valid(raw())
  end)

  it("rejects an unknown key with a did-you-mean", function()
    local r = raw()
    r.listne = "127.0.0.1:8080"
    expect_error(r, "listne", 'unknown field (did you mean "listen"?)')
  end)

  it("rejects an unknown key far from any field without a suggestion", function()
    local r = raw()
    r.frobnicate = true
    local msg = expect_error(r, "frobnicate", "unknown field")
    assert.is_nil(msg:find("did you mean", 1, true))
  end)

  it("rejects a listen address without a port", function()
    expect_error(raw({ listen = "127.0.0.1" }), "listen", 'must be "host:port"')
  end)

  it("rejects a listen port out of range", function()
    expect_error(raw({ listen = "127.0.0.1:70000" }), "listen", "port must be between 1 and 65535")
  end)

  it("accepts an IPv6 listen address", function()
    assert.equal("[::1]:8080", valid(raw({ listen = "[::1]:8080" })).listen)
  end)

  it("rejects zero workers", function()
    expect_error(raw({ workers = 0 }), "workers", "must be between 1 and 1024")
  end)

  it("rejects fractional workers", function()
    expect_error(raw({ workers = 1.5 }), "workers", "must be a whole number")
  end)

  it("rejects a redis URL of another scheme without printing its password", function()
    expect_error(raw({ redis = "http://:" .. REDIS_PASSWORD .. "@127.0.0.1:6379" }), "redis",
      'must be "redis://[:password@]host[:port][/db]"')
  end)

  it("accepts a unix socket redis address", function()
    valid(raw({ redis = "unix:/var/run/redis.sock?db=2" }))
  end)

  it("rejects an unknown log level", function()
    expect_error(raw({ log_level = "verbose" }), "log_level", "must be one of debug, info, warn, error")
  end)

  it("rejects an admin token containing spaces without printing it", function()
    expect_error(raw({ admin_token = ADMIN_TOKEN .. " x" }), "admin_token", "must not contain spaces")
    expect_error(raw({ admin_token = "short-admin-token-23chr" }), "admin_token",
      "must be at least 24 characters of a random string")
  end)

  it("rejects an empty scripts_dir", function()
    expect_error(raw({ scripts_dir = "" }), "scripts_dir", "must not be empty")
  end)

  it("rejects a trusted proxy that is not an IP or CIDR", function()
    expect_error(raw({ trusted_proxies = { "10.0.0.1", "proxy.internal" } }), "trusted_proxies[2]",
      "must be an IP address or CIDR range")
  end)

  it("rejects an IPv4 prefix longer than 32", function()
    expect_error(raw({ trusted_proxies = { "10.0.0.0/33" } }), "trusted_proxies[1]", "prefix length must be 0-32")
  end)

  it("rejects an IPv6 address with two '::'", function()
    expect_error(raw({ trusted_proxies = { "fd00::1::2" } }), "trusted_proxies[1]", "must be an IP address")
  end)

  it("rejects a cookie domain given as a URL", function()
    expect_error(raw({ cookie_domain = "https://example.com" }), "cookie_domain", 'must be a domain such as')
  end)

  it("rejects an empty identity hub org id", function()
    expect_error(raw({ identity_hub = { org_id = "" } }), "identity_hub.org_id", "must not be empty")
  end)

  it("rejects an unknown key inside delivery", function()
    expect_error(raw({ delivery = { retries = 3 } }), "delivery.retries", "unknown field")
  end)

  it("fills delivery defaults around a partial delivery table", function()
    local cfg = valid(raw({ delivery = { attempts = 3 } }))
    assert.same({ attempts = 3, first_retry_ms = 1000, max_retry_ms = 600000, give_up_after_ms = 86400000,
                  probe_every_ms = 10000, timeout_ms = 10000, claim_idle_ms = 30000 }, cfg.delivery)
  end)

  it("rejects a max retry delay below the first one", function()
    expect_error(raw({ delivery = { first_retry_ms = 5000, max_retry_ms = 100 } }), "delivery.max_retry_ms",
      "must be at least first_retry_ms (5000)")
  end)

  it("rejects a non-integer enrichment budget", function()
    expect_error(raw({ enrichment = { budget_ms = "500" } }), "enrichment.budget_ms", "must be an integer, got a string")
  end)

  it("rejects a negative dedupe ttl", function()
    expect_error(raw({ dedupe_ttl_s = -1 }), "dedupe_ttl_s", "must be at least 0")
  end)

  it("rejects a non-number live_events_max", function()
    expect_error(raw({ live_events_max = true }), "live_events_max", "must be an integer, got a boolean")
  end)

  it("requires pipelines", function()
    expect_error(raw({ pipelines = "<nil>" }), "pipelines", "is required")
  end)

  it("rejects pipelines given as one table instead of a list", function()
    expect_error(raw({ pipelines = { key = "dk_test" } }), "pipelines", "must be a list")
  end)
end)

describe("config pipelines", function()
  it("requires a pipeline key", function()
    local r = raw()
    r.pipelines[1].key = nil
    expect_error(r, "pipelines[1].key", "is required")
  end)

  it("rejects a pipeline key with spaces", function()
    local r = raw()
    r.pipelines[1].key = "dk live"
    expect_error(r, "pipelines[1].key", "must use only letters, digits, '_' and '-'")
  end)

  it("rejects a duplicate pipeline key at the second occurrence", function()
    local r = raw()
    r.pipelines[2] = { key = "dk_test_spec" }
    expect_error(r, "pipelines[2].key", 'duplicate key "dk_test_spec" (also pipelines[1])')
  end)

  it("rejects an origin with a trailing slash", function()
    local r = raw()
    r.pipelines[1].origins = { "https://www.example.com/" }
    expect_error(r, "pipelines[1].origins[1]", "must not end with a slash")
  end)

  it("rejects an origin with a path", function()
    local r = raw()
    r.pipelines[1].origins = { "https://www.example.com", "https://shop.example.com/cart" }
    expect_error(r, "pipelines[1].origins[2]", "with no path")
  end)

  it("rejects the wildcard origin", function()
    local r = raw()
    r.pipelines[1].origins = { "*" }
    expect_error(r, "pipelines[1].origins[1]", "must be an exact origin")
  end)

  it("rejects an origin without a scheme", function()
    local r = raw()
    r.pipelines[1].origins = { "www.example.com" }
    expect_error(r, "pipelines[1].origins[1]", "must start with http:// or https://")
  end)

  it("stores origins as browsers send them: lower-case, without the default port", function()
    local r = raw()
    r.pipelines[1].origins = { "HTTPS://WWW.Example.com:443", "http://localhost:80", "http://localhost:8080" }
    assert.same({ "https://www.example.com", "http://localhost", "http://localhost:8080" },
                valid(r).pipelines[1].origins)
  end)

  it("requires an integration type and lists the known ones", function()
    expect_error(raw(nil, { type = "<nil>" }), "pipelines[1].integrations[1].type", "is required (known types: amperity, ga4, meta_capi, webhook)")
  end)

  it("rejects an unknown integration type with a did-you-mean", function()
    local msg = expect_error(raw(nil, { type = "amperty" }), "pipelines[1].integrations[1].type",
      'unknown integration type "amperty" (known: amperity, ga4, meta_capi, webhook)')
    assert.truthy(msg:find('did you mean "amperity"', 1, true))
  end)

  it("names an integration after its type by default", function()
    assert.equal("amperity", valid(raw()).pipelines[1].integrations[1].name)
  end)

  it("rejects two integrations with the same name in one pipeline", function()
    local r = raw()
    r.pipelines[1].integrations[2] = amperity({ event_stream_id = "esm-second" })
    expect_error(r, "pipelines[1].integrations[2].name", 'duplicate name "amperity" (also pipelines[1].integrations[1])')
  end)

  it("accepts two integrations of one type with distinct names", function()
    local r = raw()
    r.pipelines[1].integrations[2] = amperity({ name = "amperity_eu", event_stream_id = "esm-second" })
    local cfg = valid(r)
    assert.equal("amperity_eu", cfg.pipelines[1].integrations[2].name)
  end)

  it("rejects an integration name that cannot name a stream", function()
    expect_error(raw(nil, { name = "amperity eu" }), "pipelines[1].integrations[1].name",
      "must use only letters, digits, '_' and '-'")
  end)
end)

describe("amperity settings", function()
  local P = "pipelines[1].integrations[1]."

  it("rejects a tenant_subdomain given as a dashboard URL and names the subdomain", function()
    expect_error(raw(nil, { tenant_subdomain = "https://acme.amperity.com" }), P .. "tenant_subdomain",
      'use just "acme", the subdomain of your Amperity dashboard URL')
  end)

  it("rejects a tenant_subdomain given as a host name and names the subdomain", function()
    expect_error(raw(nil, { tenant_subdomain = "acme.amperity.com" }), P .. "tenant_subdomain", 'use just "acme"')
  end)

  it("explains that app.amperity.com is the login host, not a tenant", function()
    expect_error(raw(nil, { tenant_subdomain = "https://app.amperity.com" }), P .. "tenant_subdomain",
      "login host")
  end)

  it("rejects a tenant_subdomain that is not a DNS label", function()
    expect_error(raw(nil, { tenant_subdomain = "acme_corp" }), P .. "tenant_subdomain", "must be a DNS label")
  end)

  it("requires tenant_id", function()
    expect_error(raw(nil, { tenant_id = "<nil>" }), P .. "tenant_id", "is required")
  end)

  it("rejects a tenant_id with a line break (it is a header value)", function()
    expect_error(raw(nil, { tenant_id = "acme\r\nX-Evil: 1" }), P .. "tenant_id", "must not contain control characters")
  end)

  it("requires api_key and hints at an unset environment variable", function()
    expect_error(raw(nil, { api_key = "<nil>" }), P .. "api_key", "is required (if it comes from os.getenv, is the variable set?)")
  end)

  it("rejects an api_key with the Bearer prefix without printing it", function()
    expect_error(raw(nil, { api_key = "Bearer " .. INGEST_KEY }), P .. "api_key", 'without the "Bearer " prefix')
  end)

  it("rejects an api_key of the wrong type without printing anything of it", function()
    expect_error(raw(nil, { api_key = { INGEST_KEY } }), P .. "api_key", "must be a string, got a list")
  end)

  it("rejects an is- batch ingest stream id and explains why", function()
    local msg = expect_error(raw(nil, { event_stream_id = "is-2VP6va3Zn" }), P .. "event_stream_id",
      'must start with "esm-"')
    assert.truthy(msg:find("batch ingest path", 1, true))
    assert.truthy(msg:find("does not drive realtime profile aggregation", 1, true))
    assert.truthy(msg:find("Signal only supports the realtime esm- path", 1, true))
  end)

  it("rejects a stream id without the esm- prefix", function()
    expect_error(raw(nil, { event_stream_id = "2VP6va3Zn" }), P .. "event_stream_id",
      'must start with "esm-" (the realtime Event Stream ID')
  end)

  it("rejects a stream id with characters that cannot go in a URL path", function()
    expect_error(raw(nil, { event_stream_id = "esm-2VP6/../x" }), P .. "event_stream_id",
      'must be "esm-" followed by letters and digits')
  end)

  it("requires a non-empty source_value", function()
    expect_error(raw(nil, { source_value = "" }), P .. "source_value", "must not be empty")
  end)

  it("rejects a source_value with surrounding whitespace (matching is exact)", function()
    expect_error(raw(nil, { source_value = "DATAFLY " }), P .. "source_value", "leading or trailing whitespace")
  end)

  it("keeps source_value's case", function()
    assert.equal("Datafly", valid(raw(nil, { source_value = "Datafly" })).pipelines[1].integrations[1].source_value)
  end)

  it("requires profile_collection_id when profile_api_key is set", function()
    expect_error(raw(nil, { profile_collection_id = "<nil>" }), P .. "profile_collection_id",
      "is required when profile_api_key is set")
  end)

  it("does not require profile settings when profile_api_key is unset", function()
    local a = valid(raw(nil, { profile_api_key = "<nil>", profile_collection_id = "<nil>" })).pipelines[1].integrations[1]
    assert.is_nil(a.profile_api_key)
  end)

  it("rejects a profile_collection_id without the apc- prefix", function()
    expect_error(raw(nil, { profile_collection_id = "vPsQheAm" }), P .. "profile_collection_id",
      'must start with "apc-"')
  end)

  it("rejects a Profile API key equal to the Streaming Ingest key", function()
    local msg = expect_error(raw(nil, { profile_api_key = INGEST_KEY }), P .. "profile_api_key",
      "must differ from api_key")
    assert.truthy(msg:find("Amperity rejects cross-scope usage with 403", 1, true))
    assert.truthy(msg:find("separate Profile Read Access JWT", 1, true))
  end)

  it("accepts linking keys as a JSON string", function()
    local a = valid(raw(nil, { linking_keys =
      '[{"source":"email","key":"email_sha256","hash":"sha256"},{"source":"canonical_id","key":"_dfdid"}]' }))
      .pipelines[1].integrations[1]
    assert.same({ { source = "email", key = "email_sha256", hash = "sha256" },
                  { source = "canonical_id", key = "_dfdid" } }, a.linking_keys)
  end)

  it("accepts linking keys as a Lua table", function()
    local keys = { { source = "user_id", key = "customer_id" }, { source = "phone", key = "phone_sha256", hash = "sha256" } }
    assert.same(keys, valid(raw(nil, { linking_keys = keys })).pipelines[1].integrations[1].linking_keys)
  end)

  it("defaults linking keys to an empty list", function()
    assert.same({}, valid(raw()).pipelines[1].integrations[1].linking_keys)
  end)

  it("reports invalid linking keys JSON with the JSON error", function()
    local msg = expect_error(raw(nil, { linking_keys = '[{"source":"email",}]' }), P .. "linking_keys", "invalid JSON: ")
    assert.truthy(msg:find("character", 1, true))
  end)

  it("rejects linking keys that are one object instead of an array", function()
    expect_error(raw(nil, { linking_keys = '{"source":"email","key":"email_sha256"}' }), P .. "linking_keys",
      'must be a list (JSON array) of {"source", "key", "hash"} objects')
  end)

  it("rejects a linking key source outside the five known ones", function()
    expect_error(raw(nil, { linking_keys = { { source = "cookie", key = "_dfdid" } } }), P .. "linking_keys[1].source",
      "must be one of canonical_id, anonymous_id, user_id, email, phone")
  end)

  it("requires a linking key's key", function()
    expect_error(raw(nil, { linking_keys = { { source = "email" } } }), P .. "linking_keys[1].key", "is required")
  end)

  it("rejects an empty linking key's key", function()
    expect_error(raw(nil, { linking_keys = { { source = "email", key = "" } } }), P .. "linking_keys[1].key",
      "must not be empty")
  end)

  it("rejects a linking key hash other than sha256", function()
    expect_error(raw(nil, { linking_keys = { { source = "email", key = "email_md5", hash = "md5" } } }),
      P .. "linking_keys[1].hash", "must be one of sha256")
  end)

  it("rejects an unknown field in a linking key entry", function()
    expect_error(raw(nil, { linking_keys = '[{"source":"email","key":"k","salt":"x"}]' }),
      P .. "linking_keys[1].salt", "unknown field")
  end)

  it("accepts the browser allowlist as CSV, trimmed, empties dropped", function()
    local a = valid(raw(nil, { browser_attribute_allowlist = " Persona, ,FavoriteBrand ,LifetimeTier," }))
      .pipelines[1].integrations[1]
    assert.same({ "Persona", "FavoriteBrand", "LifetimeTier" }, a.browser_attribute_allowlist)
  end)

  it("accepts the browser allowlist as a list", function()
    local a = valid(raw(nil, { browser_attribute_allowlist = { "Persona", " LifetimeTier " } })).pipelines[1].integrations[1]
    assert.same({ "Persona", "LifetimeTier" }, a.browser_attribute_allowlist)
  end)

  it("defaults the browser allowlist to nothing exposed", function()
    assert.same({}, valid(raw()).pipelines[1].integrations[1].browser_attribute_allowlist)
  end)

  it("rejects a non-string allowlist entry", function()
    expect_error(raw(nil, { browser_attribute_allowlist = { "Persona", 42 } }), P .. "browser_attribute_allowlist[2]",
      "must be a string, got a number")
  end)

  it("defaults context personalization to off", function()
    assert.is_false(valid(raw()).pipelines[1].integrations[1].enable_context_personalization)
  end)

  it("rejects a non-boolean enable_context_personalization", function()
    expect_error(raw(nil, { enable_context_personalization = "yes" }), P .. "enable_context_personalization",
      "must be true or false")
  end)

  it("refuses context personalization without Profile API access", function()
    expect_error(raw(nil, { enable_context_personalization = true, profile_api_key = "<nil>",
                            profile_collection_id = "<nil>" }),
      P .. "enable_context_personalization", "needs profile_api_key and profile_collection_id")
  end)

  it("accepts personalization context mappings as a JSON string", function()
    local a = valid(raw(nil, { enable_context_personalization = true, personalization_context_mappings =
      '[{"source":"properties.value","target":"cartValue"},{"source":"event","target":"eventName"}]' }))
      .pipelines[1].integrations[1]
    assert.same({ { source = "properties.value", target = "cartValue" }, { source = "event", target = "eventName" } },
                a.personalization_context_mappings)
  end)

  it("rejects a personalization source outside the event paths", function()
    expect_error(raw(nil, { personalization_context_mappings = { { source = "page.path", target = "pagePath" } } }),
      P .. "personalization_context_mappings[1].source", "must be a path starting with context., properties., traits.")
  end)

  it("rejects a personalization source with an empty path segment", function()
    expect_error(raw(nil, { personalization_context_mappings = { { source = "context..page", target = "x" } } }),
      P .. "personalization_context_mappings[1].source", "must be a path starting with")
  end)

  it("rejects a personalization target that is not URL-safe", function()
    expect_error(raw(nil, { personalization_context_mappings = { { source = "properties.category", target = "page category" } } }),
      P .. "personalization_context_mappings[1].target", "must use only letters, digits, '_', '.' and '-'")
  end)

  it("rejects an empty personalization target", function()
    expect_error(raw(nil, { personalization_context_mappings = { { source = "properties.category", target = "" } } }),
      P .. "personalization_context_mappings[1].target", "must not be empty")
  end)

  it("rejects two personalization mappings with the same target", function()
    expect_error(raw(nil, { personalization_context_mappings = {
        { source = "properties.category", target = "cat" }, { source = "context.page.path", target = "cat" } } }),
      P .. "personalization_context_mappings[2].target", 'duplicate target "cat"')
  end)

  it("reports invalid personalization mappings JSON", function()
    expect_error(raw(nil, { personalization_context_mappings = "[{source: 1}]" }),
      P .. "personalization_context_mappings", "invalid JSON: ")
  end)

  it("defaults the preset to retail", function()
    assert.equal("retail", valid(raw()).pipelines[1].integrations[1].preset)
  end)

  it("accepts each of the seven vertical presets", function()
    for _, preset in ipairs({ "retail", "travel", "finance", "b2b_saas", "media", "gaming", "publishing" }) do
      assert.equal(preset, valid(raw(nil, { preset = preset })).pipelines[1].integrations[1].preset)
    end
  end)

  it("rejects an unknown preset with a did-you-mean", function()
    local msg = expect_error(raw(nil, { preset = "retial" }), P .. "preset",
      "must be one of retail, travel, finance, b2b_saas, media, gaming, publishing")
    assert.truthy(msg:find('did you mean "retail"', 1, true))
  end)

  it("defaults base_url to the tenant's amperity.com host", function()
    assert.equal("https://acme.amperity.com", valid(raw()).pipelines[1].integrations[1].base_url)
  end)

  it("rejects a base_url with a trailing slash", function()
    expect_error(raw(nil, { base_url = "http://127.0.0.1:8091/" }), P .. "base_url", "must not end with a slash")
  end)

  it("rejects a base_url that is not http(s)", function()
    expect_error(raw(nil, { base_url = "ftp://127.0.0.1" }), P .. "base_url", "must be an http:// or https:// URL")
  end)

  it("rejects a non-positive timeout", function()
    expect_error(raw(nil, { timeout_ms = 0 }), P .. "timeout_ms", "must be between 1 and 600000")
  end)

  it("rejects a non-number profile timeout", function()
    expect_error(raw(nil, { profile_timeout_ms = "400" }), P .. "profile_timeout_ms", "must be an integer")
  end)

  it("rejects an unknown amperity field with a did-you-mean, without its value", function()
    local r = raw(nil, { api_key = "<nil>" })
    r.pipelines[1].integrations[1].apiKey = INGEST_KEY
    local errs = errors_of(r)
    assert_no_secret(errs)
    assert.same({
      FILE .. ": " .. P .. 'apiKey: unknown field (did you mean "api_key"?)',
      FILE .. ": " .. P .. "api_key: is required (if it comes from os.getenv, is the variable set?)",
    }, errs)
  end)
end)

describe("config secrets", function()
  it("never prints a secret put in a non-secret field", function()
    for _, field in ipairs({ "tenant_subdomain", "event_stream_id", "profile_collection_id", "base_url",
                             "preset", "source_value" }) do
      local errs = errors_of(raw(nil, { [field] = " " .. INGEST_KEY }))
      assert.is_true(#errs >= 1)
      assert_no_secret(errs)
    end
  end)

  it("never prints a token-shaped value put in the wrong field while its own field is empty", function()
    local errs = errors_of(raw(nil, { api_key = "<nil>", profile_api_key = "<nil>", profile_collection_id = "<nil>",
                                      event_stream_id = INGEST_KEY }))
    assert.equal(2, #errs)
    assert_no_secret(errs)
    assert.truthy(errs[1]:find("api_key: is required", 1, true))
    assert.truthy(errs[2]:find('event_stream_id: must start with "esm-"', 1, true))
  end)

  it("never prints a short non-token secret that also appears in another field", function()
    local errs = errors_of(raw({ listen = ADMIN_TOKEN, cookie_domain = "x/" .. ADMIN_TOKEN }))
    assert.equal(2, #errs)
    assert_no_secret(errs)
    assert.truthy(errs[1]:find("(secret)", 1, true))
  end)

  it("never prints a secret in a linking key entry", function()
    local errs = errors_of(raw(nil, { linking_keys = { { source = PROFILE_KEY, key = "k" } } }))
    assert.equal(1, #errs)
    assert_no_secret(errs)
  end)

  it("lists every secret of a config for log scrubbing", function()
    local r = raw()
    r.pipelines[2] = { key = "dk_test_two", integrations = { amperity({
      api_key = "eyJhbGciOiJIUzI1NiJ9.eyJ0d28iOjF9.dHdvLWluZ2VzdA",
      profile_api_key = "<nil>", profile_collection_id = "<nil>" }) } }
    local list = config.secrets(valid(r))
    table.sort(list)
    local expected = { INGEST_KEY, PROFILE_KEY, ADMIN_TOKEN, REDIS_PASSWORD,
                       "eyJhbGciOiJIUzI1NiJ9.eyJ0d28iOjF9.dHdvLWluZ2VzdA" }
    table.sort(expected)
    assert.same(expected, list)
  end)

  it("lists no secrets for a config without any", function()
    assert.same({}, config.secrets((config.load(FIXTURES .. "minimal.conf.lua"))))
  end)
end)

describe("amperity schema as documentation", function()
  it("lists the spec's Configuration table fields first, in order, with descriptions", function()
    local rows = schema.docs(amperity_schema)
    local expected = { "tenant_subdomain", "tenant_id", "api_key", "event_stream_id", "source_value",
                       "profile_api_key", "profile_collection_id", "linking_keys", "browser_attribute_allowlist" }
    for i, name in ipairs(expected) do
      assert.equal(name, rows[i].name)
      assert.is_string(rows[i].description)
    end
    assert.equal("secret", rows[3].type)
    assert.is_true(rows[3].required)
    assert.equal("secret", rows[6].type)
    assert.is_false(rows[6].required)
    assert.truthy(rows[5].description:find("Case-sensitive", 1, true))
  end)
end)

describe("signal check", function()
  local function sink()
    local buf = {}
    return { write = function(_, ...) for _, s in ipairs({ ... }) do buf[#buf + 1] = tostring(s) end end,
             text = function() return table.concat(buf) end }
  end

  it("prints the pipeline and integration counts and exits 0 for a valid config", function()
    local out, err = sink(), sink()
    local code = check.run(FIXTURES .. "valid.conf.lua", { stdout = out, stderr = err, config_only = true })
    assert.equal("", err.text())
    assert.equal("config OK: 2 pipelines, 1 integrations\n", out.text())
    assert.equal(0, code)
  end)

  it("prints each config error on its own line to stderr and exits 1", function()
    local out, err = sink(), sink()
    local code = check.run(FIXTURES .. "invalid_many.conf.lua", { stdout = out, stderr = err, config_only = true })
    assert.equal(1, code)
    assert.equal("", out.text())
    local lines = {}
    for line in err.text():gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.equal(7, #lines)
    assert.matches("^spec/fixtures/configs/invalid_many%.conf%.lua: listn: unknown field", lines[1])
  end)
end)
