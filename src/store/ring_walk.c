/*
 * ring_walk.c - listing every shard of a ring store; copies checked against their key.
 *
 * A copy is only ever made from a source whose bytes hash to its key, so
 * repair and rebalance never spread a corrupt copy.
 */
#include "store/ring_walk.h"

#include "core/codec.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/progress.h"
#include "core/xalloc.h"
#include "store/blob.h"
#include "store/blob_ring.h"
#include "store/ring.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int walk_cmp_copy(const void *a, const void *b)
{
    const struct ring_copy *x = a, *y = b;
    int c = strcmp(x->key, y->key);

    return c != 0 ? c : (x->shard > y->shard) - (x->shard < y->shard);
}

struct walk {
    struct ring_listing *l;
    unsigned shard;
    size_t total;
};

static int walk_add(void *arg, const struct blob_entry *e)
{
    struct walk *w = arg;
    struct ring_listing *l = w->l;

    if (l->n == l->alloc) {
        l->alloc = l->alloc ? 2 * l->alloc : 4096;
        l->v = xrealloc(l->v, l->alloc * sizeof(*l->v));
    }
    struct ring_copy *c = &l->v[l->n++];
    memcpy(c->key, e->key, sizeof(c->key));
    c->shard = w->shard;
    c->size = e->size;
    c->mtime = e->mtime;
    w->total++;
    return OK;
}

int ring_walk_list(struct blob_store *store, struct ring_listing *l, struct progress *p)
{
    const struct ring *ring = blob_ring_ring(store);
    size_t failed = 0;

    if (ring == NULL)
        return E_INVALID;
    l->nshards = ring->n;
    l->listed = xcalloc(ring->n, sizeof(*l->listed));
    progress_phase(p, "listing", ring->n, 0);
    for (size_t s = 0; s < ring->n; s++) {
        struct walk w = {l, (unsigned)s, 0};
        int rc = blob_each(blob_ring_shard(store, s), walk_add, &w);
        if (rc != OK) {
            progress_note(p, "shard %s: cannot list (%s): its copies are left alone this run",
                          ring->shards[s].id, err_str(rc));
            failed++;
        } else {
            l->listed[s] = true;
            progress_note(p, "shard %s: %zu blobs", ring->shards[s].id, w.total);
        }
        progress_add(p, 1, 0);
    }
    progress_flush(p);
    qsort(l->v, l->n, sizeof(*l->v), walk_cmp_copy);
    l->nkeys = 0;
    for (size_t i = 0; i < l->n; i = ring_walk_group(l, i))
        l->nkeys++;
    return failed == 0 ? OK : E_UNAVAILABLE;
}

void ring_walk_release(struct ring_listing *l)
{
    free(l->v);
    free(l->listed);
    memset(l, 0, sizeof(*l));
}

size_t ring_walk_group(const struct ring_listing *l, size_t i)
{
    size_t j = i;

    while (j < l->n && strcmp(l->v[j].key, l->v[i].key) == 0)
        j++;
    return j;
}

bool ring_walk_has(const struct ring_listing *l, const char *key)
{
    size_t lo = 0, hi = l->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(l->v[mid].key, key);
        if (c == 0)
            return true;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

int ring_walk_verify(struct blob_store *bs, const char *key, int *fd_out)
{
    uint8_t d[SHA256_LEN];
    char hex[SHA256_HEX];
    uint64_t size;
    int fd = -1;
    int rc = blob_open(bs, key, &fd, &size);

    if (rc != OK)
        goto out;
    rc = sha256_fd(fd, d);
    if (rc != OK)
        goto out;
    hex_encode(d, SHA256_LEN, hex);
    if (strcmp(hex, key) != 0) {
        rc = E_NOTFOUND;
        goto out;
    }
    if (fd_out != NULL) {
        *fd_out = fd;
        fd = -1;
    }
out:
    if (fd >= 0)
        close(fd);
    return rc;
}

int ring_walk_copy(struct blob_store *bs, const char *key, int fd)
{
    char path[64];

    /* the path of an open descriptor: blob_put_path reads it like any file */
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    return blob_put_path(bs, key, path);
}
