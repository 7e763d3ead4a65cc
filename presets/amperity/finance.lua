-- presets/amperity/finance.lua — Amperity blueprint v1.8.0, Finance & Banking.
--
-- Account, KYC, login, transaction, payment, card and loan lifecycle events.
-- Amounts keep their own field (`amount`) and are also written as `value` so
-- Amperity aggregations can sum every vertical the same way. No account
-- numbers are mapped: only the ids the site chooses to send in properties.
-- The global mappings (global.lua) run first; unmapped events pass through.

local AMOUNT = {
  prop "amount",
  { source = { "properties.value", "properties.amount" }, target = "value" },
  prop "currency",
}
local ACCOUNT = { prop "account_id", prop "account_type" }
local KYC = { prop "kyc_method", prop "verification_level", prop "provider" }
local LOGIN = { prop "login_method", prop "mfa_used" }
local TRANSACTION = join({
  prop "transaction_id", prop "transaction_type", prop "channel",
}, AMOUNT, ACCOUNT)
local CARD = { prop "application_id", prop "card_type", prop "card_product", prop "card_network" }
local LOAN = join({
  prop "loan_id", prop "application_id", prop "loan_type", prop "term_months",
  prop "interest_rate",
}, AMOUNT)

return {
  integration = "amperity",
  name = "finance",
  version = "1.8.0",
  events = {
    page = { type = "pageview" },
    account_opened = { mappings = join(ACCOUNT, { prop "product_name", prop "channel" }) },
    account_closed = { mappings = join(ACCOUNT, { prop "reason" }) },
    kyc_started = { mappings = KYC },
    kyc_completed = { mappings = KYC },
    kyc_failed = { mappings = join(KYC, { prop "failure_reason" }) },
    login_succeeded = { mappings = LOGIN },
    login_failed = { mappings = join(LOGIN, { prop "failure_reason" }) },
    transaction_initiated = { mappings = TRANSACTION },
    transaction_completed = { mappings = TRANSACTION },
    transaction_failed = { mappings = join(TRANSACTION, { prop "failure_reason" }) },
    payment_made = { mappings = join({
      prop "payment_id", prop "payee", prop "payment_method", prop "payment_type",
    }, AMOUNT, ACCOUNT) },
    transfer_completed = { mappings = join({
      prop "transfer_id", prop "transfer_type", prop "from_account_id", prop "to_account_id",
    }, AMOUNT) },
    card_applied = { mappings = CARD },
    card_approved = { mappings = join(CARD, { prop "credit_limit", prop "currency" }) },
    card_activated = { mappings = join(CARD, { prop "card_id" }) },
    loan_applied = { mappings = LOAN },
    loan_approved = { mappings = LOAN },
    loan_funded = { mappings = join(LOAN, { prop "funded_date" }) },
    statement_viewed = { mappings = {
      prop "statement_id", prop "account_id", prop "statement_period", prop "format",
    } },
  },
  default = "pass_through",
}
