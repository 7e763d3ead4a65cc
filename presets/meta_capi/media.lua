-- presets/meta_capi/media.lua — Meta standard events for Media.
--
-- Starting a video or an episode is ViewContent (content_ids = the asset,
-- content_name = the title, content_category = the genre), a podcast or
-- channel subscription Subscribe, a sign-up CompleteRegistration. Ads,
-- progress and pauses are sent as custom events under their own name.

local CONTENT = {
  { source = { "properties.content_asset_id", "properties.asset_id" }, target = "custom_data.content_ids" },
  { source = { "properties.title", "properties.program", "properties.podcast_name" },
    target = "custom_data.content_name" },
  { source = "properties.genre", target = "custom_data.content_category" },
}

return {
  integration = "meta_capi",
  name = "media",
  version = "1.0.0",
  events = {
    page = { type = "PageView" },
    view_content = { type = "ViewContent", aliases = { "Video Content Started", "video_content_started",
      "Video Playback Started", "video_playback_started" }, mappings = CONTENT },
    subscribe = { type = "Subscribe", aliases = { "Podcast Subscribed", "podcast_subscribed",
      "Subscription Started" }, mappings = join(CONTENT, {
        { source = "properties.podcast_id", target = "custom_data.content_ids" },
        { source = "properties.value", target = "custom_data.value" },
        { source = "properties.currency", target = "custom_data.currency" },
      }) },
    complete_registration = { type = "CompleteRegistration", aliases = { "Signed Up" } },
  },
  default = "pass_through",
}
