/*
 * l_core.h — the signal.core Lua module: how its parts are assembled.
 * Each l_*.c file contributes one group of primitives (see engine/API.md).
 */
#ifndef SIGNAL_L_CORE_H
#define SIGNAL_L_CORE_H

#include <lua.h>

/* Each adds its functions to the table on top of the stack. */
void sg_open_crypto(lua_State *L);
void sg_open_http(lua_State *L);    /* adds core.http */
void sg_open_redis(lua_State *L);   /* adds core.redis */
void sg_open_event(lua_State *L);   /* adds core.collect (engine/collect/lua.c) */

int luaopen_signal_core(lua_State *L);

/* Byte buffers Lua holds without interning them as strings. LuaJIT hashes
 * a long string from a few sampled bytes, so the near-identical request
 * bodies of a busy collector all land in one hash chain and each new one is
 * memcmp'd against the others; a buffer skips the string table. Buffers
 * pass anywhere sg_tobytes is used (Redis arguments, core.collect);
 * tostring(buf) and #buf work as for strings. */
#define SG_BUF_MT "signal.buf"
typedef struct {
    size_t len;
    char data[];
} sg_buf;

/* Pushes a new buffer holding a copy of s[0..n). */
sg_buf *sg_buf_push(lua_State *L, const char *s, size_t n);
/* The bytes of the string or buffer at idx, or NULL for any other value. */
const char *sg_tobytes(lua_State *L, int idx, size_t *len);
/* The metatable of request tables: req.body is made from req.body_buf on
 * first use. Leaves it on the stack. */
void sg_push_request_mt(lua_State *L);

/* Opens the standard libraries, puts home/lua first on package.path and
 * makes `require "signal.core"` load the built-in module: every lua_State
 * the engine creates (boot and workers) starts this way. */
void sg_prepare_state(lua_State *L, const char *home);

/* Message handler for lua_pcall: the error with a traceback. */
int sg_traceback(lua_State *L);

/* Writes n in decimal at p (room for 20 digits); returns the digits written.
 * Replies, RESP lengths and Content-Length are formatted with it: printf's
 * format parsing was a visible share of a collector request. */
static inline size_t sg_put_uint(char *p, size_t n)
{
    char tmp[20];
    size_t k = 0;
    do { tmp[k++] = (char)('0' + n % 10); n /= 10; } while (n);
    for (size_t i = 0; i < k; i++) p[i] = tmp[k - 1 - i];
    return k;
}

/* ---- engine/l_redis.c: a core.redis connection for C callers (the
 * collector, engine/collect/) */
struct redisAsyncContext;
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

/* ---- engine/l_crypto.c: OS random bytes (getrandom), handed out from a
 * pool, each byte once; core.random_hex/core.uuid keep one per lua_State,
 * the collector its own. */
#define SG_RAND_POOL 4096
typedef struct {
    size_t used;                       /* bytes handed out; SG_RAND_POOL: empty */
    unsigned char buf[SG_RAND_POOL];
} sg_rand_pool;

static inline void sg_rand_init(sg_rand_pool *p) { p->used = SG_RAND_POOL; }
/* n (<= SG_RAND_POOL) fresh bytes into out: 0, or -1 when getrandom fails */
int sg_random_bytes(sg_rand_pool *p, unsigned char *out, size_t n);
void sg_hex(const unsigned char *in, size_t n, char *out);   /* 2n chars, lower case */
/* a version 4 UUID (36 chars, no NUL): 0, or -1 */
int sg_uuid4(sg_rand_pool *p, char out[36]);

#endif
