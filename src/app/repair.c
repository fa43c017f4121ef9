/*
 * repair.c - every key of every shard to its homes, every image to a blob.
 *
 * Works from the shards' own listings (every copy, home, hinted or stray) and
 * from the reference counts of the metadata, so it never removes a blob an
 * image still names. Blobs stored after the listings were taken are asked
 * for again before they are called lost.
 */
#include "app/repair.h"

#include "app/ring_state.h"
#include "app/runtime.h"
#include "core/codec.h"
#include "core/err.h"
#include "core/progress.h"
#include "core/xalloc.h"
#include "meta/meta.h"
#include "store/blob.h"
#include "store/blob_ring.h"
#include "store/ring_walk.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REPAIR_PAGE           1000
#define REPAIR_QUARANTINE_MAX 10000 /* a node lists at most this many */

/*
 * repair_missing tells whether key is in no shard's listing and, asked again
 * now, on no shard: uploads and variants made while repair runs are not lost.
 */
static bool repair_missing(struct blob_store *store, const struct ring_listing *l, const char *key)
{
    bool exists = false;

    if (ring_walk_has(l, key))
        return false;
    return blob_exists(store, key, &exists) != OK || !exists;
}

/* repair_check_meta counts as lost the images whose blob or a variant's is on no shard. */
static int repair_check_meta(const struct runtime *rt, const struct ring_listing *l,
                             struct progress *p, struct repair_result *res)
{
    const struct config *cfg = rt->cfg;
    struct image_rec *imgs = xmalloc(REPAIR_PAGE * sizeof(*imgs));
    int64_t before = 0;
    size_t n = 0;
    int rc;

    progress_phase(p, "checking", 0, 0);
    do {
        rc = meta_image_list(rt->meta, before, REPAIR_PAGE, imgs, &n);
        for (size_t i = 0; rc == OK && i < n; i++) {
            res->images_checked++;
            if (repair_missing(rt->blobs, l, imgs[i].key)) {
                progress_note(p, "image %s: blob %s is on no shard: lost", imgs[i].id, imgs[i].key);
                res->k.lost++;
            }
            for (size_t v = 0; v < cfg->n_variants; v++) {
                struct variant_rec vr;
                if (meta_variant_get(rt->meta, imgs[i].id, cfg->variant[v].name, &vr) == OK &&
                    repair_missing(rt->blobs, l, vr.key)) {
                    progress_note(p, "image %s: variant %s blob %s is on no shard: lost",
                                  imgs[i].id, vr.name, vr.key);
                    res->k.lost++;
                }
            }
            progress_add(p, 1, 0);
        }
        if (n > 0)
            before = imgs[n - 1].seq;
    } while (rc == OK && n == REPAIR_PAGE);
    free(imgs);
    progress_flush(p);
    progress_note(p, "%zu images checked against the listings", res->images_checked);
    return rc;
}

/*
 * repair_guard removes an orphan's copies only while the metadata allows it:
 * with no blobs row under gc's claim (an upload pinning the key waits, then
 * writes its bytes again), with a row through the release protocol (nothing
 * removed while referenced or pinned).
 */
static int repair_guard(void *arg, const char *key, int (*remove)(void *, const char *), void *rarg)
{
    struct meta_store *ms = arg;
    int rc = meta_blob_collect_orphan(ms, key, remove, rarg);

    if (rc == E_EXISTS)
        rc = meta_blob_release(ms, key, remove, rarg);
    return rc;
}

/*
 * repair_quarantine reports every copy a storage node's scrubber set aside (failed its
 * check). Its shard lists the key no more, so the walk above has already written a good
 * copy back to it when it is one of the key's homes; the quarantined file itself is the
 * operator's to remove.
 */
static void repair_quarantine(const struct runtime *rt, struct progress *p,
                              struct repair_result *res)
{
    const struct ring *ring = blob_ring_ring(rt->blobs);
    struct blob_entry *q = xmalloc(REPAIR_QUARANTINE_MAX * sizeof(*q));

    for (size_t s = 0; s < ring->n; s++) {
        struct blob_store *bs = blob_ring_shard(rt->blobs, (unsigned)s);
        size_t n = 0;
        int rc = blob_quarantined(bs, q, REPAIR_QUARANTINE_MAX, &n);
        if (rc == E_UNSUPPORTED)
            continue;
        if (rc != OK) {
            progress_note(p, "shard %s: cannot list its quarantine: %s", ring->shards[s].id,
                          err_str(rc));
            res->k.errors++;
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            bool there = false;
            blob_exists(bs, q[i].key, &there);
            progress_note(p,
                          "shard %s: quarantined copy of %s (%llu bytes, set aside at %lld by "
                          "the scrubber)%s",
                          ring->shards[s].id, q[i].key, (unsigned long long)q[i].size,
                          (long long)q[i].mtime, there ? ": a good copy is back on the shard" : "");
        }
        res->quarantined += n;
    }
    free(q);
}

static void clear_previous(const struct runtime *rt, struct progress *p)
{
    char *prev = NULL;

    if (ring_state_previous(rt->meta, &prev) == OK && prev[0] != '\0' &&
        ring_state_set_previous(rt->meta, NULL) == OK)
        progress_note(p, "every blob is on its home: the previous ring is no longer read");
    free(prev);
}

#define REPAIR_LAST "repair.last"

int repair_last_get(struct meta_store *meta, struct repair_last *out)
{
    char v[128];
    long long at, away, missing, lost;
    int rc = meta_setting_get(meta, REPAIR_LAST, v, sizeof(v));

    if (rc != OK)
        return rc;
    if (sscanf(v, "%lld %lld %lld %lld", &at, &away, &missing, &lost) != 4)
        return E_NOTFOUND; /* none recorded (or not in this form) */
    *out = (struct repair_last){at, away, missing, lost};
    return OK;
}

/* repair_last_record writes what a complete walk left (see struct repair_last). */
static void repair_last_record(const struct runtime *rt, bool dry_run,
                               const struct repair_result *res, struct progress *p)
{
    char v[128];

    snprintf(v, sizeof(v), "%lld %zu %zu %zu", (long long)time(NULL),
             dry_run ? res->k.moved_home : 0, dry_run ? res->k.restored : 0, res->k.lost);
    if (meta_setting_set(rt->meta, REPAIR_LAST, v) != OK)
        progress_note(p, "the result was not recorded for /metrics (metadata store unavailable)");
}

int repair_run(const struct runtime *rt, const struct repair_opts *o, struct progress *p,
               struct repair_result *res)
{
    struct ring_listing l = {0};
    struct ring_repair_opts ro = {o->dry_run, (int64_t)time(NULL),
                                  rt->cfg->storage.repair_grace_ms / 1000, repair_guard, rt->meta};
    const char *after = o->after != NULL ? o->after : "";
    int64_t t0 = time_mono_us();
    size_t todo = 0;
    int rc;

    memset(res, 0, sizeof(*res));
    progress_note(p, "listing %zu shards%s", blob_ring_ring(rt->blobs)->n,
                  o->dry_run ? " (dry run: nothing is changed)" : "");
    rc = ring_walk_list(rt->blobs, &l, p);
    for (size_t s = 0; s < l.nshards; s++)
        res->shards_unlisted += !l.listed[s];
    for (size_t i = 0, j; i < l.n; i = j) {
        j = ring_walk_group(&l, i);
        todo += strcmp(l.v[i].key, after) > 0;
    }
    progress_phase(p, "repairing", todo, 0);
    for (size_t i = 0, j; i < l.n; i = j) {
        int64_t refs = 0;
        j = ring_walk_group(&l, i);
        if (strcmp(l.v[i].key, after) <= 0)
            continue;
        if (meta_blob_refs(rt->meta, l.v[i].key, &refs) != OK)
            res->k.errors++;
        else
            ring_repair_key(rt->blobs, &l.v[i], j - i, refs, &ro, p, &res->k);
        res->k.keys++;
        progress_add(p, 1, l.v[i].size * (j - i));
        if (res->k.keys % 1000 == 0)
            progress_note(p, "%zu keys done, last %s (resume with --after it)", res->k.keys,
                          l.v[i].key);
    }
    progress_flush(p);
    if (repair_check_meta(rt, &l, p, res) != OK)
        res->k.errors++;
    repair_quarantine(rt, p, res);
    res->seconds = (double)(time_mono_us() - t0) / 1e6;
    if (res->shards_unlisted == 0 && res->k.errors == 0 && after[0] == '\0')
        repair_last_record(rt, o->dry_run, res, p);
    if (rc == OK && (res->k.lost > 0 || res->k.errors > 0))
        rc = E_IO;
    /* a complete run after `ring apply`: every blob is home, reads need no fallback now */
    if (rc == OK && !o->dry_run && (o->after == NULL || o->after[0] == '\0'))
        clear_previous(rt, p);
    ring_walk_release(&l);
    return rc;
}
