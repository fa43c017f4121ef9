/*
 * log.c - formatted single-line log records to stderr.
 */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum log_level log_min_level = LOG_INFO;

static _Thread_local const char *log_rid;

static const char *const log_names[] = {"debug", "info", "warn", "error", "off"};

int log_level_parse(const char *name)
{
    for (int i = 0; i <= LOG_OFF; i++) {
        if (strcmp(name, log_names[i]) == 0)
            return i;
    }
    return -1;
}

void log_set_request_id(const char *rid)
{
    log_rid = rid;
}

/* utf8_len returns the length of the well-formed UTF-8 sequence at p (n bytes left), or 0. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    size_t len;
    unsigned cp;

    if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        len = 2;
        cp = p[0] & 0x1f;
    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        len = 3;
        cp = p[0] & 0x0f;
    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        len = 4;
        cp = p[0] & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    /* overlong forms, surrogates and beyond U+10FFFF are not text */
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

size_t log_escape(const char *in, size_t n, char *out, size_t cap)
{
    const unsigned char *p = (const unsigned char *)in;
    size_t o = 0;

    for (size_t i = 0; i < n && o + 5 < cap;) {
        size_t len = p[i] >= 0x80 ? utf8_len(p + i, n - i) : 1;
        if (p[i] >= 0x80 && len > 0) {
            memcpy(out + o, p + i, len);
            o += len;
            i += len;
            continue;
        }
        if (p[i] == '\\') {
            out[o++] = '\\';
            out[o++] = '\\';
        } else if (p[i] < 0x20 || p[i] == 0x7f || p[i] >= 0x80) {
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", p[i]);
        } else {
            out[o++] = (char)p[i];
        }
        i++;
    }
    out[o] = '\0';
    return o;
}

void log_write(enum log_level lvl, const char *module, const char *fmt, ...)
{
    char line[2048], msg[1024];
    struct timespec ts;
    struct tm tm;
    size_t n;
    va_list ap;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ %-5s %s%s%s: ", ts.tv_nsec / 1000000,
                          log_names[lvl], module, log_rid ? " rid=" : "", log_rid ? log_rid : "");
    if (n < sizeof(line)) {
        va_start(ap, fmt);
        int m = vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (m > 0)
            n += log_escape(msg, (size_t)m < sizeof(msg) ? (size_t)m : sizeof(msg) - 1, line + n,
                            sizeof(line) - n);
    }
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}

bool log_level_valid(const char *name)
{
    return log_level_parse(name) >= 0;
}
