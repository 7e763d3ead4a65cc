-- presets/ga4/finance.lua — GA4 events for Finance.
--
-- Applications are GA4's lead events: applied → generate_lead, approved →
-- qualify_lead, funded or opened → close_convert_lead (value and currency
-- when the event has them). Logins are `login`, sign-ups `sign_up`.
-- KYC, transactions, payments and statements go as custom events under
-- their snake_case names, their properties as params.

local AMOUNT = {
  { source = { "properties.value", "properties.amount", "properties.credit_limit" }, target = "value" },
  prop "currency",
}

local LEAD = join({
  { source = { "properties.lead_source", "properties.card_type", "properties.loan_type",
               "properties.account_type", "properties.product_name" }, target = "lead_source" },
}, AMOUNT)

return {
  integration = "ga4",
  name = "finance",
  version = "1.0.0",
  events = {
    page = { type = "page_view" },
    generate_lead = { aliases = { "Card Applied", "card_applied", "Loan Applied", "loan_applied",
                                  "Lead Generated", "Application Submitted" }, mappings = LEAD },
    qualify_lead = { aliases = { "Card Approved", "card_approved", "Loan Approved", "loan_approved" },
                     mappings = LEAD },
    close_convert_lead = { aliases = { "Loan Funded", "loan_funded", "Account Opened", "account_opened" },
                           mappings = LEAD },
    login = { aliases = { "Logged In", "Signed In", "Login Succeeded", "login_succeeded" }, mappings = {
      { source = { "properties.method", "properties.login_method" }, target = "method" },
    } },
    sign_up = { aliases = { "Signed Up" }, mappings = {
      { source = { "properties.method", "properties.signup_method", "properties.channel" }, target = "method" },
    } },
    search = { aliases = { "Products Searched" }, mappings = {
      { source = { "properties.search_term", "properties.query" }, target = "search_term" },
    } },
  },
  default = "pass_through",
}
