/*
 * util.c - helpers shared by the fuzz targets.
 */
#include "core/xalloc.h"
#include "fuzz.h"

#include <string.h>

char *fuzz_cstr(const uint8_t *data, size_t n)
{
    char *s = xmalloc(n + 1);

    if (n > 0)
        memcpy(s, data, n);
    s[n] = '\0';
    return s;
}
