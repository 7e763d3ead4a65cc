/*
 * ingest.c — the collector's C lane: a plain single event, from the parsed
 * request to the durable XADD and the 200, without entering Lua.
 *
 * Why: on POST /v1/t the engine spent ~25 µs of CPU per request, and under
 * half of it was the work itself (parse, convert, store). The rest was
 * the machinery of running a Lua handler: a coroutine per request, the
 * request and header tables, the interpreter walking collector.lua, the
 * reply headers read back from a Lua table. This lane does the same work in
 * one C pass per request and stores the requests of one loop turn with one
 * group commit, like the Lua collector does: ~12 µs (bench/README.md).
 *
 * What it takes (everything else goes to Lua, unchanged): POST on a
 * single-event route of the collector (/v1/t /v1/p /v1/s, /v1/track
 * /v1/page /v1/screen) with no Content-Encoding, a body of at most
 * max_message bytes that sg_event_convert (l_event.c) accepts, a pipeline
 * key that is configured (X-Pipeline-Key, or pipelineKey/writeKey in the
 * body), no Authorization unless the header carries the key, none of the
 * headers it reads repeated, and forwarding headers it can resolve exactly.
 * So every refusal (400/401/413/415) and every unusual shape keep the Lua
 * collector's messages; the lane answers only 200 and 503.
 *
 * What it mirrors (lua/signal/collector.lua, identity.lua, cors.lua): the
 * same raw stream entry (ev, in), the same dedupe windows (one HMGET per
 * window, then one MULTI with an XADD per new message and one HSET of the
 * new ids; the ids of a failed XADD deleted again), the same
 * _dfdid cookie rules, client address behind trusted proxies, CORS headers
 * and metrics (counted here, added to signal.observe.metrics at its flush through
 * core.ingest_stats). The differences a client can see: none; the
 * integration spec spec/02-integration/13-ingest_lane_spec.lua runs the
 * same requests through both paths and compares what was stored.
 *
 * Lifetime: a request the lane holds keeps its connection busy (the server
 * keeps the struct until the reply); a group lives until both its reply and
 * every Redis callback it is owed have come (hiredis calls each one once,
 * with NULL on disconnect). The lane is per worker (worker_t.ingest).
 */
#define _GNU_SOURCE   /* memmem */
#include "ingest.h"
#include "l_core.h"
#include "log.h"
#include "server.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <lauxlib.h>

#define MAX_ROUTES 16
#define MAX_BUCKETS 32
/* Requests per group commit; more in one loop turn start another group. */
#define GROUP_MAX 512
/* A group and its buffers (~100 KB at a few dozen requests) are kept for
 * the next one: growing them anew each loop turn cost a realloc cascade,
 * copies and malloc_consolidate per group. Under load about six groups
 * are in flight at once (bench/README.md): keep that many. */
#define SPARE_GROUPS 8

static const char OK_BODY[] = "{\"success\":true}";
static const char UNAVAILABLE_BODY[] =
    "{\"error\":{\"code\":\"REDIS_UNAVAILABLE\",\"message\":\"events could not be stored "
    "(Redis is unavailable); nothing was accepted, retry later\"}}";
static const char JSON_HEADER[] = "Content-Type: application/json\r\n";

/* ---- configuration (core.ingest_configure) -------------------------------- */

typedef struct {
    char *path;
    size_t plen;
    char *hint;
    size_t hlen;
    int server_side;
    uint64_t counts[MAX_BUCKETS + 1];   /* request durations, per bucket */
    double sum;
} lane_route;

/* Per pipeline key, across reconfigurations: the metrics deltas since the
 * last core.ingest_stats. */
typedef struct {
    char *key;
    uint64_t received, accepted, deduplicated;
} lane_stat;

typedef struct group group_t;

typedef struct {
    char *key;
    size_t klen;
    char *raw, *dedupe;                /* stream key, dedupe-window key prefix */
    size_t rawlen, dedupelen;
    long unlinked;                     /* the last window whose window - 2 was unlinked */
    long expiring;                     /* the last window whose EXPIREAT a commit ran */
    char **origins;                    /* canonical (config.lua) */
    size_t *olens;
    int norigins;
    int stat;                          /* index in lane.stats */
    group_t *open;                     /* the group still taking requests */
} lane_pipeline;

typedef struct {
    unsigned char b[16];
    int len, bits;                     /* len 4 (IPv4, also mapped) or 16 */
} lane_net;

/* ---- RESP formatting ------------------------------------------------------------ */

/* A growing byte buffer; bad once an allocation failed (then the bytes
 * are dropped by whoever checks). */
typedef struct {
    char *b;
    size_t n, cap;
    int bad;
} resp_t;

static void r_put(resp_t *r, const char *s, size_t n)
{
    if (r->bad) return;
    if (r->n + n > r->cap) {
        size_t cap = r->cap ? r->cap : 16 * 1024;
        while (cap < r->n + n) cap *= 2;
        char *b = realloc(r->b, cap);
        if (!b) { r->bad = 1; return; }
        r->b = b;
        r->cap = cap;
    }
    memcpy(r->b + r->n, s, n);
    r->n += n;
}

#define R_LIT(r, s) r_put((r), s, sizeof(s) - 1)

/* "*<n>\r\n" or "$<n>\r\n" */
static void r_len(resp_t *r, char kind, size_t v)
{
    char buf[24];
    size_t k = 0;
    buf[k++] = kind;
    k += sg_put_uint(buf + k, v);
    buf[k++] = '\r';
    buf[k++] = '\n';
    r_put(r, buf, k);
}

static void r_arg(resp_t *r, const char *s, size_t n)
{
    r_len(r, '$', n);
    r_put(r, s, n);
    R_LIT(r, "\r\n");
}

/* a dedupe window's hash name: <prefix><w> */
static void r_window(resp_t *r, const char *prefix, size_t plen, long w)
{
    char num[24];
    int n = snprintf(num, sizeof num, "%ld", w);
    r_len(r, '$', plen + (size_t)n);
    r_put(r, prefix, plen);
    r_put(r, num, (size_t)n);
    R_LIT(r, "\r\n");
}

/* ---- group commit ------------------------------------------------------------ */

/* One request of a group. Its Redis commands are formatted (RESP) into the
 * group's data when it joins, so the event bytes are copied once on their
 * way from the request to hiredis. */
typedef struct {
    struct sg_conn *c;
    size_t cmd, xaddl;                 /* its XADD */
    size_t mid, midl;                  /* the client's messageId (midl 0: no dedupe) */
    size_t hdr, hdrl, cookiel;         /* reply headers; the cookie follows */
    double t0;
    int route;
    unsigned dup : 1, asked : 1;       /* asked: its id is in the HMGETs */
} entry_t;

typedef struct sg_ingest lane_t;

struct group {
    lane_t *lane;
    lane_pipeline *p;
    group_t *next_ready;               /* flush queue */
    group_t *prev, *next;              /* every group not yet answered */
    entry_t *e;
    int n, cap;
    resp_t d;                          /* commands and reply headers of every entry */
    int pending;                       /* Redis replies hiredis still owes */
    int nexec, got;                    /* commands of the MULTI stage, replies seen */
    int lookups;                       /* HMGET replies still to come */
    long window;                       /* dedupe window (collector.lua dedupe_window) */
    int unlink;                        /* the MULTI starts with UNLINK of window - 2 */
    int expire;                        /* and has the window's EXPIREAT */
    int answered, failed;
    char err[200];
    struct event *timer;
};

struct sg_ingest {
    worker_t *w;
    int configured;
    int redis_ref;                     /* registry ref anchoring the connection */
    redis_conn **redis;
    long dedupe_ttl;
    size_t max_message;
    lane_route routes[MAX_ROUTES];
    int nroutes;
    lane_pipeline *pipelines;
    int npipelines;
    lane_stat *stats;
    int nstats;
    lane_net *nets;
    int nnets;
    char *cookie_plain, *cookie_secure;   /* Set-Cookie suffixes */
    size_t cookie_plain_len, cookie_secure_len;
    double buckets[MAX_BUCKETS];
    int nbuckets;
    uint64_t rejected_unavailable;
    double last_warn;
    group_t *ready_head, *ready_tail;  /* groups to send this turn */
    group_t *live;                     /* groups not yet answered */
    group_t *spare[SPARE_GROUPS];      /* freed groups kept for reuse */
    int nspare;
    struct event *flush_ev;
    int inflight;
    sg_scratch sc;                     /* sg_event_convert output */
    resp_t cmd;                        /* a group's lookup and marking commands, while they
                                        * are formatted (hiredis copies them): one buffer
                                        * for every group, not a 16 KB malloc per command */
    sg_rand_pool rand;                 /* cookie ids and message ids */
};

static lane_t *lane_of(const worker_t *w) { return w ? w->ingest : NULL; }

/* sg_event_ctx.new_id: a message id, as core.uuid makes them */
static int new_uuid(void *ud, char out[36]) { return sg_uuid4(ud, out); }

/* ---- addresses (identity.lua parse_ip, strip, trusted) ---------------------- */

/* An address as identity.lua's parse_ip gives it: 4 bytes for IPv4 and
 * IPv4-mapped IPv6, else 16. Returns the length, or 0 when inet_pton
 * refuses it (the caller then declines: Lua's parser is more lenient, e.g.
 * leading zeros, and decides). */
static int parse_ip(const char *s, size_t n, unsigned char out[16])
{
    char buf[64];
    if (n == 0 || n >= sizeof buf) return 0;
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (memchr(buf, ':', n)) {
        if (inet_pton(AF_INET6, buf, out) != 1) return 0;
        static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
        if (memcmp(out, mapped, 12) == 0) { memmove(out, out + 12, 4); return 4; }
        return 16;
    }
    return inet_pton(AF_INET, buf, out) == 1 ? 4 : 0;
}

static int in_net(const unsigned char *b, int len, const lane_net *net)
{
    if (len != net->len) return 0;
    int full = net->bits / 8, rem = net->bits % 8;
    if (full > 0 && memcmp(b, net->b, (size_t)full) != 0) return 0;
    if (rem == 0) return 1;
    int shift = 8 - rem;
    return (b[full] >> shift) == (net->b[full] >> shift);
}

/* 1 trusted, 0 not, -1 cannot tell (unparsable here: decline) */
static int trusted(const lane_t *l, const char *s, size_t n)
{
    if (l->nnets == 0 || n == 0) return 0;
    unsigned char b[16];
    int len = parse_ip(s, n, b);
    if (!len) return -1;
    for (int i = 0; i < l->nnets; i++)
        if (in_net(b, len, &l->nets[i])) return 1;
    return 0;
}

static int is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v';
}

static void trim(const char **s, size_t *n)
{
    while (*n && is_space(**s)) { (*s)++; (*n)--; }
    while (*n && is_space((*s)[*n - 1])) (*n)--;
}

static int all_digits(const char *s, size_t n)
{
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9') return 0;
    return 1;
}

/* identity.lua strip(): an X-Forwarded-For hop without spaces, brackets,
 * zone or port */
static void strip_hop(const char **s, size_t *n)
{
    trim(s, n);
    const char *p = *s;
    size_t len = *n;
    const char *close = len > 2 && p[0] == '[' ? memchr(p + 1, ']', len - 1) : NULL;
    if (close && close > p + 1) {
        *s = p + 1;
        *n = (size_t)(close - p - 1);
    } else {
        /* "%d+%.%d+%.%d+%.%d+:%d+" → the part before the ':' */
        const char *colon = memchr(p, ':', len);
        if (colon && all_digits(colon + 1, (size_t)(p + len - colon - 1))) {
            int parts = 0, ok = 1;
            const char *a = p;
            while (ok && a <= colon) {
                const char *d = memchr(a, '.', (size_t)(colon - a));
                const char *end = d ? d : colon;
                ok = all_digits(a, (size_t)(end - a));
                parts++;
                a = end + 1;
            }
            if (ok && parts == 4) *n = (size_t)(colon - p);
        }
    }
    const char *pct = memchr(*s, '%', *n);
    if (pct) *n = (size_t)(pct - *s);
}

/* identity.lua client_ip(): → 0 with *ip set (NULL: no address), -1 to
 * decline */
static int client_ip(const lane_t *l, const char *peer, const char *xff, size_t xlen,
                     const char **ip, size_t *iplen)
{
    size_t plen = strlen(peer);
    *ip = plen ? peer : NULL;
    *iplen = plen;
    if (!xff || !plen) return 0;
    int t = trusted(l, peer, plen);
    if (t <= 0) return t;
    /* right to left; gmatch("[^,]+") skips empty hops */
    const char *end = xff + xlen;
    while (end > xff) {
        const char *start = end;
        while (start > xff && start[-1] != ',') start--;
        if (start < end) {
            const char *a = start;
            size_t an = (size_t)(end - start);
            strip_hop(&a, &an);
            unsigned char b[16];
            if (!parse_ip(a, an, b)) return -1;   /* Lua decides (ends the walk or not) */
            *ip = a;
            *iplen = an;
            t = trusted(l, a, an);
            if (t < 0) return -1;
            if (!t) return 0;
        }
        end = start > xff ? start - 1 : xff;
    }
    return 0;
}

/* identity.lua is_https(): a trusted proxy says the browser used https */
static int is_https(const lane_t *l, const char *peer, const char *xfp, size_t n)
{
    if (!xfp) return 0;
    while (n && is_space(*xfp)) { xfp++; n--; }
    size_t k = 0;
    while (k < n && xfp[k] != ',' && !is_space(xfp[k])) k++;
    if (k != 5 || strncasecmp(xfp, "https", 5) != 0) return 0;
    return trusted(l, peer, strlen(peer));
}

/* ---- the _dfdid cookie (identity.lua read_cookie) -------------------------- */

static int id_char(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch == '-' || ch == '.';
}

/* 1 and the value when the Cookie header has a valid _dfdid, else 0 */
static int read_cookie(const char *h, size_t n, const char **v, size_t *vn)
{
    static const char NAME[] = "_dfdid=";
    const size_t NL = sizeof NAME - 1;
    size_t i = 0;
    while (i < n) {
        const char *a = memmem(h + i, n - i, NAME, NL);
        if (!a) return 0;
        char prev = a > h ? a[-1] : ';';
        if (prev == ';' || prev == ' ') {
            const char *s = a + NL, *e = memchr(s, ';', (size_t)(h + n - s));
            size_t len = (size_t)((e ? e : h + n) - s);
            trim(&s, &len);
            if (len >= 1 && s[0] == '"' && s[len - 1] == '"') {
                if (len == 1) return 0;
                s++;
                len -= 2;
            }
            if (len == 0 || len > 128) return 0;
            for (size_t k = 0; k < len; k++)
                if (!id_char((unsigned char)s[k])) return 0;
            *v = s;
            *vn = len;
            return 1;
        }
        i = (size_t)(a - h) + NL;
    }
    return 0;
}

/* ---- CORS (cors.lua headers) ------------------------------------------------ */

static int origin_allowed(const lane_pipeline *p, const char *o, size_t n)
{
    for (int i = 0; i < p->norigins; i++)
        if (p->olens[i] == n && memcmp(p->origins[i], o, n) == 0) return 1;
    /* odd clients: lower case, default port */
    char low[256];
    if (n >= sizeof low) return 0;
    for (size_t i = 0; i < n; i++) low[i] = (char)((o[i] >= 'A' && o[i] <= 'Z') ? o[i] + 32 : o[i]);
    if (n > 12 && memcmp(low, "https://", 8) == 0 && memcmp(low + n - 4, ":443", 4) == 0) n -= 4;
    else if (n > 10 && memcmp(low, "http://", 7) == 0 && memcmp(low + n - 3, ":80", 3) == 0) n -= 3;
    for (int i = 0; i < p->norigins; i++)
        if (p->olens[i] == n && memcmp(p->origins[i], low, n) == 0) return 1;
    return 0;
}

/* ---- group memory -------------------------------------------------------------- */

static void group_free(group_t *g)
{
    if (g->timer) { event_free(g->timer); g->timer = NULL; }
    lane_t *l = g->lane;
    if (l && l->nspare < SPARE_GROUPS) {
        l->spare[l->nspare++] = g;
        return;
    }
    free(g->e);
    free(g->d.b);
    free(g);
}

static group_t *group_new(lane_t *l, lane_pipeline *p)
{
    group_t *g;
    if (l->nspare > 0) {
        g = l->spare[--l->nspare];
        entry_t *e = g->e;
        int cap = g->cap;
        resp_t d = g->d;
        memset(g, 0, sizeof *g);
        g->e = e;
        g->cap = cap;
        g->d.b = d.b;
        g->d.cap = d.cap;
    } else {
        g = calloc(1, sizeof *g);
        if (!g) return NULL;
    }
    g->lane = l;
    g->p = p;
    g->next = l->live;
    if (l->live) l->live->prev = g;
    l->live = g;
    if (l->ready_tail) l->ready_tail->next_ready = g;
    else l->ready_head = g;
    l->ready_tail = g;
    /* sent once every request read in this loop turn has joined */
    if (l->ready_head == g) event_active(l->flush_ev, EV_READ, 0);
    return g;
}

static void unlink_live(lane_t *l, group_t *g)
{
    if (g->prev) g->prev->next = g->next;
    else if (l->live == g) l->live = g->next;
    if (g->next) g->next->prev = g->prev;
    g->prev = g->next = NULL;
}

/* ---- answering ------------------------------------------------------------------ */

static void observe(lane_t *l, entry_t *e)
{
    lane_route *r = &l->routes[e->route];
    double dt = sg_monotonic() - e->t0;
    int i = 0;
    while (i < l->nbuckets && dt > l->buckets[i]) i++;
    r->counts[i]++;
    r->sum += dt;
}

/* Every request of g gets its answer; g is freed once Redis owes nothing. */
static void group_answer(group_t *g)
{
    lane_t *l = g->lane;
    if (g->answered) return;
    g->answered = 1;
    if (g->timer) evtimer_del(g->timer);
    unlink_live(l, g);
    lane_stat *st = &l->stats[g->p->stat];
    if (g->failed) {
        double t = sg_monotonic();
        if (t - l->last_warn > 1) {           /* one line a second while Redis is down */
            l->last_warn = t;
            sg_log("warn", "collector could not store events", "pipeline", g->p->key, "error", g->err, NULL);
        }
    }
    /* Replying may run the connection's next pipelined request, which can
     * join a new group: g is off every list by now. */
    int n = g->n;
    l->inflight -= n;
    for (int i = 0; i < n; i++) {
        entry_t *e = &g->e[i];
        if (g->failed) {
            l->rejected_unavailable++;           /* events_rejected_total{reason} */
        } else if (e->dup) {
            st->deduplicated++;
        } else {
            st->accepted++;
        }
        observe(l, e);
        if (g->failed)
            server_reply_raw(e->c, 503, g->d.b + e->hdr, e->hdrl, UNAVAILABLE_BODY, sizeof UNAVAILABLE_BODY - 1);
        else
            server_reply_raw(e->c, 200, g->d.b + e->hdr, e->hdrl + e->cookiel, OK_BODY, sizeof OK_BODY - 1);
    }
    if (g->pending == 0) group_free(g);
}

static void group_fail(group_t *g, const char *fmt, const char *detail)
{
    if (!g->failed) {
        g->failed = 1;
        snprintf(g->err, sizeof g->err, fmt, detail);
    }
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    group_t *g = arg;
    char ms[16];
    snprintf(ms, sizeof ms, "%d", sg_redis_timeout_ms(*g->lane->redis));
    group_fail(g, "redis timeout after %s ms", ms);
    group_answer(g);
}

/* A reply hiredis owed g has come (or never will: NULL). Returns 1 when the
 * caller must stop touching g (answered already, maybe freed now). */
static int reply_came(group_t *g)
{
    g->pending--;
    if (!g->answered) return 0;
    if (g->pending == 0) group_free(g);
    return 1;
}

/* ---- Redis: RESP formatting and sending ------------------------------------------ */


/* Sends one formatted command; 0 ok */
static int send_cmd(group_t *g, redisAsyncContext *ac, const char *cmd, size_t len, redisCallbackFn *fn)
{
    if (redisAsyncFormattedCommand(ac, fn, g, cmd, len) != REDIS_OK) return -1;
    g->pending++;
    return 0;
}

static void on_exec(redisAsyncContext *ac, void *reply, void *priv);

/* MULTI, [UNLINK window - 2,] an XADD per new message, HSET of their ids
 * into the window [+ EXPIREAT], EXEC: collector.lua commit_batch. The
 * EXPIREAT goes with each group until one has run in this window: a
 * command per group (~2% of the collector's CPU) for a deadline that does
 * not change. */
static void send_commit(group_t *g, redisAsyncContext *ac)
{
    static const char MULTI[] = "*1\r\n$5\r\nMULTI\r\n", EXEC[] = "*1\r\n$4\r\nEXEC\r\n";
    lane_t *l = g->lane;
    lane_pipeline *p = g->p;
    int nxadd = 0, nmark = 0;
    for (int i = 0; i < g->n; i++) {
        if (g->e[i].dup) continue;
        nxadd++;
        if (g->e[i].midl && l->dedupe_ttl > 0) nmark++;
    }
    if (nxadd == 0 && !g->unlink) { group_answer(g); return; }   /* every message was a duplicate */
    /* the marking commands */
    resp_t *m = &l->cmd;
    m->n = 0;
    if (g->unlink) {
        R_LIT(m, "*2\r\n$6\r\nUNLINK\r\n");
        r_window(m, p->dedupe, p->dedupelen, g->window - 2);
    }
    size_t unlink_len = m->n;
    if (nmark) {
        r_len(m, '*', 2 + 2 * (size_t)nmark);
        R_LIT(m, "$4\r\nHSET\r\n");
        r_window(m, p->dedupe, p->dedupelen, g->window);
        for (int i = 0; i < g->n; i++) {
            entry_t *e = &g->e[i];
            if (e->dup || !e->midl) continue;
            r_arg(m, g->d.b + e->mid, e->midl);
            R_LIT(m, "$1\r\n1\r\n");
        }
    }
    size_t hset_end = m->n;
    g->expire = nmark && p->expiring != g->window;
    if (g->expire) {
        char at[24];
        size_t n = sg_put_uint(at, (uint64_t)(g->window + 3) * (uint64_t)l->dedupe_ttl);
        R_LIT(m, "*3\r\n$8\r\nEXPIREAT\r\n");
        r_window(m, p->dedupe, p->dedupelen, g->window);
        r_arg(m, at, n);
    }
    if (m->bad) {
        m->bad = 0;
        group_fail(g, "%s", "out of memory");
        group_answer(g);
        return;
    }
    g->nexec = 2 + nxadd + (g->unlink ? 1 : 0) + (nmark ? 1 : 0) + (g->expire ? 1 : 0);
    g->got = 0;
    /* hiredis refuses a command only while the context closes, and then
     * every later one too: the commands already queued get NULL replies */
    int sent = send_cmd(g, ac, MULTI, sizeof MULTI - 1, on_exec) == 0;
    if (sent && g->unlink) sent = send_cmd(g, ac, m->b, unlink_len, on_exec) == 0;
    for (int i = 0; sent && i < g->n; i++) {
        entry_t *e = &g->e[i];
        if (!e->dup) sent = send_cmd(g, ac, g->d.b + e->cmd, e->xaddl, on_exec) == 0;
    }
    if (sent && nmark) {
        sent = send_cmd(g, ac, m->b + unlink_len, hset_end - unlink_len, on_exec) == 0;
        if (sent && g->expire) sent = send_cmd(g, ac, m->b + hset_end, m->n - hset_end, on_exec) == 0;
    }
    if (sent) sent = send_cmd(g, ac, EXEC, sizeof EXEC - 1, on_exec) == 0;
    if (!sent) {
        group_fail(g, "%s", "redis unavailable: connection is closing");
        g->nexec = g->pending;
        if (g->pending == 0) group_answer(g);
    }
}

static void on_unmarked(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac; (void)reply;
    reply_came(priv);
}

/* EXEC ran but some XADD failed (a key of another type holds the stream):
 * MULTI does not roll back, so the HSET after them marked their ids, and
 * the client's retry of the 503 would be taken for a duplicate and never
 * stored. Delete those ids again (collector.lua unmark_failed). */
static void unmark_failed(group_t *g, redisAsyncContext *ac, const redisReply *exec)
{
    if (g->lane->dedupe_ttl <= 0) return;
    resp_t r = { 0 };
    size_t first = g->unlink ? 1 : 0, k, n = 0;
    k = first;
    for (int i = 0; i < g->n && k < exec->elements; i++) {
        entry_t *e = &g->e[i];
        if (e->dup) continue;
        if (exec->element[k++]->type == REDIS_REPLY_ERROR && e->midl) n++;
    }
    if (n == 0) return;
    r_len(&r, '*', n + 2);
    R_LIT(&r, "$4\r\nHDEL\r\n");
    r_window(&r, g->p->dedupe, g->p->dedupelen, g->window);
    k = first;
    for (int i = 0; i < g->n && k < exec->elements; i++) {
        entry_t *e = &g->e[i];
        if (e->dup) continue;
        if (exec->element[k++]->type == REDIS_REPLY_ERROR && e->midl) r_arg(&r, g->d.b + e->mid, e->midl);
    }
    /* sent before the 503 is: the retry's lookups come after it */
    if (!r.bad) send_cmd(g, ac, r.b, r.n, on_unmarked);
    free(r.b);
}

static void on_exec(redisAsyncContext *ac, void *reply, void *priv)
{
    group_t *g = priv;
    redisReply *rep = reply;
    if (reply_came(g)) return;
    g->got++;
    if (!rep) {
        group_fail(g, "redis unavailable: %s", ac->errstr[0] ? ac->errstr : "connection lost");
    } else if (g->got == g->nexec) {          /* EXEC: every command must have run */
        if (rep->type != REDIS_REPLY_ARRAY) {
            group_fail(g, "%s", rep->type == REDIS_REPLY_ERROR ? rep->str : "MULTI/EXEC failed");
        } else {
            for (size_t i = 0; i < rep->elements; i++)
                if (rep->element[i]->type == REDIS_REPLY_ERROR) {
                    group_fail(g, "%s", rep->element[i]->str);
                    unmark_failed(g, ac, rep);
                    break;
                }
            if (!g->failed && g->expire && g->p->expiring < g->window) g->p->expiring = g->window;
        }
    } else if (rep->type == REDIS_REPLY_ERROR) {   /* refused while queued: EXECABORT follows */
        group_fail(g, "%s", rep->str);
    }
    if (g->got == g->nexec) group_answer(g);
}

static void on_lookup(redisAsyncContext *ac, void *reply, void *priv)
{
    group_t *g = priv;
    redisReply *rep = reply;
    if (reply_came(g)) return;
    if (!rep) {
        group_fail(g, "redis unavailable: %s", ac->errstr[0] ? ac->errstr : "connection lost");
        group_answer(g);
        return;
    }
    if (rep->type != REDIS_REPLY_ARRAY) {
        group_fail(g, "%s", rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected HMGET reply");
        group_answer(g);
        return;
    }
    /* each HMGET asked for the first copy of every deduped id, in order */
    size_t k = 0;
    for (int i = 0; i < g->n && k < rep->elements; i++) {
        entry_t *e = &g->e[i];
        if (!e->asked) continue;
        if (rep->element[k]->type != REDIS_REPLY_NIL) e->dup = 1;
        k++;
    }
    if (--g->lookups == 0) send_commit(g, ac);
}

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

/* collector.lua seen_markers: copies within the group are duplicates of
 * their first; the first copies are looked up with one HMGET in each
 * dedupe window, the current and the previous one (dedupe_window). */
static void send_group(group_t *g)
{
    lane_t *l = g->lane;
    const char *err = NULL;
    redis_conn *rc = *l->redis;
    redisAsyncContext *ac = rc ? sg_redis_async(rc, &err) : NULL;
    if (!ac) {
        group_fail(g, "redis unavailable: %s", err ? err : "connection is closed");
        group_answer(g);
        return;
    }
    int timeout = sg_redis_timeout_ms(rc);
    if (timeout > 0) {
        g->timer = evtimer_new(l->w->base, on_timeout, g);
        struct timeval tv = { timeout / 1000, (timeout % 1000) * 1000 };
        if (g->timer) evtimer_add(g->timer, &tv);
    }
    if (l->dedupe_ttl <= 0) { send_commit(g, ac); return; }
    lane_pipeline *p = g->p;
    g->window = (long)floor(sg_wallclock() / (double)l->dedupe_ttl);
    if (p->unlinked < g->window) {         /* the first group of a window */
        p->unlinked = g->window;
        g->unlink = 1;
    }

    /* in-group copies: a small open-addressing set of entry indexes (at
     * most half full: GROUP_MAX entries in 2 * GROUP_MAX slots) */
    int slot[2 * GROUP_MAX];
    unsigned cap = 64;
    while (cap < (unsigned)g->n * 2) cap *= 2;
    for (unsigned i = 0; i < cap; i++) slot[i] = -1;
    resp_t *r = &l->cmd;
    r->n = 0;
    int nkeys = 0;
    for (int i = 0; i < g->n; i++) {
        entry_t *e = &g->e[i];
        if (!e->midl) continue;
        const char *m = g->d.b + e->mid;
        unsigned h = (unsigned)fnv1a(m, e->midl) & (cap - 1);
        for (;; h = (h + 1) & (cap - 1)) {
            if (slot[h] < 0) { slot[h] = i; e->asked = 1; nkeys++; break; }
            entry_t *o = &g->e[slot[h]];
            if (o->midl == e->midl && memcmp(g->d.b + o->mid, m, e->midl) == 0) { e->dup = 1; break; }
        }
    }
    if (nkeys == 0) { send_commit(g, ac); return; }
    size_t cur_end = 0;
    for (int k = 0; k < 2; k++) {
        r_len(r, '*', (size_t)nkeys + 2);
        R_LIT(r, "$5\r\nHMGET\r\n");
        r_window(r, p->dedupe, p->dedupelen, g->window - k);
        for (int i = 0; i < g->n; i++) {
            entry_t *e = &g->e[i];
            if (e->asked) r_arg(r, g->d.b + e->mid, e->midl);
        }
        if (k == 0) cur_end = r->n;
    }
    g->lookups = 2;
    int rc2 = r->bad ? -1 : send_cmd(g, ac, r->b, cur_end, on_lookup);
    if (rc2 == 0) rc2 = send_cmd(g, ac, r->b + cur_end, r->n - cur_end, on_lookup);
    r->bad = 0;
    if (rc2 != 0) {
        group_fail(g, "%s", "redis unavailable: connection is closing");
        group_answer(g);
    }
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    lane_t *l = arg;
    group_t *g = l->ready_head;
    l->ready_head = l->ready_tail = NULL;
    while (g) {
        group_t *next = g->next_ready;
        g->next_ready = NULL;
        if (g->p->open == g) g->p->open = NULL;
        send_group(g);
        g = next;
    }
}

/* ---- taking a request ------------------------------------------------------------ */

/* The headers the lane reads; a repeated one (Lua would join the copies)
 * makes it decline. */
enum { H_PK, H_AUTH, H_COOKIE, H_UA, H_ORIGIN, H_ENC, H_XFF, H_XFP, H_COUNT };
static const struct { const char *name; size_t len; } LANE_HEADERS[H_COUNT] = {
    { "x-pipeline-key", 14 }, { "authorization", 13 }, { "cookie", 6 }, { "user-agent", 10 },
    { "origin", 6 }, { "content-encoding", 16 }, { "x-forwarded-for", 15 }, { "x-forwarded-proto", 17 },
};

static lane_pipeline *find_pipeline(lane_t *l, const char *k, size_t n)
{
    /* a handful of pipelines per collector: a scan beats hashing the key */
    for (int i = 0; i < l->npipelines; i++)
        if (l->pipelines[i].klen == n && memcmp(l->pipelines[i].key, k, n) == 0) return &l->pipelines[i];
    return NULL;
}

int ingest_try(worker_t *w, struct sg_conn *c)
{
    lane_t *l = lane_of(w);
    if (!l || !l->configured || !*l->redis) return 0;
    sg_request r;
    server_request_view(c, &r);
    if (r.mlen != 4 || memcmp(r.method, "POST", 4) != 0) return 0;
    int route = -1;
    for (int i = 0; i < l->nroutes; i++)
        if (l->routes[i].plen == r.plen && memcmp(l->routes[i].path, r.path, r.plen) == 0) { route = i; break; }
    if (route < 0 || r.blen > l->max_message) return 0;
    lane_route *rt = &l->routes[route];

    const char *hv[H_COUNT] = { 0 };
    size_t hl[H_COUNT] = { 0 };
    for (int i = 0; i < r.nh; i++) {
        const sg_header *h = &r.h[i];
        for (int k = 0; k < H_COUNT; k++) {
            if (h->nlen == LANE_HEADERS[k].len && memcmp(h->name, LANE_HEADERS[k].name, h->nlen) == 0) {
                if (hv[k]) return 0;
                hv[k] = h->value;
                hl[k] = h->vlen;
                break;
            }
        }
    }
    if (hv[H_ENC]) return 0;
    lane_pipeline *p = NULL;
    if (hv[H_PK] && hl[H_PK] > 0) {
        p = find_pipeline(l, hv[H_PK], hl[H_PK]);
        if (!p) return 0;                       /* 401: Lua's answer */
    } else if (hv[H_AUTH]) {
        return 0;                               /* Basic credentials: Lua decodes them */
    }

    double t0 = sg_monotonic();
    const char *ip;
    size_t iplen;
    if (client_ip(l, r.peer, hv[H_XFF], hl[H_XFF], &ip, &iplen) != 0) return 0;

    /* identity.lua canonical_id(): the cookie, or a new id to plant */
    const char *cid = NULL;
    size_t cidlen = 0;
    char minted[37];
    int mint = 0, secure = 0;
    if (!rt->server_side) {
        if (!hv[H_COOKIE] || !read_cookie(hv[H_COOKIE], hl[H_COOKIE], &cid, &cidlen)) {
            unsigned char b[16];
            if (sg_random_bytes(&l->rand, b, sizeof b) != 0) return 0;
            memcpy(minted, "dfid_", 5);
            sg_hex(b, 16, minted + 5);
            cid = minted;
            cidlen = 37;
            mint = 1;
            int https = is_https(l, r.peer, hv[H_XFP], hl[H_XFP]);
            if (https < 0) return 0;
            secure = https;
        }
    }

    sg_event_ctx ec;
    memset(&ec, 0, sizeof ec);
    if (p) { ec.pipeline_key = p->key; ec.pipeline_key_len = p->klen; }
    ec.canonical_id = cid;
    ec.canonical_id_len = cidlen;
    ec.ip = ip;
    ec.ip_len = iplen;
    ec.user_agent = hv[H_UA];
    ec.user_agent_len = hl[H_UA];
    ec.type_hint = rt->hint;
    ec.type_hint_len = rt->hlen;
    ec.server_side = rt->server_side;
    ec.received_at = sg_wallclock();
    ec.new_id = new_uuid;
    ec.new_id_ud = &l->rand;
    sg_event_result res;
    if (!sg_event_convert(&l->sc, r.body, r.blen, &ec, &res)) return 0;
    if (!p) {
        p = find_pipeline(l, res.key, res.key_len);
        if (!p) return 0;                       /* 401: Lua's answer */
    }

    group_t *g = p->open;
    if (!g || g->n == GROUP_MAX) {
        g = group_new(l, p);
        if (!g) return 0;
        p->open = g;
    }
    if (g->n == g->cap) {
        int cap = g->cap ? g->cap * 2 : 32;
        entry_t *ne = realloc(g->e, sizeof *ne * (size_t)cap);
        if (!ne) return 0;
        g->e = ne;
        g->cap = cap;
    }
    entry_t *e = &g->e[g->n];
    memset(e, 0, sizeof *e);
    resp_t *d = &g->d;
    size_t mark = d->n;
    /* XADD <raw> * ev <event> in <input> */
    e->cmd = d->n;
    R_LIT(d, "*7\r\n$4\r\nXADD\r\n");
    r_arg(d, p->raw, p->rawlen);
    R_LIT(d, "$1\r\n*\r\n$2\r\nev\r\n");
    r_arg(d, res.ev, res.ev_len);
    R_LIT(d, "$2\r\nin\r\n");
    if (res.in) r_arg(d, res.in, res.in_len);
    else r_arg(d, r.body, r.blen);
    e->xaddl = d->n - e->cmd;
    if (res.dedupe && l->dedupe_ttl > 0 && res.message_id_len > 0) {
        /* the id, for the HMGETs and the HSET of the group's commit */
        e->mid = d->n;
        e->midl = res.message_id_len;
        r_put(d, res.message_id, res.message_id_len);
    }
    /* reply headers: JSON, CORS (cors.lua headers), then the cookie, which
     * a 503 leaves out (collector.lua reject) */
    e->hdr = d->n;
    r_put(d, JSON_HEADER, sizeof JSON_HEADER - 1);
    if (hv[H_ORIGIN]) {
        R_LIT(d, "Vary: Origin\r\n");
        if (origin_allowed(p, hv[H_ORIGIN], hl[H_ORIGIN])) {
            R_LIT(d, "Access-Control-Allow-Origin: ");
            r_put(d, hv[H_ORIGIN], hl[H_ORIGIN]);
            R_LIT(d, "\r\nAccess-Control-Allow-Credentials: true\r\n");
        }
    }
    e->hdrl = d->n - e->hdr;
    if (mint) {
        R_LIT(d, "Set-Cookie: _dfdid=");
        r_put(d, cid, cidlen);
        if (secure) r_put(d, l->cookie_secure, l->cookie_secure_len);
        else r_put(d, l->cookie_plain, l->cookie_plain_len);
        R_LIT(d, "\r\n");
        e->cookiel = d->n - e->hdr - e->hdrl;
    }
    if (d->bad) { d->n = mark; d->bad = 0; return 0; }   /* out of memory: Lua's turn */
    e->c = c;
    e->t0 = t0;
    e->route = route;
    g->n++;
    l->inflight++;
    l->stats[p->stat].received++;
    return 1;
}

int ingest_inflight(const worker_t *w)
{
    const lane_t *l = lane_of(w);
    return l ? l->inflight : 0;
}

/* ---- lifecycle ------------------------------------------------------------------- */

static void free_config(lane_t *l)
{
    for (int i = 0; i < l->nroutes; i++) { free(l->routes[i].path); free(l->routes[i].hint); }
    l->nroutes = 0;
    for (int i = 0; i < l->npipelines; i++) {
        lane_pipeline *p = &l->pipelines[i];
        free(p->key); free(p->raw); free(p->dedupe);
        for (int k = 0; k < p->norigins; k++) free(p->origins[k]);
        free(p->origins); free(p->olens);
    }
    free(l->pipelines);
    l->pipelines = NULL;
    l->npipelines = 0;
    free(l->nets);
    l->nets = NULL;
    l->nnets = 0;
    free(l->cookie_plain); free(l->cookie_secure);
    l->cookie_plain = l->cookie_secure = NULL;
    l->configured = 0;
}

void ingest_detach(worker_t *w)
{
    lane_t *l = lane_of(w);
    if (!l) return;
    l->configured = 0;
    l->ready_head = l->ready_tail = NULL;
    for (group_t *g = l->live, *next; g; g = next) {
        next = g->next;
        g->answered = 1;                      /* nobody to answer now */
        g->prev = g->next = NULL;
        if (g->timer) { event_free(g->timer); g->timer = NULL; }
        if (g->pending == 0) group_free(g);
    }
    l->live = NULL;
    l->inflight = 0;
}

void ingest_free(worker_t *w)
{
    lane_t *l = lane_of(w);
    if (!l) return;
    /* lua_close ran: every Redis callback has come, every group is freed */
    free_config(l);
    while (l->nspare > 0) {
        group_t *g = l->spare[--l->nspare];
        free(g->e);
        free(g->d.b);
        free(g);
    }
    for (int i = 0; i < l->nstats; i++) free(l->stats[i].key);
    free(l->stats);
    free(l->sc.buf);
    free(l->cmd.b);
    if (l->flush_ev) event_free(l->flush_ev);
    free(l);
    w->ingest = NULL;
}

/* ---- Lua API ---------------------------------------------------------------------- */

static char *field_string(lua_State *L, int t, const char *name, size_t *len)
{
    lua_getfield(L, t, name);
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    if (!s) luaL_error(L, "ingest_configure: %s must be a string", name);
    char *d = malloc(n + 1);
    if (!d) luaL_error(L, "ingest_configure: out of memory");
    memcpy(d, s, n);
    d[n] = '\0';
    if (len) *len = n;
    lua_pop(L, 1);
    return d;
}

static int stat_index(lane_t *l, const char *key)
{
    for (int i = 0; i < l->nstats; i++)
        if (strcmp(l->stats[i].key, key) == 0) return i;
    lane_stat *s = realloc(l->stats, sizeof *s * (size_t)(l->nstats + 1));
    if (!s) return -1;
    l->stats = s;
    memset(&s[l->nstats], 0, sizeof *s);
    s[l->nstats].key = strdup(key);
    if (!s[l->nstats].key) return -1;
    return l->nstats++;
}

/* core.ingest_configure(t) → true, or false outside the engine (no lane).
 * t = { redis = conn (the lane's own: its replies become lite, l_redis.c),
 *       dedupe_ttl = s, max_message = bytes,
 *       routes = { { path =, hint =, server_side = bool }, … },
 *       pipelines = { { key =, raw =, dedupe =, origins = { … } }, … },
 *       cookie_plain =, cookie_secure =   -- Set-Cookie suffixes
 *       nets = { { bytes =, bits = }, … } -- identity.lua trusted networks
 *       buckets = { … } }                 -- signal.observe.metrics histogram bounds */
static int l_configure(lua_State *L)
{
    worker_t *w = worker_of(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    if (!w || !w->base) { lua_pushboolean(L, 0); return 1; }
    lane_t *l = w->ingest;
    if (l && l->inflight > 0) return luaL_error(L, "ingest_configure: requests are in flight");
    if (!l) {
        l = calloc(1, sizeof *l);
        if (!l) return luaL_error(L, "ingest_configure: out of memory");
        l->w = w;
        l->redis_ref = LUA_NOREF;
        sg_rand_init(&l->rand);
        l->flush_ev = event_new(w->base, -1, 0, on_flush, l);
        if (!l->flush_ev) { free(l); return luaL_error(L, "ingest_configure: out of memory"); }
        w->ingest = l;
    }
    free_config(l);
    lua_getfield(L, 1, "redis");
    l->redis = sg_redis_checkconn(L, -1);
    if (*l->redis) sg_redis_lite(*l->redis);     /* the lane's own connection */
    luaL_unref(L, LUA_REGISTRYINDEX, l->redis_ref);
    l->redis_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, 1, "dedupe_ttl");
    l->dedupe_ttl = (long)luaL_checknumber(L, -1);
    lua_getfield(L, 1, "max_message");
    l->max_message = (size_t)luaL_checknumber(L, -1);
    lua_pop(L, 2);
    l->cookie_plain = field_string(L, 1, "cookie_plain", &l->cookie_plain_len);
    l->cookie_secure = field_string(L, 1, "cookie_secure", &l->cookie_secure_len);

    lua_getfield(L, 1, "buckets");
    luaL_checktype(L, -1, LUA_TTABLE);
    l->nbuckets = (int)lua_objlen(L, -1);
    if (l->nbuckets > MAX_BUCKETS) return luaL_error(L, "ingest_configure: too many buckets");
    for (int i = 0; i < l->nbuckets; i++) {
        lua_rawgeti(L, -1, i + 1);
        l->buckets[i] = lua_tonumber(L, -1);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);

    lua_getfield(L, 1, "routes");
    luaL_checktype(L, -1, LUA_TTABLE);
    int nr = (int)lua_objlen(L, -1);
    if (nr > MAX_ROUTES) return luaL_error(L, "ingest_configure: too many routes");
    for (int i = 0; i < nr; i++) {
        lua_rawgeti(L, -1, i + 1);
        lane_route *rt = &l->routes[i];
        memset(rt, 0, sizeof *rt);
        l->nroutes = i + 1;
        rt->path = field_string(L, -1, "path", &rt->plen);
        rt->hint = field_string(L, -1, "hint", &rt->hlen);
        lua_getfield(L, -1, "server_side");
        rt->server_side = lua_toboolean(L, -1);
        lua_pop(L, 2);
    }
    lua_pop(L, 1);

    lua_getfield(L, 1, "nets");
    int nn = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
    l->nets = nn ? calloc((size_t)nn, sizeof *l->nets) : NULL;
    for (int i = 0; i < nn; i++) {
        lua_rawgeti(L, -1, i + 1);
        lua_getfield(L, -1, "bytes");
        size_t bl;
        const char *b = lua_tolstring(L, -1, &bl);
        lua_getfield(L, -2, "bits");
        int bits = (int)lua_tointeger(L, -1);
        if (b && (bl == 4 || bl == 16) && bits >= 0 && bits <= (int)bl * 8 && l->nets) {
            lane_net *n = &l->nets[l->nnets++];
            memcpy(n->b, b, bl);
            n->len = (int)bl;
            n->bits = bits;
        }
        lua_pop(L, 3);
    }
    lua_pop(L, 1);

    lua_getfield(L, 1, "pipelines");
    luaL_checktype(L, -1, LUA_TTABLE);
    int np = (int)lua_objlen(L, -1);
    l->pipelines = calloc((size_t)(np ? np : 1), sizeof *l->pipelines);
    if (!l->pipelines) return luaL_error(L, "ingest_configure: out of memory");
    for (int i = 0; i < np; i++) {
        lua_rawgeti(L, -1, i + 1);
        lane_pipeline *p = &l->pipelines[i];
        l->npipelines = i + 1;
        p->key = field_string(L, -1, "key", &p->klen);
        p->raw = field_string(L, -1, "raw", &p->rawlen);
        p->dedupe = field_string(L, -1, "dedupe", &p->dedupelen);
        p->stat = stat_index(l, p->key);
        if (p->stat < 0) return luaL_error(L, "ingest_configure: out of memory");
        lua_getfield(L, -1, "origins");
        int no = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
        if (no) {
            p->origins = calloc((size_t)no, sizeof *p->origins);
            p->olens = calloc((size_t)no, sizeof *p->olens);
            if (!p->origins || !p->olens) return luaL_error(L, "ingest_configure: out of memory");
        }
        for (int k = 0; k < no; k++) {
            lua_rawgeti(L, -1, k + 1);
            size_t ol;
            const char *o = lua_tolstring(L, -1, &ol);
            if (o) {
                p->origins[p->norigins] = strndup(o, ol);
                if (p->origins[p->norigins]) p->olens[p->norigins++] = ol;
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
    l->configured = 1;
    lua_pushboolean(L, 1);
    return 1;
}

/* core.ingest_stats() → { pipelines = { { key, received, accepted,
 * deduplicated }, … }, routes = { { path, counts = { … },
 * sum }, … }, rejected_unavailable = n } | nil (no lane): the deltas since
 * the last call (which resets them). */
static int l_stats(lua_State *L)
{
    lane_t *l = lane_of(worker_of(L));
    if (!l) { lua_pushnil(L); return 1; }
    lua_createtable(L, 0, 3);
    lua_createtable(L, l->nstats, 0);
    int k = 0;
    for (int i = 0; i < l->nstats; i++) {
        lane_stat *s = &l->stats[i];
        if (!s->received && !s->accepted && !s->deduplicated) continue;
        lua_createtable(L, 0, 4);
        lua_pushstring(L, s->key); lua_setfield(L, -2, "key");
        lua_pushnumber(L, (lua_Number)s->received); lua_setfield(L, -2, "received");
        lua_pushnumber(L, (lua_Number)s->accepted); lua_setfield(L, -2, "accepted");
        lua_pushnumber(L, (lua_Number)s->deduplicated); lua_setfield(L, -2, "deduplicated");
        lua_rawseti(L, -2, ++k);
        s->received = s->accepted = s->deduplicated = 0;
    }
    lua_setfield(L, -2, "pipelines");
    lua_createtable(L, l->nroutes, 0);
    k = 0;
    for (int i = 0; i < l->nroutes; i++) {
        lane_route *rt = &l->routes[i];
        uint64_t total = 0;
        for (int b = 0; b <= l->nbuckets; b++) total += rt->counts[b];
        if (!total) continue;
        lua_createtable(L, 0, 3);
        lua_pushlstring(L, rt->path, rt->plen); lua_setfield(L, -2, "path");
        lua_createtable(L, l->nbuckets + 1, 0);
        for (int b = 0; b <= l->nbuckets; b++) {
            lua_pushnumber(L, (lua_Number)rt->counts[b]);
            lua_rawseti(L, -2, b + 1);
            rt->counts[b] = 0;
        }
        lua_setfield(L, -2, "counts");
        lua_pushnumber(L, rt->sum); lua_setfield(L, -2, "sum");
        rt->sum = 0;
        lua_rawseti(L, -2, ++k);
    }
    lua_setfield(L, -2, "routes");
    lua_pushnumber(L, (lua_Number)l->rejected_unavailable);
    lua_setfield(L, -2, "rejected_unavailable");
    l->rejected_unavailable = 0;
    return 1;
}

void sg_open_ingest(lua_State *L)
{
    lua_pushcfunction(L, l_configure);
    lua_setfield(L, -2, "ingest_configure");
    lua_pushcfunction(L, l_stats);
    lua_setfield(L, -2, "ingest_stats");
}
