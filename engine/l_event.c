/*
 * l_event.c — core.event_json: the collector's single-event fast path.
 *
 * Per request the collector spent most of its time in lua-cjson decode +
 * signal.pipeline.event.normalize + cjson encode (~20 µs for a 1.1 KB datafly.js
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

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

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

#if defined(__GNUC__)
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
/* for the per-key steps, which GCC would otherwise keep out of line */
#define ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define LIKELY(x) (x)
#define UNLIKELY(x) (x)
#define ALWAYS_INLINE inline
#endif

/* sg_scratch (l_core.h): the buffer the output is written into. */
typedef struct {
    char *buf;      /* sc's buffer and size, copied here: no indirection per write */
    size_t n, cap;
    sg_scratch *sc;
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
    if (o->bad || need <= o->cap) return;
    size_t cap = o->cap ? o->cap : 4096;
    while (cap < need) cap *= 2;
    char *nb = realloc(o->buf, cap);
    if (!nb) { o->bad = 1; return; }
    o->sc->buf = o->buf = nb;
    o->sc->cap = o->cap = cap;
}

/* Room for n more bytes → where to write them, or NULL when the buffer
 * cannot grow. sg_event_convert reserves enough up front for all but huge
 * ctx strings, so the test is all a write usually costs. */
static inline char *out_room(out_t *o, size_t n)
{
    if (UNLIKELY(o->n + n > o->cap)) {
        out_reserve(o, o->n + n);
        if (o->bad) return NULL;
    }
    return o->buf + o->n;
}

/* memcpy for the short runs written here (keys, ids, small values): up to
 * 16 bytes as two overlapping loads and stores instead of a libc call.
 * Reads only s[0, n). */
static inline void copy_bytes(char *d, const char *s, size_t n)
{
    if (n >= 8 && n <= 16) {
        uint64_t a, b;
        memcpy(&a, s, 8);
        memcpy(&b, s + n - 8, 8);
        memcpy(d, &a, 8);
        memcpy(d + n - 8, &b, 8);
    } else if (n >= 4 && n < 8) {
        uint32_t a, b;
        memcpy(&a, s, 4);
        memcpy(&b, s + n - 4, 4);
        memcpy(d, &a, 4);
        memcpy(d + n - 4, &b, 4);
    } else if (n < 4) {
        if (n) { d[0] = s[0]; d[n / 2] = s[n / 2]; d[n - 1] = s[n - 1]; }
    } else {
        memcpy(d, s, n);
    }
}

static inline void put(out_t *o, const void *p, size_t n)
{
    char *d = out_room(o, n);
    if (!d) return;
    copy_bytes(d, p, n);
    o->n += n;
}

static inline void putc1(out_t *o, char c)
{
    char *d = out_room(o, 1);
    if (!d) return;
    *d = c;
    o->n++;
}

/* `"name":` — names come from the body without escapes, or are constants */
static inline void put_key(out_t *o, int *first, const char *name, size_t n)
{
    char *d = out_room(o, n + 4), *d0 = d;
    if (!d) return;
    if (!*first) *d++ = ',';
    *first = 0;
    *d++ = '"';
    copy_bytes(d, name, n);
    d += n;
    *d++ = '"';
    *d++ = ':';
    o->n += (size_t)(d - d0);
}

/* A value's bytes from the body (readable up to e) to d, where 32 bytes
 * past the value may be overwritten: most values fit one fixed 32-byte
 * copy, no branching on their length. */
static inline void copy_value(char *d, const char *v, size_t vn, const char *e)
{
#ifdef __SSE2__
    if (LIKELY(vn <= 32 && e - v >= 32)) {
        __m128i a = _mm_loadu_si128((const __m128i *)(const void *)v);
        __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(v + 16));
        _mm_storeu_si128((__m128i *)(void *)d, a);
        _mm_storeu_si128((__m128i *)(void *)(d + 16), b);
        return;
    }
#endif
    copy_bytes(d, v, vn);
}

/* put_key, then the value's bytes as they are (v in the body, which ends
 * at e): one room test for both, with 32 bytes to spare for copy_value.
 * The name is readable up to nlim: most names are one 16-byte copy. */
static inline void put_member(out_t *o, int *first, const char *name, size_t n, const char *nlim,
                              const char *v, size_t vn, const char *e)
{
    char *d = out_room(o, n + vn + 4 + 32), *d0 = d;
    if (!d) return;
    if (!*first) *d++ = ',';
    *first = 0;
    *d++ = '"';
#ifdef __SSE2__
    if (LIKELY(n <= 16 && nlim - name >= 16))
        _mm_storeu_si128((__m128i *)(void *)d, _mm_loadu_si128((const __m128i *)(const void *)name));
    else
#endif
    copy_bytes(d, name, n);
    d += n;
    *d++ = '"';
    *d++ = ':';
    copy_value(d, v, vn, e);
    d += vn;
    o->n += (size_t)(d - d0);
}

/* `"name":"s"`, for strings already valid between quotes (a body string
 * without escapes, the type hint, a time, an id) */
static void put_str_member(out_t *o, int *first, const char *name, size_t n,
                           const char *s, size_t sn)
{
    char *d = out_room(o, n + sn + 6), *d0 = d;
    if (!d) return;
    if (!*first) *d++ = ',';
    *first = 0;
    *d++ = '"';
    memcpy(d, name, n);
    d += n;
    memcpy(d, "\":\"", 3);
    d += 3;
    memcpy(d, s, sn);
    d += sn;
    *d++ = '"';
    o->n += (size_t)(d - d0);
}

/* (JSON scanning, below) */
static const unsigned char STR_STOP[256];
#ifdef __SSE2__
static inline unsigned stop_mask16(__m128i x);
#endif

/* One byte of a ctx string as JSON → past what it wrote */
static inline char *put_json_byte(char *d, unsigned char c)
{
    static const char HEX[] = "0123456789abcdef";
    if (LIKELY(c >= 0x20 && c != '"' && c != '\\')) {
        *d++ = (char)c;
    } else if (c == '"' || c == '\\') {
        *d++ = '\\';
        *d++ = (char)c;
    } else {
        memcpy(d, "\\u00", 4);
        d[4] = HEX[c >> 4];
        d[5] = HEX[c & 15];
        d += 6;
    }
    return d;
}

/* A ctx string (a header, a cookie) as a JSON string. Bytes >= 0x80 are
 * copied as they are, as cjson does. Room for the worst case (every byte a
 * \u00XX) is taken at once, so the loops only store. */
static void put_json_string(out_t *o, const char *s, size_t n)
{
    char *d = out_room(o, 6 * n + 2), *d0 = d;
    if (!d) return;
    const char *end = s + n;
    *d++ = '"';
#ifdef __SSE2__
    /* 16 at a time up to the next byte to escape — the bytes a string scan
     * stops at (user agents run to 100+ bytes). The store stays in the room
     * taken: 6 per byte left, and 16 or more are left. */
    while (end - s >= 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)s);
        unsigned m = stop_mask16(x);
        _mm_storeu_si128((__m128i *)(void *)d, x);
        if (!m) {
            s += 16;
            d += 16;
            continue;
        }
        unsigned k = (unsigned)__builtin_ctz(m);
        d = put_json_byte(d + k, (unsigned char)s[k]);
        s += k + 1;
    }
#endif
    /* the rest (most often all of a short string): copied as it is while
     * testing for bytes to escape (those a string scan stops at), and
     * written again byte by byte only when there is one */
    size_t rest = (size_t)(end - s);
    unsigned char any = 0;
    for (size_t i = 0; i < rest; i++) {
        unsigned char c = (unsigned char)s[i];
        any |= STR_STOP[c];
        d[i] = (char)c;
    }
    if (LIKELY(!any)) d += rest;
    else while (s < end) d = put_json_byte(d, (unsigned char)*s++);
    *d++ = '"';
    o->n += (size_t)(d - d0);
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

/* JSON whitespace, the same four bytes cjson skips. All four are <= ' ',
 * so in a compact body one test of the next byte decides. */
static inline const char *ws(const char *p, const char *e)
{
    while (p < e && (unsigned char)*p <= ' ' &&
           (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
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

#ifdef __SSE2__
/* 0xff where first <= x < first + count: one signed compare after moving
 * the range to the bottom (x - first + 0x80 < 0x80 + count) */
static inline __m128i in_range16(__m128i x, char first, int count)
{
    return _mm_cmplt_epi8(_mm_add_epi8(x, _mm_set1_epi8((char)(0x80 - first))),
                          _mm_set1_epi8((char)(0x80 + count)));
}

/* The STR_STOP bytes of the 16 at p, as a bit mask (bit i: p[i]). SSE2 has
 * no unsigned compare: x <= 0x1f is min(x, 0x1f) == x. */
static inline unsigned stop_mask16(__m128i x)
{
    __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('"')),
                                            _mm_cmpeq_epi8(x, _mm_set1_epi8('\\'))),
                               _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(0x1f)), x));
    return (unsigned)_mm_movemask_epi8(hit);
}
#endif

/* The first byte in [p, e) a string scan must stop at (STR_STOP), or e.
 * Strings are most of a body's bytes. */
static inline const char *find_stop(const char *p, const char *e)
{
#ifdef __SSE2__
    /* 16 bytes at a time, with unaligned loads only while 16 remain: never
     * a read past e */
    while (e - p >= 16) {
        unsigned m = stop_mask16(_mm_loadu_si128((const __m128i *)(const void *)p));
        if (m) return p + __builtin_ctz(m);
        p += 16;
    }
#endif
    /* 8 bytes at a time while none is '"', '\\' or < 0x20 (the classic
     * has-zero-byte / has-less-than word tricks) */
    while (e - p >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
        uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
        uint64_t hit = (((q - ones) & ~q) | ((b - ones) & ~b) | (w - ones * 0x20)) & ~w & high;
        if (hit) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            /* the lowest flagged byte is always a real hit (borrows only
             * run upwards): jump straight to it */
            p += __builtin_ctzll(hit) >> 3;
#endif
            break;
        }
        p += 8;
    }
    while (p < e && !STR_STOP[(unsigned char)*p]) p++;
    return p;
}

/* p at a '\\' inside a string → just after its escape, or NULL for what
 * cjson refuses (bad escape, lone surrogate, end of input). Out of line:
 * most strings have no escape. */
static const char *scan_escape(const char *p, const char *e)
{
    if (e - p < 2) return NULL;
    switch (p[1]) {
    case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
        return p + 2;
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
            return p + 12;
        }
        return p + 6;
    }
    default:
        return NULL;
    }
}

/* p just after the opening quote → the closing quote, or NULL for what
 * cjson refuses (bad escape, lone surrogate, end of input) and for raw
 * control characters. *esc is set when the string holds any escape. */
static inline const char *scan_string(const char *p, const char *e, int *esc)
{
    for (;;) {
        p = find_stop(p, e);
        if (UNLIKELY(p >= e)) return NULL;
        if (LIKELY(*p == '"')) return p;
        if (*p != '\\') return NULL;            /* control character */
        *esc = 1;
        if (!(p = scan_escape(p, e))) return NULL;
    }
}

/* A key: p just after the opening quote → its first STR_STOP byte (the
 * closing quote unless the key is one read_key refuses), or e. *upper: the
 * key has an upper-case letter, i.e. snake() may change it. One pass finds
 * both. */
static ALWAYS_INLINE const char *scan_key(const char *p, const char *e, int *upper)
{
    int up = 0;
#ifdef __SSE2__
    while (e - p >= 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
        unsigned m = stop_mask16(x);
        unsigned u = (unsigned)_mm_movemask_epi8(in_range16(x, 'A', 26));
        if (m) {
            /* upper-case letters before the first stop byte only */
            *upper = up | ((u & ((m & -m) - 1)) != 0);
            return p + __builtin_ctz(m);
        }
        up |= u != 0;
        p += 16;
    }
#endif
    const char *q = find_stop(p, e);
    for (; p < q && !up; p++) up = IS_UPPER(*p);
    *upper = up;
    return q;
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

/* After a member's key: the ':' and the value's first byte, or NULL. A
 * compact body (no whitespace: ':' then the value) takes the first test. */
static inline const char *member_value(const char *p, const char *e)
{
    if (LIKELY(e - p >= 2 && p[0] == ':' && (unsigned char)p[1] > ' ')) return p + 1;
    p = ws(p, e);
    if (UNLIKELY(p >= e || *p != ':')) return NULL;
    return ws(p + 1, e);
}

/* After a value inside a container closed by `close`: a ',' → the next
 * element's start (*more = 1); `close` → just past it (*more = 0); else NULL.
 * The first test takes the compact case, ',' then the next element. */
static inline const char *next_element(const char *p, const char *e, char close, int *more)
{
    if (LIKELY(e - p >= 2 && p[0] == ',' && (unsigned char)p[1] > ' ')) {
        *more = 1;
        return p + 1;
    }
    p = ws(p, e);
    if (UNLIKELY(p >= e)) return NULL;
    if (*p == close) { *more = 0; return p + 1; }
    if (UNLIKELY(*p != ',')) return NULL;
    *more = 1;
    return ws(p + 1, e);
}

static const char *skip_other(const char *p, const char *e, int depth);

/* Validates one value inside a container at `depth` (the body's object is
 * depth 1) → its end, or NULL. A container nested deeper than MAX_DEPTH is
 * refused, as decode_max_depth(32) refuses it. Strings, the most common
 * value, are scanned inline; the rest is skip_other's. */
static inline const char *skip_value(const char *p, const char *e, int depth)
{
    if (LIKELY(p < e && *p == '"')) {
        int esc = 0;
        p = scan_string(p + 1, e, &esc);
        return p ? p + 1 : NULL;
    }
    return skip_other(p, e, depth);
}

static const char *skip_other(const char *p, const char *e, int depth)
{
    if (p >= e) return NULL;
    int esc = 0;
    switch (*p) {
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
 * cannot start the next), so each is a local rule per position. They also
 * never meet: the first inserts after a lower-case letter or digit, the
 * second after an upper-case letter, and the '_' the first inserts is no
 * letter, so the second pass sees the same letter triples in the original
 * key. Hence one pass over the key, both rules at each position. LuaJIT's
 * classes and lower() are ASCII-only whatever the locale: bytes >= 0x80 are
 * neither case, as here. At most one '_' per upper-case letter: out needs
 * 2n bytes. read_key calls it only for keys with an upper-case letter. */
static size_t snake(const char *s, size_t n, char *out)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int up = IS_UPPER(c);
        out[m++] = up ? (char)(c + 32) : c;
        if (i + 1 < n && IS_UPPER(s[i + 1]) &&
            (up ? i + 2 < n && IS_LOWER(s[i + 2]) : IS_LOWER(c) || IS_DIGIT(c)))
            out[m++] = '_';
    }
    return m;
}

#ifdef __SSE2__
/* snake() for a key of at most 16 bytes with 16 readable at s: both rules
 * as bit masks over one load (bit i of `ins`: a '_' goes after byte i), the
 * lower-casing as one add. */
static size_t snake16(const char *s, size_t n, char *out)
{
    __m128i x = _mm_loadu_si128((const __m128i *)(const void *)s);
    __m128i upv = in_range16(x, 'A', 26);
    unsigned valid = (1u << n) - 1;
    unsigned up = (unsigned)_mm_movemask_epi8(upv) & valid;
    unsigned lo = (unsigned)_mm_movemask_epi8(in_range16(x, 'a', 26)) & valid;
    unsigned dg = (unsigned)_mm_movemask_epi8(in_range16(x, '0', 10)) & valid;
    /* gsub("([%l%d])(%u)") and gsub("(%u)(%u%l)"): after byte i when ... */
    unsigned ins = ((lo | dg) & up >> 1) | (up & up >> 1 & lo >> 2);
    /* the lower-cased key, then each run up to a '_' as one 16-byte copy
     * (out has 16 bytes to spare, see keyset_t) */
    char low[32];
    _mm_storeu_si128((__m128i *)(void *)low, _mm_add_epi8(x, _mm_and_si128(upv, _mm_set1_epi8(0x20))));
    _mm_storeu_si128((__m128i *)(void *)(low + 16), _mm_setzero_si128());
    size_t m = 0, from = 0;
    for (; ins; ins &= ins - 1) {
        size_t i = (size_t)__builtin_ctz(ins) + 1;
        _mm_storeu_si128((__m128i *)(void *)(out + m), _mm_loadu_si128((const __m128i *)(const void *)(low + from)));
        m += i - from;
        out[m++] = '_';
        from = i;
    }
    _mm_storeu_si128((__m128i *)(void *)(out + m), _mm_loadu_si128((const __m128i *)(const void *)(low + from)));
    return m + n - from;
}
#endif

/* The converted names of one object, to refuse duplicates: a repeated key
 * (cjson keeps the last) and two spellings of one name (userId + user_id:
 * normalize's put() lets camelCase win) both go the Lua way. A name without
 * upper-case letters is its key (snake() keeps it): it points into the body
 * and only converted names are written to chars. `used` still counts every
 * name, converted or not, so that the limit below refuses the same bodies
 * whichever names needed the copy. */
typedef struct {
    int n;
    size_t used;
    uint64_t seen;              /* one bit per fingerprint class, see read_key */
    uint32_t hash[MAX_KEYS];
    uint16_t len[MAX_KEYS];
    const char *name[MAX_KEYS];
    char chars[KEYSET_CHARS + 16];  /* + snake16()'s spare bytes */
} keyset_t;

static inline void keyset_init(keyset_t *ks)
{
    ks->n = 0;
    ks->used = 0;
    ks->seen = 0;
}

/* Reads the key at p (the opening quote), converts it and remembers it.
 * → just after the closing quote, or NULL: escapes, over-long, a duplicate,
 * too many keys. Sets name, nlen (the converted name), nlim (the name is
 * readable up to there, for put_member) and raw, rlen (the key as sent). */
static ALWAYS_INLINE const char *read_key(keyset_t *ks, const char *p, const char *e,
                                          const char **raw, size_t *rlen, const char **name,
                                          size_t *nlen, const char **nlim)
{
    if (UNLIKELY(p >= e || *p != '"')) return NULL;
    const char *k = p + 1;
    int upper;
    const char *q = scan_key(k, e, &upper);
    /* stopped anywhere but at the closing quote: an escape (refused in keys),
     * a control character or the end */
    if (UNLIKELY(q >= e || *q != '"')) return NULL;
    size_t kn = (size_t)(q - k);
    if (UNLIKELY(kn > MAX_KEY_LEN || ks->n >= MAX_KEYS || ks->used + 2 * kn > KEYSET_CHARS))
        return NULL;
    const char *nm = k, *lim = e;
    size_t sn = kn;
    if (upper) {
        char *dst = ks->chars + ks->used;
#ifdef __SSE2__
        if (kn <= 16 && e - k >= 16) sn = snake16(k, kn, dst);
        else
#endif
        sn = snake(k, kn, dst);
        nm = dst;
        lim = ks->chars + sizeof ks->chars;
    }
    /* a cheap fingerprint (length, first and last byte) screens the
     * comparisons, memcmp decides; `seen` (a bit per fingerprint class, 64
     * classes for a dozen names) skips the whole loop for most names */
    uint32_t h = sn ? ((uint32_t)sn << 16 | (uint32_t)(unsigned char)nm[0] << 8 |
                       (unsigned char)nm[sn - 1]) : 0;
    uint64_t bit = 1ull << ((uint32_t)(h * 0x9E3779B1u) >> 26);
    if (ks->seen & bit) {
        for (int i = 0; i < ks->n; i++) {
            if (ks->hash[i] == h && ks->len[i] == sn && memcmp(ks->name[i], nm, sn) == 0)
                return NULL;
        }
    }
    ks->seen |= bit;
    ks->hash[ks->n] = h;
    ks->len[ks->n] = (uint16_t)sn;
    ks->name[ks->n] = nm;
    ks->n++;
    ks->used += sn;
    *raw = k;
    *rlen = kn;
    *name = nm;
    *nlen = sn;
    *nlim = lim;
    return q + 1;
}

/* s[0..n) equals the string literal lit (its length known at compile time) */
#define NAME_IS(s, n, lit) ((n) == sizeof(lit) - 1 && memcmp((s), (lit), sizeof(lit) - 1) == 0)

/* In the name lookups below: s (of the length the switch chose) equals the
 * literal. Constant-length memcmp compiles to a few integer compares. */
#define IS(lit, id) if (memcmp(s, lit, sizeof(lit) - 1) == 0) return id

/* top-level names with a rule of their own (after conversion) */
enum {
    F_OTHER = 0, F_CONTEXT, F_TYPE, F_EVENT, F_NAME, F_USER_ID, F_ANONYMOUS_ID, F_GROUP_ID,
    F_PREVIOUS_ID, F_CANONICAL_ID, F_MESSAGE_ID, F_TIMESTAMP, F_SENT_AT, F_ORIGINAL_TIMESTAMP,
    F_PROPERTIES, F_DROP, F_REFUSE,
};

/* Marks: DROP — event.lua DROP, never taken from the message (write_key,
 * pipeline_key, partner_attrs, identity, received_at). REFUSE — traits:
 * identity.linking_keys and the identify merge need the Lua path; batch:
 * the collector's /v1/events takes the body for a batch. */
static inline int top_field(const char *s, size_t n)
{
    switch (n) {
    case 4: IS("type", F_TYPE); IS("name", F_NAME); break;
    case 5: IS("event", F_EVENT); IS("batch", F_REFUSE); break;
    case 6: IS("traits", F_REFUSE); break;
    case 7: IS("context", F_CONTEXT); IS("user_id", F_USER_ID); IS("sent_at", F_SENT_AT); break;
    case 8: IS("group_id", F_GROUP_ID); IS("identity", F_DROP); break;
    case 9: IS("timestamp", F_TIMESTAMP); IS("write_key", F_DROP); break;
    case 10: IS("message_id", F_MESSAGE_ID); IS("properties", F_PROPERTIES); break;
    case 11: IS("previous_id", F_PREVIOUS_ID); IS("received_at", F_DROP); break;
    case 12:
        IS("anonymous_id", F_ANONYMOUS_ID); IS("canonical_id", F_CANONICAL_ID);
        IS("pipeline_key", F_DROP);
        break;
    case 13: IS("partner_attrs", F_DROP); break;
    case 18: IS("original_timestamp", F_ORIGINAL_TIMESTAMP); break;
    }
    return F_OTHER;
}

/* context names with a rule of their own (after conversion) */
enum { C_OTHER, C_NESTED, C_TRAITS, C_IP, C_USER_AGENT };

/* C_NESTED: event.lua CONTEXT_NESTED, context objects whose keys are
 * converted too (page, campaign, screen, library, session, device, os, geo,
 * vendor_ids) */
static inline int context_field(const char *s, size_t n)
{
    switch (n) {
    case 2: IS("os", C_NESTED); IS("ip", C_IP); break;
    case 3: IS("geo", C_NESTED); break;
    case 4: IS("page", C_NESTED); break;
    case 6: IS("screen", C_NESTED); IS("device", C_NESTED); IS("traits", C_TRAITS); break;
    case 7: IS("library", C_NESTED); IS("session", C_NESTED); break;
    case 8: IS("campaign", C_NESTED); break;
    case 10: IS("vendor_ids", C_NESTED); IS("user_agent", C_USER_AGENT); break;
    }
    return C_OTHER;
}

#undef IS

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
#ifdef __SSE2__
    /* "YYYY-MM-DDThh:mm:ss" in two overlapping 16-byte loads (s[0, 16) and
     * s[3, 19), inside s as n >= 20): each byte XOR its PAT byte must be at
     * most its LIM byte — 9 for a digit (c ^ '0' <= 9 exactly for '0'..'9'),
     * 0 for a separator (equal) */
    static const char PAT[19] = "0000-00-00T00:00:00";
    static const unsigned char LIM[19] = { 9, 9, 9, 9, 0, 9, 9, 0, 9, 9, 0, 9, 9, 0, 9, 9, 0, 9, 9 };
    __m128i a = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(const void *)s),
                              _mm_loadu_si128((const __m128i *)(const void *)PAT));
    __m128i b = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(const void *)(s + 3)),
                              _mm_loadu_si128((const __m128i *)(const void *)(PAT + 3)));
    __m128i la = _mm_loadu_si128((const __m128i *)(const void *)LIM);
    __m128i lb = _mm_loadu_si128((const __m128i *)(const void *)(LIM + 3));
    __m128i ok = _mm_and_si128(_mm_cmpeq_epi8(_mm_max_epu8(a, la), la),
                               _mm_cmpeq_epi8(_mm_max_epu8(b, lb), lb));
    if (_mm_movemask_epi8(ok) != 0xFFFF) return 0;
#else
    if (!all_digits(s, 4) || s[4] != '-' || !all_digits(s + 5, 2) || s[7] != '-' ||
        !all_digits(s + 8, 2) || s[10] != 'T' || !all_digits(s + 11, 2) || s[13] != ':' ||
        !all_digits(s + 14, 2) || s[16] != ':' || !all_digits(s + 17, 2))
        return 0;
#endif
    int mo = dig2(s + 5), d = dig2(s + 8);
    int h = dig2(s + 11), mi = dig2(s + 14), se = dig2(s + 17);
    if (mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || se > 60) return 0;
    if (d > MDAYS[mo - 1]) {
        /* Feb 29, in leap years only */
        int y = dig2(s) * 100 + dig2(s + 2);
        int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        if (!(mo == 2 && d == 29 && leap)) return 0;
    }
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
    /* floor() of these non-negative values below 2^63 is truncation: a
     * conversion to integer and back, exact, and cheaper than floor()
     * without SSE4.1's roundsd */
    double sec = (double)(long long)t;
    /* volatile: a multiply-add fused into one FMA (GCC's default
     * -ffp-contract=fast, on an FMA-capable -march) could round differently
     * from LuaJIT's two operations */
    volatile double scaled = (t - sec) * 1000;
    double ms = (double)(long long)(scaled + 0.5);
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
    /* two digits at a time from a table: fewer divisions */
    static const char D2[201] =
        "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
        "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
        "8081828384858687888990919293949596979899";
    char *p = out;
    memcpy(p, D2 + 2 * (y / 100), 2); memcpy(p + 2, D2 + 2 * (y % 100), 2); p[4] = '-';
    memcpy(p + 5, D2 + 2 * m, 2); p[7] = '-';
    memcpy(p + 8, D2 + 2 * d, 2); p[10] = 'T';
    memcpy(p + 11, D2 + 2 * hh, 2); p[13] = ':';
    memcpy(p + 14, D2 + 2 * mi, 2); p[16] = ':';
    memcpy(p + 17, D2 + 2 * ss, 2); p[19] = '.';
    p[20] = (char)('0' + msi / 100); memcpy(p + 21, D2 + 2 * (msi % 100), 2); p[23] = 'Z';
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
    keyset_init(&ks);
    int first = 1;
    putc1(&j->o, '{');
    p = ws(p + 1, e);
    if (p < e && *p == '}') { putc1(&j->o, '}'); return p + 1; }
    for (int more = 1; more; ) {
        const char *raw, *name, *nlim, *v;
        size_t rlen, nlen;
        p = read_key(&ks, p, e, &raw, &rlen, &name, &nlen, &nlim);
        if (!p || !(v = member_value(p, e))) return NULL;
        p = skip_value(v, e, 3);
        if (!p) return NULL;
        put_member(&j->o, &first, name, nlen, nlim, v, (size_t)(p - v), e);
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
    keyset_init(&ks);
    int first = 1, has_ip = 0, has_ua = 0;
    putc1(&j->o, '{');
    if (p) p = ws(p + 1, e);
    if (!p) {
        /* no members */
    } else if (p < e && *p == '}') {
        p++;
    } else {
        for (int more = 1; more; ) {
            const char *raw, *name, *nlim, *v;
            size_t rlen, nlen;
            p = read_key(&ks, p, e, &raw, &rlen, &name, &nlen, &nlim);
            if (!p || !(v = member_value(p, e))) return NULL;
            int emit = 1;
            int f = context_field(name, nlen);
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
                if (p && emit) put_member(&j->o, &first, name, nlen, nlim, v, (size_t)(p - v), e);
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
    j.o.buf = sc->buf;
    j.o.cap = sc->cap;
    j.o.n = 0;
    j.o.bad = 0;
    /* Enough for every case but huge ctx strings: body bytes are copied at
     * most once into the event, converted keys at most double (see snake()),
     * and at most once more into the input JSON. */
    out_reserve(&j.o, 3 * blen + 6 * (ctx->pipeline_key_len + ctx->basic_key_len + cid_len +
                                      j.ip_len + j.ua_len) + 256);

    const char *e = j.e;
    keyset_t ks;
    keyset_init(&ks);
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
        const char *raw, *name, *nlim, *v, *mstart0 = p;
        size_t rlen, nlen;
        p = read_key(&ks, p, e, &raw, &rlen, &name, &nlen, &nlim);
        if (!p || !(v = member_value(p, e))) return 0;
        int cred = credential_key(raw, rlen);
        if (cred) any_cred = 1;
        if (cred == K_PIPELINE_KEY) pk_val = v;
        else if (cred == K_WRITE_KEY) wk_val = v;
        int f = top_field(name, nlen);
        if (f == F_REFUSE) return 0;

        if (f == F_CONTEXT && v < e && *v == '{') {
            has_context = 1;
            put_key(&j.o, &first, "context", 7);
            p = convert_context(&j, v);
            if (!p) return 0;
        } else {
            /* a string value is scanned here, once: the rules below need
             * its bytes, and whether it is plain (escape-free) */
            const char *s = NULL;
            size_t sn = 0;
            int plain = 0;
            if (v < e && *v == '"') {
                int esc = 0;
                const char *q = scan_string(v + 1, e, &esc);
                if (!q) return 0;
                p = q + 1;
                s = v + 1;
                sn = (size_t)(q - s);
                plain = !esc;
            } else {
                p = skip_other(v, e, 1);
                if (!p) return 0;
            }
            size_t vlen = (size_t)(p - v);
            /* normalize drops top-level nulls (context: null is no context)
             * and the DROP names */
            if (!is_null(v, e) && f != F_DROP) {
                int emit = 1;
                switch (f) {
                case F_CONTEXT:
                    return 0;          /* "context: must be an object" (or an array) */
                case F_TYPE:
                    if (!plain || !(type = fast_type(s, sn))) return 0;
                    break;
                case F_EVENT:
                    /* any value for page/screen; track checks the text below */
                    if (*v == '"') {
                        if (!plain) return 0;
                        /* find(e, "%S"): other whitespace bytes are raw
                         * control characters, refused by the scan */
                        for (size_t i = 0; i < sn; i++)
                            if (s[i] != ' ') { has_event_text = 1; break; }
                    }
                    break;
                case F_NAME:
                    if (!plain) return 0;
                    break;
                case F_USER_ID: case F_ANONYMOUS_ID: case F_GROUP_ID: case F_PREVIOUS_ID:
                case F_CANONICAL_ID:
                    /* ids: strings ("" = absent); numbers are the Lua path's */
                    if (!plain) return 0;
                    if (sn == 0) emit = 0;
                    if (f == F_USER_ID) has_user = sn > 0;
                    else if (f == F_ANONYMOUS_ID) has_anon = sn > 0;
                    else if (f == F_CANONICAL_ID) {
                        has_body_cid = sn > 0;
                        if (cid) emit = 0;              /* ctx.canonical_id wins */
                    }
                    break;
                case F_MESSAGE_ID:
                    if (!plain) return 0;
                    mid = s;
                    mid_len = sn;
                    /* collector.lua client_message_id(): only these two
                     * spellings make the id the client's */
                    dedupe = mid_len > 0 && (NAME_IS(raw, rlen, "messageId") ||
                                             NAME_IS(raw, rlen, "message_id"));
                    emit = 0;                           /* written last */
                    break;
                case F_TIMESTAMP: case F_SENT_AT: case F_ORIGINAL_TIMESTAMP:
                    if (!plain || !valid_iso8601(s, sn)) return 0;
                    if (f == F_TIMESTAMP) has_timestamp = 1;
                    else if (f == F_ORIGINAL_TIMESTAMP) has_original = 1;
                    break;
                case F_PROPERTIES:
                    if (*v != '{') return 0;         /* an array passes normalize: rare */
                    break;
                default:
                    break;
                }
                if (emit) put_member(&j.o, &first, name, nlen, nlim, v, vlen, e);
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
            put_str_member(&j.o, &first, "type", 4, hint, hint_len);
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
        put_str_member(&j.o, &first, "timestamp", 9, received, 24);
    }
    put_str_member(&j.o, &first, "received_at", 11, received, 24);
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
    if (key_from_ctx) {
        put_key(&j.o, &first, "pipeline_key", 12);
        put_json_string(&j.o, key, key_len);
    } else {
        put_str_member(&j.o, &first, "pipeline_key", 12, key, key_len);
    }

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
    put_str_member(&j.o, &first, "message_id", 10, mid, mid_len);
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

/* Upvalues: 1 scratch buffer (sg_scratch), 2 core.uuid, then the names of
 * the ctx fields (CTX_FIELDS, as strings made once: reading a field by a
 * name that is already a Lua string skips lua_getfield's strlen and string
 * interning, ten times a call). Stack: 1 body, 2 ctx, then the ctx fields
 * (CTX_*). */
enum { CTX_PK = 3, CTX_BASIC, CTX_CID, CTX_IP, CTX_UA, CTX_RECEIVED, CTX_HINT, CTX_SERVER, CTX_SENT,
       CTX_BUFFER, CTX_COUNT = CTX_BUFFER - CTX_PK + 1 };
#define CTX_NAME_UPVALUE 3

static const char *const CTX_FIELDS[CTX_COUNT] = {
    "pipeline_key", "basic_key", "canonical_id", "ip", "user_agent", "received_at",
    "type_hint", "server_side", "sent_at", "buffer",
};

static int l_event_json(lua_State *L)
{
    size_t blen;
    const char *body = sg_tobytes(L, 1, &blen);   /* a string or a signal.buf */
    if (!body) return luaL_argerror(L, 1, "string or buffer expected");
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    /* sg_event_convert refuses it too; checked first so that ctx is not
     * read (no __index runs) for a body that cannot pass */
    if (blen > MAX_FAST_BODY) goto fallback;
    /* lua_getfield(L, 2, CTX_FIELDS[i]), metamethods included */
    for (int i = 0; i < CTX_COUNT; i++) {
        lua_pushvalue(L, lua_upvalueindex(CTX_NAME_UPVALUE + i));
        lua_gettable(L, 2);
    }

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
    for (int i = 0; i < CTX_COUNT; i++) lua_pushstring(L, CTX_FIELDS[i]);
    lua_pushcclosure(L, l_event_json, 2 + CTX_COUNT);
    lua_setfield(L, -2, "event_json");
}
