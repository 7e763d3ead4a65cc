-- presets/meta_capi/gaming.lua — Meta standard events for Gaming.
--
-- A real-money item purchase is Purchase (contents = the item) and a
-- sign-up CompleteRegistration. Levels, tutorials, achievements, matches
-- and virtual currency have no standard event: they are sent as custom
-- events under their own name, their properties in custom_data.

local function contents(_, e)
  local p = e.properties
  if type(p) ~= "table" or p.item_id == nil then return nil end
  return { { id = tostring(p.item_id), quantity = tonumber(p.quantity) or 1, item_price = tonumber(p.price) } }
end

return {
  integration = "meta_capi",
  name = "gaming",
  version = "1.0.0",
  events = {
    page = { type = "PageView" },
    purchase = { type = "Purchase", aliases = { "Item Purchased", "item_purchased", "Order Completed" },
      mappings = {
        { source = { "properties.value", "properties.price" }, target = "custom_data.value" },
        { source = "properties.currency", target = "custom_data.currency" },
        { source = "properties.item_id", target = "custom_data.content_ids" },
        { target = "custom_data.contents", fn = contents },
        { source = { "properties.item_name" }, target = "custom_data.content_name" },
        { default = "product", target = "custom_data.content_type" },
        { source = { "properties.transaction_id", "properties.order_id" }, target = "custom_data.order_id" },
      } },
    complete_registration = { type = "CompleteRegistration", aliases = { "Signed Up" } },
  },
  default = "pass_through",
}
