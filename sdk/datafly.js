/*
 * datafly.js: Signal's browser SDK. Sends page/track/identify/group events
 * with their context to the collector and fills datafly.profile.<provider>
 * from GET /v1/enrich. The only credential it sends is the public pipeline key.
 * Served as /datafly.js and, with `datafly.init({...});` appended, as
 * /v1/js/{key}/datafly.js: so `datafly` exists once this has run, and a second
 * init() is ignored. Browser-facing helpers take their environment (window,
 * storage, clock) as arguments; node tests drive them via `_internals`.
 */
;(function (root) {
  'use strict';

  var VERSION = '1.8.0';
  var SESSION_TIMEOUT = 30 * 60 * 1000;
  var MAX_EVENT_BYTES = 32 * 1024; // the collector answers 413 above this
  var MAX_BODY_BYTES = 60000;      // keepalive fetch and sendBeacon cap: 64 KiB
  var TEXT = 'text/plain;charset=UTF-8'; // a "simple" type: no CORS preflight
  var PATHS = { track: 't', page: 'p', identify: 'i', group: 'g' };
  var KEYS = { anon: 'df_anon_id', user: 'df_user_id', session: 'df_session', consent: 'df_consent' };
  var UTM = { source: 'utm_source', medium: 'utm_medium', name: 'utm_campaign', term: 'utm_term', content: 'utm_content' };
  var VENDOR_COOKIES = { ga: '_ga', fbp: '_fbp', fbc: '_fbc', ttp: '_ttp' };
  var PURPOSES = ['analytics', 'marketing', 'functional'];

  var isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
  var own = (o, k) => Object.prototype.hasOwnProperty.call(o, k);
  var nonEmpty = (o) => Object.keys(o).length > 0;
  var orUndef = (o) => (nonEmpty(o) ? o : undefined);
  var safe = (fn) => { try { return fn(); } catch (e) { return undefined; } };
  var parseJSON = (s) => safe(() => JSON.parse(s));
  var warn = (con, msg) => con && con.warn && con.warn('datafly.js: ' + msg);
  var pick = (o) => (isObj(o) ? o : {});
  // Exact UTF-8 length, without TextEncoder.
  var utf8Len = (s) => safe(() => encodeURIComponent(s).replace(/%../g, 'x').length) || s.length * 3;

  function uuid(cr) {
    if (cr && typeof cr.randomUUID === 'function') return cr.randomUUID(); // secure contexts only
    var b = new Uint8Array(16), h = '', i;
    if (cr && cr.getRandomValues) cr.getRandomValues(b);
    else for (i = 0; i < 16; i++) b[i] = Math.random() * 256;
    b[6] = (b[6] & 15) | 64; b[8] = (b[8] & 63) | 128;
    for (i = 0; i < 16; i++) h += (i === 4 || i === 6 || i === 8 || i === 10 ? '-' : '') + (b[i] + 256).toString(16).slice(1);
    return h;
  }

  // localStorage throws when cookies are blocked or in sandboxed iframes:
  // then ids live in memory for the page's lifetime.
  function makeStore(getStorage) {
    var mem = {}, ls = safe(getStorage);
    if (ls && !safe(() => { ls.setItem('df_t', '1'); ls.removeItem('df_t'); return 1; })) ls = null;
    return {
      get: (k) => {
        var v = ls ? safe(() => ls.getItem(k)) : null;
        return v != null ? v : own(mem, k) ? mem[k] : null;
      },
      set: (k, v) => { mem[k] = v; if (ls) safe(() => ls.setItem(k, v)); }
    };
  }

  function parseCookies(str) {
    var out = {};
    String(str || '').split(';').forEach((part) => {
      var i = part.indexOf('='), k = part.slice(0, i).trim(), v = part.slice(i + 1).trim();
      // The most specific path comes first and wins.
      if (i < 0 || !k || own(out, k)) return;
      out[k] = safe(() => decodeURIComponent(v)) || v;
    });
    return out;
  }

  function parseQuery(search) {
    var out = {};
    var dec = (s) => { s = s.replace(/\+/g, ' '); return safe(() => decodeURIComponent(s)) || s; };
    String(search || '').replace(/^\?/, '').split('&').forEach((p) => {
      var i = p.indexOf('='), k = dec(i < 0 ? p : p.slice(0, i));
      if (k && !own(out, k)) out[k] = i < 0 ? '' : dec(p.slice(i + 1));
    });
    return out;
  }

  function campaignFrom(search) {
    var q = parseQuery(search), c = {};
    for (var k in UTM) if (q[UTM[k]]) c[k] = q[UTM[k]];
    return orUndef(c);
  }

  function vendorIds(cookies) {
    var v = {};
    for (var k in VENDOR_COOKIES) if (cookies[VENDOR_COOKIES[k]]) v[k] = cookies[VENDOR_COOKIES[k]];
    return orUndef(v);
  }

  // Sessions span tabs and end after 30 min without an event (as GA counts);
  // count is the visitor's session number.
  function touchSession(store, now, cr) {
    var s = parseJSON(store.get(KEYS.session));
    if (!isObj(s) || typeof s.id !== 'string' || !(now - s.last < SESSION_TIMEOUT)) {
      s = { id: uuid(cr), count: ((isObj(s) && +s.count) || 0) + 1 };
    }
    s.last = now;
    store.set(KEYS.session, JSON.stringify(s));
    return { id: s.id, count: s.count };
  }

  // Consent Mode has two layers: an update beats a default whatever the push
  // order; within a layer the later command wins. gtag() pushes Arguments,
  // hand-written pushes are arrays. Region-scoped defaults are skipped: the
  // page cannot know the visitor's region.
  function googleConsent(dataLayer) {
    var layers = { default: {}, update: {} };
    for (var i = 0; dataLayer && i < dataLayer.length; i++) {
      var c = dataLayer[i], layer = c && typeof c === 'object' && c[0] === 'consent' && own(layers, c[1]) && layers[c[1]];
      if (!layer || !isObj(c[2]) || (c[1] === 'default' && c[2].region && c[2].region.length)) continue;
      for (var k in c[2]) if (c[2][k] === 'granted' || c[2][k] === 'denied') layer[k] = c[2][k];
    }
    return orUndef(Object.assign(layers.default, layers.update));
  }

  // OneTrust lists accepted groups (",C0001,C0003,"); standard groups not
  // listed were refused. Before its script runs, a returning visitor's choice
  // is in the OptanonConsent cookie ("groups=C0001:1,C0002:0").
  function oneTrustCategories(activeGroups, optanonCookie) {
    var cats = {};
    if (typeof activeGroups === 'string') {
      ['C0001', 'C0002', 'C0003', 'C0004'].forEach((g) => { cats[g] = false; });
      activeGroups.split(',').forEach((g) => { if (g.trim()) cats[g.trim()] = true; });
      return cats;
    }
    String(parseQuery(optanonCookie).groups || '').split(',').forEach((p) => {
      p = p.split(':');
      if (p.length === 2 && p[0].trim()) cats[p[0].trim()] = p[1] === '1';
    });
    return orUndef(cats);
  }

  // datafly.consent() calls accumulate: booleans replace, maps merge.
  function mergeConsent(a, b) {
    var out = Object.assign({}, a);
    PURPOSES.forEach((k) => { if (typeof b[k] === 'boolean') out[k] = b[k]; });
    ['categories', 'google'].forEach((k) => { if (isObj(b[k])) out[k] = Object.assign({}, out[k], b[k]); });
    return out;
  }

  // A canonical boolean is true when any source grants it, absent when no
  // source speaks to it (absent = no consent). Explicit state wins.
  function mapConsent(google, categories, explicit) {
    explicit = pick(explicit);
    var cats = Object.assign({}, categories, pick(explicit.categories));
    var g = Object.assign({}, google, pick(explicit.google));
    var out = {};
    var purpose = (key, gv, cat) => {
      if (gv !== undefined || typeof cat === 'boolean') out[key] = gv === 'granted' || cat === true;
    };
    purpose('analytics', g.analytics_storage, cats.C0002);
    purpose('marketing', g.ad_storage, cats.C0004);
    purpose('functional', undefined, cats.C0003);
    PURPOSES.forEach((k) => { if (typeof explicit[k] === 'boolean') out[k] = explicit[k]; });
    if (nonEmpty(cats)) out.categories = cats;
    if (nonEmpty(g)) out.google = g;
    return orUndef(out);
  }

  function collectConsent(win, cookies, explicit) {
    return mapConsent(googleConsent(win.dataLayer),
      oneTrustCategories(win.OnetrustActiveGroups || win.OptanonActiveGroups, cookies.OptanonConsent), explicit);
  }

  function collectContext(win, store, now, explicitConsent) {
    var doc = win.document || {}, loc = win.location || {}, nav = win.navigator || {}, scr = win.screen || {};
    var cookies = parseCookies(safe(() => doc.cookie));
    return {
      page: { url: loc.href, path: loc.pathname, referrer: doc.referrer, title: doc.title, search: loc.search },
      campaign: campaignFrom(loc.search),
      locale: nav.language,
      timezone: safe(() => (win.Intl || Intl).DateTimeFormat().resolvedOptions().timeZone),
      screen: { width: scr.width, height: scr.height, density: win.devicePixelRatio },
      library: { name: 'datafly.js', version: VERSION },
      userAgent: nav.userAgent,
      session: touchSession(store, now, win.crypto),
      vendorIds: vendorIds(cookies),
      consent: collectConsent(win, cookies, explicitConsent)
    };
  }

  // The key rides in the body: a custom header would force a preflight.
  function buildRequest(events, pipelineKey, sentAt) {
    var stamp = (e) => Object.assign({}, e, { pipelineKey, sentAt });
    if (events.length === 1) return { path: '/v1/' + PATHS[events[0].type], body: stamp(events[0]) };
    return { path: '/v1/batch', body: { batch: events.map(stamp), pipelineKey, sentAt } };
  }

  function chunkLength(items, max) {
    var n = 0, bytes = 0;
    while (n < items.length && n < max && (n === 0 || bytes + items[n].n <= MAX_BODY_BYTES)) bytes += items[n++].n;
    return n;
  }

  var retryable = (status) => status === 0 || status === 408 || status === 429 || status >= 500;
  var unwrap = (items) => items.map((x) => x.e);

  // Ordered queue: one request in flight at a time, so a retried batch is
  // never overtaken. A batch leaves `delay` ms after its first event or when
  // `max` wait. Network errors, 408, 429, 5xx: jittered exponential backoff,
  // `tries` attempts; other failures are dropped (resending a bad event would
  // block the queue). o.send(events) -> Promise<{status}>.
  class Batcher {
    constructor(o) {
      this.o = Object.assign({
        max: 10, delay: 200, tries: 5, backoff: 500, random: Math.random,
        set: (f, ms) => setTimeout(f, ms), clear: (t) => clearTimeout(t), drop: () => {}
      }, o);
      this.q = [];        // {e: event, n: bytes, s: seq}
      this.seq = 0;
      this.waiters = [];  // flush() promises {s, r}
      this.busy = null;   // chunk in flight or awaiting retry
      this.timer = this.retry = null;
      this.attempt = 0;
    }

    push(event, bytes) {
      this.q.push({ e: event, n: bytes || 0, s: ++this.seq });
      this._pump(false);
    }

    // Resolves when all events queued so far are delivered or dropped.
    flush() {
      if (!this.q.length) return Promise.resolve();
      return new Promise((r) => { this.waiters.push({ s: this.seq, r }); this._pump(true); });
    }

    // Page hidden: beacon all not on the wire (beacons can't be retried).
    drain(beacon) {
      var keep = this.busy && !this.retry ? this.busy.length : 0;
      if (this.retry) { this.o.clear(this.retry); this.retry = this.busy = null; this.attempt = 0; }
      this._stopTimer();
      var rest = this.q.splice(keep);
      while (rest.length) beacon(unwrap(rest.splice(0, chunkLength(rest, this.o.max))));
      this._settle();
    }

    _stopTimer() { if (this.timer) { this.o.clear(this.timer); this.timer = null; } }

    _pump(now) {
      if (this.busy || !this.q.length) return;
      if (now || this.waiters.length || this.q.length >= this.o.max) {
        this._stopTimer();
        this._send(this.q.slice(0, chunkLength(this.q, this.o.max)));
      } else if (!this.timer) {
        this.timer = this.o.set(() => { this.timer = null; this._pump(true); }, this.o.delay);
      }
    }

    _send(chunk) {
      var o = this.o, events = unwrap(chunk);
      this.busy = chunk;
      Promise.resolve().then(() => o.send(events))
        .catch(() => ({ status: 0 }))
        .then((res) => {
          if (this.busy !== chunk) return; // drain() took these events over
          var status = (res && res.status) || 0, tries = ++this.attempt;
          if (status >= 200 && status < 300) {
            // delivered
          } else if (retryable(status) && tries < o.tries) {
            var wait = o.backoff * Math.pow(2, tries - 1) * (0.75 + o.random() / 2);
            this.retry = o.set(() => { this.retry = null; this._send(chunk); }, wait);
            return;
          } else {
            o.drop(events, res, tries);
          }
          this.q.splice(0, chunk.length);
          this.busy = null;
          this.attempt = 0;
          this._settle();
          this._pump(false);
        });
    }

    _settle() {
      var done = this.q.length ? this.q[0].s - 1 : this.seq;
      this.waiters = this.waiters.filter((w) => { if (w.s > done) return true; w.r(); });
    }
  }

  // window-like object in, datafly API out; opts.now injects a clock.
  function createDatafly(win, opts) {
    opts = opts || {};
    var now = opts.now || Date.now;
    var con = win.console || (typeof console !== 'undefined' ? console : null);
    var nav = win.navigator || {}, doc = win.document || {};
    var set = (f, ms) => win.setTimeout(f, ms);
    var clear = (t) => win.clearTimeout(t);
    var store = makeStore(() => win.localStorage);
    var explicit = parseJSON(store.get(KEYS.consent));
    var cfg = null, batcher = null, early = [], announceReady;
    var ready = new Promise((r) => { announceReady = r; });
    var df = { version: VERSION, profile: { amperity: {} }, _df: true };

    function anonymousId() {
      var id = store.get(KEYS.anon);
      if (!id) store.set(KEYS.anon, id = uuid(win.crypto));
      return id;
    }

    function emit(type, fields) {
      var t = now(), body;
      var ev = Object.assign({ type: type }, fields, {
        userId: store.get(KEYS.user) || undefined,
        anonymousId: anonymousId(),
        messageId: uuid(win.crypto),
        timestamp: new Date(t).toISOString(),
        context: collectContext(win, store, t, explicit)
      });
      // Snapshot now (the caller may mutate); an oversize event would 413 its batch.
      try { body = JSON.stringify(ev); } catch (e) { return warn(con, type + ' dropped: ' + e.message); }
      var bytes = utf8Len(body);
      if (bytes > MAX_EVENT_BYTES) return warn(con, type + ' dropped: ' + bytes + ' bytes is over the 32 KB event limit');
      if (batcher) batcher.push(JSON.parse(body), bytes);
      else early.push([JSON.parse(body), bytes]);
    }

    function post(events, beacon) {
      var r = buildRequest(events, cfg.pipelineKey, new Date(now()).toISOString());
      var url = cfg.endpoint + r.path, body = JSON.stringify(r.body);
      if (beacon && safe(() => nav.sendBeacon(url, new win.Blob([body], { type: TEXT })))) return;
      return win.fetch(url, { method: 'POST', headers: { 'Content-Type': TEXT }, body, credentials: 'include', keepalive: true });
    }

    function dropped(events, res, attempts) {
      var why = res && res.status ? 'HTTP ' + res.status : 'network error';
      var say = (detail) => warn(con, events.length + ' event(s) dropped after ' + attempts + ' attempt(s): ' + why + (detail ? ' ' + detail : ''));
      if (res && res.status && res.text) res.text().then(say, () => say());
      else say();
    }

    // Never rejects; gives up after enrich.timeout so onProfileReady() can't hang.
    function loadProfile() {
      var e = cfg.enrich;
      return Promise.all(e.providers.map((p) => {
        var ac = win.AbortController ? new win.AbortController() : null, timer;
        var get = win.fetch(e.endpoint + '/v1/enrich?provider=' + encodeURIComponent(p), { credentials: 'include', signal: ac ? ac.signal : undefined })
          .then((res) => {
            if (!res.ok) throw new Error('HTTP ' + res.status);
            return res.json();
          });
        var late = new Promise((_, reject) => {
          timer = set(() => { if (ac) ac.abort(); reject(new Error('timed out after ' + e.timeout + ' ms')); }, e.timeout);
        });
        return Promise.race([get, late]).then(
          (body) => { df.profile[p] = pick(body && body.attributes); },
          (err) => warn(con, p + ' profile unavailable: ' + (err && err.message))
        ).then(() => clear(timer));
      })).then(() => df.profile);
    }

    function announce() {
      if (typeof win.CustomEvent === 'function' && win.dispatchEvent) {
        safe(() => win.dispatchEvent(new win.CustomEvent('datafly:profile', { detail: df.profile })));
      }
      return df.profile;
    }

    function profileKnown() {
      return cfg.enrich.providers.some((p) => nonEmpty(df.profile[p]));
    }

    df.init = function (c) {
      if (cfg) return warn(con, 'init() was already called; ignoring this one');
      if (!isObj(c) || !c.pipelineKey || !c.endpoint) return warn(con, 'init() needs {pipelineKey, endpoint}');
      var strip = (u) => String(u).replace(/\/+$/, '');
      var en = c.enrich;
      cfg = {
        pipelineKey: String(c.pipelineKey),
        endpoint: strip(c.endpoint),
        enrich: isObj(en) ? {
          endpoint: strip(en.endpoint || c.endpoint),
          providers: Array.isArray(en.providers) && en.providers.length ? en.providers.map(String) : ['amperity'],
          timeout: en.timeout > 0 ? en.timeout : 5000
        } : null
      };
      batcher = new Batcher({ send: post, drop: dropped, set, clear, random: opts.random || Math.random });
      early.forEach((x) => batcher.push(x[0], x[1]));
      early = null;
      // Fire and forget: nothing can be retried once the page is gone.
      var hide = () => batcher.drain((events) => safe(() => { var sent = post(events, true); if (sent) sent.catch(() => {}); }));
      if (win.addEventListener) win.addEventListener('pagehide', hide);
      if (doc.addEventListener) doc.addEventListener('visibilitychange', () => doc.visibilityState === 'hidden' && hide());
      if (cfg.enrich) {
        cfg.enrich.providers.forEach((p) => { df.profile[p] = df.profile[p] || {}; });
        loadProfile().then(announce).then(announceReady);
      } else {
        announceReady(df.profile);
      }
      if (c.page !== false) df.page();
      return df;
    };

    df.track = function (event, properties) {
      if (!event || typeof event !== 'string') return warn(con, 'track() needs an event name');
      emit('track', { event, properties: pick(properties) });
    };

    df.page = function (name, properties) {
      if (isObj(name)) { properties = name; name = null; }
      emit('page', { name: name == null ? undefined : String(name), properties: pick(properties) });
    };

    df.identify = function (userId, traits) {
      if (isObj(userId)) { traits = userId; userId = null; }
      if (userId != null && userId !== '') store.set(KEYS.user, String(userId));
      emit('identify', { traits: pick(traits) });
    };

    df.group = function (groupId, traits) {
      if (groupId == null || groupId === '') return warn(con, 'group() needs a group id');
      emit('group', { groupId: String(groupId), traits: pick(traits) });
    };

    df.consent = function (state) {
      if (!isObj(state)) return warn(con, 'consent() needs an object');
      explicit = mergeConsent(explicit, state);
      store.set(KEYS.consent, JSON.stringify(explicit));
    };

    df.flush = () => (batcher ? batcher.flush() : Promise.resolve());

    df.onProfileReady = () => ready;

    // Flushes first so an identify reaches the server, which resolves the
    // visitor asynchronously: poll while every provider is still empty.
    df.refreshProfile = function (o) {
      var left = o && o.retries >= 0 ? o.retries : 3;
      if (!cfg || !cfg.enrich) return Promise.resolve(df.profile);
      var attempt = () => loadProfile().then(() => {
        if (left-- > 0 && !profileKnown()) return new Promise((r) => set(r, 250)).then(attempt);
        return announce();
      });
      return df.flush().then(attempt);
    };

    return df;
  }

  var api = {
    createDatafly,
    _internals: {
      collectContext, collectConsent, mapConsent, googleConsent, oneTrustCategories, mergeConsent,
      Batcher, buildRequest, parseCookies, parseQuery, campaignFrom, vendorIds, touchSession, makeStore,
      uuid, utf8Len, SESSION_TIMEOUT, KEYS, VERSION
    }
  };
  if (typeof module !== 'undefined' && module.exports) module.exports = api;
  // A second copy of this file keeps the live instance (its queue, session,
  // profile); the copy's appended init() then reaches it and is ignored.
  if (root && root.document && !(root.datafly && root.datafly._df)) root.datafly = createDatafly(root);
})(typeof window !== 'undefined' ? window : this);
