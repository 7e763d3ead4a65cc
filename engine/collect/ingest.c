/*
 * ingest.c — the collector: every request to an event route, from the
 * parsed request to its answer, in C.
 *
 *   POST /v1/t /v1/p /v1/i /v1/g /v1/s /v1/a        datafly.js, analytics.js (one event)
 *   POST /v1/track /v1/page /v1/screen /v1/identify /v1/group /v1/alias
 *                                                   Segment HTTP Tracking API (server SDKs)
 *   POST /v1/batch /v1/b                            {"batch":[…], context?, sentAt?, writeKey?}
 *   POST /v1/events                                 server-side: one event or {"batch":[…]}
 *   OPTIONS on each                                 CORS preflight
 *   any other method                                405
 *
 * The server offers every request to ingest_try before Lua sees it; a path
 * that is not one of the configured routes (lua/signal/collect/init.lua hands them over
 * with core.ingest_configure) goes on to Lua. For a POST the flow is, in
 * the order its refusals take precedence:
 *   body over 500 KB → 413; X-Pipeline-Key naming no pipeline → 401;
 *   Content-Encoding: gzip inflated (413 past 500 KB, 400 when not gzip),
 *   another encoding → 415; then who sent it — a browser (the _dfdid cookie
 *   is read or minted, the connection's address and user agent stand) or a
 *   server (/v1/events, the Segment paths, a Basic-authenticated batch
 *   without Origin: no cookie, the message's own context stands) — the
 *   client address behind trusted proxies, and the body's conversion
 *   (convert.c: JSON, shape, key, batch, every message's rules). What
 *   passes joins the group commit (commit.c), which answers 200 once it is
 *   stored, or 503.
 *
 * Why in C: on POST /v1/t the engine spent ~25 µs of CPU per request, and
 * under half of it was the work itself; the rest was the machinery of
 * running a Lua handler (a coroutine, the request and header tables, the
 * interpreter walking the collector, the reply read back from a table). One
 * C pass per request and a group commit per loop turn: ~12 µs
 * (bench/README.md). And one implementation of each rule: Lua modules that
 * need one call it through core.collect (lua.c).
 *
 * Lifetime: a request held for its commit keeps its connection busy (the
 * server keeps it until the reply). The lane is per worker (worker_t.ingest).
 */
#include "collect.h"
#include "../server.h"
#include "reply.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

const char *const SG_REJECT_REASON[R_COUNT] = {
    "too_large", "invalid_pipeline_key", "invalid_json", "invalid_body", "invalid_event", "invalid_batch",
    "unsupported_media_type", "redis_unavailable", "redis_oom",
};

static const char *const METHOD[M_COUNT] = { "POST", "OPTIONS", "GET", "HEAD", "PUT", "DELETE", "PATCH" };

static lane_t *lane_of(const worker_t *w) { return w ? w->ingest : NULL; }

/* The headers the collector reads. */
enum { H_PK, H_AUTH, H_COOKIE, H_UA, H_ORIGIN, H_ENC, H_CT, H_XFF, H_XFP, H_COUNT };
static const struct { const char *name; size_t len; } HEADER[H_COUNT] = {
    { "x-pipeline-key", 14 }, { "authorization", 13 }, { "cookie", 6 }, { "user-agent", 10 },
    { "origin", 6 }, { "content-encoding", 16 }, { "content-type", 12 }, { "x-forwarded-for", 15 },
    { "x-forwarded-proto", 17 },
};

typedef struct {
    sg_request r;
    const char *v[H_COUNT];            /* NULL: absent */
    size_t n[H_COUNT];
    const char *query;                 /* after the '?', or NULL */
    size_t qlen;
    int route, method;
    double t0;
} request;

void sg_collect_observe(lane_t *l, int route, int method, double t0)
{
    sg_hist *h = &l->hist[route][method];
    double dt = sg_monotonic() - t0;
    int i = 0;
    while (i < l->nbuckets && dt > l->buckets[i]) i++;
    h->counts[i]++;
    h->sum += dt;
}

/* ---- the request ----------------------------------------------------------------- */

/* The headers the collector reads; a repeated one is joined with ", ", as
 * RFC 9110 allows (and as the Lua request table has them). 0, or -1. */
static int read_headers(lane_t *l, request *rq)
{
    int count[H_COUNT] = { 0 };
    size_t total[H_COUNT] = { 0 }, need = 0;
    for (int i = 0; i < rq->r.nh; i++) {
        const sg_header *h = &rq->r.h[i];
        for (int k = 0; k < H_COUNT; k++) {
            if (h->nlen != HEADER[k].len || memcmp(h->name, HEADER[k].name, h->nlen) != 0) continue;
            if (count[k]++ == 0) { rq->v[k] = h->value; rq->n[k] = h->vlen; }
            total[k] += h->vlen + 2;
            break;
        }
    }
    for (int k = 0; k < H_COUNT; k++) need += count[k] > 1 ? total[k] : 0;
    sg_bytes_reset(&l->hdrs);
    /* room for the joined values and the Basic username (no longer than
     * the header it is decoded from): no pointer moves */
    size_t auth = count[H_AUTH] > 1 ? total[H_AUTH] : rq->n[H_AUTH];
    if (sg_bytes_reserve(&l->hdrs, need + auth + 1) != 0) return -1;
    for (int k = 0; k < H_COUNT; k++) {
        if (count[k] < 2) continue;
        size_t start = l->hdrs.len;
        for (int i = 0, seen = 0; i < rq->r.nh; i++) {
            const sg_header *h = &rq->r.h[i];
            if (h->nlen != HEADER[k].len || memcmp(h->name, HEADER[k].name, h->nlen) != 0) continue;
            if (seen++) SG_BYTES_LIT(&l->hdrs, ", ");
            sg_bytes_put(&l->hdrs, h->value, h->vlen);
        }
        rq->v[k] = l->hdrs.data + start;
        rq->n[k] = l->hdrs.len - start;
    }
    return 0;
}

static int route_of(const lane_t *l, const char *path, size_t n)
{
    for (int i = 0; i < l->nroutes; i++)
        if (l->routes[i].plen == n && memcmp(l->routes[i].path, path, n) == 0) return i;
    return -1;
}

static int method_of(const char *m, size_t n)
{
    for (int i = 0; i < M_COUNT; i++)
        if (strlen(METHOD[i]) == n && memcmp(METHOD[i], m, n) == 0) return i;
    return -1;
}

/* The query: sg_request gives the path; the query follows it in the
 * request line up to the space before the HTTP version. */
static void query_of(request *rq)
{
    const char *p = rq->r.path + rq->r.plen;
    rq->query = NULL;
    rq->qlen = 0;
    if (*p != '?') return;
    const char *q = p + 1, *e = q;
    while (*e != ' ') e++;
    rq->query = q;
    rq->qlen = (size_t)(e - q);
}

/* ---- replies ------------------------------------------------------------------ */

/* a reply of the CORS headers for origin against set, after Content-Type */
static void cors_headers(lane_t *l, const request *rq, const sg_origins *set, int preflight)
{
    const char *o = rq->v[H_ORIGIN];
    size_t on = rq->n[H_ORIGIN];
    sg_cors_lines(&l->reply, o, on, sg_cors_allowed(set, o, on), preflight);
}

static void reply_internal(lane_t *l, struct sg_conn *c, const request *rq)
{
    static const char BODY[] = "{\"error\":{\"code\":\"INTERNAL\",\"message\":\"internal error\"}}";
    server_reply_raw(c, 500, SG_JSON_HEADER, sizeof SG_JSON_HEADER - 1, BODY, sizeof BODY - 1);
    if (rq->method >= 0) sg_collect_observe(l, rq->route, rq->method, rq->t0);
}

static int reason_index(const char *reason)
{
    for (int i = 0; i < R_COUNT; i++)
        if (strcmp(SG_REJECT_REASON[i], reason) == 0) return i;
    return R_INVALID_BODY;
}

/* The refusal in l->cv. Errors raised before the pipeline is known (a 401,
 * a body that is not JSON) let a page of any configured origin read them:
 * otherwise a wrong key would surface as an opaque CORS failure. */
static void reply_refusal(lane_t *l, struct sg_conn *c, const request *rq)
{
    sg_convert *cv = &l->cv;
    l->rejected[reason_index(cv->reason)] += (uint64_t)cv->rejected;
    sg_bytes_reset(&l->reply);
    SG_BYTES_LIT(&l->reply, SG_JSON_HEADER);
    cors_headers(l, rq, cv->pipeline ? &cv->pipeline->origins : &l->any, 0);
    if (l->reply.oom) { reply_internal(l, c, rq); return; }
    server_reply_raw(c, cv->status, l->reply.data, l->reply.len, cv->error.data, cv->error.len);
    sg_collect_observe(l, rq->route, rq->method, rq->t0);
}

static void preflight(lane_t *l, struct sg_conn *c, const request *rq)
{
    const sg_origins *set = sg_cors_preflight_set(&l->keys, &l->any, rq->v[H_PK], rq->n[H_PK], rq->query, rq->qlen);
    sg_bytes_reset(&l->reply);
    cors_headers(l, rq, set, 1);
    if (l->reply.oom) { reply_internal(l, c, rq); return; }
    server_reply_raw(c, 204, l->reply.data, l->reply.len, "", 0);
    sg_collect_observe(l, rq->route, rq->method, rq->t0);
}

static void method_not_allowed(lane_t *l, struct sg_conn *c, const request *rq)
{
    sg_bytes *b = &l->reply;
    sg_bytes_reset(b);
    sg_bytes msg = SG_BYTES_INIT;
    sg_bytes_put(&msg, rq->r.method, rq->r.mlen);
    SG_BYTES_LIT(&msg, " is not supported on ");
    sg_bytes_put(&msg, rq->r.path, rq->r.plen);
    sg_reply_error(b, "METHOD_NOT_ALLOWED", msg.data, msg.len, NULL, 0);
    sg_bytes_free(&msg);
    if (b->oom) { reply_internal(l, c, rq); return; }
    server_reply_raw(c, 405, SG_JSON_HEADER, sizeof SG_JSON_HEADER - 1, b->data, b->len);
    sg_collect_observe(l, l->nroutes, rq->method, rq->t0);   /* as "unmatched", like the router */
}

/* ---- the body ------------------------------------------------------------------- */

/* inflates a gzip (or zlib) body into l->body: 0, 1 over max, -1 not gzip */
static int gunzip(lane_t *l, const char *in, size_t n, size_t max)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, 15 + 32) != Z_OK) return -1;   /* +32: gzip or zlib header */
    sg_bytes *b = &l->body;
    sg_bytes_reset(b);
    zs.next_in = (Bytef *)(uintptr_t)in;
    zs.avail_in = (uInt)n;
    int rc;
    do {
        if (sg_bytes_reserve(b, 16384) != 0) { rc = Z_MEM_ERROR; break; }
        zs.next_out = (Bytef *)(b->data + b->len);
        zs.avail_out = 16384;
        rc = inflate(&zs, Z_NO_FLUSH);
        if (rc != Z_OK && rc != Z_STREAM_END) break;
        size_t got = 16384 - zs.avail_out;
        b->len += got;
        if (b->len > max) { inflateEnd(&zs); return 1; }
        if (rc == Z_OK && zs.avail_in == 0 && got == 0) { rc = Z_DATA_ERROR; break; }
    } while (rc != Z_STREAM_END);
    inflateEnd(&zs);
    return rc == Z_STREAM_END ? 0 : -1;
}

static int is_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* Content-Encoding: gzip (RudderStack's SDK default) → *body inflated;
 * identity or none → as it is. 0, or 1 when refused (in l->cv). */
static int decode_body(lane_t *l, const request *rq, const char **body, size_t *n)
{
    const char *e = rq->v[H_ENC];
    size_t en = rq->n[H_ENC];
    if (!e) return 0;
    while (en && is_space(*e)) { e++; en--; }
    while (en && is_space(e[en - 1])) en--;
    sg_convert *cv = &l->cv;
    if (en == 0 || (en == 8 && strncasecmp(e, "identity", 8) == 0)) return 0;
    if (!((en == 4 && strncasecmp(e, "gzip", 4) == 0) || (en == 6 && strncasecmp(e, "x-gzip", 6) == 0))) {
        static const char M[] = "Content-Encoding must be gzip or identity";
        sg_convert_refuse(cv, 415, "UNSUPPORTED_MEDIA_TYPE", "unsupported_media_type", 1, M, sizeof M - 1, NULL, 0);
        return 1;
    }
    int rc = gunzip(l, *body, *n, COLLECT_MAX_BODY);
    if (rc == 0) {
        *body = l->body.data ? l->body.data : "";
        *n = l->body.len;
        return 0;
    }
    sg_bytes m = SG_BYTES_INIT;
    if (rc > 0) {
        SG_BYTES_LIT(&m, "request body is over ");
        sg_reply_kb(&m, COLLECT_MAX_BODY);
        SG_BYTES_LIT(&m, " once decompressed; that is the limit");
        sg_convert_refuse(cv, 413, "PAYLOAD_TOO_LARGE", "too_large", 1, m.data, m.len, NULL, 0);
    } else {
        SG_BYTES_LIT(&m, "Content-Encoding is gzip but body is not valid gzip data");
        sg_convert_refuse(cv, 400, "INVALID_BODY", "invalid_body", 1, m.data, m.len, NULL, 0);
    }
    sg_bytes_free(&m);
    return 1;
}

static void refuse_size(lane_t *l, size_t n)
{
    sg_bytes m = SG_BYTES_INIT;
    char num[24];
    SG_BYTES_LIT(&m, "request body is ");
    sg_bytes_put(&m, num, (size_t)snprintf(num, sizeof num, "%zu", n));
    SG_BYTES_LIT(&m, " bytes; the limit is ");
    sg_reply_kb(&m, COLLECT_MAX_BODY);
    SG_BYTES_LIT(&m, " per request");
    sg_convert_refuse(&l->cv, 413, "PAYLOAD_TOO_LARGE", "too_large", 1, m.data, m.len, NULL, 0);
    sg_bytes_free(&m);
}

/* ---- a POST -------------------------------------------------------------------- */

/* Who sent it, the cookie (read, or minted: *cookie set), the client: what
 * the request adds to its messages. 0, or -1 (no random bytes). */
static int visitor(lane_t *l, const request *rq, sg_convert_in *in, char minted[SG_VISITOR_ID_LEN], int *https)
{
    const sg_route *rt = &l->routes[rq->route];
    size_t pn = strlen(rq->r.peer);
    *https = -1;
    in->server_side = rt->kind == SG_ROUTE_EVENTS || rt->side == SIDE_SERVER ||
                      (rt->side == SIDE_BASIC && in->basic && !rq->v[H_ORIGIN]);
    if (!in->server_side) {
        int got = rq->v[H_COOKIE] ? sg_cookie_read(rq->v[H_COOKIE], rq->n[H_COOKIE], &l->cookie_keys,
                                                   &in->canonical_id, &in->canonical_id_len) : 0;
        if (!got) {
            if (sg_visitor_id(&l->rand, minted) != 0) return -1;
            in->canonical_id = minted;
            in->canonical_id_len = SG_VISITOR_ID_LEN;
        }
        /* a new id, or one signed with the previous secret: (re)set it */
        if (got != 1) *https = sg_client_https(&l->proxies, rq->r.peer, pn, rq->v[H_XFP], rq->n[H_XFP]);
    }
    sg_client_ip(&l->proxies, rq->r.peer, pn, rq->v[H_XFF], rq->n[H_XFF], &in->ip, &in->ip_len);
    in->user_agent = rq->v[H_UA];
    in->user_agent_len = rq->n[H_UA];
    return 0;
}

/* The converted messages join the group commit, with their reply headers:
 * JSON, CORS, and the cookie (sent on a 200 only). 0, or -1. */
static int store(lane_t *l, struct sg_conn *c, const request *rq, const char *body, const sg_convert_in *in,
                 int https)
{
    sg_pipeline *p = l->cv.pipeline;
    sg_bytes *h = &l->reply;
    sg_bytes_reset(h);
    SG_BYTES_LIT(h, SG_JSON_HEADER);
    cors_headers(l, rq, &p->origins, 0);
    size_t hdrl = h->len;
    if (https >= 0) {
        SG_BYTES_LIT(h, "Set-Cookie: ");
        sg_cookie_set(h, in->canonical_id, in->canonical_id_len, &l->cookie_keys, l->cookie_domain,
                      l->cookie_domain_len, https);
        SG_BYTES_LIT(h, "\r\n");
    }
    if (h->oom) return -1;
    sg_commit_req cr = { c, &l->cv, body, h->data, h->data + hdrl, hdrl, h->len - hdrl, rq->t0, rq->route };
    return sg_commit_add(l, p, &cr);
}

/* 1 when the request is held for its commit or answered, 0 when internal
 * trouble needs the 500 */
static int post(lane_t *l, struct sg_conn *c, const request *rq)
{
    const sg_route *rt = &l->routes[rq->route];
    sg_convert *cv = &l->cv;
    const char *body = rq->r.body;
    size_t n = rq->r.blen;
    sg_convert_reset(cv);
    sg_convert_in in;
    memset(&in, 0, sizeof in);
    int refused;
    if (n > COLLECT_MAX_BODY) { refuse_size(l, n); reply_refusal(l, c, rq); return 1; }
    in.header = sg_convert_header_key(cv, &l->keys, rq->v[H_PK], rq->n[H_PK], &refused);
    if (refused) { reply_refusal(l, c, rq); return 1; }
    cv->pipeline = in.header;
    char *user = l->hdrs.data + l->hdrs.len;       /* read_headers left room for it */
    if (rq->v[H_AUTH] && sg_basic_user(rq->v[H_AUTH], rq->n[H_AUTH], user, &in.basic_len)) in.basic = user;
    if (decode_body(l, rq, &body, &n) != 0) { reply_refusal(l, c, rq); return 1; }
    char minted[SG_VISITOR_ID_LEN];
    int https;
    if (visitor(l, rq, &in, minted, &https) != 0) return 0;
    in.kind = rt->kind;
    in.type_hint = rt->hint;
    in.type_hint_len = rt->hlen;
    in.keys = &l->keys;
    in.content_type = rq->v[H_CT];
    in.content_type_len = rq->n[H_CT];
    in.received_at = sg_wallclock();
    in.rand = &l->rand;
    if (sg_convert_body(cv, body, n, &in) != 0) return 0;
    if (cv->received && cv->pipeline) l->stats[cv->pipeline->stat].received += (uint64_t)cv->received;
    if (cv->status) { reply_refusal(l, c, rq); return 1; }
    return store(l, c, rq, body, &in, https) == 0;
}

int ingest_try(worker_t *w, struct sg_conn *c)
{
    lane_t *l = lane_of(w);
    if (!l || !l->configured) return 0;
    request rq;
    memset(&rq, 0, sizeof rq);
    server_request_view(c, &rq.r);
    rq.route = route_of(l, rq.r.path, rq.r.plen);
    if (rq.route < 0) return 0;
    rq.t0 = sg_monotonic();
    rq.method = method_of(rq.r.method, rq.r.mlen);
    query_of(&rq);
    if (rq.method < 0 || read_headers(l, &rq) != 0) {
        reply_internal(l, c, &rq);
    } else if (rq.method == M_POST) {
        if (!post(l, c, &rq)) reply_internal(l, c, &rq);
    } else if (rq.method == M_OPTIONS) {
        preflight(l, c, &rq);
    } else {
        method_not_allowed(l, c, &rq);
    }
    return 1;
}

/* ---- lifecycle ------------------------------------------------------------------- */

int ingest_inflight(const worker_t *w)
{
    const lane_t *l = lane_of(w);
    return l ? l->inflight : 0;
}

void ingest_detach(worker_t *w)
{
    lane_t *l = lane_of(w);
    if (!l) return;
    l->configured = 0;
    sg_commit_detach(l);
    l->inflight = 0;
}

void ingest_free(worker_t *w)
{
    lane_t *l = lane_of(w);
    if (!l) return;
    /* lua_close ran: every Redis callback has come, every group is freed */
    sg_collect_free_config(l);
    sg_commit_free(l);
    for (int i = 0; i < l->nstats; i++) free(l->stats[i].key);
    free(l->stats);
    sg_convert_free(&l->cv);
    sg_bytes_free(&l->body);
    sg_bytes_free(&l->hdrs);
    sg_bytes_free(&l->reply);
    if (l->flush_ev) event_free(l->flush_ev);
    free(l);
    w->ingest = NULL;
}
