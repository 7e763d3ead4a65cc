-- presets/amperity/publishing.lua — Amperity blueprint v1.8.0, Publishing.
--
-- Article, navigation, search, newsletter, paywall, subscription and
-- engagement events. Article tags arrive as a list and are sent
-- comma-separated (Amperity bodies carry no arrays). The global mappings
-- (global.lua) run first; unmapped events pass through.

local function csv(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for i = 1, #v do
    local t = type(v[i])
    if t == "string" or t == "number" then out[#out + 1] = tostring(v[i]) end
  end
  return #out > 0 and table.concat(out, ",") or nil
end

local ARTICLE = {
  prop "article_id",
  { source = { "properties.title", "properties.article_title" }, target = "article_title" },
  { source = { "properties.author", "properties.author_name" }, target = "author" },
  prop "author_id", prop "category", prop "section",
  { source = "properties.tags", target = "tags", fn = csv },
  prop "publish_date", prop "word_count", prop "content_type", prop "paywalled",
}
local NEWSLETTER = { prop "newsletter_id", prop "newsletter_name", prop "frequency" }
local SUBSCRIPTION = {
  prop "subscription_id", prop "plan", prop "billing_cycle", prop "value", prop "currency",
}

return {
  integration = "amperity",
  name = "publishing",
  version = "1.8.0",
  events = {
    page = { type = "pageview" },
    article_viewed = { mappings = ARTICLE },
    article_read = { mappings = join(ARTICLE, { prop "read_percent", prop "read_time" }) },
    article_shared = { mappings = join(ARTICLE, { prop "share_method", prop "share_platform" }) },
    article_bookmarked = { mappings = ARTICLE },
    category_viewed = { mappings = { prop "category", prop "section" } },
    search_performed = { mappings = {
      { source = { "properties.search_term", "properties.query" }, target = "search_term" },
      prop "results_count", prop "category",
    } },
    newsletter_subscribed = { mappings = NEWSLETTER },
    newsletter_unsubscribed = { mappings = join(NEWSLETTER, { prop "reason" }) },
    paywall_viewed = { mappings = {
      prop "article_id", prop "paywall_type", prop "meter_count", prop "category",
    } },
    subscription_started = { mappings = SUBSCRIPTION },
    subscription_cancelled = { mappings = join(SUBSCRIPTION, { prop "cancellation_reason" }) },
    comment_posted = { mappings = { prop "comment_id", prop "article_id", prop "parent_comment_id" } },
    author_followed = { mappings = {
      prop "author_id", { source = { "properties.author", "properties.author_name" }, target = "author" },
    } },
  },
  default = "pass_through",
}
