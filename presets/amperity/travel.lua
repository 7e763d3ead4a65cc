-- presets/amperity/travel.lua — Amperity blueprint v1.8.0, Travel vertical.
--
-- Search, view, booking lifecycle, stay and loyalty events. Property names
-- follow the GA4-style travel event spec: properties.origin / destination are
-- IATA codes or city names as sent. The global mappings (global.lua) run
-- first; unmapped events pass through.

local TRIP = {
  prop "origin", prop "destination",
  prop "departure_date", prop "return_date",
  prop "check_in_date", prop "check_out_date",
}

local MONEY = { prop "value", prop "currency" }

local BOOKING = join({
  prop "booking_id",
  { source = { "properties.booking_type", "properties.product_type" }, target = "booking_type" },
  prop "passengers", prop "guests", prop "rooms",
  prop "hotel_id", prop "flight_number", prop "airline",
}, TRIP, MONEY)

local LOYALTY = {
  prop "points", prop "points_balance", prop "loyalty_program", prop "loyalty_tier",
  prop "booking_id",
}

return {
  integration = "amperity",
  name = "travel",
  version = "1.8.0",
  events = {
    page = { type = "pageview" },
    flight_searched = { mappings = join({
      prop "origin", prop "destination", prop "departure_date", prop "return_date",
      prop "passengers", prop "cabin_class", prop "trip_type", prop "results_count",
    }) },
    hotel_searched = { mappings = {
      prop "destination", prop "check_in_date", prop "check_out_date",
      prop "rooms", prop "guests", prop "results_count",
    } },
    car_searched = { mappings = {
      prop "pickup_location", prop "dropoff_location", prop "pickup_date",
      prop "dropoff_date", prop "car_class", prop "results_count",
    } },
    flight_viewed = { mappings = join({
      prop "flight_id", prop "flight_number", prop "airline", prop "origin",
      prop "destination", prop "departure_date", prop "return_date", prop "cabin_class",
      prop "price",
    }, MONEY) },
    hotel_viewed = { mappings = join({
      prop "hotel_id", prop "hotel_name", prop "destination", prop "check_in_date",
      prop "check_out_date", prop "star_rating", prop "price",
    }, MONEY) },
    booking_started = { mappings = BOOKING },
    booking_completed = { mappings = join(BOOKING, { prop "payment_method", prop "coupon" }) },
    booking_cancelled = { mappings = join(BOOKING, { prop "cancellation_reason", prop "refund_amount" }) },
    booking_modified = { mappings = join(BOOKING, { prop "modification_type", prop "change_fee" }) },
    check_in_completed = { mappings = {
      prop "booking_id", prop "flight_number", prop "hotel_id", prop "check_in_method",
      prop "seat",
    } },
    check_out_completed = { mappings = join({
      prop "booking_id", prop "hotel_id", prop "nights",
    }, MONEY) },
    loyalty_points_earned = { mappings = LOYALTY },
    loyalty_points_redeemed = { mappings = join(LOYALTY, { prop "reward_id" }) },
    review_submitted = { mappings = {
      prop "review_id", prop "rating", prop "booking_id", prop "hotel_id",
      prop "property_type",
    } },
  },
  default = "pass_through",
}
