/*
 * log.h — JSON-lines logging for the C core.
 *
 * Lua code logs through lua/signal/observe/log.lua (levels, secret scrubbing); the C
 * core only reports what Lua cannot see: start-up failures, Redis connection
 * state, errors raised by handlers. Each record is one write(2) so lines from
 * several worker threads never interleave.
 */
#ifndef SIGNAL_LOG_H
#define SIGNAL_LOG_H

#include <stddef.h>

/* sg_log("warn", "redis connection lost", "reason", why, "retry_ms", "200", NULL)
 * Fields are key/value string pairs terminated by NULL; values are escaped. */
void sg_log(const char *level, const char *msg, ...);

/* Writes one pre-formatted line (a '\n' is added) to stderr atomically. */
void sg_log_line(const char *line, size_t len);

/* Appends s as a JSON string (with quotes) to buf; returns bytes written or
 * the size needed when it does not fit (snprintf semantics). */
size_t sg_json_escape(char *buf, size_t cap, const char *s);

#endif
