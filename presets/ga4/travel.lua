-- presets/ga4/travel.lua — GA4 events for Travel.
--
-- GA4 has no travel events of its own: searches are `search`, a viewed
-- flight or hotel is `view_item`, a booking goes begin_checkout → purchase
-- (→ refund when cancelled), with the travel params GA4 uses for dynamic
-- remarketing (origin, destination, start_date, end_date). Both the
-- Segment-style names ("Flight Searched") and the snake_case ones
-- (flight_searched) are accepted. Loyalty, check-in and review events go
-- as custom events under their snake_case names.

local function num(v)
  local n = tonumber(v)
  if n and n == n then return n end
  return nil
end

-- the booked or viewed thing as the one GA4 item
local function item(_, e)
  local p = e.properties
  if type(p) ~= "table" then return nil end
  local id = p.flight_id or p.hotel_id or p.flight_number or p.booking_id or p.item_id
  local name = p.hotel_name or p.airline or p.booking_type or p.product_type or p.item_name
  if id == nil and name == nil then return nil end
  return { {
    item_id = id ~= nil and tostring(id) or nil,
    item_name = name,
    item_category = p.booking_type or p.product_type,
    price = num(p.price) or num(p.value),
    quantity = num(p.passengers) or num(p.rooms) or 1,
  } }
end

local TRIP = {
  prop "origin",
  prop "destination",
  { source = { "properties.start_date", "properties.departure_date", "properties.check_in_date",
               "properties.pickup_date" }, target = "start_date" },
  { source = { "properties.end_date", "properties.return_date", "properties.check_out_date",
               "properties.dropoff_date" }, target = "end_date" },
}

local SEARCH = join({
  { source = { "properties.search_term", "properties.query", "properties.destination",
               "properties.pickup_location" }, target = "search_term" },
}, TRIP)

local BOOKING = join({
  prop "currency",
  { source = { "properties.value", "properties.price" }, target = "value" },
  prop "coupon",
  { target = "items", fn = item },
}, TRIP)

return {
  integration = "ga4",
  name = "travel",
  version = "1.0.0",
  events = {
    page = { type = "page_view" },
    search = { aliases = { "Flight Searched", "flight_searched", "Hotel Searched", "hotel_searched",
                           "Car Searched", "car_searched", "Products Searched" }, mappings = SEARCH },
    view_item = { aliases = { "Flight Viewed", "flight_viewed", "Hotel Viewed", "hotel_viewed" },
                  mappings = BOOKING },
    begin_checkout = { aliases = { "Booking Started", "booking_started", "Checkout Started" }, mappings = BOOKING },
    purchase = { aliases = { "Booking Completed", "booking_completed", "Order Completed" },
      mappings = join(BOOKING, {
        { source = { "properties.transaction_id", "properties.booking_id", "properties.order_id" },
          target = "transaction_id" },
      }) },
    refund = { aliases = { "Booking Cancelled", "booking_cancelled", "Order Refunded" }, mappings = join({
      { source = { "properties.transaction_id", "properties.booking_id", "properties.order_id" },
        target = "transaction_id" },
      prop "currency",
      { source = { "properties.refund_amount", "properties.value" }, target = "value" },
    }, TRIP) },
    sign_up = { aliases = { "Signed Up" }, mappings = {
      { source = { "properties.method", "properties.signup_method" }, target = "method" },
    } },
    login = { aliases = { "Logged In", "Signed In" }, mappings = {
      { source = { "properties.method", "properties.login_method" }, target = "method" },
    } },
  },
  default = "pass_through",
}
