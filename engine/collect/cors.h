/*
 * cors.h — CORS for every browser-facing route (engine/collect/cors.c):
 * the collector's answers and preflights, and, through core.collect.cors,
 * the identity hub (/v1/enrich) and the SDK routes.
 */
#ifndef SIGNAL_COLLECT_CORS_H
#define SIGNAL_COLLECT_CORS_H

#include <stddef.h>

#include "../bytes.h"

/* A set of origins in their canonical form (config.lua: lower case, no
 * default port). */
typedef struct {
    char **o;
    size_t *len;
    int n;
} sg_origins;

#define SG_CORS_ALLOW_METHODS "POST, GET, OPTIONS"
#define SG_CORS_ALLOW_HEADERS "Content-Type, X-Pipeline-Key, Authorization, Content-Encoding"
/* Chrome caps at 2 h, Firefox at 24 h: ask for the most either honours. */
#define SG_CORS_MAX_AGE "7200"

/* Adds a copy of o[0, n) to s: 0, or -1 (out of memory). */
int sg_origins_add(sg_origins *s, const char *o, size_t n);
void sg_origins_free(sg_origins *s);

/* o in the canonical form: lower case, no :443 on https, no :80 on http.
 * Writes it to out (room for n bytes); returns its length. */
size_t sg_origin_canonical(const char *o, size_t n, char *out);

/* Whether the Origin header value o is in s (s NULL: no set, never). */
int sg_cors_allowed(const sg_origins *s, const char *o, size_t n);

/* The pipeline key a preflight's query names (?pipelineKey= or
 * ?writeKey=): 1 and the key, or 0. */
int sg_cors_query_key(const char *q, size_t n, const char **k, size_t *kn);

struct sg_keys;

/* The origins a preflight is granted for: those of the pipeline it names
 * (the X-Pipeline-Key header hk, else the query q; NULL: absent), or of
 * every pipeline (any). */
const sg_origins *sg_cors_preflight_set(const struct sg_keys *keys, const sg_origins *any, const char *hk,
                                        size_t hn, const char *q, size_t qn);

/* A response's CORS header lines ("Name: value\r\n") for the Origin o
 * (NULL: none): Vary, and when granted the origin with credentials; a
 * preflight's grant adds the methods, headers and max age. */
void sg_cors_lines(sg_bytes *h, const char *o, size_t n, int granted, int preflight);

#endif
