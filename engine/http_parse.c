/*
 * http_parse.c — HTTP/1.x request parsing (http_parse.h says what it
 * returns and how the server uses it).
 *
 * One pass over the buffered bytes, in the order a request arrives: find
 * the end of the header section (nothing is parsed before all of it is
 * here, so a slow client costs one memchr scan per read), then the request
 * line, the header lines, and the body as the framing headers describe it.
 * Only what HTTP/1.1 (RFC 9112) requires of a server that is not a proxy
 * is accepted: folded header lines, conflicting Content-Length headers,
 * Content-Length together with Transfer-Encoding, and any transfer coding
 * but chunked are refused, because each is a way to make two parsers
 * disagree about where a request ends (request smuggling).
 */
#include "http_parse.h"

#include <string.h>
#include <strings.h>

/* Refusals say what to change: they end up in SDK logs and browser consoles. */
#define MSG_BODY_TOO_LARGE "request body is over the server's limit of 1 MB; send smaller " \
    "requests (the collector takes 500 KB per request: split the batch)"
#define MSG_HEADERS_TOO_LARGE "request header section is over 16 KB; send fewer or smaller " \
    "headers (oversized cookies on the collector's domain are the usual cause)"

/* A chunk-size line (size and extensions) longer than this is refused
 * rather than waited for. */
#define MAX_CHUNK_LINE 1024

/* The framing headers seen while reading the header lines. */
typedef struct {
    const char *cl, *te;          /* Content-Length, Transfer-Encoding values */
    size_t cll, tel;
    int expect_continue;
} framing;

static int refuse(sg_http_request *r, int status, const char *code, const char *message)
{
    r->status = status;
    r->code = code;
    r->message = message;
    return -1;
}

static int is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static int hex_value(unsigned char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

static int token_eq(const char *s, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    return n == l && strncasecmp(s, lit, l) == 0;
}

/* Whether the comma-separated header value lists tok (case-insensitive). */
static int has_token(const char *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok), i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
        size_t s = i;
        while (i < n && v[i] != ',') i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t')) e--;
        if (e - s == tl && strncasecmp(v + s, tok, tl) == 0) return 1;
    }
    return 0;
}

/* ---- the header section ------------------------------------------------------ */

/* Just past the empty line that ends the header section starting at p, or
 * NULL while it has not all arrived. Lines end with CRLF or a bare LF. */
static char *header_end(char *p, const char *end)
{
    for (char *q = p; q < end; ) {
        char *nl = memchr(q, '\n', (size_t)(end - q));
        if (!nl) break;
        if (nl + 1 < end && nl[1] == '\n') return nl + 2;
        if (nl + 2 < end && nl[1] == '\r' && nl[2] == '\n') return nl + 3;
        if (nl + 1 >= end || (nl[1] == '\r' && nl + 2 >= end)) break;
        q = nl + 1;
    }
    return NULL;
}

/* METHOD SP target SP HTTP/1.x, the first line of p[0, hend). 0 with *next
 * at the line after it, or -1. */
static int parse_request_line(char *p, char *hend, sg_http_request *r, char **next)
{
    char *nl = memchr(p, '\n', (size_t)(hend - p));
    char *le = (nl > p && nl[-1] == '\r') ? nl - 1 : nl;
    char *sp1 = memchr(p, ' ', (size_t)(le - p));
    if (!sp1 || sp1 == p) return refuse(r, 400, "BAD_REQUEST", "malformed request line");
    for (char *q = p; q < sp1; q++)
        if (!is_tchar((unsigned char)*q)) return refuse(r, 400, "BAD_REQUEST", "malformed request line");
    char *tgt = sp1 + 1;
    char *sp2 = memchr(tgt, ' ', (size_t)(le - tgt));
    if (!sp2 || sp2 == tgt || le - sp2 != 9 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0 ||
        (sp2[8] != '0' && sp2[8] != '1'))
        return refuse(r, 400, "BAD_REQUEST", "malformed request line (only HTTP/1.0 and HTTP/1.1 are served)");
    r->method = p;
    r->mlen = (size_t)(sp1 - p);
    r->target = tgt;
    r->tlen = (size_t)(sp2 - tgt);
    r->minor = sp2[8] - '0';
    for (size_t i = 0; i < r->tlen; i++)
        if ((unsigned char)tgt[i] <= ' ' || tgt[i] == 0x7f)
            return refuse(r, 400, "BAD_REQUEST", "malformed request target");
    *next = nl + 1;
    return 0;
}

/* Notes what the server itself acts on: keep-alive, Expect and framing. */
static int note_header(const sg_header *h, sg_http_request *r, framing *f)
{
    switch (h->nlen) {
    case 6:
        if (memcmp(h->name, "expect", 6) == 0 && token_eq(h->value, h->vlen, "100-continue"))
            f->expect_continue = 1;
        break;
    case 10:
        if (memcmp(h->name, "connection", 10) == 0) {
            if (has_token(h->value, h->vlen, "close")) r->keep_alive = 0;
            else if (has_token(h->value, h->vlen, "keep-alive")) r->keep_alive = 1;
        }
        break;
    case 14:
        if (memcmp(h->name, "content-length", 14) == 0) {
            if (f->cl && (f->cll != h->vlen || memcmp(f->cl, h->value, f->cll) != 0))
                return refuse(r, 400, "BAD_REQUEST", "conflicting Content-Length headers");
            f->cl = h->value;
            f->cll = h->vlen;
        }
        break;
    case 17:
        if (memcmp(h->name, "transfer-encoding", 17) == 0) { f->te = h->value; f->tel = h->vlen; }
        break;
    }
    return 0;
}

/* The header lines from line up to the empty line before hend: names
 * lower-cased in place, values trimmed of spaces and tabs. 0, or -1. */
static int parse_header_lines(char *line, char *hend, sg_http_request *r, framing *f)
{
    while (line < hend) {
        char *lnl = memchr(line, '\n', (size_t)(hend - line));
        char *lend = (lnl > line && lnl[-1] == '\r') ? lnl - 1 : lnl;
        if (lend == line) break;  /* the empty line */
        if (*line == ' ' || *line == '\t')
            return refuse(r, 400, "BAD_REQUEST", "folded header lines are not accepted");
        char *colon = memchr(line, ':', (size_t)(lend - line));
        if (!colon || colon == line) return refuse(r, 400, "BAD_REQUEST", "malformed header line");
        for (char *q = line; q < colon; q++) {
            unsigned char ch = (unsigned char)*q;
            if (!is_tchar(ch)) return refuse(r, 400, "BAD_REQUEST", "malformed header name");
            if (ch >= 'A' && ch <= 'Z') *q = (char)(ch + 32);   /* Lua sees lower case */
        }
        char *v = colon + 1, *ve = lend;
        while (v < ve && (*v == ' ' || *v == '\t')) v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
        if (r->nh == SG_MAX_HEADERS)
            return refuse(r, 431, "HEADERS_TOO_LARGE", "more than 100 request header lines; send fewer headers");
        sg_header *h = &r->h[r->nh++];
        h->name = line;
        h->nlen = (size_t)(colon - line);
        h->value = v;
        h->vlen = (size_t)(ve - v);
        if (note_header(h, r, f) != 0) return -1;
        line = lnl + 1;
    }
    return 0;
}

/* ---- the body ---------------------------------------------------------------- */

/* One chunk-size line at s (before nl): its size, or -1 (refused). */
static long chunk_size(const char *s, const char *nl, sg_http_request *r)
{
    size_t size = 0;
    const char *q = s;
    int digits = 0;
    for (int v; q < nl && (v = hex_value((unsigned char)*q)) >= 0; q++, digits++) {
        if (size > SG_MAX_REQUEST_BODY) return refuse(r, 413, "PAYLOAD_TOO_LARGE", MSG_BODY_TOO_LARGE);
        size = size * 16 + (size_t)v;
    }
    /* what follows the digits: an extension, the CR, or whitespace */
    if (!digits || (q < nl && *q != ';' && *q != '\r' && *q != ' ' && *q != '\t'))
        return refuse(r, 400, "BAD_REQUEST", "malformed chunk size line");
    return (long)size;
}

int sg_http_chunked_scan(const char *p, const char *end, size_t *blen, size_t *span,
                         sg_http_request *r)
{
    const char *s = p;
    size_t total = 0;
    for (;;) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        if (!nl) return (end - s > MAX_CHUNK_LINE) ? refuse(r, 400, "BAD_REQUEST", "malformed chunk size line") : 0;
        long size = chunk_size(s, nl, r);
        if (size < 0) return -1;
        s = nl + 1;
        if (size == 0) {          /* trailers until an empty line */
            for (;;) {
                nl = memchr(s, '\n', (size_t)(end - s));
                if (!nl) return 0;
                int empty = (nl == s) || (nl == s + 1 && *s == '\r');
                s = nl + 1;
                if (empty) break;
            }
            *blen = total;
            *span = (size_t)(s - p);
            return 1;
        }
        total += (size_t)size;
        if (total > SG_MAX_REQUEST_BODY)
            return refuse(r, 413, "PAYLOAD_TOO_LARGE", MSG_BODY_TOO_LARGE);
        if ((size_t)(end - s) < (size_t)size + 1) return 0;
        s += size;
        if (*s == '\r') { if (end - s < 2) return 0; s++; }
        if (*s != '\n') return refuse(r, 400, "BAD_REQUEST", "chunk data is not followed by CRLF");
        s++;
    }
}

/* The data only ever moves towards p (each chunk dropped at least three
 * bytes of framing before it), so no chunk overwrites a size line still to
 * be read. */
size_t sg_http_chunked_decode(char *p)
{
    char *start = p, *dst = p;
    for (;;) {
        size_t size = 0;
        for (int v; (v = hex_value((unsigned char)*p)) >= 0; p++) size = size * 16 + (size_t)v;
        while (*p != '\n') p++;   /* the extension: the scan found the LF */
        p++;
        if (size == 0) return (size_t)(dst - start);
        memmove(dst, p, size);
        dst += size;
        p += size;
        if (*p == '\r') p++;
        p++;
    }
}

/* The body the framing headers describe, starting at hend. */
static int parse_body(char *hend, const char *end, const framing *f, sg_http_request *r)
{
    if (f->te) {
        if (f->cl) return refuse(r, 400, "BAD_REQUEST", "both Content-Length and Transfer-Encoding are set");
        if (!token_eq(f->te, f->tel, "chunked"))
            return refuse(r, 501, "NOT_IMPLEMENTED", "only the chunked Transfer-Encoding is supported; send Content-Length or chunked");
        size_t blen = 0, span = 0;
        int rc = sg_http_chunked_scan(hend, end, &blen, &span, r);
        if (rc <= 0) {
            r->want_continue = rc == 0 && f->expect_continue && r->minor == 1;
            return rc;
        }
        if (blen) {
            sg_http_chunked_decode(hend);
            r->body = hend;
        }
        r->blen = blen;
        r->total += span;
        return 1;
    }
    if (f->cl) {
        size_t n = 0;
        if (f->cll == 0 || f->cll > 12) return refuse(r, 400, "BAD_REQUEST", "invalid Content-Length");
        for (size_t i = 0; i < f->cll; i++) {
            if (f->cl[i] < '0' || f->cl[i] > '9') return refuse(r, 400, "BAD_REQUEST", "invalid Content-Length");
            n = n * 10 + (size_t)(f->cl[i] - '0');
        }
        if (n > SG_MAX_REQUEST_BODY)
            return refuse(r, 413, "PAYLOAD_TOO_LARGE", MSG_BODY_TOO_LARGE);
        if ((size_t)(end - hend) < n) {
            r->want_continue = f->expect_continue && r->minor == 1;
            return 0;
        }
        r->body = hend;
        r->blen = n;
    }
    r->total += r->blen;
    return 1;
}

/* ---- the request --------------------------------------------------------------- */

int sg_http_parse(char *buf, size_t len, sg_http_request *r)
{
    const char *end = buf + len;
    r->nh = 0;
    r->want_continue = 0;
    r->body = NULL;
    r->blen = 0;
    /* Tolerate the empty lines some clients send between requests. */
    char *p = buf;
    while (p < end && (*p == '\r' || *p == '\n')) p++;

    char *hend = header_end(p, end);
    if (!hend) {
        if ((size_t)(end - p) > SG_MAX_HEADERS_SIZE)
            return refuse(r, 431, "HEADERS_TOO_LARGE", MSG_HEADERS_TOO_LARGE);
        return 0;
    }
    if ((size_t)(hend - p) > SG_MAX_HEADERS_SIZE)
        return refuse(r, 431, "HEADERS_TOO_LARGE", MSG_HEADERS_TOO_LARGE);

    char *line;
    if (parse_request_line(p, hend, r, &line) != 0) return -1;
    r->keep_alive = r->minor == 1;
    framing f = { NULL, NULL, 0, 0, 0 };
    if (parse_header_lines(line, hend, r, &f) != 0) return -1;
    r->total = (size_t)(hend - buf);
    return parse_body(hend, end, &f, r);
}

size_t sg_http_target_path(const char *target, size_t tlen, const char **path, const char **query)
{
    const char *t = target, *te = target + tlen;
    if (tlen > 7 && (strncasecmp(t, "http://", 7) == 0 || strncasecmp(t, "https://", 8) == 0)) {
        const char *slash = memchr(t + 8, '/', (size_t)(te - t - 8));
        t = slash ? slash : te;
    }
    const char *q = memchr(t, '?', (size_t)(te - t));
    *query = q;
    if (t == te) { *path = "/"; return 1; }
    *path = t;
    return (size_t)((q ? q : te) - t);
}
