/*
 * visitor.h — who the visitor is (engine/collect/visitor.c): the _dfdid
 * cookie that names a browser (canonical_id), and the client's address
 * behind trusted proxies.
 */
#ifndef SIGNAL_COLLECT_VISITOR_H
#define SIGNAL_COLLECT_VISITOR_H

#include <stddef.h>

#include "../bytes.h"
#include "../l_crypto.h"

/* ---- the _dfdid cookie */

/* The secrets that sign the cookie (cookie_secret, then
 * cookie_secret_previous while rotating): key[0] signs, each verifies. n 0:
 * the cookie is not signed. */
typedef struct {
    const char *key[2];
    size_t len[2];
    int n;
} sg_cookie_keys;

/* hex digits of a signature: 128 bits of HMAC-SHA256(secret, id) */
#define SG_COOKIE_SIG_LEN 32

/* The visitor id of a Cookie header's valid _dfdid value (a pointer into
 * h): 1, or 2 when it was signed with an older secret (set it again), or 0
 * when there is none — absent, malformed, or, with keys, unsigned or not
 * signed by any of them. Never mints. */
int sg_cookie_read(const char *h, size_t n, const sg_cookie_keys *keys, const char **v, size_t *vn);

#define SG_VISITOR_ID_LEN 37           /* "dfid_" and 32 hex digits */
/* A new visitor id: 0, or -1 when the OS gives no random bytes. */
int sg_visitor_id(sg_rand_pool *r, char out[SG_VISITOR_ID_LEN]);

/* The Set-Cookie value that plants id (signed with keys->key[0] when
 * there are keys): its attributes, Domain= when domain is not NULL, Secure
 * when the browser came over https. */
void sg_cookie_set(sg_bytes *o, const char *id, size_t n, const sg_cookie_keys *keys, const char *domain,
                   size_t dn, int secure);

/* ---- addresses and trusted proxies */

typedef struct {
    unsigned char b[16];
    int len, bits;                     /* len 4 (IPv4, also IPv4-mapped) or 16 */
} sg_net;

typedef struct {
    sg_net *net;
    int n;
} sg_proxies;

/* An address as 4 bytes (IPv4 and IPv4-mapped IPv6) or 16: the length, or
 * 0 when s is not an address. */
int sg_parse_ip(const char *s, size_t n, unsigned char out[16]);

/* Adds "addr" or "addr/bits" to p: 1 added, 0 not an address (skipped),
 * -1 out of memory. */
int sg_proxies_add(sg_proxies *p, const char *s, size_t n);
void sg_proxies_free(sg_proxies *p);
int sg_proxies_trust(const sg_proxies *p, const char *addr, size_t n);

/* The client's address: the peer's, or, when the peer is a trusted proxy,
 * the first hop of X-Forwarded-For (xff, NULL: absent) read from the right
 * that is not a trusted proxy itself. *ip NULL: no address (no peer). */
void sg_client_ip(const sg_proxies *p, const char *peer, size_t pn, const char *xff, size_t xn,
                  const char **ip, size_t *iplen);

/* Whether a trusted proxy says the browser used https (X-Forwarded-Proto,
 * NULL: absent). */
int sg_client_https(const sg_proxies *p, const char *peer, size_t pn, const char *xfp, size_t n);

#endif
