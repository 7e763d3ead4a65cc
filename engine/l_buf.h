/*
 * l_buf.h — byte buffers Lua holds without interning them as strings
 * (engine/l_buf.c), and the request tables whose body is one.
 *
 * LuaJIT hashes a long string from a few sampled bytes, so the
 * near-identical request bodies of a busy collector all land in one hash
 * chain and each new one is memcmp'd against the others; a buffer skips the
 * string table. The server hands every request body to Lua as a buffer
 * (req.body_buf); buffers pass anywhere sg_tobytes is used (Redis arguments,
 * core.event_json); tostring(buf) and #buf work as for strings.
 */
#ifndef SIGNAL_L_BUF_H
#define SIGNAL_L_BUF_H

#include <stddef.h>
#include <lua.h>

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

#endif
