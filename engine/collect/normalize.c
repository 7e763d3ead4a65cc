/*
 * normalize.c — one Segment/Datafly message (camelCase: userId,
 * anonymousId, context.userAgent …) → the canonical snake_case event that
 * enrichment, blueprints and customer scripts see (docs/lua-runtime.md).
 *
 * The message is a node of a parsed body (json.c): the converted levels —
 * the message, its context and the context objects whose keys are
 * converted — are walked member by member and written out with new keys;
 * every other value (properties, traits, consent, …) is copied as bytes.
 *
 * Rules (each violation is one reason of the list an invalid message gets):
 *   - `type` is track|page|screen|identify|group|alias; the route's type
 *     fills it when absent and must agree when present;
 *   - track needs a non-blank string `event`; group needs `groupId`; alias
 *     needs `previousId`; every message needs userId, anonymousId or a
 *     canonical_id (the _dfdid cookie);
 *   - ids are strings; numbers are accepted and become strings, as Segment
 *     does (an integer written with more digits than a double holds keeps
 *     them all); "" counts as absent;
 *   - timestamp, sentAt and originalTimestamp are ISO-8601 date-times;
 *   - properties, traits and context are objects (arrays pass, as they did
 *     when the Lua collector decoded them into tables).
 *
 * Conversion: the keys of the message, of its context and of
 * context.page/campaign/screen/library/session/device/os/geo/vendor_ids
 * become snake_case; other values keep theirs. When one name is sent in two
 * spellings (userId and user_id) the one that needed converting wins; when
 * one key is sent twice, the last one wins (as JSON decoders keep it).
 * Top-level nulls are dropped. A batch's context goes under each message's
 * own (the message's keys win) and a batch's sentAt stands for a message's
 * own. For identify, context.traits goes under traits (traits win).
 *
 * Set here, never taken from the message: pipeline_key, received_at,
 * canonical_id (the cookie when there is one; a message's own canonicalId
 * only without it, e.g. a server forwarding the visitor's id). Dropped:
 * writeKey/pipelineKey, partner_attrs and identity (computed server-side: a
 * client must not inject profile attributes or stitched traits).
 * context.ip and context.user_agent: for browser traffic the connection's
 * values win (a page cannot spoof them); a server-side sender's own stand
 * and the connection's only fill gaps. timestamp: as sent, else
 * originalTimestamp corrected for the client's clock skew as Segment does
 * (received_at - (sentAt - originalTimestamp)), else originalTimestamp,
 * else received_at. message_id: the sender's, else a new v4 uuid; it is
 * written last (LuaJIT hashes a long string from a few sampled bytes, and
 * events differ mostly in their ids: a high-entropy tail keeps them apart).
 */
#include "normalize.h"
#include "limits.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define IS_DIGIT(c) ((unsigned char)((c) - '0') < 10)
#define IS_UPPER(c) ((unsigned char)((c) - 'A') < 26)
#define IS_LOWER(c) ((unsigned char)((c) - 'a') < 26)
#define NAME_IS(s, n, lit) ((n) == sizeof(lit) - 1 && memcmp((s), (lit), sizeof(lit) - 1) == 0)

/* Top-level names with a rule of their own, after conversion. DROP: never
 * taken from the message. */
enum { F_OTHER, F_CONTEXT, F_TYPE, F_EVENT, F_NAME, F_USER_ID, F_ANONYMOUS_ID, F_GROUP_ID,
       F_PREVIOUS_ID, F_CANONICAL_ID, F_MESSAGE_ID, F_TIMESTAMP, F_SENT_AT, F_ORIGINAL_TIMESTAMP,
       F_PROPERTIES, F_TRAITS, F_DROP, F_COUNT };

/* context names with a rule of their own. NESTED: objects whose keys are
 * converted too. */
enum { C_OTHER, C_NESTED, C_TRAITS, C_IP, C_USER_AGENT };

/* the id fields, in the order their reasons are listed, and their wire names */
static const int ID_FIELD[] = { F_USER_ID, F_ANONYMOUS_ID, F_GROUP_ID, F_PREVIOUS_ID, F_CANONICAL_ID };
static const char *const ID_WIRE[] = { "userId", "anonymousId", "groupId", "previousId", "canonicalId" };
enum { NIDS = 5 };

#define MAX_REASONS 24

enum { MERGE_OBJECT = 1, MERGE_COPY };

typedef struct {
    uint32_t node;
    const char *dk, *sk;                 /* the key decoded, and converted */
    uint32_t dklen, sklen;
    uint8_t camel;                       /* sk differs from dk: this spelling wins */
    uint8_t field;                       /* F_* or C_* */
    uint8_t win;                         /* kept by resolve() */
    uint8_t esc;                         /* write the key escaped */
    uint8_t dead;                        /* out of the running (a dropped null) */
} member;

struct sg_norm {
    sg_bytes arena;                      /* decoded keys and strings, numbers as text */
    member *m;                           /* the member lists of one message */
    size_t mn, mcap;
    int32_t *table;                      /* resolve()'s hash */
    size_t tcap;
    uint32_t *list;                      /* merged traits, for the linking keys */
    size_t lcap;
    sg_bytes reasons;
    size_t roff[MAX_REASONS], rlen[MAX_REASONS];
    int nreasons;
    int oom;
};

/* a string: (pointer, length); s NULL is absent */
typedef struct { const char *s; size_t n; } str_t;

/* One message being converted. */
typedef struct {
    sg_norm *ws;
    const sg_json *j;
    uint32_t msg;
    const sg_norm_ctx *ctx;
    sg_bytes *out, *aux;
    sg_norm_result *r;
    size_t top, ntop;                    /* the message's members in ws->m */
    int32_t win[F_COUNT];                /* the member index of each field, or -1 */
    str_t type;                          /* the valid type */
    str_t id[NIDS];                      /* the ids as strings */
    str_t mid;                           /* the sender's message id */
    int32_t sent_node;                   /* sentAt: the message's, or the batch's */
    double t_sent, t_orig;
    int32_t ctx_traits;                  /* context.traits (an object node), or -1 */
    int merge_traits;                    /* MERGE_*: identify's traits come from context.traits */
    int32_t traits_from;                 /* context.traits, whatever it is, or -1 */
    int inf;                             /* a value written is ±inf */
} job_t;

/* ---- keys ----------------------------------------------------------------- */

/* event.lua's snake(): gsub("([%l%d])(%u)", "%1_%2") then
 * lower(gsub(r, "(%u)(%u%l)", "%1_%2")). Neither pattern's matches can
 * overlap and the two never meet (the first inserts after a lower-case
 * letter or digit, the second after an upper-case letter), so both are one
 * local rule per position. ASCII classes only, as LuaJIT's. */
size_t sg_snake(const char *s, size_t n, char *out)
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

/* Room in the arena for n bytes, reserved before a message so that the
 * pointers handed out stay valid while it is converted. */
static char *arena_take(sg_norm *ws, size_t n)
{
    if (ws->arena.cap - ws->arena.len < n) { ws->oom = 1; return NULL; }
    char *d = ws->arena.data + ws->arena.len;
    ws->arena.len += n;
    return d;
}

/* Fills m with member node c's keys; convert 0 keeps the key as it is
 * (sk = dk). */
static void key_of(sg_norm *ws, const sg_json *j, uint32_t c, member *m, int convert)
{
    const sg_jnode *n = &j->node[c];
    const char *k = j->s + n->key;
    size_t kn = n->klen;
    m->node = c;
    m->esc = (n->flags & SG_JF_KEY_ESC) != 0;
    m->win = 0;
    m->field = 0;
    m->dead = 0;
    if (m->esc) {
        char *d = arena_take(ws, kn);
        if (d) {                               /* (else ws->oom: the message fails) */
            size_t dn = sg_json_unescape(k, kn, d);
            ws->arena.len -= kn - dn;
            k = d;
            kn = dn;
        }
    }
    m->dk = k;
    m->dklen = (uint32_t)kn;
    int upper = 0;
    for (size_t i = 0; convert && i < kn && !upper; i++) upper = IS_UPPER(k[i]);
    m->sk = k;
    m->sklen = (uint32_t)kn;
    m->camel = (uint8_t)upper;
    if (upper) {
        char *d = arena_take(ws, 2 * kn);
        if (!d) return;
        m->sklen = (uint32_t)sg_snake(k, kn, d);
        ws->arena.len -= 2 * kn - m->sklen;
        m->sk = d;
    }
}

static int push(sg_norm *ws, const member *m)
{
    if (ws->mn == ws->mcap) {
        size_t cap = ws->mcap ? ws->mcap * 2 : 64;
        member *nm = realloc(ws->m, sizeof *nm * cap);
        if (!nm) { ws->oom = 1; return -1; }
        ws->m = nm;
        ws->mcap = cap;
    }
    ws->m[ws->mn++] = *m;
    return 0;
}

static uint32_t hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

/* the put() rule for member i against the earlier member o holding the
 * same converted key: 1 when i takes its place */
static int replaces(const member *o, const member *i)
{
    int same = o->dklen == i->dklen && memcmp(o->dk, i->dk, o->dklen) == 0;
    return same || i->camel;
}

/* resolve() for a few members (most objects): a fingerprint per converted
 * key (its length, first and last byte) screens the comparisons */
static void resolve_few(member *m, size_t n)
{
    uint32_t fp[64];
    for (size_t i = 0; i < n; i++) {
        if (m[i].dead) continue;
        m[i].win = 1;
        const member *x = &m[i];
        fp[i] = x->sklen ? (uint32_t)x->sklen << 16 | (uint32_t)(unsigned char)x->sk[0] << 8 |
                           (unsigned char)x->sk[x->sklen - 1] : 0;
        for (size_t k = 0; k < i; k++) {
            member *o = &m[k];
            if (!o->win || fp[k] != fp[i] || o->sklen != x->sklen || memcmp(o->sk, x->sk, x->sklen) != 0) continue;
            if (replaces(o, x)) o->win = 0;
            else m[i].win = 0;
            break;
        }
    }
}

/* event.lua's put() over members [first, first + n): one winner per
 * converted key. The same key again: the last wins (the decoder keeps the
 * last). Another spelling of it: a converted one (userId) wins over the
 * snake_case one (user_id). Sets m->win. */
static int resolve(sg_norm *ws, size_t first, size_t n)
{
    if (n <= 64) { resolve_few(ws->m + first, n); return 0; }
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    if (cap > ws->tcap) {
        int32_t *t = realloc(ws->table, sizeof *t * cap);
        if (!t) { ws->oom = 1; return -1; }
        ws->table = t;
        ws->tcap = cap;
    }
    int32_t *t = ws->table;
    for (size_t i = 0; i < cap; i++) t[i] = -1;
    member *m = ws->m + first;
    for (size_t i = 0; i < n; i++) {
        if (m[i].dead) continue;
        m[i].win = 1;
        for (uint32_t h = hash(m[i].sk, m[i].sklen) & (cap - 1);; h = (h + 1) & (cap - 1)) {
            if (t[h] < 0) { t[h] = (int32_t)i; break; }
            member *o = &m[t[h]];
            if (o->sklen != m[i].sklen || memcmp(o->sk, m[i].sk, o->sklen) != 0) continue;
            if (replaces(o, &m[i])) { o->win = 0; t[h] = (int32_t)i; }
            else m[i].win = 0;
            break;
        }
    }
    return 0;
}

#define IS(lit, id) if (memcmp(s, lit, sizeof(lit) - 1) == 0) return id

static int top_field(const char *s, size_t n)
{
    switch (n) {
    case 4: IS("type", F_TYPE); IS("name", F_NAME); break;
    case 5: IS("event", F_EVENT); break;
    case 6: IS("traits", F_TRAITS); break;
    case 7: IS("context", F_CONTEXT); IS("user_id", F_USER_ID); IS("sent_at", F_SENT_AT); break;
    case 8: IS("group_id", F_GROUP_ID); IS("identity", F_DROP); break;
    case 9: IS("timestamp", F_TIMESTAMP); IS("write_key", F_DROP); break;
    case 10: IS("message_id", F_MESSAGE_ID); IS("properties", F_PROPERTIES); break;
    case 11: IS("previous_id", F_PREVIOUS_ID); IS("received_at", F_DROP); break;
    case 12: IS("anonymous_id", F_ANONYMOUS_ID); IS("canonical_id", F_CANONICAL_ID);
             IS("pipeline_key", F_DROP); break;
    case 13: IS("partner_attrs", F_DROP); break;
    case 18: IS("original_timestamp", F_ORIGINAL_TIMESTAMP); break;
    }
    return F_OTHER;
}

static int context_field(const char *s, size_t n)
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

/* Appends the members of object node obj, their keys converted when
 * classify is given (which then names their fields). */
static int push_members(job_t *jb, uint32_t obj, int (*classify)(const char *, size_t))
{
    const sg_json *j = jb->j;
    if (!(j->node[obj].flags & SG_JF_INDEXED)) return 0;
    uint32_t c = obj + 1;
    for (uint32_t k = 0; k < j->node[obj].count; k++, c = j->node[c].next) {
        member m;
        key_of(jb->ws, j, c, &m, classify != NULL);
        if (classify) m.field = (uint8_t)classify(m.sk, m.sklen);
        if (push(jb->ws, &m) != 0) return -1;
    }
    return 0;
}

/* ---- values --------------------------------------------------------------- */

static void reason(sg_norm *ws, const char *fmt, ...)
{
    if (ws->nreasons == MAX_REASONS) return;
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= sizeof buf) n = sizeof buf - 1;
    ws->roff[ws->nreasons] = ws->reasons.len;
    ws->rlen[ws->nreasons++] = (size_t)n;
    sg_bytes_put(&ws->reasons, buf, (size_t)n);
}

static const sg_jnode *field_node(const job_t *jb, int f)
{
    return jb->win[f] < 0 ? NULL : &jb->j->node[jb->ws->m[jb->win[f]].node];
}

/* a string node's decoded bytes */
static str_t text(job_t *jb, const sg_jnode *n)
{
    str_t s = { jb->j->s + n->val + 1, n->vlen - 2 };
    if (n->flags & SG_JF_ESC) {
        char *d = arena_take(jb->ws, s.n);
        if (!d) return s;
        size_t k = sg_json_unescape(s.s, s.n, d);
        jb->ws->arena.len -= s.n - k;
        s.s = d;
        s.n = k;
    }
    return s;
}

static int int_literal(const char *p, size_t n)
{
    size_t i = n && p[0] == '-';
    if (i == n) return 0;
    for (; i < n; i++) if (!IS_DIGIT(p[i])) return 0;
    return 1;
}

/* A number as a string, the way event.lua turned a number id into one (an
 * integer below 1e15 in decimal, else tostring()'s %.14g) — except that an
 * integer written with more digits keeps them. as_id 0: tostring() alone. */
static str_t number_text(job_t *jb, const sg_jnode *n, int as_id)
{
    const char *p = jb->j->s + n->val;
    str_t s = { NULL, 0 };
    char *d = arena_take(jb->ws, n->vlen + 32);
    if (!d) return s;
    double v = sg_json_number(p, n->vlen);
    int k;
    if (as_id && v == floor(v) && v > -1e15 && v < 1e15) k = snprintf(d, 32, "%lld", (long long)v);
    else if (int_literal(p, n->vlen)) { memcpy(d, p, n->vlen); k = (int)n->vlen; }
    else k = snprintf(d, 32, "%.14g", v);
    jb->ws->arena.len -= n->vlen + 32 - (size_t)k;
    s.s = d;
    s.n = (size_t)k;
    return s;
}

static int has_non_space(str_t s)
{
    for (size_t i = 0; i < s.n; i++) {
        char c = s.s[i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\v' && c != '\f' && c != '\r') return 1;
    }
    return 0;
}

static int known_type(str_t t)
{
    static const char *const TYPES[] = { "track", "page", "screen", "identify", "group", "alias" };
    for (int i = 0; i < 6; i++)
        if (strlen(TYPES[i]) == t.n && memcmp(TYPES[i], t.s, t.n) == 0) return 1;
    return 0;
}

static int is_type(const job_t *jb, const char *t)
{
    return jb->type.s && strlen(t) == jb->type.n && memcmp(jb->type.s, t, jb->type.n) == 0;
}

/* ---- time ----------------------------------------------------------------- */

static long floordiv(long a, long b) { return a / b - (a % b != 0 && (a < 0) != (b < 0)); }

/* days since 1970-01-01 of a civil date (event.lua days_from_civil) */
static long days_from_civil(long y, long m, long d)
{
    if (m <= 2) y -= 1;
    long era = floordiv(y, 400);
    long yoe = y - era * 400;
    long doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) if (!IS_DIGIT(s[i])) return 0;
    return 1;
}

static int num(const char *s, size_t n)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) v = v * 10 + (s[i] - '0');
    return v;
}

/* the zone after the seconds (and fraction): "Z" or ±hh:mm → 1 and its
 * offset in seconds, or 0 */
static int zone(const char *z, size_t n, long *off)
{
    *off = 0;
    if (n == 1 && z[0] == 'Z') return 1;
    if (n != 6 || (z[0] != '+' && z[0] != '-') || !digits(z + 1, 2) || z[3] != ':' || !digits(z + 4, 2))
        return 0;
    int oh = num(z + 1, 2), om = num(z + 4, 2);
    if (oh > 23 || om > 59) return 0;
    *off = (long)(oh * 3600 + om * 60) * (z[0] == '-' ? -1 : 1);
    return 1;
}

/* event.lua parse_iso8601, its arithmetic in its order (the skew rule
 * subtracts these) */
int sg_parse_iso8601(const char *s, size_t n, double *t)
{
    static const int MDAYS[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    if (n < 20 || !digits(s, 4) || s[4] != '-' || !digits(s + 5, 2) || s[7] != '-' || !digits(s + 8, 2) ||
        s[10] != 'T' || !digits(s + 11, 2) || s[13] != ':' || !digits(s + 14, 2) || s[16] != ':' ||
        !digits(s + 17, 2))
        return 0;
    int y = num(s, 4), mo = num(s + 5, 2), d = num(s + 8, 2);
    int h = num(s + 11, 2), mi = num(s + 14, 2), se = num(s + 17, 2);
    if (mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || se > 60) return 0;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > MDAYS[mo - 1] && !(mo == 2 && d == 29 && leap)) return 0;
    size_t i = 19, f = 0;
    if (s[i] == '.') {
        f = ++i;
        while (i < n && IS_DIGIT(s[i])) i++;
        if (i == f || i - f > 9) return 0;
    }
    long off;
    if (!zone(s + i, n - i, &off)) return 0;
    if (!t) return 1;                          /* validity only */
    double frac = 0;
    if (f) {
        char buf[16] = "0.";
        memcpy(buf + 2, s + f, i - f);
        buf[2 + i - f] = '\0';
        frac = strtod(buf, NULL);
    }
    *t = (double)days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se + frac - (double)off;
    return 1;
}

/* hh:mm:ss of the day and the civil date, for 1970 … 9999 without the C
 * library (H. Hinnant's civil_from_days) */
static void civil(long long s, int f[6])
{
    long long z = s / 86400 + 719468, sod = s % 86400;
    long long era = z / 146097, doe = z - era * 146097;
    long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long long mp = (5 * doy + 2) / 153;
    f[2] = (int)(doy - (153 * mp + 2) / 5 + 1);
    f[1] = (int)(mp < 10 ? mp + 3 : mp - 9);
    f[0] = (int)(yoe + era * 400 + (f[1] <= 2));
    f[3] = (int)(sod / 3600);
    f[4] = (int)(sod / 60 % 60);
    f[5] = (int)(sod % 60);
}

/* event.lua iso8601(t): os.date("!%Y-%m-%dT%H:%M:%S", floor(t)) and the
 * milliseconds rounded the same way (the same double operations) */
size_t sg_iso8601(double t, char *out)
{
    double sec = floor(t);
    /* volatile: a multiply-add fused into one FMA could round differently
     * from LuaJIT's two operations */
    volatile double scaled = (t - sec) * 1000;
    double ms = floor(scaled + 0.5);
    if (ms >= 1000) { sec += 1; ms -= 1000; }
    size_t k;
    if (sec >= 0 && sec < 253402300800.0) {
        /* the common case, without printf: received_at is formatted for
         * every event */
        static const char D2[201] =
            "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
            "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
            "8081828384858687888990919293949596979899";
        int f[6];
        civil((long long)sec, f);
        char *p = out;
        memcpy(p, D2 + 2 * (f[0] / 100), 2); memcpy(p + 2, D2 + 2 * (f[0] % 100), 2); p[4] = '-';
        memcpy(p + 5, D2 + 2 * f[1], 2); p[7] = '-';
        memcpy(p + 8, D2 + 2 * f[2], 2); p[10] = 'T';
        memcpy(p + 11, D2 + 2 * f[3], 2); p[13] = ':';
        memcpy(p + 14, D2 + 2 * f[4], 2); p[16] = ':';
        memcpy(p + 17, D2 + 2 * f[5], 2);
        int m = (int)ms;
        p[19] = '.'; p[20] = (char)('0' + m / 100); memcpy(p + 21, D2 + 2 * (m % 100), 2); p[23] = 'Z';
        return 24;
    }
    time_t tt = (time_t)sec;
    struct tm tm;
    if (!gmtime_r(&tt, &tm)) return 0;
    k = strftime(out, 24, "%Y-%m-%dT%H:%M:%S", &tm);
    if (k == 0) return 0;
    return k + (size_t)snprintf(out + k, 32 - k, ".%03dZ", (int)ms);
}

/* ---- validation ----------------------------------------------------------- */

/* event.lua drops top-level nulls after decoding: a null that is the last
 * value of its key takes every member of that key out of the running (an
 * earlier value of a key sent again is gone either way). */
static void drop_nulls(job_t *jb)
{
    member *m = jb->ws->m + jb->top;
    for (size_t i = 0; i < jb->ntop; i++) {
        if (jb->j->node[m[i].node].type != SG_J_NULL) continue;
        size_t k = i + 1;
        while (k < jb->ntop && !(m[k].dklen == m[i].dklen && memcmp(m[k].dk, m[i].dk, m[i].dklen) == 0)) k++;
        if (k < jb->ntop) continue;
        for (k = 0; k <= i; k++)
            if (m[k].dklen == m[i].dklen && memcmp(m[k].dk, m[i].dk, m[i].dklen) == 0) m[k].dead = 1;
    }
}

/* The message's members, each name's winner, and the fields by name. */
static int gather(job_t *jb)
{
    sg_norm *ws = jb->ws;
    jb->top = ws->mn;
    if (push_members(jb, jb->msg, top_field) != 0) return -1;
    jb->ntop = ws->mn - jb->top;
    drop_nulls(jb);
    if (resolve(ws, jb->top, jb->ntop) != 0) return -1;
    for (int f = 0; f < F_COUNT; f++) jb->win[f] = -1;
    for (size_t i = jb->top; i < jb->top + jb->ntop; i++)
        if (ws->m[i].win && ws->m[i].field != F_OTHER) jb->win[ws->m[i].field] = (int32_t)i;
    return 0;
}

static void check_type(job_t *jb)
{
    const sg_jnode *n = field_node(jb, F_TYPE);
    str_t hint = { jb->ctx->type_hint, jb->ctx->type_hint_len };
    if (!n) {
        if (!hint.s) reason(jb->ws, "type: is required (track, page, screen, identify, group or alias)");
        jb->type = hint;
        return;
    }
    str_t t = { NULL, 0 };
    if (n->type == SG_J_STR) t = text(jb, n);
    if (!t.s || !known_type(t)) {
        reason(jb->ws, "type: must be one of track, page, screen, identify, group, alias");
        return;
    }
    jb->type = t;
    if (hint.s && (hint.n != t.n || memcmp(hint.s, t.s, t.n) != 0))
        reason(jb->ws, "type: \"%.*s\" does not match the endpoint, which takes %.*s events",
               (int)t.n, t.s, (int)hint.n, hint.s);
}

/* the ids as strings ("" is absent), then the rules that need them */
static void check_ids(job_t *jb)
{
    const sg_norm_ctx *c = jb->ctx;
    for (int k = 0; k < NIDS; k++) {
        str_t *id = &jb->id[k];
        id->s = NULL;
        id->n = 0;
        if (ID_FIELD[k] == F_CANONICAL_ID && c->canonical_id) {
            if (c->canonical_id_len) { id->s = c->canonical_id; id->n = c->canonical_id_len; }
            continue;
        }
        const sg_jnode *n = field_node(jb, ID_FIELD[k]);
        if (!n) continue;
        if (n->type == SG_J_STR) {
            str_t t = text(jb, n);
            if (t.n) *id = t;
        } else if (n->type == SG_J_NUM) {
            *id = number_text(jb, n, 1);
        } else {
            reason(jb->ws, "%s: must be a string", ID_WIRE[k]);
        }
    }
    if (!jb->id[0].s && !jb->id[1].s && !jb->id[4].s) reason(jb->ws, "userId or anonymousId is required");
    if (is_type(jb, "group") && !jb->id[2].s) reason(jb->ws, "groupId: is required for group events");
    if (is_type(jb, "alias") && !jb->id[3].s) reason(jb->ws, "previousId: is required for alias events");
}

/* t: its value, when the skew rule needs it (NULL: only whether it is valid) */
static void check_time(job_t *jb, const sg_jnode *n, const char *wire, double *t)
{
    if (!n) return;
    str_t s = { NULL, 0 };
    if (n->type == SG_J_STR) s = text(jb, n);
    if (!s.s || !sg_parse_iso8601(s.s, s.n, t))
        reason(jb->ws, "%s: must be an ISO-8601 date-time (e.g. 2026-04-17T15:37:10.484Z)", wire);
}

static int is_table(const sg_jnode *n) { return n->type == SG_J_OBJ || n->type == SG_J_ARR; }

/* every rule, each broken one a reason, in event.lua's order */
static void validate(job_t *jb)
{
    check_type(jb);
    if (is_type(jb, "track")) {
        const sg_jnode *n = field_node(jb, F_EVENT);
        if (!n || n->type != SG_J_STR || !has_non_space(text(jb, n)))
            reason(jb->ws, "event: track events need a non-empty string \"event\"");
    }
    const sg_jnode *name = field_node(jb, F_NAME);
    if (name && name->type != SG_J_STR && name->type != SG_J_NUM) reason(jb->ws, "name: must be a string");
    check_ids(jb);
    const sg_jnode *sent = field_node(jb, F_SENT_AT);
    jb->sent_node = jb->win[F_SENT_AT] >= 0 ? (int32_t)jb->ws->m[jb->win[F_SENT_AT]].node : jb->ctx->sent_at;
    if (!sent && jb->sent_node >= 0) sent = &jb->j->node[jb->sent_node];
    /* the skew rule: no timestamp, an originalTimestamp and a sentAt */
    int skew = jb->win[F_TIMESTAMP] < 0 && jb->win[F_ORIGINAL_TIMESTAMP] >= 0 && sent;
    check_time(jb, field_node(jb, F_TIMESTAMP), "timestamp", NULL);
    check_time(jb, sent, "sentAt", skew ? &jb->t_sent : NULL);
    check_time(jb, field_node(jb, F_ORIGINAL_TIMESTAMP), "originalTimestamp", skew ? &jb->t_orig : NULL);
    const sg_jnode *props = field_node(jb, F_PROPERTIES), *traits = field_node(jb, F_TRAITS);
    if (props && !is_table(props)) reason(jb->ws, "properties: must be an object");
    if (traits && !is_table(traits)) reason(jb->ws, "traits: must be an object");
    const sg_jnode *context = field_node(jb, F_CONTEXT);
    if (context && !is_table(context)) reason(jb->ws, "context: must be an object");
    const sg_jnode *mid = field_node(jb, F_MESSAGE_ID);
    jb->mid.s = NULL;
    jb->mid.n = 0;
    if (mid && mid->type == SG_J_STR) jb->mid = text(jb, mid);
    else if (mid && mid->type == SG_J_NUM) jb->mid = number_text(jb, mid, 1);
    else if (mid) reason(jb->ws, "messageId: must be a string");
}

/* client_message_id: the sender chose the id when messageId
 * (else message_id) is a non-empty string or a number. The message's
 * members, decoded, are at hand: the last of each key is its value. */
static int client_message_id(const job_t *jb)
{
    int32_t camel = -1, snake = -1;
    for (size_t i = jb->top; i < jb->top + jb->ntop; i++) {
        const member *m = &jb->ws->m[i];
        if (NAME_IS(m->dk, m->dklen, "messageId")) camel = (int32_t)m->node;
        else if (NAME_IS(m->dk, m->dklen, "message_id")) snake = (int32_t)m->node;
    }
    int32_t c = camel >= 0 && jb->j->node[camel].type != SG_J_NULL ? camel : snake;
    if (c < 0) return 0;
    const sg_jnode *n = &jb->j->node[c];
    return (n->type == SG_J_STR && n->vlen > 2) || n->type == SG_J_NUM;
}

/* ---- writing -------------------------------------------------------------- */

static void put_key(sg_bytes *o, int *first, const char *k, size_t n, int esc)
{
    if (esc) {
        if (!*first) sg_bytes_putc(o, ',');
        *first = 0;
        sg_json_put_string(o, k, n);
        sg_bytes_putc(o, ':');
        return;
    }
    if (sg_bytes_reserve(o, n + 4) != 0) return;
    char *d = o->data + o->len;
    if (!*first) *d++ = ',';
    *first = 0;
    *d++ = '"';
    memcpy(d, k, n);
    d += n;
    *d++ = '"';
    *d++ = ':';
    o->len = (size_t)(d - o->data);
}

#define PUT_KEY(jb, first, lit) put_key((jb)->out, (first), lit, sizeof(lit) - 1, 0)

static void put_value(job_t *jb, uint32_t node)
{
    jb->inf |= (jb->j->node[node].flags & SG_JF_INF) != 0;
    sg_json_put(jb->out, jb->j, node);
}

/* a context object whose keys are converted (event.lua snake_keys) */
static int put_nested(job_t *jb, uint32_t node)
{
    sg_norm *ws = jb->ws;
    size_t start = ws->mn;
    if (push_members(jb, node, context_field) != 0 || resolve(ws, start, ws->mn - start) != 0) return -1;
    sg_bytes_putc(jb->out, '{');
    int first = 1;
    for (size_t i = start; i < ws->mn; i++) {
        member *m = &ws->m[i];
        if (!m->win) continue;
        put_key(jb->out, &first, m->sk, m->sklen, m->esc);
        put_value(jb, m->node);
    }
    sg_bytes_putc(jb->out, '}');
    ws->mn = start;
    return 0;
}

/* The context's members: a batch's context under the message's own (the
 * same key: the message's value; event.lua merge_context), each converted
 * name's winner, and context.traits. [*start, +*n) in ws->m. */
static int gather_context(job_t *jb, size_t *start, size_t *n)
{
    sg_norm *ws = jb->ws;
    const sg_json *j = jb->j;
    int32_t bc = jb->ctx->batch_context;
    *start = ws->mn;
    if (bc >= 0 && j->node[bc].type == SG_J_OBJ && push_members(jb, (uint32_t)bc, context_field) != 0)
        return -1;
    if (jb->win[F_CONTEXT] >= 0) {
        uint32_t own = ws->m[jb->win[F_CONTEXT]].node;
        if (j->node[own].type == SG_J_OBJ && push_members(jb, own, context_field) != 0) return -1;
    }
    *n = ws->mn - *start;
    if (resolve(ws, *start, *n) != 0) return -1;
    jb->ctx_traits = -1;
    int32_t ct = -1;
    for (size_t i = *start; i < *start + *n; i++) {
        member *m = &ws->m[i];
        if (m->win && m->field == C_TRAITS) ct = (int32_t)m->node;
    }
    if (ct >= 0 && j->node[ct].type == SG_J_OBJ) jb->ctx_traits = ct;
    /* identify: context.traits goes under traits (traits win). An empty
     * array is an empty object; a non-empty array with traits an object
     * (or the other way round), which the Lua collector merged index by
     * index into an object, is left as it is. */
    const sg_jnode *traits = field_node(jb, F_TRAITS);
    int empty = !traits || traits->count == 0;
    jb->merge_traits = 0;
    jb->traits_from = ct;
    if (is_type(jb, "identify") && ct >= 0 && j->node[ct].count > 0) {
        if (j->node[ct].type == SG_J_OBJ && (empty || traits->type == SG_J_OBJ)) jb->merge_traits = MERGE_OBJECT;
        else if (j->node[ct].type == SG_J_ARR && empty) jb->merge_traits = MERGE_COPY;
    }
    return 0;
}

/* The context: its members, then the connection's address and user agent
 * (for browsers they replace the message's; for servers they fill gaps). */
static int put_context(job_t *jb, int *first, size_t start, size_t n)
{
    const sg_norm_ctx *c = jb->ctx;
    int cf = 1, has_ip = 0, has_ua = 0;
    PUT_KEY(jb, first, "context");
    sg_bytes_putc(jb->out, '{');
    for (size_t i = start; i < start + n; i++) {
        member m = jb->ws->m[i];            /* a copy: put_nested may move the list */
        if (!m.win) continue;
        if (m.field == C_IP) {
            has_ip = 1;
            if (!c->server_side && c->ip) continue;
        } else if (m.field == C_USER_AGENT) {
            has_ua = 1;
            if (!c->server_side && c->user_agent) continue;
        }
        put_key(jb->out, &cf, m.sk, m.sklen, m.esc);
        if (m.field == C_NESTED && jb->j->node[m.node].type == SG_J_OBJ) {
            if (put_nested(jb, m.node) != 0) return -1;
        } else {
            put_value(jb, m.node);
        }
    }
    if (c->ip && (!c->server_side || !has_ip)) {
        PUT_KEY(jb, &cf, "ip");
        sg_json_put_string(jb->out, c->ip, c->ip_len);
    }
    if (c->user_agent && (!c->server_side || !has_ua)) {
        PUT_KEY(jb, &cf, "user_agent");
        sg_json_put_string(jb->out, c->user_agent, c->user_agent_len);
    }
    sg_bytes_putc(jb->out, '}');
    return 0;
}

/* identify's traits: context.traits with traits over it. The winners are
 * left in ws->list for the linking keys; returns their count, or -1. */
static int put_merged_traits(job_t *jb, int *first)
{
    sg_norm *ws = jb->ws;
    size_t start = ws->mn;
    if (push_members(jb, (uint32_t)jb->ctx_traits, NULL) != 0) return -1;
    const sg_jnode *traits = field_node(jb, F_TRAITS);
    if (traits && traits->type == SG_J_OBJ && push_members(jb, ws->m[jb->win[F_TRAITS]].node, NULL) != 0)
        return -1;
    size_t n = ws->mn - start;
    if (resolve(ws, start, n) != 0) return -1;
    if (n > ws->lcap) {
        uint32_t *l = realloc(ws->list, sizeof *l * n);
        if (!l) { ws->oom = 1; return -1; }
        ws->list = l;
        ws->lcap = n;
    }
    int k = 0;
    PUT_KEY(jb, first, "traits");
    sg_bytes_putc(jb->out, '{');
    int tf = 1;
    for (size_t i = start; i < start + n; i++) {
        member *m = &ws->m[i];
        if (!m->win) continue;
        put_key(jb->out, &tf, m->dk, m->dklen, m->esc);
        put_value(jb, m->node);
        ws->list[k++] = m->node;
    }
    sg_bytes_putc(jb->out, '}');
    ws->mn = start;
    return k;
}

/* the message's own members, converted; ids and names as strings */
static void put_members(job_t *jb, int *first)
{
    for (size_t i = jb->top; i < jb->top + jb->ntop; i++) {
        const member *m = &jb->ws->m[i];
        const sg_jnode *n = &jb->j->node[m->node];
        if (!m->win) continue;
        int f = m->field, k = f >= F_USER_ID && f <= F_CANONICAL_ID ? f - F_USER_ID : -1;
        if (f == F_DROP || f == F_CONTEXT || f == F_MESSAGE_ID || (f == F_TRAITS && jb->merge_traits)) continue;
        if (k >= 0 && (!jb->id[k].s || (f == F_CANONICAL_ID && jb->ctx->canonical_id))) continue;
        put_key(jb->out, first, m->sk, m->sklen, m->esc);
        if ((k >= 0 || f == F_NAME) && n->type == SG_J_NUM) {
            str_t t = k >= 0 ? jb->id[k] : number_text(jb, n, 0);
            sg_json_put_string(jb->out, t.s, t.n);
        } else {
            put_value(jb, m->node);
        }
    }
}

/* type (from the route), sentAt (from the batch), timestamp, received_at,
 * canonical_id (from the cookie) and pipeline_key: what Signal adds */
static int put_added(job_t *jb, int *first, const char *received, size_t rlen)
{
    const sg_norm_ctx *c = jb->ctx;
    if (jb->win[F_TYPE] < 0) {
        PUT_KEY(jb, first, "type");
        sg_json_put_string(jb->out, jb->type.s, jb->type.n);
    }
    if (jb->win[F_SENT_AT] < 0 && c->sent_at >= 0) {
        PUT_KEY(jb, first, "sent_at");
        put_value(jb, (uint32_t)c->sent_at);
    }
    if (jb->win[F_TIMESTAMP] < 0) {
        PUT_KEY(jb, first, "timestamp");
        const member *orig = jb->win[F_ORIGINAL_TIMESTAMP] < 0 ? NULL : &jb->ws->m[jb->win[F_ORIGINAL_TIMESTAMP]];
        char buf[32];
        size_t k;
        if (orig && jb->sent_node >= 0) {
            /* Segment's clock-skew rule */
            if (!(k = sg_iso8601(c->received_at - (jb->t_sent - jb->t_orig), buf))) return -1;
            sg_json_put_string(jb->out, buf, k);
        } else if (orig) {
            put_value(jb, orig->node);
        } else {
            sg_json_put_string(jb->out, received, rlen);
        }
    }
    PUT_KEY(jb, first, "received_at");
    sg_json_put_string(jb->out, received, rlen);
    if (c->canonical_id && c->canonical_id_len) {
        PUT_KEY(jb, first, "canonical_id");
        sg_json_put_string(jb->out, c->canonical_id, c->canonical_id_len);
    }
    if (c->pipeline_key) {
        PUT_KEY(jb, first, "pipeline_key");
        sg_json_put_string(jb->out, c->pipeline_key, c->pipeline_key_len);
    }
    return 0;
}

/* ---- the conversion ------------------------------------------------------- */

static void put_aux(sg_bytes *aux, str_t s, size_t *off, size_t *len)
{
    *off = aux->len;
    *len = s.s ? s.n : 0;
    if (s.s) sg_bytes_put(aux, s.s, s.n);
}

/* the linking keys of the event just written (stitch.c) */
static void link_keys(job_t *jb, int merged)
{
    const sg_json *j = jb->j;
    const sg_jnode *traits = field_node(jb, F_TRAITS), *props = field_node(jb, F_PROPERTIES);
    sg_link_in in;
    memset(&in, 0, sizeof in);
    in.has_canonical_id = jb->id[4].s != NULL;
    in.identify = is_type(jb, "identify");
    in.user_id = jb->id[0].s;
    in.user_id_len = jb->id[0].n;
    in.user_id_node = -1;
    in.traits = (sg_obj_view){ j, -1, NULL, 0 };
    in.context_traits = (sg_obj_view){ j, jb->ctx_traits, NULL, 0 };
    in.properties = (sg_obj_view){ j, props && props->type == SG_J_OBJ ? (int32_t)(props - j->node) : -1, NULL, 0 };
    if (merged >= 0) in.traits.members = jb->ws->list, in.traits.nmembers = merged;
    else if (traits && traits->type == SG_J_OBJ) in.traits.node = (int32_t)(traits - j->node);
    sg_linking_keys(&in, jb->aux, jb->r);
}

/* The event, once the message is valid. 1, or -1. */
static int write_event(job_t *jb)
{
    char received[32];
    size_t rlen = sg_iso8601(jb->ctx->received_at, received);
    size_t cstart, cn;
    if (!rlen || gather_context(jb, &cstart, &cn) != 0) return -1;
    sg_bytes *o = jb->out;
    jb->r->ev = o->len;
    int first = 1, merged = -1;
    sg_bytes_putc(o, '{');
    put_members(jb, &first);
    if (put_added(jb, &first, received, rlen) != 0 || put_context(jb, &first, cstart, cn) != 0) return -1;
    if (jb->merge_traits == MERGE_OBJECT && (merged = put_merged_traits(jb, &first)) < 0) return -1;
    if (jb->merge_traits == MERGE_COPY) {
        PUT_KEY(jb, &first, "traits");
        put_value(jb, (uint32_t)jb->traits_from);
    }
    str_t mid = jb->mid;
    char uuid[36];
    if (!mid.s || mid.n == 0) {
        if (!jb->ctx->rand || sg_uuid4(jb->ctx->rand, uuid) != 0) return -1;
        mid.s = uuid;
        mid.n = sizeof uuid;
    }
    PUT_KEY(jb, &first, "message_id");
    sg_json_put_string(o, mid.s, mid.n);
    sg_bytes_putc(o, '}');
    jb->r->ev_len = o->len - jb->r->ev;
    put_aux(jb->aux, mid, &jb->r->mid, &jb->r->mid_len);
    put_aux(jb->aux, jb->id[4], &jb->r->cid, &jb->r->cid_len);
    link_keys(jb, merged);
    return 1;
}

int sg_normalize(sg_norm *ws, const sg_json *j, uint32_t msg, const sg_norm_ctx *ctx,
                 sg_bytes *out, sg_bytes *aux, sg_norm_result *r)
{
    memset(r, 0, sizeof *r);
    ws->nreasons = 0;
    ws->mn = 0;
    ws->oom = 0;
    sg_bytes_reset(&ws->reasons);
    sg_bytes_reset(&ws->arena);
    /* decoded keys and strings are never longer than their JSON, converted
     * keys at most twice as long, numbers as text at most 32 bytes longer */
    size_t need = 4 * (size_t)j->node[msg].vlen + 1024;
    if (ctx->batch_context >= 0) need += 4 * (size_t)j->node[ctx->batch_context].vlen;
    if (ctx->sent_at >= 0) need += j->node[ctx->sent_at].vlen;
    if (sg_bytes_reserve(&ws->arena, need) != 0) return -1;
    /* an empty array decodes to the same empty table as {} */
    if (j->node[msg].type != SG_J_OBJ && !(j->node[msg].type == SG_J_ARR && j->node[msg].count == 0)) {
        reason(ws, "message must be a JSON object");
        r->nreasons = ws->nreasons;
        return 0;
    }
    job_t jb;
    memset(&jb, 0, sizeof jb);
    jb.ws = ws; jb.j = j; jb.msg = msg; jb.ctx = ctx; jb.out = out; jb.aux = aux; jb.r = r;
    if (gather(&jb) != 0) return -1;
    validate(&jb);
    r->dedupe = client_message_id(&jb);
    if (ws->oom) return -1;
    if (ws->nreasons == 0) {
        size_t mark = out->len, amark = aux->len;
        if (write_event(&jb) < 0 || ws->oom || out->oom || aux->oom) return -1;
        if (jb.inf) {                        /* lua-cjson could not have encoded it */
            out->len = mark;
            aux->len = amark;
            r->unstorable = 1;
            reason(ws, SG_NORM_UNSTORABLE);
        }
    }
    r->nreasons = ws->nreasons;
    return ws->nreasons == 0 ? 1 : 0;
}

const char *sg_norm_reason(const sg_norm *ws, int i, size_t *len)
{
    *len = ws->rlen[i];
    return ws->reasons.data + ws->roff[i];
}

sg_norm *sg_norm_new(void)
{
    return calloc(1, sizeof(sg_norm));
}

void sg_norm_free(sg_norm *ws)
{
    if (!ws) return;
    sg_bytes_free(&ws->arena);
    sg_bytes_free(&ws->reasons);
    free(ws->m);
    free(ws->table);
    free(ws->list);
    free(ws);
}
