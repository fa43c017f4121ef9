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

void log_write(enum log_level lvl, const char *module, const char *fmt, ...)
{
    char line[2048];
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
        int m = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
        va_end(ap);
        if (m > 0)
            n += (size_t)m;
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
