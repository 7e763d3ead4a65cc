/*
 * convert.h — a request body → the events to store, or the refusal
 * (engine/collect/convert.c).
 */
#ifndef SIGNAL_COLLECT_CONVERT_H
#define SIGNAL_COLLECT_CONVERT_H

#include "keys.h"
#include "normalize.h"

/* What a route takes. */
enum { SG_ROUTE_SINGLE = 1, SG_ROUTE_BATCH, SG_ROUTE_EVENTS };

/* The request around the body, as the request flow resolved it. */
typedef struct {
    int kind;                          /* SG_ROUTE_* */
    const char *type_hint; size_t type_hint_len;
    int server_side;
    const sg_keys *keys;               /* the configured pipelines */
    sg_pipeline *header;               /* the pipeline X-Pipeline-Key named, or NULL */
    const char *basic; size_t basic_len;                 /* the Basic username, or NULL */
    const char *content_type; size_t content_type_len;   /* NULL: none */
    const char *canonical_id; size_t canonical_id_len;   /* the cookie (browsers), or NULL */
    const char *ip; size_t ip_len;
    const char *user_agent; size_t user_agent_len;
    double received_at;
    sg_rand_pool *rand;
} sg_convert_in;

/* One message's stored form: the event (and its id, linking keys) and the
 * input as received, minus credentials. */
typedef struct {
    sg_norm_result r;                  /* offsets into events and aux */
    size_t in, in_len;
    int in_body;                       /* in is an offset into the body, else into inputs */
} sg_message;

typedef struct {
    sg_json json;
    sg_norm *norm;
    sg_bytes events, inputs, aux;      /* the stored forms */
    sg_bytes error;                    /* a refusal's body */
    sg_bytes bad, bad_index;           /* a batch refusal being built: invalid messages */
    sg_bytes big, big_index;           /* and messages over the size limit */
    sg_message *msg;
    size_t msgcap;
    /* the outcome */
    int status;                        /* 0: converted; else the refusal's HTTP status */
    const char *code;                  /* the refusal's code */
    const char *reason;                /* its events_rejected_total label */
    int rejected;                      /* the messages it counts for */
    int received;                      /* messages counted as received: 0 until the
                                        * pipeline is known and the body well formed */
    sg_pipeline *pipeline;             /* NULL until known */
    int n;                             /* messages converted */
} sg_convert;

void sg_convert_init(sg_convert *cv);
/* Clears the outcome (no refusal, no pipeline) before a request. */
void sg_convert_reset(sg_convert *cv);
void sg_convert_free(sg_convert *cv);

/* Converts body[0, n) (after gunzip). 0: done — cv->status says how;
 * -1: out of memory or no random bytes. */
int sg_convert_body(sg_convert *cv, const char *body, size_t n, const sg_convert_in *in);

/* The pipeline an X-Pipeline-Key header value names (NULL: k absent or
 * ""); *refused when it names none (cv then holds the 401). */
sg_pipeline *sg_convert_header_key(sg_convert *cv, const sg_keys *keys, const char *k, size_t n, int *refused);

/* Sets cv's outcome to a refusal (its body in cv->error). */
void sg_convert_refuse(sg_convert *cv, int status, const char *code, const char *reason, int count,
                       const char *message, size_t mlen, const char *details, size_t dlen);

#endif
