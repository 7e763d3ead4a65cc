// Batching and delivery: when requests leave, what they look like, how
// failures are retried in order, and the unload path.
import test from 'node:test';
import assert from 'node:assert/strict';
import { sdk, makeDatafly, FakeClock, fakeFetch, response, settle } from '../test-support/fake-browser.mjs';

const { Batcher, buildRequest } = sdk._internals;
const ENDPOINT = 'https://collect.example.com';
const KEY = 'dk_live_demo';

// A Batcher on a fake clock whose sends are recorded and answered by `reply`.
function batcher(reply = () => response(200), opts = {}) {
  const clock = new FakeClock();
  const sent = [];
  const drops = [];
  const b = new Batcher({
    send: (events) => { sent.push(events.map((e) => e.id)); return reply(sent.length, events); },
    drop: (events, res, attempts) => drops.push({ ids: events.map((e) => e.id), status: res && res.status, attempts }),
    set: clock.setTimeout, clear: clock.clearTimeout, random: () => 0.5,
    ...opts,
  });
  return { b, clock, sent, drops };
}
const ev = (id) => ({ id, type: 'track' });

test('holds events for 200 ms, then sends them together', async () => {
  const { b, clock, sent } = batcher();
  b.push(ev(1)); b.push(ev(2)); b.push(ev(3));
  await clock.tick(199);
  assert.deepEqual(sent, []);
  await clock.tick(1);
  assert.deepEqual(sent, [[1, 2, 3]]);
});

test('sends at once when 10 events are queued', async () => {
  const { b, clock, sent } = batcher();
  for (let i = 1; i <= 10; i++) b.push(ev(i));
  await settle();
  assert.deepEqual(sent, [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]);
  assert.equal(clock.pending(), 0, 'no timer left behind');
});

test('never puts more than 10 events in one request', async () => {
  const { b, sent } = batcher();
  for (let i = 1; i <= 23; i++) b.push(ev(i));
  await b.flush();
  assert.deepEqual(sent.map((s) => s.length), [10, 10, 3]);
  assert.deepEqual(sent.flat(), Array.from({ length: 23 }, (_, i) => i + 1));
});

test('splits a batch that would exceed the keepalive body limit', async () => {
  const { b, sent } = batcher();
  for (let i = 1; i <= 4; i++) b.push(ev(i), 25000);
  await b.flush();
  assert.deepEqual(sent, [[1, 2], [3, 4]]);
});

test('flush() sends now and resolves once delivered', async () => {
  const { b, sent } = batcher();
  assert.equal(await b.flush(), undefined, 'nothing queued: resolves at once');
  b.push(ev(1));
  await b.flush();
  assert.deepEqual(sent, [[1]]);
});

test('retries network errors and 5xx with backoff, keeping order', async () => {
  const answers = [new Error('Failed to fetch'), response(503), response(200), response(200)];
  const { b, clock, sent } = batcher((n) => (answers[n - 1] instanceof Error ? Promise.reject(answers[n - 1]) : answers[n - 1]));
  b.push(ev(1)); b.push(ev(2));
  await clock.tick(200);
  assert.deepEqual(sent, [[1, 2]]);
  b.push(ev(3)); // arrives while [1, 2] waits to be retried: must not overtake it
  await clock.tick(499); // first backoff: 500 ms (jitter factor 1.0 with random 0.5)
  assert.deepEqual(sent, [[1, 2]]);
  await clock.tick(1);
  assert.deepEqual(sent, [[1, 2], [1, 2]]);
  await clock.tick(1000); // second backoff doubles
  assert.deepEqual(sent, [[1, 2], [1, 2], [1, 2]]);
  await clock.tick(200);
  assert.deepEqual(sent, [[1, 2], [1, 2], [1, 2], [3]]);
});

test('gives up after 5 attempts and reports the drop', async () => {
  const { b, clock, sent, drops } = batcher((n) => response(n <= 5 ? 500 : 200));
  b.push(ev(1));
  const flushed = b.flush();
  await clock.tick(60000);
  await flushed;
  assert.equal(sent.length, 5);
  assert.deepEqual(drops, [{ ids: [1], status: 500, attempts: 5 }]);
  b.push(ev(2));
  await b.flush();
  assert.deepEqual(sent.at(-1), [2], 'the queue keeps working after a drop');
});

test('does not retry a 400; the next events still go out', async () => {
  const { b, clock, sent, drops } = batcher((n) => response(n === 1 ? 400 : 200));
  b.push(ev(1));
  await clock.tick(200);
  b.push(ev(2));
  await clock.tick(10000);
  assert.deepEqual(sent, [[1], [2]]);
  assert.deepEqual(drops, [{ ids: [1], status: 400, attempts: 1 }]);
});

test('retries 429 (rate limited) like a 5xx', async () => {
  const { b, clock, sent } = batcher((n) => response(n === 1 ? 429 : 200));
  b.push(ev(1));
  await clock.tick(200);
  await clock.tick(500);
  assert.deepEqual(sent, [[1], [1]]);
});

test('drain() beacons everything not already on the wire, including a batch awaiting retry', async () => {
  const { b, clock, sent } = batcher((n) => response(n === 1 ? 503 : 200));
  b.push(ev(1));
  await clock.tick(200); // [1] failed, waits 500 ms
  b.push(ev(2)); b.push(ev(3));
  const beacons = [];
  const flushed = b.flush();
  b.drain((events) => beacons.push(events.map((e) => e.id)));
  await flushed; // flush() waiters resolve: the events are handed over
  assert.deepEqual(beacons, [[1, 2, 3]]);
  await clock.tick(10000);
  assert.deepEqual(sent, [[1]], 'the cancelled retry never fires');
});

test('drain() leaves an in-flight request alone', async () => {
  let answer;
  const { b, sent } = batcher(() => new Promise((r) => { answer = r; }));
  b.push(ev(1));
  b.flush();
  await settle();
  b.push(ev(2));
  const beacons = [];
  b.drain((events) => beacons.push(events.map((e) => e.id)));
  assert.deepEqual(beacons, [[2]]);
  answer(response(200));
  await b.flush();
  assert.deepEqual(sent, [[1]]);
});

test('one event goes to its own path; several go to /v1/batch', () => {
  const sentAt = '2026-04-17T15:37:11.000Z';
  const page = { type: 'page', messageId: 'm1' };
  assert.deepEqual(buildRequest([page], KEY, sentAt), { path: '/v1/p', body: { type: 'page', messageId: 'm1', pipelineKey: KEY, sentAt } });
  for (const [type, path] of [['track', '/v1/t'], ['identify', '/v1/i'], ['group', '/v1/g']]) {
    assert.equal(buildRequest([{ type }], KEY, sentAt).path, path);
  }
  const track = { type: 'track', event: 'Product Viewed', messageId: 'm2' };
  assert.deepEqual(buildRequest([page, track], KEY, sentAt), {
    path: '/v1/batch',
    body: {
      batch: [{ ...page, pipelineKey: KEY, sentAt }, { ...track, pipelineKey: KEY, sentAt }],
      pipelineKey: KEY,
      sentAt,
    },
  });
});

test('the SDK posts text/plain JSON with credentials to the collector', async () => {
  const { df, clock, net } = makeDatafly();
  df.init({ pipelineKey: KEY, endpoint: ENDPOINT + '/' });
  df.track('Product Viewed', { product_id: 'sku-1', price: 89.5 });
  await clock.tick(200);
  assert.equal(net.calls.length, 1);
  const { url, init, body } = net.calls[0];
  assert.equal(url, ENDPOINT + '/v1/batch');
  assert.equal(init.method, 'POST');
  assert.deepEqual(init.headers, { 'Content-Type': 'text/plain;charset=UTF-8' });
  assert.equal(init.credentials, 'include');
  assert.equal(init.keepalive, true);
  assert.equal(body.pipelineKey, KEY);
  assert.deepEqual(body.batch.map((e) => [e.type, e.event || e.name, e.pipelineKey]), [['page', undefined, KEY], ['track', 'Product Viewed', KEY]]);
  assert.deepEqual(body.batch[1].properties, { product_id: 'sku-1', price: 89.5 });
});

test('the SDK warns about a rejected event with the server\'s reason', async () => {
  const net = fakeFetch(() => response(401, { error: { code: 'INVALID_PIPELINE_KEY', message: 'unknown pipeline key' } }));
  const { win, df } = makeDatafly({ net });
  df.init({ pipelineKey: 'dk_wrong', endpoint: ENDPOINT });
  await df.flush();
  await settle();
  assert.equal(net.calls.length, 1, '4xx is not retried');
  assert.match(win.console.warnings.join('\n'), /1 event\(s\) dropped after 1 attempt\(s\): HTTP 401 .*INVALID_PIPELINE_KEY/);
});

test('on pagehide the SDK hands queued events to navigator.sendBeacon as text/plain', async () => {
  const { win, df, net } = makeDatafly();
  df.init({ pipelineKey: KEY, endpoint: ENDPOINT });
  df.track('Checkout Started');
  win.fire('pagehide');
  assert.equal(net.calls.length, 0);
  assert.equal(win.navigator.beacons.length, 1);
  const { url, blob } = win.navigator.beacons[0];
  assert.equal(url, ENDPOINT + '/v1/batch');
  assert.equal(blob.type, 'text/plain;charset=utf-8');
  const body = JSON.parse(await blob.text());
  assert.deepEqual(body.batch.map((e) => e.type), ['page', 'track']);
  assert.equal(body.pipelineKey, KEY);
});

test('when the page is hidden and sendBeacon refuses, a keepalive fetch carries the events', async () => {
  const { win, df, net } = makeDatafly({ document: { visibilityState: 'visible' } });
  win.navigator.sendBeacon = () => false; // over the beacon quota
  df.init({ pipelineKey: KEY, endpoint: ENDPOINT });
  win.document.visibilityState = 'hidden';
  win.fire('doc:visibilitychange');
  assert.equal(net.calls.length, 1);
  assert.equal(net.calls[0].url, ENDPOINT + '/v1/p');
  assert.equal(net.calls[0].init.keepalive, true);
});

test('an event over 32 KB is dropped with a warning instead of poisoning its batch', async () => {
  const { win, df, net } = makeDatafly();
  df.init({ pipelineKey: KEY, endpoint: ENDPOINT, page: false });
  df.track('Huge', { blob: 'x'.repeat(40000) });
  df.track('Fine');
  await df.flush();
  assert.deepEqual(net.calls.map((c) => c.body.event), ['Fine']);
  assert.match(win.console.warnings[0], /over the 32 KB event limit/);
});
