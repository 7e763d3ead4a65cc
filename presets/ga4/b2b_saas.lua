-- presets/ga4/b2b_saas.lua — GA4 events for B2B SaaS.
--
-- Sign-ups and logins are GA4's sign_up and login; demo and contact
-- requests are generate_lead; a subscription that starts (or a trial that
-- converts) is a purchase of the plan, so revenue reports see it. Trials,
-- seats, invitations and feature use go as custom events under their
-- snake_case names.

local function plan_item(_, e)
  local p = e.properties
  if type(p) ~= "table" or (p.plan == nil and p.subscription_id == nil) then return nil end
  local price = tonumber(p.value) or tonumber(p.mrr)
  return { {
    item_id = tostring(p.plan or p.subscription_id),
    item_name = p.plan,
    item_variant = p.billing_cycle,
    price = price,
    quantity = 1,
  } }
end

local SUBSCRIPTION = {
  { source = { "properties.transaction_id", "properties.subscription_id" }, target = "transaction_id" },
  { source = { "properties.value", "properties.mrr" }, target = "value" },
  prop "currency",
  { target = "items", fn = plan_item },
}

return {
  integration = "ga4",
  name = "b2b_saas",
  version = "1.0.0",
  events = {
    page = { type = "page_view" },
    sign_up = { aliases = { "Signed Up", "signed_up", "Account Created" }, mappings = {
      { source = { "properties.method", "properties.signup_method" }, target = "method" },
    } },
    login = { aliases = { "Logged In", "logged_in", "Signed In" }, mappings = {
      { source = { "properties.method", "properties.login_method" }, target = "method" },
    } },
    generate_lead = { aliases = { "Demo Requested", "Lead Generated", "Contact Requested", "Form Submitted" },
      mappings = {
        { source = { "properties.value" }, target = "value" },
        prop "currency",
        { source = { "properties.lead_source", "properties.form_id", "properties.form_name" },
          target = "lead_source" },
      } },
    purchase = { aliases = { "Subscription Started", "subscription_started", "Trial Converted",
                             "trial_converted", "Order Completed" }, mappings = SUBSCRIPTION },
    search = { aliases = { "Products Searched" }, mappings = {
      { source = { "properties.search_term", "properties.query" }, target = "search_term" },
    } },
  },
  default = "pass_through",
}
