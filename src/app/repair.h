/*
 * repair.h - the repair of a ring store against the metadata: `tessera repair`.
 *
 * Lists every shard, brings each listed key to exactly its home copies
 * (store/ring_repair.h) with its reference count from the metadata, then
 * checks that every image's blob and variants are on some shard, and reports
 * the copies the storage nodes' scrubbers put in quarantine. Never removes a
 * blob that a record names, nor a corrupt copy when no good one exists.
 */
#ifndef APP_REPAIR_H
#define APP_REPAIR_H

#include "store/ring_repair.h"

#include <stdbool.h>
#include <stddef.h>

struct runtime;
struct progress;

struct repair_opts {
    bool dry_run;      /* count, change nothing */
    const char *after; /* resume: repair only keys after this one ("" or NULL: all) */
};

struct repair_result {
    struct ring_repair_counts k; /* k.lost also counts images whose blob is on no shard */
    size_t images_checked;       /* images compared against the listings */
    size_t shards_unlisted;      /* shards that could not be listed (their copies left alone) */
    size_t quarantined;          /* copies the nodes' scrubbers set aside (reported, kept) */
    double seconds;
};

/*
 * repair_run repairs the ring store of rt (opened with RT_META | RT_BLOBS |
 * RT_RING) as of now, reporting phases "listing", "repairing" and "checking"
 * and every notable copy to p, and fills *res. Returns OK when everything was
 * listed and nothing is lost or failed; E_UNAVAILABLE when a shard could not
 * be listed, E_IO when a blob is lost or an operation failed (res is filled
 * in every case). Blocks for the whole run.
 */
int repair_run(const struct runtime *rt, const struct repair_opts *o, struct progress *p,
               struct repair_result *res);

struct meta_store;

/*
 * What the last complete repair walk (every shard listed, from the first key)
 * left, recorded in the metadata store (setting "repair.last") for /metrics and
 * the status page: after a dry run, the copies it would move home and the home
 * copies it would make; after a real run, 0 for both (it moved and made them).
 */
struct repair_last {
    int64_t at;      /* unix seconds */
    int64_t away;    /* copies off their homes (hinted or left by a move) */
    int64_t missing; /* home copies missing */
    int64_t lost;    /* referenced blobs with no good copy */
};

/* repair_last_get reads the record: OK, E_NOTFOUND when no complete walk ran, or the store's error.
 */
int repair_last_get(struct meta_store *meta, struct repair_last *out);

#endif
