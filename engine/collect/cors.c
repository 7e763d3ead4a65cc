/*
 * cors.c — who may read the collector's answers from a page.
 *
 * The collector answers with credentials (the _dfdid cookie), so a grant
 * always names the one requesting origin (never "*", which browsers refuse
 * together with credentials) and comes with `Vary: Origin` so that shared
 * caches keep one answer per origin. An origin not in the pipeline's
 * `origins` gets no Access-Control-Allow-* header at all; the request is
 * still processed: CORS is enforced by the browser (it hides the answer
 * from the page), not an access control — a pipeline key is public.
 *
 * A preflight carries neither a body nor credentials, so its pipeline is
 * usually unknown: it is granted for an origin of ANY pipeline, or — when it
 * names one (an X-Pipeline-Key header, or ?pipelineKey= / ?writeKey= in the
 * query, as some proxies and SDK builds send) — of that pipeline. So is an
 * error answered before the pipeline is known (a 401, a bad body): a page
 * with a wrong key then reads the message instead of an opaque CORS failure.
 *
 * Origins are compared in the canonical form config.lua stores them in;
 * browsers send that form, so only odd clients pay for lower-casing and
 * dropping a default port.
 */
#include "cors.h"
#include "keys.h"

#include <stdlib.h>
#include <string.h>

int sg_origins_add(sg_origins *s, const char *o, size_t n)
{
    char **no = realloc(s->o, sizeof *no * (size_t)(s->n + 1));
    if (!no) return -1;
    s->o = no;
    size_t *nl = realloc(s->len, sizeof *nl * (size_t)(s->n + 1));
    if (!nl) return -1;
    s->len = nl;
    char *d = malloc(n + 1);
    if (!d) return -1;
    memcpy(d, o, n);
    d[n] = '\0';
    s->o[s->n] = d;
    s->len[s->n++] = n;
    return 0;
}

void sg_origins_free(sg_origins *s)
{
    for (int i = 0; i < s->n; i++) free(s->o[i]);
    free(s->o);
    free(s->len);
    s->o = NULL;
    s->len = NULL;
    s->n = 0;
}

static int in_set(const sg_origins *s, const char *o, size_t n)
{
    for (int i = 0; i < s->n; i++)
        if (s->len[i] == n && memcmp(s->o[i], o, n) == 0) return 1;
    return 0;
}

size_t sg_origin_canonical(const char *o, size_t n, char *low)
{
    for (size_t i = 0; i < n; i++) low[i] = (char)(o[i] >= 'A' && o[i] <= 'Z' ? o[i] + 32 : o[i]);
    if (n >= 12 && memcmp(low, "https://", 8) == 0 && memcmp(low + n - 4, ":443", 4) == 0) n -= 4;
    else if (n >= 10 && memcmp(low, "http://", 7) == 0 && memcmp(low + n - 3, ":80", 3) == 0) n -= 3;
    return n;
}

int sg_cors_allowed(const sg_origins *s, const char *o, size_t n)
{
    if (!s || !o) return 0;
    if (in_set(s, o, n)) return 1;
    char low[256];
    if (n >= sizeof low) return 0;
    return in_set(s, low, sg_origin_canonical(o, n, low));
}

static int key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

/* the first "name=" in q followed by at least one key character */
static int find_key(const char *q, size_t n, const char *name, size_t nl, const char **k, size_t *kn)
{
    for (size_t i = 0; i + nl <= n; i++) {
        if (memcmp(q + i, name, nl) != 0) continue;
        size_t j = i + nl;
        while (j < n && key_char(q[j])) j++;
        if (j > i + nl) {
            *k = q + i + nl;
            *kn = j - i - nl;
            return 1;
        }
    }
    return 0;
}

int sg_cors_query_key(const char *q, size_t n, const char **k, size_t *kn)
{
    if (!q) return 0;
    return find_key(q, n, "pipelineKey=", 12, k, kn) || find_key(q, n, "writeKey=", 9, k, kn);
}

void sg_cors_lines(sg_bytes *h, const char *o, size_t n, int granted, int preflight)
{
    if (!o) return;
    SG_BYTES_LIT(h, "Vary: Origin\r\n");
    if (!granted) return;
    SG_BYTES_LIT(h, "Access-Control-Allow-Origin: ");
    sg_bytes_put(h, o, n);
    SG_BYTES_LIT(h, "\r\nAccess-Control-Allow-Credentials: true\r\n");
    if (!preflight) return;
    SG_BYTES_LIT(h, "Access-Control-Allow-Methods: " SG_CORS_ALLOW_METHODS "\r\n"
                    "Access-Control-Allow-Headers: " SG_CORS_ALLOW_HEADERS "\r\n"
                    "Access-Control-Max-Age: " SG_CORS_MAX_AGE "\r\n");
}

const sg_origins *sg_cors_preflight_set(const sg_keys *keys, const sg_origins *any, const char *hk, size_t hn,
                                        const char *q, size_t qn)
{
    if (!hk && !sg_cors_query_key(q, qn, &hk, &hn)) return any;
    sg_pipeline *p = sg_keys_find(keys, hk, hn);
    return p ? &p->origins : any;
}
