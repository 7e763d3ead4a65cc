/*
 * ingest.h — the collector's C lane (engine/ingest.c): plain single events
 * served from the parsed request to the Redis group commit without Lua.
 */
#ifndef SIGNAL_INGEST_H
#define SIGNAL_INGEST_H

#include "worker.h"

struct sg_conn;
struct redisAsyncContext;

/* Called by the server for every request before Lua sees it: 1 when the
 * lane took it (it replies later, or has already), 0 when Lua must. */
int ingest_try(worker_t *w, struct sg_conn *c);

/* Requests the lane holds (shutdown waits for them like for tasks). */
int ingest_inflight(const worker_t *w);

/* Shutdown: forget every connection (the server frees them next), then,
 * after lua_close has run the last Redis callbacks, free the lane. */
void ingest_detach(worker_t *w);
void ingest_free(worker_t *w);

/* core.ingest_configure / core.ingest_stats (engine/API.md). */
void sg_open_ingest(lua_State *L);

/* engine/l_redis.c: what the lane needs of a core.redis connection. */
typedef struct redis_conn redis_conn;
redis_conn **sg_redis_checkconn(lua_State *L, int idx);
/* The async context (connecting on first use), or NULL and *err while
 * Redis is down. */
struct redisAsyncContext *sg_redis_async(redis_conn *c, const char **err);
int sg_redis_timeout_ms(const redis_conn *c);
/* Lite replies from now on (and after reconnects): shared objects for
 * values and nils, only arrays and errors allocated. Only for a connection
 * no Lua code reads replies from (l_redis.c explains). */
void sg_redis_lite(redis_conn *c);

#endif
