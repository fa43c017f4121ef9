/*
 * crypto.h - SHA-256, secure random bytes and constant-time comparison.
 *
 * Thin wrappers over OpenSSL's libcrypto so no other module includes it.
 */
#ifndef CORE_CRYPTO_H
#define CORE_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHA256_LEN 32
#define SHA256_HEX 65 /* 64 hex digits and a NUL */

struct sha256_ctx;

/* sha256_new starts a streaming hash; sha256_final writes the digest and frees ctx. */
struct sha256_ctx *sha256_new(void);
void sha256_update(struct sha256_ctx *ctx, const void *p, size_t n);
void sha256_final(struct sha256_ctx *ctx, uint8_t out[SHA256_LEN]);

/* sha256_buf hashes n bytes at p. */
void sha256_buf(const void *p, size_t n, uint8_t out[SHA256_LEN]);

/* sha256_fd hashes an open file from offset 0 to its end; E_IO on a read error. */
int sha256_fd(int fd, uint8_t out[SHA256_LEN]);

/* hmac_sha256 writes HMAC-SHA256(key, msg) to out. Aborts if libcrypto fails; thread-safe. */
void hmac_sha256(const void *key, size_t klen, const void *msg, size_t n, uint8_t out[SHA256_LEN]);

/* random_bytes fills p with n bytes from the kernel's CSPRNG; aborts if it cannot. */
void random_bytes(void *p, size_t n);

/* ct_equal compares n bytes in time independent of their content. */
bool ct_equal(const void *a, const void *b, size_t n);

#define SECRET_MAX 256 /* bytes of a secret read from a file, at most */

/* A secret shared between processes (storage signing key, cache key, tokens). */
struct secret {
    size_t len; /* 0: none configured */
    uint8_t b[SECRET_MAX];
};

/*
 * secret_file_read reads the secret in the file at path into out: its bytes
 * without trailing whitespace (a final newline is not part of the secret).
 * E_IO when the file cannot be read, E_INVALID when it holds fewer than min
 * or more than SECRET_MAX bytes; why (capacity cap) then says so without
 * quoting the content. Blocks on the file; thread-safe.
 */
int secret_file_read(const char *path, size_t min, struct secret *out, char *why, size_t cap);

#endif
