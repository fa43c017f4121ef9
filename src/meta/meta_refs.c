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
    struct meta_variant_ref *rend = xmalloc(META_VARIANTS_PER_IMAGE * sizeof(*rend));
    size_t nrend = 0;
    char key[SHA256_HEX], format[META_FORMAT_MAX], purge[META_JOB_PAYLOAD_MAX];
    int rc = tx->ops->image_mark_deleted(tx, d->id, key, format);

    d->got.n = 0;
    if (rc != OK)
        goto out;
    meta_keys_add(&k, key);
    /* the renditions' names, for purgers that purge by URL, before their rows go */
    rc = tx->ops->renditions_of(tx, d->id, META_VARIANTS_PER_IMAGE, rend, &nrend);
    if (rc != OK)
        goto out;
    rc = tx->ops->variants_drop(tx, d->id, &k);
    if (rc != OK)
        goto out;
    /* the CDN purge first: it is what stands between the delete and a 404 at the edge */
    snprintf(purge, sizeof(purge), "%s:%s", d->id, format);
    rc = tx->ops->job_insert(tx, META_JOB_PURGE, purge, 0);
    for (size_t i = 0; i < nrend && rc == OK; i++) {
        snprintf(purge, sizeof(purge), "%.*s/t/%.*s", IMAGE_ID_MAX, d->id, META_VARIANT_MAX - 1,
                 rend[i].name);
        rc = tx->ops->job_insert(tx, META_JOB_PURGE_RENDITION, purge, 0);
    }
    if (rc == OK)
        rc = unref_sorted(tx, &k, &d->got);
out:
    free(rend);
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

/* ---- renditions: recency, the disk budget, making leases ---- */

struct touch {
    const struct meta_variant_ref *refs;
    size_t n;
    int64_t now;
};

static int touch_body(struct meta_tx *tx, void *arg)
{
    struct touch *t = arg;
    int rc = OK;

    for (size_t i = 0; i < t->n && rc == OK; i++)
        rc = tx->ops->variant_touch(tx, &t->refs[i], t->now);
    return rc;
}

int meta_refs_variants_touch(struct meta_store *ms, const struct meta_variant_ref *refs, size_t n,
                             int64_t now)
{
    struct touch t = {refs, n, now};

    return ms->tx->write(ms->be, touch_body, &t);
}

/* Leases left by a maker that died are dropped this long after they ran out. */
#define LEASE_STALE_MS (10 * 60 * 1000)

struct evict {
    uint64_t budget;
    struct meta_evicted *e;
};

/* evict_body may run again (a serialization failure): it starts from nothing each time. */
static int evict_body(struct meta_tx *tx, void *arg)
{
    struct evict *ev = arg;
    struct meta_evicted *e = ev->e;
    uint64_t budget = ev->budget;
    struct meta_variant_ref cand[META_EVICT_MAX];
    uint64_t bytes[META_EVICT_MAX];
    struct meta_keys k = {0};
    bool got = false;
    size_t n = 0;
    int rc = tx->ops->evict_lock(tx, &got);

    e->total = e->bytes = 0;
    e->n = 0;
    e->skipped = !got;
    if (rc != OK || !got)
        goto out;
    rc = tx->ops->leases_drop_stale(tx, meta_now_ms() - LEASE_STALE_MS);
    if (rc == OK)
        rc = tx->ops->renditions_bytes(tx, &e->total);
    if (rc != OK || e->total <= budget)
        goto out;
    rc = tx->ops->renditions_oldest(tx, META_EVICT_MAX, cand, bytes, &n);
    for (size_t i = 0; i < n && rc == OK && e->total - e->bytes > budget; i++) {
        char key[SHA256_HEX], payload[META_JOB_PAYLOAD_MAX];
        rc = tx->ops->variant_delete(tx, &cand[i], key);
        if (rc == E_NOTFOUND) {
            rc = OK;
            continue;
        }
        if (rc != OK)
            break;
        meta_keys_add(&k, key);
        e->bytes += bytes[i];
        e->ref[e->n++] = cand[i];
        snprintf(payload, sizeof(payload), "%.*s/t/%.*s", IMAGE_ID_MAX, cand[i].image_id,
                 META_VARIANT_MAX - 1, cand[i].name);
        rc = tx->ops->job_insert(tx, META_JOB_PURGE_RENDITION, payload, 0);
    }
    if (rc == OK)
        rc = unref_sorted(tx, &k, NULL);
out:
    meta_keys_release(&k);
    return rc;
}

int meta_refs_renditions_evict(struct meta_store *ms, uint64_t budget, struct meta_evicted *out)
{
    struct evict ev = {budget, out};
    int rc;

    memset(out, 0, sizeof(*out));
    rc = ms->tx->write(ms->be, evict_body, &ev);
    if (rc != OK)
        memset(out, 0, sizeof(*out));
    return rc;
}

struct lease {
    const struct meta_variant_ref *v;
    int64_t holder;
    int64_t until_ms;
    bool got;
};

static int lease_take_body(struct meta_tx *tx, void *arg)
{
    struct lease *l = arg;

    return tx->ops->lease_take(tx, l->v, l->holder, l->until_ms, meta_now_ms(), &l->got);
}

int meta_refs_lease_take(struct meta_store *ms, const struct meta_variant_ref *v, int64_t holder,
                         int64_t until_ms, bool *got)
{
    struct lease l = {v, holder, until_ms, false};
    int rc = ms->tx->write(ms->be, lease_take_body, &l);

    *got = rc == OK && l.got;
    return rc;
}

static int lease_drop_body(struct meta_tx *tx, void *arg)
{
    struct lease *l = arg;

    return tx->ops->lease_drop(tx, l->v, l->holder);
}

int meta_refs_lease_drop(struct meta_store *ms, const struct meta_variant_ref *v, int64_t holder)
{
    struct lease l = {v, holder, 0, false};

    return ms->tx->write(ms->be, lease_drop_body, &l);
}
