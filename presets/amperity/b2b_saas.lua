-- presets/amperity/b2b_saas.lua — Amperity blueprint v1.8.0, B2B / SaaS.
--
-- Sign-up, authentication, trial, subscription, collaboration and product
-- usage events. The account (company) id is read from properties.account_id,
-- falling back to the event's group_id. Invitee emails are sent hashed only
-- (invitee_email_sha256): the invitee has not consented to anything yet. The
-- global mappings (global.lua) run first; unmapped events pass through.

local ACCOUNT = {
  { source = { "properties.account_id", "group_id" }, target = "account_id" },
  prop "account_name",
}
local PLAN = { prop "plan", prop "billing_cycle" }
local SUBSCRIPTION = join({
  prop "subscription_id", prop "previous_plan", prop "seats", prop "value",
  prop "currency", prop "mrr",
}, ACCOUNT, PLAN)
local TRIAL = join({ prop "trial_days", prop "trial_end_date" }, ACCOUNT, PLAN)
local INVITATION = join({
  prop "invitation_id", prop "invitee_role",
  { source = "properties.invitee_email", target = "invitee_email_sha256", hash = "sha256" },
}, ACCOUNT)
local SEATS = join({ prop "seat_count", prop "role", prop "plan" }, ACCOUNT)

return {
  integration = "amperity",
  name = "b2b_saas",
  version = "1.8.0",
  events = {
    page = { type = "pageview" },
    signed_up = { mappings = join({ prop "signup_method", prop "company_size", prop "industry" },
      ACCOUNT, PLAN) },
    logged_in = { mappings = join({ prop "login_method" }, ACCOUNT) },
    logged_out = { mappings = ACCOUNT },
    password_reset_requested = { mappings = join({ prop "method" }, ACCOUNT) },
    trial_started = { mappings = TRIAL },
    trial_converted = { mappings = join(TRIAL, { prop "value", prop "currency" }) },
    trial_expired = { mappings = TRIAL },
    subscription_started = { mappings = SUBSCRIPTION },
    subscription_upgraded = { mappings = SUBSCRIPTION },
    subscription_downgraded = { mappings = SUBSCRIPTION },
    subscription_cancelled = { mappings = join(SUBSCRIPTION, { prop "cancellation_reason" }) },
    subscription_renewed = { mappings = SUBSCRIPTION },
    feature_used = { mappings = join({
      prop "feature_name", prop "feature_category", prop "usage_count",
    }, ACCOUNT) },
    invitation_sent = { mappings = INVITATION },
    invitation_accepted = { mappings = INVITATION },
    seat_added = { mappings = SEATS },
    seat_removed = { mappings = SEATS },
    integration_connected = { mappings = join({
      prop "integration_name", prop "integration_category",
    }, ACCOUNT) },
  },
  default = "pass_through",
}
