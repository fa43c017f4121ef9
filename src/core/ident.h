/*
 * ident.h - the identifiers clients see: image ids, delete tokens, blob keys.
 *
 * Every identifier from a request is checked here before it reaches a lookup
 * or a path: ids against ^[A-Za-z0-9_-]{11,32}$, keys as 64 lowercase hex.
 */
#ifndef CORE_IDENT_H
#define CORE_IDENT_H

#include "core/crypto.h"

#include <stdbool.h>
#include <stddef.h>

#define IMAGE_ID_MAX     32
#define IMAGE_ID_LEN     16 /* 12 random bytes, base64url: 96 bits */
#define DELETE_TOKEN_LEN 32 /* 24 random bytes, base64url: 192 bits */
#define BLOB_KEY_LEN     64

/* image_id_new writes a fresh random id and a NUL into out. */
void image_id_new(char out[IMAGE_ID_LEN + 1]);

/* image_id_valid tells whether len bytes at p match the id pattern of API.md. */
bool image_id_valid(const char *p, size_t len);

/* delete_token_new writes a fresh random token and a NUL into out. */
void delete_token_new(char out[DELETE_TOKEN_LEN + 1]);

/* delete_token_hash writes the lowercase hex SHA-256 of a token into out. */
void delete_token_hash(const char *token, size_t len, char out[SHA256_HEX]);

/* blob_key_valid tells whether len bytes at p are exactly 64 lowercase hex digits. */
bool blob_key_valid(const char *p, size_t len);

#endif
