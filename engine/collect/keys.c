/*
 * keys.c — pipeline keys: the lookup and the HTTP Basic form.
 *
 * A request names its pipeline in one of four places, looked at in this
 * order: the X-Pipeline-Key header (authoritative: an unknown one is refused
 * before the body is read), `pipelineKey` then `writeKey` in the JSON body
 * (at the top level, for a batch; convert.c reads those), and the HTTP
 * Basic username, as Segment SDKs send their writeKey
 * (Authorization: Basic base64(writeKey + ":")). A key is public — it ships
 * in the page — so it selects a pipeline, it does not authenticate one.
 */
#include "keys.h"

#include <string.h>
#include <strings.h>

sg_pipeline *sg_keys_find(const sg_keys *keys, const char *k, size_t n)
{
    /* a handful of pipelines per collector: a scan beats hashing the key */
    for (int i = 0; keys && i < keys->n; i++)
        if (keys->p[i].klen == n && memcmp(keys->p[i].key, k, n) == 0) return &keys->p[i];
    return NULL;
}

static int b64(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;     /* '-' and '_': base64url, seen from some clients */
    if (c == '/' || c == '_') return 63;
    return -1;
}

int sg_b64decode(const char *s, size_t n, char *out, size_t *outn)
{
    while (n && s[n - 1] == '=') n--;
    if (n % 4 == 1) return 0;
    size_t k = 0;
    for (size_t i = 0; i < n; i += 4) {
        size_t g = n - i < 4 ? n - i : 4;
        unsigned v = 0;
        for (size_t j = 0; j < 4; j++) {
            int d = j < g ? b64((unsigned char)s[i + j]) : 0;
            if (d < 0) return 0;
            v = v << 6 | (unsigned)d;
        }
        out[k++] = (char)(v >> 16);
        if (g > 2) out[k++] = (char)(v >> 8);
        if (g > 3) out[k++] = (char)v;
    }
    *outn = k;
    return 1;
}

static int is_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

int sg_basic_user(const char *auth, size_t n, char *out, size_t *outn)
{
    size_t i = 0;
    while (i < n && is_space(auth[i])) i++;
    if (n - i < 6 || strncasecmp(auth + i, "basic", 5) != 0 || !is_space(auth[i + 5])) return 0;
    i += 5;
    while (i < n && is_space(auth[i])) i++;
    size_t t = i;
    while (i < n && !is_space(auth[i])) i++;
    size_t tn = i - t;
    while (i < n && is_space(auth[i])) i++;
    if (tn == 0 || i != n) return 0;
    size_t pn;
    if (!sg_b64decode(auth + t, tn, out, &pn)) return 0;
    const char *colon = memchr(out, ':', pn);
    *outn = colon ? (size_t)(colon - out) : pn;
    return *outn > 0;
}
