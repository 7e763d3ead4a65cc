// spec/e2e/browser.test.mjs — the browser end-to-end test: Debian's
// headless chromium (through playwright-core, never a downloaded browser)
// loads the demo storefront (examples/demo) against a real engine and the
// Amperity sandbox, all started by spec/e2e/run.sh, which sets E2E_* env.
//
// It proves the whole browser flow of the Amperity integration:
//   - the pageview and a tracked event reach Amperity's ingest with
//     cookieid = the browser's _dfdid cookie;
//   - a Google Consent Mode update travels nested and verbatim;
//   - identify + refreshProfile() hydrate datafly.profile.amperity with
//     exactly the allowlisted attributes, and the page personalizes;
//   - nothing the page received holds an Amperity token or a
//     non-allowlisted attribute.
// The steps run in order on one page (each builds on the last); a failed
// step names the exact request/assertion. Delivery is asynchronous, so every
// server-side effect is polled with a bounded wait (`eventually`), never
// asserted after a fixed sleep; nothing asserts on timing.
import { test, describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const env = process.env;
const CHROMIUM = env.E2E_CHROMIUM || '/usr/bin/chromium';
const HAVE_CHROMIUM = existsSync(CHROMIUM);

const PAGE = `http://127.0.0.1:${env.E2E_PAGE_PORT}`;
const ENGINE = `http://127.0.0.1:${env.E2E_ENGINE_PORT}`;
const SANDBOX = `http://127.0.0.1:${env.E2E_SANDBOX_PORT}`;

// The demo's sign-in user. The fixture stores only the email's hash, so the
// test checks the hash picks the profile rather than trusting a comment.
const EMAIL = 'jane.doe@example.com';
const DENIED = { ad_storage: 'denied', ad_user_data: 'denied', ad_personalization: 'denied', analytics_storage: 'denied' };
const ANALYTICS_ONLY = { ad_storage: 'denied', ad_user_data: 'denied', ad_personalization: 'denied', analytics_storage: 'granted' };

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls fn until it returns a truthy value (returned) or the time is up; an
// assertion thrown inside is retried and, at the deadline, reported.
async function eventually(what, fn, { timeout = 20000, interval = 200 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = undefined;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      const err = new Error(`timed out after ${timeout} ms waiting for ${what}${last ? ':\n' + last.message : ''}`);
      if (last) err.cause = last;
      throw err;
    }
    await sleep(interval);
  }
}

// ---- fixture: the expected profile, the secrets ---------------------------

function loadFixture() {
  const fx = JSON.parse(readFileSync(env.E2E_FIXTURE || new URL('../fixtures/profiles.json', import.meta.url), 'utf8'));
  const hash = createHash('sha256').update(EMAIL.trim().toLowerCase()).digest('hex');
  const profiles = Object.values(fx.collections).flatMap((c) => c.profiles || []);
  const profile = profiles.find((p) => p.keys && p.keys.email_sha256 === hash);
  assert.ok(profile, `no fixture profile has email_sha256 = sha256(${EMAIL})`);
  const allow = (env.E2E_ALLOWLIST || '').split(',').map((s) => s.trim()).filter(Boolean);
  assert.ok(allow.length, 'E2E_ALLOWLIST is empty (spec/e2e/run.sh sets it)');
  const expected = {}, hidden = {};
  for (const [k, v] of Object.entries(profile.attributes)) (allow.includes(k) ? expected : hidden)[k] = v;
  // Without hidden attributes the leak check below could not fail.
  assert.ok(Object.keys(hidden).length, 'the fixture profile has no non-allowlisted attribute to check for leaks');
  assert.equal(expected.Persona, 'Value Hunter', 'the demo personalizes for a Value Hunter');
  return { fx, profile, expected, hidden, tokens: [fx.ingest_token, fx.profile_token] };
}

// ---- sandbox: what Amperity received ----------------------------------------

async function sandboxEvents(since) {
  const res = await fetch(`${SANDBOX}/_sandbox/requests?prefix=/prof/events&since=${since}`);
  assert.equal(res.status, 200, 'GET /_sandbox/requests');
  const body = await res.json();
  return body.requests.filter((r) => r.json).map((r) => r.json);
}

async function sandboxLastSeq() {
  const res = await fetch(`${SANDBOX}/_sandbox/requests?prefix=/_none_`);
  return (await res.json()).last_seq;
}

// The first ingested event of this visitor matching pred.
async function ingested(what, since, dfdid, pred) {
  return eventually(`${what} (cookieid ${dfdid}) at the sandbox's /prof/events`, async () => {
    const evs = (await sandboxEvents(since)).filter((e) => e.cookieid === dfdid);
    const hit = evs.find(pred);
    if (!hit) throw new Error(`received for this visitor so far: ${JSON.stringify(evs.map((e) => e.type))}`);
    return hit;
  });
}

// ---- leak scan ---------------------------------------------------------------

const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

// Each forbidden thing as [label, test(text)]: strings by substring, numbers
// as whole numeric tokens (so 0.87 does not match inside 10.875).
function forbiddenMatchers({ tokens, hidden, profile }) {
  const list = [];
  tokens.forEach((t, i) => list.push([`Amperity token #${i + 1}`, (s) => s.includes(t)]));
  for (const [k, v] of Object.entries(hidden)) {
    list.push([`non-allowlisted attribute name ${k}`, (s) => s.includes(k)]);
    if (typeof v === 'number') {
      const re = new RegExp(`(?<![\\d.])${escapeRe(String(v))}(?![\\d])`);
      list.push([`value of ${k} (${v})`, (s) => re.test(s)]);
    } else if (typeof v === 'string' && v.length >= 3) {
      list.push([`value of ${k} (${v})`, (s) => s.includes(v)]);
    }
  }
  // The amperity_id and the linking-key values (hashes, customer id) only
  // exist in raw Amperity answers. The page itself may know a customer id
  // (the demo identifies as user-123), so linking keys are looked for in what
  // Signal served, not in the page's own files (engineOnly).
  list.push([`Amperity profile_id ${profile.profile_id}`, (s) => s.includes(profile.profile_id)]);
  for (const [k, v] of Object.entries(profile.keys || {})) {
    for (const one of [].concat(v)) list.push([`linking key ${k} (${one})`, (s) => s.includes(String(one)), true]);
  }
  return list;
}

// ---- the test -------------------------------------------------------------------

// No browser: one test reported as skipped (a skipped describe() would be
// counted as nothing at all in node's summary).
if (!HAVE_CHROMIUM) {
  test('browser end-to-end', { skip: `${CHROMIUM} is not installed (make deps installs Debian's chromium)` }, () => {});
} else describe('browser end-to-end: demo storefront → Signal → Amperity sandbox', () => {
  let fixture, context, page, userDataDir, dfdid, since;
  const responses = [];   // every response the page received: {url, status, headers, body}
  const sdkWarnings = []; // console warnings from datafly.js
  const failedRequests = []; // requests the browser gave up on (CORS, network): no 'response' event
  const consoleLog = [];

  before(async () => {
    for (const k of ['E2E_PAGE_PORT', 'E2E_ENGINE_PORT', 'E2E_SANDBOX_PORT']) {
      assert.ok(env[k], `${k} is not set: run this through spec/e2e/run.sh`);
    }
    fixture = loadFixture();
    const { chromium } = await import('playwright-core');
    userDataDir = mkdtempSync(join(tmpdir(), 'signal-e2e-chromium-'));
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    page = context.pages()[0] || await context.newPage();
    page.on('console', (m) => {
      consoleLog.push(`${m.type()}: ${m.text()}`);
      if (m.text().startsWith('datafly.js:')) sdkWarnings.push(m.text());
    });
    page.on('pageerror', (e) => consoleLog.push(`pageerror: ${e.message}`));
    page.on('requestfailed', (r) => failedRequests.push(`${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
    page.on('response', (r) => {
      const entry = { url: r.url(), status: r.status(), method: r.request().method() };
      entry.done = Promise.all([
        r.allHeaders().then((h) => { entry.headers = h; }, (e) => { entry.headerError = e.message; }),
        r.body().then((b) => { entry.body = b.toString('utf8'); }, (e) => { entry.bodyError = e.message; }),
      ]);
      responses.push(entry);
    });
    since = await sandboxLastSeq();
  });

  after(async () => {
    if (context) await context.close();
    if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
  });

  // Printed with a failure: what the browser refused and what the page said
  // (a CORS refusal is only visible there, never as a response).
  const diag = () => `\n--- failed requests:\n${failedRequests.slice(-10).join('\n')}` +
    `\n--- page console:\n${consoleLog.slice(-12).join('\n')}`;

  const engineResponses = (path) => responses.filter((r) => r.url.startsWith(ENGINE + path));
  const json = (r) => { try { return JSON.parse(r.body); } catch { return undefined; } };

  it('loads the page; datafly.js hydrates {} for a first-touch visitor (no promo hero)', async () => {
    const nav = await page.goto(PAGE + '/', { waitUntil: 'load' });
    assert.equal(nav.status(), 200, 'GET / of the demo page');
    assert.equal(await page.evaluate(() => typeof window.datafly), 'object',
      `window.datafly missing: ${ENGINE}/v1/js/dk_live_demo/datafly.js did not load${diag()}`);
    await eventually('onProfileReady() on page load', () => page.evaluate(() => document.body.dataset.profile === 'ready'));
    assert.deepEqual(await page.evaluate(() => window.datafly.profile.amperity), {}, 'a first-touch visitor has no attributes');
    assert.equal(await page.evaluate(() => document.querySelector('#hero').dataset.variant), 'default');

    // Playwright reports responses asynchronously: wait for the report too.
    const enrich = await eventually('an answer to GET /v1/enrich (datafly.js calls it on init when the JS Builder bakes in the enrich block)',
      () => { const e = engineResponses('/v1/enrich'); return e.length && e; }, { timeout: 5000 })
      .catch((e) => assert.fail(e.message + diag()));
    await enrich[0].done;
    assert.equal(enrich[0].status, 200, `GET ${enrich[0].url} → ${enrich[0].status} ${enrich[0].body}`);
    const body = json(enrich[0]);
    assert.ok(body && typeof body === 'object', `enrich body is JSON: ${enrich[0].body}`);
    assert.deepEqual(body.attributes ?? {}, {}, `first-touch enrich answer: ${enrich[0].body}`);
  });

  it('the pageview reaches Amperity with cookieid = the browser\'s _dfdid cookie', async () => {
    const cookie = await eventually('the _dfdid cookie in the browser', async () =>
      (await context.cookies(ENGINE)).find((c) => c.name === '_dfdid'));
    dfdid = cookie.value;
    assert.match(dfdid, /^[\w.-]+$/);
    assert.equal(cookie.httpOnly, true, '_dfdid is HttpOnly (page scripts cannot read it)');
    assert.equal(cookie.sameSite, 'Lax', '_dfdid is SameSite=Lax');

    // The collector granted CORS with credentials to the page's origin;
    // without it the SDK sees a network error and retries/drops.
    const posts = await eventually('an answer to the page\'s POST to the collector', () => {
      const p = engineResponses('/v1/').filter((r) => r.method === 'POST');
      return p.length && p;
    }, { timeout: 5000 }).catch((e) => assert.fail(e.message + diag()));
    await posts[0].done;
    assert.equal(posts[0].status, 200, `POST ${posts[0].url} → ${posts[0].status} ${posts[0].body}`);
    assert.equal(posts[0].headers['access-control-allow-origin'], PAGE, `CORS origin on POST ${posts[0].url}`);
    assert.equal(posts[0].headers['access-control-allow-credentials'], 'true', `CORS credentials on POST ${posts[0].url}`);

    const pv = await ingested('type "pageview"', since, dfdid, (e) => e.type === 'pageview');
    assert.equal(pv.source, 'DATAFLY');
    // Sent before any choice: the Consent Mode defaults, verbatim.
    assert.deepEqual(pv.consent?.google, DENIED, `pageview consent: ${JSON.stringify(pv.consent)}`);
  });

  it('a tracked "Product Added" reaches Amperity as add_to_cart with the same cookieid', async () => {
    await page.click('button[data-action="add"][data-product="TH-101"]');
    const ev = await ingested('add_to_cart of TH-101', since, dfdid,
      (e) => e.type === 'add_to_cart' && e.product_id === 'TH-101');
    assert.equal(ev.cookieid, dfdid);
    assert.equal(ev.source, 'DATAFLY');
  });

  it('consent granted through Google Consent Mode travels nested and verbatim on later events', async () => {
    await page.click('#consent-analytics');
    // The banner really went through gtag('consent', 'update', …).
    const update = await page.evaluate(() => {
      const u = (window.dataLayer || []).filter((c) => c && c[0] === 'consent' && c[1] === 'update');
      return u.length ? { ...u[u.length - 1][2] } : null;
    });
    assert.deepEqual(update, ANALYTICS_ONLY, 'the banner pushed gtag("consent","update",…)');

    await page.click('button[data-action="view"][data-product="TH-102"]');
    const ev = await ingested('view_item of TH-102', since, dfdid,
      (e) => e.type === 'view_item' && e.product_id === 'TH-102');
    assert.deepEqual(ev.consent?.google, ANALYTICS_ONLY, `consent on the event: ${JSON.stringify(ev.consent)}`);
    assert.equal(ev.consent.analytics, true);
    assert.equal(ev.consent.marketing, false);
  });

  it('identify + refreshProfile() give exactly the allowlisted attributes and the promo hero', async () => {
    // The demo signs in the fixture's user (the one this test expects).
    assert.ok((await page.textContent('#signin')).includes(EMAIL), `the demo's sign-in button names ${EMAIL}`);
    await page.click('#signin');
    // The page itself polls refreshProfile() (bounded); wait for it to finish.
    await eventually('the sign-in flow to finish', () => page.evaluate(() => document.body.dataset.signin === 'done'),
      { timeout: 30000 });
    const attrs = await page.evaluate(() => window.datafly.profile.amperity);
    assert.deepEqual(attrs, fixture.expected,
      `datafly.profile.amperity after sign-in (expected the allowlisted attributes of the fixture profile)${diag()}`);

    const hero = await page.evaluate(() => document.querySelector('#hero').dataset.variant);
    assert.equal(hero, 'promo', 'Persona "Value Hunter" switches the hero to the promo variant');
    assert.equal(await page.isVisible('#hero .hero-promo'), true, 'the promo hero is shown');
    assert.equal(await page.isVisible('#hero .hero-default'), false, 'the default hero is hidden');

    // The wire answer itself: the contract shape, nothing more. The newest
    // answer with attributes is the one that hydrated the page.
    const last = await eventually('a /v1/enrich answer with attributes', async () => {
      const enrich = engineResponses('/v1/enrich');
      await Promise.all(enrich.map((r) => r.done));
      return enrich.reverse().find((r) => Object.keys(json(r)?.attributes || {}).length);
    }, { timeout: 5000 });
    assert.equal(last.status, 200, `GET ${last.url} → ${last.status}`);
    assert.equal(last.headers['access-control-allow-origin'], PAGE, 'CORS origin on /v1/enrich');
    assert.equal(last.headers['access-control-allow-credentials'], 'true', 'CORS credentials on /v1/enrich');
    const body = json(last);
    assert.deepEqual(Object.keys(body).filter((k) => k !== 'provider' && k !== 'attributes'), [],
      `/v1/enrich answers only {provider, attributes}: ${last.body}`);
    assert.equal(body.provider, 'amperity');
    assert.deepEqual(body.attributes, fixture.expected, `/v1/enrich attributes: ${last.body}`);
  });

  it('no Amperity token and no non-allowlisted attribute appears in any response the page received', async () => {
    await Promise.all(responses.map((r) => r.done));
    const fromEngine = responses.filter((r) => r.url.startsWith(ENGINE));
    // The scan covers the calls that matter, or it proves nothing.
    assert.ok(fromEngine.some((r) => r.url.includes('/datafly.js')), 'scanned datafly.js');
    assert.ok(fromEngine.some((r) => r.url.includes('/v1/enrich')), `scanned /v1/enrich${diag()}`);
    assert.ok(fromEngine.some((r) => r.method === 'POST'), 'scanned collector answers');
    const unreadable = fromEngine.filter((r) => r.method !== 'OPTIONS' && (r.bodyError || r.headerError));
    assert.deepEqual(unreadable.map((r) => `${r.method} ${r.url}: ${r.bodyError || r.headerError}`), [],
      'every engine response could be read');

    const matchers = forbiddenMatchers(fixture);
    const leaks = [];
    for (const r of responses) {
      const headerText = Object.entries(r.headers || {}).map(([k, v]) => `${k}: ${v}`).join('\n');
      for (const [label, test, engineOnly] of matchers) {
        if (engineOnly && !r.url.startsWith(ENGINE)) continue;
        if (test(headerText)) leaks.push(`${label} in the headers of ${r.method} ${r.url}`);
        if (r.body && test(r.body)) leaks.push(`${label} in the body of ${r.method} ${r.url}`);
      }
    }
    assert.deepEqual(leaks, [], `scanned ${responses.length} responses`);
  });

  it('datafly.js logged no warnings (no dropped event, no failed enrich call)', () => {
    assert.deepEqual(sdkWarnings, [], `datafly.js warnings${diag()}`);
  });
});
