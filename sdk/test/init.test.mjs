// The file as the engine serves it, init(), and the events' wire format.
import test from 'node:test';
import assert from 'node:assert/strict';
import vm from 'node:vm';
import { sdk, SDK_SOURCE, makeDatafly, fakeWindow } from '../test-support/fake-browser.mjs';

const { KEYS } = sdk._internals;
const CONFIG = { pipelineKey: 'dk_live_demo', endpoint: 'https://collect.example.com' };
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

// What GET /v1/js/{pipeline_key}/datafly.js returns.
const served = (config) => SDK_SOURCE + '\ndatafly.init(' + JSON.stringify(config) + ');\n';

// Runs script text the way a <script> tag does: `window` is the global object
// and no `module` exists.
function browserContext() {
  const win = fakeWindow();
  const context = vm.createContext(win);
  win.window = win;
  return { win, run: (src) => vm.runInContext(src, context, { filename: 'datafly.js' }) };
}

test('the served file with an appended init() line runs and sends the first page view', async () => {
  const { win, run } = browserContext();
  run(served(CONFIG));
  assert.equal(typeof win.datafly.track, 'function');
  assert.equal(win.datafly.version, '1.8.0');
  await win.clock.tick(200);
  assert.equal(win.net.calls.length, 1);
  assert.equal(win.net.calls[0].url, 'https://collect.example.com/v1/p');
  assert.equal(win.net.calls[0].body.pipelineKey, 'dk_live_demo');
});

test('a second init() is ignored with a warning: the file served twice, or the page calling init too', async () => {
  const { win, run } = browserContext();
  run(served(CONFIG));
  const first = win.datafly;
  run(served({ pipelineKey: 'dk_other', endpoint: 'https://elsewhere.example.com' }));
  run('datafly.init(' + JSON.stringify(CONFIG) + ');');
  assert.equal(win.datafly, first, 'the live instance is kept');
  assert.deepEqual(win.console.warnings, [
    'datafly.js: init() was already called; ignoring this one',
    'datafly.js: init() was already called; ignoring this one',
  ]);
  await win.clock.tick(200);
  assert.equal(win.net.calls.length, 1, 'one automatic page view, to the first endpoint');
  assert.equal(win.net.calls[0].url, 'https://collect.example.com/v1/p');
});

test('the plain file defines datafly without sending anything until the page calls init', async () => {
  const { win, run } = browserContext();
  run(SDK_SOURCE);
  await win.clock.tick(1000);
  assert.equal(win.net.calls.length, 0);
  win.datafly.track('Before Init');
  run('datafly.init(' + JSON.stringify(CONFIG) + ');');
  await win.clock.tick(200);
  assert.deepEqual(win.net.calls[0].body.batch.map((e) => e.type), ['track', 'page']);
});

test('init() without a pipeline key or endpoint warns and stays uninitialized', () => {
  const { win, df } = makeDatafly();
  df.init({ endpoint: 'https://collect.example.com' });
  df.init('dk_live_demo');
  assert.equal(win.console.warnings.length, 2);
  assert.match(win.console.warnings[0], /needs \{pipelineKey, endpoint\}/);
  df.init(CONFIG); // a correct call still works afterwards
  assert.equal(win.console.warnings.length, 2);
});

test('init({page: false}) skips the automatic page view', async () => {
  const { df, clock, net } = makeDatafly();
  df.init({ ...CONFIG, page: false });
  await clock.tick(1000);
  assert.equal(net.calls.length, 0);
});

test('events carry the documented wire format', async () => {
  const { df, clock, net } = makeDatafly();
  df.init(CONFIG);
  await clock.tick(200);
  const page = net.calls[0].body;
  assert.deepEqual(Object.keys(page).sort(),
    ['anonymousId', 'context', 'messageId', 'pipelineKey', 'properties', 'sentAt', 'timestamp', 'type']);
  assert.equal(page.type, 'page');
  assert.match(page.anonymousId, UUID);
  assert.match(page.messageId, UUID);
  assert.equal(page.timestamp, '2026-04-17T15:37:10.484Z');
  assert.equal(page.sentAt, '2026-04-17T15:37:10.684Z');
  assert.deepEqual(Object.keys(page.context).sort(),
    ['campaign', 'library', 'locale', 'page', 'screen', 'session', 'timezone', 'userAgent', 'vendorIds']);
  assert.match(page.context.session.id, UUID);
  assert.equal(page.context.session.count, 1);
});

test('anonymousId is stable across page loads; userId follows identify()', async () => {
  const { win, df, clock, net } = makeDatafly();
  df.init(CONFIG);
  df.identify('user-123', { email: '[email protected]', plan: 'gold' });
  df.track('Product Added', { sku: 'sku-1' });
  await df.flush();
  const [page, identify, track] = net.calls[0].body.batch;
  assert.equal(page.userId, undefined);
  assert.deepEqual([identify.type, identify.userId, identify.traits], ['identify', 'user-123', { email: '[email protected]', plan: 'gold' }]);
  assert.equal(track.userId, 'user-123');
  assert.equal(new Set([page, identify, track].map((e) => e.anonymousId)).size, 1);
  assert.equal(new Set([page, identify, track].map((e) => e.messageId)).size, 3);
  assert.equal(win.localStorage.getItem(KEYS.anon), page.anonymousId);
  assert.equal(win.localStorage.getItem(KEYS.user), 'user-123');

  // next page load, same storage
  const next = sdk.createDatafly(win, { now: clock.now });
  next.init(CONFIG);
  await next.flush();
  assert.equal(net.calls[1].body.anonymousId, page.anonymousId);
  assert.equal(net.calls[1].body.userId, 'user-123');
});

test('page(), track(), identify() and group() shape their fields', async () => {
  const { win, df, net } = makeDatafly();
  df.init({ ...CONFIG, page: false });
  df.page('Product Detail', { category: 'shoes' });
  df.page({ category: 'boots' });
  df.identify({ email: '[email protected]' }); // traits only
  df.group('acme-inc', { name: 'Acme', plan: 'enterprise' });
  df.track('');
  df.group('');
  await df.flush();
  const events = net.calls[0].body.batch;
  assert.deepEqual(events.map((e) => [e.type, e.name, e.properties || e.traits, e.groupId]), [
    ['page', 'Product Detail', { category: 'shoes' }, undefined],
    ['page', undefined, { category: 'boots' }, undefined],
    ['identify', undefined, { email: '[email protected]' }, undefined],
    ['group', undefined, { name: 'Acme', plan: 'enterprise' }, 'acme-inc'],
  ]);
  assert.equal(events[2].userId, undefined);
  assert.deepEqual(win.console.warnings, ['datafly.js: track() needs an event name', 'datafly.js: group() needs a group id']);
});

test('an event is a snapshot: later changes to the caller\'s object do not leak in', async () => {
  const { df, net } = makeDatafly();
  df.init({ ...CONFIG, page: false });
  const props = { items: ['a'], at: new Date(Date.UTC(2026, 3, 17)) };
  df.track('Cart Viewed', props);
  props.items.push('b');
  await df.flush();
  assert.deepEqual(net.calls[0].body.properties, { items: ['a'], at: '2026-04-17T00:00:00.000Z' });
});
