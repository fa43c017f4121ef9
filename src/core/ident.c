/*
 * ident.c - generation and validation of ids, tokens and keys.
 */
#include "core/ident.h"

#include "core/codec.h"

#include <stdint.h>

void image_id_new(char out[IMAGE_ID_LEN + 1])
{
    uint8_t raw[12];

    random_bytes(raw, sizeof(raw));
    b64url_encode(raw, sizeof(raw), out);
}

bool image_id_valid(const char *p, size_t len)
{
    if (len < 11 || len > IMAGE_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = p[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
        if (!ok)
            return false;
    }
    return true;
}

void delete_token_new(char out[DELETE_TOKEN_LEN + 1])
{
    uint8_t raw[24];

    random_bytes(raw, sizeof(raw));
    b64url_encode(raw, sizeof(raw), out);
}

void delete_token_hash(const char *token, size_t len, char out[SHA256_HEX])
{
    uint8_t d[SHA256_LEN];

    sha256_buf(token, len, d);
    hex_encode(d, sizeof(d), out);
}

bool blob_key_valid(const char *p, size_t len)
{
    if (len != BLOB_KEY_LEN)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = p[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    return true;
}
