-- examples/scripts/10_acme_loyalty.lua — an example customer mapping script.
--
-- Drop files like this one into the `scripts_dir` of signal.conf.lua. They
-- extend the pipeline's vertical preset (here: retail) without copying it:
-- Signal runs the preset's global mappings and event handler first, then the
-- scripts in file-name order, then every `transform`. Saving the file
-- reloads it; a broken version is refused and the previous one keeps running.
-- See docs/custom-scripts.md for the full format and how to test it.

-- Helpers are plain local functions; they are compiled once per reload.
local function price_band(price)
  price = tonumber(price)
  if not price then return nil end
  if price < 25 then return "budget" elseif price < 100 then return "mid" end
  return "premium"
end

return {
  integration = "amperity",
  name = "acme_loyalty",
  -- pipelines = { "dk_live_demo" },   -- uncomment to limit this script to some pipelines
  presets = { "retail" },              -- only pipelines using the retail preset

  -- Added to every event, after the preset's 40+ global mappings.
  global = { mappings = {
    { source = "traits.loyalty_id", target = "loyalty_id" },
    { source = "partner_attrs.amperity.PredictedCLV", target = "predicted_clv" },
    { source = "context.page.path", target = "site_section",
      fn = function(path) return path and path:match("^/([^/]+)") or "home" end },
  } },

  events = {
    -- Same key as the preset's handler: also applies to "Product Viewed".
    view_item = { mappings = {
      { source = { "properties.price", "properties.items.1.price" }, target = "price_band", fn = price_band },
      { source = "properties.stock_status", target = "stock_status", default = "unknown" },
    } },
    -- A custom event the preset does not know: give it a type and fields.
    ["Store Visit Booked"] = { type = "store_visit_booked", mappings = {
      { source = "properties.store_id", target = "store_id" },
      { source = "properties.visit_date", target = "visit_date" },
      { source = "traits.email", target = "contact_email_sha256", hash = "sha256" },
    } },
  },

  -- Last step. Return the payload (or nil to keep it), or false to drop the event.
  transform = function(event, payload)
    if event.properties and event.properties.internal_test then return false end
    if type(payload.currency) == "string" then payload.currency = payload.currency:upper() end
    return payload
  end,
}
