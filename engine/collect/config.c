/*
 * config.c — what Lua hands the collector (core.ingest_configure) and what
 * it hands back (core.ingest_stats).
 *
 * The configuration stays Lua's: lua/signal/collect/init.lua reads the config
 * file's pipelines, keys and origins, builds the Redis key names with
 * signal.redis.keys (the one owner of the key layout), and passes them here with
 * the routes, the cookie domain, the trusted proxies, the dedupe and
 * identity TTLs and the histogram buckets of signal.observe.metrics. The counters
 * go the other way: signal.observe.metrics asks for the deltas before each flush.
 */
#include "collect.h"

#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>

static char *dup_field(lua_State *L, int t, const char *name, size_t *len, int optional)
{
    lua_getfield(L, t, name);
    size_t n = 0;
    const char *s = lua_tolstring(L, -1, &n);
    if (!s && !optional) luaL_error(L, "ingest_configure: %s must be a string", name);
    char *d = s ? malloc(n + 1) : NULL;
    if (s && !d) luaL_error(L, "ingest_configure: out of memory");
    if (d) { memcpy(d, s, n); d[n] = '\0'; }
    if (len) *len = n;
    lua_pop(L, 1);
    return d;
}

void sg_collect_free_config(lane_t *l)
{
    for (int i = 0; i < l->nroutes; i++) { free(l->routes[i].path); free(l->routes[i].hint); }
    l->nroutes = 0;
    for (int i = 0; i < l->keys.n; i++) {
        sg_pipeline *p = &l->keys.p[i];
        free(p->key); free(p->raw); free(p->dedupe); free(p->identity);
        sg_origins_free(&p->origins);
    }
    free(l->keys.p);
    l->keys.p = NULL;
    l->keys.n = 0;
    sg_origins_free(&l->any);
    sg_proxies_free(&l->proxies);
    free(l->cookie_domain);
    l->cookie_domain = NULL;
    for (int i = 0; i < l->cookie_keys.n; i++) free((char *)l->cookie_keys.key[i]);   /* copies of ours */
    memset(&l->cookie_keys, 0, sizeof l->cookie_keys);
    l->configured = 0;
}

static int stat_index(lane_t *l, const char *key)
{
    for (int i = 0; i < l->nstats; i++)
        if (strcmp(l->stats[i].key, key) == 0) return i;
    sg_stat *s = realloc(l->stats, sizeof *s * (size_t)(l->nstats + 1));
    if (!s) return -1;
    l->stats = s;
    memset(&s[l->nstats], 0, sizeof *s);
    if (!(s[l->nstats].key = strdup(key))) return -1;
    return l->nstats++;
}

/* routes = { { path =, hint =, kind = "single"|"batch"|"events",
 *              server_side = false|true|"basic" }, … } */
static void read_routes(lua_State *L, lane_t *l)
{
    lua_getfield(L, 1, "routes");
    luaL_checktype(L, -1, LUA_TTABLE);
    int n = (int)lua_objlen(L, -1);
    if (n > COLLECT_MAX_ROUTES) luaL_error(L, "ingest_configure: too many routes");
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, -1, i + 1);
        sg_route *rt = &l->routes[i];
        memset(rt, 0, sizeof *rt);
        l->nroutes = i + 1;
        rt->path = dup_field(L, -1, "path", &rt->plen, 0);
        rt->hint = dup_field(L, -1, "hint", &rt->hlen, 1);
        lua_getfield(L, -1, "kind");
        const char *k = luaL_optstring(L, -1, "single");
        rt->kind = strcmp(k, "batch") == 0 ? SG_ROUTE_BATCH : strcmp(k, "events") == 0 ? SG_ROUTE_EVENTS
                                                                                         : SG_ROUTE_SINGLE;
        lua_getfield(L, -2, "server_side");
        rt->side = lua_isstring(L, -1) ? SIDE_BASIC : lua_toboolean(L, -1) ? SIDE_SERVER : SIDE_BROWSER;
        lua_pop(L, 3);
    }
    lua_pop(L, 1);
}

/* pipelines = { { key =, raw =, dedupe =, identity =, origins = { … } }, … } */
static void read_pipelines(lua_State *L, lane_t *l)
{
    lua_getfield(L, 1, "pipelines");
    luaL_checktype(L, -1, LUA_TTABLE);
    int n = (int)lua_objlen(L, -1);
    l->keys.p = calloc((size_t)(n ? n : 1), sizeof *l->keys.p);
    if (!l->keys.p) luaL_error(L, "ingest_configure: out of memory");
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, -1, i + 1);
        sg_pipeline *p = &l->keys.p[i];
        l->keys.n = i + 1;
        p->key = dup_field(L, -1, "key", &p->klen, 0);
        p->raw = dup_field(L, -1, "raw", &p->rawlen, 0);
        p->dedupe = dup_field(L, -1, "dedupe", &p->dedupelen, 0);
        p->identity = dup_field(L, -1, "identity", &p->identitylen, 0);
        if ((p->stat = stat_index(l, p->key)) < 0) luaL_error(L, "ingest_configure: out of memory");
        lua_getfield(L, -1, "origins");
        int no = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
        for (int k = 0; k < no; k++) {
            lua_rawgeti(L, -1, k + 1);
            size_t ol;
            const char *o = lua_tolstring(L, -1, &ol);
            if (o && (sg_origins_add(&p->origins, o, ol) != 0 || sg_origins_add(&l->any, o, ol) != 0))
                luaL_error(L, "ingest_configure: out of memory");
            lua_pop(L, 1);
        }
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
}

/* trusted_proxies = { "10.0.0.0/8", … }; buckets = { … } */
static void read_lists(lua_State *L, lane_t *l)
{
    lua_getfield(L, 1, "trusted_proxies");
    int n = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, -1, i + 1);
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);
        if (s && sg_proxies_add(&l->proxies, s, len) < 0) luaL_error(L, "ingest_configure: out of memory");
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    lua_getfield(L, 1, "buckets");
    luaL_checktype(L, -1, LUA_TTABLE);
    l->nbuckets = (int)lua_objlen(L, -1);
    if (l->nbuckets > COLLECT_MAX_BUCKETS) luaL_error(L, "ingest_configure: too many buckets");
    for (int i = 0; i < l->nbuckets; i++) {
        lua_rawgeti(L, -1, i + 1);
        l->buckets[i] = lua_tonumber(L, -1);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static lane_t *lane_new(lua_State *L, worker_t *w)
{
    lane_t *l = calloc(1, sizeof *l);
    if (!l) luaL_error(L, "ingest_configure: out of memory");
    l->w = w;
    l->redis_ref = LUA_NOREF;
    sg_rand_init(&l->rand);
    sg_convert_init(&l->cv);
    l->flush_ev = event_new(w->base, -1, 0, sg_commit_flush, l);
    if (!l->flush_ev) { free(l); luaL_error(L, "ingest_configure: out of memory"); }
    w->ingest = l;
    return l;
}

/* core.ingest_configure(t) → true, or false outside the engine. engine/API.md
 * gives t's fields. */
static int l_configure(lua_State *L)
{
    worker_t *w = worker_of(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    if (!w || !w->base) { lua_pushboolean(L, 0); return 1; }
    lane_t *l = w->ingest;
    if (l && l->inflight > 0) return luaL_error(L, "ingest_configure: requests are in flight");
    if (!l) l = lane_new(L, w);
    sg_collect_free_config(l);
    for (int i = 0; i <= COLLECT_MAX_ROUTES; i++) memset(l->hist[i], 0, sizeof l->hist[i]);
    lua_getfield(L, 1, "redis");
    l->redis = sg_redis_checkconn(L, -1);
    if (*l->redis) sg_redis_lite(*l->redis);     /* the collector's own connection */
    luaL_unref(L, LUA_REGISTRYINDEX, l->redis_ref);
    l->redis_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, 1, "dedupe_ttl");
    l->dedupe_ttl = (long)luaL_checknumber(L, -1);
    lua_getfield(L, 1, "identity_ttl");
    l->identity_ttl = (long)luaL_checknumber(L, -1);
    lua_pop(L, 2);
    l->cookie_domain = dup_field(L, 1, "cookie_domain", &l->cookie_domain_len, 1);
    static const char *const SECRETS[2] = { "cookie_secret", "cookie_secret_previous" };
    for (int i = 0; i < 2; i++) {
        sg_cookie_keys *k = &l->cookie_keys;
        char *key = dup_field(L, 1, SECRETS[i], &k->len[k->n], 1);
        if (key) k->key[k->n++] = key;
    }
    read_routes(L, l);
    read_pipelines(L, l);
    read_lists(L, l);
    l->configured = 1;
    lua_pushboolean(L, 1);
    return 1;
}

static void push_pipelines(lua_State *L, lane_t *l)
{
    lua_createtable(L, l->nstats, 0);
    int k = 0;
    for (int i = 0; i < l->nstats; i++) {
        sg_stat *s = &l->stats[i];
        if (!s->received && !s->accepted && !s->deduplicated) continue;
        lua_createtable(L, 0, 4);
        lua_pushstring(L, s->key); lua_setfield(L, -2, "key");
        lua_pushnumber(L, (lua_Number)s->received); lua_setfield(L, -2, "received");
        lua_pushnumber(L, (lua_Number)s->accepted); lua_setfield(L, -2, "accepted");
        lua_pushnumber(L, (lua_Number)s->deduplicated); lua_setfield(L, -2, "deduplicated");
        lua_rawseti(L, -2, ++k);
        s->received = s->accepted = s->deduplicated = 0;
    }
    lua_setfield(L, -2, "pipelines");
}

static void push_routes(lua_State *L, lane_t *l)
{
    static const char *const METHOD[M_COUNT] = { "POST", "OPTIONS", "GET", "HEAD", "PUT", "DELETE", "PATCH" };
    lua_newtable(L);
    int k = 0;
    for (int r = 0; r <= l->nroutes; r++) {
        for (int m = 0; m < M_COUNT; m++) {
            sg_hist *h = &l->hist[r][m];
            uint64_t total = 0;
            for (int b = 0; b <= l->nbuckets; b++) total += h->counts[b];
            if (!total) continue;
            lua_createtable(L, 0, 4);
            if (r < l->nroutes) lua_pushlstring(L, l->routes[r].path, l->routes[r].plen);
            else lua_pushliteral(L, "unmatched");
            lua_setfield(L, -2, "path");
            lua_pushstring(L, METHOD[m]);
            lua_setfield(L, -2, "method");
            lua_createtable(L, l->nbuckets + 1, 0);
            for (int b = 0; b <= l->nbuckets; b++) {
                lua_pushnumber(L, (lua_Number)h->counts[b]);
                lua_rawseti(L, -2, b + 1);
                h->counts[b] = 0;
            }
            lua_setfield(L, -2, "counts");
            lua_pushnumber(L, h->sum);
            lua_setfield(L, -2, "sum");
            h->sum = 0;
            lua_rawseti(L, -2, ++k);
        }
    }
    lua_setfield(L, -2, "routes");
}

/* core.ingest_stats() → { pipelines = { { key, received, accepted,
 * deduplicated }, … }, rejected = { [reason] = n }, routes = { { path,
 * method, counts, sum }, … } } | nil (no collector here): the deltas since
 * the last call, which resets them */
static int l_stats(lua_State *L)
{
    worker_t *w = worker_of(L);
    lane_t *l = w ? w->ingest : NULL;
    if (!l) { lua_pushnil(L); return 1; }
    lua_createtable(L, 0, 3);
    push_pipelines(L, l);
    lua_newtable(L);
    for (int i = 0; i < R_COUNT; i++) {
        if (!l->rejected[i]) continue;
        lua_pushnumber(L, (lua_Number)l->rejected[i]);
        lua_setfield(L, -2, SG_REJECT_REASON[i]);
        l->rejected[i] = 0;
    }
    lua_setfield(L, -2, "rejected");
    push_routes(L, l);
    return 1;
}

void sg_open_ingest(lua_State *L)
{
    lua_pushcfunction(L, l_configure);
    lua_setfield(L, -2, "ingest_configure");
    lua_pushcfunction(L, l_stats);
    lua_setfield(L, -2, "ingest_stats");
}
