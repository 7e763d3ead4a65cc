/*
 * bytes.h — the engine's one growable byte buffer.
 *
 * Every place the engine accumulates bytes it does not know the size of in
 * advance (a connection's input and output, a vendor response, the RESP
 * commands of a group commit, a converted event) uses this type, so growth,
 * the out-of-memory rule and freeing are written once.
 *
 * The out-of-memory rule: a write that cannot grow the buffer sets `oom` and
 * drops the bytes; later writes are dropped too, until sg_bytes_reset. So a
 * writer formats a whole message with no check per call and tests `oom` once
 * at the end (the way stdio's ferror works), and a half-written message is
 * never mistaken for a whole one.
 *
 * `off` serves buffers that are drained from the front (a socket's output):
 * bytes before it have been consumed. sg_bytes_reserve slides the unconsumed
 * bytes down before growing, so a buffer that is written and drained in turn
 * stays the size of its largest burst.
 */
#ifndef SIGNAL_BYTES_H
#define SIGNAL_BYTES_H

#include <stddef.h>
#include <string.h>

typedef struct {
    char *data;
    size_t len;      /* bytes held, from data[0] (consumed ones included) */
    size_t cap;
    size_t off;      /* data[0, off) consumed; data[off, len) pending */
    int oom;         /* an allocation failed since the last reset */
} sg_bytes;

#define SG_BYTES_INIT { NULL, 0, 0, 0, 0 }

/* Room for n more bytes after len: 0, or -1 (and oom set). Never shrinks. */
int sg_bytes_reserve(sg_bytes *b, size_t n);

/* Frees the storage; b is empty and usable again. */
void sg_bytes_free(sg_bytes *b);

/* Empties b, keeping its storage, and clears oom. */
static inline void sg_bytes_reset(sg_bytes *b)
{
    b->len = b->off = 0;
    b->oom = 0;
}

/* Appends s[0, n). */
static inline void sg_bytes_put(sg_bytes *b, const void *s, size_t n)
{
    if (b->oom) return;
    if (b->cap - b->len < n && sg_bytes_reserve(b, n) != 0) return;
    if (n) memcpy(b->data + b->len, s, n);
    b->len += n;
}

static inline void sg_bytes_putc(sg_bytes *b, char c)
{
    if (b->oom) return;
    if (b->len == b->cap && sg_bytes_reserve(b, 1) != 0) return;
    b->data[b->len++] = c;
}

/* Appends a string literal. */
#define SG_BYTES_LIT(b, lit) sg_bytes_put((b), (lit), sizeof(lit) - 1)

/* Appends n in decimal. */
void sg_bytes_put_uint(sg_bytes *b, size_t n);

/* Pending bytes: data + off, len - off. */
static inline const char *sg_bytes_pending(const sg_bytes *b) { return b->data + b->off; }
static inline size_t sg_bytes_npending(const sg_bytes *b) { return b->len - b->off; }

/* Marks n pending bytes consumed; an emptied buffer starts over at 0. */
static inline void sg_bytes_consume(sg_bytes *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len) b->off = b->len = 0;
}

/* Writes n in decimal at p (room for 20 digits); returns the digits written.
 * For callers that format into memory they sized themselves (RESP lengths
 * in a command they allocated once); replies and Content-Length go through
 * sg_bytes_put_uint. printf's format parsing was a visible share of a
 * collector request. */
static inline size_t sg_put_uint(char *p, size_t n)
{
    char tmp[20];
    size_t k = 0;
    do { tmp[k++] = (char)('0' + n % 10); n /= 10; } while (n);
    for (size_t i = 0; i < k; i++) p[i] = tmp[k - 1 - i];
    return k;
}

#endif
