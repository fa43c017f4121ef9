/*
 * fuzz_ops.c - the transform options parser (/i/{id}/t/{ops}.{ext}).
 *
 * Invariants: an accepted ops string has a canonical form that fits its
 * buffer, parses again to the same options and is its own canonical form
 * (canonicalising is idempotent); every refusal names a key first.
 */
#include "core/err.h"
#include "fuzz.h"
#include "image/ops.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const struct ops_limits lim = {4096, 100000000};
    struct img_ops o, again;
    char err[160] = "", canon[OPS_CANON_MAX], canon2[OPS_CANON_MAX];
    const char *dot;
    struct str ops, ext;

    if (size > 4096)
        return 0;
    /* the input is "ops.ext", split at its last dot as the route does */
    dot = size ? memrchr(data, '.', size) : NULL;
    ops = (struct str){(const char *)data, dot ? (size_t)(dot - (const char *)data) : size};
    ext = dot ? (struct str){dot + 1, size - ops.len - 1} : (struct str){"", 0};
    if (img_ops_parse(ops, ext, &lim, &o, err, sizeof(err)) != OK) {
        fuzz_check(err[0] != '\0' && strchr(err, ':') != NULL);
        return 0;
    }
    img_ops_canonical(&o, canon, sizeof(canon));
    fuzz_check(strlen(canon) < OPS_CANON_MAX - 1);
    dot = strrchr(canon, '.');
    fuzz_check(dot != NULL);
    fuzz_check(img_ops_parse((struct str){canon, (size_t)(dot - canon)}, str_from(dot + 1), &lim,
                             &again, err, sizeof(err)) == OK);
    fuzz_check(memcmp(&o, &again, sizeof(o)) == 0);
    img_ops_canonical(&again, canon2, sizeof(canon2));
    fuzz_check(strcmp(canon, canon2) == 0);
    return 0;
}
