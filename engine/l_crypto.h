/*
 * l_crypto.h — OS random bytes for C callers (engine/l_crypto.c).
 *
 * core.random_hex and core.uuid draw from a pool of getrandom() bytes, one
 * pool per lua_State; the collector (engine/collect/) keeps a pool
 * of its own and mints cookie ids and message ids with these functions.
 * Each byte of a pool is handed out once.
 */
#ifndef SIGNAL_L_CRYPTO_H
#define SIGNAL_L_CRYPTO_H

#include <stddef.h>

#define SG_RAND_POOL 4096
typedef struct {
    size_t used;                       /* bytes handed out; SG_RAND_POOL: empty */
    unsigned char buf[SG_RAND_POOL];
} sg_rand_pool;

/* An empty pool: the first draw fills it. */
static inline void sg_rand_init(sg_rand_pool *p) { p->used = SG_RAND_POOL; }

/* n (<= SG_RAND_POOL) fresh bytes into out: 0, or -1 when getrandom fails */
int sg_random_bytes(sg_rand_pool *p, unsigned char *out, size_t n);

/* 2n chars into out, lower case, no NUL */
void sg_hex(const unsigned char *in, size_t n, char *out);

/* a version 4 UUID (36 chars, no NUL): 0, or -1 */
int sg_uuid4(sg_rand_pool *p, char out[36]);

#endif
