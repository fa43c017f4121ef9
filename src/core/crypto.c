/*
 * crypto.c - SHA-256 (libcrypto EVP), getrandom(2), constant-time compare.
 */
#include "core/crypto.h"

#include "core/err.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

struct sha256_ctx *sha256_new(void)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();

    if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        fprintf(stderr, "fatal: cannot initialise SHA-256\n");
        abort();
    }
    return (struct sha256_ctx *)md;
}

void sha256_update(struct sha256_ctx *ctx, const void *p, size_t n)
{
    EVP_DigestUpdate((EVP_MD_CTX *)ctx, p, n);
}

void sha256_final(struct sha256_ctx *ctx, uint8_t out[SHA256_LEN])
{
    unsigned int len = SHA256_LEN;

    EVP_DigestFinal_ex((EVP_MD_CTX *)ctx, out, &len);
    EVP_MD_CTX_free((EVP_MD_CTX *)ctx);
}

void sha256_buf(const void *p, size_t n, uint8_t out[SHA256_LEN])
{
    struct sha256_ctx *ctx = sha256_new();

    sha256_update(ctx, p, n);
    sha256_final(ctx, out);
}

int sha256_fd(int fd, uint8_t out[SHA256_LEN])
{
    struct sha256_ctx *ctx = sha256_new();
    char buf[65536];
    off_t off = 0;
    int rc = OK;

    for (;;) {
        ssize_t n = pread(fd, buf, sizeof(buf), off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = E_IO;
            break;
        }
        if (n == 0)
            break;
        sha256_update(ctx, buf, (size_t)n);
        off += n;
    }
    sha256_final(ctx, out);
    return rc;
}

void hmac_sha256(const void *key, size_t klen, const void *msg, size_t n, uint8_t out[SHA256_LEN])
{
    unsigned int len = SHA256_LEN;

    if (HMAC(EVP_sha256(), key, (int)klen, msg, n, out, &len) == NULL) {
        fprintf(stderr, "fatal: HMAC-SHA256 failed\n");
        abort();
    }
}

void random_bytes(void *p, size_t n)
{
    size_t got = 0;

    while (got < n) {
        ssize_t r = getrandom((char *)p + got, n - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            fprintf(stderr, "fatal: getrandom: errno %d\n", errno);
            abort();
        }
        got += (size_t)r;
    }
}

bool ct_equal(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}

int secret_file_read(const char *path, size_t min, struct secret *out, char *why, size_t cap)
{
    uint8_t buf[SECRET_MAX + 2];
    size_t len = 0;
    int fd, rc = OK;

    memset(out, 0, sizeof(*out));
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, cap, "cannot read \"%s\": %s", path, strerror(errno));
        return E_IO;
    }
    while (len < sizeof(buf)) {
        ssize_t r = read(fd, buf + len, sizeof(buf) - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(why, cap, "cannot read \"%s\": %s", path, strerror(errno));
            rc = E_IO;
            goto out;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' ' ||
                       buf[len - 1] == '\t'))
        len--;
    if (len < min || len > SECRET_MAX) {
        snprintf(why, cap,
                 "\"%s\" must hold %zu to %d bytes (make one: openssl rand -hex 32 > FILE; "
                 "chmod 600 FILE)",
                 path, min, SECRET_MAX);
        rc = E_INVALID;
        goto out;
    }
    memcpy(out->b, buf, len);
    out->len = len;
out:
    OPENSSL_cleanse(buf, sizeof(buf));
    close(fd);
    return rc;
}
