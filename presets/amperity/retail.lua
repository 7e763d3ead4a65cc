-- presets/amperity/retail.lua — Amperity blueprint v1.8.0, Retail vertical.
--
-- Accepts both GA4-style names (view_item, properties.items[]) and legacy
-- Segment names (Product Viewed, properties.products[]); the `type` is always
-- the GA4 name. Where both styles carry a field, `source` lists the flat
-- Segment property first and the first GA4 item second. The global mappings
-- (global.lua) run before these handlers; unmapped events pass through flat.

-- Line-item summaries. `source` is the line list (GA4 `items`, Segment
-- `products`); Amperity bodies cannot carry arrays, so lists become counts
-- and comma-separated ids.
local LINE_LIST = { "properties.items", "properties.products" }

local function item_count(l)
  if type(l) ~= "table" or l[1] == nil then return nil end
  return #l
end

local function product_ids(l)
  if type(l) ~= "table" then return nil end
  local ids = {}
  for i = 1, #l do
    local it = l[i]
    local id = type(it) == "table" and (it.item_id or it.product_id or it.sku or it.id) or nil
    if id ~= nil then ids[#ids + 1] = tostring(id) end
  end
  return #ids > 0 and table.concat(ids, ",") or nil
end

local function total_quantity(l)
  if type(l) ~= "table" or l[1] == nil then return nil end
  local n = 0
  for i = 1, #l do
    local q = type(l[i]) == "table" and tonumber(l[i].quantity) or nil
    n = n + (q or 1)
  end
  return n
end

-- One product: view_item, add_to_cart, remove_from_cart.
local PRODUCT = {
  { source = { "properties.product_id", "properties.items.1.item_id" }, target = "product_id" },
  { source = { "properties.sku", "properties.items.1.item_id" }, target = "sku" },
  { source = { "properties.name", "properties.items.1.item_name" }, target = "product_name" },
  { source = { "properties.category", "properties.items.1.item_category" }, target = "category" },
  { source = { "properties.brand", "properties.items.1.item_brand" }, target = "brand" },
  { source = { "properties.variant", "properties.items.1.item_variant" }, target = "variant" },
  { source = { "properties.price", "properties.items.1.price" }, target = "price" },
  { source = { "properties.quantity", "properties.items.1.quantity" }, target = "quantity" },
  prop "currency",
  prop "value",
  prop "coupon",
  prop("url", "product_url"),
  prop("image_url", "product_image_url"),
}

-- A list of lines: view_cart, begin_checkout, purchase.
local LINES = {
  prop "currency",
  { source = { "properties.value", "properties.revenue", "properties.total" }, target = "value" },
  prop "coupon",
  { source = LINE_LIST, target = "item_count", fn = item_count },
  { source = LINE_LIST, target = "product_ids", fn = product_ids },
  { source = LINE_LIST, target = "total_quantity", fn = total_quantity },
}

return {
  integration = "amperity",
  name = "retail",
  version = "1.8.0",
  events = {
    page = { type = "pageview", mappings = {
      prop("category", "page_category"),
    } },
    view_item = { type = "view_item", aliases = { "Product Viewed" }, mappings = PRODUCT },
    view_item_list = { type = "view_item_list", aliases = { "Product List Viewed" }, mappings = {
      { source = { "properties.item_list_id", "properties.list_id" }, target = "list_id" },
      { source = { "properties.item_list_name", "properties.list_name" }, target = "list_name" },
      prop "category",
      { source = LINE_LIST, target = "item_count", fn = item_count },
      { source = LINE_LIST, target = "product_ids", fn = product_ids },
    } },
    add_to_cart = { type = "add_to_cart", aliases = { "Product Added" },
      mappings = join(PRODUCT, { prop "cart_id" }) },
    remove_from_cart = { type = "remove_from_cart", aliases = { "Product Removed" },
      mappings = join(PRODUCT, { prop "cart_id" }) },
    view_cart = { type = "view_cart", aliases = { "Cart Viewed" },
      mappings = join(LINES, { prop "cart_id" }) },
    begin_checkout = { type = "begin_checkout", aliases = { "Checkout Started" },
      mappings = join(LINES, {
        prop "checkout_id",
        { source = { "properties.order_id", "properties.transaction_id" }, target = "order_id" },
        prop "shipping_method",
      }) },
    purchase = { type = "purchase", aliases = { "Order Completed" },
      mappings = join(LINES, {
        { source = { "properties.order_id", "properties.transaction_id" }, target = "order_id" },
        prop "checkout_id",
        prop "revenue",
        prop "subtotal",
        prop "tax",
        prop "shipping",
        prop "discount",
        prop "affiliation",
        prop "payment_method",
      }) },
  },
  default = "pass_through",
}
