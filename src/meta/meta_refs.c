/*
 * meta_refs.c - the reference-counting protocols, written once above the
 * engines (as SQLite keeps its B-tree above the VFS).
 *
 * A blobs row counts its references (image and variant rows naming the key)
 * and its pins (uploads in flight). Invariants kept here for every backend:
 * a row's bytes are removed only in a transaction that holds the row (or a
 * claim on the key) and sees no reference and no pin; every change that can
 * leave a row with neither queues a "release" job in the same transaction
 * (transactional outbox). The backends provide only the statements
 * (struct meta_tx_ops) and the transaction around them.
 */
#include "core/err.h"
#include "core/log.h"
#include "core/xalloc.h"
#include "meta/meta_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void meta_keys_add(struct meta_keys *k, const char *key)
{
    if (k->n == k->cap) {
        k->cap = k->cap ? 2 * k->cap : 16;
        k->v = xrealloc(k->v, k->cap * sizeof(*k->v));
    }
    snprintf(k->v[k->n++], SHA256_HEX, "%s", key);
}

void meta_keys_release(struct meta_keys *k)
{
    free(k->v);
    memset(k, 0, sizeof(*k));
}

static int key_cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

/*
 * unref drops one reference on key; at zero (and no pin) it queues the
 * release and reports the key in rel (when given): the row stays until that
 * job removed the bytes. A missing row is logged (an inconsistency) and
 * skipped, so a delete still goes through.
 */
static int unref(struct meta_tx *tx, const char *key, struct meta_released *rel)
{
    int64_t refs = 0, pins = 0;
    int rc = tx->ops->blob_unref(tx, key, &refs, &pins);

    if (rc == E_NOTFOUND) {
        log_warn("meta", "blob '%s' had no reference row", key);
        return OK;
    }
    if (rc != OK || refs > 0)
        return rc;
    if (pins == 0)
        rc = tx->ops->job_insert(tx, META_JOB_RELEASE, key, 0);
    if (rc == OK && rel != NULL && rel->n < META_RELEASE_MAX)
        memcpy(rel->keys[rel->n++], key, SHA256_HEX);
    return rc;
}

/* unref_sorted unreferences every key in one order: transactions that lock blob rows in the
 * same order cannot deadlock. */
static int unref_sorted(struct meta_tx *tx, struct meta_keys *k, struct meta_released *rel)
{
    int rc = OK;

    if (k->n > 1)
        qsort(k->v, k->n, sizeof(*k->v), key_cmp);
    for (size_t i = 0; i < k->n && rc == OK; i++)
        rc = unref(tx, k->v[i], rel);
    return rc;
}

/* ---- image insert: the row, a reference on its blob, its variants job ---- */

static int insert_body(struct meta_tx *tx, void *arg)
{
    struct image_rec *img = arg;
    int rc = tx->ops->image_insert(tx, img);

    if (rc == OK)
        rc = tx->ops->blob_ref(tx, img->key, img->bytes);
    if (rc == OK)
        rc = tx->ops->job_insert(tx, META_JOB_VARIANTS, img->id, 0);
    return rc;
}

int meta_refs_image_insert(struct meta_store *ms, struct image_rec *img)
{
    int rc = ms->tx->write(ms->be, insert_body, img);

    if (rc == OK && ms->tx->image_inserted != NULL)
        ms->tx->image_inserted(ms->be, img->id);
    return rc;
}

/* ---- image delete: tombstone, variants gone, purge job, one reference less per key ---- */

struct del {
    const char *id;
    struct meta_released got;
};

static int delete_body(struct meta_tx *tx, void *arg)
{
    struct del *d = arg;
    struct meta_keys k = {0};
    char key[SHA256_HEX], format[META_FORMAT_MAX], purge[META_JOB_PAYLOAD_MAX];
    int rc = tx->ops->image_mark_deleted(tx, d->id, key, format);

    d->got.n = 0;
    if (rc != OK)
        goto out;
    meta_keys_add(&k, key);
    rc = tx->ops->variants_drop(tx, d->id, &k);
    if (rc != OK)
        goto out;
    /* the CDN purge first: it is what stands between the delete and a 404 at the edge */
    snprintf(purge, sizeof(purge), "%s:%s", d->id, format);
    rc = tx->ops->job_insert(tx, META_JOB_PURGE, purge, 0);
    if (rc == OK)
        rc = unref_sorted(tx, &k, &d->got);
out:
    meta_keys_release(&k);
    return rc;
}

int meta_refs_image_delete(struct meta_store *ms, const char *id, struct meta_released *rel)
{
    struct del d = {.id = id};
    int rc = ms->tx->write(ms->be, delete_body, &d);

    if (rc == OK)
        *rel = d.got;
    return rc;
}

/* ---- variant put: recorded once, on a live image, one reference on its blob ---- */

static int variant_body(struct meta_tx *tx, void *arg)
{
    const struct variant_rec *v = arg;
    bool inserted = false;
    int64_t n = 0;
    /* the image row is locked against a delete (or this sees the delete) */
    int rc = tx->ops->image_live(tx, v->image_id);

    if (rc == OK)
        rc = tx->ops->variant_insert(tx, v, &inserted);
    if (rc != OK || !inserted)
        return rc; /* already recorded: nothing changes */
    rc = tx->ops->variant_count(tx, v->image_id, &n);
    /* bounded so that a delete can report every blob it releases */
    if (rc == OK && n > META_VARIANTS_PER_IMAGE)
        rc = E_TOOBIG;
    if (rc == OK)
        rc = tx->ops->blob_ref(tx, v->key, v->bytes);
    return rc;
}

int meta_refs_variant_put(struct meta_store *ms, const struct variant_rec *v)
{
    return ms->tx->write(ms->be, variant_body, (void *)v);
}

/* ---- pins ---- */

struct pin {
    const char *key;
    uint64_t bytes;
    meta_release_fn *fn;
    void *arg;
};

static int pin_body(struct meta_tx *tx, void *arg)
{
    struct pin *p = arg;

    return tx->ops->blob_pin(tx, p->key, p->bytes);
}

int meta_refs_blob_pin(struct meta_store *ms, const char *key, uint64_t bytes)
{
    struct pin p = {key, bytes, NULL, NULL};

    return ms->tx->write(ms->be, pin_body, &p);
}

static int unpin_body(struct meta_tx *tx, void *arg)
{
    struct pin *p = arg;
    int64_t refs = 0, pins = 0;
    int rc = tx->ops->blob_unpin(tx, p->key, &refs, &pins);

    if (rc == E_NOTFOUND) {
        log_warn("meta", "blob '%s' was not pinned", p->key);
        return OK;
    }
    if (rc == OK && refs == 0 && pins == 0)
        rc = tx->ops->job_insert(tx, META_JOB_RELEASE, p->key, 0);
    return rc;
}

int meta_refs_blob_unpin(struct meta_store *ms, const char *key)
{
    struct pin p = {key, 0, NULL, NULL};

    return ms->tx->write(ms->be, unpin_body, &p);
}

/* ---- release: the bytes go under the row's lock, while no reference or pin is left ---- */

static int release_body(struct meta_tx *tx, void *arg)
{
    struct pin *p = arg;
    int64_t refs = 0, pins = 0;
    int rc = tx->ops->blob_lock(tx, p->key, &refs, &pins);

    if (rc == E_NOTFOUND)
        return OK; /* already released */
    if (rc != OK)
        return rc;
    if (refs != 0 || pins != 0)
        return E_EXISTS;
    rc = p->fn(p->arg, p->key);
    if (rc == OK)
        rc = tx->ops->blob_drop(tx, p->key);
    return rc;
}

int meta_refs_blob_release(struct meta_store *ms, const char *key, meta_release_fn *fn, void *arg)
{
    struct pin p = {key, 0, fn, arg};

    return ms->tx->write(ms->be, release_body, &p);
}

/* ---- garbage collection ---- */

/* A claim on key (a row or the writer lock) makes a concurrent pin wait until fn is done. */
static int orphan_body(struct meta_tx *tx, void *arg)
{
    struct pin *p = arg;
    int rc = tx->ops->blob_claim(tx, p->key);

    if (rc != OK)
        return rc; /* E_EXISTS: pinned or referenced meanwhile, not an orphan */
    rc = p->fn(p->arg, p->key);
    if (rc == OK)
        rc = tx->ops->blob_drop(tx, p->key);
    return rc;
}

int meta_refs_blob_collect_orphan(struct meta_store *ms, const char *key, meta_release_fn *fn,
                                  void *arg)
{
    struct pin p = {key, 0, fn, arg};

    return ms->tx->write(ms->be, orphan_body, &p);
}

struct stale {
    int64_t before;
    int64_t reset;
};

static int stale_body(struct meta_tx *tx, void *arg)
{
    struct stale *s = arg;
    struct meta_keys k = {0};
    int rc = tx->ops->blob_unpin_stale(tx, s->before, &k, &s->reset);

    /* as an unpin: a row left with no reference and no pin queues its release */
    for (size_t i = 0; i < k.n && rc == OK; i++)
        rc = tx->ops->job_insert(tx, META_JOB_RELEASE, k.v[i], 0);
    meta_keys_release(&k);
    return rc;
}

int meta_refs_blob_unpin_stale(struct meta_store *ms, int64_t pinned_before, int64_t *n)
{
    struct stale s = {.before = pinned_before};
    int rc = ms->tx->write(ms->be, stale_body, &s);

    *n = rc == OK ? s.reset : 0;
    return rc;
}

struct dead {
    size_t limit;
    size_t n;
    uint64_t bytes;
};

static int dead_body(struct meta_tx *tx, void *arg)
{
    struct dead *d = arg;
    struct meta_keys k = {0};
    int rc = tx->ops->variants_drop_dead(tx, d->limit, &k, &d->bytes);

    d->n = k.n;
    if (rc == OK)
        rc = unref_sorted(tx, &k, NULL);
    meta_keys_release(&k);
    return rc;
}

int meta_refs_variants_drop_dead(struct meta_store *ms, size_t limit, int64_t *n, uint64_t *bytes)
{
    struct dead d = {.limit = limit};
    int rc = ms->tx->write(ms->be, dead_body, &d);

    *n = rc == OK ? (int64_t)d.n : 0;
    *bytes = rc == OK ? d.bytes : 0;
    return rc;
}
