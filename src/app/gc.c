/*
 * gc.c - `tessera gc`: stale pins, unused blobs, orphan bytes, dead variants, dead jobs.
 *
 * The invariant it keeps is app.c's: bytes are removed only while a
 * transaction holds the key (the blob row's lock, or a claim where no row
 * exists) and no reference or pin names it, so an upload that pins the key
 * either comes first (gc keeps the bytes) or waits and writes them again.
 * The grace on stored bytes (mtime) is a second fence, not the first.
 */
#include "app/gc.h"

#include "config/config.h"
#include "core/err.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/xalloc.h"
#include "meta/meta.h"
#include "store/blob.h"
#include "store/blob_ring.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GC_PAGE          512 /* blobs rows or stored blobs per listing page */
#define GC_VARIANT_BATCH 256 /* variants rows dropped per transaction */

void gc_opts_from_config(const struct config *cfg, bool apply, struct gc_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->apply = apply;
    o->now = (int64_t)time(NULL);
    o->grace_s = cfg->storage.repair_grace_ms / 1000;
    o->pin_grace_s = cfg->storage.pin_grace_ms / 1000;
    o->dead_retention_ms = cfg->jobs.dead_retention_ms;
}

static int delete_fn(void *arg, const char *key)
{
    return blob_delete(arg, key);
}

static void tally(struct gc_tally *t, uint64_t bytes)
{
    t->n++;
    t->bytes += bytes;
}

/* gc_rows releases the unused blobs rows, page by page, each under its row lock. */
static int gc_rows(struct meta_store *meta, struct blob_store *blobs, const struct gc_opts *o,
                   struct progress *p, struct gc_report *r)
{
    struct meta_blob *page = xmalloc(GC_PAGE * sizeof(*page));
    char after[SHA256_HEX] = "";
    size_t n = 0;
    int rc;

    do {
        rc = meta_blob_list_unused(meta, after, o->now - o->grace_s, page, GC_PAGE, &n);
        for (size_t i = 0; rc == OK && i < n; i++) {
            int brc = meta_blob_release(meta, page[i].key, delete_fn, blobs);
            if (brc == OK) {
                tally(&r->unused, page[i].bytes);
            } else if (brc == E_EXISTS) {
                r->in_use++;
            } else {
                r->errors++;
                progress_note(p, "blob %s: not released (%s)", page[i].key, err_str(brc));
            }
            progress_add(p, 1, page[i].bytes);
        }
        if (rc == OK && n > 0)
            memcpy(after, page[n - 1].key, sizeof(after));
    } while (rc == OK && n == GC_PAGE);
    free(page);
    return rc;
}

/* gc_orphan decides about one stored blob of store (a shard, or the whole store). */
static void gc_orphan(struct meta_store *meta, struct blob_store *blobs, const struct gc_opts *o,
                      const struct blob_entry *e, struct progress *p, struct gc_report *r)
{
    struct meta_blob row;
    int rc;

    if (e->mtime > o->now - o->grace_s) {
        /* young: perhaps an upload between its pin and its row, or a crash just now */
        if (meta_blob_get(meta, e->key, &row) == E_NOTFOUND)
            tally(&r->young, e->size);
        return;
    }
    if (!o->apply) {
        rc = meta_blob_get(meta, e->key, &row);
        if (rc == E_NOTFOUND)
            tally(&r->orphans, e->size);
        else if (rc != OK)
            r->errors++;
        return;
    }
    /* The whole store: on a ring every copy goes, under one claim. */
    rc = meta_blob_get(meta, e->key, &row);
    if (rc == E_NOTFOUND)
        rc = meta_blob_collect_orphan(meta, e->key, delete_fn, blobs);
    else if (rc == OK)
        return; /* a row names it: references, pins and release decide */
    if (rc == OK) {
        tally(&r->orphans, e->size);
    } else if (rc == E_EXISTS) {
        r->in_use++;
    } else {
        r->errors++;
        progress_note(p, "orphan %s: not removed (%s)", e->key, err_str(rc));
    }
}

struct gc_walk {
    struct meta_store *meta;
    struct blob_store *blobs;
    const struct gc_opts *o;
    struct progress *p;
    struct gc_report *r;
};

static int gc_orphan_each(void *arg, const struct blob_entry *e)
{
    struct gc_walk *w = arg;

    gc_orphan(w->meta, w->blobs, w->o, e, w->p, w->r);
    progress_add(w->p, 1, e->size);
    return OK;
}

/* gc_orphans lists one store (a ring shard or the store) and collects what no row names. */
static int gc_orphans(struct meta_store *meta, struct blob_store *blobs, struct blob_store *listed,
                      const struct gc_opts *o, struct progress *p, struct gc_report *r)
{
    struct gc_walk w = {meta, blobs, o, p, r};

    return blob_each(listed, gc_orphan_each, &w);
}

int gc_run(struct meta_store *meta, struct blob_store *blobs, const struct gc_opts *o,
           struct progress *p, struct gc_report *r)
{
    struct meta_gc_cutoffs cut = {o->now - o->grace_s, o->now - o->pin_grace_s,
                                  o->now * 1000 - o->dead_retention_ms};
    struct meta_gc_counts c;
    int64_t n = 0;
    uint64_t bytes = 0;
    int rc;

    memset(r, 0, sizeof(*r));
    rc = meta_gc_count(meta, &cut, &c);
    if (rc != OK)
        goto out;
    r->stale_pins = (struct gc_tally){c.stale_pins, c.stale_pin_bytes};

    progress_phase(p, "jobs", (uint64_t)c.dead_jobs, 0);
    if (o->apply) {
        rc = meta_job_purge_dead(meta, cut.job_before_ms, &r->jobs.n);
        if (rc != OK)
            goto out;
    } else {
        r->jobs.n = c.dead_jobs;
    }
    progress_add(p, (uint64_t)r->jobs.n, 0);
    progress_flush(p);

    progress_phase(p, "variants", (uint64_t)c.dead_variants, c.dead_variant_bytes);
    if (o->apply) {
        do {
            rc = meta_variants_drop_dead(meta, GC_VARIANT_BATCH, &n, &bytes);
            if (rc != OK)
                goto out;
            r->variants.n += n;
            r->variants.bytes += bytes;
            progress_add(p, (uint64_t)n, bytes);
        } while (n == GC_VARIANT_BATCH);
    } else {
        r->variants = (struct gc_tally){c.dead_variants, c.dead_variant_bytes};
    }
    progress_flush(p);

    progress_phase(p, "pins", (uint64_t)c.stale_pins, c.stale_pin_bytes);
    if (o->apply) {
        rc = meta_blob_unpin_stale(meta, cut.pinned_before, &r->stale_pins.n);
        if (rc != OK)
            goto out;
    }
    progress_add(p, (uint64_t)r->stale_pins.n, r->stale_pins.bytes);
    progress_flush(p);

    progress_phase(p, "blobs", (uint64_t)c.unused, c.unused_bytes);
    if (o->apply) {
        rc = gc_rows(meta, blobs, o, p, r);
        if (rc != OK)
            goto out;
    } else {
        r->unused = (struct gc_tally){c.unused, c.unused_bytes};
        progress_add(p, (uint64_t)c.unused, c.unused_bytes);
    }
    progress_flush(p);

    progress_phase(p, "orphans", 0, 0);
    if (blob_ring_shard(blobs, 0) == NULL) {
        rc = gc_orphans(meta, blobs, blobs, o, p, r);
        if (rc == E_UNSUPPORTED) {
            progress_note(p, "the blob store cannot be listed: orphan bytes left alone");
            rc = OK;
        }
    } else {
        struct blob_store *shard;
        for (size_t i = 0; (shard = blob_ring_shard(blobs, i)) != NULL; i++) {
            int src = gc_orphans(meta, blobs, shard, o, p, r);
            if (src != OK) {
                r->errors++;
                progress_note(p, "shard %zu: cannot list (%s): its copies are left alone", i,
                              err_str(src));
            }
        }
    }
    progress_flush(p);
out:
    if (rc != OK)
        log_error("gc", "stopped: %s (run it again: every step is idempotent)", err_str(rc));
    return rc;
}
