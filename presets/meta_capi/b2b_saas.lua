-- presets/meta_capi/b2b_saas.lua — Meta standard events for B2B SaaS.
--
-- Sign-ups are CompleteRegistration, trials StartTrial, paid subscriptions
-- (and converted trials) Subscribe with value, currency and predicted_ltv,
-- demo and contact requests Lead and Schedule. Other events are sent as
-- custom events under their own name.

local PLAN = {
  { source = { "properties.value", "properties.mrr" }, target = "custom_data.value" },
  { source = "properties.currency", target = "custom_data.currency" },
  { source = "properties.plan", target = "custom_data.content_name" },
  { source = { "properties.predicted_ltv", "properties.ltv" }, target = "custom_data.predicted_ltv" },
}

return {
  integration = "meta_capi",
  name = "b2b_saas",
  version = "1.0.0",
  events = {
    page = { type = "PageView" },
    complete_registration = { type = "CompleteRegistration", aliases = { "Signed Up", "signed_up",
      "Account Created" }, mappings = {
        { source = { "properties.plan" }, target = "custom_data.content_name" },
      } },
    start_trial = { type = "StartTrial", aliases = { "Trial Started", "trial_started" }, mappings = PLAN },
    subscribe = { type = "Subscribe", aliases = { "Subscription Started", "subscription_started",
      "Trial Converted", "trial_converted" }, mappings = PLAN },
    lead = { type = "Lead", aliases = { "Demo Requested", "Lead Generated", "Form Submitted" } },
    schedule = { type = "Schedule", aliases = { "Meeting Booked", "Demo Scheduled" } },
    contact = { type = "Contact", aliases = { "Contact Requested" } },
  },
  default = "pass_through",
}
