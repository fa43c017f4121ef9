/*
 * fuzz_cursor.c - listing cursors and the base64url decoder under them.
 *
 * Invariants: a cursor that decodes gives seq > 0 and encodes back to the
 * same text (one spelling per position: no forged near-duplicates); under
 * another key it does not decode; the decoder never writes past its capacity.
 */
#include "app/cursor.h"
#include "core/codec.h"
#include "core/err.h"
#include "fuzz.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int64_t seq = 0;
    uint8_t out[64];
    char back[CURSOR_LEN];

    if (size > 4096)
        return 0;
    static const uint8_t key[CURSOR_KEY_LEN] = {1, 2, 3};
    static const uint8_t other[CURSOR_KEY_LEN] = {1, 2, 4};

    if (cursor_decode(key, (const char *)data, size, &seq) == OK) {
        int64_t again = 0;
        fuzz_check(seq > 0);
        cursor_encode(key, seq, back);
        fuzz_check(strlen(back) == size && memcmp(back, data, size) == 0);
        fuzz_check(cursor_decode(other, (const char *)data, size, &again) != OK);
    }
    long n = b64url_decode((const char *)data, size, out, sizeof(out));
    fuzz_check(n >= -1 && n <= (long)sizeof(out));
    if (n > 0) {
        char enc[sizeof(out) * 2];
        b64url_encode(out, (size_t)n, enc);
        fuzz_check(strlen(enc) == b64url_encoded_len((size_t)n));
    }
    return 0;
}
