/*
 * reply.h — the collector's answers (engine/collect/reply.c): the one error
 * shape {"error":{"code","message","details"?}} and the fixed bodies.
 */
#ifndef SIGNAL_COLLECT_REPLY_H
#define SIGNAL_COLLECT_REPLY_H

#include <stddef.h>

#include "../bytes.h"

#define SG_REPLY_OK "{\"success\":true}"
#define SG_REPLY_UNAVAILABLE_MESSAGE \
    "events could not be stored (Redis is unavailable); nothing was accepted, retry later"
/* Redis answers -OOM at its memory limit: the client retries either way,
 * but whoever reads the answer learns what to fix. */
#define SG_REPLY_OOM_MESSAGE \
    "events could not be stored: Redis is out of memory (maxmemory reached); nothing was accepted, retry" \
    " later. Operators: free Redis memory or raise maxmemory (a delivery backlog during a vendor outage is" \
    " the usual cause)"
#define SG_JSON_HEADER "Content-Type: application/json\r\n"

/* {"error":{"code":code,"message":message[,"details":[details]]}};
 * details: the array's members as JSON, NULL for none. */
void sg_reply_error(sg_bytes *o, const char *code, const char *message, size_t mlen,
                    const char *details, size_t dlen);

/* "500 KB (512000 bytes)": a limit as the messages give it */
void sg_reply_kb(sg_bytes *o, size_t n);

#endif
