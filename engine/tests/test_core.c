/*
 * test_core.c — C unit tests for the engine's pure pieces: JSON escaping in
 * the logger, and the signal.core primitives driven through a plain
 * lua_State (sha256 vectors, random ids, gunzip, Redis URL errors).
 * Run under valgrind by `make check-memory`.
 */
#include "../log.h"
#include "../l_core.h"

#include <stdio.h>
#include <string.h>
#include <zlib.h>
#include <lauxlib.h>
#include <lualib.h>

typedef struct { int passed, failed; } results;

#define CHECK(r, cond, name) do { \
    if (cond) { (r)->passed++; } \
    else { (r)->failed++; fprintf(stderr, "FAIL %s (%s:%d)\n", name, __FILE__, __LINE__); } \
} while (0)

static void test_json_escape(results *r)
{
    char buf[64];
    sg_json_escape(buf, sizeof buf, "a\"b\\c\nd\x01");
    CHECK(r, strcmp(buf, "\"a\\\"b\\\\c\\nd\\u0001\"") == 0, "json escape of quotes, backslash, control chars");
    char small[8];
    size_t need = sg_json_escape(small, sizeof small, "0123456789");
    CHECK(r, need == 12 && strlen(small) == 7, "json escape reports the size it needed and truncates safely");
}

/* Evaluates a Lua chunk that returns a string; compares with want. */
static void lua_eq(results *r, lua_State *L, const char *chunk, const char *want, const char *name)
{
    int ok = luaL_dostring(L, chunk) == 0;
    const char *got = ok ? lua_tostring(L, -1) : NULL;
    if (!ok) fprintf(stderr, "  lua error: %s\n", lua_tostring(L, -1));
    CHECK(r, got && strcmp(got, want) == 0, name);
    if (got && strcmp(got, want) != 0) fprintf(stderr, "  got %s, want %s\n", got, want);
    lua_settop(L, 0);
}

static void test_primitives(results *r)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lua_pushcfunction(L, luaopen_signal_core);
    lua_call(L, 0, 1);
    lua_setglobal(L, "core");

    lua_eq(r, L, "return core.sha256_hex('')",
           "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "sha256 of empty string");
    lua_eq(r, L, "return core.sha256_hex('abc')",
           "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "sha256 of abc");
    lua_eq(r, L, "return core.sha256_hex(('a'):rep(1000000))",
           "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0", "sha256 of a million a's");
    lua_eq(r, L, "return core.sha1_hex('abc')", "a9993e364706816aba3e25717850c26c9cd0d89d", "sha1 of abc");
    lua_eq(r, L, "return tostring(#core.random_hex(16))", "32", "random_hex gives 2 chars per byte");
    lua_eq(r, L, "return tostring(core.random_hex(16) ~= core.random_hex(16))", "true", "random ids differ");
    lua_eq(r, L, "return core.uuid():match('^%x+%-%x+%-4%x+%-[89ab]%x+%-%x+$') and 'v4' or 'bad'", "v4",
           "uuid is RFC 4122 version 4");
    lua_eq(r, L, "local a = core.monotonic(); core.sleep(5); return tostring(core.monotonic() > a)", "true",
           "standalone sleep blocks and monotonic advances");
    lua_eq(r, L, "local _, e = core.gunzip('not gzip'); return e", "gzip: body is not valid gzip data",
           "gunzip rejects garbage with a clear error");
    lua_eq(r, L, "local c, e = core.redis.connect('http://x'); return e",
           "redis url must start with redis:// or unix: (got http://x)", "redis url scheme is checked");
    lua_eq(r, L, "local c = core.redis.connect('redis://127.0.0.1:1/0'); local v, e = c:call('PING'); return e:match('^redis unavailable') and 'ok' or e",
           "ok", "redis down gives nil, 'redis unavailable: …'");

    /* gunzip round trip: compress with zlib here, inflate through Lua. */
    const char *text = "{\"type\":\"track\",\"event\":\"Product Viewed\"}";
    unsigned char gz[256];
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
    zs.next_in = (Bytef *)text;
    zs.avail_in = (uInt)strlen(text);
    zs.next_out = gz;
    zs.avail_out = sizeof gz;
    deflate(&zs, Z_FINISH);
    size_t gzlen = sizeof gz - zs.avail_out;
    deflateEnd(&zs);
    lua_getglobal(L, "core");
    lua_getfield(L, -1, "gunzip");
    lua_pushlstring(L, (const char *)gz, gzlen);
    lua_call(L, 1, 1);
    CHECK(r, lua_tostring(L, -1) && strcmp(lua_tostring(L, -1), text) == 0, "gunzip inflates gzip bodies");
    lua_settop(L, 0);
    lua_getglobal(L, "core");
    lua_getfield(L, -1, "gunzip");
    lua_pushlstring(L, (const char *)gz, gzlen);
    lua_pushinteger(L, 10);
    lua_call(L, 2, 2);
    CHECK(r, lua_isnil(L, -2) && strcmp(lua_tostring(L, -1), "too large") == 0, "gunzip enforces max_bytes");
    lua_close(L);
}

int main(void)
{
    results r = { 0, 0 };
    test_json_escape(&r);
    test_primitives(&r);
    printf("%d passed, %d failed\n", r.passed, r.failed);
    return r.failed ? 1 : 0;
}
