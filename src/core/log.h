/*
 * log.h - one line per event on stderr: time, level, module, request id, message.
 *
 * The level is checked before anything is formatted. Thread-safe: each line is
 * written with a single write(2).
 */
#ifndef CORE_LOG_H
#define CORE_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3, LOG_OFF = 4 };

extern enum log_level log_min_level;

/* log_level_valid tells whether name is a level log_level_parse knows. */
bool log_level_valid(const char *name);

/* log_level_parse maps "debug"/"info"/"warn"/"error"/"off" to a level; -1 if unknown. */
int log_level_parse(const char *name);

/* log_set_request_id sets the request id attached to this thread's lines (NULL clears). */
void log_set_request_id(const char *rid);

void log_write(enum log_level lvl, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_at(lvl, mod, ...)                                                                      \
    do {                                                                                           \
        if ((lvl) >= log_min_level)                                                                \
            log_write((lvl), (mod), __VA_ARGS__);                                                  \
    } while (0)
#define log_debug(mod, ...) log_at(LOG_DEBUG, mod, __VA_ARGS__)
#define log_info(mod, ...)  log_at(LOG_INFO, mod, __VA_ARGS__)
#define log_warn(mod, ...)  log_at(LOG_WARN, mod, __VA_ARGS__)
#define log_error(mod, ...) log_at(LOG_ERROR, mod, __VA_ARGS__)

/*
 * log_escape copies n bytes of in to out (capacity cap >= 1, always
 * terminated, truncated to fit) with control bytes and bytes that are not
 * well-formed UTF-8 written as \xNN, and the backslash as \\; returns the
 * length written. log_write passes every message through it, so one event is
 * one line whatever a request carried. Pure; thread-safe.
 */
size_t log_escape(const char *in, size_t n, char *out, size_t cap);

#endif
