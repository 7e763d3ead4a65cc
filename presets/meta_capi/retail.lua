-- presets/meta_capi/retail.lua — Meta standard events for Retail.
--
-- Segment / Datafly names and GA4 names to PageView, ViewContent,
-- AddToCart, AddToWishlist, InitiateCheckout, AddPaymentInfo, Purchase,
-- Search, CompleteRegistration and Lead, with custom_data for catalog
-- matching: content_ids and contents ([{id, quantity, item_price}]) from
-- properties.products[] / items[] (or the one product the properties
-- describe), content_type "product", value, currency, order_id, num_items.
-- Other events are sent as custom events under their own name.

local function num(v)
  local n = tonumber(v)
  if n and n == n then return n end
  return nil
end

-- lines(e) → { {id, quantity, item_price}, … } | nil
local function lines(e)
  local p = e.properties
  if type(p) ~= "table" then return nil end
  local list = (type(p.products) == "table" and p.products[1] ~= nil and p.products)
    or (type(p.items) == "table" and p.items[1] ~= nil and p.items) or { p }
  local out = {}
  for i = 1, #list do
    local it = list[i]
    local id = type(it) == "table" and (it.product_id or it.sku or it.item_id or it.id) or nil
    if id ~= nil then
      out[#out + 1] = { id = tostring(id), quantity = num(it.quantity) or 1, item_price = num(it.price) }
    end
  end
  return out[1] and out or nil
end

local function contents(_, e) return lines(e) end

local function content_ids(_, e)
  local l = lines(e)
  if not l then return nil end
  local ids = {}
  for i = 1, #l do ids[i] = l[i].id end
  return ids
end

local function num_items(_, e)
  local l = lines(e)
  if not l then return nil end
  local n = 0
  for i = 1, #l do n = n + l[i].quantity end
  return n
end

local PRODUCT = {
  { source = { "properties.value", "properties.price" }, target = "custom_data.value" },
  { source = "properties.currency", target = "custom_data.currency" },
  { target = "custom_data.content_ids", fn = content_ids },
  { target = "custom_data.contents", fn = contents },
  { default = "product", target = "custom_data.content_type" },
  { source = { "properties.name", "properties.item_name" }, target = "custom_data.content_name" },
  { source = { "properties.category", "properties.item_category" }, target = "custom_data.content_category" },
}

local CART = {
  { source = { "properties.value", "properties.revenue", "properties.total" }, target = "custom_data.value" },
  { source = "properties.currency", target = "custom_data.currency" },
  { target = "custom_data.content_ids", fn = content_ids },
  { target = "custom_data.contents", fn = contents },
  { default = "product", target = "custom_data.content_type" },
  { target = "custom_data.num_items", fn = num_items },
}

return {
  integration = "meta_capi",
  name = "retail",
  version = "1.0.0",
  events = {
    page = { type = "PageView" },
    view_content = { type = "ViewContent", aliases = { "Product Viewed", "view_item" }, mappings = PRODUCT },
    add_to_cart = { type = "AddToCart", aliases = { "Product Added" }, mappings = PRODUCT },
    add_to_wishlist = { type = "AddToWishlist", aliases = { "Product Added to Wishlist" }, mappings = PRODUCT },
    initiate_checkout = { type = "InitiateCheckout", aliases = { "Checkout Started", "begin_checkout" },
                          mappings = CART },
    add_payment_info = { type = "AddPaymentInfo", aliases = { "Payment Info Entered" }, mappings = CART },
    purchase = { type = "Purchase", aliases = { "Order Completed" }, mappings = join(CART, {
      { source = { "properties.order_id", "properties.transaction_id" }, target = "custom_data.order_id" },
    }) },
    search = { type = "Search", aliases = { "Products Searched" }, mappings = {
      { source = { "properties.query", "properties.search_term" }, target = "custom_data.search_string" },
    } },
    complete_registration = { type = "CompleteRegistration", aliases = { "Signed Up", "sign_up" }, mappings = {
      { source = { "properties.method", "properties.signup_method" }, target = "custom_data.status" },
    } },
    lead = { type = "Lead", aliases = { "Lead Generated", "generate_lead", "Newsletter Subscribed" } },
  },
  default = "pass_through",
}
