-- presets/amperity/gaming.lua — Amperity blueprint v1.8.0, Gaming vertical.
--
-- Session, level, achievement, tutorial (`tutorial_*` = started/completed/
-- skipped), item, virtual currency, social and match events. Virtual currency
-- follows GA4's earn/spend_virtual_currency (virtual_currency_name, value);
-- real-money prices keep price/currency. The global mappings (global.lua) run
-- first; unmapped events pass through.

local GAME = { prop "game_id", prop "game_mode", prop "platform" }
local LEVEL = join({
  { source = { "properties.level", "properties.level_number" }, target = "level" },
  prop "level_name", prop "score", prop "duration", prop "attempts",
}, GAME)
local TUTORIAL = { prop "tutorial_id", prop "tutorial_name", prop "step", prop "duration" }
local ITEM = join({
  prop "item_id", prop "item_name", prop "item_type", prop "item_category",
  prop "price", prop "currency", prop "quantity", prop "virtual_currency_name",
}, GAME)
local VIRTUAL = join({
  { source = { "properties.virtual_currency_name", "properties.currency_name" },
    target = "virtual_currency_name" },
  { source = { "properties.value", "properties.amount" }, target = "amount" },
  prop "balance", prop "reason", prop "item_name",
}, GAME)
local MATCH = join({
  prop "match_id", prop "match_type", prop "team", prop "result", prop "score",
  prop "rank", prop "duration", prop "players",
}, GAME)

return {
  integration = "amperity",
  name = "gaming",
  version = "1.8.0",
  events = {
    page = { type = "pageview" },
    game_started = { mappings = join(GAME, { prop "character" }) },
    game_ended = { mappings = join(GAME, { prop "duration", prop "score", prop "level" }) },
    level_started = { mappings = LEVEL },
    level_completed = { mappings = LEVEL },
    level_failed = { mappings = join(LEVEL, { prop "failure_reason" }) },
    achievement_unlocked = { mappings = join({
      prop "achievement_id", prop "achievement_name", prop "points",
    }, GAME) },
    tutorial_started = { mappings = TUTORIAL },
    tutorial_completed = { mappings = TUTORIAL },
    tutorial_skipped = { mappings = TUTORIAL },
    item_purchased = { mappings = join(ITEM, { prop "value", prop "transaction_id" }) },
    item_equipped = { mappings = ITEM },
    currency_earned = { mappings = VIRTUAL },
    currency_spent = { mappings = VIRTUAL },
    friend_invited = { mappings = join({ prop "invite_method", prop "friend_id" }, GAME) },
    match_started = { mappings = MATCH },
    match_completed = { mappings = MATCH },
    leaderboard_viewed = { mappings = join({
      prop "leaderboard_id", prop "leaderboard_name", prop "rank",
    }, GAME) },
  },
  default = "pass_through",
}
