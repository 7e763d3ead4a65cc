// Browser personalization: datafly.profile, onProfileReady(), refreshProfile().
import test from 'node:test';
import assert from 'node:assert/strict';
import { makeDatafly, fakeFetch, response, settle } from '../test-support/fake-browser.mjs';

const CONFIG = {
  pipelineKey: 'dk_live_demo',
  endpoint: 'https://collect.example.com',
  enrich: { endpoint: 'https://id.example.com', providers: ['amperity'] },
};
const ENRICH_URL = 'https://id.example.com/v1/enrich?provider=amperity';

// Answers the collector with 200 and /v1/enrich from `enrich(n)`, n = the
// enrich call's number.
function network(enrich) {
  let n = 0;
  return fakeFetch((url) => (url.includes('/v1/enrich') ? enrich(++n) : response(200, { ok: true })));
}

test('init fetches the allowlisted attributes and onProfileReady() resolves with them', async () => {
  const net = network(() => response(200, { provider: 'amperity', attributes: { Persona: 'Value Hunter', FavoriteBrand: 'Acme' } }));
  const { win, df } = makeDatafly({ net });
  assert.deepEqual(df.profile.amperity, {}, 'an object to read before anything is known');
  df.init(CONFIG);
  assert.equal(net.calls[0].url, ENRICH_URL);
  assert.equal(net.calls[0].init.credentials, 'include');
  assert.equal(net.calls[0].init.method, undefined, 'a plain GET');
  const profile = await df.onProfileReady();
  assert.equal(profile, df.profile);
  assert.deepEqual(df.profile.amperity, { Persona: 'Value Hunter', FavoriteBrand: 'Acme' });
  assert.equal(win.dispatched.length, 1);
  assert.equal(win.dispatched[0].type, 'datafly:profile');
  assert.deepEqual(win.dispatched[0].detail.amperity.Persona, 'Value Hunter');
});

test('onProfileReady() resolves for a first-touch visitor with {} attributes', async () => {
  const net = network(() => response(200, { provider: 'amperity', attributes: {} }));
  const { df } = makeDatafly({ net });
  df.init(CONFIG);
  assert.deepEqual((await df.onProfileReady()).amperity, {});
});

test('onProfileReady() resolves when the enrich call fails, keeping {}', async () => {
  for (const failure of [new Error('Failed to fetch'), response(404, { error: { code: 'NOT_FOUND' } }), response(200, 'not json')]) {
    const { win, df } = makeDatafly({ net: network(() => failure) });
    df.init(CONFIG);
    assert.deepEqual((await df.onProfileReady()).amperity, {});
    assert.match(win.console.warnings.join(), /amperity profile unavailable/);
  }
});

test('onProfileReady() resolves after enrich.timeout when the identity hub never answers', async () => {
  const { win, df, clock } = makeDatafly({ net: network(() => new Promise(() => {})) });
  df.init({ ...CONFIG, enrich: { ...CONFIG.enrich, timeout: 2000 } });
  let resolved = false;
  df.onProfileReady().then(() => { resolved = true; });
  await clock.tick(1999);
  assert.equal(resolved, false);
  await clock.tick(1);
  await settle();
  assert.equal(resolved, true);
  assert.match(win.console.warnings.join(), /timed out after 2000 ms/);
});

test('onProfileReady() resolves at init when no enrich is configured, with no request', async () => {
  const { df, net } = makeDatafly();
  df.init({ pipelineKey: 'dk_live_demo', endpoint: 'https://collect.example.com', page: false });
  assert.deepEqual(await df.onProfileReady(), { amperity: {} });
  assert.equal(net.calls.length, 0);
  assert.deepEqual(await df.refreshProfile(), { amperity: {} });
  assert.equal(net.calls.length, 0);
});

test('enrich without its own endpoint uses the collector endpoint; every listed provider is fetched', async () => {
  const net = network(() => response(200, { attributes: { Tier: 'gold' } }));
  const { df } = makeDatafly({ net });
  df.init({ pipelineKey: 'k', endpoint: 'https://collect.example.com/', enrich: { providers: ['amperity', 'other'] } });
  await df.onProfileReady();
  assert.deepEqual(net.calls.slice(0, 2).map((c) => c.url), [
    'https://collect.example.com/v1/enrich?provider=amperity',
    'https://collect.example.com/v1/enrich?provider=other',
  ]);
  assert.deepEqual(df.profile, { amperity: { Tier: 'gold' }, other: { Tier: 'gold' } });
});

test('refreshProfile() delivers the pending identify before re-fetching', async () => {
  const net = network((n) => response(200, { attributes: n === 1 ? {} : { Persona: 'Loyalist' } }));
  const { df } = makeDatafly({ net });
  df.init(CONFIG);
  await df.onProfileReady();
  df.identify('user-123', { email: '[email protected]' });
  const profile = await df.refreshProfile();
  assert.deepEqual(profile.amperity, { Persona: 'Loyalist' });
  const order = net.calls.map((c) => (c.url.includes('/v1/enrich') ? 'enrich' : c.body.batch ? c.body.batch.map((e) => e.type).join('+') : c.body.type));
  assert.deepEqual(order, ['enrich', 'page+identify', 'enrich']);
});

test('refreshProfile() polls 250 ms apart while attributes are empty, up to `retries` times', async () => {
  const net = network((n) => response(200, { attributes: n < 4 ? {} : { Persona: 'Value Hunter' } }));
  const { win, df, clock } = makeDatafly({ net });
  df.init({ ...CONFIG, page: false });
  await df.onProfileReady();
  const enrichCalls = () => net.calls.filter((c) => c.url === ENRICH_URL).length;

  let result;
  df.refreshProfile().then((p) => { result = p; });
  await settle();
  assert.equal(enrichCalls(), 2);
  await clock.tick(249);
  assert.equal(enrichCalls(), 2);
  await clock.tick(1);
  assert.equal(enrichCalls(), 3);
  await clock.tick(250);
  assert.equal(enrichCalls(), 4);
  assert.deepEqual(result.amperity, { Persona: 'Value Hunter' });
  assert.equal(win.dispatched.length, 2, 'one datafly:profile per init and per refresh');

  // still empty after all retries: resolves anyway with {}
  const empty = makeDatafly({ net: network(() => response(200, { attributes: {} })) });
  empty.df.init({ ...CONFIG, page: false });
  const done = empty.df.refreshProfile({ retries: 2 });
  await empty.clock.tick(1000);
  assert.deepEqual((await done).amperity, {});
  assert.equal(empty.net.calls.length, 4, 'init fetch + 1 + 2 retries');
});

test('a failed refresh keeps the attributes already known', async () => {
  const net = network((n) => (n === 1 ? response(200, { attributes: { Persona: 'Loyalist' } }) : response(503)));
  const { df } = makeDatafly({ net });
  df.init({ ...CONFIG, page: false });
  await df.onProfileReady();
  assert.deepEqual((await df.refreshProfile()).amperity, { Persona: 'Loyalist' });
});
