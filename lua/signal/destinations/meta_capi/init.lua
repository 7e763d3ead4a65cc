-- signal.destinations.meta_capi — Meta's Conversions API: the conversions
-- of visitors who consented to marketing, deduplicated with the browser
-- pixel by event id, matched by hashed customer information.
--
-- One module per job:
--   settings.lua   the config schema (pixel_id, access_token, api_version …)
--   user_data.lua  normalizing and hashing customer information; fbc / fbp
--   payload.lua    finish: the mapped table → one server event
--   send.lua       the request, outcomes, explanations, the live probe
--   sandbox.lua    the stand-in of `signal sandbox`
-- Blueprints: presets/meta_capi/ (global.lua + the seven verticals) map
-- Segment / Datafly names to Meta's standard events and custom_data.
local settings = require "signal.destinations.meta_capi.settings"
local payload = require "signal.destinations.meta_capi.payload"
local send = require "signal.destinations.meta_capi.send"

return {
  type = "meta_capi",
  description = "Meta Conversions API (server events, deduplicated with the pixel)",
  settings = { fields = settings.fields },

  mapping = {
    presets = true,                    -- presets/meta_capi/: global.lua + seven verticals
    shape = "nested",                  -- user_data.*, custom_data.*, contents[]
    type_target = "event_name",        -- the handler's type is Meta's event name
    finish = payload.finish,
    reserved_targets = {
      event_id = "event_id is always the event's messageId (deduplication with the browser pixel)",
      event_time = "event_time is always the event's time, in Unix seconds",
      action_source = "action_source is the integration's setting",
    },
  },

  delivery = {
    max_batch = settings.MAX_BATCH,
    batch_size = function(cfg) return cfg.batch_size or 100 end,
    rate_limit = 50,
    rate_limit_key = function(cfg) return cfg.pixel_id end,
  },

  consent = { requires = { "marketing" } },

  send = send.send,
  explain = send.explain,
  probe = send.probe,

  status = function(cfg)
    return { preset = cfg.preset, pixel_id = cfg.pixel_id, api_version = cfg.api_version,
             action_source = cfg.action_source, test_event_code = cfg.test_event_code, base_url = cfg.base_url }
  end,

  sandbox = "signal.destinations.meta_capi.sandbox",
}
