/*
 * commit.c — the group commit: the messages of a loop turn's requests,
 * stored per pipeline with one round of Redis commands.
 *
 * A 200 means the event is in the pipeline's raw stream. The requests of
 * one pipeline read in the same event-loop turn join one group (up to
 * COLLECT_GROUP_MAX messages; a bigger request gets a group of its own), and
 * the group is stored in two steps:
 *   1. dedupe: one HMGET of the group's messageIds in each dedupe window
 *      looked at (the current one and the one before: limits.h); copies
 *      inside the group are duplicates of their first;
 *   2. one MULTI/EXEC: the UNLINK of a stale window (the first commit of a
 *      window in this worker), then per new message its XADD (fields ev and
 *      in) and, when it carries linking keys, the HSET of the browser's
 *      identity hash and its EXPIRE; then one HSET of the new ids into the
 *      current window, and the window's EXPIREAT until one commit of the
 *      window has run it.
 * Each request is answered from its slice: 200 when its messages are
 * stored or were duplicates, 503 for every request of the group when Redis
 * failed (never a 200 for an event that was not stored: clients retry).
 *
 * Why no Redis script: a script's arguments are copied into Redis's Lua and
 * its GC, which cost several times the commands themselves — with 1 KB
 * events Redis became the bottleneck. What a script closes and this leaves
 * open: two copies of one messageId in flight at the same moment on
 * different workers may both be stored (neither had been accepted when the
 * other was checked). Nothing can be lost: an XADD and its marker commit
 * together. MULTI does not roll back a command that fails as it runs (an
 * XADD on a raw-stream key something else turned into another type): the
 * markers of those XADDs are deleted again before the 503 goes out, so the
 * client's retry is stored, not taken for a duplicate.
 *
 * RESP is formatted here, into the group's buffer, as each request joins:
 * the event bytes are copied once on their way from the request to hiredis.
 * A group lives until both its reply and every Redis callback it is owed
 * have come (hiredis calls each one once, with NULL on disconnect).
 */
#include "collect.h"
#include "../log.h"
#include "../server.h"
#include "reply.h"

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char UNAVAILABLE_BODY[] =
    "{\"error\":{\"code\":\"REDIS_UNAVAILABLE\",\"message\":\"" SG_REPLY_UNAVAILABLE_MESSAGE "\"}}";
static const char OOM_BODY[] =
    "{\"error\":{\"code\":\"REDIS_OOM\",\"message\":\"" SG_REPLY_OOM_MESSAGE "\"}}";
static const char OK_BODY[] = SG_REPLY_OK;

/* One message of a group: its commands in g->d. */
typedef struct {
    size_t xadd, xaddl;                /* its XADD */
    size_t hset, hsetl, expire, expirel;   /* its identity HSET and EXPIRE (hsetl 0: none) */
    size_t mid, midl;                  /* its dedupe id (midl 0: none) */
    size_t at;                         /* its XADD's place in EXEC's reply */
    unsigned dup : 1, asked : 1;       /* asked: its id is in the HMGETs */
} gmsg;

/* One request of a group: its messages and its reply. */
typedef struct {
    struct sg_conn *c;
    int first, n;
    size_t hdr, hdrl, cookiel;         /* reply headers in g->d; the cookie follows them */
    double t0;
    int route;
} waiter;

struct group {
    lane_t *lane;
    sg_pipeline *p;
    group_t *next_ready;               /* the flush queue */
    group_t *prev, *next;              /* every group not yet answered */
    gmsg *m;
    int nm, mcap;
    waiter *w;
    int nw, wcap;
    sg_bytes d;                        /* the commands and reply headers of every request */
    int pending;                       /* Redis replies hiredis still owes */
    int nexec, got;                    /* commands of the MULTI stage, replies seen */
    int lookups;                       /* HMGET replies still to come */
    long window;                       /* the current dedupe window */
    int unlink, expire;                /* the MULTI starts with an UNLINK / has the EXPIREAT */
    int answered, failed;
    char err[200];
    struct event *timer;
};

/* ---- RESP ------------------------------------------------------------------ */

/* "*<n>\r\n" or "$<n>\r\n" */
static void r_len(sg_bytes *b, char kind, size_t v)
{
    sg_bytes_putc(b, kind);
    sg_bytes_put_uint(b, v);
    SG_BYTES_LIT(b, "\r\n");
}

static void r_arg(sg_bytes *b, const char *s, size_t n)
{
    r_len(b, '$', n);
    sg_bytes_put(b, s, n);
    SG_BYTES_LIT(b, "\r\n");
}

/* a key made of a prefix and a suffix (a dedupe window's number, a canonical id) */
static void r_key(sg_bytes *b, const char *prefix, size_t plen, const char *s, size_t n)
{
    r_len(b, '$', plen + n);
    sg_bytes_put(b, prefix, plen);
    sg_bytes_put(b, s, n);
    SG_BYTES_LIT(b, "\r\n");
}

static void r_window(sg_bytes *b, const sg_pipeline *p, long w)
{
    char num[24];
    int n = snprintf(num, sizeof num, "%ld", w);
    r_key(b, p->dedupe, p->dedupelen, num, (size_t)n);
}

/* ---- group memory ------------------------------------------------------------ */

static void group_free(group_t *g)
{
    if (g->timer) { event_free(g->timer); g->timer = NULL; }
    lane_t *l = g->lane;
    if (l && l->nspare < COLLECT_SPARE_GROUPS) {
        l->spare[l->nspare++] = g;
        return;
    }
    free(g->m);
    free(g->w);
    sg_bytes_free(&g->d);
    free(g);
}

static group_t *group_new(lane_t *l, sg_pipeline *p)
{
    group_t *g;
    if (l->nspare > 0) {
        g = l->spare[--l->nspare];
        gmsg *m = g->m;
        waiter *w = g->w;
        int mcap = g->mcap, wcap = g->wcap;
        sg_bytes d = g->d;
        memset(g, 0, sizeof *g);
        g->m = m; g->mcap = mcap;
        g->w = w; g->wcap = wcap;
        g->d = d;
        sg_bytes_reset(&g->d);
    } else if (!(g = calloc(1, sizeof *g))) {
        return NULL;
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

static int grow(void **a, int *cap, int need, size_t size)
{
    if (need <= *cap) return 0;
    int c = *cap ? *cap : 32;
    while (c < need) c *= 2;
    void *n = realloc(*a, size * (size_t)c);
    if (!n) return -1;
    *a = n;
    *cap = c;
    return 0;
}

/* ---- joining ------------------------------------------------------------------ */

/* message i of the request: its XADD, identity commands and dedupe id */
static void add_message(group_t *g, const sg_commit_req *rq, int i, gmsg *m)
{
    lane_t *l = g->lane;
    const sg_pipeline *p = g->p;
    const sg_convert *cv = rq->cv;
    const sg_message *msg = &cv->msg[i];
    const sg_norm_result *r = &msg->r;
    sg_bytes *d = &g->d;
    memset(m, 0, sizeof *m);
    /* XADD <raw> * ev <event> in <input> */
    m->xadd = d->len;
    SG_BYTES_LIT(d, "*7\r\n$4\r\nXADD\r\n");
    r_arg(d, p->raw, p->rawlen);
    SG_BYTES_LIT(d, "$1\r\n*\r\n$2\r\nev\r\n");
    r_arg(d, cv->events.data + r->ev, r->ev_len);
    SG_BYTES_LIT(d, "$2\r\nin\r\n");
    r_arg(d, (msg->in_body ? rq->body : cv->inputs.data) + msg->in, msg->in_len);
    m->xaddl = d->len - m->xadd;
    /* HSET <id prefix><canonical_id> email … phone … user_id …; EXPIRE */
    static const char *const FIELD[SG_LINK_COUNT] = { "email", "phone", "user_id" };
    int nlink = 0;
    for (int k = 0; k < SG_LINK_COUNT; k++) nlink += r->link_len[k] > 0;
    if (nlink && r->cid_len) {
        m->hset = d->len;
        r_len(d, '*', 2 + 2 * (size_t)nlink);
        SG_BYTES_LIT(d, "$4\r\nHSET\r\n");
        r_key(d, p->identity, p->identitylen, cv->aux.data + r->cid, r->cid_len);
        for (int k = 0; k < SG_LINK_COUNT; k++) {
            if (!r->link_len[k]) continue;
            r_arg(d, FIELD[k], strlen(FIELD[k]));
            r_arg(d, cv->aux.data + r->link[k], r->link_len[k]);
        }
        m->hsetl = d->len - m->hset;
        m->expire = d->len;
        SG_BYTES_LIT(d, "*3\r\n$6\r\nEXPIRE\r\n");
        r_key(d, p->identity, p->identitylen, cv->aux.data + r->cid, r->cid_len);
        char ttl[24];
        r_arg(d, ttl, (size_t)snprintf(ttl, sizeof ttl, "%ld", l->identity_ttl));
        m->expirel = d->len - m->expire;
    }
    if (r->dedupe && l->dedupe_ttl > 0 && r->mid_len > 0) {
        m->mid = d->len;
        m->midl = r->mid_len;
        sg_bytes_put(d, cv->aux.data + r->mid, r->mid_len);
    }
}

int sg_commit_add(lane_t *l, sg_pipeline *p, const sg_commit_req *rq)
{
    int n = rq->cv->n;
    group_t *g = p->open;
    if (!g || (g->nm > 0 && g->nm + n > COLLECT_GROUP_MAX)) {
        if (!(g = group_new(l, p))) return -1;
        p->open = g;
    }
    if (grow((void **)&g->m, &g->mcap, g->nm + n, sizeof *g->m) != 0 ||
        grow((void **)&g->w, &g->wcap, g->nw + 1, sizeof *g->w) != 0)
        return -1;
    sg_bytes *d = &g->d;
    size_t mark = d->len;
    for (int i = 0; i < n; i++) add_message(g, rq, i, &g->m[g->nm + i]);
    waiter *w = &g->w[g->nw];
    w->hdr = d->len;
    sg_bytes_put(d, rq->hdr, rq->hdrl);
    w->hdrl = d->len - w->hdr;
    sg_bytes_put(d, rq->cookie, rq->cookiel);
    w->cookiel = rq->cookiel;
    if (d->oom) {                              /* nothing of it joined */
        d->len = mark;
        d->oom = 0;
        return -1;
    }
    w->c = rq->c;
    w->first = g->nm;
    w->n = n;
    w->t0 = rq->t0;
    w->route = rq->route;
    g->nm += n;
    g->nw++;
    l->inflight++;
    return 0;
}

/* ---- answering ------------------------------------------------------------------ */

/* Every request of g gets its answer; g is freed once Redis owes nothing. */
static void group_answer(group_t *g)
{
    lane_t *l = g->lane;
    if (g->answered) return;
    g->answered = 1;
    if (g->timer) evtimer_del(g->timer);
    unlink_live(l, g);
    sg_stat *st = &l->stats[g->p->stat];
    if (g->failed) {
        double t = sg_monotonic();
        if (t - l->last_warn > 1) {           /* one line a second while Redis is down */
            l->last_warn = t;
            sg_log("warn", "collector could not store events", "pipeline", g->p->key, "error", g->err, NULL);
        }
    }
    /* Replying may run the connection's next pipelined request, which can
     * join a new group: g is off every list by now. */
    l->inflight -= g->nw;
    int oom = g->failed && strncmp(g->err, "OOM", 3) == 0;
    const char *fail_body = oom ? OOM_BODY : UNAVAILABLE_BODY;
    size_t fail_len = oom ? sizeof OOM_BODY - 1 : sizeof UNAVAILABLE_BODY - 1;
    for (int i = 0; i < g->nw; i++) {
        waiter *w = &g->w[i];
        if (g->failed) {
            l->rejected[oom ? R_REDIS_OOM : R_REDIS_UNAVAILABLE] += (uint64_t)w->n;
        } else {
            for (int k = w->first; k < w->first + w->n; k++) {
                if (g->m[k].dup) st->deduplicated++;
                else st->accepted++;
            }
        }
        sg_collect_observe(l, w->route, M_POST, w->t0);
        if (g->failed)
            server_reply_raw(w->c, 503, g->d.data + w->hdr, w->hdrl, fail_body, fail_len);
        else
            server_reply_raw(w->c, 200, g->d.data + w->hdr, w->hdrl + w->cookiel, OK_BODY, sizeof OK_BODY - 1);
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

/* ---- Redis ------------------------------------------------------------------------ */

/* Sends one formatted command; 0 ok */
static int send_cmd(group_t *g, redisAsyncContext *ac, const char *cmd, size_t len, redisCallbackFn *fn)
{
    if (redisAsyncFormattedCommand(ac, fn, g, cmd, len) != REDIS_OK) return -1;
    g->pending++;
    return 0;
}

static void on_exec(redisAsyncContext *ac, void *reply, void *priv);

/* the UNLINK, HSET and EXPIREAT of the commit into l->cmd → their ends */
static void format_marks(group_t *g, int nmark, size_t *unlink_end, size_t *hset_end)
{
    lane_t *l = g->lane;
    sg_pipeline *p = g->p;
    sg_bytes *c = &l->cmd;
    sg_bytes_reset(c);
    if (g->unlink) {
        SG_BYTES_LIT(c, "*2\r\n$6\r\nUNLINK\r\n");
        r_window(c, p, g->window - COLLECT_DEDUPE_UNLINK_AFTER);
    }
    *unlink_end = c->len;
    if (nmark) {
        r_len(c, '*', 2 + 2 * (size_t)nmark);
        SG_BYTES_LIT(c, "$4\r\nHSET\r\n");
        r_window(c, p, g->window);
        for (int i = 0; i < g->nm; i++) {
            gmsg *m = &g->m[i];
            if (m->dup || !m->midl) continue;
            r_arg(c, g->d.data + m->mid, m->midl);
            SG_BYTES_LIT(c, "$1\r\n1\r\n");
        }
    }
    *hset_end = c->len;
    /* The EXPIREAT goes with each commit until one has run in this window:
     * a command per group (~2% of the collector's CPU) for a deadline that
     * does not change. */
    g->expire = nmark && p->expiring != g->window;
    if (g->expire) {
        SG_BYTES_LIT(c, "*3\r\n$8\r\nEXPIREAT\r\n");
        r_window(c, p, g->window);
        char at[24];
        r_arg(c, at, (size_t)snprintf(at, sizeof at, "%ld", (g->window + COLLECT_DEDUPE_EXPIRE_AFTER) * l->dedupe_ttl));
    }
}

/* MULTI, the commands of every new message, the marks, EXEC */
static void send_commit(group_t *g, redisAsyncContext *ac)
{
    static const char MULTI[] = "*1\r\n$5\r\nMULTI\r\n", EXEC[] = "*1\r\n$4\r\nEXEC\r\n";
    int nnew = 0, nmark = 0;
    size_t at = g->unlink ? 1 : 0;
    for (int i = 0; i < g->nm; i++) {
        gmsg *m = &g->m[i];
        if (m->dup) continue;
        nnew++;
        if (m->midl) nmark++;
        m->at = at;
        at += m->hsetl ? 3 : 1;
    }
    if (nnew == 0 && !g->unlink) { group_answer(g); return; }   /* every message was a duplicate */
    size_t unlink_end, hset_end;
    format_marks(g, nmark, &unlink_end, &hset_end);
    sg_bytes *c = &g->lane->cmd;
    if (c->oom || g->d.oom) {
        group_fail(g, "%s", "out of memory");
        group_answer(g);
        return;
    }
    g->nexec = 2 + (int)at + (nmark ? 1 : 0) + (g->expire ? 1 : 0);
    g->got = 0;
    /* hiredis refuses a command only while the context closes, and then
     * every later one too: the commands already queued get NULL replies */
    int sent = send_cmd(g, ac, MULTI, sizeof MULTI - 1, on_exec) == 0;
    if (sent && g->unlink) sent = send_cmd(g, ac, c->data, unlink_end, on_exec) == 0;
    for (int i = 0; sent && i < g->nm; i++) {
        gmsg *m = &g->m[i];
        if (m->dup) continue;
        sent = send_cmd(g, ac, g->d.data + m->xadd, m->xaddl, on_exec) == 0;
        if (sent && m->hsetl) sent = send_cmd(g, ac, g->d.data + m->hset, m->hsetl, on_exec) == 0;
        if (sent && m->hsetl) sent = send_cmd(g, ac, g->d.data + m->expire, m->expirel, on_exec) == 0;
    }
    if (sent && nmark) sent = send_cmd(g, ac, c->data + unlink_end, hset_end - unlink_end, on_exec) == 0;
    if (sent && g->expire) sent = send_cmd(g, ac, c->data + hset_end, c->len - hset_end, on_exec) == 0;
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

/* EXEC ran but some XADD failed: MULTI does not roll back, so the HSET
 * after it marked its id, and the client's retry of the 503 would be taken
 * for a duplicate and never stored. Delete those ids again. */
static void unmark_failed(group_t *g, redisAsyncContext *ac, const redisReply *exec)
{
    if (g->lane->dedupe_ttl <= 0) return;
    sg_bytes r = SG_BYTES_INIT;
    size_t n = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            if (n == 0) return;
            r_len(&r, '*', n + 2);
            SG_BYTES_LIT(&r, "$4\r\nHDEL\r\n");
            r_window(&r, g->p, g->window);
        }
        for (int i = 0; i < g->nm; i++) {
            gmsg *m = &g->m[i];
            if (m->dup || !m->midl || m->at >= exec->elements) continue;
            if (exec->element[m->at]->type != REDIS_REPLY_ERROR) continue;
            if (pass == 0) n++;
            else r_arg(&r, g->d.data + m->mid, m->midl);
        }
    }
    /* sent before the 503 is: the retry's lookups come after it */
    if (!r.oom) send_cmd(g, ac, r.data, r.len, on_unmarked);
    sg_bytes_free(&r);
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
    if (!rep || rep->type != REDIS_REPLY_ARRAY) {
        if (!rep) group_fail(g, "redis unavailable: %s", ac->errstr[0] ? ac->errstr : "connection lost");
        else group_fail(g, "%s", rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected HMGET reply");
        group_answer(g);
        return;
    }
    /* each HMGET asked for the first copy of every deduped id, in order */
    size_t k = 0;
    for (int i = 0; i < g->nm && k < rep->elements; i++) {
        gmsg *m = &g->m[i];
        if (!m->asked) continue;
        if (rep->element[k]->type != REDIS_REPLY_NIL) m->dup = 1;
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

/* Copies within the group are duplicates of their first (an open-addressing
 * set of message indexes, at most half full) → the ids to look up. */
static int mark_copies(group_t *g)
{
    lane_t *l = g->lane;
    size_t cap = 64;
    while (cap < 2 * (size_t)g->nm) cap *= 2;
    if (cap > l->slotcap) {
        int32_t *s = realloc(l->slot, sizeof *s * cap);
        if (!s) return -1;
        l->slot = s;
        l->slotcap = cap;
    }
    int32_t *slot = l->slot;
    for (size_t i = 0; i < cap; i++) slot[i] = -1;
    int nkeys = 0;
    for (int i = 0; i < g->nm; i++) {
        gmsg *m = &g->m[i];
        if (!m->midl) continue;
        const char *id = g->d.data + m->mid;
        for (size_t h = fnv1a(id, m->midl) & (cap - 1);; h = (h + 1) & (cap - 1)) {
            if (slot[h] < 0) { slot[h] = i; m->asked = 1; nkeys++; break; }
            gmsg *o = &g->m[slot[h]];
            if (o->midl == m->midl && memcmp(g->d.data + o->mid, id, m->midl) == 0) { m->dup = 1; break; }
        }
    }
    return nkeys;
}

/* The HMGETs of the group's ids, one per dedupe window looked at. */
static void send_lookups(group_t *g, redisAsyncContext *ac, int nkeys)
{
    sg_bytes *r = &g->lane->cmd;
    sg_bytes_reset(r);
    size_t end[COLLECT_DEDUPE_WINDOWS];
    for (int k = 0; k < COLLECT_DEDUPE_WINDOWS; k++) {
        r_len(r, '*', (size_t)nkeys + 2);
        SG_BYTES_LIT(r, "$5\r\nHMGET\r\n");
        r_window(r, g->p, g->window - k);
        for (int i = 0; i < g->nm; i++) {
            gmsg *m = &g->m[i];
            if (m->asked) r_arg(r, g->d.data + m->mid, m->midl);
        }
        end[k] = r->len;
    }
    g->lookups = COLLECT_DEDUPE_WINDOWS;
    int rc = r->oom ? -1 : 0;
    for (int k = 0; rc == 0 && k < COLLECT_DEDUPE_WINDOWS; k++) {
        size_t from = k ? end[k - 1] : 0;
        rc = send_cmd(g, ac, r->data + from, end[k] - from, on_lookup);
    }
    if (rc != 0) {
        /* a lookup already sent still comes back: reply_came frees g then */
        group_fail(g, "%s", r->oom ? "out of memory" : "redis unavailable: connection is closing");
        group_answer(g);
    }
}

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
    sg_pipeline *p = g->p;
    g->window = (long)floor(sg_wallclock() / (double)l->dedupe_ttl);
    if (p->unlinked < g->window) {         /* the first group of a window */
        p->unlinked = g->window;
        g->unlink = 1;
    }
    int nkeys = mark_copies(g);
    if (nkeys < 0) {
        group_fail(g, "%s", "out of memory");
        group_answer(g);
    } else if (nkeys == 0) {
        send_commit(g, ac);
    } else {
        send_lookups(g, ac, nkeys);
    }
}

void sg_commit_flush(evutil_socket_t fd, short what, void *arg)
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

/* ---- lifecycle ------------------------------------------------------------------ */

void sg_commit_detach(lane_t *l)
{
    l->ready_head = l->ready_tail = NULL;
    for (group_t *g = l->live, *next; g; g = next) {
        next = g->next;
        g->answered = 1;                      /* nobody to answer now */
        g->prev = g->next = NULL;
        if (g->timer) { event_free(g->timer); g->timer = NULL; }
        if (g->pending == 0) group_free(g);
    }
    l->live = NULL;
    for (int i = 0; i < l->keys.n; i++) l->keys.p[i].open = NULL;
}

void sg_commit_free(lane_t *l)
{
    while (l->nspare > 0) {
        group_t *g = l->spare[--l->nspare];
        free(g->m);
        free(g->w);
        sg_bytes_free(&g->d);
        free(g);
    }
    sg_bytes_free(&l->cmd);
    free(l->slot);
    l->slot = NULL;
    l->slotcap = 0;
}
