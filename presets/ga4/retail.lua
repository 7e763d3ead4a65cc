-- presets/ga4/retail.lua — GA4 recommended e-commerce events for Retail.
--
-- Accepts Segment / Datafly names ("Product Viewed", properties.products[])
-- and GA4's own (view_item, properties.items[]); the handler's type is the
-- GA4 event name. Segment products become GA4 items (product_id/sku →
-- item_id, name → item_name, brand → item_brand, category →
-- item_category, variant → item_variant); GA4 items pass as they are. A
-- single product described by the event's own properties (Product Viewed,
-- Product Added) is a one-item list. Events no handler knows are sent under
-- their own name in snake_case, with their properties as params.

local function num(v)
  local n = tonumber(v)
  if n and n == n then return n end
  return nil
end

local function item_of(p)
  if type(p) ~= "table" then return nil end
  local it = {
    item_id = p.item_id or p.product_id or p.sku or p.id,
    item_name = p.item_name or p.name,
    item_brand = p.item_brand or p.brand,
    item_category = p.item_category or p.category,
    item_variant = p.item_variant or p.variant,
    price = num(p.price),
    quantity = num(p.quantity),
    coupon = p.coupon,
    index = num(p.position or p.index),
  }
  if it.item_id == nil and it.item_name == nil then return nil end
  if it.item_id ~= nil then it.item_id = tostring(it.item_id) end
  return it
end

-- items(_, event): properties.items, else properties.products, else the
-- product the properties describe
local function items(_, e)
  local pr = e.properties
  if type(pr) ~= "table" then return nil end
  if type(pr.items) == "table" and pr.items[1] ~= nil then return pr.items end
  local list = pr.products
  if type(list) == "table" and list[1] ~= nil then
    local out = {}
    for i = 1, #list do out[#out + 1] = item_of(list[i]) end
    return out[1] and out or nil
  end
  local one = item_of(pr)
  return one and { one } or nil
end

local ONE = {
  prop "currency",
  { source = { "properties.value", "properties.price" }, target = "value" },
  { target = "items", fn = items },
}

local LINES = {
  prop "currency",
  { source = { "properties.value", "properties.revenue", "properties.total" }, target = "value" },
  prop "coupon",
  { target = "items", fn = items },
}

local PROMOTION = {
  { source = { "properties.promotion_id", "properties.id" }, target = "promotion_id" },
  { source = { "properties.promotion_name", "properties.name" }, target = "promotion_name" },
  { source = { "properties.creative_name", "properties.creative" }, target = "creative_name" },
  { source = { "properties.creative_slot", "properties.position" }, target = "creative_slot" },
}

return {
  integration = "ga4",
  name = "retail",
  version = "1.0.0",
  events = {
    page = { type = "page_view" },
    view_item = { aliases = { "Product Viewed" }, mappings = ONE },
    select_item = { aliases = { "Product Clicked" }, mappings = join(ONE, {
      { source = { "properties.item_list_id", "properties.list_id" }, target = "item_list_id" },
      { source = { "properties.item_list_name", "properties.list_name" }, target = "item_list_name" },
    }) },
    view_item_list = { aliases = { "Product List Viewed", "Product List Filtered" }, mappings = {
      { source = { "properties.item_list_id", "properties.list_id" }, target = "item_list_id" },
      { source = { "properties.item_list_name", "properties.list_name", "properties.category" },
        target = "item_list_name" },
      { target = "items", fn = items },
    } },
    add_to_cart = { aliases = { "Product Added" }, mappings = ONE },
    remove_from_cart = { aliases = { "Product Removed" }, mappings = ONE },
    add_to_wishlist = { aliases = { "Product Added to Wishlist" }, mappings = ONE },
    view_cart = { aliases = { "Cart Viewed" }, mappings = LINES },
    begin_checkout = { aliases = { "Checkout Started" }, mappings = LINES },
    add_shipping_info = { aliases = { "Shipping Info Entered" }, mappings = join(LINES, {
      { source = { "properties.shipping_tier", "properties.shipping_method" }, target = "shipping_tier" },
    }) },
    add_payment_info = { aliases = { "Payment Info Entered" }, mappings = join(LINES, {
      { source = { "properties.payment_type", "properties.payment_method" }, target = "payment_type" },
    }) },
    purchase = { aliases = { "Order Completed" }, mappings = join(LINES, {
      { source = { "properties.transaction_id", "properties.order_id" }, target = "transaction_id" },
      prop "tax",
      prop "shipping",
      prop "affiliation",
    }) },
    refund = { aliases = { "Order Refunded" }, mappings = join(LINES, {
      { source = { "properties.transaction_id", "properties.order_id" }, target = "transaction_id" },
    }) },
    view_promotion = { aliases = { "Promotion Viewed" }, mappings = PROMOTION },
    select_promotion = { aliases = { "Promotion Clicked" }, mappings = PROMOTION },
    search = { aliases = { "Products Searched" }, mappings = {
      { source = { "properties.search_term", "properties.query" }, target = "search_term" },
    } },
    share = { aliases = { "Product Shared" }, mappings = {
      { source = { "properties.share_via", "properties.method" }, target = "method" },
      { source = { "properties.product_id", "properties.sku" }, target = "item_id" },
      { default = "product", target = "content_type" },
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
