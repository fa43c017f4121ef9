/*
 * blob_cache.c - a bounded local disk cache in front of a remote blob store.
 *
 * Blobs are immutable and named by their SHA-256, so a copy kept on a read
 * service's own disk never goes stale: a hit is a local file sent with
 * sendfile instead of a download from a storage node. A deleted image stops
 * being served by its metadata lookup, not by this cache; a blob released
 * through this store is dropped from it too. Invariant: used <= cap after
 * every insertion (least recently used copies are removed first); the cache
 * directory is emptied at start, so a crash leaves nothing to trust.
 *
 * The index is core/lru with one stripe, weighed in bytes, so the bound is
 * exact. Files are unlinked after the LRU's lock is released; a copy written
 * again in that window can lose its file, and the next read then finds it
 * missing and fetches it anew, as for any copy that vanished.
 */
#include "store/blob_cache.h"

#include "core/crypto.h"
#include "core/err.h"
#include "core/log.h"
#include "core/lru.h"
#include "core/metrics.h"
#include "core/xalloc.h"
#include "store/blob_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct bc {
    struct blob_store *inner;
    char *root;
    uint64_t cap;
    struct lru *lru; /* key -> size, weighed in bytes, one stripe: used <= cap exactly */
};

static struct metric m_hits = {"tessera_blob_cache_hits_total",
                               "Blob reads served from the local blob cache.", "counter", 0};
static struct metric m_misses = {"tessera_blob_cache_misses_total",
                                 "Blob reads fetched from the storage shards.", "counter", 0};
static struct metric m_bytes = {"tessera_blob_cache_bytes", "Bytes held by the local blob cache.",
                                "gauge", 0};
static struct metric m_evictions = {"tessera_blob_cache_evictions_total",
                                    "Blobs removed from the local cache to stay under its size.",
                                    "counter", 0};

static void bc_path(const struct bc *c, const char *key, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%.2s/%s", c->root, key, key);
}

/* bc_unlink removes key's copy; a cache file that is already gone is fine. */
static void bc_unlink(struct bc *c, const char *key)
{
    char path[4200];

    bc_path(c, key, path, sizeof(path));
    unlink(path);
}

/* bc_evicted is the LRU's evict function: it runs outside the LRU's lock. */
static void bc_evicted(void *arg, const char *key, const void *value, uint64_t weight)
{
    (void)value;
    (void)weight;
    bc_unlink(arg, key);
    metric_add(&m_evictions, 1);
}

/* bc_copy copies size bytes of fd (from offset 0, fd's offset untouched) to a cache file. */
static int bc_copy(struct bc *c, const char *key, int fd, uint64_t size)
{
    char tmp[4200], dir[4200], path[4200];
    loff_t in_off = 0;
    uint64_t left = size;
    int out = -1;
    int rc = OK;

    snprintf(dir, sizeof(dir), "%s/tmp", c->root);
    if (blob_tmp_name(dir, tmp, sizeof(tmp)) != OK) {
        tmp[0] = '\0';
        rc = E_IO;
        goto out;
    }
    out = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (out < 0) {
        rc = E_IO;
        goto out;
    }
    while (left > 0) {
        ssize_t n = copy_file_range(fd, &in_off, out, NULL, left, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = E_IO;
            goto out;
        }
        left -= (uint64_t)n;
    }
    snprintf(dir, sizeof(dir), "%s/%.2s", c->root, key);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        rc = E_IO;
        goto out;
    }
    bc_path(c, key, path, sizeof(path));
    if (rename(tmp, path) != 0)
        rc = E_IO;
out:
    if (out >= 0)
        close(out);
    if (rc != OK && tmp[0] != '\0')
        unlink(tmp);
    return rc;
}

/* bc_peek opens the local copy of key: OK (a hit, counted) or E_AGAIN (none: only bc_open can
 * tell). */
static int bc_peek(void *be, const char *key, int *fd, uint64_t *size)
{
    struct bc *c = be;
    char path[4200];
    struct stat st;

    if (lru_get(c->lru, key, 0, size) != LRU_VALUE)
        return E_AGAIN;
    bc_path(c, key, path, sizeof(path));
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd >= 0 && fstat(*fd, &st) == 0) {
        *size = (uint64_t)st.st_size;
        metric_add(&m_hits, 1);
        return OK;
    }
    if (*fd >= 0)
        close(*fd);
    *fd = -1; /* evicted meanwhile */
    return E_AGAIN;
}

static int bc_open(void *be, const char *key, int *fd, uint64_t *size)
{
    struct bc *c = be;
    int rc;

    if (bc_peek(c, key, fd, size) == OK)
        return OK;
    metric_add(&m_misses, 1);
    rc = blob_open(c->inner, key, fd, size);
    if (rc != OK || *size > c->cap / 8)
        return rc;
    if (bc_copy(c, key, *fd, *size) != OK)
        return OK; /* the read itself succeeded: serve it uncached */
    /* refused only past the bounds, which size <= cap / 8 keeps clear: keep nothing unindexed */
    if (!lru_put_weighted(c->lru, key, size, *size, LRU_NEVER, 0, true))
        bc_unlink(c, key);
    atomic_store(&m_bytes.value, (int64_t)lru_weight(c->lru));
    return OK;
}

static void bc_forget(struct bc *c, const char *key)
{
    if (lru_del(c->lru, key))
        bc_unlink(c, key);
    atomic_store(&m_bytes.value, (int64_t)lru_weight(c->lru));
}

static int bc_del(void *be, const char *key)
{
    struct bc *c = be;

    bc_forget(c, key);
    return blob_delete(c->inner, key);
}

static int bc_put_path(void *be, const char *key, const char *src_path)
{
    return blob_put_path(((struct bc *)be)->inner, key, src_path);
}

static int bc_exists(void *be, const char *key, bool *exists)
{
    return blob_exists(((struct bc *)be)->inner, key, exists);
}

static int bc_tmp_path(void *be, char *buf, size_t cap)
{
    return blob_tmp_path(((struct bc *)be)->inner, buf, cap);
}

static int bc_check(void *be)
{
    return blob_store_check(((struct bc *)be)->inner);
}

static void bc_why(void *be, char *buf, size_t cap)
{
    blob_store_why(((struct bc *)be)->inner, buf, cap);
}

static size_t bc_shards(void *be, struct blob_shard_state *out, size_t cap, char *epoch)
{
    return blob_store_shards(((struct bc *)be)->inner, out, cap, epoch);
}

static int bc_list(void *be, const char *after, struct blob_entry *out, size_t cap, size_t *n)
{
    return blob_list(((struct bc *)be)->inner, after, out, cap, n);
}

static bool bc_may_block(void *be)
{
    return blob_store_may_block(((struct bc *)be)->inner);
}

static void bc_free(void *be)
{
    struct bc *c = be;

    if (c == NULL)
        return;
    lru_free(c->lru);
    blob_store_free(c->inner);
    free(c->root);
    free(c);
}

static const struct blob_ops bc_ops = {
    .name = "cache",
    .free = bc_free,
    .put_path = bc_put_path,
    .open = bc_open,
    .exists = bc_exists,
    .del = bc_del,
    .tmp_path = bc_tmp_path,
    .check = bc_check,
    .why = bc_why,
    .list = bc_list,
    .may_block = bc_may_block,
    .shards = bc_shards,
    .peek = bc_peek,
};

static int bc_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    if (ftw->level > 0)
        remove(path);
    return 0;
}

int blob_cache_open(struct blob_store *inner, const char *dir, uint64_t cap,
                    struct blob_store **out)
{
    struct bc *c;
    char tmp[4200];

    *out = NULL;
    if (dir == NULL || dir[0] != '/' || cap == 0)
        return E_INVALID;
    /* a previous run's copies are not indexed: start empty */
    nftw(dir, bc_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    snprintf(tmp, sizeof(tmp), "%s/tmp", dir);
    if ((mkdir(dir, 0755) != 0 && errno != EEXIST) || (mkdir(tmp, 0755) != 0 && errno != EEXIST)) {
        log_error("store", "cannot create the blob cache \"%s\": %s", dir, strerror(errno));
        return E_IO;
    }
    c = xcalloc(1, sizeof(*c));
    c->inner = inner;
    c->root = xstrdup(dir);
    c->cap = cap;
    c->lru = lru_new(&(struct lru_opts){
        .max_weight = cap,
        .value_size = sizeof(uint64_t),
        .key_max = SHA256_HEX,
        .stripes = 1,
        .evict = bc_evicted,
        .evict_arg = c,
    });
    metric_register(&m_hits);
    metric_register(&m_misses);
    metric_register(&m_bytes);
    metric_register(&m_evictions);
    atomic_store(&m_bytes.value, 0); /* a new cache starts empty (the directory was emptied) */
    *out = blob_store_new(&bc_ops, c);
    log_info("store", "local blob cache: %s, up to %llu MiB", dir, (unsigned long long)(cap >> 20));
    return OK;
}
