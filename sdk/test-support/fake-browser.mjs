// Hand-written stand-ins for the browser objects datafly.js reads, so the node
// tests drive the real code paths without a DOM library. Kept outside
// sdk/test/ because `node --test sdk/test/` runs every .mjs file found there.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const SDK_PATH = fileURLToPath(new URL('../datafly.js', import.meta.url));
export const sdk = createRequire(import.meta.url)(SDK_PATH);
export const SDK_SOURCE = readFileSync(SDK_PATH, 'utf8');

export class FakeStorage {
  constructor(entries = {}) { this.map = new Map(Object.entries(entries)); }
  getItem(k) { return this.map.has(k) ? this.map.get(k) : null; }
  setItem(k, v) { this.map.set(k, String(v)); }
  removeItem(k) { this.map.delete(k); }
}

// Manual clock: timers run only when the test advances time, in due order,
// with pending promise callbacks drained between them.
export class FakeClock {
  constructor(start = Date.parse('2026-04-17T15:37:10.484Z')) {
    this.t = start; this.timers = new Map(); this.nextId = 1;
  }
  now = () => this.t;
  setTimeout = (fn, ms = 0) => { const id = this.nextId++; this.timers.set(id, { fn, at: this.t + ms }); return id; };
  clearTimeout = (id) => { this.timers.delete(id); };
  pending() { return this.timers.size; }
  async tick(ms) {
    const end = this.t + ms;
    await settle();
    for (;;) {
      let next = null;
      for (const [id, tm] of this.timers) if (tm.at <= end && (!next || tm.at < next[1].at)) next = [id, tm];
      if (!next) break;
      this.timers.delete(next[0]);
      this.t = Math.max(this.t, next[1].at);
      next[1].fn();
      await settle();
    }
    this.t = end;
  }
}

// Lets every queued promise callback run (fake fetches resolve at once).
export const settle = () => new Promise((r) => setImmediate(r));

export function response(status, body = {}) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  return { status, ok: status >= 200 && status < 300, text: async () => text, json: async () => JSON.parse(text) };
}

// Records every request; `reply(url, init, n)` decides the answer (a
// response, an Error to reject with, or a Promise that never settles).
export function fakeFetch(reply = () => response(200, { ok: true })) {
  const calls = [];
  const fetch = (url, init = {}) => {
    const call = { url, init, body: init.body ? JSON.parse(init.body) : undefined };
    calls.push(call);
    let r;
    try { r = reply(url, init, calls.length); } catch (e) { return Promise.reject(e); }
    if (r instanceof Error) return Promise.reject(r);
    return Promise.resolve(r);
  };
  return { fetch, calls };
}

export function fakeConsole() {
  const warnings = [];
  return { warnings, warn: (m) => warnings.push(String(m)), log() {}, error() {} };
}

// A window as datafly.js sees it. `overrides` replace or extend any field.
export function fakeWindow(overrides = {}) {
  const { clock = new FakeClock(), net = fakeFetch(), document: docOverrides, ...rest } = overrides;
  const listeners = {};
  const doc = {
    cookie: '_ga=GA1.1.1234567890.1700000000; _fbp=fb.1.1700000000000.987654321; other=x',
    referrer: 'https://www.google.com/',
    title: 'Running Shoes | Acme',
    visibilityState: 'visible',
    addEventListener: (type, fn) => { (listeners['doc:' + type] ||= []).push(fn); },
    ...docOverrides,
  };
  const win = {
    document: doc,
    location: {
      href: 'https://www.example.com/shoes/running?utm_source=newsletter&utm_medium=email&utm_campaign=spring_sale#top',
      pathname: '/shoes/running',
      search: '?utm_source=newsletter&utm_medium=email&utm_campaign=spring_sale',
    },
    navigator: {
      language: 'en-GB',
      userAgent: 'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15',
      beacons: [],
      sendBeacon(url, blob) { this.beacons.push({ url, blob }); return true; },
    },
    screen: { width: 1512, height: 982 },
    devicePixelRatio: 2,
    Intl: { DateTimeFormat: () => ({ resolvedOptions: () => ({ timeZone: 'Europe/London' }) }) },
    crypto: globalThis.crypto,
    localStorage: new FakeStorage(),
    console: fakeConsole(),
    fetch: net.fetch,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    Blob,
    CustomEvent,
    AbortController,
    dispatched: [],
    dispatchEvent(e) { this.dispatched.push(e); return true; },
    addEventListener: (type, fn) => { (listeners[type] ||= []).push(fn); },
    fire: (type) => (listeners[type] || []).forEach((fn) => fn()),
    ...rest,
    clock,
    net,
  };
  return win;
}

// The SDK bound to a fake window, with the fake clock injected.
export function makeDatafly(overrides) {
  const win = fakeWindow(overrides);
  const df = sdk.createDatafly(win, { now: win.clock.now, random: () => 0.5 });
  return { win, df, clock: win.clock, net: win.net };
}
