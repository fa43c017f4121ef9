/*
 * fuzz_range.c - the Range and If-None-Match request headers.
 *
 * Input: 4 bytes of representation size (little-endian; 0 to 4 GiB), then
 * the header text. Invariants: a satisfiable range lies inside the
 * representation (first <= last < size); "*" always matches.
 */
#include "core/err.h"
#include "fuzz.h"
#include "http/range.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char etag[] = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    uint64_t rsize, first = 0, last = 0;
    char *h;
    int rc;

    if (size < 4 || size > 8192)
        return 0;
    rsize = (uint64_t)data[0] | (uint64_t)data[1] << 8 | (uint64_t)data[2] << 16 |
            (uint64_t)data[3] << 24;
    h = fuzz_cstr(data + 4, size - 4);
    rc = http_range_parse(h, rsize, &first, &last);
    fuzz_check(rc == OK || rc == E_RANGE || rc == E_INVALID);
    if (rc == OK) {
        fuzz_check(rsize > 0);
        fuzz_check(first <= last);
        fuzz_check(last < rsize);
    }
    /* the same text against a huge representation: no overflow in the suffix case */
    rc = http_range_parse(h, UINT64_MAX, &first, &last);
    if (rc == OK)
        fuzz_check(first <= last);
    bool any = http_etag_match(h, etag);
    if (strchr(h, '*') == NULL && strstr(h, etag) == NULL)
        fuzz_check(!any);
    (void)http_etag_match(h, "");
    free(h);
    return 0;
}
