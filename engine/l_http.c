/*
 * l_http.c — core.http.request: outbound HTTP for Lua (engine/API.md).
 *
 * In a worker, requests run on one libcurl multi handle per worker driven by
 * the worker's libevent loop (CURLMOPT_SOCKETFUNCTION/TIMERFUNCTION, as in
 * libcurl's hiper.c example). The multi handle keeps the connection cache, so
 * keep-alive and HTTP/2 multiplexing are shared by every coroutine of the
 * worker. Completion only queues the op; the result table is built when the
 * loop resumes the coroutine (never from inside libcurl).
 *
 * Standalone, the same option setup runs through curl_easy_perform.
 */
#include "l_core.h"
#include "bytes.h"
#include "log.h"
#include "worker.h"

#include <ctype.h>
#include <curl/curl.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>

#define DEFAULT_TIMEOUT_MS 10000L
#define MAX_HOST_CONNECTIONS 1024L
/* Finished easy handles kept for the next request: curl_easy_init/cleanup
 * per request showed up in delivery profiles. Connections live in the multi
 * handle's cache either way. */
#define EASY_POOL 128
#define HELD_OP_MT "signal.http.held_op"
/* A response's header block is kept up to this size; the rest is dropped. */
#define MAX_RESPONSE_HEADERS (64 * 1024)

typedef struct http_op http_op;

struct http_state {
    worker_t *w;
    CURLM *multi;
    struct event *timer;
    http_op *active;          /* in-flight ops, so shutdown can release them */
    CURL *pool[EASY_POOL];    /* reset handles ready for reuse */
    int npool;
};

struct http_op {
    sg_op op;
    http_op *prev, *next;
    http_state *hs;
    CURL *easy;
    struct curl_slist *hdrs;
    char *body;
    sg_bytes resp, resp_hdrs;     /* the body; the last header block */
    long timeout_ms;
    CURLcode result;
    int too_large;
    char errbuf[CURL_ERROR_SIZE];
};

/* libcurl's write callbacks: returning less than n aborts the transfer
 * (CURLE_WRITE_ERROR), which is how a body over the limit or out of
 * memory ends it. */
static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    http_op *op = ud;
    size_t n = size * nmemb;
    if (op->resp.len + n > SG_MAX_RESPONSE_BODY) { op->too_large = 1; return 0; }
    sg_bytes_put(&op->resp, ptr, n);
    return op->resp.oom ? 0 : n;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *ud)
{
    http_op *op = ud;
    size_t n = size * nmemb;
    /* A new status line (redirect, 100-continue) starts a new header block. */
    if (n > 5 && memcmp(ptr, "HTTP/", 5) == 0) {
        sg_bytes_reset(&op->resp_hdrs);
        return n;
    }
    if (op->resp_hdrs.len + n > MAX_RESPONSE_HEADERS) return n;
    sg_bytes_put(&op->resp_hdrs, ptr, n);
    return op->resp_hdrs.oom ? 0 : n;
}

static void op_free(http_op *op)
{
    if (op->easy && op->hs && op->hs->npool < EASY_POOL) {
        curl_easy_reset(op->easy);
        op->hs->pool[op->hs->npool++] = op->easy;
    } else if (op->easy) {
        curl_easy_cleanup(op->easy);
    }
    curl_slist_free_all(op->hdrs);
    free(op->body);
    sg_bytes_free(&op->resp);
    sg_bytes_free(&op->resp_hdrs);
    free(op);
}

static void op_destroy(sg_op *o) { op_free((http_op *)o); }

/* The host part of the URL, for error messages a customer can act on. */
static void url_host(CURL *easy, char *out, size_t cap)
{
    char *eff = NULL;
    snprintf(out, cap, "the server");
    curl_easy_getinfo(easy, CURLINFO_EFFECTIVE_URL, &eff);
    if (!eff) return;
    CURLU *u = curl_url();
    char *host = NULL, *port = NULL;
    if (u && curl_url_set(u, CURLUPART_URL, eff, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
        if (curl_url_get(u, CURLUPART_PORT, &port, 0) == CURLUE_OK && port)
            snprintf(out, cap, "%s:%s", host, port);
        else
            snprintf(out, cap, "%s", host);
    }
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
}

static void error_text(http_op *op, char *out, size_t cap)
{
    char host[300];
    url_host(op->easy, host, sizeof host);
    /* Resolution errors name only the host: the port is noise there. */
    const char *detail = op->errbuf[0] ? op->errbuf : curl_easy_strerror(op->result);
    switch (op->result) {
    case CURLE_COULDNT_RESOLVE_HOST: {
        char *colon = strrchr(host, ':');
        if (colon && !strchr(colon, ']')) *colon = '\0';
        snprintf(out, cap, "could not resolve host %s", host);
        break;
    }
    case CURLE_OPERATION_TIMEDOUT:
        snprintf(out, cap, "timeout after %ld ms (%s)", op->timeout_ms, host);
        break;
    case CURLE_COULDNT_CONNECT:
        snprintf(out, cap, "could not connect to %s: %s", host, detail);
        break;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
        snprintf(out, cap, "TLS error with %s: %s", host, detail);
        break;
    case CURLE_GOT_NOTHING:
        snprintf(out, cap, "empty reply from %s", host);
        break;
    case CURLE_WRITE_ERROR:
        if (op->too_large) {
            snprintf(out, cap, "response from %s over %d bytes", host, SG_MAX_RESPONSE_BODY);
            break;
        }
        /* fall through */
    default:
        snprintf(out, cap, "request to %s failed: %s", host, detail);
    }
}

/* Pushes res or nil, err for a finished op; returns the count. */
static int push_result(lua_State *L, http_op *op)
{
    if (op->result != CURLE_OK) {
        char msg[512];
        error_text(op, msg, sizeof msg);
        lua_pushnil(L);
        lua_pushstring(L, msg);
        return 2;
    }
    long status = 0, connects = 0, version = 0;
    curl_easy_getinfo(op->easy, CURLINFO_RESPONSE_CODE, &status);
    /* 0 when the request went over a kept-alive (or multiplexed) connection */
    curl_easy_getinfo(op->easy, CURLINFO_NUM_CONNECTS, &connects);
    curl_easy_getinfo(op->easy, CURLINFO_HTTP_VERSION, &version);
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, status);
    lua_setfield(L, -2, "status");
    lua_pushinteger(L, connects);
    lua_setfield(L, -2, "new_connections");
    lua_pushstring(L, version == CURL_HTTP_VERSION_2_0 ? "2" : version == CURL_HTTP_VERSION_1_0 ? "1.0" : "1.1");
    lua_setfield(L, -2, "http_version");
    lua_pushlstring(L, op->resp.data ? op->resp.data : "", op->resp.len);
    lua_setfield(L, -2, "body");
    lua_newtable(L);
    const char *p = op->resp_hdrs.data, *end = p ? p + op->resp_hdrs.len : NULL;
    while (p && p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) eol = end;
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (colon) {
            char name[128];
            size_t nl = (size_t)(colon - p);
            if (nl >= sizeof name) nl = sizeof name - 1;
            for (size_t i = 0; i < nl; i++) name[i] = (char)tolower((unsigned char)p[i]);
            name[nl] = '\0';
            const char *v = colon + 1, *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t')) v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ')) ve--;
            lua_getfield(L, -1, name);
            if (lua_isstring(L, -1)) {        /* repeated header: join */
                lua_pushliteral(L, ", ");
                lua_pushlstring(L, v, (size_t)(ve - v));
                lua_concat(L, 3);
            } else {
                lua_pop(L, 1);
                lua_pushlstring(L, v, (size_t)(ve - v));
            }
            lua_setfield(L, -2, name);
        }
        p = eol + 1;
    }
    lua_setfield(L, -2, "headers");
    return 1;
}

static int op_finish(sg_op *o)
{
    return push_result(o->co, (http_op *)o);
}

/* ---- arguments and the op ------------------------------------------------------ */

/* core.http.request's arguments, read and checked before anything is
 * allocated: a raise is a longjmp, and whatever was allocated before it
 * would leak. The strings stay valid while they are on L's stack, which
 * lasts until the op is set up (libcurl copies what it keeps). */
typedef struct {
    const char *url, *method, *body;   /* body: NULL when there is none */
    size_t blen;
    long timeout_ms;
    int lines;                         /* stack index: a table of "Name: value" */
    int nlines;
} http_args;

/* The headers table as "Name: value" lines, in a table at a->lines.
 * String keys only (lua_tostring on a number key would break lua_next);
 * values that are neither strings nor numbers are skipped. */
static void read_headers(lua_State *L, http_args *a)
{
    lua_newtable(L);
    a->lines = lua_gettop(L);
    a->nlines = 0;
    lua_getfield(L, 1, "headers");
    if (!lua_istable(L, -1)) { lua_pop(L, 1); return; }
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        int vt = lua_type(L, -1);
        if (lua_type(L, -2) == LUA_TSTRING && (vt == LUA_TSTRING || vt == LUA_TNUMBER)) {
            const char *k = lua_tostring(L, -2), *v = lua_tostring(L, -1);
            if (strpbrk(k, "\r\n:") || strpbrk(v, "\r\n"))
                luaL_error(L, "http.request: header %s contains CR, LF or ':'", k);
            lua_pushfstring(L, "%s: %s", k, v);
            lua_rawseti(L, a->lines, ++a->nlines);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

/* Reads the argument table; raises on programmer mistakes. Leaves the
 * strings a points at on the stack. */
static void read_args(lua_State *L, http_args *a)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_getfield(L, 1, "url");
    a->url = lua_tostring(L, -1);
    if (!a->url) luaL_error(L, "http.request: url is required");
    lua_getfield(L, 1, "method");
    if (lua_isnil(L, -1)) a->method = "GET";
    else if (!(a->method = lua_tostring(L, -1)))
        luaL_error(L, "http.request: method must be a string (got %s)", luaL_typename(L, -1));
    lua_getfield(L, 1, "body");
    a->blen = 0;
    a->body = lua_tolstring(L, -1, &a->blen);
    lua_getfield(L, 1, "timeout_ms");
    a->timeout_ms = lua_isnumber(L, -1) ? (long)lua_tonumber(L, -1) : DEFAULT_TIMEOUT_MS;
    if (a->timeout_ms <= 0) a->timeout_ms = DEFAULT_TIMEOUT_MS;
    lua_pop(L, 1);
    read_headers(L, a);
}

static void set_options(http_op *op, const http_args *a)
{
    CURL *e = op->easy;
    curl_easy_setopt(e, CURLOPT_URL, a->url);
    if (op->body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)a->blen);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, op->body);
    }
    if (strcmp(a->method, "GET") == 0 && !op->body) curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    else if (strcmp(a->method, "HEAD") == 0) curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    else if (strcmp(a->method, "POST") != 0 || !op->body) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, a->method);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, op->hdrs);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, op->timeout_ms);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, op);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, op);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, op->errbuf);
    curl_easy_setopt(e, CURLOPT_PRIVATE, op);
}

/* An op for checked arguments, or NULL when out of memory; nothing here
 * raises. hs: the worker's multi state (async requests), whose pool lends
 * a handle; NULL for blocking requests. */
static http_op *op_new(lua_State *L, const http_args *a, http_state *hs)
{
    http_op *op = calloc(1, sizeof *op);
    if (!op) return NULL;
    op->hs = hs;
    op->timeout_ms = a->timeout_ms;
    op->easy = (hs && hs->npool > 0) ? hs->pool[--hs->npool] : curl_easy_init();
    if (!op->easy) { free(op); return NULL; }
    if (a->body) {
        /* the Lua string may be collected while the request is in flight */
        op->body = malloc(a->blen + 1);
        if (!op->body) { op_free(op); return NULL; }
        memcpy(op->body, a->body, a->blen);
        op->body[a->blen] = '\0';
    }
    /* Expect: 100-continue would add a round trip (or a 1 s stall) per POST. */
    op->hdrs = curl_slist_append(NULL, "Expect:");
    if (!op->hdrs) { op_free(op); return NULL; }
    for (int i = 1; i <= a->nlines; i++) {
        lua_rawgeti(L, a->lines, i);
        struct curl_slist *l = curl_slist_append(op->hdrs, lua_tostring(L, -1));
        lua_pop(L, 1);
        if (!l) { op_free(op); return NULL; }
        op->hdrs = l;
    }
    set_options(op, a);
    return op;
}

/* ---- the multi handle on the worker's loop --------------------------------- */

static void unlink_active(http_op *op)
{
    if (op->prev) op->prev->next = op->next;
    else if (op->hs->active == op) op->hs->active = op->next;
    if (op->next) op->next->prev = op->prev;
    op->prev = op->next = NULL;
}

static void check_done(http_state *hs)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(hs->multi, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        http_op *op = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&op);
        op->result = msg->data.result;
        curl_multi_remove_handle(hs->multi, msg->easy_handle);
        unlink_active(op);
        worker_ready(hs->w, &op->op);
    }
}

static void on_socket_event(evutil_socket_t fd, short kind, void *arg)
{
    http_state *hs = arg;
    int running = 0;
    int flags = ((kind & EV_READ) ? CURL_CSELECT_IN : 0) | ((kind & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    curl_multi_socket_action(hs->multi, fd, flags, &running);
    check_done(hs);
}

static void on_timeout(evutil_socket_t fd, short kind, void *arg)
{
    (void)fd; (void)kind;
    http_state *hs = arg;
    int running = 0;
    curl_multi_socket_action(hs->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(hs);
}

static int socket_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)e;
    http_state *hs = userp;
    struct event *ev = socketp;
    if (ev) { event_free(ev); ev = NULL; }
    if (what == CURL_POLL_REMOVE) {
        curl_multi_assign(hs->multi, s, NULL);
        return 0;
    }
    short kind = EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) | ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
    ev = event_new(hs->w->base, s, kind, on_socket_event, hs);
    if (!ev) return -1;
    event_add(ev, NULL);
    curl_multi_assign(hs->multi, s, ev);
    return 0;
}

/* libcurl asks for a timer; never call socket_action from here (re-entry). */
static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    http_state *hs = userp;
    if (timeout_ms < 0) {
        evtimer_del(hs->timer);
        return 0;
    }
    struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
    evtimer_add(hs->timer, &tv);
    return 0;
}

static http_state *state_for(worker_t *w)
{
    if (w->hs) return w->hs;
    http_state *hs = calloc(1, sizeof *hs);
    if (!hs) return NULL;
    hs->w = w;
    hs->multi = curl_multi_init();
    hs->timer = evtimer_new(w->base, on_timeout, hs);
    if (!hs->multi || !hs->timer) {
        if (hs->multi) curl_multi_cleanup(hs->multi);
        if (hs->timer) event_free(hs->timer);
        free(hs);
        return NULL;
    }
    curl_multi_setopt(hs->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(hs->multi, CURLMOPT_SOCKETDATA, hs);
    curl_multi_setopt(hs->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(hs->multi, CURLMOPT_TIMERDATA, hs);
    curl_multi_setopt(hs->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    curl_multi_setopt(hs->multi, CURLMOPT_MAX_HOST_CONNECTIONS, MAX_HOST_CONNECTIONS);
    curl_multi_setopt(hs->multi, CURLMOPT_MAXCONNECTS, MAX_HOST_CONNECTIONS);
    w->hs = hs;
    return hs;
}

/* Called by the worker at shutdown: in-flight requests are abandoned. */
void sg_http_destroy(worker_t *w)
{
    http_state *hs = w->hs;
    if (!hs) return;
    while (hs->active) {
        http_op *op = hs->active;
        unlink_active(op);
        curl_multi_remove_handle(hs->multi, op->easy);
        op_free(op);
    }
    while (hs->npool > 0) curl_easy_cleanup(hs->pool[--hs->npool]);
    curl_multi_cleanup(hs->multi);   /* closes sockets via socket_cb */
    event_free(hs->timer);
    free(hs);
    w->hs = NULL;
}

/* Running out of memory is not the caller's mistake: nil, err. */
static int cannot_start(lua_State *L)
{
    lua_pushnil(L);
    lua_pushliteral(L, "http: cannot start request (out of memory)");
    return 2;
}

/* A blocking request's op is held by a userdata while its result is built:
 * pushing the result can raise (out of memory), and __gc then frees it. */
static int held_op_gc(lua_State *L)
{
    http_op **held = lua_touserdata(L, 1);
    if (*held) op_free(*held);
    *held = NULL;
    return 0;
}

/* Standalone, or a worker's start-up code: no loop to yield to. */
static int request_blocking(lua_State *L, const http_args *a)
{
    http_op **held = lua_newuserdata(L, sizeof *held);
    *held = NULL;
    luaL_getmetatable(L, HELD_OP_MT);
    lua_setmetatable(L, -2);
    http_op *op = *held = op_new(L, a, NULL);
    if (!op) return cannot_start(L);
    op->result = curl_easy_perform(op->easy);
    int n = push_result(L, op);
    *held = NULL;
    op_free(op);
    return n;
}

static int l_request(lua_State *L)
{
    http_args a;
    read_args(L, &a);
    worker_t *w = worker_of(L);
    if (!w || !worker_can_yield(w, L)) return request_blocking(L, &a);
    http_state *hs = state_for(w);
    if (!hs) return cannot_start(L);
    http_op *op = op_new(L, &a, hs);
    if (!op) return cannot_start(L);
    if (curl_multi_add_handle(hs->multi, op->easy) != CURLM_OK) {
        op_free(op);
        return cannot_start(L);
    }
    op->op.co = L;
    op->op.finish = op_finish;
    op->op.destroy = op_destroy;
    op->next = hs->active;
    if (hs->active) hs->active->prev = op;
    hs->active = op;
    return worker_yield(w, L);
}

void sg_open_http(lua_State *L)
{
    static const luaL_Reg fns[] = { { "request", l_request }, { NULL, NULL } };
    if (luaL_newmetatable(L, HELD_OP_MT)) {
        lua_pushcfunction(L, held_op_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    lua_newtable(L);
    luaL_register(L, NULL, fns);
    lua_setfield(L, -2, "http");
}
