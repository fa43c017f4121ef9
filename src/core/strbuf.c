/*
 * strbuf.c - capped growable buffers.
 */
#include "core/strbuf.h"

#include "core/err.h"
#include "core/xalloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void strbuf_init(struct strbuf *sb, size_t cap)
{
    sb->buf = NULL;
    sb->len = 0;
    sb->alloc = 0;
    sb->cap = cap;
}

void strbuf_release(struct strbuf *sb)
{
    free(sb->buf);
    strbuf_init(sb, sb->cap);
}

static int strbuf_grow(struct strbuf *sb, size_t extra)
{
    size_t want;

    if (extra > sb->cap || sb->len > sb->cap - extra)
        return E_TOOBIG;
    want = sb->len + extra + 1;
    if (want <= sb->alloc)
        return OK;
    size_t n = sb->alloc ? sb->alloc : 256;
    while (n < want)
        n *= 2;
    sb->buf = xrealloc(sb->buf, n);
    sb->alloc = n;
    return OK;
}

int strbuf_add(struct strbuf *sb, const void *p, size_t n)
{
    int rc = strbuf_grow(sb, n);

    if (rc != OK)
        return rc;
    memcpy(sb->buf + sb->len, p, n);
    sb->len += n;
    sb->buf[sb->len] = '\0';
    return OK;
}

int strbuf_addf(struct strbuf *sb, const char *fmt, ...)
{
    va_list ap;
    int n;
    int rc;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return E_INTERNAL;
    rc = strbuf_grow(sb, (size_t)n);
    if (rc != OK)
        return rc;
    va_start(ap, fmt);
    vsnprintf(sb->buf + sb->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb->len += (size_t)n;
    return OK;
}

char *strbuf_detach(struct strbuf *sb, size_t *len)
{
    char *p = sb->buf ? sb->buf : xstrdup("");

    if (len != NULL)
        *len = sb->len;
    strbuf_init(sb, sb->cap);
    return p;
}
