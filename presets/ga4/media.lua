-- presets/ga4/media.lua — GA4 events for Media.
--
-- Playback follows the names GA4's enhanced measurement uses for video:
-- video_start, video_progress (video_percent) and video_complete, with
-- video_title, video_provider, video_duration and video_current_time; a
-- share is `share`. Ads, pauses, audio and podcasts go as custom events
-- under their snake_case names.

local VIDEO = {
  { source = { "properties.title", "properties.video_title", "properties.program" }, target = "video_title" },
  { source = { "properties.video_player", "properties.publisher", "properties.channel" },
    target = "video_provider" },
  { source = { "properties.total_length", "properties.video_duration" }, target = "video_duration" },
  { source = { "properties.position", "properties.video_current_time" }, target = "video_current_time" },
  { source = { "properties.content_asset_id", "properties.asset_id" }, target = "content_id" },
}

return {
  integration = "ga4",
  name = "media",
  version = "1.0.0",
  events = {
    page = { type = "page_view" },
    video_start = { aliases = { "Video Playback Started", "video_playback_started", "Video Content Started",
                                "video_content_started" }, mappings = VIDEO },
    video_progress = { aliases = { "Video Content Milestone", "video_content_milestone" },
      mappings = join(VIDEO, {
        { source = { "properties.milestone", "properties.percent_complete", "properties.video_percent" },
          target = "video_percent" },
      }) },
    video_complete = { aliases = { "Video Playback Completed", "video_playback_completed",
                                   "Video Content Completed", "video_content_completed" }, mappings = VIDEO },
    share = { aliases = { "Content Shared" }, mappings = {
      { source = { "properties.method", "properties.share_method" }, target = "method" },
      { source = { "properties.content_asset_id", "properties.content_id" }, target = "item_id" },
      { source = { "properties.content_type" }, default = "video", target = "content_type" },
    } },
    sign_up = { aliases = { "Signed Up" }, mappings = {
      { source = { "properties.method", "properties.signup_method" }, target = "method" },
    } },
    login = { aliases = { "Logged In", "Signed In" }, mappings = {
      { source = { "properties.method", "properties.login_method" }, target = "method" },
    } },
    search = { aliases = { "Products Searched", "Content Searched" }, mappings = {
      { source = { "properties.search_term", "properties.query" }, target = "search_term" },
    } },
  },
  default = "pass_through",
}
