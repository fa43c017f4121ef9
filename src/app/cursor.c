/*
 * cursor.c - listing cursors: "c2" + base64url(siv, 12 bytes; seq xor pad, 8 bytes).
 *
 * siv = HMAC-SHA256(key, "tessera-cursor-siv" | seq)[0..12] authenticates the
 * position and, as the input of pad = HMAC-SHA256(key, "tessera-cursor-pad" |
 * siv)[0..8], hides it: decoding recomputes siv from the decrypted seq and
 * compares in constant time.
 */
#include "app/cursor.h"

#include "core/codec.h"
#include "core/crypto.h"
#include "core/err.h"

#include <string.h>

#define CURSOR_SIV 12
#define CURSOR_RAW (CURSOR_SIV + 8)

static void cursor_mac(const uint8_t key[CURSOR_KEY_LEN], const char *label, const uint8_t *p,
                       size_t n, uint8_t *out, size_t outlen)
{
    uint8_t msg[32 + CURSOR_SIV];
    uint8_t d[SHA256_LEN];
    size_t l = strlen(label);

    memcpy(msg, label, l);
    memcpy(msg + l, p, n);
    hmac_sha256(key, CURSOR_KEY_LEN, msg, l + n, d);
    memcpy(out, d, outlen);
}

void cursor_encode(const uint8_t key[CURSOR_KEY_LEN], int64_t seq, char out[CURSOR_LEN])
{
    uint8_t raw[CURSOR_RAW], be[8], pad[8];

    for (int i = 0; i < 8; i++)
        be[i] = (uint8_t)((uint64_t)seq >> (56 - 8 * i));
    cursor_mac(key, "tessera-cursor-siv", be, 8, raw, CURSOR_SIV);
    cursor_mac(key, "tessera-cursor-pad", raw, CURSOR_SIV, pad, 8);
    for (int i = 0; i < 8; i++)
        raw[CURSOR_SIV + i] = be[i] ^ pad[i];
    out[0] = 'c';
    out[1] = '2';
    b64url_encode(raw, sizeof(raw), out + 2);
}

int cursor_decode(const uint8_t key[CURSOR_KEY_LEN], const char *s, size_t len, int64_t *seq)
{
    uint8_t raw[CURSOR_RAW], be[8], pad[8], siv[CURSOR_SIV];
    uint64_t v = 0;

    if (len != 2 + b64url_encoded_len(CURSOR_RAW) || s[0] != 'c' || s[1] != '2')
        return E_INVALID;
    if (b64url_decode(s + 2, len - 2, raw, sizeof(raw)) != (long)sizeof(raw))
        return E_INVALID;
    cursor_mac(key, "tessera-cursor-pad", raw, CURSOR_SIV, pad, 8);
    for (int i = 0; i < 8; i++)
        be[i] = raw[CURSOR_SIV + i] ^ pad[i];
    cursor_mac(key, "tessera-cursor-siv", be, 8, siv, CURSOR_SIV);
    if (!ct_equal(siv, raw, CURSOR_SIV))
        return E_INVALID;
    for (int i = 0; i < 8; i++)
        v = v << 8 | be[i];
    if (v == 0 || v > INT64_MAX)
        return E_INVALID;
    *seq = (int64_t)v;
    return OK;
}
