-- signal.destinations.amperity — Amperity as a destination and as an
-- enrichment provider.
--
-- Three API surfaces, one module each:
--   Streaming Ingest  POST /prof/events/{esm}: every event, flat     send.lua, payload.lua
--   Profile API       visitor lookups by linking key, profiles,     enrich.lua (resolve.lua,
--                     context-sensitive personalization             profile.lua, personalize.lua)
--   the browser       the allow-listed slice /v1/enrich returns     browser.lua
-- settings.lua is the integration's config schema; sandbox.lua its stand-in
-- for `signal sandbox`.
--
-- The profile attributes land on event.partner_attrs.amperity (and
-- .amperity_personalized) and the resolved profile id on event.amperity_id,
-- before any destination of the pipeline maps the event: every blueprint can
-- read them (partner_attrs.amperity.Persona …).
local settings = require "signal.destinations.amperity.settings"
local send = require "signal.destinations.amperity.send"
local payload = require "signal.destinations.amperity.payload"
local enrich = require "signal.destinations.amperity.enrich"
local browser = require "signal.destinations.amperity.browser"

local type = type

local function nonempty(v) return type(v) == "string" and v ~= "" end

return {
  type = "amperity",
  description = "Amperity's real-time Streaming Ingest, with Profile API enrichment and browser personalization",
  settings = settings,

  mapping = {
    presets = true,                    -- presets/amperity/: global.lua + seven verticals
    shape = "flat",
    type_target = "type",              -- the handler's type becomes the body's `type`
    finish = payload.finish,
    reserved_targets = {
      consent = "consent is copied verbatim from context.consent by the integration",
      source = "source is always the integration's source_value",
    },
  },

  delivery = {
    max_batch = 1,                     -- Streaming Ingest takes one object per request
    rate_limit = 500,                  -- requests/s per tenant
    rate_limit_key = function(cfg) return cfg.tenant_id or cfg.tenant_subdomain end,
  },

  send = send.send,
  explain = send.explain,

  status = function(cfg)
    return { preset = cfg.preset, event_stream_id = cfg.event_stream_id, base_url = cfg.base_url }
  end,

  enrichment = {
    provider = "amperity",
    fields = { "amperity_id" },
    enabled = enrich.enabled,
    run = enrich.run,
    probe = { Persona = "Probe", LifetimeTier = "Gold" },
  },

  browser = {
    provider = "amperity",
    -- the page asks for the slice only when there is one to give
    enabled = function(ctx, cfg)
      return ctx.hub_org_id ~= nil and nonempty(cfg.profile_api_key)
        and #(cfg.browser_attribute_allowlist or {}) > 0
    end,
    read = browser.read,
  },

  sandbox = "signal.destinations.amperity.sandbox",
}
