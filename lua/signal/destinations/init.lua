-- signal.destinations — the registry of destination types: which module
-- implements each `type` of a pipeline's integrations. This file is data;
-- the stages (collect, pipeline, deliver, observe, browser) ask it for a
-- destination's declaration and never name a destination themselves.
--
-- A destination is one folder, lua/signal/destinations/<type>/, whose
-- init.lua returns its declaration (docs/adding-a-destination.md walks
-- through one):
--
--   type, description
--   settings      { fields = {…}, entity_checks = {…} }: its config schema in
--                 signal.config.schema's format (secrets marked secret = true);
--                 signal.config validates every integration of this type
--                 against it and the README's config reference is made from it
--   mapping       how an event becomes one payload:
--                   presets = true     presets/<type>/ holds its blueprints
--                                      (global.lua + one file per vertical);
--                                      its settings then have a `preset` field
--                   shape = "flat"     payload values are scalars, targets plain
--                                      names; "nested": dotted targets build
--                                      objects and tables are kept
--                   base(event, cfg)   the payload before scripts when there is
--                                      no preset (nil: an empty table)
--                   finish(event, payload, cfg) → payload, warning
--                                      fields the destination always sets,
--                                      after every script (optional); the
--                                      warning may be a list of corrections
--                                      made to fit the vendor's limits (each
--                                      shown on the live event; the
--                                      destination counts them in
--                                      signal_payload_corrections_total).
--                                      A nil payload: nothing is sent.
--                   type_target        the payload field the event handler's
--                                      `type` is written to (nil: none)
--                   reserved_targets   { target = why } no mapping may write
--   delivery      { max_batch, batch_size(cfg), rate_limit_key(cfg),
--                   rate_limit (requests/s by default),
--                   batch_key(cfg, payload_json) → only payloads with the
--                   same key share a request (optional; e.g. one visitor) }
--   send(cfg, batch, timeout_ms) → outcome
--                 batch: the payload JSON strings of one request (at most
--                 batch_size); outcome (signal.deliver.http builds them):
--                 { class = "delivered"|"retry"|"permanent"|"dropped",
--                   status, error, retry_after_s, label, response,
--                   request = { method, url, headers } (nothing secret) }
--   explain(cfg, outcome) → the line that says what to fix, or nil
--   status(cfg)   → the non-secret settings the admin status shows
--   consent       (optional) { requires = { "analytics" | "marketing" |
--                 "functional", … } }: the consent categories an event needs
--                 to be sent here (signal.pipeline.consent says how each is
--                 granted; absent consent is not granted). An integration's
--                 consent_required setting overrides it. None declared: every
--                 event is sent (Amperity: consent travels nested in the body).
--   probe(cfg)    (optional) → ok, message: one live check against the vendor
--                 (`signal check --live` runs it for every integration of the
--                 type and prints the message; e.g. GA4 validates a sample
--                 event). Nothing secret in the message.
--   enrichment    (optional) an enrichment provider: { provider, fields,
--                 enabled(cfg), run(ctx, pipeline, cfg, event) → info,
--                 probe = attributes for script probes }. Its result lands in
--                 event.partner_attrs[provider], which every destination of
--                 the pipeline maps from; `fields` are flat event fields it
--                 sets (blueprint paths may name them).
--   browser       (optional) { provider, enabled(ctx, cfg), read(redis,
--                 org_id, canonical_id) }: the allow-listed slice GET
--                 /v1/enrich?provider=… returns
--   sandbox       (optional) the module of its stand-in in `signal sandbox`:
--                 { prefix | match(path), counters, load(fixture), handle(req),
--                 kind(path), control }
local M = {}

-- type → module. Adding a destination is adding a line here.
M.MODULES = {
  amperity = "signal.destinations.amperity",
  ga4 = "signal.destinations.ga4",
  meta_capi = "signal.destinations.meta_capi",
  webhook = "signal.destinations.webhook",
}

-- Mapping scripts that do not say which destination they map for were
-- written when Amperity was the only one: they keep mapping for it.
M.SCRIPT_DEFAULT = "amperity"

local loaded = {}

-- get(type) → the destination's declaration, or nil for an unknown type
function M.get(t)
  local d = loaded[t]
  if d then return d end
  local name = M.MODULES[t]
  if not name then return nil end
  d = require(name)
  loaded[t] = d
  return d
end

-- types() → every registered type, sorted (stable messages and docs)
function M.types()
  local list = {}
  for t in pairs(M.MODULES) do list[#list + 1] = t end
  table.sort(list)
  return list
end

-- with(capability) → the declarations that have it ("enrichment",
-- "browser", "sandbox"), in type order
function M.with(capability)
  local out = {}
  for _, t in ipairs(M.types()) do
    local d = M.get(t)
    if d[capability] ~= nil then out[#out + 1] = d end
  end
  return out
end

-- provider(name) → the declaration whose enrichment or browser provider is
-- called name
function M.provider(name)
  for _, t in ipairs(M.types()) do
    local d = M.get(t)
    if (d.enrichment and d.enrichment.provider == name) or (d.browser and d.browser.provider == name) then
      return d
    end
  end
  return nil
end

-- event_fields() → set of the flat event fields enrichment providers set
function M.event_fields()
  local set = {}
  for _, d in ipairs(M.with("enrichment")) do
    for _, f in ipairs(d.enrichment.fields or {}) do set[f] = true end
  end
  return set
end

return M
