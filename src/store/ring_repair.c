/*
 * ring_repair.c - one key to exactly its home copies.
 *
 * A copy that cannot be read now (a shard down, an I/O error) is never
 * counted missing: it is left alone, and no copy elsewhere is removed for it.
 */
#include "store/ring_repair.h"

#include "core/err.h"
#include "core/progress.h"
#include "store/blob.h"
#include "store/blob_ring.h"
#include "store/ring.h"

#include <unistd.h>

struct orphan {
    struct blob_store *store;
    const struct ring_copy *copies;
    size_t n;
    struct ring_repair_counts *k;
};

/* orphan_remove deletes every listed copy of an orphan (called under the guard's claim). */
static int orphan_remove(void *arg, const char *key)
{
    struct orphan * or = arg;
    int rc = OK;

    (void)key;
    for (size_t i = 0; i < or->n; i++) {
        if (blob_delete(blob_ring_shard(or->store, or->copies[i].shard), or->copies[i].key) != OK) {
            or->k->errors++;
            rc = E_IO;
        } else {
            or->k->orphans_removed++;
        }
    }
    return rc;
}

/* repair_orphan removes an unreferenced key's copies once the youngest is past the grace. */
static void repair_orphan(struct blob_store *store, const struct ring_copy *copies, size_t n,
                          const struct ring_repair_opts *o, struct ring_repair_counts *k)
{
    struct orphan or = {store, copies, n, k};
    int64_t youngest = 0;

    for (size_t i = 0; i < n; i++)
        youngest = copies[i].mtime > youngest ? copies[i].mtime : youngest;
    /* No record names it: an upload that failed its quorum, a crash, a deleted image. */
    if (o->now - youngest < o->grace_s) {
        k->orphans_young++;
        return;
    }
    if (o->dry_run) {
        k->orphans_removed += n;
        return;
    }
    if (o->guard == NULL) {
        orphan_remove(& or, copies[0].key);
        return;
    }
    /* an upload may pin the key right now: remove only under the metadata's claim */
    int rc = o->guard(o->guard_arg, copies[0].key, orphan_remove, & or);
    if (rc == E_EXISTS)
        k->orphans_young++; /* in use again: its bytes stay */
    else if (rc != OK && rc != E_IO)
        k->errors++;
}

void ring_repair_key(struct blob_store *store, const struct ring_copy *copies, size_t n,
                     int64_t refs, const struct ring_repair_opts *o, struct progress *p,
                     struct ring_repair_counts *k)
{
    const struct ring *ring = blob_ring_ring(store);
    const char *key = copies[0].key;
    unsigned home[RING_MAX_REPLICAS];
    bool good[RING_MAX_SHARDS] = {false};
    bool is_home[RING_MAX_SHARDS] = {false};
    bool corrupt[RING_MAX_SHARDS] = {false};
    size_t nhome;
    int src_fd = -1;
    bool all_home = true;
    int rc;

    if (refs == 0) {
        repair_orphan(store, copies, n, o, k);
        return;
    }
    nhome = ring_lookup(ring, key, home, ring->replicas);
    for (size_t i = 0; i < nhome; i++)
        is_home[home[i]] = true;
    /* Verify every copy: a corrupt one counts as missing. */
    for (size_t i = 0; i < n; i++) {
        struct blob_store *bs = blob_ring_shard(store, copies[i].shard);
        rc = ring_walk_verify(bs, key, src_fd < 0 ? &src_fd : NULL);
        if (rc == OK) {
            good[copies[i].shard] = true;
        } else if (rc == E_NOTFOUND) {
            corrupt[copies[i].shard] = true;
            k->corrupt++;
        } else {
            k->errors++;
            good[copies[i].shard] = true; /* unreadable now: leave it, never count it missing */
        }
    }
    if (src_fd < 0) {
        /* the corrupt copies stay: the last bytes there are, for an operator to salvage */
        progress_note(p, "%s: no good copy on any shard: lost", key);
        k->lost++;
        return;
    }
    /* with a good source in hand, a corrupt copy goes so that a good one can take its name */
    for (size_t i = 0; i < n; i++) {
        if (!corrupt[copies[i].shard])
            continue;
        progress_note(p, "%s on %s: corrupt or gone, %s", key, ring->shards[copies[i].shard].id,
                      o->dry_run ? "would rewrite" : "rewriting");
        if (!o->dry_run)
            blob_delete(blob_ring_shard(store, copies[i].shard), key);
    }
    for (size_t i = 0; i < nhome; i++) {
        if (good[home[i]])
            continue;
        if (!o->dry_run) {
            rc = ring_walk_copy(blob_ring_shard(store, home[i]), key, src_fd);
            if (rc != OK) {
                progress_note(p, "%s: cannot copy to %s: %s", key, ring->shards[home[i]].id,
                              err_str(rc));
                k->errors++;
                all_home = false;
                continue;
            }
        }
        k->restored++;
    }
    close(src_fd);
    /* Only with every home copy in place do copies elsewhere (hinted, left by a move) go. */
    for (size_t i = 0; all_home && i < n; i++) {
        unsigned s = copies[i].shard;
        if (is_home[s] || !good[s])
            continue;
        if (!o->dry_run && blob_delete(blob_ring_shard(store, s), key) != OK)
            k->errors++;
        else
            k->moved_home++;
    }
}
