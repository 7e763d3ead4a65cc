/*
 * log.c — see log.h. Timestamps are ISO-8601 UTC with milliseconds, the same
 * format the Lua logger uses, so both streams sort together.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

size_t sg_json_escape(char *buf, size_t cap, const char *s)
{
    size_t n = 0;
#define PUT(c) do { if (n + 1 < cap) buf[n] = (c); n++; } while (0)
    PUT('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char c = *p;
        if (c == '"' || c == '\\') { PUT('\\'); PUT(c); }
        else if (c == '\n') { PUT('\\'); PUT('n'); }
        else if (c == '\r') { PUT('\\'); PUT('r'); }
        else if (c == '\t') { PUT('\\'); PUT('t'); }
        else if (c < 0x20) {
            char tmp[8];
            snprintf(tmp, sizeof tmp, "\\u%04x", c);
            for (char *t = tmp; *t; t++) PUT(*t);
        } else PUT(c);
    }
    PUT('"');
    if (cap) buf[n < cap ? n : cap - 1] = '\0';
#undef PUT
    return n;
}

void sg_log_line(const char *line, size_t len)
{
    struct iovec iov[2] = { { (void *)line, len }, { "\n", 1 } };
    ssize_t r = writev(2, iov, 2);
    (void)r; /* nowhere left to report a failed log write */
}

void sg_log(const char *level, const char *msg, ...)
{
    char buf[4096];
    size_t n = 0, cap = sizeof buf - 2;
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n += snprintf(buf, cap, "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\",\"msg\":",
                  tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                  tm.tm_sec, (long)(tv.tv_usec / 1000), level);
    if (n < cap) n += sg_json_escape(buf + n, cap - n, msg);
    va_list ap;
    va_start(ap, msg);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (!k) break;
        const char *v = va_arg(ap, const char *);
        if (n + 1 < cap) buf[n++] = ',';
        if (n < cap) n += sg_json_escape(buf + n, cap - n, k);
        if (n + 1 < cap) buf[n++] = ':';
        if (n < cap) n += sg_json_escape(buf + n, cap - n, v ? v : "");
    }
    va_end(ap);
    if (n >= cap) n = cap - 1;   /* truncated record: still one line */
    buf[n++] = '}';
    sg_log_line(buf, n);
}
