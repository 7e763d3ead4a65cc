-- spec/e2e/signal.e2e.conf.lua — the engine config of the browser end-to-end
-- test. Same shape as examples/signal.conf.lua (the demo the test loads), but
-- every port, the Redis URL and both Amperity tokens come from the environment
-- that spec/e2e/run.sh sets up, so the test never collides with a running
-- `make run` and the tokens have one source: spec/fixtures/profiles.json.
-- Config files cannot read files (no io in the config sandbox), hence env.
local env = os.getenv

local function need(name)
  local v = env(name)
  if v == nil or v == "" then error(name .. " is not set (spec/e2e/run.sh sets it)", 0) end
  return v
end

local page = need("E2E_PAGE_PORT")

return {
  listen = "127.0.0.1:" .. need("E2E_ENGINE_PORT"),
  workers = 2,
  redis = need("E2E_REDIS"),
  admin_token = need("SIGNAL_ADMIN_TOKEN"),
  identity_hub = { org_id = "e2e00000-0000-4000-8000-000000000001" },

  pipelines = {
    {
      key = "dk_live_demo",   -- what the demo page loads
      -- the page is loaded from 127.0.0.1; localhost too, as in the demo
      origins = { "http://127.0.0.1:" .. page, "http://localhost:" .. page },
      integrations = {
        {
          type = "amperity",
          preset = "retail",
          base_url = "http://127.0.0.1:" .. need("E2E_SANDBOX_PORT"),
          tenant_subdomain = "acme",
          tenant_id = "acme",
          api_key = need("E2E_INGEST_TOKEN"),
          event_stream_id = "esm-demo",
          source_value = "DATAFLY",
          profile_api_key = need("E2E_PROFILE_TOKEN"),
          profile_collection_id = "apc-demo",
          linking_keys = {
            { source = "email", key = "email_sha256", hash = "sha256" },
            { source = "canonical_id", key = "_dfdid" },
          },
          -- the test reads the same variable to know what the browser may see
          browser_attribute_allowlist = need("E2E_ALLOWLIST"),
        },
      },
    },
  },
}
