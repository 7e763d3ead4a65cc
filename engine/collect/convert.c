/*
 * convert.c — a request body → the events to store, or the refusal.
 *
 * The steps, in the order their refusals take precedence (each answer is
 * the one the Lua collector gave, message for message):
 *   1. the body is JSON (400 INVALID_JSON, quoting the decoder, naming an
 *      unusual Content-Type as the likely cause);
 *   2. it is an object: one event, or {"batch": […]} (400 INVALID_EVENT /
 *      INVALID_BATCH);
 *   3. the pipeline: X-Pipeline-Key (checked by the request flow), else the
 *      body's pipelineKey, writeKey, else the Basic username (401);
 *   4. a batch is a non-empty array (400 INVALID_BATCH);
 *   5. each message: an object, storable (no number JSON cannot hold), at
 *      most 32 KB as sent minus its credentials (413), valid
 *      (normalize.c: 400 with every reason).
 * A batch is atomic: any bad message refuses all of them, naming every bad
 * index; a message over the limit makes the answer a 413 naming those.
 *
 * What is stored per message: the canonical event (`ev`) and the input
 * (`in`): the message as it was sent, minus writeKey/pipelineKey/write_key/
 * pipeline_key — the bytes as received when it had none (for one event:
 * the whole body), else its other members as received.
 */
#include "convert.h"
#include "limits.h"
#include "reply.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define UNSTORABLE_IN "cannot be stored as JSON: " SG_NORM_UNSTORABLE

void sg_convert_init(sg_convert *cv)
{
    memset(cv, 0, sizeof *cv);
}

void sg_convert_free(sg_convert *cv)
{
    sg_json_free(&cv->json);
    sg_norm_free(cv->norm);
    sg_bytes *b[] = { &cv->events, &cv->inputs, &cv->aux, &cv->error, &cv->bad, &cv->bad_index,
                      &cv->big, &cv->big_index };
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) sg_bytes_free(b[i]);
    free(cv->msg);
    memset(cv, 0, sizeof *cv);
}

void sg_convert_refuse(sg_convert *cv, int status, const char *code, const char *reason, int count,
                       const char *message, size_t mlen, const char *details, size_t dlen)
{
    cv->status = status;
    cv->code = code;
    cv->reason = reason;
    cv->rejected = count;
    sg_bytes_reset(&cv->error);
    sg_reply_error(&cv->error, code, message, mlen, details, dlen);
}

#define REFUSE(cv, status, code, reason, count, lit) \
    sg_convert_refuse((cv), (status), (code), (reason), (count), lit, sizeof(lit) - 1, NULL, 0)

/* Refuses with a message built in cv->bad (free until batches use it). */
static void refuse_built(sg_convert *cv, int status, const char *code, const char *reason, int count,
                         const char *details, size_t dlen)
{
    sg_bytes msg = cv->bad;
    cv->bad = (sg_bytes)SG_BYTES_INIT;
    sg_convert_refuse(cv, status, code, reason, count, msg.data ? msg.data : "", msg.len, details, dlen);
    cv->bad = msg;
}

/* ---- the body ------------------------------------------------------------- */

/* acceptable_type: JSON comes as application/json or
 * text/plain (analytics.js and datafly.js avoid the preflight that way);
 * others are tried too, and named when the body is not JSON */
static int acceptable_type(const char *ct, size_t n)
{
    if (!ct || n == 0) return 1;
    for (size_t i = 0; i + 4 <= n; i++)
        if (strncasecmp(ct + i, "json", 4) == 0) return 1;
    size_t i = 0;
    while (i < n && (ct[i] == ' ' || (ct[i] >= '\t' && ct[i] <= '\r'))) i++;
    return n - i >= 10 && strncasecmp(ct + i, "text/plain", 10) == 0;
}

static int parse(sg_convert *cv, const char *body, size_t n, const sg_convert_in *in)
{
    int rc = sg_json_parse(&cv->json, body, n, in->kind == SG_ROUTE_SINGLE ? 3 : 5);
    if (rc != -1) return rc;
    sg_bytes *m = &cv->bad;
    sg_bytes_reset(m);
    SG_BYTES_LIT(m, "body is not valid JSON: ");
    if (n == 0) SG_BYTES_LIT(m, "the body is empty");
    else sg_bytes_put(m, cv->json.err, strlen(cv->json.err));
    if (!acceptable_type(in->content_type, in->content_type_len)) {
        SG_BYTES_LIT(m, " (Content-Type is ");
        sg_bytes_put(m, in->content_type, in->content_type_len);
        SG_BYTES_LIT(m, "; send JSON as application/json or text/plain)");
    }
    refuse_built(cv, 400, "INVALID_JSON", "invalid_json", 1, NULL, 0);
    return 1;
}

/* an object, or an empty array (both decode to an empty table) */
static int object_like(const sg_jnode *n)
{
    return n->type == SG_J_OBJ || (n->type == SG_J_ARR && n->count == 0);
}

/* the body's pipelineKey, else writeKey, else the Basic username: the
 * first that is not absent, null or "" → the pipeline, or a 401 */
static int body_pipeline(sg_convert *cv, const sg_convert_in *in)
{
    const sg_json *j = &cv->json;
    static const char *const NAMES[] = { "pipelineKey", "writeKey" };
    for (int i = 0; i < 2; i++) {
        int32_t c = sg_json_member(j, 0, NAMES[i], strlen(NAMES[i]));
        if (c < 0) continue;
        const sg_jnode *v = &j->node[c];
        if (v->type == SG_J_NULL || (v->type == SG_J_STR && v->vlen == 2)) continue;
        char key[256];
        size_t kn = 0;
        if (v->type == SG_J_STR && v->vlen - 2 <= sizeof key)
            kn = sg_json_unescape(j->s + v->val + 1, v->vlen - 2, key);
        cv->pipeline = kn ? sg_keys_find(in->keys, key, kn) : NULL;
        goto found;
    }
    if (!in->basic || in->basic_len == 0) {
        REFUSE(cv, 401, "INVALID_PIPELINE_KEY", "invalid_pipeline_key", 1, "missing pipeline key: " SG_KEY_HELP);
        return 1;
    }
    cv->pipeline = sg_keys_find(in->keys, in->basic, in->basic_len);
found:
    if (cv->pipeline) return 0;
    REFUSE(cv, 401, "INVALID_PIPELINE_KEY", "invalid_pipeline_key", 1,
           "unknown pipeline key: the key given is not configured on this collector; " SG_KEY_HELP);
    return 1;
}

/* the body's shape and the pipeline → the batch array node, 0 for one
 * event, or -1 when refused */
static int32_t shape(sg_convert *cv, const sg_convert_in *in)
{
    const sg_json *j = &cv->json;
    if (!object_like(&j->node[0])) {
        if (in->kind == SG_ROUTE_BATCH)
            REFUSE(cv, 400, "INVALID_BATCH", "invalid_batch", 1, "body must be a JSON object {\"batch\": […]}");
        else if (in->kind == SG_ROUTE_EVENTS)
            REFUSE(cv, 400, "INVALID_EVENT", "invalid_event", 1,
                   "body must be a JSON object: one event, or {\"batch\": […]}");
        else
            REFUSE(cv, 400, "INVALID_EVENT", "invalid_event", 1, "body must be a JSON object: one event");
        return -1;
    }
    cv->pipeline = in->header;
    if (!cv->pipeline && body_pipeline(cv, in) != 0) return -1;
    if (in->kind == SG_ROUTE_SINGLE) return 0;
    int32_t list = sg_json_member(j, 0, "batch", 5);
    if (in->kind == SG_ROUTE_EVENTS && list < 0) return 0;
    const sg_jnode *l = list < 0 ? NULL : &j->node[list];
    if (!l || !(l->type == SG_J_ARR || (l->type == SG_J_OBJ && l->count == 0))) {
        REFUSE(cv, 400, "INVALID_BATCH", "invalid_batch", 1, "\"batch\" must be an array of messages");
        return -1;
    }
    if (l->count == 0) {
        REFUSE(cv, 400, "INVALID_BATCH", "invalid_batch", 1, "\"batch\" is empty");
        return -1;
    }
    return list;
}

/* ---- messages ------------------------------------------------------------- */

static int is_credential(const sg_json *j, uint32_t c)
{
    return sg_json_key_is(j, c, "writeKey", 8) || sg_json_key_is(j, c, "pipelineKey", 11) ||
           sg_json_key_is(j, c, "write_key", 9) || sg_json_key_is(j, c, "pipeline_key", 12);
}

/* The stored input of message node m (whole: the body is this one event).
 * Returns 1 when it holds a number JSON cannot (and whole is unset or it
 * had credentials: a body stored as received is never re-encoded). */
static int stored_input(sg_convert *cv, uint32_t m, int whole, sg_message *msg)
{
    const sg_json *j = &cv->json;
    const sg_jnode *n = &j->node[m];
    int creds = 0, inf = 0;
    uint32_t c = m + 1;
    for (uint32_t k = 0; k < n->count; k++, c = j->node[c].next) creds |= is_credential(j, c);
    msg->in_body = !creds && !(n->flags & SG_JF_REWRITE);
    if (msg->in_body) {
        msg->in = whole ? 0 : n->val;
        msg->in_len = whole ? j->n : n->vlen;
        return !whole && (n->flags & SG_JF_INF);
    }
    sg_bytes *o = &cv->inputs;
    msg->in = o->len;
    if (!creds) {
        sg_json_put(o, j, m);
        msg->in_len = o->len - msg->in;
        return !whole && (n->flags & SG_JF_INF);
    }
    sg_bytes_putc(o, '{');
    int first = 1;
    c = m + 1;
    for (uint32_t k = 0; k < n->count; k++, c = j->node[c].next) {
        const sg_jnode *v = &j->node[c];
        if (is_credential(j, c)) continue;
        if (!first) sg_bytes_putc(o, ',');
        first = 0;
        /* the member as sent: from its key's quote to the end of its value */
        sg_json_put_bytes(o, j->s + v->key - 1, v->val + v->vlen - v->key + 1,
                          (v->flags & (SG_JF_REWRITE | SG_JF_KEY_ESC)) != 0);
        /* a value a decoder keeps: the last of its key */
        if ((v->flags & SG_JF_INF) && !inf) {
            char key[256];
            if (v->klen > sizeof key) inf = 1;
            else inf = sg_json_member(j, m, key, sg_json_unescape(j->s + v->key, v->klen, key)) == (int32_t)c;
        }
    }
    sg_bytes_putc(o, '}');
    msg->in_len = o->len - msg->in;
    return inf;
}

static sg_message *new_message(sg_convert *cv)
{
    if ((size_t)cv->n == cv->msgcap) {
        size_t cap = cv->msgcap ? cv->msgcap * 2 : 16;
        sg_message *m = realloc(cv->msg, sizeof *m * cap);
        if (!m) return NULL;
        cv->msg = m;
        cv->msgcap = cap;
    }
    return &cv->msg[cv->n];
}

static void norm_ctx(const sg_convert *cv, const sg_convert_in *in, sg_norm_ctx *c)
{
    memset(c, 0, sizeof *c);
    c->canonical_id = in->canonical_id;
    c->canonical_id_len = in->canonical_id_len;
    c->pipeline_key = cv->pipeline->key;
    c->pipeline_key_len = cv->pipeline->klen;
    c->ip = in->ip;
    c->ip_len = in->ip_len;
    c->user_agent = in->user_agent;
    c->user_agent_len = in->user_agent_len;
    c->type_hint = in->type_hint;
    c->type_hint_len = in->type_hint_len;
    c->server_side = in->server_side;
    c->received_at = in->received_at;
    c->sent_at = c->batch_context = -1;
    c->rand = in->rand;
}

/* the reasons of the last invalid message, joined by sep; as a JSON
 * array instead when sep is NULL */
static void put_reasons(sg_convert *cv, sg_bytes *o, int n, const char *sep)
{
    for (int i = 0; i < n; i++) {
        size_t len;
        const char *r = sg_norm_reason(cv->norm, i, &len);
        if (i > 0) sg_bytes_put(o, sep ? sep : ",", sep ? strlen(sep) : 1);
        if (sep) sg_bytes_put(o, r, len);
        else sg_json_put_string(o, r, len);
    }
}

/* One event (a body that is not a batch). 0, or -1. */
static int convert_one(sg_convert *cv, const sg_convert_in *in)
{
    sg_message *msg = new_message(cv);
    if (!msg) return -1;
    if (stored_input(cv, 0, 1, msg)) {
        REFUSE(cv, 400, "INVALID_EVENT", "invalid_event", 1, "invalid event: it " UNSTORABLE_IN);
        return 0;
    }
    sg_bytes *m = &cv->bad;
    sg_bytes_reset(m);
    if (msg->in_len > COLLECT_MAX_MESSAGE) {
        char buf[32];
        SG_BYTES_LIT(m, "the event is ");
        sg_bytes_put(m, buf, (size_t)snprintf(buf, sizeof buf, "%zu", msg->in_len));
        SG_BYTES_LIT(m, " bytes; the limit is ");
        sg_reply_kb(m, COLLECT_MAX_MESSAGE);
        SG_BYTES_LIT(m, " per message");
        refuse_built(cv, 413, "PAYLOAD_TOO_LARGE", "too_large", 1, NULL, 0);
        return 0;
    }
    sg_norm_ctx c;
    norm_ctx(cv, in, &c);
    int rc = sg_normalize(cv->norm, &cv->json, 0, &c, &cv->events, &cv->aux, &msg->r);
    if (rc < 0) return -1;
    if (rc == 1) { cv->n = 1; return 0; }
    SG_BYTES_LIT(m, "invalid event: ");
    put_reasons(cv, m, msg->r.nreasons, "; ");
    sg_bytes *d = &cv->big;                    /* free: no batch here */
    sg_bytes_reset(d);
    for (int i = 0; !msg->r.unstorable && i < msg->r.nreasons; i++) {
        size_t len;
        const char *r = sg_norm_reason(cv->norm, i, &len);
        if (i > 0) sg_bytes_putc(d, ',');
        SG_BYTES_LIT(d, "{\"reason\":");
        sg_json_put_string(d, r, len);
        sg_bytes_putc(d, '}');
    }
    refuse_built(cv, 400, "INVALID_EVENT", "invalid_event", 1, msg->r.unstorable ? NULL : d->data, d->len);
    return 0;
}

/* a batch's bad message i: {"index":i,"reason":…[,"reasons":[…]]} */
static void bad_message(sg_convert *cv, uint32_t i, const char *why, size_t n, int reasons)
{
    sg_bytes *d = &cv->bad, *x = &cv->bad_index;
    char num[16];
    size_t k = (size_t)snprintf(num, sizeof num, "%u", i);
    if (d->len) sg_bytes_putc(d, ',');
    if (x->len) SG_BYTES_LIT(x, ", ");
    sg_bytes_put(x, num, k);
    SG_BYTES_LIT(d, "{\"index\":");
    sg_bytes_put(d, num, k);
    SG_BYTES_LIT(d, ",\"reason\":");
    if (why) {
        sg_json_put_string(d, why, n);
    } else {
        sg_bytes tmp = SG_BYTES_INIT;          /* the reasons joined, as one JSON string */
        put_reasons(cv, &tmp, reasons, "; ");
        sg_json_put_string(d, tmp.data ? tmp.data : "", tmp.len);
        sg_bytes_free(&tmp);
        SG_BYTES_LIT(d, ",\"reasons\":[");
        put_reasons(cv, d, reasons, NULL);
        sg_bytes_putc(d, ']');
    }
    sg_bytes_putc(d, '}');
}

static void big_message(sg_convert *cv, uint32_t i, size_t size)
{
    sg_bytes *d = &cv->big, *x = &cv->big_index;
    char num[48];
    size_t k = (size_t)snprintf(num, sizeof num, "%u", i);
    if (d->len) sg_bytes_putc(d, ',');
    if (x->len) SG_BYTES_LIT(x, ", ");
    sg_bytes_put(x, num, k);
    SG_BYTES_LIT(d, "{\"index\":");
    sg_bytes_put(d, num, k);
    SG_BYTES_LIT(d, ",\"reason\":\"message is ");
    sg_bytes_put(d, num, (size_t)snprintf(num, sizeof num, "%zu", size));
    SG_BYTES_LIT(d, " bytes; the limit is ");
    sg_reply_kb(d, COLLECT_MAX_MESSAGE);
    SG_BYTES_LIT(d, "\"}");
}

/* the batch's refusal, when a message was too large or invalid */
static void refuse_batch(sg_convert *cv, int n, int nbig, int nbad)
{
    sg_bytes m = SG_BYTES_INIT;
    char buf[64];
    if (nbig) {
        if (nbig > 1) SG_BYTES_LIT(&m, "messages ");
        else SG_BYTES_LIT(&m, "message ");
        sg_bytes_put(&m, cv->big_index.data, cv->big_index.len);
        if (nbig > 1) SG_BYTES_LIT(&m, " of the batch are over the limit of ");
        else SG_BYTES_LIT(&m, " of the batch is over the limit of ");
        sg_reply_kb(&m, COLLECT_MAX_MESSAGE);
        SG_BYTES_LIT(&m, " per message; nothing was accepted");
        sg_convert_refuse(cv, 413, "PAYLOAD_TOO_LARGE", "too_large", n, m.data, m.len, cv->big.data, cv->big.len);
    } else {
        sg_bytes_put(&m, buf, (size_t)snprintf(buf, sizeof buf, "%d of %d messages are invalid (index ", nbad, n));
        sg_bytes_put(&m, cv->bad_index.data, cv->bad_index.len);
        SG_BYTES_LIT(&m, "); the batch is atomic, nothing was accepted");
        sg_convert_refuse(cv, 400, "INVALID_BATCH", "invalid_batch", n, m.data, m.len, cv->bad.data, cv->bad.len);
    }
    sg_bytes_free(&m);
}

/* Every message of the batch array node list. 0, or -1. */
static int convert_batch(sg_convert *cv, const sg_convert_in *in, uint32_t list)
{
    const sg_json *j = &cv->json;
    uint32_t count = j->node[list].count;
    sg_norm_ctx c;
    norm_ctx(cv, in, &c);
    int32_t sent = sg_json_member(j, 0, "sentAt", 6), bctx = sg_json_member(j, 0, "context", 7);
    /* a batch's sentAt of false is none too: `batched and doc.sentAt or nil` */
    if (sent >= 0 && j->node[sent].type != SG_J_NULL && j->node[sent].type != SG_J_FALSE) c.sent_at = sent;
    if (bctx >= 0 && (j->node[bctx].type == SG_J_OBJ || j->node[bctx].type == SG_J_ARR) && j->node[bctx].count)
        c.batch_context = bctx;
    sg_bytes *b[] = { &cv->bad, &cv->bad_index, &cv->big, &cv->big_index };
    for (int i = 0; i < 4; i++) sg_bytes_reset(b[i]);
    int nbad = 0, nbig = 0;
    uint32_t m = list + 1;
    for (uint32_t i = 0; i < count; i++, m = j->node[m].next) {
        sg_message *msg = new_message(cv);
        if (!msg) return -1;
        if (!object_like(&j->node[m])) {
            bad_message(cv, i, "message must be a JSON object", 29, 0);
            nbad++;
        } else if (stored_input(cv, m, 0, msg)) {
            bad_message(cv, i, "message " UNSTORABLE_IN, sizeof("message " UNSTORABLE_IN) - 1, 0);
            nbad++;
        } else if (msg->in_len > COLLECT_MAX_MESSAGE) {
            big_message(cv, i, msg->in_len);
            nbig++;
        } else if (!nbig) {                    /* once one is too large, the answer is a 413 */
            int rc = sg_normalize(cv->norm, j, m, &c, &cv->events, &cv->aux, &msg->r);
            if (rc < 0) return -1;
            if (rc == 0) {
                bad_message(cv, i, NULL, 0, msg->r.nreasons);
                nbad++;
            } else if (!nbad) {
                cv->n++;
            }
        }
    }
    if (cv->bad.oom || cv->big.oom || cv->bad_index.oom || cv->big_index.oom) return -1;
    if (nbig || nbad) {
        cv->n = 0;
        refuse_batch(cv, (int)count, nbig, nbad);
    }
    return 0;
}

static void reset_outcome(sg_convert *cv)
{
    cv->status = 0;
    cv->code = cv->reason = NULL;
    cv->rejected = cv->received = cv->n = 0;
    cv->pipeline = NULL;
}

void sg_convert_reset(sg_convert *cv)
{
    reset_outcome(cv);
}

int sg_convert_body(sg_convert *cv, const char *body, size_t n, const sg_convert_in *in)
{
    reset_outcome(cv);
    cv->pipeline = in->header;             /* a refusal before the body names one: CORS */
    if (!cv->norm && !(cv->norm = sg_norm_new())) return -1;
    sg_bytes *b[] = { &cv->events, &cv->inputs, &cv->aux, &cv->error };
    for (int i = 0; i < 4; i++) sg_bytes_reset(b[i]);
    int rc = parse(cv, body, n, in);
    if (rc != 0) return rc < 0 ? -1 : 0;
    int32_t list = shape(cv, in);
    if (list < 0) return 0;
    cv->received = list ? (int)cv->json.node[list].count : 1;
    rc = list ? convert_batch(cv, in, (uint32_t)list) : convert_one(cv, in);
    if (rc < 0 || cv->events.oom || cv->inputs.oom || cv->aux.oom || cv->error.oom) return -1;
    return 0;
}

sg_pipeline *sg_convert_header_key(sg_convert *cv, const sg_keys *keys, const char *k, size_t n, int *refused)
{
    *refused = 0;
    reset_outcome(cv);
    if (!k || n == 0) return NULL;
    sg_pipeline *p = sg_keys_find(keys, k, n);
    if (p) return p;
    /* a key in the header is authoritative: refuse an unknown one before
     * spending anything on the body */
    REFUSE(cv, 401, "INVALID_PIPELINE_KEY", "invalid_pipeline_key", 1,
           "the pipeline key in the X-Pipeline-Key header is not configured on this collector; " SG_KEY_HELP);
    *refused = 1;
    return NULL;
}
