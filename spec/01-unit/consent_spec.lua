-- spec/01-unit/consent_spec.lua — which consent lets an event go to a
-- destination (signal.pipeline.consent): the canonical booleans first, then
-- the categories map, then Google Consent Mode; nothing said = not granted.
-- And the rules the destinations declare, with the integration's override.
local consent = require "signal.pipeline.consent"
local destinations = require "signal.destinations"
local config = require "signal.config"

local function ev(c) return { context = { consent = c } } end

describe("consent categories", function()
  -- { consent object, category, granted }
  local CASES = {
    { { analytics = true }, "analytics", true },
    { { analytics = false }, "analytics", false },
    { { marketing = true }, "marketing", true },
    { { marketing = true }, "advertising", true },
    { { functional = true }, "functional", true },
    -- the canonical boolean wins over everything else the page said
    { { analytics = false, google = { analytics_storage = "granted" } }, "analytics", false },
    { { marketing = false, categories = { marketing = true } }, "marketing", false },
    -- a categories map (a CMP's own names) when there is no boolean
    { { categories = { analytics = true } }, "analytics", true },
    { { categories = { advertising = true } }, "marketing", true },
    { { categories = { marketing = false, advertising = true } }, "marketing", false },
    -- Google Consent Mode when nothing else speaks
    { { google = { analytics_storage = "granted" } }, "analytics", true },
    { { google = { analytics_storage = "denied" } }, "analytics", false },
    { { google = { ad_storage = "granted" } }, "marketing", true },
    { { google = { ad_storage = "denied", analytics_storage = "granted" } }, "marketing", false },
    { { google = { functionality_storage = "granted" } }, "functional", true },
    -- absence is not consent
    { {}, "analytics", false },
    { { categories = {}, google = {} }, "marketing", false },
    { { google = { ad_user_data = "granted" } }, "marketing", false },
    { nil, "analytics", false },
    { "yes", "analytics", false },
  }
  for i, c in ipairs(CASES) do
    it(("case %d: %s is %s"):format(i, c[2], c[3] and "granted" or "not granted"), function()
      assert.equal(c[3], consent.granted(c[1], c[2]))
    end)
  end
end)

describe("a consent rule", function()
  it("blocks an event that lacks a required category and names it", function()
    local rule = consent.rule({ "analytics" })
    assert.is_nil(consent.blocked(rule, ev({ analytics = true })))
    assert.equal("consent: needs analytics", consent.blocked(rule, ev({ analytics = false })))
    assert.equal("consent: needs analytics", consent.blocked(rule, {}))
    assert.equal("consent: needs analytics", consent.blocked(rule, { context = {} }))
  end)

  it("names only the missing categories when several are required", function()
    local rule = consent.rule({ "analytics", "advertising" })
    assert.same({ "analytics", "marketing" }, rule.categories)
    assert.equal("consent: needs marketing", consent.blocked(rule, ev({ analytics = true })))
    assert.equal("consent: needs analytics and marketing", consent.blocked(rule, ev({})))
    assert.is_nil(consent.blocked(rule, ev({ analytics = true, marketing = true })))
  end)

  it("is no rule at all for an empty list (send every event)", function()
    assert.is_nil(consent.rule({}))
    assert.is_nil(consent.rule(nil))
    assert.is_nil(consent.blocked(nil, ev({})))
  end)

  it("is declared by GA4 (analytics) and Meta (marketing), not by Amperity or the webhook", function()
    assert.same({ "analytics" }, destinations.get("ga4").consent.requires)
    assert.same({ "marketing" }, destinations.get("meta_capi").consent.requires)
    assert.is_nil(destinations.get("amperity").consent)
    assert.is_nil(destinations.get("webhook").consent)
  end)

  it("is overridden per integration by consent_required, validated", function()
    local function validate(over)
      local integ = { type = "ga4", measurement_id = "G-ABC123", api_secret = "s3cret" }
      for k, v in pairs(over) do integ[k] = v end
      return config.validate({ pipelines = { { key = "dk_c", integrations = { integ } } } })
    end
    local cfg = assert(validate({ consent_required = "analytics,advertising" }))
    assert.same({ "analytics", "advertising" }, cfg.pipelines[1].integrations[1].consent_required)
    cfg = assert(validate({ consent_required = {} }))
    assert.same({}, cfg.pipelines[1].integrations[1].consent_required)
    local _, errs = validate({ consent_required = { "statistics" } })
    assert.matches("consent_required%[1%]: must be one of analytics, marketing, advertising, functional",
      table.concat(errs, "\n"))
  end)
end)
