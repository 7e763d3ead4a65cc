-- presets/meta_capi/publishing.lua — Meta standard events for Publishing.
--
-- An article view is ViewContent (content_ids = the article, content_name
-- its title, content_category its category), a site search Search, a
-- paid subscription Subscribe (value, currency), a newsletter sign-up Lead.
-- Reads, shares, paywalls and comments are sent as custom events under
-- their own name.

local ARTICLE = {
  { source = { "properties.article_id", "properties.content_id" }, target = "custom_data.content_ids" },
  { source = { "properties.title", "properties.article_title" }, target = "custom_data.content_name" },
  { source = { "properties.category", "properties.section" }, target = "custom_data.content_category" },
}

return {
  integration = "meta_capi",
  name = "publishing",
  version = "1.0.0",
  events = {
    page = { type = "PageView" },
    view_content = { type = "ViewContent", aliases = { "Article Viewed", "article_viewed" }, mappings = ARTICLE },
    search = { type = "Search", aliases = { "Search Performed", "search_performed", "Products Searched" },
      mappings = {
        { source = { "properties.query", "properties.search_term" }, target = "custom_data.search_string" },
      } },
    subscribe = { type = "Subscribe", aliases = { "Subscription Started", "subscription_started" }, mappings = {
      { source = "properties.value", target = "custom_data.value" },
      { source = "properties.currency", target = "custom_data.currency" },
      { source = "properties.plan", target = "custom_data.content_name" },
    } },
    lead = { type = "Lead", aliases = { "Newsletter Subscribed", "newsletter_subscribed" }, mappings = {
      { source = { "properties.newsletter_name", "properties.newsletter_id" }, target = "custom_data.content_name" },
    } },
    complete_registration = { type = "CompleteRegistration", aliases = { "Signed Up" } },
  },
  default = "pass_through",
}
