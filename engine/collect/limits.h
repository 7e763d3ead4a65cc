/*
 * limits.h — the collector's limits on hostile input and the constants of
 * its rules, named once.
 *
 * Every size and count a client controls is bounded here, the way
 * lua-cjson's decode_max_depth bounds its decoder: a request body, one
 * message, the nesting of JSON, the visitor cookie. The same constants
 * reach Lua as core.collect.limits (engine/API.md), so the Lua modules and
 * the specs read them instead of repeating them.
 */
#ifndef SIGNAL_COLLECT_LIMITS_H
#define SIGNAL_COLLECT_LIMITS_H

/* A request body, before and after gunzip: Segment's 500 KB. The HTTP
 * server refuses bodies over 1 MB before reading them (server.h). */
#define COLLECT_MAX_BODY (500 * 1024)

/* One message as sent, minus its credential members: Segment's 32 KB. */
#define COLLECT_MAX_MESSAGE (32 * 1024)

/* JSON nesting. Real events nest a handful of levels (batch → message →
 * context → page); 32 leaves room for rich properties while bounding every
 * recursive walk (the parser here, blueprints, customer scripts) that later
 * touches the event. */
#define COLLECT_MAX_DEPTH 32

/* The visitor cookie. Its value becomes part of Redis keys and of every
 * event: anything but a short token ([A-Za-z0-9_.-]) is treated as absent
 * (and replaced when minting). */
#define COLLECT_COOKIE_NAME "_dfdid"
#define COLLECT_COOKIE_MAX_LEN 128
/* ~400 days: the longest lifetime browsers keep a cookie (Chrome caps
 * there). The identity hash the cookie keys lives as long. */
#define COLLECT_COOKIE_MAX_AGE 34560000

/* Dedupe: a messageId is a duplicate while it is in the current window's
 * hash or in the COLLECT_DEDUPE_WINDOWS - 1 windows before it, so it is
 * remembered for at least dedupe_ttl_s and at most twice that. */
#define COLLECT_DEDUPE_WINDOWS 2
/* A window's hash is unlinked by the first commit two windows later; its
 * EXPIREAT (the end of window + 3) only covers an engine that was not
 * running then. */
#define COLLECT_DEDUPE_UNLINK_AFTER 2
#define COLLECT_DEDUPE_EXPIRE_AFTER 3

/* Messages per group commit; a request bigger than that gets a group (one
 * MULTI/EXEC) of its own. */
#define COLLECT_GROUP_MAX 512

#endif
