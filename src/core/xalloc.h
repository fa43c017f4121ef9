/*
 * xalloc.h - allocation that cannot fail.
 *
 * Out of memory aborts with the file and line, as in redis and h2o: callers
 * never check for NULL. Sizes from clients must be capped before they get here.
 */
#ifndef CORE_XALLOC_H
#define CORE_XALLOC_H

#include <stddef.h>

#define xmalloc(n)     xmalloc_at((n), __FILE__, __LINE__)
#define xcalloc(n, m)  xcalloc_at((n), (m), __FILE__, __LINE__)
#define xrealloc(p, n) xrealloc_at((p), (n), __FILE__, __LINE__)
#define xstrdup(s)     xstrdup_at((s), __FILE__, __LINE__)
#define xstrndup(s, n) xstrndup_at((s), (n), __FILE__, __LINE__)

void *xmalloc_at(size_t n, const char *file, int line);
void *xcalloc_at(size_t n, size_t m, const char *file, int line);
void *xrealloc_at(void *p, size_t n, const char *file, int line);
char *xstrdup_at(const char *s, const char *file, int line);
char *xstrndup_at(const char *s, size_t n, const char *file, int line);

/* xasprintf returns a newly allocated formatted string; free() it. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
