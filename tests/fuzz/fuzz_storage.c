/*
 * fuzz_storage.c - the storage node's request parameters: the {key} path
 * segment and the after/limit query of GET /blobs.
 *
 * Input: "after" and "limit" separated by the first NUL (no NUL: after only).
 * Invariants: a key that passes is 64 lowercase hex (no '/', no '.': it names
 * a file directly); an accepted limit is 1 to 10000.
 */
#include "core/err.h"
#include "core/ident.h"
#include "fuzz.h"
#include "services/storage.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, '\0', size);
    size_t alen = nul ? (size_t)(nul - data) : size;
    char *after, *limit = NULL;
    const char *why = NULL;
    size_t lim = 0;
    int rc;

    if (size > 4096)
        return 0;
    after = fuzz_cstr(data, alen);
    if (nul != NULL)
        limit = fuzz_cstr(nul + 1, size - alen - 1);
    if (blob_key_valid((const char *)data, size)) {
        fuzz_check(size == BLOB_KEY_LEN);
        for (size_t i = 0; i < size; i++)
            fuzz_check(strchr("0123456789abcdef", data[i]) != NULL && data[i] != 0);
    }
    rc = storage_list_args(after, limit, &lim, &why);
    if (rc == OK) {
        fuzz_check(lim >= 1 && lim <= 10000);
        fuzz_check(after[0] == '\0' || strlen(after) == BLOB_KEY_LEN);
    } else {
        fuzz_check(rc == E_INVALID && why != NULL && why[0] != '\0');
    }
    free(after);
    free(limit);
    return 0;
}
