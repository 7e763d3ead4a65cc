/*
 * json.h — the collector's JSON reader and writer (engine/collect/json.c).
 *
 * The reader validates a request body exactly as lua-cjson 2.1 decodes it
 * (decode_max_depth 32, decode_invalid_numbers off), with cjson's own error
 * messages, and indexes the shallow part of the document: every member of
 * the containers down to a given depth becomes a node (pointers into the
 * body, flags), deeper values are validated and stay byte ranges. The
 * normalizer walks those nodes and copies the byte ranges; nothing is
 * decoded into values it does not look at.
 */
#ifndef SIGNAL_COLLECT_JSON_H
#define SIGNAL_COLLECT_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "../bytes.h"

enum { SG_J_OBJ = 1, SG_J_ARR, SG_J_STR, SG_J_NUM, SG_J_TRUE, SG_J_FALSE, SG_J_NULL };

/* Node flags. REWRITE and INF cover a node's whole subtree. */
enum {
    SG_JF_ESC = 1,       /* a string value with escapes: decode it to compare it */
    SG_JF_KEY_ESC = 2,   /* the member's key has escapes */
    SG_JF_REWRITE = 4,   /* the bytes are not strict JSON (raw control characters in a
                          * string, a number like "1." or "-.5"): copy with sg_json_put */
    SG_JF_INF = 8,       /* a number too big for a double (1e999): decoded it is
                          * ±inf, which JSON cannot hold */
    SG_JF_INDEXED = 16,  /* a container whose members are nodes */
};

typedef struct {
    uint32_t key, klen;  /* an object member's key, between its quotes */
    uint32_t val, vlen;  /* the value's bytes */
    uint32_t next;       /* the node after this one's subtree */
    uint32_t count;      /* children in the index (0: a leaf, or not indexed) */
    uint8_t type, flags;
} sg_jnode;

typedef struct {
    const char *s;       /* the document, not owned */
    size_t n;            /* its length up to the first NUL (where cjson stops) */
    sg_jnode *node;      /* node[0] is the root; reused from parse to parse */
    uint32_t nnodes, cap;
    struct sg_jmember *stack;   /* the members of the objects being parsed */
    uint32_t nstack, stackcap;
    char err[96];        /* why it is not JSON, in cjson's words */
} sg_json;

/* Parses s[0, n). index_depth: the containers whose members become nodes,
 * the root being depth 1. 0 ok; -1 not JSON (j->err); -2 out of memory. */
int sg_json_parse(sg_json *j, const char *s, size_t n, int index_depth);
void sg_json_free(sg_json *j);

/* The children of an indexed container: for (c = first; k < count; c = next) */
static inline uint32_t sg_json_first(const sg_json *j, uint32_t i) { (void)j; return i + 1; }
static inline uint32_t sg_json_next(const sg_json *j, uint32_t c) { return j->node[c].next; }

/* Decodes a string's escapes (src between the quotes, already validated)
 * into out, which has room for n bytes; returns the decoded length. */
size_t sg_json_unescape(const char *src, size_t n, char *out);

/* The member of object i whose decoded key is name (the last one: a
 * repeated key keeps its last value, as cjson does), or -1. */
int32_t sg_json_member(const sg_json *j, uint32_t i, const char *name, size_t n);

/* Whether member c's decoded key is name. */
int sg_json_key_is(const sg_json *j, uint32_t c, const char *name, size_t n);

/* A number node's value (strtod, C locale). */
double sg_json_number(const char *p, size_t n);

/* Appends node i's bytes, rewritten into strict JSON when needed. */
void sg_json_put(sg_bytes *o, const sg_json *j, uint32_t i);
/* Appends bytes of a validated value (REWRITE as in the flags). */
void sg_json_put_bytes(sg_bytes *o, const char *p, size_t n, int rewrite);
/* Appends s as a JSON string: quotes, escapes for '"', '\\' and control
 * characters; other bytes as they are (as cjson does). */
void sg_json_put_string(sg_bytes *o, const char *s, size_t n);

#endif
