/*
 * test_http_parse.c — unit tests for the HTTP/1.x request parser
 * (engine/http_parse.c), with no server, socket or event loop: each case
 * hands bytes to sg_http_parse and checks the parse state it returns.
 *
 * Covered: the request line (methods, targets and paths, HTTP versions,
 * malformed lines), header lines (folding refused, lower-cased names,
 * trimmed values, the count and size limits, duplicate Content-Length), the
 * framing (Content-Length, Transfer-Encoding, Expect: 100-continue,
 * pipelining) and chunked bodies (hex sizes, extensions, trailers, bad and
 * oversized sizes). Requests split across reads are fed one byte more at a
 * time, the way the server re-parses its input after each read: every
 * proper prefix must ask for more bytes, the whole must parse.
 *
 * Prints "N passed, N failed" like test_core; run by tools/test.sh and,
 * under valgrind, by tools/check-memory.sh.
 */
#include "../http_parse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { int passed, failed; } results;

#define CHECK(r, cond, name) do { \
    if (cond) { (r)->passed++; } \
    else { (r)->failed++; fprintf(stderr, "FAIL %s (%s:%d)\n", name, __FILE__, __LINE__); } \
} while (0)

/* One parse. The parser writes into its buffer (names lower-cased, chunks
 * decoded in place), so each parse gets a fresh copy of the input. */
typedef struct {
    char *buf;
    size_t len;
    sg_http_request r;
    int rc;
} parse_t;

static void parse(parse_t *p, const char *s, size_t n)
{
    free(p->buf);
    p->buf = malloc(n ? n : 1);
    if (!p->buf) { fprintf(stderr, "out of memory\n"); exit(2); }
    memcpy(p->buf, s, n);
    p->len = n;
    memset(&p->r, 0, sizeof p->r);
    p->rc = sg_http_parse(p->buf, n, &p->r);
}

#define PARSE(p, lit) parse((p), (lit), sizeof(lit) - 1)

static int eq(const char *s, size_t n, const char *lit)
{
    return s && n == strlen(lit) && memcmp(s, lit, n) == 0;
}

/* Whether the parse refused the request with this status and message. */
static int refused(const parse_t *p, int status, const char *message)
{
    return p->rc == -1 && p->r.status == status && p->r.message && strstr(p->r.message, message);
}

/* Feeds s[0, n) one byte more at a time: every proper prefix must return 0
 * (more bytes needed), then the whole is parsed into p. Returns the first
 * prefix length that did not return 0, or 0 when all did. */
static size_t feed_bytewise(parse_t *p, const char *s, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        parse(p, s, k);
        if (p->rc != 0) return k ? k : (size_t)-1;
    }
    parse(p, s, n);
    return 0;
}

/* ---- request line ------------------------------------------------------------ */

static void test_request_line(results *r)
{
    parse_t p = { 0 };
    PARSE(&p, "GET /v1/t?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK(r, p.rc == 1 && eq(p.r.method, p.r.mlen, "GET") && eq(p.r.target, p.r.tlen, "/v1/t?x=1") &&
             p.r.minor == 1 && p.r.keep_alive && p.r.nh == 1 && !p.r.body && p.r.blen == 0 &&
             p.r.total == p.len, "a GET request line: method, target, HTTP/1.1, keep-alive, no body");

    static const char *const methods[] = { "GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "PROPFIND" };
    int all = 1;
    for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) {
        char req[64];
        int n = snprintf(req, sizeof req, "%s / HTTP/1.1\r\n\r\n", methods[i]);
        parse(&p, req, (size_t)n);
        all = all && p.rc == 1 && eq(p.r.method, p.r.mlen, methods[i]);
    }
    CHECK(r, all, "any token is a method (the server answers 405 to those it does not serve)");

    PARSE(&p, "G(T / HTTP/1.1\r\n\r\n");
    CHECK(r, refused(&p, 400, "malformed request line"), "a method with a non-token character is refused");
    PARSE(&p, " GET / HTTP/1.1\r\n\r\n");
    CHECK(r, refused(&p, 400, "malformed request line"), "a request line starting with a space is refused");
    PARSE(&p, "GET\r\n\r\n");
    CHECK(r, refused(&p, 400, "malformed request line"), "a method alone is refused");
    PARSE(&p, "GET /\r\n\r\n");
    CHECK(r, refused(&p, 400, "only HTTP/1.0 and HTTP/1.1"), "an HTTP/0.9 request line (no version) is refused");
    PARSE(&p, "GET  HTTP/1.1\r\n\r\n");
    CHECK(r, refused(&p, 400, "only HTTP/1.0 and HTTP/1.1"), "an empty target is refused");
    PARSE(&p, "GET / HTTP/2.0\r\n\r\n");
    CHECK(r, refused(&p, 400, "only HTTP/1.0 and HTTP/1.1"), "HTTP/2.0 is refused");
    PARSE(&p, "GET / HTTP/1.2\r\n\r\n");
    CHECK(r, refused(&p, 400, "only HTTP/1.0 and HTTP/1.1"), "HTTP/1.2 is refused");
    PARSE(&p, "GET / http/1.1\r\n\r\n");
    CHECK(r, refused(&p, 400, "only HTTP/1.0 and HTTP/1.1"), "the version is case-sensitive");
    PARSE(&p, "GET / HTTP/1.1 \r\n\r\n");
    CHECK(r, refused(&p, 400, "only HTTP/1.0 and HTTP/1.1"), "a space after the version is refused");
    PARSE(&p, "GET /a b HTTP/1.1\r\n\r\n");
    CHECK(r, refused(&p, 400, "only HTTP/1.0 and HTTP/1.1"), "a target with a space is refused");
    PARSE(&p, "GET /a\x01 HTTP/1.1\r\n\r\n");
    CHECK(r, refused(&p, 400, "malformed request target"), "a control character in the target is refused");
    PARSE(&p, "GET /a\x7f HTTP/1.1\r\n\r\n");
    CHECK(r, refused(&p, 400, "malformed request target"), "DEL in the target is refused");

    PARSE(&p, "GET / HTTP/1.0\r\n\r\n");
    CHECK(r, p.rc == 1 && p.r.minor == 0 && !p.r.keep_alive, "HTTP/1.0 closes by default");
    PARSE(&p, "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    CHECK(r, p.rc == 1 && p.r.minor == 0 && p.r.keep_alive, "HTTP/1.0 with Connection: keep-alive stays open");
    PARSE(&p, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    CHECK(r, p.rc == 1 && !p.r.keep_alive, "HTTP/1.1 with Connection: close closes");
    PARSE(&p, "GET / HTTP/1.1\r\nConnection: Upgrade, CLOSE\r\n\r\n");
    CHECK(r, p.rc == 1 && !p.r.keep_alive, "Connection is a token list, compared without case");
    PARSE(&p, "GET / HTTP/1.1\r\nConnection: closed\r\n\r\n");
    CHECK(r, p.rc == 1 && p.r.keep_alive, "Connection: closed is not close");

    PARSE(&p, "GET / HTTP/1.1\nHost: a\n\n");
    CHECK(r, p.rc == 1 && p.r.nh == 1 && eq(p.r.h[0].value, p.r.h[0].vlen, "a") && p.r.total == p.len,
          "lines may end with a bare LF");
    PARSE(&p, "\r\n\r\nGET / HTTP/1.1\r\n\r\n");
    CHECK(r, p.rc == 1 && eq(p.r.method, p.r.mlen, "GET") && p.r.total == p.len,
          "empty lines before the request line are skipped and counted");
    PARSE(&p, "\r\n\r\n");
    CHECK(r, p.rc == 0, "empty lines alone wait for a request");
    free(p.buf);
}

static void test_target_path(results *r)
{
    struct { const char *target, *path, *query; } cases[] = {
        { "/v1/t", "/v1/t", NULL },
        { "/v1/t?writeKey=k&x=1", "/v1/t", "?writeKey=k&x=1" },
        { "/?", "/", "?" },
        { "http://example.com/p/q?x=1", "/p/q", "?x=1" },
        { "HTTPS://example.com:8443/p", "/p", NULL },
        { "http://example.com", "/", NULL },
        { "*", "*", NULL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *path, *query;
        size_t n = sg_http_target_path(cases[i].target, strlen(cases[i].target), &path, &query);
        int ok = eq(path, n, cases[i].path) &&
                 (cases[i].query ? query && strncmp(query, cases[i].query, strlen(cases[i].query)) == 0 : !query);
        char name[128];
        snprintf(name, sizeof name, "target %s has path %s", cases[i].target, cases[i].path);
        CHECK(r, ok, name);
    }
}

/* ---- header lines -------------------------------------------------------------- */

static void test_headers(results *r)
{
    parse_t p = { 0 };
    PARSE(&p, "GET / HTTP/1.1\r\nContent-Type: Text/Plain\r\nX-Empty:\r\nX-Pad: \t a b \t \r\n\r\n");
    CHECK(r, p.rc == 1 && p.r.nh == 3 &&
             eq(p.r.h[0].name, p.r.h[0].nlen, "content-type") && eq(p.r.h[0].value, p.r.h[0].vlen, "Text/Plain") &&
             eq(p.r.h[1].name, p.r.h[1].nlen, "x-empty") && p.r.h[1].vlen == 0 &&
             eq(p.r.h[2].value, p.r.h[2].vlen, "a b"),
          "names are lower-cased, values keep their case and are trimmed of spaces and tabs");
    PARSE(&p, "GET / HTTP/1.1\r\nX-A: 1\r\nX-A: 2\r\n\r\n");
    CHECK(r, p.rc == 1 && p.r.nh == 2 && eq(p.r.h[0].value, p.r.h[0].vlen, "1") && eq(p.r.h[1].value, p.r.h[1].vlen, "2"),
          "repeated headers are kept, in order");
    PARSE(&p, "GET / HTTP/1.1\r\nX-A: 1\r\n  2\r\n\r\n");
    CHECK(r, refused(&p, 400, "folded header lines"), "a folded header line (leading space) is refused");
    PARSE(&p, "GET / HTTP/1.1\r\nX-A: 1\r\n\t2\r\n\r\n");
    CHECK(r, refused(&p, 400, "folded header lines"), "a folded header line (leading tab) is refused");
    PARSE(&p, "GET / HTTP/1.1\r\nX-A 1\r\n\r\n");
    CHECK(r, refused(&p, 400, "malformed header line"), "a header line without a colon is refused");
    PARSE(&p, "GET / HTTP/1.1\r\n: 1\r\n\r\n");
    CHECK(r, refused(&p, 400, "malformed header line"), "an empty header name is refused");
    PARSE(&p, "GET / HTTP/1.1\r\nX A: 1\r\n\r\n");
    CHECK(r, refused(&p, 400, "malformed header name"), "a space in a header name is refused");
    PARSE(&p, "GET / HTTP/1.1\r\nX-A : 1\r\n\r\n");
    CHECK(r, refused(&p, 400, "malformed header name"), "a space before the colon is refused");
    free(p.buf);
}

/* A request with n header lines "X-<i>: v". */
static size_t many_headers(char *out, size_t cap, int n)
{
    size_t k = (size_t)snprintf(out, cap, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < n; i++) k += (size_t)snprintf(out + k, cap - k, "X-%d: v\r\n", i);
    k += (size_t)snprintf(out + k, cap - k, "\r\n");
    return k;
}

/* A request whose header section (request line to empty line) is exactly
 * size bytes, padded with one header. */
static size_t sized_headers(char *out, size_t size)
{
    const char *head = "GET / HTTP/1.1\r\nX-Pad: ";
    size_t k = strlen(head), pad = size - k - 4;
    memcpy(out, head, k);
    memset(out + k, 'a', pad);
    memcpy(out + k + pad, "\r\n\r\n", 4);
    return size;
}

static void test_header_limits(results *r)
{
    parse_t p = { 0 };
    char *req = malloc(4 * SG_MAX_HEADERS_SIZE);
    size_t n = many_headers(req, 4 * SG_MAX_HEADERS_SIZE, SG_MAX_HEADERS);
    parse(&p, req, n);
    CHECK(r, p.rc == 1 && p.r.nh == SG_MAX_HEADERS, "100 header lines are accepted");
    n = many_headers(req, 4 * SG_MAX_HEADERS_SIZE, SG_MAX_HEADERS + 1);
    parse(&p, req, n);
    CHECK(r, refused(&p, 431, "more than 100 request header lines"), "101 header lines are refused with 431");

    n = sized_headers(req, SG_MAX_HEADERS_SIZE);
    parse(&p, req, n);
    CHECK(r, p.rc == 1, "a header section of exactly 16 KB is accepted");
    n = sized_headers(req, SG_MAX_HEADERS_SIZE + 1);
    parse(&p, req, n);
    CHECK(r, refused(&p, 431, "over 16 KB"), "a header section over 16 KB is refused with 431");
    n = sized_headers(req, SG_MAX_HEADERS_SIZE + 100);
    parse(&p, req, SG_MAX_HEADERS_SIZE);
    CHECK(r, p.rc == 0, "an unfinished header section of 16 KB waits for more");
    parse(&p, req, SG_MAX_HEADERS_SIZE + 1);
    CHECK(r, refused(&p, 431, "over 16 KB"), "an unfinished header section over 16 KB is refused at once");
    free(req);
    free(p.buf);
}

/* ---- framing --------------------------------------------------------------------- */

static void test_content_length(results *r)
{
    parse_t p = { 0 };
    PARSE(&p, "POST /e HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
    CHECK(r, p.rc == 1 && eq(p.r.body, p.r.blen, "hello") && p.r.total == p.len, "a Content-Length body");
    PARSE(&p, "POST /e HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    CHECK(r, p.rc == 1 && p.r.blen == 0 && p.r.total == p.len, "Content-Length: 0");
    PARSE(&p, "POST /e HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello");
    CHECK(r, p.rc == 1 && eq(p.r.body, p.r.blen, "hello"), "a repeated Content-Length with the same value is accepted");
    PARSE(&p, "POST /e HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!");
    CHECK(r, refused(&p, 400, "conflicting Content-Length"), "conflicting Content-Length headers are refused");
    PARSE(&p, "POST /e HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    CHECK(r, refused(&p, 400, "both Content-Length and Transfer-Encoding"),
          "Content-Length with Transfer-Encoding is refused (request smuggling)");
    PARSE(&p, "POST /e HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
    CHECK(r, p.rc == -1 && p.r.status == 501, "a transfer coding other than chunked is refused with 501");

    static const char *const bad[] = { "abc", "", "+5", "-1", "5 5", "0x10", "1234567890123" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char req[128], name[96];
        int n = snprintf(req, sizeof req, "POST / HTTP/1.1\r\nContent-Length: %s\r\n\r\n", bad[i]);
        parse(&p, req, (size_t)n);
        snprintf(name, sizeof name, "Content-Length \"%s\" is refused", bad[i]);
        CHECK(r, refused(&p, 400, "invalid Content-Length"), name);
    }
    PARSE(&p, "POST / HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n");
    CHECK(r, refused(&p, 413, "over the server's limit of 1 MB"), "a Content-Length over 1 MB is refused with 413");
    PARSE(&p, "POST / HTTP/1.1\r\nContent-Length: 1048576\r\n\r\n");
    CHECK(r, p.rc == 0, "a Content-Length of exactly 1 MB waits for its body");

    PARSE(&p, "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel");
    CHECK(r, p.rc == 0 && !p.r.want_continue, "an incomplete body waits; no 100 Continue unasked");
    PARSE(&p, "POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 5\r\n\r\n");
    CHECK(r, p.rc == 0 && p.r.want_continue, "Expect: 100-continue with the body missing wants 100 Continue");
    PARSE(&p, "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    CHECK(r, p.rc == 0 && !p.r.want_continue, "no 100 Continue for HTTP/1.0");
    PARSE(&p, "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n");
    CHECK(r, p.rc == 0 && !p.r.want_continue, "no 100 Continue before the header section is complete");
    PARSE(&p, "POST / HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhe");
    CHECK(r, p.rc == 0 && p.r.want_continue, "Expect: 100-continue with a chunked body missing wants 100 Continue");
    PARSE(&p, "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello");
    CHECK(r, p.rc == 1 && !p.r.want_continue, "no 100 Continue once the body is here");

    const char second[] = "GET /b HTTP/1.1\r\n\r\n";
    const char two[] = "POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\n\r\n";
    parse(&p, two, sizeof two - 1);
    size_t first = p.r.total;
    int ok = p.rc == 1 && eq(p.r.body, p.r.blen, "abc") && first == sizeof two - sizeof second;
    sg_http_request next;
    ok = ok && sg_http_parse(p.buf + first, p.len - first, &next) == 1 && eq(next.target, next.tlen, "/b") &&
         next.total == sizeof second - 1;
    CHECK(r, ok, "pipelined requests: total ends the first where the second starts");
    free(p.buf);
}

/* ---- chunked bodies ----------------------------------------------------------------- */

#define CHUNKED_HEAD "POST /e HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"

static void test_chunked(results *r)
{
    parse_t p = { 0 };
    PARSE(&p, CHUNKED_HEAD "5\r\nhello\r\n0\r\n\r\n");
    CHECK(r, p.rc == 1 && eq(p.r.body, p.r.blen, "hello") && p.r.total == p.len, "one chunk");
    PARSE(&p, CHUNKED_HEAD "3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n");
    CHECK(r, p.rc == 1 && eq(p.r.body, p.r.blen, "abcdefg"), "chunks are joined");
    PARSE(&p, "POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n");
    CHECK(r, p.rc == 1 && !p.r.body && p.r.blen == 0 && p.r.total == p.len, "an empty chunked body; the coding is case-insensitive");
    PARSE(&p, CHUNKED_HEAD "a\r\n0123456789\r\n1F\r\n0123456789abcdef0123456789abcde\r\nf\r\n0123456789abcde\r\n0\r\n\r\n");
    CHECK(r, p.rc == 1 && p.r.blen == 10 + 31 + 15 && memcmp(p.r.body + 10, "0123456789abcdef", 16) == 0,
          "sizes are hex, either case");
    PARSE(&p, CHUNKED_HEAD "5;name=value;x\r\nhello\r\n0;last\r\n\r\n");
    CHECK(r, p.rc == 1 && eq(p.r.body, p.r.blen, "hello"), "chunk extensions are ignored");
    {
        const char req[] = CHUNKED_HEAD "5;\0x\r\nhello\r\n0\r\n\r\n";
        parse(&p, req, sizeof req - 1);
        CHECK(r, p.rc == 1 && eq(p.r.body, p.r.blen, "hello"), "a NUL byte in a chunk extension is only a byte");
    }
    PARSE(&p, CHUNKED_HEAD "5 \r\nhello\r\n0\r\n\r\n");
    CHECK(r, p.rc == 1 && eq(p.r.body, p.r.blen, "hello"), "whitespace after a chunk size is accepted");
    PARSE(&p, CHUNKED_HEAD "5\nhello\n0\n\n");
    CHECK(r, p.rc == 1 && eq(p.r.body, p.r.blen, "hello") && p.r.total == p.len, "chunk framing with bare LFs");
    PARSE(&p, CHUNKED_HEAD "5\r\nhello\r\n0\r\nX-Trailer: 1\r\nX-Other: 2\r\n\r\n");
    CHECK(r, p.rc == 1 && eq(p.r.body, p.r.blen, "hello") && p.r.total == p.len,
          "trailers are read to their empty line and spanned");
    PARSE(&p, CHUNKED_HEAD "5\r\nhello\r\n0\r\nX-Trailer: 1\r\n");
    CHECK(r, p.rc == 0, "unfinished trailers wait for more");

    const char piped[] = CHUNKED_HEAD "2\r\nhi\r\n0\r\n\r\nGET /next HTTP/1.1\r\n\r\n";
    parse(&p, piped, sizeof piped - 1);
    CHECK(r, p.rc == 1 && eq(p.r.body, p.r.blen, "hi") && p.r.total == sizeof piped - 1 - strlen("GET /next HTTP/1.1\r\n\r\n") &&
             memcmp(p.buf + p.r.total, "GET /next", 9) == 0,
          "decoding in place leaves the next pipelined request untouched");

    PARSE(&p, CHUNKED_HEAD "zz\r\nhello\r\n0\r\n\r\n");
    CHECK(r, refused(&p, 400, "malformed chunk size line"), "a size that is not hex is refused");
    PARSE(&p, CHUNKED_HEAD "\r\nhello\r\n0\r\n\r\n");
    CHECK(r, refused(&p, 400, "malformed chunk size line"), "an empty size line is refused");
    PARSE(&p, CHUNKED_HEAD "5x\r\nhello\r\n0\r\n\r\n");
    CHECK(r, refused(&p, 400, "malformed chunk size line"), "junk after the size is refused");
    PARSE(&p, CHUNKED_HEAD "-5\r\nhello\r\n0\r\n\r\n");
    CHECK(r, refused(&p, 400, "malformed chunk size line"), "a signed size is refused");
    PARSE(&p, CHUNKED_HEAD "0x5\r\nhello\r\n0\r\n\r\n");
    CHECK(r, refused(&p, 400, "malformed chunk size line"), "a 0x prefix is refused");
    PARSE(&p, CHUNKED_HEAD "5\r\nhelloXX0\r\n\r\n");
    CHECK(r, refused(&p, 400, "not followed by CRLF"), "chunk data longer than its size is refused");
    PARSE(&p, CHUNKED_HEAD "100001\r\n");
    CHECK(r, refused(&p, 413, "over the server's limit of 1 MB"), "a chunk over 1 MB is refused with 413 before its data");
    PARSE(&p, CHUNKED_HEAD "FFFFFFFFFFFFFFFFFFFFFFFF\r\n");
    CHECK(r, refused(&p, 413, "over the server's limit of 1 MB"), "a size that would overflow is refused with 413");
    free(p.buf);
}

/* Chunks of 64 KB up to 1 MB, then one byte more. */
static void test_chunked_limits(results *r)
{
    parse_t p = { 0 };
    size_t cap = 2 * SG_MAX_REQUEST_BODY, k = 0;
    char *req = malloc(cap);
    k += (size_t)snprintf(req, cap, CHUNKED_HEAD);
    for (int i = 0; i < SG_MAX_REQUEST_BODY / 65536; i++) {
        k += (size_t)snprintf(req + k, cap - k, "10000\r\n");
        memset(req + k, 'a' + i % 26, 65536);
        k += 65536;
        memcpy(req + k, "\r\n", 2);
        k += 2;
    }
    size_t body_end = k;
    k += (size_t)snprintf(req + k, cap - k, "0\r\n\r\n");
    parse(&p, req, k);
    CHECK(r, p.rc == 1 && p.r.blen == SG_MAX_REQUEST_BODY && p.r.body[65536] == 'b' &&
             p.r.body[SG_MAX_REQUEST_BODY - 1] == 'a' + (SG_MAX_REQUEST_BODY / 65536 - 1) % 26,
          "chunks adding up to exactly 1 MB are accepted and joined");
    k = body_end + (size_t)snprintf(req + body_end, cap - body_end, "1\r\n");
    parse(&p, req, k);
    CHECK(r, refused(&p, 413, "over the server's limit of 1 MB"), "one byte more than 1 MB in chunks is refused with 413");

    k = (size_t)snprintf(req, cap, CHUNKED_HEAD "5;");
    memset(req + k, 'e', 1100);
    parse(&p, req, k + 1100);
    CHECK(r, refused(&p, 400, "malformed chunk size line"), "a chunk size line over 1 KB with no end is refused");
    parse(&p, req, k + 1000);
    CHECK(r, p.rc == 0, "a chunk size line under 1 KB waits for its end");
    free(req);
    free(p.buf);
}

/* ---- requests split across reads ------------------------------------------------------- */

static void test_split_reads(results *r)
{
    static const char *const whole[] = {
        "GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nX-A: 1\r\n\r\n",
        "GET / HTTP/1.0\nHost: a\n\n",
        "POST /v1/t HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"a\":\"bc\"}\n",
        CHUNKED_HEAD "5;ext=1\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\n",
        CHUNKED_HEAD "1\nx\n0\n\n",
    };
    static const char *const bodies[] = { NULL, NULL, "{\"a\":\"bc\"}\n", "helloabcdefghijklmnopqrstuvwxyz", "x" };
    parse_t p = { 0 };
    for (size_t i = 0; i < sizeof whole / sizeof *whole; i++) {
        size_t n = strlen(whole[i]);
        size_t bad = feed_bytewise(&p, whole[i], n);
        int ok = bad == 0 && p.rc == 1 && p.r.total == n &&
                 (bodies[i] ? eq(p.r.body, p.r.blen, bodies[i]) : p.r.blen == 0);
        char name[160];
        snprintf(name, sizeof name, "request %zu fed byte by byte: each prefix waits, the whole parses", i + 1);
        CHECK(r, ok, name);
        if (bad) fprintf(stderr, "  the prefix of %zu bytes returned %d\n", bad, p.rc);
    }
    free(p.buf);
}

/* sg_http_chunked_scan and sg_http_chunked_decode on their own. */
static void test_chunked_functions(results *r)
{
    char body[] = "4\r\nWiki\r\n5;e\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\nrest";
    size_t blen = 0, span = 0;
    sg_http_request req;
    int rc = sg_http_chunked_scan(body, body + sizeof body - 1, &blen, &span, &req);
    CHECK(r, rc == 1 && blen == 23 && span == sizeof body - 1 - 4, "scan: decoded length and the bytes spanned");
    size_t n = sg_http_chunked_decode(body);
    CHECK(r, n == 23 && memcmp(body, "Wikipedia in\r\n\r\nchunks.", 23) == 0, "decode: the data joined in place");
    rc = sg_http_chunked_scan(body, body, &blen, &span, &req);
    CHECK(r, rc == 0, "scan: no bytes yet waits");
}

int main(void)
{
    results r = { 0, 0 };
    test_request_line(&r);
    test_target_path(&r);
    test_headers(&r);
    test_header_limits(&r);
    test_content_length(&r);
    test_chunked(&r);
    test_chunked_limits(&r);
    test_split_reads(&r);
    test_chunked_functions(&r);
    printf("%d passed, %d failed\n", r.passed, r.failed);
    return r.failed ? 1 : 0;
}
