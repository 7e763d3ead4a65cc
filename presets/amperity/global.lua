-- presets/amperity/global.lua — the Amperity blueprint v1.8.0 global mappings.
--
-- Shared by all seven vertical presets: the engine runs these first for every
-- event, then the vertical's event handler. Every target is a flat top-level
-- field of the Streaming Ingest body; the only nested field, `consent`, is
-- added verbatim by the integration itself and is not a mapping. A `source`
-- list is a fallback chain: the first path that has a value wins (the current
-- event's traits before the identity stitched from an earlier identify).

-- Identity values are matched by Amperity: send them trimmed (and e-mail
-- addresses lower-cased), as the hashed variants are. Most values are clean
-- already; the find() checks return them without building new strings.
local function trim(v)
  if type(v) ~= "string" or not (v:find("^%s") or v:find("%s$")) then return v end
  return v:match("^%s*(.-)%s*$")
end

local function email(v)
  if type(v) ~= "string" or not v:find("[%sA-Z]") then return v end
  return v:match("^%s*(.-)%s*$"):lower()
end

-- The GA cookie "_ga" reads "GA1.1.<client id>"; Amperity wants the client id.
local function ga_client_id(v)
  if type(v) ~= "string" then return v end
  return v:match("^GA%d+%.%d+%.(.+)$") or v
end

-- Some fields mean something for one type of call only: a page call's
-- category, and traits, which describe the group in a group call and the
-- person in every other.
local function on_page(v, e) if e.type == "page" then return v end end
local function on_group(v, e) if e.type == "group" then return v end end
local function on_person(v, e) if e.type ~= "group" then return v end end

return {
  integration = "amperity",
  name = "global",
  version = "1.8.0",
  global = { mappings = {
    -- Identity
    { source = { "user_id", "identity.user_id" }, target = "user_id" },
    { source = "anonymous_id", target = "anonymous_id" },
    { source = "canonical_id", target = "cookieid" },
    { source = { "amperity_id", "partner_attrs.amperity.amperity_id" }, target = "amperity_id" },
    { source = { "traits.email", "identity.email" }, target = "email", fn = email },
    { source = { "traits.email", "identity.email" }, target = "email_sha256", hash = "sha256" },
    { source = { "traits.phone", "identity.phone" }, target = "phone", fn = trim },
    { source = { "traits.phone", "identity.phone" }, target = "phone_sha256", hash = "sha256" },
    { source = { "traits.first_name", "traits.firstName" }, target = "first_name" },
    { source = { "traits.last_name", "traits.lastName" }, target = "last_name" },
    { source = "group_id", target = "group_id" },
    { source = "previous_id", target = "previous_id" },   -- alias: the id being merged

    -- The person (Segment's reserved identify traits)
    { source = "traits.name", target = "full_name", fn = on_person },
    { source = "traits.username", target = "username", fn = on_person },
    { source = "traits.title", target = "job_title", fn = on_person },
    { source = "traits.birthday", target = "birthday", fn = on_person },
    { source = "traits.gender", target = "gender", fn = on_person },
    { source = "traits.age", target = "age", fn = on_person },
    { source = "traits.address.street", target = "address_street", fn = on_person },
    { source = "traits.address.city", target = "address_city", fn = on_person },
    { source = "traits.address.state", target = "address_state", fn = on_person },
    { source = { "traits.address.postal_code", "traits.address.postalCode" }, target = "address_postal_code",
      fn = on_person },
    { source = "traits.address.country", target = "address_country", fn = on_person },
    { source = "traits.company.name", target = "company_name", fn = on_person },

    -- The group (Segment's reserved group traits)
    { source = "traits.name", target = "group_name", fn = on_group },
    { source = "traits.industry", target = "group_industry", fn = on_group },
    { source = "traits.employees", target = "group_employees", fn = on_group },
    { source = "traits.plan", target = "group_plan", fn = on_group },
    { source = "traits.website", target = "group_website", fn = on_group },

    -- Event
    { source = "message_id", target = "message_id" },
    { source = "event", target = "event_name" },
    { source = "name", target = "page_name" },
    { source = "timestamp", target = "timestamp" },   -- normalized to ISO-8601 ms by the integration
    { source = "received_at", target = "received_at" },

    -- Network
    { source = "context.ip", target = "ip_address" },
    { source = "context.user_agent", target = "user_agent" },

    -- Locale
    { source = "context.locale", target = "locale" },
    { source = "context.timezone", target = "timezone" },

    -- Page
    { source = "context.page.url", target = "page_url" },
    { source = "context.page.path", target = "page_path" },
    { source = "context.page.referrer", target = "page_referrer" },
    { source = "context.page.title", target = "page_title" },
    { source = "context.page.search", target = "page_search" },
    { source = "category", target = "page_category", fn = on_page },

    -- Session
    { source = "context.session.id", target = "session_id" },
    { source = "context.session.count", target = "session_count" },

    -- Campaign (utm_*)
    { source = "context.campaign.source", target = "utm_source" },
    { source = "context.campaign.medium", target = "utm_medium" },
    { source = "context.campaign.name", target = "utm_campaign" },
    { source = "context.campaign.term", target = "utm_term" },
    { source = "context.campaign.content", target = "utm_content" },

    -- Geo
    { source = "context.geo.country", target = "geo_country" },
    { source = "context.geo.region", target = "geo_region" },
    { source = "context.geo.city", target = "geo_city" },

    -- Vendor ids (first-party cookies datafly.js found on the page)
    { source = "context.vendor_ids.ga", target = "ga_client_id", fn = ga_client_id },
    { source = "context.vendor_ids.fbp", target = "fbp" },
    { source = "context.vendor_ids.fbc", target = "fbc" },
    { source = "context.vendor_ids.ttp", target = "ttp" },

    -- Screen, device, library
    { source = "context.screen.width", target = "screen_width" },
    { source = "context.screen.height", target = "screen_height" },
    { source = "context.screen.density", target = "screen_density" },
    { source = "context.device.type", target = "device_type" },
    { source = "context.os.name", target = "os_name" },
    { source = "context.os.version", target = "os_version" },
    { source = "context.library.name", target = "library_name" },
    { source = "context.library.version", target = "library_version" },

    -- Amperity profile attributes (attached by profile enrichment)
    { source = "partner_attrs.amperity.Persona", target = "user_persona" },
    { source = "partner_attrs.amperity.LifetimeTier", target = "user_tier" },
    { source = "partner_attrs.amperity.FavoriteBrand", target = "favorite_brand" },

    -- Consent flags, flat for convenience; the full object is sent nested too
    { source = "context.consent.analytics", target = "consent_analytics" },
    { source = "context.consent.marketing", target = "consent_marketing" },
    { source = "context.consent.functional", target = "consent_functional" },
    { source = "context.consent.google.ad_storage", target = "consent_ad_storage" },
    { source = "context.consent.google.analytics_storage", target = "consent_analytics_storage" },
    { source = "context.consent.google.ad_user_data", target = "consent_ad_user_data" },
    { source = "context.consent.google.ad_personalization", target = "consent_ad_personalization" },
  } },
}
