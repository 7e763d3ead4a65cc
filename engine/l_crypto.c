/*
 * l_crypto.c — hashing and secure random ids for Lua (and, through
 * sg_random_bytes/sg_uuid4/sg_hex in l_crypto.h, for the collector, engine/collect/).
 *
 * sha256_hex backs linking-key hashing (email_sha256, phone_sha256) and the
 * cache keys that must never hold PII in clear; hmac_sha256_hex signs
 * webhook deliveries so receivers can verify them; sha1_hex only names Redis
 * scripts for EVALSHA; random ids back message ids
 * and the _dfdid device cookie, so they come from the OS CSPRNG
 * (getrandom), not rand(). The collector mints a cookie on every first
 * visit, and one getrandom() per id (or OpenSSL's RAND_bytes, slower still
 * per call) was a visible share of a request: each lua_State keeps a 4 KB
 * pool of OS random bytes (an upvalue, so no C global; the collector keeps its
 * own) and hands every byte out once.
 */
#include "l_crypto.h"
#include "l_core.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>
#include <sys/random.h>
#include <lauxlib.h>

static const char HEX[] = "0123456789abcdef";

void sg_hex(const unsigned char *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = HEX[in[i] >> 4];
        out[2 * i + 1] = HEX[in[i] & 15];
    }
}

static int digest_hex(lua_State *L, const EVP_MD *type, const char *name)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(s, len, md, &mdlen, type, NULL))
        return luaL_error(L, "%s: OpenSSL digest failed", name);
    char hex[2 * EVP_MAX_MD_SIZE];
    sg_hex(md, mdlen, hex);
    lua_pushlstring(L, hex, 2 * mdlen);
    return 1;
}

static int l_sha256_hex(lua_State *L) { return digest_hex(L, EVP_sha256(), "sha256"); }

/* core.hmac_sha256_hex(key, data) → the HMAC-SHA256 of data, in hex */
static int l_hmac_sha256_hex(lua_State *L)
{
    size_t klen, dlen;
    const char *key = luaL_checklstring(L, 1, &klen);
    const char *data = luaL_checklstring(L, 2, &dlen);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)data, dlen, md, &mdlen))
        return luaL_error(L, "hmac_sha256: OpenSSL HMAC failed");
    char hex[2 * EVP_MAX_MD_SIZE];
    sg_hex(md, mdlen, hex);
    lua_pushlstring(L, hex, 2 * mdlen);
    return 1;
}

/* SHA-1 only names Redis scripts (EVALSHA); never use it for security. */
static int l_sha1_hex(lua_State *L) { return digest_hex(L, EVP_sha1(), "sha1"); }

static int getrandom_all(unsigned char *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(buf + got, n - got, 0);
        if (r < 0) return -1;
        got += (size_t)r;
    }
    return 0;
}

int sg_random_bytes(sg_rand_pool *p, unsigned char *out, size_t n)
{
    if (SG_RAND_POOL - p->used < n) {
        if (getrandom_all(p->buf, SG_RAND_POOL) != 0) return -1;
        p->used = 0;
    }
    memcpy(out, p->buf + p->used, n);
    memset(p->buf + p->used, 0, n);    /* handed out: not kept around */
    p->used += n;
    return 0;
}

int sg_uuid4(sg_rand_pool *p, char out[36])
{
    unsigned char b[16];
    char h[32];
    if (sg_random_bytes(p, b, sizeof b) != 0) return -1;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);   /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);   /* RFC 4122 variant */
    sg_hex(b, 16, h);
    memcpy(out, h, 8); out[8] = '-';
    memcpy(out + 9, h + 8, 4); out[13] = '-';
    memcpy(out + 14, h + 12, 4); out[18] = '-';
    memcpy(out + 19, h + 16, 4); out[23] = '-';
    memcpy(out + 24, h + 20, 12);
    return 0;
}

/* the pool in upvalue 1 */
static sg_rand_pool *pool_of(lua_State *L) { return lua_touserdata(L, lua_upvalueindex(1)); }

static int l_random_hex(lua_State *L)
{
    lua_Integer n = luaL_optinteger(L, 1, 16);
    luaL_argcheck(L, n > 0 && n <= 1024, 1, "byte count must be 1..1024");
    unsigned char buf[1024];
    char hex[2048];
    if (sg_random_bytes(pool_of(L), buf, (size_t)n) != 0)
        return luaL_error(L, "random: getrandom failed");
    sg_hex(buf, (size_t)n, hex);
    lua_pushlstring(L, hex, 2 * (size_t)n);
    return 1;
}

static int l_uuid(lua_State *L)
{
    char out[36];
    if (sg_uuid4(pool_of(L), out) != 0)
        return luaL_error(L, "random: getrandom failed");
    lua_pushlstring(L, out, 36);
    return 1;
}

void sg_open_crypto(lua_State *L)
{
    static const luaL_Reg fns[] = {
        { "sha256_hex", l_sha256_hex },
        { "sha1_hex", l_sha1_hex },
        { "hmac_sha256_hex", l_hmac_sha256_hex },
        { NULL, NULL },
    };
    luaL_register(L, NULL, fns);
    /* One pool per lua_State, shared by both closures; empty until first use. */
    sg_rand_pool *p = lua_newuserdata(L, sizeof *p);
    sg_rand_init(p);
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, l_random_hex, 1);
    lua_setfield(L, -3, "random_hex");
    lua_pushcclosure(L, l_uuid, 1);
    lua_setfield(L, -2, "uuid");
}
