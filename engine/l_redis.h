/*
 * l_redis.h — a core.redis connection for C callers (engine/l_redis.c).
 *
 * The collector (engine/collect/) is configured with a connection
 * Lua made (core.redis.connect) and sends its commands through that
 * connection's hiredis async context, so reconnects, backoff and the
 * per-command timeout are l_redis.c's, written once.
 */
#ifndef SIGNAL_L_REDIS_H
#define SIGNAL_L_REDIS_H

#include <lua.h>

struct redisAsyncContext;
typedef struct redis_conn redis_conn;

/* The connection object at idx (raises when it is not one). The pointer
 * it holds is NULL once the connection is closed. */
redis_conn **sg_redis_checkconn(lua_State *L, int idx);

/* The async context (connecting on first use), or NULL and *err while
 * Redis is down. */
struct redisAsyncContext *sg_redis_async(redis_conn *c, const char **err);

/* The per-command timeout of the async side, in ms; 0: none. */
int sg_redis_timeout_ms(const redis_conn *c);

/* Lite replies from now on (and after reconnects): shared objects for
 * values and nils, only arrays and errors allocated. Only for a connection
 * no Lua code reads replies from (l_redis.c explains). */
void sg_redis_lite(redis_conn *c);

#endif
