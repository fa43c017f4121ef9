/*
 * range.c - byte ranges and entity-tag lists.
 */
#include "http/range.h"

#include "core/err.h"

#include <string.h>

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* parse_u64 reads decimal digits; false when there are none or it overflows. */
static bool parse_u64(const char **pp, uint64_t *out)
{
    const char *p = *pp;
    uint64_t v = 0;

    if (*p < '0' || *p > '9')
        return false;
    while (*p >= '0' && *p <= '9') {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
        p++;
    }
    *pp = p;
    *out = v;
    return true;
}

int http_range_parse(const char *header, uint64_t size, uint64_t *first, uint64_t *last)
{
    const char *p = skip_ws(header);
    uint64_t a = 0, b = 0;
    bool has_a, has_b;

    if (strncmp(p, "bytes=", 6) != 0)
        return E_INVALID;
    p = skip_ws(p + 6);
    has_a = parse_u64(&p, &a);
    if (*p != '-')
        return E_INVALID;
    p++;
    has_b = parse_u64(&p, &b);
    p = skip_ws(p);
    if (*p != '\0' || (!has_a && !has_b))
        return E_INVALID; /* several ranges or junk: serve the whole thing */
    if (has_a && has_b && b < a)
        return E_INVALID;
    if (!has_a) {
        /* suffix: the last b bytes */
        if (b == 0 || size == 0)
            return E_RANGE;
        *first = b >= size ? 0 : size - b;
        *last = size - 1;
        return OK;
    }
    if (a >= size)
        return E_RANGE;
    *first = a;
    *last = (!has_b || b >= size) ? size - 1 : b;
    return OK;
}

bool http_etag_match(const char *header, const char *etag)
{
    const char *p = header;
    size_t elen = strlen(etag);

    for (;;) {
        p = skip_ws(p);
        while (*p == ',')
            p = skip_ws(p + 1);
        if (*p == '\0')
            return false;
        if (*p == '*')
            return true;
        if (strncmp(p, "W/", 2) == 0)
            p += 2;
        if (*p != '"')
            return false;
        const char *end = strchr(p + 1, '"');
        if (end == NULL)
            return false;
        if ((size_t)(end - p - 1) == elen && memcmp(p + 1, etag, elen) == 0)
            return true;
        p = end + 1;
    }
}
