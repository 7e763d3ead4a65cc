/*
 * l_event.c — core.event_json: the collector's single-event fast path.
 *
 * Per request the collector spent most of its time in lua-cjson decode +
 * signal.event.normalize + cjson encode (~20 µs for a 1.1 KB datafly.js
 * event), building Lua tables only to serialise them again. event_json scans
 * the body once and writes the canonical event JSON directly:
 *
 *   ev_json, message_id, dedupe, key, in_json = core.event_json(body, ctx)
 *
 * with the result `cjson.encode(event.normalize(cjson.decode(body), ctx))`
 * would have (equal after decoding; key order and number spelling differ).
 * It handles only the common shapes: a track/page/screen message without
 * traits, string ids, plain keys. Anything else — invalid JSON, an identify,
 * a number id, an escape where a value must be compared, a duplicate key, a
 * number cjson would not round-trip — returns a single nil and the caller
 * runs the Lua path, which also writes the error messages. So the rule this
 * file keeps is one-sided: never accept what the Lua path rejects, and when
 * accepting, produce what it produces. Every rule below cites the Lua it
 * mirrors (lua/signal/event.lua, lua/signal/collector.lua).
 *
 * The conversion itself is plain C, sg_event_convert() (declared in
 * l_core.h), so that engine/ingest.c, the collector's C lane, can run it
 * without any lua_State; core.event_json is a thin wrapper over it that
 * reads ctx, supplies core.uuid as the id maker and pushes the results.
 * sg_event_convert declining (0) is core.event_json's nil.
 *
 * Values that normalize does not convert (properties, context.consent, …)
 * are validated and copied as raw byte ranges: JSON-equal to cjson's
 * re-encoding, without building them.
 *
 * Memory: the output is written into a caller-owned scratch buffer
 * (sg_scratch), grown as needed and reused from call to call. core.event_json
 * keeps one per lua_State (an upvalue userdata, freed by its __gc), so a call
 * allocates nothing but the strings it returns, and a Lua error (core.uuid
 * failing) cannot leak it.
 */
#include "l_core.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>

/* collector.lua M.MAX_DEPTH: the decoder's decode_max_depth. */
#define MAX_DEPTH 32
/* Bodies over this go the Lua way: the collector refuses messages over
 * 32 KB anyway, and this bounds the scratch buffer. */
#define MAX_FAST_BODY (64 * 1024)
/* Per converted object (top level, context, context.page …): more members or
 * longer keys than real events have → Lua path. Bounds the stack tables. */
#define MAX_KEYS 64
#define MAX_KEY_LEN 128
#define KEYSET_CHARS 2048

/* ---- output buffer ------------------------------------------------------- */

/* sg_scratch (l_core.h): the buffer the output is written into. */
typedef struct {
    sg_scratch *sc;
    size_t n;
    int bad;        /* allocation failed: the result is dropped (→ nil) */
} out_t;

static int scratch_gc(lua_State *L)
{
    sg_scratch *sc = lua_touserdata(L, 1);
    free(sc->buf);
    sc->buf = NULL;
    sc->cap = 0;
    return 0;
}

static void out_reserve(out_t *o, size_t need)
{
    if (o->bad || need <= o->sc->cap) return;
    size_t cap = o->sc->cap ? o->sc->cap : 4096;
    while (cap < need) cap *= 2;
    char *nb = realloc(o->sc->buf, cap);
    if (!nb) { o->bad = 1; return; }
    o->sc->buf = nb;
    o->sc->cap = cap;
}

static inline void put(out_t *o, const void *p, size_t n)
{
    if (o->n + n > o->sc->cap) {
        out_reserve(o, o->n + n);
        if (o->bad) return;
    }
    memcpy(o->sc->buf + o->n, p, n);
    o->n += n;
}

#define PUTS(o, lit) put((o), (lit), sizeof(lit) - 1)

static inline void putc1(out_t *o, char c) { put(o, &c, 1); }

/* `"name":` — names come from the body without escapes, or are constants */
static void put_key(out_t *o, int *first, const char *name, size_t n)
{
    if (o->n + n + 4 > o->sc->cap) {
        out_reserve(o, o->n + n + 4);
        if (o->bad) return;
    }
    char *d = o->sc->buf + o->n;
    if (!*first) *d++ = ',';
    *first = 0;
    *d++ = '"';
    memcpy(d, name, n);
    d += n;
    *d++ = '"';
    *d++ = ':';
    o->n = (size_t)(d - o->sc->buf);
}

/* A ctx string (a header, a cookie) as a JSON string. Bytes >= 0x80 are
 * copied as they are, as cjson does. */
static void put_json_string(out_t *o, const char *s, size_t n)
{
    static const char HEX[] = "0123456789abcdef";
    putc1(o, '"');
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        put(o, s + run, i - run);
        run = i + 1;
        if (c == '"') PUTS(o, "\\\"");
        else if (c == '\\') PUTS(o, "\\\\");
        else {
            char u[6] = { '\\', 'u', '0', '0', HEX[c >> 4], HEX[c & 15] };
            put(o, u, 6);
        }
    }
    put(o, s + run, n - run);
    putc1(o, '"');
}

/* ---- JSON scanning (lua-cjson's rules, strict side) ------------------------ */

/* Bytes a string scan must stop at: '"', '\\' and the control characters
 * (cjson takes raw control characters; we hand those to it). */
static const unsigned char STR_STOP[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
};

#define IS_DIGIT(c) ((unsigned char)((c) - '0') < 10)
#define IS_UPPER(c) ((unsigned char)((c) - 'A') < 26)
#define IS_LOWER(c) ((unsigned char)((c) - 'a') < 26)

/* JSON whitespace, the same four bytes cjson skips */
static inline const char *ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
    return p;
}

static int hex4(const char *p, const char *e)
{
    if (e - p < 4) return -1;
    int v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = (unsigned char)p[i];
        int d;
        if (IS_DIGIT(c)) d = c - '0';
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') d = (c | 0x20) - 'a' + 10;
        else return -1;
        v = v * 16 + d;
    }
    return v;
}

/* p just after the opening quote → the closing quote, or NULL for what
 * cjson refuses (bad escape, lone surrogate, end of input) and for raw
 * control characters. *esc is set when the string holds any escape. */
static const char *scan_string(const char *p, const char *e, int *esc)
{
    for (;;) {
        /* 8 bytes at a time while none is '"', '\\' or < 0x20 (the classic
         * has-zero-byte / has-less-than word tricks): strings are most of a
         * body's bytes */
        while (e - p >= 8) {
            uint64_t w;
            memcpy(&w, p, 8);
            const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
            uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
            uint64_t hit = (((q - ones) & ~q) | ((b - ones) & ~b) | (w - ones * 0x20)) & ~w & high;
            if (hit) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
                /* the lowest flagged byte is always a real hit (borrows
                 * only run upwards): jump straight to it */
                p += __builtin_ctzll(hit) >> 3;
#endif
                break;
            }
            p += 8;
        }
        while (p < e && !STR_STOP[(unsigned char)*p]) p++;
        if (p >= e) return NULL;
        if (*p == '"') return p;
        if (*p != '\\') return NULL;            /* control character */
        *esc = 1;
        if (e - p < 2) return NULL;
        switch (p[1]) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            p += 2;
            break;
        case 'u': {
            /* cjson's json_append_unicode_escape: a high surrogate must be
             * followed by an escaped low one; a low one alone is an error */
            int cp = hex4(p + 2, e);
            if (cp < 0) return NULL;
            if ((cp & 0xF800) == 0xD800) {
                if (cp & 0x400) return NULL;
                if (e - p < 12 || p[6] != '\\' || p[7] != 'u') return NULL;
                int lo = hex4(p + 8, e);
                if (lo < 0 || (lo & 0xFC00) != 0xDC00) return NULL;
                p += 12;
            } else {
                p += 6;
            }
            break;
        }
        default:
            return NULL;
        }
    }
}

/* A strict RFC 8259 number → its end, or NULL. cjson takes more ("1.",
 * "-.5"), all of which go the Lua way. NULL too for a number that decodes to
 * ±inf (1e999): cjson decodes it but cannot encode it, so the Lua path
 * rejects the message. Decided from the decimal exponent of the leading
 * digit (no strtod: its result depends on the locale); 1e308 … 1.79e308 are
 * finite but sent the Lua way too, for simplicity. */
static const char *scan_number(const char *p, const char *e)
{
    const char *q = p;
    if (q < e && *q == '-') q++;
    if (q >= e) return NULL;
    const char *int0 = q;
    long lead = 0;          /* decimal exponent of the first non-zero digit */
    int zero = 1;
    if (*q == '0') {
        q++;
    } else if (*q >= '1' && *q <= '9') {
        while (q < e && IS_DIGIT(*q)) q++;
        lead = (long)(q - int0) - 1;
        zero = 0;
    } else {
        return NULL;
    }
    if (q < e && *q == '.') {
        const char *f0 = ++q;
        while (q < e && IS_DIGIT(*q)) {
            if (zero && *q != '0') { zero = 0; lead = -(long)(q - f0) - 1; }
            q++;
        }
        if (q == f0) return NULL;
    }
    long ex = 0;
    if (q < e && (*q == 'e' || *q == 'E')) {
        q++;
        int neg = 0;
        if (q < e && (*q == '+' || *q == '-')) { neg = *q == '-'; q++; }
        const char *x0 = q;
        while (q < e && IS_DIGIT(*q)) {
            if (ex < 1000000) ex = ex * 10 + (*q - '0');
            q++;
        }
        if (q == x0) return NULL;
        if (neg) ex = -ex;
    }
    if (!zero && lead + ex >= 308) return NULL;
    return q;
}

static const char *scan_literal(const char *p, const char *e, const char *lit, size_t n)
{
    if ((size_t)(e - p) < n || memcmp(p, lit, n) != 0) return NULL;
    return p + n;
}

/* Every object and array walk below shares these two steps. */

/* After a member's key: the ':' and the value's first byte, or NULL. */
static const char *member_value(const char *p, const char *e)
{
    p = ws(p, e);
    if (p >= e || *p != ':') return NULL;
    return ws(p + 1, e);
}

/* After a value inside a container closed by `close`: a ',' → the next
 * element's start (*more = 1); `close` → just past it (*more = 0); else NULL. */
static const char *next_element(const char *p, const char *e, char close, int *more)
{
    p = ws(p, e);
    if (p >= e) return NULL;
    if (*p == close) { *more = 0; return p + 1; }
    if (*p != ',') return NULL;
    *more = 1;
    return ws(p + 1, e);
}

/* Validates one value inside a container at `depth` (the body's object is
 * depth 1) → its end, or NULL. A container nested deeper than MAX_DEPTH is
 * refused, as decode_max_depth(32) refuses it. */
static const char *skip_value(const char *p, const char *e, int depth)
{
    if (p >= e) return NULL;
    int esc = 0;
    switch (*p) {
    case '"':
        p = scan_string(p + 1, e, &esc);
        return p ? p + 1 : NULL;
    case '{':
        if (depth + 1 > MAX_DEPTH) return NULL;
        p = ws(p + 1, e);
        if (p < e && *p == '}') return p + 1;
        for (int more = 1; more; ) {
            if (p >= e || *p != '"') return NULL;
            p = scan_string(p + 1, e, &esc);
            if (!p || !(p = member_value(p + 1, e))) return NULL;
            p = skip_value(p, e, depth + 1);
            if (!p || !(p = next_element(p, e, '}', &more))) return NULL;
        }
        return p;
    case '[':
        if (depth + 1 > MAX_DEPTH) return NULL;
        p = ws(p + 1, e);
        if (p < e && *p == ']') return p + 1;
        for (int more = 1; more; ) {
            p = skip_value(p, e, depth + 1);
            if (!p || !(p = next_element(p, e, ']', &more))) return NULL;
        }
        return p;
    case 't': return scan_literal(p, e, "true", 4);
    case 'f': return scan_literal(p, e, "false", 5);
    case 'n': return scan_literal(p, e, "null", 4);
    default: return scan_number(p, e);
    }
}

static inline int is_null(const char *p, const char *e)
{
    return e - p >= 4 && memcmp(p, "null", 4) == 0;
}

/* ---- keys ---------------------------------------------------------------- */

/* event.lua snake(): gsub("([%l%d])(%u)", "%1_%2"), then
 * lower(gsub(r, "(%u)(%u%l)", "%1_%2")). Neither pattern's matches can
 * overlap (a match ends in an upper-case letter resp. a lower-case one that
 * cannot start the next), so each is a local rule per position. LuaJIT's
 * classes and lower() are ASCII-only whatever the locale: bytes >= 0x80 are
 * neither case, as here. Each pass inserts at most one '_' per upper-case
 * letter, and never twice at one spot: out needs 2n bytes. */
static size_t snake(const char *s, size_t n, char *out)
{
    size_t i;
    for (i = 0; i < n && !IS_UPPER(s[i]); i++) {}
    if (i == n) {                       /* nothing to convert (the common case) */
        memcpy(out, s, n);
        return n;
    }
    char tmp[2 * MAX_KEY_LEN];
    size_t t = 0, m = 0;
    for (i = 0; i < n; i++) {
        tmp[t++] = s[i];
        if (i + 1 < n && (IS_LOWER(s[i]) || IS_DIGIT(s[i])) && IS_UPPER(s[i + 1])) tmp[t++] = '_';
    }
    for (i = 0; i < t; i++) {
        char c = tmp[i];
        out[m++] = IS_UPPER(c) ? (char)(c + 32) : c;
        if (i + 2 < t && IS_UPPER(c) && IS_UPPER(tmp[i + 1]) && IS_LOWER(tmp[i + 2])) out[m++] = '_';
    }
    return m;
}

/* The converted names of one object, to refuse duplicates: a repeated key
 * (cjson keeps the last) and two spellings of one name (userId + user_id:
 * normalize's put() lets camelCase win) both go the Lua way. */
typedef struct {
    int n;
    size_t used;
    uint32_t hash[MAX_KEYS];
    uint16_t off[MAX_KEYS], len[MAX_KEYS];
    char chars[KEYSET_CHARS];
} keyset_t;

/* Reads the key at p (the opening quote), converts it and remembers it.
 * → just after the closing quote, or NULL: escapes, over-long, a duplicate,
 * too many keys. Sets name, nlen (the converted name) and raw, rlen (the key
 * as sent). */
static const char *read_key(keyset_t *ks, const char *p, const char *e,
                            const char **raw, size_t *rlen, const char **name, size_t *nlen)
{
    if (p >= e || *p != '"') return NULL;
    int esc = 0;
    const char *k = p + 1;
    const char *q = scan_string(k, e, &esc);
    if (!q || esc) return NULL;
    size_t kn = (size_t)(q - k);
    if (kn > MAX_KEY_LEN || ks->n >= MAX_KEYS || ks->used + 2 * kn > KEYSET_CHARS) return NULL;
    char *dst = ks->chars + ks->used;
    size_t sn = snake(k, kn, dst);
    /* a cheap fingerprint (length, first, middle, last byte) screens the
     * comparisons; memcmp decides */
    uint32_t h = sn ? ((uint32_t)sn << 24 | (uint32_t)(unsigned char)dst[0] << 16 |
                       (uint32_t)(unsigned char)dst[sn / 2] << 8 | (unsigned char)dst[sn - 1]) : 0;
    for (int i = 0; i < ks->n; i++) {
        if (ks->hash[i] == h && ks->len[i] == sn && memcmp(ks->chars + ks->off[i], dst, sn) == 0)
            return NULL;
    }
    ks->hash[ks->n] = h;
    ks->off[ks->n] = (uint16_t)ks->used;
    ks->len[ks->n] = (uint16_t)sn;
    ks->n++;
    ks->used += sn;
    *raw = k;
    *rlen = kn;
    *name = dst;
    *nlen = sn;
    return q + 1;
}

/* s[0..n) equals the string literal lit (its length known at compile time) */
#define NAME_IS(s, n, lit) ((n) == sizeof(lit) - 1 && memcmp((s), (lit), sizeof(lit) - 1) == 0)

typedef struct {
    const char *name;
    size_t len;
    int id;
} name_t;

#define N(lit, id) { lit, sizeof(lit) - 1, id }

static int lookup(const name_t *t, size_t count, const char *s, size_t n)
{
    for (size_t i = 0; i < count; i++)
        if (t[i].len == n && t[i].name[0] == s[0] && memcmp(t[i].name, s, n) == 0) return t[i].id;
    return 0;
}

/* top-level names with a rule of their own (after conversion) */
enum {
    F_OTHER = 0, F_CONTEXT, F_TYPE, F_EVENT, F_NAME, F_USER_ID, F_ANONYMOUS_ID, F_GROUP_ID,
    F_PREVIOUS_ID, F_CANONICAL_ID, F_MESSAGE_ID, F_TIMESTAMP, F_SENT_AT, F_ORIGINAL_TIMESTAMP,
    F_PROPERTIES, F_DROP, F_REFUSE,
};

static const name_t TOP_FIELDS[] = {
    N("context", F_CONTEXT), N("type", F_TYPE), N("event", F_EVENT), N("name", F_NAME),
    N("user_id", F_USER_ID), N("anonymous_id", F_ANONYMOUS_ID), N("group_id", F_GROUP_ID),
    N("previous_id", F_PREVIOUS_ID), N("canonical_id", F_CANONICAL_ID),
    N("message_id", F_MESSAGE_ID), N("timestamp", F_TIMESTAMP), N("sent_at", F_SENT_AT),
    N("original_timestamp", F_ORIGINAL_TIMESTAMP), N("properties", F_PROPERTIES),
    /* event.lua DROP: never taken from the message */
    N("write_key", F_DROP), N("pipeline_key", F_DROP), N("partner_attrs", F_DROP),
    N("identity", F_DROP), N("received_at", F_DROP),
    /* traits: identity.linking_keys and the identify merge need the Lua
     * path. batch: the collector's /v1/events takes the body for a batch. */
    N("traits", F_REFUSE), N("batch", F_REFUSE),
};

/* context names with a rule of their own (after conversion) */
enum { C_OTHER, C_NESTED, C_TRAITS, C_IP, C_USER_AGENT };

static const name_t CONTEXT_FIELDS[] = {
    /* event.lua CONTEXT_NESTED: context objects whose keys are converted too */
    N("page", C_NESTED), N("campaign", C_NESTED), N("screen", C_NESTED), N("library", C_NESTED),
    N("session", C_NESTED), N("device", C_NESTED), N("os", C_NESTED), N("geo", C_NESTED),
    N("vendor_ids", C_NESTED),
    N("traits", C_TRAITS), N("ip", C_IP), N("user_agent", C_USER_AGENT),
};

/* ---- time ---------------------------------------------------------------- */

static int dig2(const char *s) { return (s[0] - '0') * 10 + (s[1] - '0'); }

static int all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) if (!IS_DIGIT(s[i])) return 0;
    return 1;
}

/* event.lua parse_iso8601() ~= nil, on the raw (escape-free) bytes:
 * YYYY-MM-DDThh:mm:ss[.1-9 digits](Z|±hh:mm), with its range checks
 * (seconds up to 60, Feb 29 only in leap years, offsets up to 23:59). */
static int valid_iso8601(const char *s, size_t n)
{
    static const int MDAYS[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    if (n < 20) return 0;
    if (!all_digits(s, 4) || s[4] != '-' || !all_digits(s + 5, 2) || s[7] != '-' ||
        !all_digits(s + 8, 2) || s[10] != 'T' || !all_digits(s + 11, 2) || s[13] != ':' ||
        !all_digits(s + 14, 2) || s[16] != ':' || !all_digits(s + 17, 2))
        return 0;
    int y = dig2(s) * 100 + dig2(s + 2), mo = dig2(s + 5), d = dig2(s + 8);
    int h = dig2(s + 11), mi = dig2(s + 14), se = dig2(s + 17);
    if (mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || se > 60) return 0;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > MDAYS[mo - 1] && !(mo == 2 && d == 29 && leap)) return 0;
    size_t i = 19;
    if (s[i] == '.') {
        size_t j = ++i;
        while (i < n && IS_DIGIT(s[i])) i++;
        if (i == j || i - j > 9) return 0;
    }
    if (n - i == 1 && s[i] == 'Z') return 1;
    if (n - i != 6 || (s[i] != '+' && s[i] != '-') || !all_digits(s + i + 1, 2) ||
        s[i + 3] != ':' || !all_digits(s + i + 4, 2))
        return 0;
    return dig2(s + i + 1) <= 23 && dig2(s + i + 4) <= 59;
}

/* event.lua iso8601(t): "2026-04-17T15:37:10.484Z", the same rounding (the
 * same double operations). 0 outside 1970..9999, where os.date's %Y would
 * differ in width. */
static int format_iso8601(double t, char out[24])
{
    if (!(t >= 0 && t < 253402300799.0)) return 0;
    double sec = floor(t);
    /* volatile: a multiply-add fused into one FMA (GCC's default
     * -ffp-contract=fast, on an FMA-capable -march) could round differently
     * from LuaJIT's two operations */
    volatile double scaled = (t - sec) * 1000;
    double ms = floor(scaled + 0.5);
    if (ms >= 1000) { sec += 1; ms -= 1000; }
    long long s = (long long)sec;
    long long z = s / 86400, sod = s % 86400;
    /* civil_from_days (H. Hinnant), z >= 0 here */
    z += 719468;
    long long era = z / 146097, doe = z - era * 146097;
    long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long long mp = (5 * doy + 2) / 153;
    int d = (int)(doy - (153 * mp + 2) / 5 + 1);
    int m = (int)(mp < 10 ? mp + 3 : mp - 9);
    int y = (int)(yoe + era * 400 + (m <= 2));
    if (y > 9999) return 0;
    int hh = (int)(sod / 3600), mi = (int)(sod / 60 % 60), ss = (int)(sod % 60), msi = (int)ms;
    char *p = out;
    *p++ = (char)('0' + y / 1000); *p++ = (char)('0' + y / 100 % 10);
    *p++ = (char)('0' + y / 10 % 10); *p++ = (char)('0' + y % 10); *p++ = '-';
    *p++ = (char)('0' + m / 10); *p++ = (char)('0' + m % 10); *p++ = '-';
    *p++ = (char)('0' + d / 10); *p++ = (char)('0' + d % 10); *p++ = 'T';
    *p++ = (char)('0' + hh / 10); *p++ = (char)('0' + hh % 10); *p++ = ':';
    *p++ = (char)('0' + mi / 10); *p++ = (char)('0' + mi % 10); *p++ = ':';
    *p++ = (char)('0' + ss / 10); *p++ = (char)('0' + ss % 10); *p++ = '.';
    *p++ = (char)('0' + msi / 100); *p++ = (char)('0' + msi / 10 % 10);
    *p++ = (char)('0' + msi % 10); *p++ = 'Z';
    return 1;
}

/* ---- the conversion -------------------------------------------------------- */

/* a ctx string: NULL when nil; *bad for any other type (→ Lua path) */
static const char *ctx_string(lua_State *L, int idx, size_t *len, int *bad)
{
    int t = lua_type(L, idx);
    if (t == LUA_TNIL) { *len = 0; return NULL; }
    if (t != LUA_TSTRING) { *bad = 1; *len = 0; return NULL; }
    return lua_tolstring(L, idx, len);
}

typedef struct {
    const char *e;
    out_t o;
    int server_side;
    const char *ip, *ua;
    size_t ip_len, ua_len;
} job_t;

/* Converts the keys of one context object (context.page, …) one level:
 * event.lua snake_keys(). p at its '{' (depth 3) → after its '}', or NULL. */
static const char *convert_nested(job_t *j, const char *p)
{
    const char *e = j->e;
    keyset_t ks;
    ks.n = 0;
    ks.used = 0;
    int first = 1;
    putc1(&j->o, '{');
    p = ws(p + 1, e);
    if (p < e && *p == '}') { putc1(&j->o, '}'); return p + 1; }
    for (int more = 1; more; ) {
        const char *raw, *name, *v;
        size_t rlen, nlen;
        p = read_key(&ks, p, e, &raw, &rlen, &name, &nlen);
        if (!p || !(v = member_value(p, e))) return NULL;
        p = skip_value(v, e, 3);
        if (!p) return NULL;
        put_key(&j->o, &first, name, nlen);
        put(&j->o, v, (size_t)(p - v));
        if (!(p = next_element(p, e, '}', &more))) return NULL;
    }
    putc1(&j->o, '}');
    return p;
}

/* event.lua convert_context() plus normalize's context.ip/user_agent rule:
 * browser traffic — the connection's values (ctx.ip, ctx.user_agent) win;
 * server-side — the message's own stand (even null) and ctx fills gaps.
 * p at the context's '{' (depth 2) → after its '}', or NULL. p NULL: the
 * message has no context, write ctx's values only. */
static const char *convert_context(job_t *j, const char *p)
{
    const char *e = j->e;
    keyset_t ks;
    ks.n = 0;
    ks.used = 0;
    int first = 1, has_ip = 0, has_ua = 0;
    putc1(&j->o, '{');
    if (p) p = ws(p + 1, e);
    if (!p) {
        /* no members */
    } else if (p < e && *p == '}') {
        p++;
    } else {
        for (int more = 1; more; ) {
            const char *raw, *name, *v;
            size_t rlen, nlen;
            p = read_key(&ks, p, e, &raw, &rlen, &name, &nlen);
            if (!p || !(v = member_value(p, e))) return NULL;
            int emit = 1;
            int f = lookup(CONTEXT_FIELDS, sizeof CONTEXT_FIELDS / sizeof CONTEXT_FIELDS[0], name, nlen);
            if (f == C_TRAITS) {
                /* context.traits feeds linking_keys: Lua path (null is inert) */
                if (!is_null(v, e)) return NULL;
            } else if (f == C_IP) {
                has_ip = 1;
                emit = j->server_side || !j->ip;
            } else if (f == C_USER_AGENT) {
                has_ua = 1;
                emit = j->server_side || !j->ua;
            }
            if (f == C_NESTED && v < e && *v == '{') {
                put_key(&j->o, &first, name, nlen);
                p = convert_nested(j, v);
            } else {
                p = skip_value(v, e, 2);
                if (p && emit) {
                    put_key(&j->o, &first, name, nlen);
                    put(&j->o, v, (size_t)(p - v));
                }
            }
            if (!p || !(p = next_element(p, e, '}', &more))) return NULL;
        }
    }
    if (j->ip && (!j->server_side || !has_ip)) {
        put_key(&j->o, &first, "ip", 2);
        put_json_string(&j->o, j->ip, j->ip_len);
    }
    if (j->ua && (!j->server_side || !has_ua)) {
        put_key(&j->o, &first, "user_agent", 10);
        put_json_string(&j->o, j->ua, j->ua_len);
    }
    putc1(&j->o, '}');
    return p;
}

/* a body member whose value must be an escape-free string: → 1 and the
 * bytes between the quotes, or 0 */
static int plain_string(const char *v, const char *end, const char **s, size_t *n)
{
    if (*v != '"') return 0;
    int esc = 0;
    const char *q = scan_string(v + 1, end, &esc);
    if (!q || esc) return 0;
    *s = v + 1;
    *n = (size_t)(q - v - 1);
    return 1;
}

/* the three types the fast path takes; 0 for any other */
static int fast_type(const char *s, size_t n)
{
    return NAME_IS(s, n, "track") ? 1 : NAME_IS(s, n, "page") ? 2 : NAME_IS(s, n, "screen") ? 3 : 0;
}

/* body credential members, as the collector names them (exact keys) */
enum { K_NONE, K_PIPELINE_KEY, K_WRITE_KEY, K_OTHER_CRED };

static int credential_key(const char *raw, size_t n)
{
    if (NAME_IS(raw, n, "pipelineKey")) return K_PIPELINE_KEY;
    if (NAME_IS(raw, n, "writeKey")) return K_WRITE_KEY;
    if (NAME_IS(raw, n, "write_key") || NAME_IS(raw, n, "pipeline_key")) return K_OTHER_CRED;
    return K_NONE;
}

/* collector.lua: pk = doc.pipelineKey, then doc.writeKey, skipping nil,
 * null and "". → 1 and the key when it is a plain string, 0 when absent
 * (try the next), -1 for anything the Lua path must judge (a number …). */
static int body_key(const char *v, const char *end, const char **s, size_t *n)
{
    if (!v || is_null(v, end)) return 0;
    if (!plain_string(v, end, s, n)) return -1;
    return *n > 0 ? 1 : 0;
}

/* The conversion (l_core.h). Every `return 0` below is a decline: the
 * caller runs the Lua path. The scratch holds the event JSON at [0, ev_len)
 * and, when the body has credential members, the input JSON right after it;
 * a realloc while writing either may move the buffer, so res's pointers are
 * taken from offsets at the very end. */
int sg_event_convert(sg_scratch *sc, const char *body, size_t blen,
                     const sg_event_ctx *ctx, sg_event_result *res)
{
    /* over this the scratch would grow without bound: the Lua path */
    if (blen > MAX_FAST_BODY) return 0;
    char received[24];
    if (!format_iso8601(ctx->received_at, received)) return 0;

    const char *cid = ctx->canonical_id, *hint = ctx->type_hint;
    size_t cid_len = ctx->canonical_id_len, hint_len = ctx->type_hint_len;
    job_t j;
    j.ip = ctx->ip;
    j.ip_len = ctx->ip_len;
    j.ua = ctx->user_agent;
    j.ua_len = ctx->user_agent_len;
    j.server_side = ctx->server_side;
    j.e = body + blen;
    j.o.sc = sc;
    j.o.n = 0;
    j.o.bad = 0;
    /* Enough for every case but huge ctx strings: body bytes are copied at
     * most once into the event, converted keys at most double (see snake()),
     * and at most once more into the input JSON. */
    out_reserve(&j.o, 3 * blen + 6 * (ctx->pipeline_key_len + ctx->basic_key_len + cid_len +
                                      j.ip_len + j.ua_len) + 256);

    const char *e = j.e;
    keyset_t ks;
    ks.n = 0;
    ks.used = 0;
    int first = 1;
    int type = 0, has_event_text = 0, has_user = 0, has_anon = 0, has_body_cid = 0;
    int has_timestamp = 0, has_original = 0, has_context = 0, dedupe = 0, any_cred = 0;
    const char *mid = NULL, *pk_val = NULL, *wk_val = NULL;
    size_t mid_len = 0;
    /* member extents, for in_json */
    const char *mstart[MAX_KEYS], *mend[MAX_KEYS];
    unsigned char mcred[MAX_KEYS];
    int nm = 0;

    putc1(&j.o, '{');
    const char *p = ws(body, e);
    if (p >= e || *p != '{') return 0;
    p = ws(p + 1, e);
    if (p < e && *p == '}') return 0;          /* {}: no type, no ids */
    for (int more = 1; more; ) {
        const char *raw, *name, *v, *mstart0 = p;
        size_t rlen, nlen;
        p = read_key(&ks, p, e, &raw, &rlen, &name, &nlen);
        if (!p || !(v = member_value(p, e))) return 0;
        int cred = credential_key(raw, rlen);
        if (cred) any_cred = 1;
        if (cred == K_PIPELINE_KEY) pk_val = v;
        else if (cred == K_WRITE_KEY) wk_val = v;
        int f = lookup(TOP_FIELDS, sizeof TOP_FIELDS / sizeof TOP_FIELDS[0], name, nlen);
        if (f == F_REFUSE) return 0;

        if (f == F_CONTEXT && v < e && *v == '{') {
            has_context = 1;
            put_key(&j.o, &first, "context", 7);
            p = convert_context(&j, v);
            if (!p) return 0;
        } else {
            p = skip_value(v, e, 1);
            if (!p) return 0;
            size_t vlen = (size_t)(p - v);
            const char *s = NULL;
            size_t sn = 0;
            /* normalize drops top-level nulls (context: null is no context)
             * and the DROP names */
            if (!is_null(v, e) && f != F_DROP) {
                int emit = 1;
                switch (f) {
                case F_CONTEXT:
                    return 0;          /* "context: must be an object" (or an array) */
                case F_TYPE:
                    if (!plain_string(v, p, &s, &sn) || !(type = fast_type(s, sn))) return 0;
                    break;
                case F_EVENT:
                    /* any value for page/screen; track checks the text below */
                    if (*v == '"') {
                        if (!plain_string(v, p, &s, &sn)) return 0;
                        /* find(e, "%S"): other whitespace bytes are raw
                         * control characters, refused by the scan */
                        for (size_t i = 0; i < sn; i++)
                            if (s[i] != ' ') { has_event_text = 1; break; }
                    }
                    break;
                case F_NAME:
                    if (!plain_string(v, p, &s, &sn)) return 0;
                    break;
                case F_USER_ID: case F_ANONYMOUS_ID: case F_GROUP_ID: case F_PREVIOUS_ID:
                case F_CANONICAL_ID:
                    /* ids: strings ("" = absent); numbers are the Lua path's */
                    if (!plain_string(v, p, &s, &sn)) return 0;
                    if (sn == 0) emit = 0;
                    if (f == F_USER_ID) has_user = sn > 0;
                    else if (f == F_ANONYMOUS_ID) has_anon = sn > 0;
                    else if (f == F_CANONICAL_ID) {
                        has_body_cid = sn > 0;
                        if (cid) emit = 0;              /* ctx.canonical_id wins */
                    }
                    break;
                case F_MESSAGE_ID:
                    if (!plain_string(v, p, &mid, &mid_len)) return 0;
                    /* collector.lua client_message_id(): only these two
                     * spellings make the id the client's */
                    dedupe = mid_len > 0 && (NAME_IS(raw, rlen, "messageId") ||
                                             NAME_IS(raw, rlen, "message_id"));
                    emit = 0;                           /* written last */
                    break;
                case F_TIMESTAMP: case F_SENT_AT: case F_ORIGINAL_TIMESTAMP:
                    if (!plain_string(v, p, &s, &sn) || !valid_iso8601(s, sn)) return 0;
                    if (f == F_TIMESTAMP) has_timestamp = 1;
                    else if (f == F_ORIGINAL_TIMESTAMP) has_original = 1;
                    break;
                case F_PROPERTIES:
                    if (*v != '{') return 0;         /* an array passes normalize: rare */
                    break;
                default:
                    break;
                }
                if (emit) {
                    put_key(&j.o, &first, name, nlen);
                    put(&j.o, v, vlen);
                }
            }
        }
        mstart[nm] = mstart0;
        mend[nm] = p;
        mcred[nm] = cred != K_NONE;
        nm++;                           /* read_key bounds it by MAX_KEYS */
        if (!(p = next_element(p, e, '}', &more))) return 0;
    }
    if (ws(p, e) != e) return 0;               /* trailing bytes */

    /* type: the hint fills it and must agree with it */
    if (hint) {
        int ht = fast_type(hint, hint_len);
        if (!ht || (type && type != ht)) return 0;
        if (!type) {
            type = ht;
            put_key(&j.o, &first, "type", 4);
            putc1(&j.o, '"');
            put(&j.o, hint, hint_len);
            putc1(&j.o, '"');
        }
    }
    if (!type) return 0;
    if (type == 1 && !has_event_text) return 0;
    int has_cid = cid ? cid_len > 0 : has_body_cid;
    if (!has_user && !has_anon && !has_cid) return 0;

    /* timestamp: as sent, else received_at. The originalTimestamp skew
     * correction is left to the Lua path. */
    if (!has_timestamp) {
        if (has_original) return 0;
        put_key(&j.o, &first, "timestamp", 9);
        putc1(&j.o, '"');
        put(&j.o, received, 24);
        putc1(&j.o, '"');
    }
    put_key(&j.o, &first, "received_at", 11);
    putc1(&j.o, '"');
    put(&j.o, received, 24);
    putc1(&j.o, '"');
    if (cid && cid_len > 0) {
        put_key(&j.o, &first, "canonical_id", 12);
        put_json_string(&j.o, cid, cid_len);
    }

    /* the pipeline key, in collector.lua's order: header, body pipelineKey,
     * body writeKey, Basic username */
    const char *key = NULL;
    size_t key_len = 0;
    int key_from_ctx = 0;
    if (ctx->pipeline_key && ctx->pipeline_key_len > 0) {
        key = ctx->pipeline_key; key_len = ctx->pipeline_key_len; key_from_ctx = 1;
    } else {
        int r = body_key(pk_val, e, &key, &key_len);
        if (r == 0) r = body_key(wk_val, e, &key, &key_len);
        if (r < 0) return 0;
        if (r == 0) {
            if (!ctx->basic_key || ctx->basic_key_len == 0) return 0;   /* 401 is the Lua path's */
            key = ctx->basic_key; key_len = ctx->basic_key_len; key_from_ctx = 1;
        }
    }
    /* a ctx key may hold anything; a body key is a plain string (body_key),
     * already valid JSON between its quotes */
    put_key(&j.o, &first, "pipeline_key", 12);
    if (key_from_ctx) put_json_string(&j.o, key, key_len);
    else { putc1(&j.o, '"'); put(&j.o, key, key_len); putc1(&j.o, '"'); }

    if (!has_context) {
        put_key(&j.o, &first, "context", 7);
        convert_context(&j, NULL);
    }

    /* message_id goes LAST: LuaJIT hashes a long string from a few sampled
     * bytes (start, middle, end); events differ mostly in their ids, so a
     * high-entropy tail keeps near-identical event strings out of one hash
     * chain when they are interned. The id maker runs only now, once every
     * other reason to decline is ruled out (core.uuid may raise). */
    if (!mid || mid_len == 0) {
        if (!ctx->new_id || ctx->new_id(ctx->new_id_ud, res->id_buf) != 0) return 0;
        mid = res->id_buf;
        mid_len = sizeof res->id_buf;
    }
    put_key(&j.o, &first, "message_id", 10);
    putc1(&j.o, '"');
    put(&j.o, mid, mid_len);
    putc1(&j.o, '"');
    putc1(&j.o, '}');
    size_t ev_len = j.o.n;

    /* in_json: collector.lua input_json() stores the message minus its
     * credential members; without any, the caller stores the body. Written
     * after the event, which must stay valid too. */
    if (any_cred) {
        int firstm = 1;
        putc1(&j.o, '{');
        for (int i = 0; i < nm; i++) {
            if (mcred[i]) continue;
            if (!firstm) putc1(&j.o, ',');
            firstm = 0;
            put(&j.o, mstart[i], (size_t)(mend[i] - mstart[i]));
        }
        putc1(&j.o, '}');
    }
    if (j.o.bad) return 0;

    res->ev = sc->buf;
    res->ev_len = ev_len;
    res->in = any_cred ? sc->buf + ev_len : NULL;
    res->in_len = any_cred ? j.o.n - ev_len : 0;
    res->message_id = mid;
    res->message_id_len = mid_len;
    res->dedupe = dedupe;
    res->key = key;
    res->key_len = key_len;
    res->key_from_ctx = key_from_ctx;
    return 1;
}

/* ---- core.event_json ------------------------------------------------------- */

/* sg_event_ctx.new_id for the Lua binding: core.uuid (upvalue 2 of the
 * running core.event_json), left on the stack at *idx so the wrapper returns
 * that very string. A raise propagates through sg_event_convert, which holds
 * nothing to free. */
typedef struct {
    lua_State *L;
    int idx;
} lua_new_id_t;

static int lua_new_id(void *ud, char out[36])
{
    lua_new_id_t *u = ud;
    lua_State *L = u->L;
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_call(L, 0, 1);
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    if (!s || n != 36) return -1;
    memcpy(out, s, 36);
    u->idx = lua_gettop(L);
    return 0;
}

/* Upvalues: 1 scratch buffer (sg_scratch), 2 core.uuid. Stack: 1 body,
 * 2 ctx, then the ctx fields (CTX_*). */
enum { CTX_PK = 3, CTX_BASIC, CTX_CID, CTX_IP, CTX_UA, CTX_RECEIVED, CTX_HINT, CTX_SERVER, CTX_SENT,
       CTX_BUFFER, CTX_COUNT = CTX_BUFFER - CTX_PK + 1 };

static int l_event_json(lua_State *L)
{
    static const char *const CTX_FIELDS[] = {
        "pipeline_key", "basic_key", "canonical_id", "ip", "user_agent", "received_at",
        "type_hint", "server_side", "sent_at", "buffer",
    };
    size_t blen;
    const char *body = sg_tobytes(L, 1, &blen);   /* a string or a signal.buf */
    if (!body) return luaL_argerror(L, 1, "string or buffer expected");
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    /* sg_event_convert refuses it too; checked first so that ctx is not
     * read (no __index runs) for a body that cannot pass */
    if (blen > MAX_FAST_BODY) goto fallback;
    for (int i = 0; i < CTX_COUNT; i++) lua_getfield(L, 2, CTX_FIELDS[i]);

    int bad = 0;
    sg_event_ctx c;
    c.pipeline_key = ctx_string(L, CTX_PK, &c.pipeline_key_len, &bad);
    c.basic_key = ctx_string(L, CTX_BASIC, &c.basic_key_len, &bad);
    c.canonical_id = ctx_string(L, CTX_CID, &c.canonical_id_len, &bad);
    c.ip = ctx_string(L, CTX_IP, &c.ip_len, &bad);
    c.user_agent = ctx_string(L, CTX_UA, &c.user_agent_len, &bad);
    c.type_hint = ctx_string(L, CTX_HINT, &c.type_hint_len, &bad);
    c.server_side = lua_toboolean(L, CTX_SERVER);
    /* received_at must be a number here (normalize also takes an ISO
     * string or nil = now); ctx.sent_at only comes with batches */
    if (bad || lua_type(L, CTX_RECEIVED) != LUA_TNUMBER || !lua_isnil(L, CTX_SENT))
        goto fallback;
    c.received_at = lua_tonumber(L, CTX_RECEIVED);
    lua_new_id_t idu = { L, 0 };
    c.new_id = lua_new_id;
    c.new_id_ud = &idu;

    sg_scratch *sc = lua_touserdata(L, lua_upvalueindex(1));
    sg_event_result r;
    if (!sg_event_convert(sc, body, blen, &c, &r)) goto fallback;

    /* ctx.buffer: the event as a signal.buf, kept out of LuaJIT's string
     * table (the collector only hands it to Redis) */
    if (lua_toboolean(L, CTX_BUFFER)) sg_buf_push(L, r.ev, r.ev_len);
    else lua_pushlstring(L, r.ev, r.ev_len);
    /* the ctx and core.uuid strings are returned as themselves */
    if (idu.idx) lua_pushvalue(L, idu.idx);
    else lua_pushlstring(L, r.message_id, r.message_id_len);
    lua_pushboolean(L, r.dedupe);
    if (r.key_from_ctx) lua_pushvalue(L, r.key == c.pipeline_key ? CTX_PK : CTX_BASIC);
    else lua_pushlstring(L, r.key, r.key_len);
    if (r.in) lua_pushlstring(L, r.in, r.in_len);
    else lua_pushnil(L);
    return 5;

fallback:
    lua_pushnil(L);
    return 1;
}

void sg_open_event(lua_State *L)
{
    sg_scratch *sc = lua_newuserdata(L, sizeof *sc);
    sc->buf = NULL;
    sc->cap = 0;
    lua_newtable(L);
    lua_pushcfunction(L, scratch_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_getfield(L, -2, "uuid");        /* sg_open_crypto ran first */
    lua_pushcclosure(L, l_event_json, 2);
    lua_setfield(L, -2, "event_json");
}
