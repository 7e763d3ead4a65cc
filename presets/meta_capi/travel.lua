-- presets/meta_capi/travel.lua — Meta standard events for Travel.
--
-- Searches are Search, viewed flights and hotels ViewContent, a started
-- booking InitiateCheckout and a completed one Purchase, with the travel
-- fields Meta's travel ads read from custom_data (origin_airport,
-- destination_airport, departing_departure_date, returning_departure_date,
-- checkin_date, checkout_date, num_adults, content_type flight / hotel).
-- Both "Flight Searched" and flight_searched are accepted; other events are
-- sent as custom events under their own name.

local function content_type(_, e)
  local p = e.properties
  if type(p) ~= "table" then return nil end
  local t = p.booking_type or p.product_type
  if t == "flight" or t == "hotel" then return t end
  if p.flight_id or p.flight_number or p.airline then return "flight" end
  if p.hotel_id or p.hotel_name or p.check_in_date then return "hotel" end
  return nil
end

local function content_ids(_, e)
  local p = e.properties
  if type(p) ~= "table" then return nil end
  local id = p.flight_id or p.hotel_id or p.flight_number or p.booking_id
  return id ~= nil and { tostring(id) } or nil
end

local TRIP = {
  { source = "properties.origin", target = "custom_data.origin_airport" },
  { source = "properties.destination", target = "custom_data.destination_airport" },
  { source = "properties.departure_date", target = "custom_data.departing_departure_date" },
  { source = "properties.return_date", target = "custom_data.returning_departure_date" },
  { source = "properties.check_in_date", target = "custom_data.checkin_date" },
  { source = "properties.check_out_date", target = "custom_data.checkout_date" },
  { source = { "properties.passengers", "properties.guests" }, target = "custom_data.num_adults" },
  { target = "custom_data.content_type", fn = content_type },
}

local MONEY = {
  { source = { "properties.value", "properties.price" }, target = "custom_data.value" },
  { source = "properties.currency", target = "custom_data.currency" },
  { target = "custom_data.content_ids", fn = content_ids },
}

return {
  integration = "meta_capi",
  name = "travel",
  version = "1.0.0",
  events = {
    page = { type = "PageView" },
    search = { type = "Search", aliases = { "Flight Searched", "flight_searched", "Hotel Searched",
      "hotel_searched", "Car Searched", "car_searched", "Products Searched" }, mappings = join({
        { source = { "properties.query", "properties.destination", "properties.pickup_location" },
          target = "custom_data.search_string" },
      }, TRIP) },
    view_content = { type = "ViewContent", aliases = { "Flight Viewed", "flight_viewed", "Hotel Viewed",
                                                       "hotel_viewed" }, mappings = join(TRIP, MONEY) },
    initiate_checkout = { type = "InitiateCheckout", aliases = { "Booking Started", "booking_started" },
                          mappings = join(TRIP, MONEY) },
    purchase = { type = "Purchase", aliases = { "Booking Completed", "booking_completed", "Order Completed" },
      mappings = join(TRIP, MONEY, {
        { source = { "properties.booking_id", "properties.order_id" }, target = "custom_data.order_id" },
        { default = 1, target = "custom_data.num_items" },
      }) },
    complete_registration = { type = "CompleteRegistration", aliases = { "Signed Up" } },
  },
  default = "pass_through",
}
