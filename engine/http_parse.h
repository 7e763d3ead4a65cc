/*
 * http_parse.h — HTTP/1.0 and 1.1 request parsing, with no connection in
 * sight: bytes in, a parse state out.
 *
 * The server (server.c) keeps a connection's received bytes in one buffer
 * and calls sg_http_parse on the unconsumed part after every read; the
 * parser keeps no state between calls, so a request split across reads is
 * simply parsed again once more of it has arrived (0 until then). It reads
 * the request line, the header lines, the framing (Content-Length, or
 * Transfer-Encoding: chunked, decoded here) and says how many bytes the
 * request spans, so pipelined requests follow one another in the buffer.
 *
 * Parsing is in place: header names are lower-cased in the buffer, and a
 * chunked body is decoded over its own framing once the whole request has
 * arrived. The request's pointers point into the buffer.
 *
 * Hostile input is refused with the status a server should answer (400,
 * 413, 431, 501) and a message that says what to change; the limits are the
 * constants below.
 */
#ifndef SIGNAL_HTTP_PARSE_H
#define SIGNAL_HTTP_PARSE_H

#include <stddef.h>

#define SG_MAX_REQUEST_BODY   (1024 * 1024)   /* decoded body: 413 above */
#define SG_MAX_HEADERS_SIZE   (16 * 1024)     /* request line + headers: 431 above */
#define SG_MAX_HEADERS        100             /* header lines: 431 above */

/* A request header as parsed: name lower-cased, value trimmed. */
typedef struct {
    const char *name, *value;
    size_t nlen, vlen;
} sg_header;

typedef struct {
    const char *method, *target;
    size_t mlen, tlen;
    int minor;                    /* HTTP/1.<minor> */
    int nh;
    sg_header h[SG_MAX_HEADERS];  /* in arrival order; repeats kept */
    int keep_alive;               /* the connection may serve another request */
    /* The header section is complete, the body is not, and the client
     * (HTTP/1.1, Expect: 100-continue) waits for "100 Continue" first. */
    int want_continue;
    const char *body;             /* NULL when there is none */
    size_t blen;
    size_t total;                 /* bytes the request spans from the buffer's start */
    /* On a refusal: the status to answer, an error code and a message. */
    int status;
    const char *code, *message;
} sg_http_request;

/* Parses the request at the start of buf[0, len). 1: complete; 0: more
 * bytes needed (r->want_continue may be set); -1: refused (r->status,
 * r->code, r->message). Empty lines before the request line are skipped
 * (some clients send them between requests) and counted in r->total. */
int sg_http_parse(char *buf, size_t len, sg_http_request *r);

/* The chunked body starting at p (after the header section): 1 when it is
 * complete, with the decoded length in *blen and the bytes its framing
 * spans (trailers included) in *span; 0 when more bytes are needed; -1 when
 * it is malformed or over SG_MAX_REQUEST_BODY (r->status, r->code,
 * r->message). */
int sg_http_chunked_scan(const char *p, const char *end, size_t *blen, size_t *span,
                         sg_http_request *r);

/* Decodes a chunked body sg_http_chunked_scan accepted, in place: its data
 * ends up contiguous at p. Returns the decoded length. */
size_t sg_http_chunked_decode(char *p);

/* The path of a request target ("/" when empty) → its length; *path at it,
 * *query at the '?' or NULL. An absolute-form target (a proxy's
 * "GET http://host/p") keeps only the path. */
size_t sg_http_target_path(const char *target, size_t tlen, const char **path, const char **query);

#endif
