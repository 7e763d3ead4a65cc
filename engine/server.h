/*
 * server.h — the evhttp glue: one HTTP server per worker on a shared port.
 */
#ifndef SIGNAL_SERVER_H
#define SIGNAL_SERVER_H

#include "worker.h"

/* Binds w's listener (SO_REUSEPORT) on the engine's address. */
int server_start(worker_t *w);
void server_stop_accepting(worker_t *w);
void server_free(worker_t *w);

/* Pushes the Lua request table for req onto co. */
void server_push_request(lua_State *co, struct evhttp_request *req);

/* Sends the reply from the handler's results (status, headers, body) on co,
 * or a 500 when co is NULL (the handler raised). */
void server_reply(worker_t *w, struct evhttp_request *req, lua_State *co);

/* Streaming (chunked) replies, for Server-Sent Events: start with status
 * and the headers table at index hidx of L, write chunks, end when the
 * task ends. write returns -1 once the client has gone away. */
int server_stream_start(struct evhttp_request *req, lua_State *L, int status, int hidx);
int server_stream_write(struct evhttp_request *req, const char *s, size_t n);
void server_stream_end(struct evhttp_request *req);

/* Fails with a clear message when the address is taken (SO_REUSEPORT alone
 * would silently share the port with another process). */
int server_probe_address(const char *host, int port, char *err, size_t errcap);

#endif
