// Consent: Google Consent Mode v2, OneTrust and explicit datafly.consent()
// mapped to the nested consent shape Amperity receives.
import test from 'node:test';
import assert from 'node:assert/strict';
import { sdk, makeDatafly, settle } from '../test-support/fake-browser.mjs';

const { googleConsent, oneTrustCategories, mapConsent, collectConsent, mergeConsent } = sdk._internals;

// What gtag() does: it pushes its `arguments` object, not an array.
function gtag(dataLayer) { return function () { dataLayer.push(arguments); }; }

const DENIED_ALL = { ad_storage: 'denied', ad_user_data: 'denied', ad_personalization: 'denied', analytics_storage: 'denied' };

test('Google Consent Mode: an update overrides the default', () => {
  const dataLayer = [];
  gtag(dataLayer)('consent', 'default', { ...DENIED_ALL, wait_for_update: 500 });
  dataLayer.push({ event: 'gtm.js' });
  gtag(dataLayer)('consent', 'update', { analytics_storage: 'granted' });
  assert.deepEqual(googleConsent(dataLayer), { ...DENIED_ALL, analytics_storage: 'granted' });
});

test('Google Consent Mode: a default pushed after an update does not undo it', () => {
  const dataLayer = [];
  gtag(dataLayer)('consent', 'update', { ad_storage: 'granted' });
  gtag(dataLayer)('consent', 'default', DENIED_ALL);
  assert.equal(googleConsent(dataLayer).ad_storage, 'granted');
  assert.equal(googleConsent(dataLayer).analytics_storage, 'denied');
});

test('Google Consent Mode: the latest update wins; arrays work like Arguments', () => {
  const dataLayer = [
    ['consent', 'default', DENIED_ALL],
    ['consent', 'update', { ad_storage: 'granted', ad_user_data: 'granted' }],
    ['consent', 'update', { ad_storage: 'denied' }],
  ];
  assert.deepEqual(googleConsent(dataLayer), { ...DENIED_ALL, ad_user_data: 'granted' });
});

test('Google Consent Mode: region-scoped defaults and non-consent commands are ignored', () => {
  const dataLayer = [];
  gtag(dataLayer)('js', new Date());
  gtag(dataLayer)('config', 'G-XXXX');
  gtag(dataLayer)('consent', 'default', { ad_storage: 'granted', analytics_storage: 'granted' });
  // pushed later, but only for visitors in Spain or France: not applied
  gtag(dataLayer)('consent', 'default', { ad_storage: 'denied', region: ['ES', 'FR'] });
  gtag(dataLayer)('set', 'ads_data_redaction', true);
  assert.deepEqual(googleConsent(dataLayer), { ad_storage: 'granted', analytics_storage: 'granted' });
  assert.equal(googleConsent([{ event: 'gtm.js' }, null, 'x']), undefined);
  assert.equal(googleConsent(undefined), undefined);
});

test('OneTrust: active groups become categories, unlisted standard groups false', () => {
  assert.deepEqual(oneTrustCategories(',C0001,C0003,'), { C0001: true, C0002: false, C0003: true, C0004: false });
  assert.deepEqual(oneTrustCategories(',C0001,C0002,C0004,C0005,SPD_BG,'),
    { C0001: true, C0002: true, C0003: false, C0004: true, C0005: true, SPD_BG: true });
  assert.equal(oneTrustCategories(undefined), undefined);
});

test('OneTrust: before its script runs, the OptanonConsent cookie is read', () => {
  const cookie = 'isGpcEnabled=0&datestamp=Fri+Apr+17+2026&version=202401.1.0&interactionCount=1'
    + '&groups=C0001:1,C0002:0,C0003:1,C0004:0&AwaitingReconsent=false';
  assert.deepEqual(oneTrustCategories(undefined, cookie), { C0001: true, C0002: false, C0003: true, C0004: false });
  // the global, once set, is the live state
  assert.equal(oneTrustCategories(',C0001,C0002,', cookie).C0002, true);
  assert.equal(oneTrustCategories(undefined, 'isGpcEnabled=0'), undefined);
});

test('maps the canonical booleans: analytics, marketing, functional', () => {
  assert.deepEqual(mapConsent(undefined, { C0001: true, C0002: false, C0003: true, C0004: false }), {
    analytics: false, marketing: false, functional: true,
    categories: { C0001: true, C0002: false, C0003: true, C0004: false },
  });
  assert.deepEqual(mapConsent({ ...DENIED_ALL, analytics_storage: 'granted' }), {
    analytics: true, marketing: false,
    google: { ...DENIED_ALL, analytics_storage: 'granted' },
  });
  // either source granting is enough
  const both = mapConsent({ ad_storage: 'denied', analytics_storage: 'denied' }, { C0002: true, C0004: true });
  assert.equal(both.analytics, true);
  assert.equal(both.marketing, true);
});

test('produces the documented consent shape from Google Consent Mode plus CMP categories', () => {
  const google = { ad_storage: 'denied', ad_user_data: 'denied', ad_personalization: 'denied', analytics_storage: 'granted' };
  const consent = mapConsent(google, { C0001: true, C0002: false }, { functional: true, categories: { ad_personalization: false } });
  assert.deepEqual(consent, {
    analytics: true,
    marketing: false,
    functional: true,
    categories: { C0001: true, C0002: false, ad_personalization: false },
    google,
  });
});

test('explicit consent is merged on top of the CMP state', () => {
  const google = { ...DENIED_ALL, analytics_storage: 'granted', ad_storage: 'granted' };
  const explicit = { analytics: false, google: { ad_storage: 'denied' }, categories: { C0003: true } };
  assert.deepEqual(mapConsent(google, { C0001: true, C0003: false }, explicit), {
    analytics: false,          // explicit boolean wins over analytics_storage granted
    marketing: false,          // recomputed from the merged google state
    functional: true,          // recomputed from the merged categories
    categories: { C0001: true, C0003: true },
    google: { ...DENIED_ALL, analytics_storage: 'granted' },
  });
  // explicit state alone is a consent signal
  assert.deepEqual(mapConsent(undefined, undefined, { marketing: true }), { marketing: true });
});

test('successive datafly.consent() calls accumulate', () => {
  let state = mergeConsent(null, { analytics: true, categories: { C0002: true } });
  state = mergeConsent(state, { marketing: false, categories: { C0004: false }, google: 'nonsense', analytics: 'yes' });
  assert.deepEqual(state, { analytics: true, marketing: false, categories: { C0002: true, C0004: false } });
});

test('consent is absent when no CMP signal exists', () => {
  assert.equal(mapConsent(undefined, undefined, undefined), undefined);
  assert.equal(mapConsent({}, {}, {}), undefined);
  assert.equal(collectConsent({ dataLayer: [{ event: 'gtm.js' }] }, {}, null), undefined);
});

test('collectConsent reads window.dataLayer and window.OnetrustActiveGroups together', () => {
  const win = { dataLayer: [], OnetrustActiveGroups: ',C0001,C0002,' };
  gtag(win.dataLayer)('consent', 'default', DENIED_ALL);
  assert.deepEqual(collectConsent(win, {}, null), {
    analytics: true, marketing: false, functional: false,
    categories: { C0001: true, C0002: true, C0003: false, C0004: false },
    google: DENIED_ALL,
  });
});

test('events carry consent only once a signal exists, and explicit consent persists', async () => {
  const { win, df, clock, net } = makeDatafly();
  df.init({ pipelineKey: 'dk_test_1', endpoint: 'https://collect.example.com', page: false });
  df.track('No CMP yet');
  await df.flush();
  assert.equal('consent' in net.calls[0].body.context, false);

  df.consent({ analytics: true, marketing: false });
  win.OnetrustActiveGroups = ',C0001,C0003,';
  df.track('After consent');
  await df.flush();
  assert.deepEqual(net.calls[1].body.context.consent, {
    analytics: true, marketing: false, functional: true,
    categories: { C0001: true, C0002: false, C0003: true, C0004: false },
  });

  // a later page load (same storage) still carries the explicit choice
  const next = sdk.createDatafly({ ...win, OnetrustActiveGroups: undefined }, { now: clock.now });
  next.init({ pipelineKey: 'dk_test_1', endpoint: 'https://collect.example.com', page: false });
  next.track('Next page');
  await next.flush();
  await settle();
  assert.deepEqual(net.calls[2].body.context.consent, { analytics: true, marketing: false });
});
