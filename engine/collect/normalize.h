/*
 * normalize.h — one Segment/Datafly message → the canonical event
 * (engine/collect/normalize.c), and the identity linking keys it carries
 * (engine/collect/stitch.c).
 */
#ifndef SIGNAL_COLLECT_NORMALIZE_H
#define SIGNAL_COLLECT_NORMALIZE_H

#include "json.h"
#include "../l_crypto.h"

/* What the request adds to a message. Strings are (pointer, length); NULL
 * means absent. */
typedef struct {
    const char *canonical_id; size_t canonical_id_len;   /* the _dfdid cookie ("" counts as none) */
    const char *pipeline_key; size_t pipeline_key_len;   /* NULL: the event gets none */
    const char *ip;           size_t ip_len;             /* the client address */
    const char *user_agent;   size_t user_agent_len;     /* the User-Agent header */
    const char *type_hint;    size_t type_hint_len;      /* the route's type */
    int server_side;          /* the message's own context.ip/user_agent stand */
    double received_at;       /* seconds since the epoch */
    int32_t sent_at;          /* a batch's sentAt node (not null), or -1 */
    int32_t batch_context;    /* a batch's context node (a non-empty object or array), or -1 */
    sg_rand_pool *rand;       /* for message ids the sender left out */
} sg_norm_ctx;

enum { SG_LINK_EMAIL, SG_LINK_PHONE, SG_LINK_USER_ID, SG_LINK_COUNT };

/* Offsets are into the caller's `out` (the event) and `aux` (the rest). */
typedef struct {
    size_t ev, ev_len;                 /* the event JSON */
    size_t mid, mid_len;               /* its message_id */
    int dedupe;                        /* the sender chose the id (messageId/message_id) */
    size_t cid, cid_len;               /* its canonical_id (cid_len 0: none) */
    size_t link[SG_LINK_COUNT], link_len[SG_LINK_COUNT];   /* to remember (len 0: none) */
    int unstorable;                    /* invalid only because a number is ±inf */
    int nreasons;                      /* why it is invalid */
} sg_norm_result;

/* The workspace: reused from message to message, freed with sg_norm_free. */
typedef struct sg_norm sg_norm;
sg_norm *sg_norm_new(void);
void sg_norm_free(sg_norm *ws);

/* Converts message node msg of j. 1: valid, the event appended to out;
 * 0: invalid, r->nreasons reasons (sg_norm_reason); -1: out of memory or
 * no random bytes. j must be parsed with its message's context objects
 * indexed (the message at depth d: index depth d + 2). */
int sg_normalize(sg_norm *ws, const sg_json *j, uint32_t msg, const sg_norm_ctx *ctx,
                 sg_bytes *out, sg_bytes *aux, sg_norm_result *r);

/* Reason i (0-based) of the last invalid message. */
const char *sg_norm_reason(const sg_norm *ws, int i, size_t *len);

/* The reason a message holding ±inf gets, in lua-cjson's words. */
#define SG_NORM_UNSTORABLE "Cannot serialise number: must not be NaN or Inf"

/* snake_case of a key ("anonymousId" → "anonymous_id", "HTTPServer" →
 * "http_server"); out has room for 2n bytes. Returns the length. */
size_t sg_snake(const char *s, size_t n, char *out);

/* "2026-04-17T15:37:10.484Z" (UTC, milliseconds) for t; 0 when the C
 * library cannot (years beyond its range). out: 32 bytes. */
size_t sg_iso8601(double t, char *out);

/* YYYY-MM-DDThh:mm:ss[.1-9 digits](Z|±hh:mm) → seconds since the epoch. */
int sg_parse_iso8601(const char *s, size_t n, double *t);

/* ---- stitch.c: linking keys ----------------------------------------------
 * A view of an object: either an indexed node or a list of member nodes
 * (a merged traits object). */
typedef struct {
    const sg_json *j;
    int32_t node;                      /* an object node, or -1 */
    const uint32_t *members;           /* or these members (last wins) */
    int nmembers;
} sg_obj_view;

typedef struct {
    int has_canonical_id;
    int identify;
    const char *user_id; size_t user_id_len;   /* the event's user_id, NULL: none */
    int32_t user_id_node;                      /* or, given as a number, its node (-1: none) */
    sg_obj_view traits, context_traits, properties;
} sg_link_in;

/* identity linking keys: the email, phone and user id an event carries,
 * remembered per canonical_id so that a later anonymous event of the same
 * browser can be stitched. Appends the values to aux; r->link*. */
void sg_linking_keys(const sg_link_in *in, sg_bytes *aux, sg_norm_result *r);

#endif
