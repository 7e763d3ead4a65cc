/*
 * server.c — the engine's HTTP/1.1 server.
 *
 * Why not evhttp: on the collector's hot path (a 1 KB POST answered with a
 * 16-byte JSON) evhttp spent ~17 µs per request — four epoll_ctl calls as it
 * re-armed the socket between reading and writing, header lists built with
 * malloc, the status line and headers formatted through vfprintf. This
 * server does what the engine needs and no more:
 *
 *   - each worker has its own listening socket (SO_REUSEPORT): the kernel
 *     spreads connections over workers, no accept lock is shared;
 *   - a connection's socket is registered once, edge-triggered for both
 *     read and write, so serving a request costs one read() and one send()
 *     and no epoll_ctl at all;
 *   - the request is parsed in place in the connection's input buffer
 *     (http_parse.c: names lower-cased there), offered to the request hook
 *     the worker registered (a C handler), else pushed to Lua directly;
 *   - the reply is formatted with memcpy into the output buffer.
 *
 * It speaks HTTP/1.1 and 1.0: keep-alive, pipelining (requests are served
 * one at a time, in order), Content-Length and chunked request bodies,
 * Expect: 100-continue, HEAD, and chunked streaming replies (SSE). Hostile
 * input gets a JSON error and the connection closed: a header section over
 * SG_MAX_HEADERS_SIZE → 431, a body over SG_MAX_REQUEST_BODY → 413, a
 * malformed request → 400, an unknown method → 405, an unknown
 * Transfer-Encoding → 501. Idle connections close after SG_IDLE_TIMEOUT_S.
 *
 * Lifetime: a connection whose client leaves while its request is with Lua
 * closes its socket at once (so a stream's next write fails) but the struct
 * lives until the request ends, because the task still points at it.
 */
#define _GNU_SOURCE   /* accept4 */
#include "server.h"
#include "bytes.h"
#include "l_buf.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/util.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <lauxlib.h>

#define SG_IDLE_TIMEOUT_S     60             /* keep-alive / slow request */
#define SG_READ_CHUNK         4096           /* least free space per read() */
#define SG_FIRST_READ         (2 * SG_READ_CHUNK)   /* a request and its headers, in one read() */
#define SG_BUSY_READ_LIMIT    (256 * 1024)   /* buffered ahead while busy */
#define SG_MAX_STREAM_BACKLOG (4 * 1024 * 1024) /* unsent SSE bytes: client too slow */
/* Input held for one request at most: headers + body + chunk framing. */
#define SG_MAX_BUFFERED       (2 * SG_MAX_REQUEST_BODY + SG_MAX_HEADERS_SIZE)
/* Replies queued for a client that pipelines but does not read: stop
 * serving its next requests until it does. */
#define SG_MAX_OUT_BACKLOG    (1024 * 1024)

struct sg_server {
    worker_t *w;
    int fd;
    struct event *accept_ev;
    struct event *accept_retry;   /* re-enables accept after EMFILE */
    struct event *sweep_ev;       /* idle timeouts */
    sg_conn *conns;               /* every open or busy connection */
    sg_request_hook hook;         /* offered each request before Lua, or NULL */
    int accepting;
    time_t date_sec;              /* the Date header, formatted once a second */
    char date[64];
};

struct sg_conn {
    sg_server *srv;
    sg_conn *prev, *next;
    int fd;                       /* -1 once closed */
    struct event *ev;
    sg_bytes in;                  /* received bytes; the pending ones not yet served */
    sg_bytes out;                 /* reply bytes; the pending ones not yet sent */
    time_t last_active;
    time_t req_start;             /* first byte of an incomplete request, or 0 */
    sg_http_request *cur;         /* the request being dispatched */
    size_t consumed;              /* bytes of in the current request took */
    char addr[INET6_ADDRSTRLEN];
    int port;
    unsigned busy : 1;            /* a request is with Lua */
    unsigned streaming : 1;
    unsigned close_after : 1;     /* close once the reply is out */
    unsigned eof : 1;             /* the client shut its side */
    unsigned processing : 1;      /* inside conn_process: no re-entry, no free */
    unsigned read_blocked : 1;    /* stopped reading before EAGAIN */
    unsigned continue_sent : 1;
    unsigned head : 1;            /* HEAD: the reply has no body */
    unsigned http10 : 1;
};

static void conn_process(sg_conn *c);
static void conn_close(sg_conn *c);

/* ---- small helpers -------------------------------------------------------- */

static const char *reason(int status)
{
    switch (status) {
    case 100: return "Continue";
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
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return status < 400 ? "OK" : "Error";
    }
}

/* Replies are written with no check per call: a failed allocation sets
 * c->out.oom, and conn_flush closes the connection rather than send a
 * reply with bytes missing. */
static void out_add(sg_conn *c, const char *s, size_t n) { sg_bytes_put(&c->out, s, n); }
#define OUT_LIT(c, s) SG_BYTES_LIT(&(c)->out, s)
static void out_str(sg_conn *c, const char *s) { sg_bytes_put(&c->out, s, strlen(s)); }

static const char *http_date(sg_server *s)
{
    time_t now = time(NULL);
    if (now != s->date_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(s->date, sizeof s->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        s->date_sec = now;
    }
    return s->date;
}

/* Sends what is buffered. Returns -1 when the connection was closed. */
static int conn_flush(sg_conn *c)
{
    if (c->out.oom && c->fd >= 0) {
        sg_log("warn", "out of memory writing a reply; connection closed", NULL);
        conn_close(c);
        return -1;
    }
    while (c->fd >= 0 && sg_bytes_npending(&c->out) > 0) {
        ssize_t n = send(c->fd, sg_bytes_pending(&c->out), sg_bytes_npending(&c->out), MSG_NOSIGNAL);
        if (n > 0) {
            sg_bytes_consume(&c->out, (size_t)n);
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return 0;             /* the write edge resumes us */
        } else {
            conn_close(c);        /* the client is gone */
            return -1;
        }
    }
    if (c->fd < 0) return -1;
    if (c->close_after && !c->busy) {
        conn_close(c);
        return -1;
    }
    return 0;
}

/* Status line, Date, Connection and the framing header. */
static void start_reply(sg_conn *c, int status, int chunked, size_t blen)
{
    if (status == 200 && !c->http10) {
        OUT_LIT(c, "HTTP/1.1 200 OK\r\nDate: ");
    } else {
        char line[64];
        int n = snprintf(line, sizeof line, "HTTP/1.%d %d %s\r\n", c->http10 ? 0 : 1, status, reason(status));
        out_add(c, line, (size_t)n);
        OUT_LIT(c, "Date: ");
    }
    out_str(c, http_date(c->srv));
    if (c->close_after || c->srv->w->stopping) {
        c->close_after = 1;
        OUT_LIT(c, "\r\nConnection: close");
    } else if (c->http10) {
        OUT_LIT(c, "\r\nConnection: keep-alive");
    }
    if (chunked) {
        /* HTTP/1.0 has no chunked framing: the close ends the stream */
        if (c->http10) OUT_LIT(c, "\r\n");
        else OUT_LIT(c, "\r\nTransfer-Encoding: chunked\r\n");
    } else {
        OUT_LIT(c, "\r\nContent-Length: ");
        sg_bytes_put_uint(&c->out, blen);
        OUT_LIT(c, "\r\n");
    }
}

static int header_value_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0') return 0;
    return 1;
}

static void add_header(sg_conn *c, const char *k, size_t kl, const char *v, size_t vl)
{
    if (!header_value_ok(k, kl) || !header_value_ok(v, vl) || kl == 0) {
        sg_log("warn", "response header dropped (contains CR or LF)", "header", k, NULL);
        return;
    }
    /* The server owns the framing. */
    if ((kl == 14 && strncasecmp(k, "content-length", 14) == 0) ||
        (kl == 17 && strncasecmp(k, "transfer-encoding", 17) == 0))
        return;
    if (kl == 10 && strncasecmp(k, "connection", 10) == 0) {
        if (vl == 5 && strncasecmp(v, "close", 5) == 0) c->close_after = 1;
        return;                   /* start_reply writes it */
    }
    out_add(c, k, kl);
    OUT_LIT(c, ": ");
    out_add(c, v, vl);
    OUT_LIT(c, "\r\n");
}

/* Adds the headers table at index idx of L (name → string | { strings }).
 * Connection: close is noticed before the status line is written. */
static void scan_connection_header(sg_conn *c, lua_State *L, int idx)
{
    if (!lua_istable(L, idx)) return;
    lua_getfield(L, idx, "Connection");
    if (lua_type(L, -1) != LUA_TSTRING) { lua_pop(L, 1); lua_getfield(L, idx, "connection"); }
    if (lua_type(L, -1) == LUA_TSTRING && strcasecmp(lua_tostring(L, -1), "close") == 0) c->close_after = 1;
    lua_pop(L, 1);
}

static void add_headers(sg_conn *c, lua_State *L, int idx)
{
    if (!lua_istable(L, idx)) return;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        /* Type first: lua_tostring on a number key would break lua_next. */
        if (lua_type(L, -2) == LUA_TSTRING) {
            size_t kl, vl;
            const char *k = lua_tolstring(L, -2, &kl);
            if (lua_istable(L, -1)) {
                int n = (int)lua_objlen(L, -1);
                for (int i = 1; i <= n; i++) {
                    lua_rawgeti(L, -1, i);
                    const char *v = lua_tolstring(L, -1, &vl);
                    if (v) add_header(c, k, kl, v, vl);
                    lua_pop(L, 1);
                }
            } else {
                const char *v = lua_tolstring(L, -1, &vl);
                if (v) add_header(c, k, kl, v, vl);
            }
        }
        lua_pop(L, 1);
    }
}

/* A reply the server makes itself: JSON; after a refused request the
 * connection closes (its remaining bytes cannot be trusted). */
static void error_reply(sg_conn *c, int status, const char *code, const char *message, int close)
{
    char body[512];
    int n = snprintf(body, sizeof body, "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}", code, message);
    if (close) c->close_after = 1;
    start_reply(c, status, 0, (size_t)n);
    OUT_LIT(c, "Content-Type: application/json\r\n\r\n");
    out_add(c, body, (size_t)n);
}

/* ---- requests ---------------------------------------------------------------- */

static int method_allowed(const char *m, size_t n)
{
    static const char *const ok[] = { "GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH" };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        if (strlen(ok[i]) == n && memcmp(ok[i], m, n) == 0) return 1;
    return 0;
}

/* ---- connections ------------------------------------------------------------ */

static void conn_free(sg_conn *c)
{
    sg_server *s = c->srv;
    if (c->prev) c->prev->next = c->next;
    else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    sg_bytes_free(&c->in);
    sg_bytes_free(&c->out);
    free(c);
}

/* Closes the socket; the struct goes when no request or loop holds it. */
static void conn_close(sg_conn *c)
{
    if (c->fd >= 0) {
        event_free(c->ev);
        c->ev = NULL;
        close(c->fd);
        c->fd = -1;
    }
    if (!c->busy && !c->processing) conn_free(c);
}

/* Reads what the socket has. Returns -1 when the connection was closed. */
static int conn_read(sg_conn *c)
{
    for (;;) {
        if (sg_bytes_npending(&c->in) >= (c->busy ? SG_BUSY_READ_LIMIT : SG_MAX_BUFFERED)) {
            c->read_blocked = 1;
            return 0;
        }
        /* Reserving slides the pending bytes down before growing; offsets
         * into them, like `consumed`, are relative to c->in.off. */
        if (sg_bytes_reserve(&c->in, c->in.cap ? SG_READ_CHUNK : SG_FIRST_READ) != 0) {
            conn_close(c);
            return -1;
        }
        size_t room = c->in.cap - c->in.len;
        ssize_t n = recv(c->fd, c->in.data + c->in.len, room, 0);
        if (n > 0) {
            c->in.len += (size_t)n;
            c->last_active = time(NULL);
            /* A short read drained the socket: edge-triggered, new data
             * brings a new edge, so no extra read() for EAGAIN. */
            if ((size_t)n < room) { c->read_blocked = 0; return 0; }
            continue;
        }
        if (n == 0) {
            c->eof = 1;
            c->read_blocked = 0;
            /* A stream's client left: close now so its next write fails. */
            if (c->busy && c->streaming) { conn_close(c); return -1; }
            return 0;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) { c->read_blocked = 0; return 0; }
        conn_close(c);
        return -1;
    }
}

static void on_conn_event(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    sg_conn *c = arg;
    if ((what & EV_WRITE) && sg_bytes_npending(&c->out) > 0) {
        if (conn_flush(c) != 0) return;   /* closed: c may be gone */
        /* requests held back while replies were queued (SG_MAX_OUT_BACKLOG);
         * conn_process may free c, so nothing touches it afterwards */
        if (!(what & EV_READ)) {
            if (!c->busy && sg_bytes_npending(&c->in) > 0) conn_process(c);
            return;
        }
    }
    if (what & EV_READ) {
        if (conn_read(c) != 0) return;
        if (!c->busy) conn_process(c);
    }
}

/* Drops the request just answered from the input. -1: the connection
 * closed (reading what was held back failed). */
static int conn_advance(sg_conn *c)
{
    /* advance, not memmove: a client that pipelines thousands of requests
     * must not cost a copy of the rest per request */
    sg_bytes_consume(&c->in, c->consumed);
    c->consumed = 0;
    c->continue_sent = 0;
    if (c->in.len == 0 && c->in.cap > 64 * 1024) sg_bytes_free(&c->in);   /* after a big body */
    if (c->read_blocked && conn_read(c) != 0) return -1;
    return 0;
}

/* A request that has not all arrived: say 100 Continue when the client
 * waits for it, refuse framing that would never fit, start the clock for
 * slow clients. */
static void conn_incomplete(sg_conn *c, const sg_http_request *r)
{
    if (r->want_continue && !c->continue_sent) {
        c->continue_sent = 1;
        OUT_LIT(c, "HTTP/1.1 100 Continue\r\n\r\n");
        conn_flush(c);
    }
    if (c->eof) c->close_after = 1;   /* it will never complete */
    else if (sg_bytes_npending(&c->in) >= SG_MAX_BUFFERED) {
        error_reply(c, 413, "PAYLOAD_TOO_LARGE", "request framing is over the server's limit of 2 MB; "
                    "send the body with Content-Length or larger chunks", 1);
        return;
    }
    if (!c->req_start) c->req_start = time(NULL);
}

/* Hands a complete request to its handler. 0: go on with the next one
 * (a handler that did not yield has replied already; one that yielded
 * replies later, and server_reply calls back into conn_process); -1: stop. */
static int conn_dispatch(sg_conn *c, sg_http_request *r)
{
    sg_server *s = c->srv;
    c->http10 = r->minor == 0;
    c->head = r->mlen == 4 && memcmp(r->method, "HEAD", 4) == 0;
    c->consumed = r->total;
    if (!r->keep_alive) c->close_after = 1;
    if (!method_allowed(r->method, r->mlen)) {
        error_reply(c, 405, "METHOD_NOT_ALLOWED", "method not allowed; the server takes GET, POST, "
                    "HEAD, PUT, DELETE, OPTIONS and PATCH", 1);
        return -1;
    }
    c->busy = 1;
    c->streaming = 0;
    c->cur = r;
    /* The request hook (a C handler) may take it; otherwise Lua serves it. */
    int started = s->w->stopping ? -1
                : (s->hook && s->hook(s->w, c)) ? 0
                : worker_start_request(s->w, c);
    c->cur = NULL;
    if (started != 0 && c->busy) {
        c->busy = 0;
        error_reply(c, 503, "SHUTTING_DOWN", "server is shutting down, retry", 1);
        return -1;
    }
    return 0;
}

/* Serves every complete request buffered on c, in order, one at a time. */
static void conn_process(sg_conn *c)
{
    if (c->processing) return;
    c->processing = 1;
    while (c->fd >= 0 && !c->busy) {
        if (c->consumed && conn_advance(c) != 0) break;
        if (c->close_after) break;
        if (sg_bytes_npending(&c->out) > SG_MAX_OUT_BACKLOG) {
            /* Send before serving more. Only a send that hit EAGAIN may
             * stop the loop: then the next write edge resumes it. */
            if (conn_flush(c) != 0 || sg_bytes_npending(&c->out) > SG_MAX_OUT_BACKLOG) break;
        }
        if (sg_bytes_npending(&c->in) == 0) {
            if (c->eof) c->close_after = 1;
            break;
        }
        sg_http_request r;
        int rc = sg_http_parse(c->in.data + c->in.off, sg_bytes_npending(&c->in), &r);
        if (rc == 0) {
            conn_incomplete(c, &r);
            break;
        }
        c->req_start = 0;
        if (rc < 0) {
            error_reply(c, r.status, r.code, r.message, 1);
            break;
        }
        if (conn_dispatch(c, &r) != 0) break;
    }
    c->processing = 0;
    if (c->fd < 0) {
        if (!c->busy) conn_free(c);
        return;
    }
    if (conn_flush(c) != 0) return;
    if (c->close_after && !c->busy && sg_bytes_npending(&c->out) == 0) conn_close(c);
}

static void on_accept(evutil_socket_t fd, short what, void *arg);

static void accept_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    sg_server *s = arg;
    if (s->accepting) event_add(s->accept_ev, NULL);
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    (void)what;
    sg_server *s = arg;
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: pause accepting rather than spin. */
                sg_log("warn", "cannot accept connections", "error", strerror(errno), NULL);
                event_del(s->accept_ev);
                struct timeval tv = { 0, 100 * 1000 };
                evtimer_add(s->accept_retry, &tv);
            }
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        sg_conn *c = calloc(1, sizeof *c);
        if (!c) { close(fd); continue; }
        c->srv = s;
        c->fd = fd;
        c->last_active = time(NULL);
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a->sin_addr, c->addr, sizeof c->addr);
            c->port = ntohs(a->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, c->addr, sizeof c->addr);
            c->port = ntohs(a->sin6_port);
        }
        /* Registered once, edge-triggered for both directions. */
        c->ev = event_new(s->w->base, fd, EV_READ | EV_WRITE | EV_PERSIST | EV_ET, on_conn_event, c);
        if (!c->ev || event_add(c->ev, NULL) != 0) {
            if (c->ev) event_free(c->ev);
            close(fd);
            free(c);
            continue;
        }
        c->next = s->conns;
        if (s->conns) s->conns->prev = c;
        s->conns = c;
    }
}

/* Closes connections idle (or dribbling a request) for too long, and idle
 * keep-alive connections once the worker is stopping. */
static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    sg_server *s = arg;
    time_t now = time(NULL);
    sg_conn *c = s->conns;
    while (c) {
        sg_conn *next = c->next;
        if (c->fd >= 0 && !c->busy && c->req_start && now - c->req_start >= SG_IDLE_TIMEOUT_S) {
            /* a request dribbled in too slowly (slowloris): say so, close */
            error_reply(c, 408, "REQUEST_TIMEOUT", "the request did not arrive within 60 s", 1);
            if (conn_flush(c) == 0) conn_close(c);   /* -1: closed (and freed) already */
        } else if (c->fd >= 0 && !c->busy && sg_bytes_npending(&c->out) == 0 &&
                   (now - c->last_active >= SG_IDLE_TIMEOUT_S ||
                    (s->w->stopping && sg_bytes_npending(&c->in) == 0))) {
            conn_close(c);
        }
        c = next;
    }
}

/* ---- the server's life ----------------------------------------------------- */

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
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&ss, (socklen_t)sslen) != 0 ||
        listen(fd, 1024) != 0) {
        sg_log("error", "cannot listen", "address", e->listen_host, "error", strerror(errno), NULL);
        if (fd >= 0) close(fd);
        return -1;
    }
    sg_server *s = calloc(1, sizeof *s);
    if (!s) { close(fd); return -1; }
    s->w = w;
    s->fd = fd;
    s->accept_ev = event_new(w->base, fd, EV_READ | EV_PERSIST, on_accept, s);
    s->accept_retry = evtimer_new(w->base, accept_retry, s);
    s->sweep_ev = event_new(w->base, -1, EV_PERSIST, on_sweep, s);
    w->server = s;
    if (!s->accept_ev || !s->accept_retry || !s->sweep_ev) return -1;
    struct timeval tv = { 1, 0 };
    event_add(s->sweep_ev, &tv);
    event_add(s->accept_ev, NULL);
    s->accepting = 1;
    http_date(s);
    return 0;
}

void server_set_request_hook(worker_t *w, sg_request_hook hook)
{
    w->server->hook = hook;
}

void server_stop_accepting(worker_t *w)
{
    sg_server *s = w->server;
    if (!s || !s->accepting) return;
    s->accepting = 0;
    event_del(s->accept_ev);
    event_del(s->accept_retry);
    close(s->fd);                 /* new connections go to other processes */
    s->fd = -1;
    on_sweep(-1, 0, s);           /* idle keep-alive connections close now */
}

void server_free(worker_t *w)
{
    sg_server *s = w->server;
    if (!s) return;
    while (s->conns) {
        sg_conn *c = s->conns;
        c->busy = 0;              /* its task is abandoned with the lua_State */
        c->processing = 0;
        conn_close(c);
    }
    if (s->accept_ev) event_free(s->accept_ev);
    if (s->accept_retry) event_free(s->accept_retry);
    if (s->sweep_ev) event_free(s->sweep_ev);
    if (s->fd >= 0) close(s->fd);
    free(s);
    w->server = NULL;
}

/* ---- requests and replies (called by worker.c, l_core.c, the request hook) -- */

void server_request_view(sg_conn *c, sg_request *v)
{
    sg_http_request *r = c->cur;
    const char *q;
    v->method = r->method;
    v->mlen = r->mlen;
    v->plen = sg_http_target_path(r->target, r->tlen, &v->path, &q);
    v->body = r->body;
    v->blen = r->blen;
    v->h = r->h;
    v->nh = r->nh;
    v->peer = c->addr;
}

void server_push_request(lua_State *co, sg_conn *c)
{
    sg_http_request *r = c->cur;
    lua_createtable(co, 0, 8);
    lua_pushlstring(co, r->method, r->mlen);
    lua_setfield(co, -2, "method");

    const char *t, *q, *te = r->target + r->tlen;
    size_t plen = sg_http_target_path(r->target, r->tlen, &t, &q);
    lua_pushlstring(co, t, plen);
    lua_setfield(co, -2, "path");
    if (q) lua_pushlstring(co, q + 1, (size_t)(te - q - 1));
    else lua_pushliteral(co, "");
    lua_setfield(co, -2, "query");

    lua_createtable(co, 0, r->nh);
    for (int i = 0; i < r->nh; i++) {
        sg_header *h = &r->h[i];
        lua_pushlstring(co, h->name, h->nlen);
        lua_pushvalue(co, -1);
        lua_rawget(co, -3);
        if (lua_isstring(co, -1)) {   /* a repeated header: join, as RFC 9110 allows */
            lua_pushliteral(co, ", ");
            lua_pushlstring(co, h->value, h->vlen);
            lua_concat(co, 3);
        } else {
            lua_pop(co, 1);
            lua_pushlstring(co, h->value, h->vlen);
        }
        lua_rawset(co, -3);
    }
    lua_setfield(co, -2, "headers");

    /* The body as a buffer, not a string: see l_buf.h. req.body
     * still reads as a string (the request metatable makes it on demand). */
    sg_buf_push(co, r->body, r->blen);
    lua_setfield(co, -2, "body_buf");
    sg_push_request_mt(co);
    lua_setmetatable(co, -2);

    if (c->addr[0]) {
        lua_pushstring(co, c->addr);
        lua_setfield(co, -2, "remote_addr");
        lua_pushinteger(co, c->port);
        lua_setfield(co, -2, "remote_port");
    }
}

/* The request is over: serve what is buffered next (unless we are inside
 * conn_process already, which goes on by itself). */
static void request_done(sg_conn *c)
{
    c->busy = 0;
    c->streaming = 0;
    if (c->processing) return;
    if (c->fd < 0) { conn_free(c); return; }
    conn_process(c);
}

void server_reply(sg_conn *c, lua_State *co)
{
    if (c->fd < 0) { request_done(c); return; }
    int status = 500;
    if (co && lua_isnumber(co, 1)) {
        status = (int)lua_tointeger(co, 1);
        if (status < 100 || status > 599) status = 500;
    }
    if (!co || (status == 500 && !lua_isnumber(co, 1))) {
        if (co) sg_log("error", "request handler returned no status", NULL);
        error_reply(c, 500, "INTERNAL", "internal error", 0);
        request_done(c);
        return;
    }
    size_t blen = 0;
    const char *body = lua_tolstring(co, 3, &blen);
    if (!body || status == 204 || status == 304) blen = 0;   /* these never have a body */
    scan_connection_header(c, co, 2);
    start_reply(c, status, 0, blen);
    add_headers(c, co, 2);
    OUT_LIT(c, "\r\n");
    if (blen && !c->head) out_add(c, body, blen);
    request_done(c);
}

void server_reply_raw(sg_conn *c, int status, const char *headers, size_t hlen,
                      const char *body, size_t blen)
{
    if (c->fd < 0) { request_done(c); return; }
    start_reply(c, status, 0, blen);
    out_add(c, headers, hlen);
    OUT_LIT(c, "\r\n");
    if (blen && !c->head) out_add(c, body, blen);
    request_done(c);
}

int server_stream_start(sg_conn *c, lua_State *L, int status, int hidx)
{
    if (c->fd < 0) return -1;
    scan_connection_header(c, L, hidx);
    if (c->http10) c->close_after = 1;   /* no chunked in 1.0: the close ends it */
    start_reply(c, status, 1, 0);
    add_headers(c, L, hidx);
    OUT_LIT(c, "\r\n");
    c->streaming = 1;
    return conn_flush(c);
}

int server_stream_write(sg_conn *c, const char *s, size_t n)
{
    if (c->fd < 0) return -1;
    if (n == 0) return 0;         /* a zero chunk would end the stream */
    if (sg_bytes_npending(&c->out) > SG_MAX_STREAM_BACKLOG) {   /* a stalled client */
        conn_close(c);
        return -1;
    }
    if (!c->http10) {
        char hdr[24];
        int hl = snprintf(hdr, sizeof hdr, "%zx\r\n", n);
        out_add(c, hdr, (size_t)hl);
    }
    out_add(c, s, n);
    if (!c->http10) OUT_LIT(c, "\r\n");
    return conn_flush(c);
}

void server_stream_end(sg_conn *c)
{
    if (c->fd >= 0) {
        if (!c->http10) OUT_LIT(c, "0\r\n\r\n");
        if (c->head) c->close_after = 1;
    }
    request_done(c);
}
