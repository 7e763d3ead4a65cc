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

#endif
