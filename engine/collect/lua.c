/*
 * lua.c — core.collect: the collector's rules for the Lua modules that need
 * them (engine/API.md).
 *
 * The rules themselves live in this folder's C, once: the visitor cookie
 * and the client address (visitor.c), CORS (cors.c), keys and Basic
 * credentials (keys.c), the limits (limits.h), normalization (normalize.c,
 * convert.c) and the linking keys (stitch.c). The engine's request flow
 * calls them directly; these bindings hand the same functions to the
 * modules outside the collector — the identity hub reads the cookie and
 * sends CORS headers, the SDK routes send CORS headers, signal.testing
 * converts a customer's test message — and to the specs, which drive every
 * rule through its tables of cases.
 *
 * Workspaces (the converter's buffers, a random pool) are upvalues of the
 * functions, freed by __gc: no C globals, and a Lua error cannot leak them.
 */
#include "convert.h"
#include "limits.h"
#include "visitor.h"
#include "../l_buf.h"
#include "../l_core.h"
#include "../worker.h"

#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>

#define WS_MT "signal.collect.workspace"
#define PROXIES_MT "signal.collect.proxies"
#define CORS_MT "signal.collect.cors"

typedef struct {
    sg_convert cv;
    sg_rand_pool rand;
} workspace;

static workspace *ws_of(lua_State *L) { return lua_touserdata(L, lua_upvalueindex(1)); }

static int ws_gc(lua_State *L)
{
    workspace *w = lua_touserdata(L, 1);
    sg_convert_free(&w->cv);
    return 0;
}

/* an optional string field of table t: NULL when nil */
static const char *opt_field(lua_State *L, int t, const char *name, size_t *n)
{
    lua_getfield(L, t, name);
    const char *s = lua_isnil(L, -1) ? NULL : luaL_checklstring(L, -1, n);
    if (!s) *n = 0;
    lua_pop(L, 1);             /* strings in a table stay alive while the table does */
    return s;
}

static double received_at(lua_State *L, int t)
{
    lua_getfield(L, t, "received_at");
    double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : sg_wallclock();
    lua_pop(L, 1);
    return v;
}

static void push_links(lua_State *L, const sg_convert *cv, const sg_norm_result *r)
{
    static const char *const NAMES[SG_LINK_COUNT] = { "email", "phone", "user_id" };
    int any = 0;
    for (int k = 0; k < SG_LINK_COUNT; k++) any |= r->link_len[k] > 0;
    if (!any) { lua_pushnil(L); return; }
    lua_createtable(L, 0, 3);
    for (int k = 0; k < SG_LINK_COUNT; k++) {
        if (!r->link_len[k]) continue;
        lua_pushlstring(L, cv->aux.data + r->link[k], r->link_len[k]);
        lua_setfield(L, -2, NAMES[k]);
    }
}

/* ---- normalization --------------------------------------------------------- */

/* core.collect.normalize(message_json, ctx) → ev_json, message_id, dedupe,
 * linking_keys | nil, reasons. ctx = { canonical_id, pipeline_key, ip,
 * user_agent, type_hint, server_side, received_at (default: now) } */
static int l_normalize(lua_State *L)
{
    size_t n;
    const char *body = sg_tobytes(L, 1, &n);
    if (!body) return luaL_argerror(L, 1, "string or buffer expected");
    luaL_checktype(L, 2, LUA_TTABLE);
    workspace *w = ws_of(L);
    sg_convert *cv = &w->cv;
    if (!cv->norm && !(cv->norm = sg_norm_new())) return luaL_error(L, "normalize: out of memory");
    int rc = sg_json_parse(&cv->json, body, n, 3);
    if (rc == -2) return luaL_error(L, "normalize: out of memory");
    if (rc == -1) {
        lua_pushnil(L);
        lua_createtable(L, 1, 0);
        lua_pushfstring(L, "not valid JSON: %s", cv->json.err);
        lua_rawseti(L, -2, 1);
        return 2;
    }
    sg_norm_ctx c;
    memset(&c, 0, sizeof c);
    c.canonical_id = opt_field(L, 2, "canonical_id", &c.canonical_id_len);
    c.pipeline_key = opt_field(L, 2, "pipeline_key", &c.pipeline_key_len);
    c.ip = opt_field(L, 2, "ip", &c.ip_len);
    c.user_agent = opt_field(L, 2, "user_agent", &c.user_agent_len);
    c.type_hint = opt_field(L, 2, "type_hint", &c.type_hint_len);
    lua_getfield(L, 2, "server_side");
    c.server_side = lua_toboolean(L, -1);
    lua_pop(L, 1);
    c.received_at = received_at(L, 2);
    c.sent_at = c.batch_context = -1;
    c.rand = &w->rand;
    sg_norm_result r;
    sg_bytes_reset(&cv->events);
    sg_bytes_reset(&cv->aux);
    rc = sg_normalize(cv->norm, &cv->json, 0, &c, &cv->events, &cv->aux, &r);
    if (rc < 0) return luaL_error(L, "normalize: out of memory");
    if (rc == 0) {
        lua_pushnil(L);
        lua_createtable(L, r.nreasons, 0);
        for (int i = 0; i < r.nreasons; i++) {
            size_t len;
            const char *s = sg_norm_reason(cv->norm, i, &len);
            lua_pushlstring(L, s, len);
            lua_rawseti(L, -2, i + 1);
        }
        return 2;
    }
    lua_pushlstring(L, cv->events.data + r.ev, r.ev_len);
    lua_pushlstring(L, cv->aux.data + r.mid, r.mid_len);
    lua_pushboolean(L, r.dedupe);
    push_links(L, cv, &r);
    return 4;
}

/* the pipelines of a convert() ctx: { "key", … } → a key table of them */
static int read_keys(lua_State *L, int t, sg_keys *keys)
{
    lua_getfield(L, t, "pipelines");
    int n = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
    keys->p = n ? calloc((size_t)n, sizeof *keys->p) : NULL;
    keys->n = 0;
    for (int i = 0; i < n && keys->p; i++) {
        lua_rawgeti(L, -1, i + 1);
        size_t kn;
        const char *k = lua_tolstring(L, -1, &kn);
        if (k) {
            keys->p[keys->n].key = (char *)k;   /* kept alive by the ctx table */
            keys->p[keys->n++].klen = kn;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return n && !keys->p ? -1 : 0;
}

static void push_events(lua_State *L, const sg_convert *cv, const char *body)
{
    lua_createtable(L, cv->n, 0);
    for (int i = 0; i < cv->n; i++) {
        const sg_message *m = &cv->msg[i];
        lua_createtable(L, 0, 6);
        lua_pushlstring(L, cv->events.data + m->r.ev, m->r.ev_len);
        lua_setfield(L, -2, "ev");
        lua_pushlstring(L, (m->in_body ? body : cv->inputs.data) + m->in, m->in_len);
        lua_setfield(L, -2, "in");
        lua_pushlstring(L, cv->aux.data + m->r.mid, m->r.mid_len);
        lua_setfield(L, -2, "message_id");
        lua_pushboolean(L, m->r.dedupe);
        lua_setfield(L, -2, "dedupe");
        if (m->r.cid_len) {
            lua_pushlstring(L, cv->aux.data + m->r.cid, m->r.cid_len);
            lua_setfield(L, -2, "canonical_id");
        }
        push_links(L, cv, &m->r);
        lua_setfield(L, -2, "link");
        lua_rawseti(L, -2, i + 1);
    }
}

static int route_kind(lua_State *L, int t)
{
    lua_getfield(L, t, "kind");
    const char *k = luaL_optstring(L, -1, "single");
    lua_pop(L, 1);
    if (strcmp(k, "single") == 0) return SG_ROUTE_SINGLE;
    if (strcmp(k, "batch") == 0) return SG_ROUTE_BATCH;
    if (strcmp(k, "events") == 0) return SG_ROUTE_EVENTS;
    return luaL_error(L, "convert: kind must be single, batch or events");
}

/* core.collect.convert(body, ctx) → { status, code, reason, body, rejected,
 * received, pipeline, events = { { ev, in, message_id, dedupe,
 * canonical_id, link }, … } }: what the collector does with a request body
 * (after gunzip), minus the HTTP. ctx = { kind = "single"|"batch"|"events",
 * pipelines = { key, … }, header_key, basic_key, content_type, type_hint,
 * server_side, canonical_id, ip, user_agent, received_at } */
static int l_convert(lua_State *L)
{
    size_t n;
    const char *body = sg_tobytes(L, 1, &n);
    if (!body) return luaL_argerror(L, 1, "string or buffer expected");
    luaL_checktype(L, 2, LUA_TTABLE);
    workspace *w = ws_of(L);
    sg_convert_in in;
    memset(&in, 0, sizeof in);
    in.kind = route_kind(L, 2);
    sg_keys keys;
    if (read_keys(L, 2, &keys) != 0) return luaL_error(L, "convert: out of memory");
    in.keys = &keys;
    size_t hn;
    const char *hk = opt_field(L, 2, "header_key", &hn);
    in.basic = opt_field(L, 2, "basic_key", &in.basic_len);
    in.content_type = opt_field(L, 2, "content_type", &in.content_type_len);
    in.type_hint = opt_field(L, 2, "type_hint", &in.type_hint_len);
    in.canonical_id = opt_field(L, 2, "canonical_id", &in.canonical_id_len);
    in.ip = opt_field(L, 2, "ip", &in.ip_len);
    in.user_agent = opt_field(L, 2, "user_agent", &in.user_agent_len);
    lua_getfield(L, 2, "server_side");
    in.server_side = lua_toboolean(L, -1);
    lua_pop(L, 1);
    in.received_at = received_at(L, 2);
    in.rand = &w->rand;
    int refused, rc = 0;
    in.header = sg_convert_header_key(&w->cv, &keys, hk, hn, &refused);
    if (!refused) rc = sg_convert_body(&w->cv, body, n, &in);
    if (rc < 0) {
        free(keys.p);
        return luaL_error(L, "convert: out of memory");
    }
    sg_convert *cv = &w->cv;
    lua_createtable(L, 0, 8);
    lua_pushinteger(L, cv->status ? cv->status : 200);
    lua_setfield(L, -2, "status");
    lua_pushinteger(L, cv->received);
    lua_setfield(L, -2, "received");
    if (cv->pipeline) {
        lua_pushlstring(L, cv->pipeline->key, cv->pipeline->klen);
        lua_setfield(L, -2, "pipeline");
    }
    if (cv->status) {
        lua_pushstring(L, cv->code);
        lua_setfield(L, -2, "code");
        lua_pushstring(L, cv->reason);
        lua_setfield(L, -2, "reason");
        lua_pushinteger(L, cv->rejected);
        lua_setfield(L, -2, "rejected");
        lua_pushlstring(L, cv->error.data, cv->error.len);
        lua_setfield(L, -2, "body");
    } else {
        push_events(L, cv, body);
        lua_setfield(L, -2, "events");
    }
    free(keys.p);                      /* cv->pipeline pointed into it */
    return 1;
}

/* core.collect.snake(key) → the key in snake_case */
static int l_snake(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    char buf[512];
    char *out = 2 * n <= sizeof buf ? buf : malloc(2 * n + 1);
    if (!out) return luaL_error(L, "snake: out of memory");
    lua_pushlstring(L, out, sg_snake(s, n, out));
    if (out != buf) free(out);
    return 1;
}

/* core.collect.linking_keys(ev_json) → { email, phone, user_id } | nil:
 * what the commit remembers for a canonical event */
static int l_linking_keys(lua_State *L)
{
    size_t n;
    const char *ev = luaL_checklstring(L, 1, &n);
    workspace *w = ws_of(L);
    sg_json *j = &w->cv.json;
    if (sg_json_parse(j, ev, n, 3) != 0 || j->node[0].type != SG_J_OBJ) return luaL_argerror(L, 1, "an event object");
    int32_t type = sg_json_member(j, 0, "type", 4), uid = sg_json_member(j, 0, "user_id", 7);
    int32_t cid = sg_json_member(j, 0, "canonical_id", 12), ctx = sg_json_member(j, 0, "context", 7);
    int32_t traits = sg_json_member(j, 0, "traits", 6), props = sg_json_member(j, 0, "properties", 10);
    int32_t ct = ctx >= 0 && j->node[ctx].type == SG_J_OBJ ? sg_json_member(j, (uint32_t)ctx, "traits", 6) : -1;
    sg_link_in in;
    memset(&in, 0, sizeof in);
    in.has_canonical_id = cid >= 0 && j->node[cid].type != SG_J_NULL;
    in.identify = type >= 0 && j->node[type].vlen == 10 && memcmp(j->s + j->node[type].val, "\"identify\"", 10) == 0;
    in.user_id_node = uid;                 /* decoded, or a number as present() takes it */
    in.traits = (sg_obj_view){ j, traits >= 0 && j->node[traits].type == SG_J_OBJ ? traits : -1, NULL, 0 };
    in.context_traits = (sg_obj_view){ j, ct >= 0 && j->node[ct].type == SG_J_OBJ ? ct : -1, NULL, 0 };
    in.properties = (sg_obj_view){ j, props >= 0 && j->node[props].type == SG_J_OBJ ? props : -1, NULL, 0 };
    sg_norm_result r;
    memset(&r, 0, sizeof r);
    sg_bytes_reset(&w->cv.aux);
    sg_linking_keys(&in, &w->cv.aux, &r);
    push_links(L, &w->cv, &r);
    return 1;
}

/* ---- visitor ---------------------------------------------------------------- */

/* The cookie secrets at index i (a list: cookie_secret, then
 * cookie_secret_previous; nil: unsigned cookies) into k, borrowing the Lua
 * strings (the list stays on the stack while k is used). */
static void cookie_keys(lua_State *L, int i, sg_cookie_keys *k)
{
    memset(k, 0, sizeof *k);
    if (lua_isnoneornil(L, i)) return;
    luaL_checktype(L, i, LUA_TTABLE);
    for (int j = 1; j <= 2; j++) {
        lua_rawgeti(L, i, j);
        const char *s = lua_tolstring(L, -1, &k->len[k->n]);
        lua_pop(L, 1);              /* still anchored by the list */
        if (!s) break;
        k->key[k->n++] = s;
    }
}

/* core.collect.read_cookie(cookie_header[, secrets]) → the _dfdid visitor
 * id, and true when it must be set again (signed with an older secret) |
 * nil */
static int l_read_cookie(lua_State *L)
{
    size_t n, vn;
    const char *h = luaL_optlstring(L, 1, NULL, &n), *v;
    sg_cookie_keys k;
    cookie_keys(L, 2, &k);
    int got = h ? sg_cookie_read(h, n, &k, &v, &vn) : 0;
    if (!got) { lua_pushnil(L); return 1; }
    lua_pushlstring(L, v, vn);
    lua_pushboolean(L, got == 2);
    return 2;
}

/* core.collect.visitor_id() → a new "dfid_<32 hex>" */
static int l_visitor_id(lua_State *L)
{
    char id[SG_VISITOR_ID_LEN];
    if (sg_visitor_id(&ws_of(L)->rand, id) != 0) return luaL_error(L, "visitor_id: no random bytes from the OS");
    lua_pushlstring(L, id, sizeof id);
    return 1;
}

/* core.collect.set_cookie(id, https, cookie_domain[, secrets]) → the
 * Set-Cookie value */
static int l_set_cookie(lua_State *L)
{
    size_t n, dn;
    const char *id = luaL_checklstring(L, 1, &n);
    const char *domain = luaL_optlstring(L, 3, NULL, &dn);
    sg_cookie_keys k;
    cookie_keys(L, 4, &k);
    sg_bytes b = SG_BYTES_INIT;
    sg_cookie_set(&b, id, n, &k, domain, dn, lua_toboolean(L, 2));
    if (b.oom) { sg_bytes_free(&b); return luaL_error(L, "set_cookie: out of memory"); }
    lua_pushlstring(L, b.data, b.len);
    sg_bytes_free(&b);
    return 1;
}

/* core.collect.parse_ip(s) → 4 or 16 bytes | nil */
static int l_parse_ip(lua_State *L)
{
    size_t n;
    const char *s = luaL_optlstring(L, 1, NULL, &n);
    unsigned char b[16];
    int len = s ? sg_parse_ip(s, n, b) : 0;
    if (len) lua_pushlstring(L, (const char *)b, (size_t)len);
    else lua_pushnil(L);
    return 1;
}

/* core.collect.proxies({ "10.0.0.0/8", … }) → trusted proxies, with
 * :client_ip(peer, xff), :is_https(peer, xfp) and :trusts(addr) */
static int l_proxies(lua_State *L)
{
    sg_proxies *p = lua_newuserdata(L, sizeof *p);
    p->net = NULL;
    p->n = 0;
    luaL_getmetatable(L, PROXIES_MT);
    lua_setmetatable(L, -2);
    int n = lua_istable(L, 1) ? (int)lua_objlen(L, 1) : 0;
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 1, i + 1);
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);
        if (s && sg_proxies_add(p, s, len) < 0) return luaL_error(L, "proxies: out of memory");
        lua_pop(L, 1);
    }
    return 1;
}

static int proxies_gc(lua_State *L)
{
    sg_proxies_free(luaL_checkudata(L, 1, PROXIES_MT));
    return 0;
}

static int proxies_client_ip(lua_State *L)
{
    const sg_proxies *p = luaL_checkudata(L, 1, PROXIES_MT);
    size_t pn = 0, xn = 0, iplen;
    const char *peer = luaL_optlstring(L, 2, NULL, &pn), *xff = luaL_optlstring(L, 3, NULL, &xn), *ip;
    sg_client_ip(p, peer, peer ? pn : 0, xff, xn, &ip, &iplen);
    if (ip) lua_pushlstring(L, ip, iplen);
    else lua_pushnil(L);
    return 1;
}

static int proxies_is_https(lua_State *L)
{
    const sg_proxies *p = luaL_checkudata(L, 1, PROXIES_MT);
    size_t pn = 0, n = 0;
    const char *peer = luaL_optlstring(L, 2, NULL, &pn), *xfp = luaL_optlstring(L, 3, NULL, &n);
    lua_pushboolean(L, sg_client_https(p, peer, peer ? pn : 0, xfp, n));
    return 1;
}

static int proxies_trusts(lua_State *L)
{
    const sg_proxies *p = luaL_checkudata(L, 1, PROXIES_MT);
    size_t n = 0;
    const char *a = luaL_optlstring(L, 2, NULL, &n);
    lua_pushboolean(L, sg_proxies_trust(p, a, a ? n : 0));
    return 1;
}

/* ---- keys ---------------------------------------------------------------- */

/* core.collect.basic_user(authorization) → the Basic username | nil */
static int l_basic_user(lua_State *L)
{
    size_t n, un;
    const char *a = luaL_checklstring(L, 1, &n);
    char *out = malloc(n + 1);
    if (!out) return luaL_error(L, "basic_user: out of memory");
    if (sg_basic_user(a, n, out, &un)) lua_pushlstring(L, out, un);
    else lua_pushnil(L);
    free(out);
    return 1;
}

/* core.collect.b64decode(s) → bytes | nil */
static int l_b64decode(lua_State *L)
{
    size_t n, on;
    const char *s = luaL_checklstring(L, 1, &n);
    char *out = malloc(n + 1);
    if (!out) return luaL_error(L, "b64decode: out of memory");
    if (sg_b64decode(s, n, out, &on)) lua_pushlstring(L, out, on);
    else lua_pushnil(L);
    free(out);
    return 1;
}

/* ---- CORS --------------------------------------------------------------------- */

typedef struct {
    sg_keys keys;                      /* each pipeline's key and origins */
    sg_origins any;                    /* every pipeline's origins */
} cors_set;

static int cors_gc(lua_State *L)
{
    cors_set *c = luaL_checkudata(L, 1, CORS_MT);
    for (int i = 0; i < c->keys.n; i++) {
        free(c->keys.p[i].key);
        sg_origins_free(&c->keys.p[i].origins);
    }
    free(c->keys.p);
    sg_origins_free(&c->any);
    c->keys.p = NULL;
    c->keys.n = 0;
    return 0;
}

/* one pipeline table { key =, origins = { … } } (on top) into c */
static int cors_add(cors_set *c, lua_State *L)
{
    sg_pipeline *p = &c->keys.p[c->keys.n];
    memset(p, 0, sizeof *p);
    lua_getfield(L, -1, "key");
    size_t kn;
    const char *k = lua_tolstring(L, -1, &kn);
    p->key = k ? malloc(kn + 1) : NULL;
    if (p->key) { memcpy(p->key, k, kn); p->key[kn] = '\0'; p->klen = kn; }
    lua_pop(L, 1);
    if (!p->key) return k ? -1 : 0;
    c->keys.n++;
    lua_getfield(L, -1, "origins");
    int n = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, -1, i + 1);
        size_t on;
        const char *o = lua_tolstring(L, -1, &on);
        if (o && (sg_origins_add(&p->origins, o, on) != 0 || sg_origins_add(&c->any, o, on) != 0)) return -1;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return 0;
}

/* core.collect.cors(pipelines) → the CORS rules for these pipelines (a
 * list, or ctx.pipelines: key → pipeline), with :headers(origin, key,
 * into), :headers_any(origin, into) and :preflight(origin, header_key,
 * query) */
static int l_cors(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    cors_set *c = lua_newuserdata(L, sizeof *c);
    memset(c, 0, sizeof *c);
    luaL_getmetatable(L, CORS_MT);
    lua_setmetatable(L, -2);
    int n = 0;
    for (lua_pushnil(L); lua_next(L, 1); lua_pop(L, 1)) n++;
    c->keys.p = n ? calloc((size_t)n, sizeof *c->keys.p) : NULL;
    if (n && !c->keys.p) return luaL_error(L, "cors: out of memory");
    for (lua_pushnil(L); lua_next(L, 1); lua_pop(L, 1))
        if (lua_istable(L, -1) && cors_add(c, L) != 0) return luaL_error(L, "cors: out of memory");
    return 1;
}

/* the header lines of sg_cors_lines as fields of the table at idx (or a new one) */
static int push_cors(lua_State *L, int into, const char *o, size_t on, int granted, int preflight)
{
    if (lua_istable(L, into)) lua_pushvalue(L, into);
    else lua_newtable(L);
    sg_bytes h = SG_BYTES_INIT;
    sg_cors_lines(&h, o, on, granted, preflight);
    if (h.oom) { sg_bytes_free(&h); return luaL_error(L, "cors: out of memory"); }
    for (const char *p = h.data, *e = h.data + h.len; p && p < e; ) {
        const char *colon = memchr(p, ':', (size_t)(e - p)), *eol = memchr(p, '\r', (size_t)(e - p));
        lua_pushlstring(L, p, (size_t)(colon - p));
        lua_pushlstring(L, colon + 2, (size_t)(eol - colon - 2));
        lua_rawset(L, -3);
        p = eol + 2;
    }
    sg_bytes_free(&h);
    return 1;
}

static int cors_headers(lua_State *L)
{
    cors_set *c = luaL_checkudata(L, 1, CORS_MT);
    size_t on = 0, kn = 0;
    const char *o = luaL_optlstring(L, 2, NULL, &on), *k = luaL_optlstring(L, 3, NULL, &kn);
    sg_pipeline *p = k ? sg_keys_find(&c->keys, k, kn) : NULL;
    return push_cors(L, 4, o, on, p && sg_cors_allowed(&p->origins, o, on), 0);
}

static int cors_headers_any(lua_State *L)
{
    cors_set *c = luaL_checkudata(L, 1, CORS_MT);
    size_t on = 0;
    const char *o = luaL_optlstring(L, 2, NULL, &on);
    return push_cors(L, 3, o, on, sg_cors_allowed(&c->any, o, on), 0);
}

static int cors_preflight(lua_State *L)
{
    cors_set *c = luaL_checkudata(L, 1, CORS_MT);
    size_t on = 0, hn = 0, qn = 0;
    const char *o = luaL_optlstring(L, 2, NULL, &on), *hk = luaL_optlstring(L, 3, NULL, &hn);
    const char *q = luaL_optlstring(L, 4, NULL, &qn);
    const sg_origins *set = sg_cors_preflight_set(&c->keys, &c->any, hk, hn, q, qn);
    return push_cors(L, 5, o, on, sg_cors_allowed(set, o, on), 1);
}

/* core.collect.canonical_origin(o) → o as origins are compared (config.lua
 * stores the configured ones that way) */
static int l_canonical_origin(lua_State *L)
{
    size_t n;
    const char *o = luaL_checklstring(L, 1, &n);
    char buf[256];
    char *out = n <= sizeof buf ? buf : malloc(n);
    if (!out) return luaL_error(L, "canonical_origin: out of memory");
    lua_pushlstring(L, out, sg_origin_canonical(o, n, out));
    if (out != buf) free(out);
    return 1;
}

/* ---- the module ---------------------------------------------------------------- */

static void metatable(lua_State *L, const char *name, lua_CFunction gc, const luaL_Reg *methods)
{
    luaL_newmetatable(L, name);
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
    lua_newtable(L);
    luaL_register(L, NULL, methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}

static void limits(lua_State *L)
{
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, COLLECT_MAX_BODY);
    lua_setfield(L, -2, "max_body");
    lua_pushinteger(L, COLLECT_MAX_MESSAGE);
    lua_setfield(L, -2, "max_message");
    lua_pushinteger(L, COLLECT_MAX_DEPTH);
    lua_setfield(L, -2, "max_depth");
    lua_pushinteger(L, COLLECT_COOKIE_MAX_LEN);
    lua_setfield(L, -2, "cookie_max_len");
    lua_pushinteger(L, COLLECT_COOKIE_MAX_AGE);
    lua_setfield(L, -2, "cookie_max_age");
    lua_pushinteger(L, COLLECT_GROUP_MAX);
    lua_setfield(L, -2, "group_max");
    lua_setfield(L, -2, "limits");
}

void sg_open_event(lua_State *L)
{
    static const luaL_Reg proxies[] = {
        { "client_ip", proxies_client_ip }, { "is_https", proxies_is_https }, { "trusts", proxies_trusts },
        { NULL, NULL },
    };
    static const luaL_Reg cors[] = {
        { "headers", cors_headers }, { "headers_any", cors_headers_any }, { "preflight", cors_preflight },
        { NULL, NULL },
    };
    static const luaL_Reg fns[] = {
        { "normalize", l_normalize }, { "convert", l_convert }, { "snake", l_snake },
        { "linking_keys", l_linking_keys }, { "read_cookie", l_read_cookie }, { "visitor_id", l_visitor_id },
        { "set_cookie", l_set_cookie }, { "parse_ip", l_parse_ip }, { "proxies", l_proxies },
        { "basic_user", l_basic_user }, { "b64decode", l_b64decode }, { "cors", l_cors },
        { "canonical_origin", l_canonical_origin },
        { NULL, NULL },
    };
    metatable(L, PROXIES_MT, proxies_gc, proxies);
    metatable(L, CORS_MT, cors_gc, cors);
    lua_newtable(L);
    workspace *w = lua_newuserdata(L, sizeof *w);
    memset(w, 0, sizeof *w);
    sg_convert_init(&w->cv);
    sg_rand_init(&w->rand);
    luaL_newmetatable(L, WS_MT);
    lua_pushcfunction(L, ws_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushvalue(L, -1);
        lua_pushcclosure(L, f->func, 1);
        lua_setfield(L, -3, f->name);
    }
    lua_pop(L, 1);
    limits(L);
    lua_setfield(L, -2, "collect");
}
