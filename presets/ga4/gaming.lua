-- presets/ga4/gaming.lua — GA4's recommended events for games.
--
-- level_start / level_end (level_name, success), post_score (score,
-- level, character), tutorial_begin / tutorial_complete,
-- unlock_achievement (achievement_id), earn_virtual_currency /
-- spend_virtual_currency (virtual_currency_name, value, item_name) and a
-- real-money item purchase as `purchase`. Both "Level Completed" and
-- level_completed are accepted; other events go as custom events under
-- their snake_case names.

local function level_name(v, e)
  if v ~= nil then return v end
  local p = e.properties
  local n = type(p) == "table" and (p.level or p.level_number) or nil
  return n ~= nil and ("level " .. tostring(n)) or nil
end

local LEVEL = {
  { source = "properties.level_name", target = "level_name", fn = level_name },
  { source = { "properties.level", "properties.level_number" }, target = "level" },
  prop "score",
}

local function item(_, e)
  local p = e.properties
  if type(p) ~= "table" or (p.item_id == nil and p.item_name == nil) then return nil end
  return { {
    item_id = p.item_id ~= nil and tostring(p.item_id) or nil,
    item_name = p.item_name,
    item_category = p.item_category or p.item_type,
    price = tonumber(p.price),
    quantity = tonumber(p.quantity) or 1,
  } }
end

return {
  integration = "ga4",
  name = "gaming",
  version = "1.0.0",
  events = {
    page = { type = "page_view" },
    level_start = { aliases = { "Level Started", "level_started" }, mappings = LEVEL },
    level_end = { aliases = { "Level Completed", "level_completed" }, mappings = join(LEVEL, {
      { default = "true", target = "success" },
    }) },
    level_failed = { type = "level_end", aliases = { "Level Failed", "level_failed" }, mappings = join(LEVEL, {
      { default = "false", target = "success" },
      prop "failure_reason",
    }) },
    post_score = { aliases = { "Match Completed", "match_completed", "Game Ended", "game_ended" }, mappings = {
      prop "score",
      { source = { "properties.level", "properties.level_number" }, target = "level" },
      { source = { "properties.character", "properties.team" }, target = "character" },
    } },
    tutorial_begin = { aliases = { "Tutorial Started", "tutorial_started" }, mappings = {
      prop "tutorial_id", prop "tutorial_name",
    } },
    tutorial_complete = { aliases = { "Tutorial Completed", "tutorial_completed" }, mappings = {
      prop "tutorial_id", prop "tutorial_name",
    } },
    unlock_achievement = { aliases = { "Achievement Unlocked", "achievement_unlocked" }, mappings = {
      { source = { "properties.achievement_id", "properties.achievement_name" }, target = "achievement_id" },
    } },
    earn_virtual_currency = { aliases = { "Currency Earned", "currency_earned" }, mappings = {
      { source = { "properties.virtual_currency_name", "properties.currency_name" },
        target = "virtual_currency_name" },
      { source = { "properties.value", "properties.amount" }, target = "value" },
    } },
    spend_virtual_currency = { aliases = { "Currency Spent", "currency_spent" }, mappings = {
      { source = { "properties.virtual_currency_name", "properties.currency_name" },
        target = "virtual_currency_name" },
      { source = { "properties.value", "properties.amount" }, target = "value" },
      prop "item_name",
    } },
    purchase = { aliases = { "Item Purchased", "item_purchased", "Order Completed" }, mappings = {
      { source = { "properties.transaction_id", "properties.order_id" }, target = "transaction_id" },
      { source = { "properties.value", "properties.price" }, target = "value" },
      prop "currency",
      { target = "items", fn = item },
    } },
    sign_up = { aliases = { "Signed Up" }, mappings = {
      { source = { "properties.method", "properties.signup_method" }, target = "method" },
    } },
    login = { aliases = { "Logged In", "Signed In" }, mappings = {
      { source = { "properties.method", "properties.login_method" }, target = "method" },
    } },
  },
  default = "pass_through",
}
