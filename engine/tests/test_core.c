/*
 * test_core.c — C unit tests for the engine's pure pieces: JSON escaping in
 * the logger, and the signal.core primitives driven through a plain
 * lua_State (sha256 vectors, random ids, gunzip, Redis URL errors, and
 * core.http.request freeing what it took when an argument is refused).
 * Run under valgrind by `make check-memory`; the HTTP parser has its own
 * binary (test_http_parse.c).
 */
#include "../log.h"
#include "../l_core.h"

#include <malloc.h>
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

/* A plain lua_State with signal.core as the global `core`. */
static lua_State *core_state(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lua_pushcfunction(L, luaopen_signal_core);
    lua_call(L, 0, 1);
    lua_setglobal(L, "core");
    return L;
}

/* Bytes the C heap holds (LuaJIT's own allocator is not in it). */
static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

/* core.http.request raises on a programmer's mistake. A raise is a longjmp:
 * whatever the call had allocated before it would leak, so each case is
 * raised many times and the C heap must not grow (valgrind, under
 * `make check-memory`, reports any leak too). */
static void test_http_request_bad_args(results *r)
{
    static const char *const cases[][2] = {
        { "core.http.request{ url = 'http://127.0.0.1:1/', method = {} }", "method must be a string" },
        { "core.http.request{ url = 'http://127.0.0.1:1/', body = 'x', headers = { ['X-A'] = 'a\\r\\nb' } }",
          "header X-A contains CR, LF or ':'" },
        { "core.http.request{ url = 'http://127.0.0.1:1/', headers = { ['X:A'] = 'b' } }",
          "header X:A contains CR, LF or ':'" },
        { "core.http.request{ method = 'GET' }", "url is required" },
        { "core.http.request('http://127.0.0.1:1/')", "table expected" },
    };
    lua_State *L = core_state();
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char chunk[512];
        snprintf(chunk, sizeof chunk,
                 "local function call() %s end\n"
                 "local ok, err = pcall(call)\n"
                 "if ok or not tostring(err):find(..., 1, true) then return tostring(err) end\n"
                 "for _ = 1, 500 do pcall(call) end\n"
                 "collectgarbage()\n"
                 "return 'raised'", cases[i][0]);
        char name[160];
        snprintf(name, sizeof name, "http.request raises \"%s\" and frees what it took", cases[i][1]);
        size_t before = heap_in_use();
        int ok = luaL_loadstring(L, chunk) == 0;
        lua_pushstring(L, cases[i][1]);
        ok = ok && lua_pcall(L, 1, 1, 0) == 0;
        const char *got = lua_tostring(L, -1);
        size_t grown = heap_in_use() - before;
        /* one leaked request is over a kilobyte (the op and its easy handle) */
        CHECK(r, ok && got && strcmp(got, "raised") == 0 && (ssize_t)grown < 64 * 1024, name);
        if (!ok || !got || strcmp(got, "raised") != 0) fprintf(stderr, "  got %s\n", got ? got : "(nil)");
        else if ((ssize_t)grown >= 64 * 1024) fprintf(stderr, "  the C heap grew by %zu bytes\n", grown);
        lua_settop(L, 0);
    }
    lua_close(L);
}

static void test_primitives(results *r)
{
    lua_State *L = core_state();

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
    lua_eq(r, L, "local res, e = core.http.request{ url = 'http://127.0.0.1:1/', method = 'POST', body = 'x', "
                 "headers = { 'X-A: 1', ['X-B'] = 2, ['X-C'] = {} } }; "
                 "return e and e:match('^could not connect to 127.0.0.1:1') and 'refused' or tostring(e)", "refused",
           "http.request skips header entries that are not name = value, and reports a refused connection");
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
    test_http_request_bad_args(&r);
    printf("%d passed, %d failed\n", r.passed, r.failed);
    return r.failed ? 1 : 0;
}
