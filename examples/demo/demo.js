/*
 * examples/demo/demo.js — the storefront's own code: what a customer writes
 * around datafly.js. Retail events with Segment names (the Amperity retail
 * preset maps them to view_item / add_to_cart / begin_checkout / purchase),
 * a Consent Mode v2 banner, sign-in with identify + refreshProfile, and the
 * page-side personalization (Persona "Value Hunter" → promo hero).
 * Everything personal comes from datafly.profile.amperity, which holds only
 * the server-side allowlisted attributes.
 */
(function () {
  'use strict';

  var PRODUCTS = [
    { product_id: 'TH-101', name: 'Trail Runner 2', brand: 'Trailblaze', category: 'shoes', price: 129, color: '#2f6b4f' },
    { product_id: 'TH-102', name: 'Storm Shell Jacket', brand: 'Northpeak', category: 'jackets', price: 189, color: '#1e3a5f' },
    { product_id: 'TH-103', name: 'Summit Day Pack 24L', brand: 'Summit & Co', category: 'bags', price: 79, color: '#7c4a1e' },
    { product_id: 'TH-104', name: 'Merino Hiking Socks', brand: 'Trailblaze', category: 'accessories', price: 18, color: '#6b2f5b' }
  ];
  var CONSENT_CHOICES = {
    accept: { ad_storage: 'granted', ad_user_data: 'granted', ad_personalization: 'granted', analytics_storage: 'granted' },
    analytics: { ad_storage: 'denied', ad_user_data: 'denied', ad_personalization: 'denied', analytics_storage: 'granted' },
    reject: { ad_storage: 'denied', ad_user_data: 'denied', ad_personalization: 'denied', analytics_storage: 'denied' }
  };
  var DEMO_USER = { id: 'user-123', email: 'jane.doe@example.com' };

  var $ = function (sel) { return document.querySelector(sel); };
  var money = function (n) { return '$' + n.toFixed(2); };
  var sleep = function (ms) { return new Promise(function (r) { setTimeout(r, ms); }); };
  var isEmpty = function (o) { return !o || Object.keys(o).length === 0; };
  var cart = [];

  // datafly.js failed to load (engine down): the shop still works, untracked.
  var df = window.datafly;
  if (!df) $('#engine-down').hidden = false;

  // Every event goes through here so the panel shows what the page sent.
  function send(kind, name, props) {
    if (df) {
      if (kind === 'track') df.track(name, props);
      else if (kind === 'identify') df.identify(name, props);
    }
    var li = document.createElement('li');
    li.textContent = kind === 'track' ? name : kind + ' ' + name;
    var t = document.createElement('span');
    t.className = 't';
    t.textContent = new Date().toLocaleTimeString();
    li.appendChild(t);
    $('#event-log').prepend(li);
  }

  // ---- products and cart ---------------------------------------------------

  function productProps(p, extra) {
    return Object.assign({ product_id: p.product_id, sku: p.product_id, name: p.name, brand: p.brand,
      category: p.category, price: p.price, currency: 'USD' }, extra);
  }

  function renderProducts() {
    var grid = $('#products');
    PRODUCTS.forEach(function (p) {
      var card = document.createElement('article');
      card.className = 'card';
      card.dataset.brand = p.brand;
      card.innerHTML = '<div class="art"></div><div class="name"></div><div class="meta"></div>' +
        '<div class="price"></div><div class="actions">' +
        '<button class="btn btn-ghost" type="button" data-action="view">View</button>' +
        '<button class="btn" type="button" data-action="add">Add to cart</button></div>';
      // No images or emoji (not every machine has the fonts): a tinted tile.
      var art = card.querySelector('.art');
      art.textContent = p.category;
      art.style.background = 'linear-gradient(135deg, ' + p.color + ', ' + p.color + 'aa)';
      card.querySelector('.name').textContent = p.name;
      card.querySelector('.meta').textContent = p.brand + ' · ' + p.category;
      card.querySelector('.price').textContent = money(p.price);
      card.querySelectorAll('button').forEach(function (b) { b.dataset.product = p.product_id; });
      grid.appendChild(card);
    });
    grid.addEventListener('click', function (e) {
      var b = e.target.closest('button[data-action]');
      if (!b) return;
      var p = PRODUCTS.find(function (x) { return x.product_id === b.dataset.product; });
      if (b.dataset.action === 'view') {
        send('track', 'Product Viewed', productProps(p));
      } else {
        var line = cart.find(function (l) { return l.product_id === p.product_id; });
        if (line) line.quantity++;
        else cart.push(Object.assign({ quantity: 1 }, p));
        send('track', 'Product Added', productProps(p, { quantity: 1, cart_id: 'cart-' + sessionId() }));
        renderCart();
      }
    });
  }

  function cartTotal() {
    return cart.reduce(function (s, l) { return s + l.price * l.quantity; }, 0);
  }

  function renderCart() {
    var ul = $('#cart-lines');
    ul.innerHTML = '';
    if (!cart.length) ul.innerHTML = '<li class="muted">Your cart is empty.</li>';
    cart.forEach(function (l) {
      var li = document.createElement('li');
      li.textContent = l.quantity + ' × ' + l.name;
      var s = document.createElement('span');
      s.textContent = money(l.price * l.quantity);
      li.appendChild(s);
      ul.appendChild(li);
    });
    $('#cart-total').textContent = money(cartTotal());
    $('#cart-count').textContent = String(cart.reduce(function (n, l) { return n + l.quantity; }, 0));
    $('#checkout').disabled = !cart.length;
  }

  function lineItems() {
    return cart.map(function (l) {
      return { product_id: l.product_id, sku: l.product_id, name: l.name, brand: l.brand,
        category: l.category, price: l.price, quantity: l.quantity };
    });
  }

  $('#checkout').addEventListener('click', function () {
    var orderId = 'ORD-' + Date.now().toString(36).toUpperCase();
    var common = { currency: 'USD', value: cartTotal(), products: lineItems() };
    send('track', 'Checkout Started', Object.assign({ checkout_id: 'chk-' + sessionId() }, common));
    send('track', 'Order Completed', Object.assign({ order_id: orderId, revenue: cartTotal(), subtotal: cartTotal(),
      tax: 0, shipping: 0, payment_method: 'card' }, common));
    $('#order-status').textContent = 'Thanks! Order ' + orderId + ' placed.';
    cart = [];
    renderCart();
  });

  // A stable id for cart/checkout ids; the SDK keeps its session in localStorage.
  function sessionId() {
    try { return JSON.parse(localStorage.getItem('df_session')).id.slice(0, 8); } catch (e) { return 'anon'; }
  }

  // ---- consent (Google Consent Mode v2) -----------------------------------

  function currentConsent() {
    // The same layering datafly.js applies: defaults, then updates on top.
    var state = {}, upd = {};
    (window.dataLayer || []).forEach(function (c) {
      if (c && c[0] === 'consent' && c[2]) Object.assign(c[1] === 'update' ? upd : state, c[2]);
    });
    state = Object.assign(state, upd);
    delete state.wait_for_update;
    return state;
  }

  function renderConsent() { $('#consent-json').textContent = JSON.stringify(currentConsent(), null, 2); }

  function choose(kind) {
    var c = CONSENT_CHOICES[kind];
    window.gtag('consent', 'update', c);
    try { localStorage.setItem('demo_consent', JSON.stringify(c)); } catch (e) { /* memory only */ }
    $('#consent-banner').hidden = true;
    renderConsent();
  }
  $('#consent-accept').addEventListener('click', function () { choose('accept'); });
  $('#consent-analytics').addEventListener('click', function () { choose('analytics'); });
  $('#consent-reject').addEventListener('click', function () { choose('reject'); });
  $('#consent-open').addEventListener('click', function () { $('#consent-banner').hidden = false; });
  var chosen = null;
  try { chosen = localStorage.getItem('demo_consent'); } catch (e) { /* ask */ }
  $('#consent-banner').hidden = !!chosen;

  // ---- personalization ------------------------------------------------------

  function applyProfile(profile) {
    var a = (profile && profile.amperity) || {};
    $('#profile-json').textContent = JSON.stringify(a, null, 2);
    // The integration page's example: a Value Hunter sees the promo hero.
    document.querySelector('#hero').dataset.variant = a.Persona === 'Value Hunter' ? 'promo' : 'default';
    document.querySelectorAll('.card').forEach(function (card) {
      var fav = !!a.FavoriteBrand && card.dataset.brand === a.FavoriteBrand;
      card.classList.toggle('favourite', fav);
      var badge = card.querySelector('.fav-badge');
      if (fav && !badge) {
        badge = document.createElement('span');
        badge.className = 'fav-badge';
        badge.textContent = 'Your favourite brand';
        card.appendChild(badge);
      } else if (!fav && badge) badge.remove();
    });
    var tier = $('#tier-badge');
    tier.hidden = !a.LifetimeTier;
    tier.textContent = a.LifetimeTier ? a.LifetimeTier + ' member' : '';
  }

  function renderSignedIn() {
    var who = null;
    try { who = localStorage.getItem('demo_user'); } catch (e) { /* not remembered */ }
    $('#signed-in').hidden = !who;
    $('#signed-in').textContent = who ? 'Hi, ' + who : '';
    $('#signin').hidden = !!who;
  }

  // The server resolves the visitor after it has processed the identify, in
  // the background; refreshProfile() polls for about a second. Keep asking a
  // little longer, bounded, so a busy pipeline still personalizes.
  async function signIn() {
    var btn = $('#signin');
    btn.disabled = true;
    $('#profile-status').textContent = 'Signed in; looking up the Amperity profile…';
    send('identify', DEMO_USER.id, { email: DEMO_USER.email });
    try { localStorage.setItem('demo_user', DEMO_USER.email); } catch (e) { /* memory only */ }
    var profile = df ? await df.refreshProfile() : { amperity: {} };
    for (var i = 0; df && i < 10 && isEmpty(profile.amperity); i++) {
      await sleep(1000);
      profile = await df.refreshProfile({ retries: 0 });
    }
    applyProfile(profile);
    $('#profile-status').textContent = isEmpty(profile.amperity)
      ? 'No profile attributes yet: the visitor is not resolved (try again in a moment).'
      : 'Profile loaded after sign-in.';
    btn.disabled = false;
    renderSignedIn();
    document.body.dataset.signin = 'done';
  }
  $('#signin').addEventListener('click', signIn);

  renderProducts();
  renderCart();
  renderConsent();
  renderSignedIn();

  if (df) {
    // Any later refresh (ours or another script's) updates the page too.
    window.addEventListener('datafly:profile', function (e) { applyProfile(e.detail); });
    df.onProfileReady().then(function (profile) {
      applyProfile(profile);
      $('#profile-status').textContent = isEmpty(profile.amperity)
        ? 'onProfileReady(): {} (a first-touch or not yet resolved visitor).'
        : 'onProfileReady(): profile hydrated on page load.';
      document.body.dataset.profile = 'ready';
    });
  }
})();
