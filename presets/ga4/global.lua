-- presets/ga4/global.lua — what every GA4 event carries, before the
-- vertical's handler: the user id and the page, as gtag.js sends them with
-- every hit (page_location keeps the utm_* query GA4 attributes from).
-- Targets are the event's params, except `user_id` (the request's); the
-- destination adds client_id, session_id, engagement_time_msec, the event
-- time, consent and the allow-listed user properties
-- (lua/signal/destinations/ga4/payload.lua).
return {
  integration = "ga4",
  name = "global",
  version = "1.0.0",
  global = { mappings = {
    { source = { "user_id", "identity.user_id" }, target = "user_id" },
    { source = "context.page.url", target = "page_location" },
    { source = "context.page.referrer", target = "page_referrer" },
    { source = "context.page.title", target = "page_title" },
  } },
}
