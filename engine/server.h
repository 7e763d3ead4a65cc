/*
 * server.h — the engine's HTTP/1.1 server (server.c): one per worker, each
 * with its own listening socket on the shared port.
 *
 * worker.c starts it and registers the request hook. Each request is
 * offered to the hook, and otherwise runs as a Lua task
 * (worker_start_request, which pushes it with server_push_request). The
 * reply comes back through server_reply (a Lua handler's results),
 * server_reply_raw (C) or the streaming calls.
 */
#ifndef SIGNAL_SERVER_H
#define SIGNAL_SERVER_H

#include "http_parse.h"
#include "worker.h"

/* One client connection; while a request is with Lua it also stands for
 * that request (a connection serves its requests one at a time, in order). */
typedef struct sg_conn sg_conn;
typedef struct sg_server sg_server;

/* Binds w's listener (SO_REUSEPORT) on the engine's address. */
int server_start(worker_t *w);

/* A C handler offered every request before Lua (the collector, engine/collect/,
 * ingest_try): 1 when it took the request — it has replied, or will,
 * through server_reply_raw — 0 when Lua must serve it. It reads the
 * request through server_request_view. The server knows no handler by
 * name: the worker registers one at start-up. */
typedef int (*sg_request_hook)(worker_t *w, sg_conn *c);

/* Sets w's request hook (NULL: none), after server_start. */
void server_set_request_hook(worker_t *w, sg_request_hook hook);

/* Stops accepting and closes idle connections; busy ones close after
 * their reply. */
void server_stop_accepting(worker_t *w);
void server_free(worker_t *w);

/* A read-only view of the request being dispatched, for the request hook
 * (engine/collect/). Valid only during the dispatch call: copy what must
 * outlive it. */
typedef struct {
    const char *method, *path, *body;
    size_t mlen, plen, blen;
    const sg_header *h;
    int nh;
    const char *peer;             /* remote address, "" when unknown */
} sg_request;

void server_request_view(sg_conn *c, sg_request *r);

/* Replies from C: status, a header block ("Name: value\r\n" lines, no
 * framing headers) and body. Ends c's request like server_reply. */
void server_reply_raw(sg_conn *c, int status, const char *headers, size_t hlen,
                      const char *body, size_t blen);

/* Pushes the Lua request table for c's current request onto co. */
void server_push_request(lua_State *co, sg_conn *c);

/* Sends the reply from the handler's results (status, headers, body) on co,
 * or a 500 when co is NULL (the handler raised). Ends c's request. */
void server_reply(sg_conn *c, lua_State *co);

/* Streaming (chunked) replies, for Server-Sent Events: start with status
 * and the headers table at index hidx of L, write chunks, end when the
 * task ends. write returns -1 once the client has gone away. */
int server_stream_start(sg_conn *c, lua_State *L, int status, int hidx);
int server_stream_write(sg_conn *c, const char *s, size_t n);
void server_stream_end(sg_conn *c);

/* Fails with a clear message when the address is taken (SO_REUSEPORT alone
 * would silently share the port with another process). */
int server_probe_address(const char *host, int port, char *err, size_t errcap);

#endif
