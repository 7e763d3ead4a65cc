/*
 * json.c — reads request bodies the way lua-cjson 2.1 decodes them, and
 * writes JSON.
 *
 * The collector's error answers quote the decoder ("body is not valid JSON:
 * Expected comma or object end but found T_STRING at character 8"), clients
 * and specs read those messages, and the Lua collector used lua-cjson: so
 * this reader follows cjson's tokenizer step by step — the same tokens, the
 * same leniencies (raw control characters in strings, "1." and "-.5" as
 * numbers, the input ending at its first NUL), the same refusals (leading
 * zeros, hex, NaN/Infinity, lone surrogates, nesting deeper than 32) and
 * the same positions in the messages.
 *
 * What it keeps is an index, not a decoded tree: the members of the
 * containers down to a given depth (a batch, its messages, their context,
 * its objects) become nodes pointing into the body, with flags saying
 * whether a value needs more than a byte copy to be written back. The rest
 * (properties, consent, …) is validated once and copied as bytes. Numbers
 * in particular are never converted: an order id of 1234567890123456789
 * reaches the stored event digit for digit.
 */
#include "json.h"
#include "limits.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define IS_DIGIT(c) ((unsigned char)((c) - '0') < 10)

/* cjson's token types; the names are its names, quoted in its messages */
enum { T_OBJ_BEGIN, T_OBJ_END, T_ARR_BEGIN, T_ARR_END, T_STRING, T_NUMBER, T_BOOLEAN, T_NULL,
       T_COLON, T_COMMA, T_END, T_WHITESPACE, T_ERROR };
static const char *const TOKEN_NAME[] = {
    "T_OBJ_BEGIN", "T_OBJ_END", "T_ARR_BEGIN", "T_ARR_END", "T_STRING", "T_NUMBER", "T_BOOLEAN",
    "T_NULL", "T_COLON", "T_COMMA", "T_END", "T_WHITESPACE", "T_ERROR",
};

typedef struct {
    int type;
    const char *at;          /* where it starts */
    const char *end;         /* past it */
    const char *err;         /* T_ERROR: cjson's word for it */
    const char *err_at;      /* T_ERROR: where (a bad escape inside a string) */
    uint8_t flags;           /* SG_JF_* of a string or number */
    uint8_t lit;             /* T_BOOLEAN: SG_J_TRUE or SG_J_FALSE */
} token;

/* A member of an object being parsed: enough to tell which members a
 * decoder keeps when a key repeats (the last one). */
struct sg_jmember {
    uint32_t key, klen;
    uint8_t esc, flags;
};

typedef struct {
    sg_json *j;
    const char *s, *e, *p;
    int depth, index_depth;
    int oom;
} parser;

/* ---- scanning ------------------------------------------------------------- */

/* Bytes a string scan stops at: '"', '\\' and the control characters
 * (allowed raw, as cjson allows them, but flagged for rewriting). */
static const unsigned char STOP[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
};

#ifdef __SSE2__
/* The STOP bytes among the 16 at x, as a bit mask. SSE2 has no unsigned
 * compare: x <= 0x1f is min(x, 0x1f) == x. */
static inline unsigned stop_mask16(__m128i x)
{
    __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('"')),
                                            _mm_cmpeq_epi8(x, _mm_set1_epi8('\\'))),
                               _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(0x1f)), x));
    return (unsigned)_mm_movemask_epi8(hit);
}
#endif

/* The first STOP byte in [p, e), or e. Strings are most of a body's bytes. */
static inline const char *find_stop(const char *p, const char *e)
{
#ifdef __SSE2__
    while (e - p >= 16) {
        unsigned m = stop_mask16(_mm_loadu_si128((const __m128i *)(const void *)p));
        if (m) return p + __builtin_ctz(m);
        p += 16;
    }
#endif
    while (p < e && !STOP[(unsigned char)*p]) p++;
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

/* p at a '\\' → past its escape, or NULL; *err says why (cjson's
 * json_next_string_token and json_append_unicode_escape) */
static const char *scan_escape(const char *p, const char *e, const char **err)
{
    char c = e - p >= 2 ? p[1] : '\0';
    switch (c) {
    case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
        return p + 2;
    case 'u': {
        int cp = hex4(p + 2, e);
        if (cp >= 0 && (cp & 0xF800) == 0xD800) {
            /* a high surrogate, then an escaped low one */
            int lo = (cp & 0x400) || e - p < 12 || p[6] != '\\' || p[7] != 'u' ? -1 : hex4(p + 8, e);
            if (lo >= 0 && (lo & 0xFC00) == 0xDC00) return p + 12;
            cp = -1;
        }
        if (cp >= 0) return p + 6;
        *err = "invalid unicode escape code";
        return NULL;
    }
    default:
        *err = "invalid escape code";
        return NULL;
    }
}

#if defined(__GNUC__)
#define HOT inline __attribute__((always_inline))
#else
#define HOT inline
#endif

/* A string token: t->at at its opening quote. */
static HOT void scan_string(parser *ps, token *t)
{
    const char *p = t->at + 1, *e = ps->e;
    t->type = T_STRING;
    t->flags = 0;
    for (;;) {
        p = find_stop(p, e);
        if (p >= e) {
            t->type = T_ERROR;
            t->err = "unexpected end of string";
            t->err_at = p;
            return;
        }
        if (*p == '"') break;
        if (*p == '\\') {
            const char *q = scan_escape(p, e, &t->err);
            if (!q) {
                t->type = T_ERROR;
                t->err_at = p;
                return;
            }
            t->flags |= SG_JF_ESC;
            p = q;
        } else {
            t->flags |= SG_JF_REWRITE;         /* a raw control character */
            p++;
        }
    }
    t->end = p + 1;
}

/* Whether the number whose significant digits start at exponent `lead` (a
 * decimal exponent) times 10^ex overflows a double. Decided from the
 * exponents, except right at the edge, where strtod does (1.79e308 is
 * finite, 1.8e308 is not). */
static int overflows(long lead, long ex, const char *p, const char *q)
{
    if (lead + ex < 308) return 0;
    if (lead + ex > 308) return 1;
    return sg_json_number(p, (size_t)(q - p)) * 0 != 0;   /* inf * 0 is NaN */
}

/* A number token: what strtod accepts after cjson's json_is_invalid_number
 * (no leading zeros, no hex, no inf/nan). t->at at its first byte. */
static void scan_number(parser *ps, token *t)
{
    const char *p = t->at, *q = p, *e = ps->e;
    t->type = T_ERROR;
    t->err = "invalid number";
    t->err_at = p;
    if (*q == '-') q++;
    if (q < e && *q == '0' && q + 1 < e && ((q[1] | 0x20) == 'x' || IS_DIGIT(q[1]))) return;
    const char *i0 = q;
    long lead = 0;
    int zero = 1;
    while (q < e && IS_DIGIT(*q)) {
        if (zero && *q != '0') { zero = 0; lead = -(long)(q - i0); }
        q++;
    }
    long idig = q - i0, fdig = 0;
    if (!zero) lead += idig - 1;
    int dot = q < e && *q == '.';
    if (dot) {
        const char *f0 = ++q;
        while (q < e && IS_DIGIT(*q)) {
            if (zero && *q != '0') { zero = 0; lead = -(long)(q - f0) - 1; }
            q++;
        }
        fdig = q - f0;
    }
    if (idig + fdig == 0) return;               /* "-", "-.", "-x": strtod converts nothing */
    long ex = 0;
    if (q < e && (*q | 0x20) == 'e') {
        const char *x = q + 1;
        int neg = x < e && *x == '-';
        if (x < e && (*x == '+' || *x == '-')) x++;
        if (x < e && IS_DIGIT(*x)) {           /* else strtod stops before the 'e' */
            for (; x < e && IS_DIGIT(*x); x++)
                if (ex < 100000) ex = ex * 10 + (*x - '0');
            if (neg) ex = -ex;
            q = x;
        }
    }
    t->type = T_NUMBER;
    t->end = q;
    t->flags = (idig == 0 || (dot && fdig == 0)) ? SG_JF_REWRITE : 0;
    if (!zero && overflows(lead, ex, p, q)) t->flags |= SG_JF_INF;
}

static void literal(parser *ps, token *t, const char *word, size_t n, int type, int lit)
{
    if ((size_t)(ps->e - t->at) >= n && memcmp(t->at, word, n) == 0) {
        t->type = type;
        t->lit = (uint8_t)lit;
        t->end = t->at + n;
    } else {
        t->type = T_ERROR;
        t->err = "invalid token";
        t->err_at = t->at;
    }
}

/* cjson's json_next_token: whitespace is ' ', '\t', '\r' and '\n' only */
static HOT void next_token(parser *ps, token *t)
{
    const char *p = ps->p, *e = ps->e;
    while (p < e && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
    t->at = p;
    t->end = p + 1;
    t->flags = 0;
    if (p >= e) { t->type = T_END; t->end = p; ps->p = p; return; }
    switch (*p) {
    case '{': t->type = T_OBJ_BEGIN; break;
    case '}': t->type = T_OBJ_END; break;
    case '[': t->type = T_ARR_BEGIN; break;
    case ']': t->type = T_ARR_END; break;
    case ':': t->type = T_COLON; break;
    case ',': t->type = T_COMMA; break;
    case '"': scan_string(ps, t); break;
    case 't': literal(ps, t, "true", 4, T_BOOLEAN, SG_J_TRUE); break;
    case 'f': literal(ps, t, "false", 5, T_BOOLEAN, SG_J_FALSE); break;
    case 'n': literal(ps, t, "null", 4, T_NULL, SG_J_NULL); break;
    default:
        if (*p == '-' || IS_DIGIT(*p)) {
            scan_number(ps, t);
        } else {
            t->type = T_ERROR;
            t->err = "invalid token";
            t->err_at = p;
        }
    }
    ps->p = t->type == T_ERROR ? p : t->end;
}

/* ---- parsing -------------------------------------------------------------- */

static int fail(parser *ps, const char *expected, const token *t)
{
    const char *found = t->type == T_ERROR ? t->err : TOKEN_NAME[t->type];
    const char *at = t->type == T_ERROR ? t->err_at : t->at;
    snprintf(ps->j->err, sizeof ps->j->err, "Expected %s but found %s at character %ld",
             expected, found, (long)(at - ps->s) + 1);
    return -1;
}

/* A new node, or -1 (out of memory) */
static int32_t new_node(parser *ps)
{
    sg_json *j = ps->j;
    if (j->nnodes == j->cap) {
        uint32_t cap = j->cap ? j->cap * 2 : 256;
        sg_jnode *n = realloc(j->node, sizeof *n * cap);
        if (!n) { ps->oom = 1; return -1; }
        j->node = n;
        j->cap = cap;
    }
    return (int32_t)j->nnodes++;
}

static int parse_value(parser *ps, token *t, int32_t node);

/* A child of an indexed container: a node, unless out of memory (-1) */
static int32_t child(parser *ps, const token *key)
{
    int32_t c = new_node(ps);
    if (c < 0) return -1;
    sg_jnode *n = &ps->j->node[c];
    n->key = key ? (uint32_t)(key->at + 1 - ps->s) : 0;
    n->klen = key ? (uint32_t)(key->end - key->at - 2) : 0;
    /* a key with escapes or raw control characters is decoded (and written
     * back escaped) rather than copied */
    n->flags = key && (key->flags & (SG_JF_ESC | SG_JF_REWRITE)) ? SG_JF_KEY_ESC : 0;
    n->count = 0;
    return c;
}

/* cjson's json_decode_descend: the depth limit, counted on entering */
static int descend(parser *ps, const token *t)
{
    if (++ps->depth <= COLLECT_MAX_DEPTH) return 0;
    snprintf(ps->j->err, sizeof ps->j->err, "Found too many nested data structures (%d) at character %ld",
             ps->depth, (long)(t->end - ps->s));
    return -1;
}

static int push_member(parser *ps, const token *key, int flags)
{
    sg_json *j = ps->j;
    if (j->nstack == j->stackcap) {
        uint32_t cap = j->stackcap ? j->stackcap * 2 : 64;
        struct sg_jmember *m = realloc(j->stack, sizeof *m * cap);
        if (!m) { ps->oom = 1; return -1; }
        j->stack = m;
        j->stackcap = cap;
    }
    struct sg_jmember *m = &j->stack[j->nstack++];
    m->key = (uint32_t)(key->at + 1 - ps->s);
    m->klen = (uint32_t)(key->end - key->at - 2);
    m->esc = (key->flags & SG_JF_ESC) != 0;
    m->flags = (uint8_t)flags;
    return 0;
}

static int member_key_eq(const parser *ps, const struct sg_jmember *a, const struct sg_jmember *b)
{
    const char *ka = ps->s + a->key, *kb = ps->s + b->key;
    if (!a->esc && !b->esc) return a->klen == b->klen && memcmp(ka, kb, a->klen) == 0;
    char *da = malloc(a->klen + 1), *db = malloc(b->klen + 1);
    int eq = 0;
    if (da && db) {
        size_t na = sg_json_unescape(ka, a->klen, da), nb = sg_json_unescape(kb, b->klen, db);
        eq = na == nb && memcmp(da, db, na) == 0;
    }
    free(da);
    free(db);
    return eq;
}

/* An object's INF flag, from the members pushed at stack[base …] — those
 * from its first ±inf value on: only a later key can take that value's
 * place — counting only the members a decoder keeps (1e999 under a key sent
 * again later is gone). */
static int object_inf(parser *ps, uint32_t base)
{
    const struct sg_jmember *m = ps->j->stack + base;
    uint32_t n = ps->j->nstack - base;
    for (uint32_t i = 0; i < n; i++) {
        if (!(m[i].flags & SG_JF_INF)) continue;
        int kept = 1;
        for (uint32_t k = i + 1; k < n && kept; k++) kept = !member_key_eq(ps, &m[i], &m[k]);
        if (kept) return SG_JF_INF;
    }
    return 0;
}

/* After a value or a key: the expected byte right there (compact JSON, the
 * common case) is taken without a token; anything else goes the token way,
 * which is cjson's. */
static inline int take(parser *ps, char c)
{
    if (ps->p < ps->e && *ps->p == c) { ps->p++; return 1; }
    return 0;
}

/* An object's members after its '{' → its subtree's flags, or -1.
 * indexed: its members become nodes. */
static int parse_object(parser *ps, int indexed, uint32_t *count)
{
    token t, key;
    uint32_t base = ps->j->nstack;
    int flags = 0, pushing = 0;
    next_token(ps, &t);
    if (t.type == T_OBJ_END) return 0;
    for (;;) {
        if (t.type != T_STRING) return fail(ps, "object key string", &t);
        key = t;
        if (!take(ps, ':')) {
            next_token(ps, &t);
            if (t.type != T_COLON) return fail(ps, "colon", &t);
        }
        next_token(ps, &t);
        int32_t c = -1;
        if (indexed && (c = child(ps, &key)) < 0) return -1;
        int f = parse_value(ps, &t, c);
        if (f < 0) return -1;
        flags |= f;
        pushing |= f & SG_JF_INF;
        if (pushing && push_member(ps, &key, f) != 0) return -1;
        (*count)++;
        if (take(ps, ',')) {
            /* the next key */
        } else if (take(ps, '}')) {
            break;
        } else {
            next_token(ps, &t);
            if (t.type == T_OBJ_END) break;
            if (t.type != T_COMMA) return fail(ps, "comma or object end", &t);
        }
        next_token(ps, &t);
    }
    if (pushing) flags = (flags & ~SG_JF_INF) | object_inf(ps, base);
    ps->j->nstack = base;
    return flags;
}

static int parse_array(parser *ps, int indexed, uint32_t *count)
{
    token t;
    int flags = 0;
    next_token(ps, &t);
    if (t.type == T_ARR_END) return 0;
    for (;;) {
        int32_t c = -1;
        if (indexed && (c = child(ps, NULL)) < 0) return -1;
        int f = parse_value(ps, &t, c);
        if (f < 0) return -1;
        flags |= f;
        (*count)++;
        if (take(ps, ',')) {
            /* the next element */
        } else if (take(ps, ']')) {
            return flags;
        } else {
            next_token(ps, &t);
            if (t.type == T_ARR_END) return flags;
            if (t.type != T_COMMA) return fail(ps, "comma or array end", &t);
        }
        next_token(ps, &t);
    }
}

/* cjson's json_process_value for the token t → the value's flags, or -1.
 * node: the value's node (its key already set), or -1 for none. */
static int parse_value(parser *ps, token *t, int32_t node)
{
    int type, flags = t->flags, indexed = 0;
    uint32_t count = 0;
    switch (t->type) {
    case T_STRING: type = SG_J_STR; break;
    case T_NUMBER: type = SG_J_NUM; break;
    case T_BOOLEAN: type = t->lit; break;
    case T_NULL: type = SG_J_NULL; break;
    case T_OBJ_BEGIN:
    case T_ARR_BEGIN:
        if (descend(ps, t) != 0) return -1;
        type = t->type == T_OBJ_BEGIN ? SG_J_OBJ : SG_J_ARR;
        indexed = node >= 0 && ps->depth <= ps->index_depth;
        flags = type == SG_J_OBJ ? parse_object(ps, indexed, &count) : parse_array(ps, indexed, &count);
        ps->depth--;
        if (flags < 0) return -1;
        break;
    default:
        return fail(ps, "value", t);
    }
    if (node >= 0) {
        sg_jnode *n = &ps->j->node[node];
        n->type = (uint8_t)type;
        n->flags |= (uint8_t)(flags | (indexed ? SG_JF_INDEXED : 0));
        n->val = (uint32_t)(t->at - ps->s);
        n->vlen = (uint32_t)(ps->p - t->at);
        n->count = indexed ? count : 0;
        n->next = ps->j->nnodes;
    }
    return flags & (SG_JF_REWRITE | SG_JF_INF);
}

int sg_json_parse(sg_json *j, const char *s, size_t n, int index_depth)
{
    j->err[0] = '\0';
    j->nnodes = 0;
    /* cjson reads a NUL-terminated string, and refuses a NUL in its first
     * two bytes as a sign of UTF-16 or UTF-32 */
    if (n >= 2 && (s[0] == '\0' || s[1] == '\0')) {
        snprintf(j->err, sizeof j->err, "JSON parser does not support UTF-16 or UTF-32");
        return -1;
    }
    const char *nul = memchr(s, '\0', n);
    if (nul) n = (size_t)(nul - s);
    if (n > UINT32_MAX / 2) return -2;
    j->s = s;
    j->n = n;
    j->nstack = 0;
    parser ps = { j, s, s + n, s, 0, index_depth, 0 };
    token t;
    next_token(&ps, &t);
    int32_t root = new_node(&ps);
    if (root < 0) return -2;
    j->node[root].key = j->node[root].klen = 0;
    j->node[root].flags = 0;
    if (parse_value(&ps, &t, root) < 0) return ps.oom ? -2 : -1;
    next_token(&ps, &t);
    if (t.type != T_END) return fail(&ps, "the end", &t);
    return 0;
}

void sg_json_free(sg_json *j)
{
    free(j->node);
    free(j->stack);
    j->node = NULL;
    j->stack = NULL;
    j->nnodes = j->cap = j->nstack = j->stackcap = 0;
}

/* ---- reading values ------------------------------------------------------- */

static size_t utf8(char *out, unsigned cp)
{
    if (cp <= 0x7F) { out[0] = (char)cp; return 1; }
    if (cp <= 0x7FF) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp <= 0xFFFF) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t sg_json_unescape(const char *src, size_t n, char *out)
{
    const char *p = src, *e = src + n;
    size_t k = 0;
    while (p < e) {
        const char *b = memchr(p, '\\', (size_t)(e - p));
        size_t run = (size_t)((b ? b : e) - p);
        memmove(out + k, p, run);
        k += run;
        if (!b) break;
        char c = b[1];
        p = b + 2;
        switch (c) {
        case 'b': out[k++] = '\b'; break;
        case 'f': out[k++] = '\f'; break;
        case 'n': out[k++] = '\n'; break;
        case 'r': out[k++] = '\r'; break;
        case 't': out[k++] = '\t'; break;
        case 'u': {
            unsigned cp = (unsigned)hex4(b + 2, e);
            p = b + 6;
            if ((cp & 0xF800) == 0xD800) {
                cp = 0x10000 + (((cp & 0x3FF) << 10) | ((unsigned)hex4(b + 8, e) & 0x3FF));
                p = b + 12;
            }
            k += utf8(out + k, cp);
            break;
        }
        default: out[k++] = c; break;      /* '"', '\\', '/' */
        }
    }
    return k;
}

int sg_json_key_is(const sg_json *j, uint32_t c, const char *name, size_t n)
{
    const sg_jnode *m = &j->node[c];
    const char *k = j->s + m->key;
    if (!(m->flags & SG_JF_KEY_ESC)) return m->klen == n && memcmp(k, name, n) == 0;
    /* an escape stands for at most 6 bytes: longer keys cannot decode to name */
    char buf[256];
    if (m->klen > sizeof buf || m->klen > 6 * n) return 0;
    size_t dn = sg_json_unescape(k, m->klen, buf);
    return dn == n && memcmp(buf, name, n) == 0;
}

int32_t sg_json_member(const sg_json *j, uint32_t i, const char *name, size_t n)
{
    int32_t found = -1;
    uint32_t c = i + 1;
    for (uint32_t k = 0; k < j->node[i].count; k++, c = j->node[c].next)
        if (sg_json_key_is(j, c, name, n)) found = (int32_t)c;
    return found;
}

double sg_json_number(const char *p, size_t n)
{
    char buf[64];
    char *s = n < sizeof buf ? buf : malloc(n + 1);
    if (!s) return 0;
    memcpy(s, p, n);
    s[n] = '\0';
    double v = strtod(s, NULL);
    if (s != buf) free(s);
    return v;
}

/* ---- writing -------------------------------------------------------------- */

/* A number in strict JSON: "-.5" → "-0.5", "1." → "1", "1.e5" → "1e5" */
static const char *put_number(sg_bytes *o, const char *p, const char *e)
{
    if (*p == '-') { sg_bytes_putc(o, '-'); p++; }
    if (*p == '.') sg_bytes_putc(o, '0');
    while (p < e && (IS_DIGIT(*p) || *p == '.' || *p == 'e' || *p == 'E' || *p == '+' || *p == '-')) {
        if (!(*p == '.' && !(p + 1 < e && IS_DIGIT(p[1])))) sg_bytes_putc(o, *p);
        p++;
    }
    return p;
}

/* a string's raw control characters as escapes; p after its opening quote */
static const char *put_string_body(sg_bytes *o, const char *p, const char *e)
{
    static const char HEX[] = "0123456789abcdef";
    while (p < e) {
        const char *q = find_stop(p, e);
        sg_bytes_put(o, p, (size_t)(q - p));
        if (q >= e) return q;
        if (*q == '"') { sg_bytes_putc(o, '"'); return q + 1; }
        if (*q == '\\') { sg_bytes_put(o, q, 2); p = q + 2; continue; }   /* \u's digits follow as bytes */
        char esc[6] = { '\\', 'u', '0', '0', HEX[(unsigned char)*q >> 4], HEX[*q & 15] };
        sg_bytes_put(o, esc, 6);
        p = q + 1;
    }
    return p;
}

void sg_json_put_bytes(sg_bytes *o, const char *p, size_t n, int rewrite)
{
    if (!rewrite) { sg_bytes_put(o, p, n); return; }
    const char *e = p + n;
    while (p < e) {
        if (*p == '"') {
            sg_bytes_putc(o, '"');
            p = put_string_body(o, p + 1, e);
        } else if (*p == '-' || IS_DIGIT(*p)) {
            p = put_number(o, p, e);
        } else {
            sg_bytes_putc(o, *p++);
        }
    }
}

void sg_json_put(sg_bytes *o, const sg_json *j, uint32_t i)
{
    const sg_jnode *n = &j->node[i];
    sg_json_put_bytes(o, j->s + n->val, n->vlen, n->flags & SG_JF_REWRITE);
}

void sg_json_put_string(sg_bytes *o, const char *s, size_t n)
{
    static const char HEX[] = "0123456789abcdef";
    if (sg_bytes_reserve(o, 6 * n + 2) != 0) return;
    char *d = o->data + o->len;
    *d++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
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
    }
    *d++ = '"';
    o->len = (size_t)(d - o->data);
}
