/*
 * blob.c - the backend-independent half of the blob store.
 *
 * Chooses the backend from the url scheme, validates every key before it
 * reaches a backend (and so before it can touch a path), then dispatches.
 */
#include "core/codec.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/ident.h"
#include "core/log.h"
#include "core/xalloc.h"
#include "store/blob_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BLOB_FILE_SCHEME "file://"

struct blob_store *blob_store_new(const struct blob_ops *ops, void *be)
{
    struct blob_store *bs = xmalloc(sizeof(*bs));

    bs->ops = ops;
    bs->be = be;
    return bs;
}

int blob_store_open(const char *url, struct blob_store **out)
{
    size_t n = strlen(BLOB_FILE_SCHEME);

    *out = NULL;
    /* "file:///abs/path": an empty host, then an absolute path. */
    if (url == NULL || strncmp(url, BLOB_FILE_SCHEME, n) != 0 || url[n] != '/') {
        log_error("store", "unsupported blob store url '%s' (want file:///absolute/path)",
                  url ? url : "");
        return E_INVALID;
    }
    return blob_file_open(url + n, out);
}

void blob_store_free(struct blob_store *bs)
{
    if (bs == NULL)
        return;
    bs->ops->free(bs->be);
    free(bs);
}

static bool key_ok(const char *key)
{
    return key != NULL && blob_key_valid(key, strnlen(key, BLOB_KEY_LEN + 1));
}

int blob_put_path(struct blob_store *bs, const char *key, const char *src_path)
{
    if (!key_ok(key) || src_path == NULL)
        return E_INVALID;
    return bs->ops->put_path(bs->be, key, src_path);
}

int blob_open(struct blob_store *bs, const char *key, int *fd, uint64_t *size)
{
    *fd = -1;
    *size = 0;
    if (!key_ok(key))
        return E_INVALID;
    return bs->ops->open(bs->be, key, fd, size);
}

int blob_peek(struct blob_store *bs, const char *key, int *fd, uint64_t *size)
{
    *fd = -1;
    *size = 0;
    if (!key_ok(key))
        return E_INVALID;
    if (bs->ops->peek != NULL)
        return bs->ops->peek(bs->be, key, fd, size);
    return blob_store_may_block(bs) ? E_AGAIN : bs->ops->open(bs->be, key, fd, size);
}

int blob_exists(struct blob_store *bs, const char *key, bool *exists)
{
    *exists = false;
    if (!key_ok(key))
        return E_INVALID;
    return bs->ops->exists(bs->be, key, exists);
}

int blob_delete(struct blob_store *bs, const char *key)
{
    if (!key_ok(key))
        return E_INVALID;
    return bs->ops->del(bs->be, key);
}

int blob_tmp_path(struct blob_store *bs, char *buf, size_t cap)
{
    return bs->ops->tmp_path(bs->be, buf, cap);
}

int blob_store_check(struct blob_store *bs)
{
    return bs->ops->check(bs->be);
}

void blob_store_why(struct blob_store *bs, char *buf, size_t cap)
{
    if (cap > 0)
        buf[0] = '\0';
    if (bs->ops->why != NULL)
        bs->ops->why(bs->be, buf, cap);
}

int blob_list(struct blob_store *bs, const char *after, struct blob_entry *out, size_t cap,
              size_t *n)
{
    *n = 0;
    if (after == NULL)
        after = "";
    if (after[0] != '\0' && !key_ok(after))
        return E_INVALID;
    if (bs->ops->list == NULL)
        return E_UNSUPPORTED;
    return bs->ops->list(bs->be, after, out, cap, n);
}

int blob_each(struct blob_store *bs, blob_each_fn *fn, void *arg)
{
    struct blob_entry *page = xmalloc(BLOB_EACH_PAGE * sizeof(*page));
    char after[BLOB_KEY_LEN + 1] = "";
    size_t n = 0;
    int rc;

    do {
        rc = blob_list(bs, after, page, BLOB_EACH_PAGE, &n);
        for (size_t i = 0; rc == OK && i < n; i++)
            rc = fn(arg, &page[i]);
        if (rc == OK && n > 0)
            memcpy(after, page[n - 1].key, sizeof(after));
    } while (rc == OK && n == BLOB_EACH_PAGE);
    free(page);
    return rc;
}

size_t blob_store_shards(struct blob_store *bs, struct blob_shard_state *out, size_t cap,
                         char epoch[BLOB_EPOCH_MAX + 1])
{
    epoch[0] = '\0';
    return bs->ops->shards != NULL ? bs->ops->shards(bs->be, out, cap, epoch) : 0;
}

int blob_quarantined(struct blob_store *bs, struct blob_entry *out, size_t cap, size_t *n)
{
    *n = 0;
    if (bs->ops->quarantined == NULL)
        return E_UNSUPPORTED;
    return bs->ops->quarantined(bs->be, out, cap, n);
}

bool blob_store_may_block(const struct blob_store *bs)
{
    return bs->ops->may_block != NULL && bs->ops->may_block(bs->be);
}

int blob_tmp_unlinked(const char *dir)
{
    char path[4096];
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

    if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
        return fd;
    snprintf(path, sizeof(path), "%s/download-XXXXXX", dir);
    fd = mkostemp(path, O_CLOEXEC);
    if (fd >= 0)
        unlink(path);
    return fd;
}

int blob_tmp_name(const char *dir, char *buf, size_t cap)
{
    uint8_t raw[16];
    char hex[2 * sizeof(raw) + 1];
    int n;

    random_bytes(raw, sizeof(raw));
    hex_encode(raw, sizeof(raw), hex);
    n = snprintf(buf, cap, "%s/%s.tmp", dir, hex);
    return (n < 0 || (size_t)n >= cap) ? E_INVALID : OK;
}
