/*
 * cursor.c - listing cursors: "c1" + base64url(seq, 8 bytes big-endian; check, 4 bytes).
 */
#include "services/cursor.h"

#include "core/codec.h"
#include "core/crypto.h"
#include "core/err.h"

#include <string.h>

static void cursor_check(const uint8_t seq_be[8], uint8_t out[4])
{
    uint8_t msg[8 + 14];
    uint8_t d[SHA256_LEN];

    memcpy(msg, "tessera-cursor", 14);
    memcpy(msg + 14, seq_be, 8);
    sha256_buf(msg, sizeof(msg), d);
    memcpy(out, d, 4);
}

void cursor_encode(int64_t seq, char out[CURSOR_LEN])
{
    uint8_t raw[12];

    for (int i = 0; i < 8; i++)
        raw[i] = (uint8_t)((uint64_t)seq >> (56 - 8 * i));
    cursor_check(raw, raw + 8);
    out[0] = 'c';
    out[1] = '1';
    b64url_encode(raw, sizeof(raw), out + 2);
}

int cursor_decode(const char *s, size_t len, int64_t *seq)
{
    uint8_t raw[12];
    uint8_t check[4];
    uint64_t v = 0;

    if (len != 18 || s[0] != 'c' || s[1] != '1')
        return E_INVALID;
    if (b64url_decode(s + 2, len - 2, raw, sizeof(raw)) != (long)sizeof(raw))
        return E_INVALID;
    cursor_check(raw, check);
    if (!ct_equal(check, raw + 8, 4))
        return E_INVALID;
    for (int i = 0; i < 8; i++)
        v = v << 8 | raw[i];
    if (v == 0 || v > INT64_MAX)
        return E_INVALID;
    *seq = (int64_t)v;
    return OK;
}
