-- presets/meta_capi/global.lua — what every Meta server event carries,
-- before the vertical's handler: the page and the visitor's customer
-- information. Values are mapped as they are; the destination normalizes
-- and hashes them (lua/signal/destinations/meta_capi/user_data.lua) and adds
-- the IP, user agent, fbp, fbc, event time, event id and action source.
-- Addresses come from the visitor's own traits (identify), not from IP
-- geolocation, which would only blur the match.
return {
  integration = "meta_capi",
  name = "global",
  version = "1.0.0",
  global = { mappings = {
    { source = "context.page.url", target = "event_source_url" },
    { source = { "traits.email", "identity.email" }, target = "user_data.em" },
    { source = { "traits.phone", "identity.phone" }, target = "user_data.ph" },
    { source = { "traits.first_name", "traits.firstName" }, target = "user_data.fn" },
    { source = { "traits.last_name", "traits.lastName" }, target = "user_data.ln" },
    { source = "traits.address.city", target = "user_data.ct" },
    { source = "traits.address.state", target = "user_data.st" },
    { source = { "traits.address.postal_code", "traits.address.postalCode" }, target = "user_data.zp" },
    { source = "traits.address.country", target = "user_data.country" },
    { source = { "traits.birthday", "traits.date_of_birth" }, target = "user_data.db" },
    { source = "traits.gender", target = "user_data.ge" },
    { source = { "user_id", "identity.user_id" }, target = "user_data.external_id" },
  } },
}
