/*
 * visitor.c — the _dfdid cookie and the client address.
 *
 * The cookie is the browser's canonical_id: read from the Cookie header,
 * validated (a short token: it becomes part of Redis keys and of every
 * event), and minted — "dfid_" and 32 random hex digits — when a browser
 * has none. With cookie_secret set the value is "<id>.<signature>", the
 * signature 128 bits of HMAC-SHA256(secret, id) in hex: a client cannot
 * choose another visitor's id (and read that visitor's profile slice from
 * /v1/enrich, or attach traits to it), since it cannot sign one. An
 * unsigned or badly signed value counts as no cookie: a new id is minted.
 * cookie_secret_previous still verifies while secrets rotate, and a value
 * signed with it is set again signed with the current secret. It is HttpOnly, SameSite=Lax, lives ~400 days (the longest
 * browsers keep one), gets Secure when a trusted proxy says the browser
 * used https (the engine itself speaks plain HTTP) and Domain= when
 * cookie_domain is configured.
 *
 * The client address is the connection's, unless the peer is one of the
 * trusted_proxies (IPs or CIDRs, IPv4 and IPv6): then X-Forwarded-For is
 * read from right to left, hops that are trusted proxies themselves are
 * skipped, and the first other one is the client. A malformed hop ends the
 * walk at the last address a trusted proxy vouched for: whatever is left of
 * it could be forged. Hops come as "[::1]:80", "1.2.3.4:5678" and
 * "fe80::1%eth0": brackets, ports and zones are dropped.
 *
 * Leading zeros in IPv4 parts are decimal ("010.1.2.3" is 10.1.2.3), as
 * they always were here, so a deployment's trusted_proxies keep matching
 * what they matched.
 */
#include "visitor.h"
#include "limits.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define IS_DIGIT(c) ((unsigned char)((c) - '0') < 10)

static int is_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

static void trim(const char **s, size_t *n)
{
    while (*n && is_space(**s)) { (*s)++; (*n)--; }
    while (*n && is_space((*s)[*n - 1])) (*n)--;
}

/* ---- the cookie ----------------------------------------------------------- */

static int id_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || IS_DIGIT(c) || c == '_' || c == '-' || c == '.';
}

static int valid_id(const char *s, size_t n)
{
    if (n == 0 || n > COLLECT_COOKIE_MAX_LEN) return 0;
    for (size_t i = 0; i < n; i++)
        if (!id_char((unsigned char)s[i])) return 0;
    return 1;
}

/* sig[SG_COOKIE_SIG_LEN] = the hex signature of id with key; 0, or -1 */
static int sign(const char *key, size_t klen, const char *id, size_t n, char sig[SG_COOKIE_SIG_LEN])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)id, n, md, &mdlen) ||
        mdlen < SG_COOKIE_SIG_LEN / 2)
        return -1;
    sg_hex(md, SG_COOKIE_SIG_LEN / 2, sig);
    return 0;
}

/* The id of a signed value s[len] ("<id>.<signature>"): 1 signed with the
 * current key, 2 with an older one, 0 neither. */
static int verify(const sg_cookie_keys *keys, const char *s, size_t *len)
{
    if (*len < SG_COOKIE_SIG_LEN + 2 || s[*len - SG_COOKIE_SIG_LEN - 1] != '.') return 0;
    size_t n = *len - SG_COOKIE_SIG_LEN - 1;
    char want[SG_COOKIE_SIG_LEN];
    for (int i = 0; i < keys->n; i++) {
        if (sign(keys->key[i], keys->len[i], s, n, want) != 0) return 0;
        if (CRYPTO_memcmp(want, s + n + 1, SG_COOKIE_SIG_LEN) == 0) {
            *len = n;
            return i == 0 ? 1 : 2;
        }
    }
    return 0;
}

int sg_cookie_read(const char *h, size_t n, const sg_cookie_keys *keys, const char **v, size_t *vn)
{
    static const char NAME[] = COLLECT_COOKIE_NAME "=";
    const size_t NL = sizeof NAME - 1;
    for (size_t i = 0; h && i + NL <= n; i++) {
        if (memcmp(h + i, NAME, NL) != 0) continue;
        /* it must start the header or follow "; " (not end "x_dfdid=") */
        char prev = i > 0 ? h[i - 1] : ';';
        if (prev != ';' && prev != ' ') continue;
        const char *s = h + i + NL, *e = memchr(s, ';', n - i - NL);
        size_t len = (size_t)((e ? e : h + n) - s);
        trim(&s, &len);
        if (len >= 2 && s[0] == '"' && s[len - 1] == '"') { s++; len -= 2; }
        if (!valid_id(s, len)) return 0;
        int got = 1;
        if (keys && keys->n > 0 && !(got = verify(keys, s, &len))) return 0;
        *v = s;
        *vn = len;
        return got;
    }
    return 0;
}

int sg_visitor_id(sg_rand_pool *r, char out[SG_VISITOR_ID_LEN])
{
    unsigned char b[16];
    if (sg_random_bytes(r, b, sizeof b) != 0) return -1;
    memcpy(out, "dfid_", 5);
    sg_hex(b, sizeof b, out + 5);
    return 0;
}

#define STR2(x) #x
#define STR(x) STR2(x)

void sg_cookie_set(sg_bytes *o, const char *id, size_t n, const sg_cookie_keys *keys, const char *domain,
                   size_t dn, int secure)
{
    SG_BYTES_LIT(o, COLLECT_COOKIE_NAME "=");
    sg_bytes_put(o, id, n);
    char sig[SG_COOKIE_SIG_LEN];
    if (keys && keys->n > 0 && sign(keys->key[0], keys->len[0], id, n, sig) == 0) {
        SG_BYTES_LIT(o, ".");
        sg_bytes_put(o, sig, sizeof sig);
    }
    SG_BYTES_LIT(o, "; Path=/; Max-Age=" STR(COLLECT_COOKIE_MAX_AGE) "; HttpOnly; SameSite=Lax");
    if (domain) {
        SG_BYTES_LIT(o, "; Domain=");
        sg_bytes_put(o, domain, dn);
    }
    if (secure) SG_BYTES_LIT(o, "; Secure");
}

/* ---- addresses ------------------------------------------------------------ */

/* "a.b.c.d", each part decimal digits (any count) up to 255 */
static int parse_ipv4(const char *s, size_t n, unsigned char out[4])
{
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        if (part > 0) {
            if (i >= n || s[i] != '.') return 0;
            i++;
        }
        size_t d0 = i;
        unsigned v = 0;
        while (i < n && IS_DIGIT(s[i])) {
            if (v <= 255) v = v * 10 + (unsigned)(s[i] - '0');
            i++;
        }
        if (i == d0 || v > 255) return 0;
        out[part] = (unsigned char)v;
    }
    return i == n ? 4 : 0;
}

static int hexval(char c)
{
    if (IS_DIGIT(c)) return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* colon-separated groups of 1-4 hex digits ("" has none) → their count,
 * or -1 */
static int groups(const char *s, size_t n, unsigned g[8], int max)
{
    if (n == 0) return 0;
    int k = 0;
    size_t i = 0;
    for (;;) {
        size_t d0 = i;
        unsigned v = 0;
        while (i < n && s[i] != ':') {
            int h = hexval(s[i]);
            if (h < 0 || i - d0 >= 4) return -1;
            v = v * 16 + (unsigned)h;
            i++;
        }
        if (i == d0 || k == max) return -1;
        g[k++] = v;
        if (i == n) return k;
        i++;                                   /* the ':' */
    }
}

/* the ":a.b.c.d" an IPv6 address may end with → where it starts, or 0 */
static size_t v4_tail(const char *s, size_t n, unsigned char tail[4], int *bad)
{
    size_t i = n;
    int dots = 0;
    while (i > 0 && (IS_DIGIT(s[i - 1]) || s[i - 1] == '.')) dots += s[--i] == '.';
    if (i == n || i == 0 || s[i - 1] != ':' || dots != 3) return 0;
    /* "%d+%.%d+%.%d+%.%d+": no empty part */
    for (size_t k = i; k < n; k++)
        if (s[k] == '.' && (k == i || k + 1 == n || s[k + 1] == '.')) return 0;
    *bad = !parse_ipv4(s + i, n - i, tail);
    return i;
}

static int parse_ipv6(const char *s, size_t n, unsigned char out[16])
{
    if (!memchr(s, ':', n)) return 0;
    for (size_t i = 0; i < n; i++)
        if (hexval(s[i]) < 0 && s[i] != ':' && s[i] != '.') return 0;
    unsigned char tail[4];
    int bad = 0;
    size_t t = v4_tail(s, n, tail, &bad);
    if (bad) return 0;
    /* the tail stands in for the last two groups */
    char buf[64];
    if (t) {
        if (t + 3 > sizeof buf) return 0;
        memcpy(buf, s, t);
        memcpy(buf + t, "0:0", 3);
        s = buf;
        n = t + 3;
    }
    unsigned h[8], r[8];
    int nh, nr;
    const char *dc = NULL;
    for (size_t i = 0; i + 1 < n; i++) if (s[i] == ':' && s[i + 1] == ':') { dc = s + i; break; }
    if (dc) {
        size_t hn = (size_t)(dc - s), rn = n - hn - 2;
        for (size_t i = 0; i + 1 < rn; i++) if (dc[2 + i] == ':' && dc[3 + i] == ':') return 0;
        if ((nh = groups(s, hn, h, 8)) < 0 || (nr = groups(dc + 2, rn, r, 8)) < 0 || nh + nr > 7) return 0;
    } else {
        if ((nh = groups(s, n, h, 8)) != 8) return 0;
        nr = 0;
    }
    unsigned g[8];
    for (int i = 0; i < 8; i++) g[i] = i < nh ? h[i] : i >= 8 - nr ? r[i - (8 - nr)] : 0;
    for (int i = 0; i < 8; i++) { out[2 * i] = (unsigned char)(g[i] >> 8); out[2 * i + 1] = (unsigned char)g[i]; }
    if (t) memcpy(out + 12, tail, 4);
    /* ::ffff:a.b.c.d is an IPv4 peer on a dual-stack socket: compare as IPv4 */
    static const unsigned char MAPPED[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    if (memcmp(out, MAPPED, 12) == 0) { memmove(out, out + 12, 4); return 4; }
    return 16;
}

int sg_parse_ip(const char *s, size_t n, unsigned char out[16])
{
    if (!s) return 0;
    int k = parse_ipv4(s, n, out);
    return k ? k : parse_ipv6(s, n, out);
}

int sg_proxies_add(sg_proxies *p, const char *s, size_t n)
{
    const char *slash = memchr(s, '/', n);
    size_t an = slash ? (size_t)(slash - s) : n;
    unsigned char b[16];
    int len = an ? sg_parse_ip(s, an, b) : 0;
    if (!len) return 0;
    int bits = len * 8;
    if (slash) {
        size_t i = an + 1;
        if (i == n) return 0;
        for (bits = 0; i < n; i++) {
            if (!IS_DIGIT(s[i]) || bits > 1000) return 0;
            bits = bits * 10 + (s[i] - '0');
        }
        /* "::ffff:10.0.0.0/104" style ranges were given in IPv6 bits */
        if (len == 4 && memchr(s, ':', an) && bits > 32) bits -= 96;
    }
    if (bits < 0 || bits > len * 8) return 0;
    sg_net *net = realloc(p->net, sizeof *net * (size_t)(p->n + 1));
    if (!net) return -1;
    p->net = net;
    memcpy(net[p->n].b, b, (size_t)len);
    net[p->n].len = len;
    net[p->n].bits = bits;
    p->n++;
    return 1;
}

void sg_proxies_free(sg_proxies *p)
{
    free(p->net);
    p->net = NULL;
    p->n = 0;
}

static int in_net(const unsigned char *b, int len, const sg_net *net)
{
    if (len != net->len) return 0;
    int full = net->bits / 8, rem = net->bits % 8;
    if (full > 0 && memcmp(b, net->b, (size_t)full) != 0) return 0;
    if (rem == 0) return 1;
    return (b[full] >> (8 - rem)) == (net->b[full] >> (8 - rem));
}

int sg_proxies_trust(const sg_proxies *p, const char *addr, size_t n)
{
    unsigned char b[16];
    int len;
    if (!p || p->n == 0 || !addr || !(len = sg_parse_ip(addr, n, b))) return 0;
    for (int i = 0; i < p->n; i++)
        if (in_net(b, len, &p->net[i])) return 1;
    return 0;
}

/* a hop without spaces, brackets, zone or port */
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
        /* "a.b.c.d:port" → "a.b.c.d" (digits only, three dots) */
        const char *colon = memchr(p, ':', len);
        size_t i = 0, dots = 0, digits = 0, ok = colon != NULL && colon > p && (size_t)(colon - p) + 1 < len;
        for (; ok && p + i < colon; i++) {
            if (p[i] == '.') { ok = digits > 0; dots++; digits = 0; }
            else if (IS_DIGIT(p[i])) digits++;
            else ok = 0;
        }
        for (i = (size_t)(colon ? colon - p + 1 : 0); ok && i < len; i++) ok = IS_DIGIT(p[i]);
        if (ok && dots == 3 && digits > 0) *n = (size_t)(colon - p);
    }
    const char *pct = memchr(*s, '%', *n);
    if (pct) *n = (size_t)(pct - *s);
}

void sg_client_ip(const sg_proxies *p, const char *peer, size_t pn, const char *xff, size_t xn,
                  const char **ip, size_t *iplen)
{
    *ip = pn ? peer : NULL;
    *iplen = pn;
    if (!xff || !sg_proxies_trust(p, peer, pn)) return;
    const char *end = xff + xn;
    while (end > xff) {
        const char *start = end;
        while (start > xff && start[-1] != ',') start--;
        if (start < end) {                     /* an empty hop (",,") is no hop */
            const char *a = start;
            size_t an = (size_t)(end - start);
            strip_hop(&a, &an);
            unsigned char b[16];
            if (!sg_parse_ip(a, an, b)) return;
            *ip = a;
            *iplen = an;
            if (!sg_proxies_trust(p, a, an)) return;
        }
        end = start > xff ? start - 1 : xff;
    }
}

int sg_client_https(const sg_proxies *p, const char *peer, size_t pn, const char *xfp, size_t n)
{
    if (!xfp) return 0;
    while (n && is_space(*xfp)) { xfp++; n--; }
    size_t k = 0;
    while (k < n && xfp[k] != ',' && !is_space(xfp[k])) k++;
    if (k != 5) return 0;
    for (size_t i = 0; i < 5; i++)
        if ((xfp[i] | 0x20) != "https"[i]) return 0;
    return sg_proxies_trust(p, peer, pn);
}
