-- presets/meta_capi/finance.lua — Meta standard events for Finance.
--
-- Applications are SubmitApplication, an opened account or a sign-up
-- CompleteRegistration, a lead form Lead and a contact request Contact;
-- amounts go as value and currency. Approvals, funded loans, KYC,
-- transactions and logins have no standard event: they are sent as custom
-- events under their own name, their properties in custom_data.

local AMOUNT = {
  { source = { "properties.value", "properties.amount", "properties.credit_limit" },
    target = "custom_data.value" },
  { source = "properties.currency", target = "custom_data.currency" },
  { source = { "properties.card_type", "properties.loan_type", "properties.account_type",
               "properties.product_name" }, target = "custom_data.content_category" },
}

return {
  integration = "meta_capi",
  name = "finance",
  version = "1.0.0",
  events = {
    page = { type = "PageView" },
    submit_application = { type = "SubmitApplication", aliases = { "Card Applied", "card_applied",
      "Loan Applied", "loan_applied", "Application Submitted" }, mappings = AMOUNT },
    complete_registration = { type = "CompleteRegistration", aliases = { "Account Opened", "account_opened",
      "Signed Up" }, mappings = AMOUNT },
    lead = { type = "Lead", aliases = { "Lead Generated", "generate_lead" }, mappings = AMOUNT },
    contact = { type = "Contact", aliases = { "Contact Requested", "Callback Requested" } },
  },
  default = "pass_through",
}
