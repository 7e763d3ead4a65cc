/*
 * reply.c — the bodies of the collector's answers.
 *
 * Every refusal has the one error shape of the HTTP contract:
 *   {"error":{"code":"INVALID_BATCH","message":"…","details":[…]}}
 * with a code a client can switch on and a message a person can act on
 * (which limit, which index, where a key may be given). details list what
 * was wrong with each message: {"reason"} for one event, {"index",
 * "reason"[, "reasons"]} for a batch.
 */
#include "reply.h"
#include "json.h"

#include <stdio.h>
#include <string.h>

void sg_reply_error(sg_bytes *o, const char *code, const char *message, size_t mlen,
                    const char *details, size_t dlen)
{
    SG_BYTES_LIT(o, "{\"error\":{\"code\":");
    sg_json_put_string(o, code, strlen(code));
    SG_BYTES_LIT(o, ",\"message\":");
    sg_json_put_string(o, message, mlen);
    if (details) {
        SG_BYTES_LIT(o, ",\"details\":[");
        sg_bytes_put(o, details, dlen);
        sg_bytes_putc(o, ']');
    }
    SG_BYTES_LIT(o, "}}");
}

void sg_reply_kb(sg_bytes *o, size_t n)
{
    char buf[64];
    int k = snprintf(buf, sizeof buf, "%zu KB (%zu bytes)", n / 1024, n);
    sg_bytes_put(o, buf, (size_t)k);
}
