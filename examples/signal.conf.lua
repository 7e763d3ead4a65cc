-- examples/signal.conf.lua — the demo configuration.
--
-- One pipeline (dk_live_demo) delivering to Amperity, a webhook, GA4 and
-- Meta's Conversions API, all pointing at the local sandbox (`signal sandbox
-- --listen 127.0.0.1:8091`: the vendors' stand-ins and a receiver that
-- verifies webhook signatures). GA4 and Meta receive only the events whose
-- consent allows them (analytics, marketing): choose in the page's banner.
-- Every credential comes from the environment, with obviously fake demo
-- defaults so the demo runs out of the box:
--
--   SIGNAL_REDIS               redis URL           (redis://127.0.0.1:6390/0)
--   SIGNAL_ADMIN_TOKEN         admin API token     (unset: admin API off)
--   IDENTITY_HUB_ORG_ID        identity hub org id (demo UUID)
--   AMPERITY_API_KEY           Streaming Ingest JWT (demo value)
--   AMPERITY_PROFILE_API_KEY   Profile API JWT      (demo value)
--   DEMO_WEBHOOK_SECRET        webhook signing key  (the sandbox receiver's demo value)
--   GA4_API_SECRET             GA4 Measurement Protocol API secret (the sandbox's demo value)
--   META_ACCESS_TOKEN          Meta Conversions API token          (the sandbox's demo value)
--
-- Check it with `signal check -c examples/signal.conf.lua`.

local env = os.getenv

return {
  listen = "127.0.0.1:8080",
  redis = env("SIGNAL_REDIS") or "redis://127.0.0.1:6390/0",
  admin_token = env("SIGNAL_ADMIN_TOKEN"),
  -- customer mapping scripts (relative to this file): examples/scripts,
  -- hot reloaded when a file there changes
  scripts_dir = "scripts",
  -- the identity hub (GET /v1/enrich) is on only when an org id is set
  identity_hub = { org_id = env("IDENTITY_HUB_ORG_ID") or "8a3c1f2e-0d4b-4c6a-9e57-5d0c2b7a1f00" },

  pipelines = {
    {
      key = "dk_live_demo",
      -- the demo storefront (tools/run-demo.sh serves examples/demo on :8000)
      -- and pages served by the engine itself
      origins = { "http://127.0.0.1:8000", "http://localhost:8000",
                  "http://127.0.0.1:8080", "http://localhost:8080" },
      integrations = {
        {
          type = "amperity",
          preset = "retail",
          base_url = "http://127.0.0.1:8091",      -- the local sandbox, not *.amperity.com
          tenant_subdomain = "acme",
          tenant_id = "acme",
          api_key = env("AMPERITY_API_KEY")
            or "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJzaWduYWwtZGVtbyIsInNjb3BlIjoic3RyZWFtaW5nLWluZ2VzdDp3cml0ZSIsInRlbmFudCI6ImFjbWUifQ.ZGVtby1pbmdlc3Qtc2lnbmF0dXJl",
          event_stream_id = "esm-demo",
          source_value = "DATAFLY",
          profile_api_key = env("AMPERITY_PROFILE_API_KEY")
            or "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJzaWduYWwtZGVtbyIsInNjb3BlIjoicHJvZmlsZTpyZWFkIiwidGVuYW50IjoiYWNtZSJ9.ZGVtby1wcm9maWxlLXNpZ25hdHVyZQ",
          profile_collection_id = "apc-demo",
          linking_keys = {
            { source = "email", key = "email_sha256", hash = "sha256" },
            { source = "canonical_id", key = "_dfdid" },
          },
          browser_attribute_allowlist = "Persona,FavoriteBrand,LifetimeTier",
        },
        {
          -- every event, enriched (partner_attrs.amperity), signed and POSTed
          type = "webhook",
          name = "demo",
          url = "http://127.0.0.1:8091/hooks/demo",
          signing_secret = env("DEMO_WEBHOOK_SECRET") or "demo-webhook-secret-0123456789",
        },
        {
          -- GA4 Measurement Protocol; only events with analytics consent
          -- (accept the cookie banner). The visitor's Amperity Persona and
          -- LifetimeTier become user properties.
          type = "ga4",
          preset = "retail",
          base_url = "http://127.0.0.1:8091",      -- the local sandbox, not google-analytics.com
          measurement_id = "G-DEMO123",
          api_secret = env("GA4_API_SECRET") or "demo-ga4-api-secret-9f2c",
          user_properties = "Persona,LifetimeTier",
        },
        {
          -- Meta Conversions API; only events with marketing consent. The
          -- visitor's predicted lifetime value goes in custom_data.
          type = "meta_capi",
          preset = "retail",
          base_url = "http://127.0.0.1:8091",      -- the local sandbox, not graph.facebook.com
          pixel_id = "1234567890",
          access_token = env("META_ACCESS_TOKEN") or "EAAGdemoMetaAccessToken0123456789abcdef",
          custom_data_attributes = { PredictedCLV = "predicted_ltv", Persona = "persona" },
        },
      },
    },
  },
}
