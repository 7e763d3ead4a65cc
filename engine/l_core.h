/*
 * l_core.h — the signal.core Lua module: how its parts are assembled.
 *
 * luaopen_signal_core (l_core.c) makes the module table and each l_*.c file
 * adds one group of primitives to it (engine/API.md lists them). C APIs
 * that some of those files also give C callers have headers of their own
 * beside their .c: l_buf.h (Lua-held byte buffers), l_redis.h (a core.redis
 * connection for C), l_crypto.h (the random pool); bytes.h formats numbers.
 */
#ifndef SIGNAL_L_CORE_H
#define SIGNAL_L_CORE_H

#include <lua.h>

/* Each adds its functions to the table on top of the stack. */
void sg_open_buf(lua_State *L);     /* adds core.buffer; registers signal.buf */
void sg_open_crypto(lua_State *L);
void sg_open_http(lua_State *L);    /* adds core.http */
void sg_open_redis(lua_State *L);   /* adds core.redis */
void sg_open_event(lua_State *L);   /* adds core.event_json (collector fast path) */

int luaopen_signal_core(lua_State *L);

/* Opens the standard libraries, puts home/lua first on package.path and
 * makes `require "signal.core"` load the built-in module: every lua_State
 * the engine creates (boot and workers) starts this way. */
void sg_prepare_state(lua_State *L, const char *home);

/* Message handler for lua_pcall: the error with a traceback. */
int sg_traceback(lua_State *L);

/* Temporary: engine/ingest.c and engine/l_event.c include only this header
 * and still use what moved to the headers below. Remove this block once
 * they include bytes.h, l_buf.h, l_crypto.h and l_redis.h themselves. */
#include "bytes.h"
#include "l_buf.h"
#include "l_crypto.h"
#include "l_redis.h"

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
