/*
 * keys.h — which pipeline a request is for (engine/collect/keys.c).
 */
#ifndef SIGNAL_COLLECT_KEYS_H
#define SIGNAL_COLLECT_KEYS_H

#include <stddef.h>

#include "cors.h"

struct group;

/* A configured pipeline, as the collector knows it. */
typedef struct sg_pipeline {
    char *key;
    size_t klen;
    char *raw, *dedupe, *identity;     /* its Redis keys (queue.lua): the raw stream, and the
                                        * prefixes of its dedupe windows and identity hashes */
    size_t rawlen, dedupelen, identitylen;
    sg_origins origins;
    int stat;                          /* its counters (ingest.c) */
    long unlinked;                     /* commit.c: the last window whose window - 2 was unlinked */
    long expiring;                     /* commit.c: the last window whose EXPIREAT ran */
    struct group *open;                /* commit.c: the group still taking messages */
} sg_pipeline;

typedef struct sg_keys {
    sg_pipeline *p;
    int n;
} sg_keys;

/* The pipeline whose key is k, or NULL. */
sg_pipeline *sg_keys_find(const sg_keys *keys, const char *k, size_t n);

/* The username of an HTTP Basic Authorization header (Segment SDKs send
 * their writeKey that way): 1 and the name in out (room for n bytes), or 0. */
int sg_basic_user(const char *auth, size_t n, char *out, size_t *outn);

/* Base64 (standard or url-safe, padding optional) → 1 and the bytes in out
 * (room for n bytes), or 0. */
int sg_b64decode(const char *s, size_t n, char *out, size_t *outn);

/* Where a key may be given, for the 401 messages. */
#define SG_KEY_HELP "send it in the X-Pipeline-Key header, as \"pipelineKey\" or \"writeKey\" in the JSON " \
    "body, or as the HTTP Basic username (Authorization: Basic base64(key + \":\"))"

#endif
