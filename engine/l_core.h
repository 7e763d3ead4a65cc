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
void sg_open_event(lua_State *L);   /* adds core.collect (engine/collect/lua.c) */

int luaopen_signal_core(lua_State *L);

/* Opens the standard libraries, puts home/lua first on package.path and
 * makes `require "signal.core"` load the built-in module: every lua_State
 * the engine creates (boot and workers) starts this way. */
void sg_prepare_state(lua_State *L, const char *home);

/* Message handler for lua_pcall: the error with a traceback. */
int sg_traceback(lua_State *L);

#endif
