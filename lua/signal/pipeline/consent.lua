-- signal.pipeline.consent — whether an event may go to a destination, from
-- the consent the visitor gave.
--
--   local rule = consent.rule({ "analytics" })   -- once per integration (nil: no requirement)
--   local why = consent.blocked(rule, event)     -- nil: send; else "consent: needs analytics"
--
-- A destination declares what it needs (`consent = { requires = { … } }` in
-- its declaration, e.g. analytics for an analytics vendor, marketing for an
-- ad platform); an integration's `consent_required` setting overrides it,
-- `{}` meaning "send regardless". A destination that declares nothing
-- receives every event, with the consent object nested in the payload, and
-- the customer's own systems decide. The processor asks before mapping; a blocked event is not queued
-- for that destination, is counted and shows in live events as skipped.
--
-- The event's consent is context.consent, verbatim as the page sent it
-- (datafly.js: booleans analytics / marketing / functional, a `categories`
-- map such as OneTrust's, and Google Consent Mode under `google`). A
-- category is granted when, in this order (the first that speaks decides):
--   1. the boolean context.consent.<category> — datafly.js already folds
--      Consent Mode and OneTrust into it, and an explicit choice wins there;
--   2. context.consent.categories.<category> (a boolean; "advertising" and
--      "marketing" are the same category);
--   3. Google Consent Mode: analytics ← analytics_storage, marketing ←
--      ad_storage, functional ← functionality_storage, "granted" or "denied".
-- Nothing said about a category is NOT granted: a destination that requires
-- consent gets no event from a visitor who was never asked (server-side
-- senders pass the visitor's consent in context.consent, or the integration
-- sets consent_required = {}).
local type, ipairs, concat = type, ipairs, table.concat

local M = {}

-- category → { canonical boolean key, categories keys, Consent Mode key }
M.CATEGORIES = {
  analytics = { flag = "analytics", cats = { "analytics" }, google = "analytics_storage" },
  marketing = { flag = "marketing", cats = { "marketing", "advertising" }, google = "ad_storage" },
  functional = { flag = "functional", cats = { "functional" }, google = "functionality_storage" },
}
M.ALIASES = { advertising = "marketing" }
-- the names the config accepts, in doc order
M.NAMES = { "analytics", "marketing", "advertising", "functional" }

-- granted(consent, category) → true | false (see the top for the order)
function M.granted(c, category)
  if type(c) ~= "table" then return false end
  local spec = M.CATEGORIES[M.ALIASES[category] or category]
  if not spec then return false end
  local v = c[spec.flag]
  if type(v) == "boolean" then return v end
  local cats = c.categories
  if type(cats) == "table" then
    for _, k in ipairs(spec.cats) do
      v = cats[k]
      if type(v) == "boolean" then return v end
    end
  end
  local g = c.google
  if type(g) == "table" then
    v = g[spec.google]
    if v == "granted" then return true end
    if v == "denied" then return false end
  end
  return false
end

-- rule(list) → a compiled rule, or nil when nothing is required. Aliases
-- are resolved and duplicates dropped once, here, not per event.
function M.rule(list)
  if type(list) ~= "table" or list[1] == nil then return nil end
  local cats, seen = {}, {}
  for _, c in ipairs(list) do
    c = M.ALIASES[c] or c
    if M.CATEGORIES[c] and not seen[c] then
      seen[c] = true
      cats[#cats + 1] = c
    end
  end
  if #cats == 0 then return nil end
  return { categories = cats, reason = "consent: needs " .. concat(cats, " and ") }
end

-- blocked(rule, event) → nil when the event may be sent, else the reason
-- ("consent: needs marketing"), naming only the categories missing
function M.blocked(rule, e)
  if not rule then return nil end
  local ctx = e.context
  local c = type(ctx) == "table" and ctx.consent or nil
  local cats = rule.categories
  local missing
  for i = 1, #cats do
    if not M.granted(c, cats[i]) then
      missing = missing or {}
      missing[#missing + 1] = cats[i]
    end
  end
  if not missing then return nil end
  if #missing == #cats then return rule.reason end
  return "consent: needs " .. concat(missing, " and ")
end

return M
