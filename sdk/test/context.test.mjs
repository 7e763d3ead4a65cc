// Context collection: what datafly.js reads from the page into event.context.
import test from 'node:test';
import assert from 'node:assert/strict';
import { sdk, fakeWindow, FakeStorage } from '../test-support/fake-browser.mjs';

const { collectContext, parseCookies, campaignFrom, vendorIds, touchSession, makeStore, SESSION_TIMEOUT, KEYS } = sdk._internals;
const MIN = 60 * 1000;
const T0 = Date.parse('2026-04-17T15:37:10.484Z');
const plain = (o) => JSON.parse(JSON.stringify(o)); // what goes on the wire: undefined fields vanish

test('collects page, locale, timezone, screen, library and user agent from the window', () => {
  const win = fakeWindow();
  const ctx = plain(collectContext(win, makeStore(() => win.localStorage), T0));
  assert.deepEqual(ctx.page, {
    url: 'https://www.example.com/shoes/running?utm_source=newsletter&utm_medium=email&utm_campaign=spring_sale#top',
    path: '/shoes/running',
    referrer: 'https://www.google.com/',
    title: 'Running Shoes | Acme',
    search: '?utm_source=newsletter&utm_medium=email&utm_campaign=spring_sale',
  });
  assert.equal(ctx.locale, 'en-GB');
  assert.equal(ctx.timezone, 'Europe/London');
  assert.deepEqual(ctx.screen, { width: 1512, height: 982, density: 2 });
  assert.deepEqual(ctx.library, { name: 'datafly.js', version: '1.8.0' });
  assert.match(ctx.userAgent, /Safari/);
});

test('builds the campaign from utm_* parameters, decoding them', () => {
  assert.deepEqual(
    campaignFrom('?utm_source=google&utm_medium=cpc&utm_campaign=Spring%20Sale&utm_term=running+shoes&utm_content=ad-2&gclid=abc'),
    { source: 'google', medium: 'cpc', name: 'Spring Sale', term: 'running shoes', content: 'ad-2' },
  );
  const win = fakeWindow();
  const ctx = collectContext(win, makeStore(() => win.localStorage), T0);
  assert.deepEqual(ctx.campaign, { source: 'newsletter', medium: 'email', name: 'spring_sale' });
});

test('leaves the campaign out when the URL has no utm_* parameter', () => {
  assert.equal(campaignFrom('?q=shoes&page=2'), undefined);
  assert.equal(campaignFrom(''), undefined);
  const win = fakeWindow({ location: { href: 'https://www.example.com/', pathname: '/', search: '' } });
  assert.equal('campaign' in plain(collectContext(win, makeStore(() => win.localStorage), T0)), false);
});

test('reads vendor ids from the _ga, _fbp, _fbc and _ttp cookies', () => {
  const cookie = 'consent=1; _ga=GA1.1.1234567890.1700000000; _fbp=fb.1.1700000000000.987654321; '
    + '_fbc=fb.1.1700000000000.IwAR2xyz; _ttp=2Lz%2Bq9abc; _ga_ABC123=GS1.1.170.1.1';
  assert.deepEqual(vendorIds(parseCookies(cookie)), {
    ga: 'GA1.1.1234567890.1700000000',
    fbp: 'fb.1.1700000000000.987654321',
    fbc: 'fb.1.1700000000000.IwAR2xyz',
    ttp: '2Lz+q9abc',
  });
  const win = fakeWindow();
  assert.deepEqual(collectContext(win, makeStore(() => win.localStorage), T0).vendorIds,
    { ga: 'GA1.1.1234567890.1700000000', fbp: 'fb.1.1700000000000.987654321' });
});

test('leaves vendor ids out when none of the cookies is set', () => {
  const win = fakeWindow({ document: { cookie: 'sessionid=abc; theme=dark' } });
  assert.equal(collectContext(win, makeStore(() => win.localStorage), T0).vendorIds, undefined);
});

test('parses cookie strings the way browsers write them', () => {
  assert.deepEqual(parseCookies(''), {});
  assert.deepEqual(parseCookies(undefined), {});
  // the first of two same-named cookies is the most specific path: it wins
  assert.deepEqual(parseCookies('a=1; a=2'), { a: '1' });
  // values may contain '='; malformed escapes are kept verbatim
  assert.deepEqual(parseCookies('tok=a=b==; bad=%E0%A4%A; noval; =x'), { tok: 'a=b==', bad: '%E0%A4%A' });
  // names that collide with Object.prototype are ordinary cookies
  assert.deepEqual(parseCookies('constructor=1'), { constructor: '1' });
});

test('survives a document whose cookie getter throws (sandboxed iframe)', () => {
  const win = fakeWindow();
  Object.defineProperty(win.document, 'cookie', { get() { throw new Error('SecurityError'); } });
  const ctx = collectContext(win, makeStore(() => win.localStorage), T0);
  assert.equal(ctx.vendorIds, undefined);
});

test('keeps one session while events arrive less than 30 minutes apart', () => {
  const store = makeStore(() => new FakeStorage());
  const first = touchSession(store, T0);
  assert.equal(first.count, 1);
  assert.match(first.id, /^[0-9a-f-]{36}$/);
  // each event slides the inactivity window
  assert.deepEqual(touchSession(store, T0 + 29 * MIN), first);
  assert.deepEqual(touchSession(store, T0 + 58 * MIN), first);
});

test('starts a new session after 30 minutes of inactivity and counts it', () => {
  const store = makeStore(() => new FakeStorage());
  const first = touchSession(store, T0);
  const second = touchSession(store, T0 + SESSION_TIMEOUT + 1);
  assert.notEqual(second.id, first.id);
  assert.equal(second.count, 2);
  const third = touchSession(store, T0 + SESSION_TIMEOUT + 1 + 31 * MIN);
  assert.equal(third.count, 3);
  assert.notEqual(third.id, second.id);
});

test('the session in context comes from storage shared with other tabs', () => {
  const storage = new FakeStorage();
  const win = fakeWindow({ localStorage: storage });
  const a = collectContext(win, makeStore(() => storage), T0).session;
  // another tab (another store over the same localStorage) continues it
  const b = collectContext(win, makeStore(() => storage), T0 + 10 * MIN).session;
  assert.deepEqual(b, a);
  assert.equal(JSON.parse(storage.getItem(KEYS.session)).last, T0 + 10 * MIN);
});

test('a corrupt stored session is replaced, not fatal', () => {
  const storage = new FakeStorage({ [KEYS.session]: '{not json' });
  const s = touchSession(makeStore(() => storage), T0);
  assert.equal(s.count, 1);
});

test('falls back to memory when localStorage is unavailable', () => {
  const throwing = { getItem() { throw new Error('SecurityError'); }, setItem() { throw new Error('QuotaExceededError'); }, removeItem() {} };
  for (const get of [() => throwing, () => { throw new Error('SecurityError'); }, () => null]) {
    const store = makeStore(get);
    store.set('k', 'v');
    assert.equal(store.get('k'), 'v');
    const s = touchSession(store, T0);
    assert.deepEqual(touchSession(store, T0 + MIN), s);
  }
});
