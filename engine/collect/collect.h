/*
 * collect.h — the collect stage's per-worker state (worker_t.ingest) and
 * what its files share: the routes, the pipelines, the counters, the group
 * commit's lists.
 *
 *   ingest.c    the request flow: routes, methods, headers, body, replies
 *   config.c    core.ingest_configure / core.ingest_stats
 *   commit.c    the group commit (dedupe markers, MULTI/EXEC)
 *   convert.c   a body → the events to store, or the refusal
 *   normalize.c one message → the canonical event; stitch.c its linking keys
 *   visitor.c   the _dfdid cookie and the client address
 *   cors.c      CORS; keys.c pipeline keys; reply.c error bodies
 *   json.c      the JSON reader/writer; limits.h the limits
 *   lua.c       core.collect: the same rules for Lua
 */
#ifndef SIGNAL_COLLECT_H
#define SIGNAL_COLLECT_H

#include <event2/event.h>
#include <stdint.h>

#include "../ingest.h"
#include "../l_core.h"
#include "../l_crypto.h"
#include "../l_redis.h"
#include "convert.h"
#include "limits.h"
#include "visitor.h"

struct sg_conn;
struct event;

#define COLLECT_MAX_ROUTES 32
#define COLLECT_MAX_BUCKETS 32
/* A group and its buffers are kept for the next one: growing them anew each
 * loop turn cost a realloc cascade, copies and malloc_consolidate per group.
 * Under load about six groups are in flight at once (bench/README.md). */
#define COLLECT_SPARE_GROUPS 8

/* The methods a collector route answers, and the rest (405). */
enum { M_POST, M_OPTIONS, M_GET, M_HEAD, M_PUT, M_DELETE, M_PATCH, M_COUNT };

/* server-side: 0 a browser's route; 1 a server's; 2 a server's when the
 * request has Basic credentials and no Origin (browsers always send Origin
 * on a POST) */
enum { SIDE_BROWSER, SIDE_SERVER, SIDE_BASIC };

typedef struct {
    char *path, *hint;                 /* hint: the type the path implies, or NULL */
    size_t plen, hlen;
    int kind;                          /* SG_ROUTE_* */
    int side;                          /* SIDE_* */
} sg_route;

/* request durations: counts per histogram bucket (the last: above them all) */
typedef struct {
    uint64_t counts[COLLECT_MAX_BUCKETS + 1];
    double sum;
} sg_hist;

/* per pipeline key, across reconfigurations: the deltas since the last
 * core.ingest_stats */
typedef struct {
    char *key;
    uint64_t received, accepted, deduplicated;
} sg_stat;

/* events_rejected_total's reasons */
enum { R_TOO_LARGE, R_INVALID_PIPELINE_KEY, R_INVALID_JSON, R_INVALID_BODY, R_INVALID_EVENT,
       R_INVALID_BATCH, R_UNSUPPORTED_MEDIA_TYPE, R_REDIS_UNAVAILABLE, R_REDIS_OOM, R_COUNT };
extern const char *const SG_REJECT_REASON[R_COUNT];

typedef struct group group_t;
typedef struct sg_ingest lane_t;

struct sg_ingest {
    worker_t *w;
    int configured;
    /* configuration (config.c) */
    int redis_ref;                     /* registry ref anchoring the connection */
    redis_conn **redis;                /* the collector's own connection (lite replies) */
    long dedupe_ttl, identity_ttl;
    sg_route routes[COLLECT_MAX_ROUTES];
    int nroutes;
    sg_keys keys;                      /* the pipelines */
    sg_origins any;                    /* every pipeline's origins */
    sg_proxies proxies;
    char *cookie_domain;               /* NULL: host-only */
    size_t cookie_domain_len;
    sg_cookie_keys cookie_keys;        /* owned copies of the cookie secrets */
    double buckets[COLLECT_MAX_BUCKETS];
    int nbuckets;
    /* counters (config.c hands them to Lua) */
    sg_stat *stats;
    int nstats;
    uint64_t rejected[R_COUNT];
    sg_hist hist[COLLECT_MAX_ROUTES + 1][M_COUNT];   /* [nroutes]: 405s, as "unmatched" */
    /* the group commit (commit.c) */
    group_t *ready_head, *ready_tail;  /* groups to send this loop turn */
    group_t *live;                     /* groups not yet answered */
    group_t *spare[COLLECT_SPARE_GROUPS];
    int nspare;
    struct event *flush_ev;
    sg_bytes cmd;                      /* a group's lookup and marking commands while they
                                        * are formatted (hiredis copies them) */
    int32_t *slot;                     /* the in-group dedupe set */
    size_t slotcap;
    double last_warn;
    int inflight;                      /* requests waiting for their commit */
    /* per request workspaces (ingest.c) */
    sg_convert cv;
    sg_bytes body;                     /* a gunzipped body */
    sg_bytes hdrs;                     /* repeated headers, joined; the Basic username */
    sg_bytes reply;                    /* reply headers and bodies */
    sg_rand_pool rand;                 /* cookie ids and message ids */
};

/* ---- commit.c */

/* A request whose messages (cv) are to be stored, and its reply headers
 * (hdr: Content-Type and CORS; cookie: the Set-Cookie line, sent on a 200
 * only). */
typedef struct {
    struct sg_conn *c;
    const sg_convert *cv;
    const char *body;                  /* the body the messages' inputs may point into */
    const char *hdr, *cookie;
    size_t hdrl, cookiel;
    double t0;
    int route;
} sg_commit_req;

/* Adds the request to its pipeline's open group (sent once every request
 * read in this loop turn has joined). 0, or -1: out of memory, nothing
 * added. */
int sg_commit_add(lane_t *l, sg_pipeline *p, const sg_commit_req *rq);

/* Shutdown: forget every group (no reply); free what Redis owes nothing. */
void sg_commit_detach(lane_t *l);
void sg_commit_free(lane_t *l);
void sg_commit_flush(evutil_socket_t fd, short what, void *arg);

/* ---- config.c */

/* Frees the configuration (routes, pipelines, proxies, cookie domain). */
void sg_collect_free_config(lane_t *l);

/* ---- ingest.c */

/* Counts a request's duration in its route's histogram. */
void sg_collect_observe(lane_t *l, int route, int method, double t0);

#endif
