/*
 * xalloc.c - allocation that aborts on failure, with the caller's location.
 */
#include "core/xalloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *xalloc_check(void *p, size_t n, const char *file, int line)
{
    if (p == NULL && n != 0) {
        fprintf(stderr, "fatal: out of memory allocating %zu bytes at %s:%d\n", n, file, line);
        abort();
    }
    return p;
}

void *xmalloc_at(size_t n, const char *file, int line)
{
    return xalloc_check(malloc(n), n, file, line);
}

void *xcalloc_at(size_t n, size_t m, const char *file, int line)
{
    return xalloc_check(calloc(n, m), n * m, file, line);
}

void *xrealloc_at(void *p, size_t n, const char *file, int line)
{
    return xalloc_check(realloc(p, n), n, file, line);
}

char *xstrdup_at(const char *s, const char *file, int line)
{
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc_at(n, file, line), s, n);
}

char *xstrndup_at(const char *s, size_t n, const char *file, int line)
{
    char *p = xmalloc_at(n + 1, file, line);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;

    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    return xalloc_check(n < 0 ? NULL : s, 1, __FILE__, __LINE__);
}
