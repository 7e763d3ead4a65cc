-- presets/ga4/publishing.lua — GA4 events for Publishing.
--
-- An article view is select_content (content_type "article", content_id),
-- a share `share`, a site search `search`, a paid subscription a
-- `purchase` of the plan, a newsletter sign-up `sign_up` (method
-- "newsletter"). Reads, bookmarks, paywalls and comments go as custom
-- events under their snake_case names.

local ARTICLE = {
  { source = { "properties.content_type" }, default = "article", target = "content_type" },
  { source = { "properties.article_id", "properties.content_id" }, target = "content_id" },
  { source = { "properties.title", "properties.article_title" }, target = "article_title" },
  prop "category",
  { source = { "properties.author", "properties.author_name" }, target = "author" },
}

local function plan_item(_, e)
  local p = e.properties
  if type(p) ~= "table" or (p.plan == nil and p.subscription_id == nil) then return nil end
  return { { item_id = tostring(p.plan or p.subscription_id), item_name = p.plan,
             item_variant = p.billing_cycle, price = tonumber(p.value), quantity = 1 } }
end

return {
  integration = "ga4",
  name = "publishing",
  version = "1.0.0",
  events = {
    page = { type = "page_view" },
    select_content = { aliases = { "Article Viewed", "article_viewed" }, mappings = ARTICLE },
    share = { aliases = { "Article Shared", "article_shared" }, mappings = {
      { source = { "properties.method", "properties.share_method", "properties.share_platform" },
        target = "method" },
      { source = { "properties.content_type" }, default = "article", target = "content_type" },
      { source = { "properties.article_id", "properties.content_id" }, target = "item_id" },
    } },
    search = { aliases = { "Search Performed", "search_performed", "Products Searched" }, mappings = {
      { source = { "properties.search_term", "properties.query" }, target = "search_term" },
    } },
    purchase = { aliases = { "Subscription Started", "subscription_started", "Order Completed" }, mappings = {
      { source = { "properties.transaction_id", "properties.subscription_id" }, target = "transaction_id" },
      prop "value",
      prop "currency",
      { target = "items", fn = plan_item },
    } },
    sign_up = { aliases = { "Signed Up", "Newsletter Subscribed", "newsletter_subscribed" }, mappings = {
      { source = { "properties.method", "properties.signup_method" }, default = "newsletter", target = "method" },
    } },
    login = { aliases = { "Logged In", "Signed In" }, mappings = {
      { source = { "properties.method", "properties.login_method" }, target = "method" },
    } },
  },
  default = "pass_through",
}
