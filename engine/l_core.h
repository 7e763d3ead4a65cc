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
void sg_open_event(lua_State *L);   /* adds core.event_json (collector fast path) */

int luaopen_signal_core(lua_State *L);

/* Byte buffers Lua holds without interning them as strings. LuaJIT hashes
 * a long string from a few sampled bytes, so the near-identical request
 * bodies of a busy collector all land in one hash chain and each new one is
 * memcmp'd against the others; a buffer skips the string table. Buffers
 * pass anywhere sg_tobytes is used (Redis arguments, core.event_json);
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
 * collector's C lane) */
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
 * the collector's C lane its own. */
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

/* ---- engine/l_event.c: the collector's single-event fast path in C ----
 * core.event_json's conversion without a lua_State, for engine/ingest.c (the
 * collector's C lane); core.event_json is a wrapper over it. Strings are
 * (pointer, length) pairs, not NUL-terminated. */
typedef struct {
    char *buf;
    size_t cap;                 /* grown with realloc; the owner frees buf */
} sg_scratch;                   /* zero it before first use */

typedef struct {
    const char *pipeline_key; size_t pipeline_key_len;   /* NULL: none (header key); "" too */
    const char *basic_key;    size_t basic_key_len;      /* NULL: none; "" too */
    const char *canonical_id; size_t canonical_id_len;   /* NULL: none; "" overrides the body's */
    const char *ip;           size_t ip_len;             /* NULL: none */
    const char *user_agent;   size_t user_agent_len;     /* NULL: none */
    const char *type_hint;    size_t type_hint_len;      /* NULL: none */
    int server_side;
    double received_at;                                  /* seconds since the epoch */
    /* makes a fresh message id (36-char uuid) into out when the body has
     * none; returns 0, or -1 (then the call declines). NULL: decline. */
    int (*new_id)(void *ud, char out[36]);
    void *new_id_ud;
} sg_event_ctx;

typedef struct {
    const char *ev;  size_t ev_len;        /* canonical event JSON (in the scratch) */
    const char *in;  size_t in_len;        /* input minus credentials (in the scratch), or NULL: store the body as is */
    const char *message_id; size_t message_id_len;   /* points into the body or id_buf */
    int dedupe;                            /* the client chose the id */
    const char *key; size_t key_len;       /* the pipeline key used: into the body or ctx */
    int key_from_ctx;                      /* 1: ctx->pipeline_key or ->basic_key (compare the
                                            * pointer); 0: the body's pipelineKey/writeKey, taken
                                            * only when escape-free, so its bytes are the key */
    char id_buf[36];                       /* new_id's output; message_id may point here, so
                                            * a copy of *res must not use message_id */
} sg_event_result;

/* Converts one plain single event. Returns 1 and fills *res (pointers valid
 * until the next call with the same scratch, and while body lives), or 0:
 * declined — the caller must take the Lua path. Never allocates except
 * growing sc. body must not live in sc. */
int sg_event_convert(sg_scratch *sc, const char *body, size_t len,
                     const sg_event_ctx *ctx, sg_event_result *res);

#endif
