/*
 * server.c — evhttp glue. Each worker runs its own evhttp on its own
 * listening socket bound with SO_REUSEPORT, so the kernel spreads
 * connections over workers and no accept lock is shared between threads.
 * A request becomes a Lua table handed to the entry module's handler in a
 * new coroutine (worker.c); whatever the handler returns is sent back here.
 */
#include "server.h"
#include "log.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <lauxlib.h>

static void on_request(struct evhttp_request *req, void *arg)
{
    worker_t *w = arg;
    if (w->stopping || worker_start_request(w, req) != 0) {
        struct evbuffer *b = evbuffer_new();
        evbuffer_add_printf(b, "{\"error\":{\"code\":\"SHUTTING_DOWN\",\"message\":\"server is shutting down, retry\"}}");
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
        evhttp_send_reply(req, 503, "Service Unavailable", b);
        evbuffer_free(b);
    }
}

static int resolve(const char *host, int port, struct sockaddr_storage *ss, int *sslen)
{
    char spec[300];
    if (strcmp(host, "localhost") == 0) host = "127.0.0.1";
    if (strchr(host, ':')) snprintf(spec, sizeof spec, "[%s]:%d", host, port);
    else snprintf(spec, sizeof spec, "%s:%d", host, port);
    *sslen = sizeof *ss;
    return evutil_parse_sockaddr_port(spec, (struct sockaddr *)ss, sslen);
}

int server_probe_address(const char *host, int port, char *err, size_t errcap)
{
    struct sockaddr_storage ss;
    int sslen;
    if (resolve(host, port, &ss, &sslen) != 0) {
        snprintf(err, errcap, "listen %s:%d: not an IP address (use e.g. 127.0.0.1:8080 or 0.0.0.0:8080)", host, port);
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM, 0);
    if (fd < 0) { snprintf(err, errcap, "listen: socket: %s", strerror(errno)); return -1; }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, (socklen_t)sslen) != 0) {
        int e = errno;
        close(fd);
        if (e == EADDRINUSE)
            snprintf(err, errcap, "listen %s:%d: address already in use (another signal or program is on that port; change `listen` in the config)", host, port);
        else
            snprintf(err, errcap, "listen %s:%d: %s", host, port, strerror(e));
        return -1;
    }
    close(fd);
    return 0;
}

int server_start(worker_t *w)
{
    engine_t *e = w->engine;
    struct sockaddr_storage ss;
    int sslen;
    if (resolve(e->listen_host, e->listen_port, &ss, &sslen) != 0) return -1;
    w->listener = evconnlistener_new_bind(w->base, NULL, NULL,
        LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT | LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
        1024, (struct sockaddr *)&ss, sslen);
    if (!w->listener) {
        sg_log("error", "cannot listen", "address", e->listen_host, "error", strerror(errno), NULL);
        return -1;
    }
    w->http = evhttp_new(w->base);
    if (!w->http) return -1;
    evhttp_set_max_body_size(w->http, SG_MAX_REQUEST_BODY);
    evhttp_set_max_headers_size(w->http, SG_MAX_HEADERS_SIZE);
    evhttp_set_timeout(w->http, 60);
    evhttp_set_allowed_methods(w->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                        EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                        EVHTTP_REQ_PATCH);
    evhttp_set_gencb(w->http, on_request, w);
    if (!evhttp_bind_listener(w->http, w->listener)) return -1;
    return 0;
}

void server_stop_accepting(worker_t *w)
{
    if (w->listener) evconnlistener_disable(w->listener);
}

void server_free(worker_t *w)
{
    if (w->http) evhttp_free(w->http);   /* also frees the bound listener */
    w->http = NULL;
    w->listener = NULL;
}

static const char *method_name(enum evhttp_cmd_type c)
{
    switch (c) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_PATCH: return "PATCH";
    default: return "OTHER";
    }
}

void server_push_request(lua_State *co, struct evhttp_request *req)
{
    lua_createtable(co, 0, 7);
    lua_pushstring(co, method_name(evhttp_request_get_command(req)));
    lua_setfield(co, -2, "method");

    const char *uri = evhttp_request_get_uri(req);
    const char *q = strchr(uri, '?');
    if (q) {
        lua_pushlstring(co, uri, (size_t)(q - uri));
        lua_setfield(co, -2, "path");
        lua_pushstring(co, q + 1);
    } else {
        lua_pushstring(co, uri);
        lua_setfield(co, -2, "path");
        lua_pushliteral(co, "");
    }
    lua_setfield(co, -2, "query");

    lua_newtable(co);
    struct evkeyvalq *hs = evhttp_request_get_input_headers(req);
    for (struct evkeyval *kv = hs->tqh_first; kv; kv = kv->next.tqe_next) {
        char name[128];
        size_t n = strlen(kv->key);
        if (n >= sizeof name) continue;   /* no legitimate header name is that long */
        for (size_t i = 0; i <= n; i++) name[i] = (char)tolower((unsigned char)kv->key[i]);
        lua_getfield(co, -1, name);
        if (lua_isstring(co, -1)) {
            lua_pushliteral(co, ", ");
            lua_pushstring(co, kv->value);
            lua_concat(co, 3);
        } else {
            lua_pop(co, 1);
            lua_pushstring(co, kv->value);
        }
        lua_setfield(co, -2, name);
    }
    lua_setfield(co, -2, "headers");

    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t blen = evbuffer_get_length(in);
    if (blen) lua_pushlstring(co, (const char *)evbuffer_pullup(in, -1), blen);
    else lua_pushliteral(co, "");
    lua_setfield(co, -2, "body");

    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    if (conn) {
        char *addr = NULL;
        ev_uint16_t port = 0;
        evhttp_connection_get_peer(conn, &addr, &port);
        if (addr) {
            lua_pushstring(co, addr);
            lua_setfield(co, -2, "remote_addr");
            lua_pushinteger(co, port);
            lua_setfield(co, -2, "remote_port");
        }
    }
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return status < 400 ? "OK" : "Error";
    }
}

static void add_header(struct evkeyvalq *out, const char *k, const char *v)
{
    if (evhttp_add_header(out, k, v) != 0)
        sg_log("warn", "response header dropped (contains CR or LF)", "header", k, NULL);
}

/* Adds the headers table at index idx of L (name → string | { strings }). */
static void add_headers(struct evkeyvalq *out, lua_State *co, int idx)
{
    if (!lua_istable(co, idx)) return;
    lua_pushnil(co);
    while (lua_next(co, idx)) {
        /* Type first: lua_tostring on a number key would break lua_next. */
        const char *k = lua_type(co, -2) == LUA_TSTRING ? lua_tostring(co, -2) : NULL;
        if (k) {
            if (lua_istable(co, -1)) {
                int n = (int)lua_objlen(co, -1);
                for (int i = 1; i <= n; i++) {
                    lua_rawgeti(co, -1, i);
                    const char *v = lua_tostring(co, -1);
                    if (v) add_header(out, k, v);
                    lua_pop(co, 1);
                }
            } else {
                const char *v = lua_tostring(co, -1);
                if (v) add_header(out, k, v);
            }
        }
        lua_pop(co, 1);
    }
}

int server_stream_start(struct evhttp_request *req, lua_State *L, int status, int hidx)
{
    if (!evhttp_request_get_connection(req)) return -1;
    add_headers(evhttp_request_get_output_headers(req), L, hidx);
    evhttp_send_reply_start(req, status, reason(status));
    return 0;
}

int server_stream_write(struct evhttp_request *req, const char *s, size_t n)
{
    /* libevent detaches the request from a connection that failed. */
    if (!evhttp_request_get_connection(req)) return -1;
    struct evbuffer *b = evbuffer_new();
    if (!b) return -1;
    evbuffer_add(b, s, n);
    evhttp_send_reply_chunk(req, b);
    evbuffer_free(b);
    return 0;
}

void server_stream_end(struct evhttp_request *req)
{
    evhttp_send_reply_end(req);   /* frees a detached request too */
}

void server_reply(worker_t *w, struct evhttp_request *req, lua_State *co)
{
    (void)w;
    struct evbuffer *b = evbuffer_new();
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    int status = 500;
    if (co && lua_isnumber(co, 1)) {
        status = (int)lua_tointeger(co, 1);
        if (status < 100 || status > 599) status = 500;
    }
    if (!co || (status == 500 && !lua_isnumber(co, 1))) {
        if (co) sg_log("error", "request handler returned no status", NULL);
        add_header(out, "Content-Type", "application/json");
        evbuffer_add_printf(b, "{\"error\":{\"code\":\"INTERNAL\",\"message\":\"internal error\"}}");
        evhttp_send_reply(req, 500, "Internal Server Error", b);
        evbuffer_free(b);
        return;
    }
    add_headers(out, co, 2);
    size_t blen = 0;
    const char *body = lua_tolstring(co, 3, &blen);
    if (body && blen) evbuffer_add(b, body, blen);
    evhttp_send_reply(req, status, reason(status), b);
    evbuffer_free(b);
}
