/*
 * l_redis.c — core.redis: Redis connections for Lua (engine/API.md).
 *
 * A connection object carries two hiredis contexts, each made on first use:
 * an async one attached to the worker's libevent loop (used from tasks, so
 * concurrent coroutines' commands share one socket and are naturally
 * pipelined) and a blocking one (standalone module, start-up code). The async
 * side reconnects in the background with backoff; while it is down, calls
 * fail at once with "redis unavailable: …" so callers can answer 503 instead
 * of hanging.
 */
#include "l_redis.h"
#include "bytes.h"
#include "l_buf.h"
#include "l_core.h"
#include "log.h"
#include "worker.h"

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>

#define CONN_MT "signal.redis.conn"
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define MAX_PIPELINE 100000
#define MAX_ARGS 4096
/* A stalled (not dead) Redis must not hold a request for minutes: past this
 * a command answers nil, "redis timeout after N ms" (callers answer 503).
 * Connections used for XREADGROUP … BLOCK n need a timeout above n. */
#define DEFAULT_TIMEOUT_MS 5000

typedef struct redis_conn {
    worker_t *w;
    char *host, *path, *user, *password;
    int port, db;
    int timeout_ms;                 /* per command, async side; 0 = none */
    redisContext *sync;
    redisAsyncContext *ac;
    int connected, was_down, closed;
    int in_flush;                   /* inside the adapter's deferred write */
    int lite;                       /* lite replies (sg_redis_lite) */
    redisReplyObjectFunctions lite_fn;
    int backoff_ms;
    struct event *retry_ev;
    char last_err[256];
} redis_conn;

typedef struct redis_op redis_op;

/* What hiredis holds for a command batch. It outlives its op when the op
 * times out: late replies then find op == NULL and are dropped. */
typedef struct redis_pending {
    redis_op *op;
    int left;                       /* replies hiredis still owes */
} redis_pending;

struct redis_op {
    sg_op op;
    redis_conn *c;
    worker_t *w;
    redis_pending *pd;
    struct event *timer;
    int n, got, pipeline, failed;
    int conn_ref;
    char err[256];
};

/* ---- URL parsing ------------------------------------------------------------ */

/* Splits "[user]:password" (or "password") at p..at into the conn. */
static void parse_userinfo(redis_conn *c, const char *p, const char *at)
{
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (colon) {
        if (colon > p) c->user = strndup(p, (size_t)(colon - p));
        c->password = strndup(colon + 1, (size_t)(at - colon - 1));
    } else {
        c->password = strndup(p, (size_t)(at - p));
    }
}

/* redis://[[user]:password@]host[:port][/db]
 * unix:/path[?db=N]   unix://[[user]:password@]/path[?db=N] */
static int parse_url(redis_conn *c, const char *url, char *err, size_t errcap)
{
    c->port = 6379;
    if (strncmp(url, "unix:", 5) == 0) {
        const char *p = url + 5;
        if (strncmp(p, "//", 2) == 0) {
            p += 2;
            const char *at = strchr(p, '@');
            const char *slash = strchr(p, '/');
            if (at && (!slash || at < slash)) {
                parse_userinfo(c, p, at);
                p = at + 1;
            }
        }
        const char *q = strchr(p, '?');
        c->path = q ? strndup(p, (size_t)(q - p)) : strdup(p);
        if (q && strncmp(q, "?db=", 4) == 0) c->db = atoi(q + 4);
        return c->path && *c->path ? 0 : (snprintf(err, errcap, "redis url: missing socket path"), -1);
    }
    if (strncmp(url, "redis://", 8) != 0) {
        snprintf(err, errcap, "redis url must start with redis:// or unix: (got %.40s)", url);
        return -1;
    }
    const char *p = url + 8;
    const char *at = strrchr(p, '@');
    if (at) {
        parse_userinfo(c, p, at);
        p = at + 1;
    }
    const char *slash = strchr(p, '/');
    const char *hend = slash ? slash : p + strlen(p);
    const char *colon = memchr(p, ':', (size_t)(hend - p));
    c->host = strndup(p, (size_t)((colon ? colon : hend) - p));
    if (colon) c->port = atoi(colon + 1);
    if (slash && slash[1]) c->db = atoi(slash + 1);
    if (!c->host || !*c->host) c->host = (free(c->host), strdup("127.0.0.1"));
    if (c->port <= 0 || c->port > 65535) {
        snprintf(err, errcap, "redis url: bad port");
        return -1;
    }
    return 0;
}

/* ---- reply conversion ------------------------------------------------------- */

static void push_reply(lua_State *L, redisReply *r, int in_array)
{
    lua_checkstack(L, 4);
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        lua_pushlstring(L, r->str, r->len);
        break;
    case REDIS_REPLY_INTEGER:
        lua_pushnumber(L, (lua_Number)r->integer);
        break;
    case REDIS_REPLY_ARRAY:
        lua_createtable(L, (int)r->elements, 0);
        for (size_t i = 0; i < r->elements; i++) {
            if (r->element[i]->type == REDIS_REPLY_ERROR) {
                lua_createtable(L, 0, 1);
                lua_pushlstring(L, r->element[i]->str, r->element[i]->len);
                lua_setfield(L, -2, "err");
            } else {
                push_reply(L, r->element[i], 1);
            }
            lua_rawseti(L, -2, (int)i + 1);
        }
        break;
    default: /* NIL */
        if (in_array) lua_pushlightuserdata(L, NULL);
        else lua_pushnil(L);
    }
}

/* ---- blocking side ---------------------------------------------------------- */

static void sync_drop(redis_conn *c)
{
    if (c->sync) redisFree(c->sync);
    c->sync = NULL;
}

static int sync_ensure(redis_conn *c, char *err, size_t cap)
{
    if (c->sync) return 0;
    struct timeval tv = { 2, 0 };
    c->sync = c->path ? redisConnectUnixWithTimeout(c->path, tv)
                      : redisConnectWithTimeout(c->host, c->port, tv);
    if (!c->sync || c->sync->err) {
        snprintf(err, cap, "redis unavailable: %s", c->sync ? c->sync->errstr : "out of memory");
        sync_drop(c);
        return -1;
    }
    struct timeval rw = { 60, 0 };
    redisSetTimeout(c->sync, rw);
    redisReply *r = NULL;
    if (c->password) {
        r = c->user ? redisCommand(c->sync, "AUTH %s %s", c->user, c->password)
                    : redisCommand(c->sync, "AUTH %s", c->password);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            snprintf(err, cap, "redis AUTH failed: %s", r ? r->str : c->sync->errstr);
            if (r) freeReplyObject(r);
            sync_drop(c);
            return -1;
        }
        freeReplyObject(r);
    }
    if (c->db) {
        r = redisCommand(c->sync, "SELECT %d", c->db);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            snprintf(err, cap, "redis SELECT %d failed: %s", c->db, r ? r->str : c->sync->errstr);
            if (r) freeReplyObject(r);
            sync_drop(c);
            return -1;
        }
        freeReplyObject(r);
    }
    return 0;
}

/* ---- event loop adapter ------------------------------------------------------ */

/* hiredis's own libevent adapter re-arms the socket around every write:
 * addWrite registers EV_WRITE, the write happens on the next loop turn,
 * delWrite unregisters it — two epoll_ctl calls per batch of commands, ~5%
 * of a collector request. This one keeps the read event registered
 * (persistent) and writes a connected socket from a deferred callback in
 * the same loop turn (after every task that queues commands in it has
 * run, so they share one write); only a write the kernel did not take
 * whole waits for EV_WRITE. */
typedef struct {
    redisAsyncContext *ac;
    redis_conn *c;                  /* outlives ac; holds in_flush */
    struct event *rev, *wev, *flush;
    int want_write;
} ev_adapter;

static void ad_read(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    redisAsyncHandleRead(((ev_adapter *)arg)->ac);
}

static void ad_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    redisAsyncHandleWrite(((ev_adapter *)arg)->ac);
}

static void ad_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    ev_adapter *a = arg;
    if (!a->want_write) return;
    redis_conn *c = a->c;
    c->in_flush = 1;
    redisAsyncHandleWrite(a->ac);   /* may free a (a disconnect): touch c only */
    c->in_flush = 0;
}

static void ad_add_read(void *p) { ev_adapter *a = p; event_add(a->rev, NULL); }
static void ad_del_read(void *p) { ev_adapter *a = p; event_del(a->rev); }

static void ad_add_write(void *p)
{
    ev_adapter *a = p;
    a->want_write = 1;
    if ((a->ac->c.flags & REDIS_CONNECTED) && !a->c->in_flush)
        event_active(a->flush, EV_WRITE, 0);   /* once per turn: libevent ignores repeats */
    else
        event_add(a->wev, NULL);                /* connecting, or the socket buffer is full */
}

static void ad_del_write(void *p)
{
    ev_adapter *a = p;
    a->want_write = 0;
    event_del(a->wev);
}

static void ad_cleanup(void *p)
{
    ev_adapter *a = p;
    event_free(a->rev);
    event_free(a->wev);
    event_free(a->flush);
    free(a);
}

static int ad_attach(redis_conn *c, redisAsyncContext *ac, struct event_base *base)
{
    ev_adapter *a = calloc(1, sizeof *a);
    if (!a) return -1;
    a->ac = ac;
    a->c = c;
    a->rev = event_new(base, ac->c.fd, EV_READ | EV_PERSIST, ad_read, a);
    a->wev = event_new(base, ac->c.fd, EV_WRITE, ad_write, a);
    a->flush = event_new(base, -1, 0, ad_flush, a);
    if (!a->rev || !a->wev || !a->flush) {
        if (a->rev) event_free(a->rev);
        if (a->wev) event_free(a->wev);
        if (a->flush) event_free(a->flush);
        free(a);
        return -1;
    }
    ac->ev.addRead = ad_add_read;
    ac->ev.delRead = ad_del_read;
    ac->ev.addWrite = ad_add_write;
    ac->ev.delWrite = ad_del_write;
    ac->ev.cleanup = ad_cleanup;
    ac->ev.data = a;
    event_add(a->rev, NULL);
    event_add(a->wev, NULL);        /* connect completion */
    return 0;
}

/* ---- lite replies (engine/collect/) --------------------------------------------- */

/* The collector (engine/collect/) reads only the types of its replies (+QUEUED, an
 * XADD id, MGET's nils, EXEC's array) and the text of errors. hiredis's
 * default reader allocates an object and a copy of the string for every
 * one of them: ~12 allocations per event. On a connection set to lite
 * replies, values and nils are shared read-only objects (no allocation),
 * arrays are allocated (their element table points at those), and errors
 * are real replies with their text. Everything that reads replies by type,
 * element[i]->type or an error's str works unchanged. */
static const redisReply LITE_STRING = { .type = REDIS_REPLY_STRING };
static const redisReply LITE_STATUS = { .type = REDIS_REPLY_STATUS };
static const redisReply LITE_INTEGER = { .type = REDIS_REPLY_INTEGER };
static const redisReply LITE_NIL = { .type = REDIS_REPLY_NIL };

static int lite_shared(const void *r)
{
    return r == &LITE_STRING || r == &LITE_STATUS || r == &LITE_INTEGER || r == &LITE_NIL;
}

static void *lite_attach(const redisReadTask *task, const redisReply *r)
{
    if (task->parent) {
        redisReply *parent = task->parent->obj;
        parent->element[task->idx] = (redisReply *)r;
    }
    return (void *)r;
}

static void *lite_string(const redisReadTask *task, char *str, size_t len)
{
    if (task->type == REDIS_REPLY_STATUS) return lite_attach(task, &LITE_STATUS);
    if (task->type != REDIS_REPLY_ERROR) return lite_attach(task, &LITE_STRING);
    redisReply *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->str = malloc(len + 1);
    if (!r->str) { free(r); return NULL; }
    memcpy(r->str, str, len);
    r->str[len] = '\0';
    r->len = len;
    r->type = REDIS_REPLY_ERROR;
    return lite_attach(task, r);
}

static void *lite_array(const redisReadTask *task, int elements)
{
    redisReply *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    if (elements > 0) {
        r->element = calloc((size_t)elements, sizeof *r->element);
        if (!r->element) { free(r); return NULL; }
    }
    r->elements = (size_t)elements;
    r->type = REDIS_REPLY_ARRAY;
    return lite_attach(task, r);
}

static void *lite_integer(const redisReadTask *task, long long v)
{
    (void)v;
    return lite_attach(task, &LITE_INTEGER);
}

static void *lite_nil(const redisReadTask *task) { return lite_attach(task, &LITE_NIL); }

static void lite_free(void *p)
{
    redisReply *r = p;
    if (!r || lite_shared(r)) return;
    if (r->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < r->elements; i++) lite_free(r->element[i]);
        free(r->element);
    }
    free(r->str);
    free(r);
}

static redisReplyObjectFunctions lite_functions(void)
{
    redisReplyObjectFunctions f = { lite_string, lite_array, lite_integer, lite_nil, lite_free };
    return f;
}

/* ---- async side ------------------------------------------------------------- */

static void async_connect(redis_conn *c);

static void retry_fired(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    async_connect(arg);
}

static void schedule_retry(redis_conn *c)
{
    if (c->closed || c->w->stopping > 1) return;
    if (!c->was_down) {
        char ms[16];
        snprintf(ms, sizeof ms, "%d", c->backoff_ms);
        sg_log("warn", "redis unavailable, reconnecting", "reason", c->last_err, "retry_ms", ms, NULL);
    }
    c->was_down = 1;
    struct timeval tv = { c->backoff_ms / 1000, (c->backoff_ms % 1000) * 1000 };
    evtimer_add(c->retry_ev, &tv);
    c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    redis_conn *c = ac->data;
    if (status != REDIS_OK) {
        snprintf(c->last_err, sizeof c->last_err, "%s", ac->errstr);
        c->ac = NULL;           /* hiredis frees it after this callback */
        c->connected = 0;
        schedule_retry(c);
        return;
    }
    c->connected = 1;
    c->last_err[0] = '\0';
    c->backoff_ms = BACKOFF_MIN_MS;
    if (c->was_down) sg_log("info", "redis connected", NULL);
    c->was_down = 0;
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    redis_conn *c = ac->data;
    (void)status;
    snprintf(c->last_err, sizeof c->last_err, "%s", ac->errstr[0] ? ac->errstr : "connection closed");
    c->ac = NULL;
    c->connected = 0;
    schedule_retry(c);
}

static void on_setup_reply(redisAsyncContext *ac, void *r, void *priv)
{
    (void)ac;
    redisReply *reply = r;
    if (reply && reply->type == REDIS_REPLY_ERROR)
        sg_log("error", "redis connection setup failed", "command", (const char *)priv,
               "reply", reply->str, NULL);
}

static void async_connect(redis_conn *c)
{
    if (c->ac || c->closed) return;
    redisAsyncContext *ac = c->path ? redisAsyncConnectUnix(c->path) : redisAsyncConnect(c->host, c->port);
    if (!ac || ac->err) {
        snprintf(c->last_err, sizeof c->last_err, "%s", ac ? ac->errstr : "out of memory");
        if (ac) redisAsyncFree(ac);
        schedule_retry(c);
        return;
    }
    if (ad_attach(c, ac, c->w->base) != 0) {
        snprintf(c->last_err, sizeof c->last_err, "out of memory");
        redisAsyncFree(ac);
        schedule_retry(c);
        return;
    }
    ac->data = c;
    c->ac = ac;
    if (c->lite) ac->c.reader->fn = &c->lite_fn;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    if (c->password) {
        if (c->user) redisAsyncCommand(ac, on_setup_reply, "AUTH", "AUTH %s %s", c->user, c->password);
        else redisAsyncCommand(ac, on_setup_reply, "AUTH", "AUTH %s", c->password);
    }
    if (c->db) redisAsyncCommand(ac, on_setup_reply, "SELECT", "SELECT %d", c->db);
}

static void rop_destroy(sg_op *o)
{
    redis_op *op = (redis_op *)o;
    if (op->timer) event_free(op->timer);
    luaL_unref(op->w->L, LUA_REGISTRYINDEX, op->conn_ref);
    free(op);
}

/* The op is answered (or abandoned): detach it from what hiredis holds. */
static void detach(redis_op *op)
{
    if (op->timer) evtimer_del(op->timer);
    if (op->pd) {
        op->pd->op = NULL;
        if (op->pd->left == 0) free(op->pd);
        op->pd = NULL;
    }
}

static void on_op_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    redis_op *op = arg;
    lua_State *co = op->op.co;
    detach(op);
    if (op->pipeline && op->got > 0) lua_pop(co, 1);   /* the partial result table */
    lua_pushnil(co);
    lua_pushfstring(co, "redis timeout after %d ms", op->c->timeout_ms);
    op->op.nresults = 2;
    worker_ready(op->w, &op->op);
}

static void on_reply(redisAsyncContext *ac, void *r, void *priv)
{
    redis_pending *pd = priv;
    redis_op *op = pd->op;
    redisReply *reply = r;
    pd->left--;
    if (!op) {                   /* the op timed out earlier: drop the late reply */
        if (pd->left == 0) free(pd);
        return;
    }
    lua_State *co = op->op.co;
    if (op->w->stopping > 1) {   /* lua_State is being closed: touch nothing */
        if (++op->got == op->n) {
            detach(op);
            if (op->timer) event_free(op->timer);
            free(op);
        }
        return;
    }
    if (!reply && !op->failed) {
        op->failed = 1;
        snprintf(op->err, sizeof op->err, "redis unavailable: %s",
                 ac->errstr[0] ? ac->errstr : "connection lost");
    }
    if (!op->pipeline) {
        op->got++;
        if (!reply) {
            lua_pushnil(co);
            lua_pushstring(co, op->err);
            op->op.nresults = 2;
        } else if (reply->type == REDIS_REPLY_ERROR) {
            lua_pushnil(co);
            lua_pushlstring(co, reply->str, reply->len);
            op->op.nresults = 2;
        } else {
            push_reply(co, reply, 0);
            op->op.nresults = 1;
        }
        detach(op);
        worker_ready(op->w, &op->op);
        return;
    }
    /* Pipeline: the result table sits on co's stack until the last reply. */
    if (op->got == 0) lua_createtable(co, op->n, 0);
    op->got++;
    if (reply && reply->type == REDIS_REPLY_ERROR) {
        lua_createtable(co, 0, 1);
        lua_pushlstring(co, reply->str, reply->len);
        lua_setfield(co, -2, "err");
    } else if (reply) {
        push_reply(co, reply, 1);
    } else {
        lua_pushlightuserdata(co, NULL);
    }
    lua_rawseti(co, -2, op->got);
    if (op->got < op->n) return;
    if (op->failed) {
        lua_pop(co, 1);
        lua_pushnil(co);
        lua_pushstring(co, op->err);
        op->op.nresults = 2;
    } else {
        op->op.nresults = 1;
    }
    detach(op);
    worker_ready(op->w, &op->op);
}

/* ---- Lua API ---------------------------------------------------------------- */

static redis_conn *check_conn(lua_State *L)
{
    redis_conn **pc = luaL_checkudata(L, 1, CONN_MT);
    if (!*pc || (*pc)->closed) luaL_error(L, "redis: connection is closed");
    return *pc;
}

/* Reads the strings of one command table (or the varargs from `first`). */
static int collect_args(lua_State *L, int idx, int from, const char **argv, size_t *lens, int max)
{
    int n = 0;
    if (idx) {
        int len = (int)lua_objlen(L, idx);
        if (len > max) return -1;
        for (int i = 1; i <= len; i++) {
            lua_rawgeti(L, idx, i);
            argv[n] = sg_tobytes(L, -1, &lens[n]);
            if (!argv[n]) { lua_pop(L, 1); return -2; }
            n++;
            lua_pop(L, 1);   /* still anchored by the table */
        }
        return n;
    }
    int top = lua_gettop(L);
    if (top - from + 1 > max) return -1;
    for (int i = from; i <= top; i++) {
        argv[n] = sg_tobytes(L, i, &lens[n]);
        if (!argv[n]) return -2;
        n++;
    }
    return n;
}

static size_t uint_digits(size_t n)
{
    size_t k = 1;
    while (n >= 10) { n /= 10; k++; }
    return k;
}

/* Formats one command in RESP into a single exact-size allocation. hiredis's
 * own formatter builds it with sdscatfmt per argument (a format string
 * parsed each time, repeated reallocations): on the collector's hot path
 * that was a visible share of a request. Returns NULL when out of memory. */
static char *format_resp(int n, const char **argv, const size_t *lens, size_t *outlen)
{
    size_t total = 1 + uint_digits((size_t)n) + 2;
    for (int i = 0; i < n; i++) total += 1 + uint_digits(lens[i]) + 2 + lens[i] + 2;
    char *buf = malloc(total), *p = buf;
    if (!buf) return NULL;
    *p++ = '*';
    p += sg_put_uint(p, (size_t)n);
    *p++ = '\r'; *p++ = '\n';
    for (int i = 0; i < n; i++) {
        *p++ = '$';
        p += sg_put_uint(p, lens[i]);
        *p++ = '\r'; *p++ = '\n';
        memcpy(p, argv[i], lens[i]);
        p += lens[i];
        *p++ = '\r'; *p++ = '\n';
    }
    *outlen = total;
    return buf;
}

static int sync_run(lua_State *L, redis_conn *c, int pipeline)
{
    char err[300];
    if (sync_ensure(c, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    const char *argv[MAX_ARGS];
    size_t lens[MAX_ARGS];
    int ncmd = pipeline ? (int)lua_objlen(L, 2) : 1;
    for (int i = 1; i <= ncmd; i++) {
        int n;
        if (pipeline) {
            lua_rawgeti(L, 2, i);
            n = collect_args(L, lua_gettop(L), 0, argv, lens, MAX_ARGS);
        } else {
            n = collect_args(L, 0, 2, argv, lens, MAX_ARGS);
        }
        if (n <= 0) return luaL_error(L, "redis: command %d must be a non-empty list of strings", i);
        redisAppendCommandArgv(c->sync, n, argv, lens);
        if (pipeline) lua_pop(L, 1);
    }
    if (pipeline) lua_createtable(L, ncmd, 0);
    for (int i = 1; i <= ncmd; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c->sync, (void **)&r) != REDIS_OK || !r) {
            snprintf(err, sizeof err, "redis unavailable: %s", c->sync->errstr);
            sync_drop(c);
            if (pipeline) lua_pop(L, 1);
            lua_pushnil(L);
            lua_pushstring(L, err);
            return 2;
        }
        if (!pipeline) {
            int nret = 1;
            if (r->type == REDIS_REPLY_ERROR) {
                lua_pushnil(L);
                lua_pushlstring(L, r->str, r->len);
                nret = 2;
            } else {
                push_reply(L, r, 0);
            }
            freeReplyObject(r);
            return nret;
        }
        if (r->type == REDIS_REPLY_ERROR) {
            lua_createtable(L, 0, 1);
            lua_pushlstring(L, r->str, r->len);
            lua_setfield(L, -2, "err");
        } else {
            push_reply(L, r, 1);
        }
        lua_rawseti(L, -2, i);
        freeReplyObject(r);
    }
    return 1;
}

static int async_run(lua_State *L, worker_t *w, redis_conn *c, int pipeline)
{
    if (!c->ac) async_connect(c);
    if (!c->ac) {
        lua_pushnil(L);
        lua_pushfstring(L, "redis unavailable: %s", c->last_err);
        return 2;
    }
    int ncmd = pipeline ? (int)lua_objlen(L, 2) : 1;
    if (ncmd < 1 || ncmd > MAX_PIPELINE) return luaL_error(L, "redis: pipeline needs 1..%d commands", MAX_PIPELINE);
    redis_op *op = calloc(1, sizeof *op);
    redis_pending *pd = calloc(1, sizeof *pd);
    if (!op || !pd) { free(op); free(pd); return luaL_error(L, "redis: out of memory"); }
    pd->op = op;
    op->pd = pd;
    op->c = c;
    op->w = w;
    op->n = ncmd;
    op->pipeline = pipeline;
    op->op.co = L;
    op->op.destroy = rop_destroy;
    const char *argv[MAX_ARGS];
    size_t lens[MAX_ARGS];
    /* Validate every command before sending any: a pipeline goes whole or not at all. */
    for (int i = 1; pipeline && i <= ncmd; i++) {
        lua_rawgeti(L, 2, i);
        int n = collect_args(L, lua_gettop(L), 0, argv, lens, MAX_ARGS);
        lua_pop(L, 1);
        if (n <= 0) {
            free(op); free(pd);
            return luaL_error(L, "redis: command %d must be a non-empty list of strings", i);
        }
    }
    for (int i = 1; i <= ncmd; i++) {
        int n;
        if (pipeline) {
            lua_rawgeti(L, 2, i);
            n = collect_args(L, lua_gettop(L), 0, argv, lens, MAX_ARGS);
        } else {
            n = collect_args(L, 0, 2, argv, lens, MAX_ARGS);
            if (n <= 0) { free(op); free(pd); return luaL_error(L, "redis: call needs a command of strings"); }
        }
        /* hiredis refuses commands only while the context is closing; that
         * cannot change between two commands of this loop, so checking the
         * first one is enough. */
        size_t flen = 0;
        char *fcmd = format_resp(n, argv, lens, &flen);
        int oom = fcmd == NULL;
        int rc = fcmd ? redisAsyncFormattedCommand(c->ac, on_reply, pd, fcmd, flen) : REDIS_ERR;
        free(fcmd);   /* hiredis copied it into its output buffer */
        if (rc != REDIS_OK && i == 1) {
            if (pipeline) lua_pop(L, 1);
            free(op); free(pd);
            lua_pushnil(L);
            lua_pushstring(L, oom ? "redis: out of memory" : "redis unavailable: connection is closing");
            return 2;
        }
        pd->left++;
        if (pipeline) lua_pop(L, 1);
    }
    lua_pushvalue(L, 1);
    op->conn_ref = luaL_ref(L, LUA_REGISTRYINDEX);   /* keep the conn alive while waiting */
    if (c->timeout_ms > 0) {
        op->timer = evtimer_new(w->base, on_op_timeout, op);
        struct timeval tv = { c->timeout_ms / 1000, (c->timeout_ms % 1000) * 1000 };
        if (op->timer) evtimer_add(op->timer, &tv);
    }
    return worker_yield(w, L);
}

static int l_call(lua_State *L)
{
    redis_conn *c = check_conn(L);
    worker_t *w = worker_of(L);
    if (c->w && w == c->w && worker_can_yield(w, L)) return async_run(L, w, c, 0);
    return sync_run(L, c, 0);
}

static int l_pipeline(lua_State *L)
{
    redis_conn *c = check_conn(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    if (lua_objlen(L, 2) == 0) { lua_newtable(L); return 1; }
    worker_t *w = worker_of(L);
    if (c->w && w == c->w && worker_can_yield(w, L)) return async_run(L, w, c, 1);
    return sync_run(L, c, 1);
}

static int l_status(lua_State *L)
{
    redis_conn *c = check_conn(L);
    lua_pushstring(L, c->connected ? "connected" : (c->ac ? "connecting" : "down"));
    lua_pushstring(L, c->last_err);
    return 2;
}

static void conn_free(redis_conn *c)
{
    c->closed = 1;
    sync_drop(c);
    if (c->ac) {
        redisAsyncContext *ac = c->ac;
        c->ac = NULL;
        redisAsyncFree(ac);   /* pending callbacks get NULL replies */
    }
    if (c->retry_ev) event_free(c->retry_ev);
    free(c->host); free(c->path); free(c->user); free(c->password);
    free(c);
}

static int l_close(lua_State *L)
{
    redis_conn **pc = luaL_checkudata(L, 1, CONN_MT);
    if (*pc) conn_free(*pc);
    *pc = NULL;
    return 0;
}

static int l_connect(lua_State *L)
{
    const char *url = luaL_checkstring(L, 1);
    redis_conn *c = calloc(1, sizeof *c);
    if (!c) return luaL_error(L, "redis: out of memory");
    char err[300];
    if (parse_url(c, url, err, sizeof err) != 0) {
        conn_free(c);
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    c->backoff_ms = BACKOFF_MIN_MS;
    c->timeout_ms = DEFAULT_TIMEOUT_MS;
    if (lua_istable(L, 2)) {
        lua_getfield(L, 2, "timeout_ms");
        if (lua_isnumber(L, -1)) c->timeout_ms = (int)lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    snprintf(c->last_err, sizeof c->last_err, "not connected yet");
    c->w = worker_of(L);
    if (c->w) {
        c->retry_ev = evtimer_new(c->w->base, retry_fired, c);
        async_connect(c);
    }
    redis_conn **pc = lua_newuserdata(L, sizeof *pc);
    *pc = c;
    luaL_getmetatable(L, CONN_MT);
    lua_setmetatable(L, -2);
    return 1;
}

/* ---- C API (engine/collect/) ------------------------------------------------ */

redis_conn **sg_redis_checkconn(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, CONN_MT);
}

redisAsyncContext *sg_redis_async(redis_conn *c, const char **err)
{
    if (c->closed) { *err = "connection is closed"; return NULL; }
    if (!c->ac && c->w) async_connect(c);
    if (!c->ac) { *err = c->last_err; return NULL; }
    return c->ac;
}

int sg_redis_timeout_ms(const redis_conn *c) { return c->timeout_ms; }

void sg_redis_lite(redis_conn *c)
{
    c->lite = 1;
    c->lite_fn = lite_functions();
    if (c->ac) c->ac->c.reader->fn = &c->lite_fn;
}

void sg_open_redis(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "call", l_call },
        { "pipeline", l_pipeline },
        { "status", l_status },
        { "close", l_close },
        { NULL, NULL },
    };
    if (luaL_newmetatable(L, CONN_MT)) {
        lua_newtable(L);
        luaL_register(L, NULL, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_close);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushcfunction(L, l_connect);
    lua_setfield(L, -2, "connect");
    lua_setfield(L, -2, "redis");
}
