/*
 * fuzz_node_auth.c - the storage node's check of a signed request's headers.
 *
 * Input: method, target, X-Tessera-Date, X-Tessera-Content-SHA256 and
 * Authorization separated by NULs (missing fields: absent headers).
 * Invariants: no crash; an accepted request carries exactly the signature
 * node_auth_sign makes for it under the node's key, a date within the skew of
 * the node's clock and a 64-digit body hash; a refusal says why.
 */
#include "core/crypto.h"
#include "core/err.h"
#include "fuzz.h"
#include "store/node_auth.h"

#include <string.h>

#define FUZZ_NOW 1800000000LL /* the node's clock; the seeds are dated around it */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct secret key = {32, {0}};
    char *field[5] = {NULL, NULL, NULL, NULL, NULL};
    char want[NODE_AUTH_VALUE];
    const char *why = NULL;
    size_t off = 0, n = 0;
    int rc;

    if (size > 8192)
        return 0;
    memset(key.b, 'k', key.len);
    while (n < 5 && off <= size) {
        const uint8_t *nul = memchr(data + off, '\0', size - off);
        size_t len = nul ? (size_t)(nul - (data + off)) : size - off;
        field[n++] = fuzz_cstr(data + off, len);
        off += len + 1;
        if (nul == NULL)
            break;
    }
    rc = node_auth_check(&key, 1, field[0] ? field[0] : "", field[1] ? field[1] : "", field[2],
                         field[3], field[4], FUZZ_NOW, &why);
    if (rc == OK) {
        fuzz_check(n == 5 && strlen(field[3]) == 64);
        long long d = atoll(field[2]);
        fuzz_check(d >= FUZZ_NOW - NODE_AUTH_SKEW_S && d <= FUZZ_NOW + NODE_AUTH_SKEW_S);
        node_auth_sign(&key, field[0], field[1], field[2], field[3], want);
        fuzz_check(strcmp(want, field[4]) == 0);
    } else {
        fuzz_check(rc == E_UNAUTHORIZED && why != NULL && why[0] != '\0');
    }
    for (size_t i = 0; i < n; i++)
        free(field[i]);
    return 0;
}
