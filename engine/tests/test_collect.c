/*
 * test_collect.c — C unit tests for the collector's parsing and conversion
 * (engine/collect/), without a server or Redis: the JSON reader and its
 * lua-cjson error messages, the message → event conversion and its reasons,
 * request bodies → stored forms and refusals, the cookie, client addresses
 * behind proxies, origins, Basic credentials and ISO-8601 times. Table
 * driven, like lua-cjson's tests. Run by `make test`, and under valgrind by
 * `make check-memory`.
 */
#include "../collect/convert.h"
#include "../collect/cors.h"
#include "../collect/keys.h"
#include "../collect/limits.h"
#include "../collect/visitor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { int passed, failed; } results;

#define CHECK(r, cond, ...) do { \
    if (cond) { (r)->passed++; } \
    else { (r)->failed++; fprintf(stderr, "FAIL (%s:%d) ", __FILE__, __LINE__); \
           fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } \
} while (0)

static int has(const char *hay, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(hay + i, needle, k) == 0) return 1;
    return 0;
}

/* ---- the JSON reader ------------------------------------------------------- */

static void test_json_errors(results *r)
{
    static const struct { const char *in; const char *err; } cases[] = {
        { " ", "Expected value but found T_END at character 2" },
        { "{", "Expected object key string but found T_END at character 2" },
        { "{\"a\"", "Expected colon but found T_END at character 5" },
        { "{\"a\":}", "Expected value but found T_OBJ_END at character 6" },
        { "{\"a\":1,}", "Expected object key string but found T_OBJ_END at character 8" },
        { "[1,]", "Expected value but found T_ARR_END at character 4" },
        { "{\"a\":1 \"b\"}", "Expected comma or object end but found T_STRING at character 8" },
        { "01", "Expected value but found invalid number at character 1" },
        { "0x1", "Expected value but found invalid number at character 1" },
        { "-inf", "Expected value but found invalid number at character 1" },
        { ".5", "Expected value but found invalid token at character 1" },
        { "1e", "Expected the end but found invalid token at character 2" },
        { "\"\\x\"", "Expected value but found invalid escape code at character 2" },
        { "\"\\ud800\"", "Expected value but found invalid unicode escape code at character 2" },
        { "\"ab", "Expected value but found unexpected end of string at character 4" },
        { "tru", "Expected value but found invalid token at character 1" },
        { "{\"a\":1}}", "Expected the end but found T_OBJ_END at character 8" },
        { "{1:2}", "Expected object key string but found T_NUMBER at character 2" },
        { "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
          "Found too many nested data structures (33) at character 33" },
    };
    sg_json j = { 0 };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = sg_json_parse(&j, cases[i].in, strlen(cases[i].in), 3);
        CHECK(r, rc == -1 && strcmp(j.err, cases[i].err) == 0, "%s: got %s", cases[i].in, j.err);
    }
    CHECK(r, sg_json_parse(&j, "\0{", 2, 3) == -1 && strstr(j.err, "UTF-16"), "a NUL first: UTF-16 or UTF-32");
    CHECK(r, sg_json_parse(&j, "{}\0zz", 5, 3) == 0 && j.n == 2, "the input ends at its first NUL");
    /* what cjson takes that strict JSON does not: flagged for rewriting */
    CHECK(r, sg_json_parse(&j, "[1.,-.5,\"a\tb\"]", 14, 3) == 0 && (j.node[0].flags & SG_JF_REWRITE),
          "\"1.\", \"-.5\" and a raw tab are taken");
    sg_bytes o = SG_BYTES_INIT;
    sg_json_put(&o, &j, 0);
    CHECK(r, o.len == 19 && memcmp(o.data, "[1,-0.5,\"a\\u0009b\"]", 19) == 0, "rewritten: %.*s", (int)o.len, o.data);
    CHECK(r, sg_json_parse(&j, "{\"a\":1e999,\"a\":1}", 17, 3) == 0 && !(j.node[0].flags & SG_JF_INF),
          "a repeated key keeps its last value: no inf");
    CHECK(r, sg_json_parse(&j, "{\"a\":[1.7976931348623157e308,1.8e308]}", 38, 3) == 0 &&
          (j.node[0].flags & SG_JF_INF), "1.8e308 is inf");
    sg_bytes_free(&o);
    sg_json_free(&j);
}

static void test_json_values(results *r)
{
    char out[64];
    size_t n = sg_json_unescape("caf\\u00e9 \\ud83d\\ude00 \\\"\\/", 28, out);
    CHECK(r, n == 14 && memcmp(out, "caf\xc3\xa9 \xf0\x9f\x98\x80 \"/", 14) == 0, "unescape: %.*s", (int)n, out);
    sg_json j = { 0 };
    const char *doc = "{\"a\":1,\"\\u0062\":2,\"a\":3}";
    CHECK(r, sg_json_parse(&j, doc, strlen(doc), 3) == 0, "parse");
    int32_t a = sg_json_member(&j, 0, "a", 1), b = sg_json_member(&j, 0, "b", 1);
    CHECK(r, a >= 0 && j.s[j.node[a].val] == '3', "the last \"a\" wins");
    CHECK(r, b >= 0 && j.s[j.node[b].val] == '2', "an escaped key is found by its decoded name");
    sg_json_free(&j);
}

/* ---- conversion --------------------------------------------------------------- */

typedef struct {
    sg_convert cv;
    sg_keys keys;
    sg_pipeline p[2];
    sg_rand_pool rand;
} fixture;

static void fixture_init(fixture *f)
{
    memset(f, 0, sizeof *f);
    sg_convert_init(&f->cv);
    sg_rand_init(&f->rand);
    f->p[0].key = "dk_a";
    f->p[0].klen = 4;
    f->p[1].key = "dk_b";
    f->p[1].klen = 4;
    f->keys.p = f->p;
    f->keys.n = 2;
}

static void in_for(fixture *f, sg_convert_in *in, int kind, const char *hint)
{
    memset(in, 0, sizeof *in);
    in->kind = kind;
    in->type_hint = hint;
    in->type_hint_len = hint ? strlen(hint) : 0;
    in->keys = &f->keys;
    in->header = &f->p[0];
    in->canonical_id = "dfid_abc";
    in->canonical_id_len = 8;
    in->ip = "203.0.113.7";
    in->ip_len = 11;
    in->user_agent = "UA/1";
    in->user_agent_len = 4;
    in->received_at = 1776440230.5124;               /* 2026-04-17T15:37:10.512Z */
    in->rand = &f->rand;
}

static const char *event_of(fixture *f, int i, size_t *n)
{
    *n = f->cv.msg[i].r.ev_len;
    return f->cv.events.data + f->cv.msg[i].r.ev;
}

/* a body whose one event must contain every fragment */
static void expect_event(results *r, fixture *f, int kind, const char *hint, const char *body,
                         const char *const *frags)
{
    sg_convert_in in;
    in_for(f, &in, kind, hint);
    int rc = sg_convert_body(&f->cv, body, strlen(body), &in);
    CHECK(r, rc == 0 && f->cv.status == 0 && f->cv.n >= 1, "%s: status %d %.*s", body, f->cv.status,
          (int)f->cv.error.len, f->cv.error.data);
    if (rc != 0 || f->cv.status != 0) return;
    size_t n;
    const char *ev = event_of(f, 0, &n);
    for (int i = 0; frags[i]; i++) CHECK(r, has(ev, n, frags[i]), "%s: no %s in %.*s", body, frags[i], (int)n, ev);
}

static void test_normalize(results *r)
{
    fixture f;
    fixture_init(&f);
    expect_event(r, &f, SG_ROUTE_SINGLE, "track",
                 "{\"event\":\"E\",\"userId\":\"u\",\"anonymousId\":\"a\",\"messageId\":\"m-1\","
                 "\"context\":{\"userAgent\":\"spoofed\",\"ip\":\"10.0.0.1\",\"page\":{\"pageTitle\":\"T\"}},"
                 "\"properties\":{\"orderId\":1234567890123456789}}",
                 (const char *const[]){ "\"type\":\"track\"", "\"user_id\":\"u\"", "\"anonymous_id\":\"a\"",
                                        "\"page\":{\"page_title\":\"T\"}", "\"ip\":\"203.0.113.7\"",
                                        "\"user_agent\":\"UA/1\"", "\"orderId\":1234567890123456789",
                                        "\"received_at\":\"2026-04-17T15:37:10.512Z\"",
                                        "\"canonical_id\":\"dfid_abc\"", "\"pipeline_key\":\"dk_a\"",
                                        "\"message_id\":\"m-1\"}", NULL });
    /* camelCase wins over snake_case; a number id becomes a string; the
     * clock-skew rule for originalTimestamp */
    expect_event(r, &f, SG_ROUTE_SINGLE, "page",
                 "{\"user_id\":\"snake\",\"userId\":42,\"originalTimestamp\":\"2026-04-17T15:38:08.512Z\","
                 "\"sentAt\":\"2026-04-17T15:38:10.512Z\"}",
                 (const char *const[]){ "\"user_id\":\"42\"", "\"timestamp\":\"2026-04-17T15:37:08.512Z\"", NULL });
    /* identify: context.traits under traits, traits winning */
    expect_event(r, &f, SG_ROUTE_SINGLE, "identify",
                 "{\"userId\":\"u\",\"traits\":{\"email\":\"new@x\"},\"context\":{\"traits\":{\"email\":\"old@x\","
                 "\"phone\":\"+1\"}}}",
                 (const char *const[]){ "\"traits\":{\"phone\":\"+1\",\"email\":\"new@x\"}", NULL });
    const sg_norm_result *nr = &f.cv.msg[0].r;
    CHECK(r, nr->link_len[SG_LINK_EMAIL] == 5 && memcmp(f.cv.aux.data + nr->link[SG_LINK_EMAIL], "new@x", 5) == 0,
          "the identify's email is a linking key");
    CHECK(r, nr->link_len[SG_LINK_USER_ID] == 1, "so is its user id");
    sg_convert_free(&f.cv);
}

static void expect_refusal(results *r, fixture *f, int kind, const char *hint, const char *body, int status,
                           const char *fragment)
{
    sg_convert_in in;
    in_for(f, &in, kind, hint);
    int rc = sg_convert_body(&f->cv, body, strlen(body), &in);
    CHECK(r, rc == 0 && f->cv.status == status && has(f->cv.error.data, f->cv.error.len, fragment),
          "%s: %d %.*s", body, f->cv.status, (int)f->cv.error.len, f->cv.error.data);
}

static void test_refusals(results *r)
{
    fixture f;
    fixture_init(&f);
    expect_refusal(r, &f, SG_ROUTE_SINGLE, "track", "", 400, "the body is empty");
    expect_refusal(r, &f, SG_ROUTE_SINGLE, "page", "{\"type\":\"track\",\"event\":\"E\",\"userId\":\"u\"}", 400,
                   "type: \\\"track\\\" does not match the endpoint, which takes page events");
    expect_refusal(r, &f, SG_ROUTE_SINGLE, NULL, "{\"anonymousId\":\"a\",\"timestamp\":\"nope\"}", 400,
                   "invalid event: type: is required (track, page, screen, identify, group or alias); "
                   "timestamp: must be an ISO-8601 date-time");
    expect_refusal(r, &f, SG_ROUTE_BATCH, NULL,
                   "{\"batch\":[{\"type\":\"track\",\"event\":\"E\",\"userId\":\"u\"},5,{\"type\":\"group\","
                   "\"userId\":\"u\"}]}", 400,
                   "2 of 3 messages are invalid (index 1, 2); the batch is atomic, nothing was accepted");
    expect_refusal(r, &f, SG_ROUTE_BATCH, NULL, "{\"batch\":[]}", 400, "\\\"batch\\\" is empty");
    expect_refusal(r, &f, SG_ROUTE_BATCH, NULL, "[1]", 400, "body must be a JSON object {\\\"batch\\\": […]}");
    expect_refusal(r, &f, SG_ROUTE_SINGLE, "track", "{\"event\":\"E\",\"userId\":\"u\",\"p\":{\"n\":1e999}}", 400,
                   "invalid event: Cannot serialise number: must not be NaN or Inf");
    /* the message limit: 32 KB as sent */
    size_t big = 32768 + 1;                          /* the contract: 32 KB */
    char *body = malloc(big + 64);
    int k = snprintf(body, 64, "{\"event\":\"E\",\"userId\":\"u\",\"pad\":\"");
    memset(body + k, 'x', big - (size_t)k - 2);
    memcpy(body + big - 2, "\"}", 3);
    expect_refusal(r, &f, SG_ROUTE_SINGLE, "track", body, 413, "the limit is 32 KB (32768 bytes) per message");
    body[big - 3] = '"';
    body[big - 2] = '}';
    body[big - 1] = '\0';
    sg_convert_in in;
    in_for(&f, &in, SG_ROUTE_SINGLE, "track");
    CHECK(r, sg_convert_body(&f.cv, body, big - 1, &in) == 0 && f.cv.status == 0, "32 KB exactly is taken");
    free(body);
    /* keys: the body's, the Basic username, none */
    in_for(&f, &in, SG_ROUTE_SINGLE, "track");
    in.header = NULL;
    const char *b = "{\"event\":\"E\",\"userId\":\"u\",\"writeKey\":\"dk_b\"}";
    CHECK(r, sg_convert_body(&f.cv, b, strlen(b), &in) == 0 && f.cv.pipeline == &f.p[1], "writeKey names dk_b");
    b = "{\"event\":\"E\",\"userId\":\"u\"}";
    CHECK(r, sg_convert_body(&f.cv, b, strlen(b), &in) == 0 && f.cv.status == 401, "no key: 401");
    sg_convert_free(&f.cv);
}

/* ---- visitor, CORS, keys, time ------------------------------------------------- */

static void test_cookie(results *r)
{
    static const struct { const char *h; const char *id; } cases[] = {
        { "_dfdid=dfid_abc", "dfid_abc" }, { "a=1; _dfdid=dfid_abc; b=2", "dfid_abc" },
        { "x_dfdid=evil; _dfdid=dfid_ok", "dfid_ok" }, { "x_dfdid=evil", NULL },
        { "_dfdid=\"dfid_quoted\"", "dfid_quoted" }, { "_dfdid=has space", NULL }, { "_dfdid=", NULL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *v;
        size_t n;
        int ok = sg_cookie_read(cases[i].h, strlen(cases[i].h), NULL, &v, &n);
        CHECK(r, cases[i].id ? ok && n == strlen(cases[i].id) && memcmp(v, cases[i].id, n) == 0 : !ok, "%s", cases[i].h);
    }
    char h[300] = "_dfdid=";
    memset(h + 7, 'a', 128);                         /* the contract's limit, not the constant */
    const char *v;
    size_t n;
    CHECK(r, sg_cookie_read(h, 7 + 128, NULL, &v, &n), "a value of 128 characters is read");
    h[7 + 128] = 'a';
    CHECK(r, !sg_cookie_read(h, 8 + 128, NULL, &v, &n), "one more is not");
    sg_bytes o = SG_BYTES_INIT;
    sg_cookie_set(&o, "dfid_x", 6, NULL, ".example.com", 12, 1);
    CHECK(r, o.len && strncmp(o.data, "_dfdid=dfid_x; Path=/; Max-Age=34560000; HttpOnly; SameSite=Lax; "
                                      "Domain=.example.com; Secure", o.len) == 0, "Set-Cookie %.*s", (int)o.len, o.data);
    sg_bytes_free(&o);
}

/* "_dfdid=<value>" of a Set-Cookie header into h (NUL-terminated) */
static void cookie_of(const sg_bytes *o, char *h, size_t cap)
{
    const char *semi = memchr(o->data, ';', o->len);
    size_t n = semi ? (size_t)(semi - o->data) : o->len;
    if (n >= cap) n = cap - 1;
    memcpy(h, o->data, n);
    h[n] = '\0';
}

static void test_signed_cookie(results *r)
{
    static const char CUR[] = "current-secret-0123456789abcdef-0123", OLD[] = "previous-secret-0123456789abcdef-01";
    sg_cookie_keys keys = { { CUR, OLD }, { sizeof CUR - 1, sizeof OLD - 1 }, 2 };
    sg_cookie_keys old_only = { { OLD }, { sizeof OLD - 1 }, 1 };
    sg_cookie_keys other = { { "another-secret-0123456789abcdef-012" }, { 35 }, 1 };
    const char *id = "dfid_0123456789abcdef0123456789abcdef", *v;
    size_t n;
    char h[200];
    sg_bytes o = SG_BYTES_INIT;

    sg_cookie_set(&o, id, strlen(id), &keys, NULL, 0, 0);
    cookie_of(&o, h, sizeof h);
    CHECK(r, strlen(h) == 7 + 37 + 1 + SG_COOKIE_SIG_LEN && h[7 + 37] == '.', "signed value %s", h);
    CHECK(r, sg_cookie_read(h, strlen(h), &keys, &v, &n) == 1 && n == 37 && memcmp(v, id, n) == 0,
          "a value signed with the current secret reads as its id");
    CHECK(r, sg_cookie_read(h, strlen(h), &other, &v, &n) == 0, "another secret's engine refuses it");
    CHECK(r, sg_cookie_read(h, strlen(h), NULL, &v, &n) == 1 && n == strlen(h) - 7,
          "without secrets the whole value is the id (as before signing)");
    h[strlen(h) - 1] ^= 1;
    CHECK(r, sg_cookie_read(h, strlen(h), &keys, &v, &n) == 0, "one changed signature digit is refused");
    snprintf(h, sizeof h, "_dfdid=%s", id);
    CHECK(r, sg_cookie_read(h, strlen(h), &keys, &v, &n) == 0, "an unsigned id is refused");
    snprintf(h, sizeof h, "_dfdid=.%.*s", SG_COOKIE_SIG_LEN, "0123456789abcdef0123456789abcdef");
    CHECK(r, sg_cookie_read(h, strlen(h), &keys, &v, &n) == 0, "a signature without an id is refused");

    sg_bytes_reset(&o);
    sg_cookie_set(&o, id, strlen(id), &old_only, NULL, 0, 0);
    cookie_of(&o, h, sizeof h);
    CHECK(r, sg_cookie_read(h, strlen(h), &keys, &v, &n) == 2 && n == 37,
          "a value signed with the previous secret is read, to be set again");
    sg_bytes_free(&o);
}

static void test_client_ip(results *r)
{
    static const struct { const char *proxies[2]; const char *peer, *xff, *client; } cases[] = {
        { { "127.0.0.1" }, "127.0.0.1", NULL, "127.0.0.1" },
        { { "127.0.0.1" }, "127.0.0.1", "203.0.113.9", "203.0.113.9" },
        { { "10.0.0.0/8" }, "127.0.0.1", "203.0.113.9", "127.0.0.1" },
        { { "10.0.0.0/8" }, "10.9.8.7", "198.51.100.1, 203.0.113.9, 10.0.0.5", "203.0.113.9" },
        { { "10.0.0.0/8" }, "10.9.8.7", "10.0.0.1, 10.0.0.2", "10.0.0.1" },
        { { "10.0.0.0/8" }, "10.9.8.7", "garbage, 10.0.0.2", "10.0.0.2" },
        { { "2001:db8::/32" }, "2001:db8:1::5", "[2001:db8::9]:443, 2606:4700::1111", "2606:4700::1111" },
        { { "::1" }, "::1", "203.0.113.9:51234", "203.0.113.9" },
        { { "10.0.0.0/8" }, "::ffff:10.1.1.1", "203.0.113.9", "203.0.113.9" },
        { { "fe80::/10" }, "fe80::1", "fe80::2%eth0, 198.51.100.7", "198.51.100.7" },
        { { "10.0.0.0/8" }, "10.0.0.1", "010.1.2.3", "010.1.2.3" },    /* decimal parts, like Lua's */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sg_proxies p = { 0 };
        for (int k = 0; k < 2 && cases[i].proxies[k]; k++) sg_proxies_add(&p, cases[i].proxies[k], strlen(cases[i].proxies[k]));
        const char *ip;
        size_t n;
        sg_client_ip(&p, cases[i].peer, strlen(cases[i].peer), cases[i].xff, cases[i].xff ? strlen(cases[i].xff) : 0,
                     &ip, &n);
        CHECK(r, ip && n == strlen(cases[i].client) && memcmp(ip, cases[i].client, n) == 0, "case %zu: %.*s", i,
              (int)n, ip ? ip : "");
        sg_proxies_free(&p);
    }
    unsigned char b[16];
    static const char *const bad[] = { "256.1.1.1", "1.2.3", "1::2::3", "12345::1", "example.com", "" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) CHECK(r, !sg_parse_ip(bad[i], strlen(bad[i]), b), "%s", bad[i]);
    CHECK(r, sg_parse_ip("::ffff:192.0.2.1", 16, b) == 4 && b[0] == 192, "IPv4-mapped is IPv4");
    sg_proxies p = { 0 };
    sg_proxies_add(&p, "127.0.0.1", 9);
    CHECK(r, sg_client_https(&p, "127.0.0.1", 9, " HTTPS , http", 13), "a trusted proxy's https");
    CHECK(r, !sg_client_https(&p, "10.0.0.1", 8, "https", 5), "an untrusted peer's claim");
    sg_proxies_free(&p);
}

static void test_cors_keys_time(results *r)
{
    sg_origins s = { 0 };
    sg_origins_add(&s, "https://www.example.com", 23);
    CHECK(r, sg_cors_allowed(&s, "https://www.example.com", 23), "exact");
    CHECK(r, sg_cors_allowed(&s, "HTTPS://WWW.EXAMPLE.COM:443", 27), "case and default port");
    CHECK(r, !sg_cors_allowed(&s, "https://www.example.com:8443", 28), "another port");
    CHECK(r, !sg_cors_allowed(&s, "http://www.example.com", 22), "another scheme");
    sg_origins_free(&s);
    const char *k;
    size_t kn;
    CHECK(r, sg_cors_query_key("a=1&writeKey=dk_b", 17, &k, &kn) && kn == 4 && memcmp(k, "dk_b", 4) == 0, "?writeKey=");
    char out[64];
    size_t n;
    CHECK(r, sg_b64decode("ZGtfbGl2ZV9kZW1vOg==", 20, out, &n) && n == 13 && memcmp(out, "dk_live_demo:", 13) == 0, "b64");
    CHECK(r, sg_b64decode("-_8", 3, out, &n) && n == 2 && (unsigned char)out[0] == 0xfb, "base64url");
    CHECK(r, !sg_b64decode("a$b=", 4, out, &n), "not base64");
    CHECK(r, sg_basic_user("Basic ZGtfbGl2ZV9kZW1vOg==", 26, out, &n) && n == 12, "the Basic username");
    CHECK(r, !sg_basic_user("Bearer ZGtf", 11, out, &n), "not Basic");
    char t[32];
    CHECK(r, sg_iso8601(1776440230.9996, t) == 24 && memcmp(t, "2026-04-17T15:37:11.000Z", 24) == 0, "rounding carries");
    double v;
    CHECK(r, sg_parse_iso8601("2026-04-17T17:37:10+02:00", 25, &v) && v == 1776440230, "an offset");
    CHECK(r, !sg_parse_iso8601("2023-02-29T00:00:00Z", 20, &v), "no Feb 29 in 2023");
    CHECK(r, sg_snake("HTTPServer", 10, out) == 11 && memcmp(out, "http_server", 11) == 0, "snake");
}

int main(void)
{
    results r = { 0, 0 };
    test_json_errors(&r);
    test_json_values(&r);
    test_normalize(&r);
    test_refusals(&r);
    test_cookie(&r);
    test_signed_cookie(&r);
    test_client_ip(&r);
    test_cors_keys_time(&r);
    printf("%d passed, %d failed\n", r.passed, r.failed);
    return r.failed ? 1 : 0;
}
