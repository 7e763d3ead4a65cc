/*
 * bytes.c — growth and freeing of sg_bytes (bytes.h explains the type).
 */
#include "bytes.h"

#include <stdlib.h>

/* The first allocation: small enough for a reply, big enough that a typical
 * request or event does not grow twice. */
#define FIRST_CAP 1024

int sg_bytes_reserve(sg_bytes *b, size_t n)
{
    if (b->oom) return -1;
    if (b->cap - b->len >= n) return 0;
    if (b->off > 0) {
        /* slide the pending bytes down before growing */
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->cap - b->len >= n) return 0;
    }
    if (n > (size_t)-1 / 2 - b->len) { b->oom = 1; return -1; }
    size_t cap = b->cap ? b->cap : FIRST_CAP;
    while (cap - b->len < n) cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) { b->oom = 1; return -1; }
    b->data = p;
    b->cap = cap;
    return 0;
}

void sg_bytes_free(sg_bytes *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = b->off = 0;
    b->oom = 0;
}

void sg_bytes_put_uint(sg_bytes *b, size_t n)
{
    char tmp[20];
    size_t k = 0;
    do { tmp[k++] = (char)('0' + n % 10); n /= 10; } while (n);
    if (b->oom || (b->cap - b->len < k && sg_bytes_reserve(b, k) != 0)) return;
    for (size_t i = 0; i < k; i++) b->data[b->len + i] = tmp[k - 1 - i];
    b->len += k;
}
