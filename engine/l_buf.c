/*
 * l_buf.c — signal.buf, the byte buffers of l_buf.h, and the metatable of
 * request tables (req.body made from req.body_buf on first use).
 *
 * A buffer is a userdata holding its length and bytes; it has no methods
 * beyond # and tostring, because its only job is to carry bytes from C to
 * C (a request body to a Redis command or to core.event_json) without
 * passing through LuaJIT's string table. core.buffer(s) makes one from Lua
 * for specs and tools.
 */
#include "l_buf.h"
#include "l_core.h"

#include <string.h>
#include <lauxlib.h>

sg_buf *sg_buf_push(lua_State *L, const char *s, size_t n)
{
    sg_buf *b = lua_newuserdata(L, sizeof *b + n);
    b->len = n;
    if (n) memcpy(b->data, s, n);
    luaL_getmetatable(L, SG_BUF_MT);
    lua_setmetatable(L, -2);
    return b;
}

const char *sg_tobytes(lua_State *L, int idx, size_t *len)
{
    int t = lua_type(L, idx);
    if (t == LUA_TSTRING || t == LUA_TNUMBER) return lua_tolstring(L, idx, len);
    if (t != LUA_TUSERDATA || !lua_getmetatable(L, idx)) return NULL;
    luaL_getmetatable(L, SG_BUF_MT);
    int is_buf = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (!is_buf) return NULL;
    sg_buf *b = lua_touserdata(L, idx);
    *len = b->len;
    return b->data;
}

static int buf_len(lua_State *L)
{
    sg_buf *b = luaL_checkudata(L, 1, SG_BUF_MT);
    lua_pushinteger(L, (lua_Integer)b->len);
    return 1;
}

static int buf_tostring(lua_State *L)
{
    sg_buf *b = luaL_checkudata(L, 1, SG_BUF_MT);
    lua_pushlstring(L, b->data, b->len);
    return 1;
}

/* core.buffer(s) → a buffer holding s (specs and tools; the server makes
 * request bodies into buffers itself). */
static int l_buffer(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    sg_buf_push(L, s, n);
    return 1;
}

/* __index of request tables: only `body`, made once from body_buf. */
static int request_index(lua_State *L)
{
    size_t n;
    const char *k = lua_tolstring(L, 2, &n);
    if (!k || n != 4 || memcmp(k, "body", 4) != 0) return 0;
    lua_getfield(L, 1, "body_buf");
    size_t len = 0;
    const char *s = sg_tobytes(L, -1, &len);
    if (s) lua_pushlstring(L, s, len);
    else lua_pushliteral(L, "");
    lua_pushvalue(L, -1);
    lua_setfield(L, 1, "body");
    return 1;
}

void sg_push_request_mt(lua_State *L)
{
    if (luaL_newmetatable(L, "signal.request")) {
        lua_pushcfunction(L, request_index);
        lua_setfield(L, -2, "__index");
    }
}

void sg_open_buf(lua_State *L)
{
    if (luaL_newmetatable(L, SG_BUF_MT)) {
        lua_pushcfunction(L, buf_len);
        lua_setfield(L, -2, "__len");
        lua_pushcfunction(L, buf_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushliteral(L, "signal.buf");
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
    sg_push_request_mt(L);
    lua_pop(L, 1);
    lua_pushcfunction(L, l_buffer);
    lua_setfield(L, -2, "buffer");
}
