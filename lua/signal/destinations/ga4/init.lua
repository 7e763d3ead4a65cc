-- signal.destinations.ga4 — Google Analytics 4 through the Measurement
-- Protocol: every event the visitor consented to analytics for, as a GA4
-- event of the same client and session the browser's gtag.js reports.
--
-- One module per job:
--   settings.lua   the config schema (measurement_id, api_secret, region …)
--   identity.lua   client_id (the _ga cookie), session_id, consent, event time
--   limits.lua     GA4's limits and the corrections that make events fit
--   payload.lua    finish: the mapped table → one event's body
--   send.lua       batch_key, the merged request, outcomes, explanations
--   probe.lua      `signal check --live`: a sample event to /debug/mp/collect
--   sandbox.lua    the stand-in of `signal sandbox`
-- Blueprints: presets/ga4/ (global.lua + the seven verticals) map Segment /
-- Datafly names to GA4's recommended events and e-commerce params.
local settings = require "signal.destinations.ga4.settings"
local payload = require "signal.destinations.ga4.payload"
local send = require "signal.destinations.ga4.send"
local limits = require "signal.destinations.ga4.limits"

return {
  type = "ga4",
  description = "Google Analytics 4 (Measurement Protocol), with the browser's client and session",
  settings = { fields = settings.fields },

  mapping = {
    presets = true,                    -- presets/ga4/: global.lua + seven verticals
    shape = "nested",                  -- items[] and user_properties are tables
    type_target = "name",              -- the handler's type is the GA4 event name
    finish = payload.finish,
    reserved_targets = {
      consent = "the consent signals are taken from the event's context.consent",
      events = "the events list is built by the destination (map the event's params instead)",
    },
  },

  delivery = {
    max_batch = limits.MAX_EVENTS,     -- per request, of one client
    batch_size = function(cfg) return cfg.batch_size or limits.MAX_EVENTS end,
    batch_key = send.batch_key,
    rate_limit = 100,
    rate_limit_key = function(cfg) return cfg.measurement_id end,
  },

  consent = { requires = { "analytics" } },

  send = send.send,
  explain = send.explain,
  probe = function(cfg) return require("signal.destinations.ga4.probe").run(cfg) end,

  status = function(cfg)
    return { preset = cfg.preset, measurement_id = cfg.measurement_id, region = cfg.region, debug = cfg.debug,
             base_url = cfg.base_url }
  end,

  sandbox = "signal.destinations.ga4.sandbox",
}
