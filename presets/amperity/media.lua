-- presets/amperity/media.lua — Amperity blueprint v1.8.0, Media vertical.
--
-- Video playback, content and ad lifecycles plus audio and podcast events
-- (`audio_playback_*` expands to started/paused/resumed/completed like
-- video). Property names follow the Segment video spec; its per-player
-- properties.session_id becomes playback_session_id so it does not clash with
-- the visit's session_id. The global mappings (global.lua) run first;
-- unmapped events pass through.

local PLAYBACK = {
  prop("session_id", "playback_session_id"),
  prop "content_asset_id", prop "position", prop "total_length",
  prop "livestream", prop "quality", prop "bitrate",
  prop "sound", prop "full_screen",
}
local VIDEO_PLAYBACK = join(PLAYBACK, { prop "video_player", prop "ad_enabled" })
local AUDIO_PLAYBACK = join(PLAYBACK, { prop "audio_player" })
local CONTENT = {
  prop("session_id", "playback_session_id"),
  prop "content_asset_id", prop "content_pod_id", prop "title", prop "program",
  prop "season", prop "episode", prop "genre", prop "channel", prop "publisher",
  prop "full_episode", prop "livestream", prop "position", prop "total_length",
}
local AD = {
  prop("session_id", "playback_session_id"),
  prop "ad_asset_id", prop "ad_pod_id", prop "ad_type", prop "ad_publisher",
  prop "ad_title", prop "position", prop "total_length", prop "content_asset_id",
}

return {
  integration = "amperity",
  name = "media",
  version = "1.8.0",
  events = {
    page = { type = "pageview" },
    video_playback_started = { mappings = VIDEO_PLAYBACK },
    video_playback_paused = { mappings = VIDEO_PLAYBACK },
    video_playback_resumed = { mappings = VIDEO_PLAYBACK },
    video_playback_completed = { mappings = VIDEO_PLAYBACK },
    video_content_started = { mappings = CONTENT },
    video_content_completed = { mappings = CONTENT },
    video_content_milestone = { mappings = join(CONTENT, {
      { source = { "properties.milestone", "properties.percent_complete" }, target = "milestone" },
    }) },
    video_ad_started = { mappings = AD },
    video_ad_completed = { mappings = AD },
    video_ad_skipped = { mappings = AD },
    audio_playback_started = { mappings = AUDIO_PLAYBACK },
    audio_playback_paused = { mappings = AUDIO_PLAYBACK },
    audio_playback_resumed = { mappings = AUDIO_PLAYBACK },
    audio_playback_completed = { mappings = AUDIO_PLAYBACK },
    podcast_subscribed = { mappings = {
      prop "podcast_id", prop "podcast_name", prop "publisher", prop "genre",
      prop "platform",
    } },
  },
  default = "pass_through",
}
