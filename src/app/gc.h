/*
 * gc.h - garbage collection of what no image needs: the use case behind `tessera gc`.
 *
 * Online: it runs beside uploads and deletes. Bytes are only ever removed
 * through the blob row protocol (meta_blob_release for rows, and
 * meta_blob_collect_orphan, which claims the key, for bytes without a row),
 * so an upload that pins a key concurrently always wins. Every step is
 * idempotent: a run that was interrupted is simply run again.
 */
#ifndef APP_GC_H
#define APP_GC_H

#include <stdbool.h>
#include <stdint.h>

struct config;
struct meta_store;
struct blob_store;
struct progress;

struct gc_opts {
    bool apply;                /* false: count only, change nothing (the plan) */
    int64_t now;               /* seconds since the epoch the cutoffs count from */
    int64_t grace_s;           /* blobs and stored bytes younger than this stay */
    int64_t pin_grace_s;       /* pins older than this are stale */
    int64_t dead_retention_ms; /* dead jobs whose last attempt is older than this go */
};

/* A count and its bytes. */
struct gc_tally {
    int64_t n;
    uint64_t bytes;
};

/* What a run found (dry run) or did (apply), per category. */
struct gc_report {
    struct gc_tally stale_pins; /* pins cleared; bytes: of their blobs */
    struct gc_tally unused;     /* blobs rows with no reference and no pin: bytes removed */
    struct gc_tally orphans;    /* stored bytes with no row, older than the grace */
    struct gc_tally young;      /* stored bytes with no row, within the grace: kept */
    struct gc_tally variants;   /* variants rows of deleted images dropped */
    struct gc_tally jobs;       /* dead jobs deleted */
    int64_t in_use;             /* pinned or referenced again when gc came to them: kept */
    int64_t errors;             /* failed items or unlistable shards: left for the next run */
};

/* gc_opts_from_config fills o from storage.repair_grace, storage.pin_grace, jobs.dead_retention. */
void gc_opts_from_config(const struct config *cfg, bool apply, struct gc_opts *o);

/*
 * gc_run collects, in this order: dead jobs, variants rows of deleted
 * images, stale pins, unused blobs rows (their bytes and rows), then stored
 * bytes that no row names (each shard of a ring). With o->apply false it
 * only counts. p reports progress. Returns OK when every
 * phase ran (item failures are counted in r->errors), else the error that
 * stopped it (E_UNAVAILABLE when the metadata store cannot answer).
 * Blocks; one run at a time per process is enough (runs may overlap across
 * processes: every removal re-checks under the row lock).
 */
int gc_run(struct meta_store *meta, struct blob_store *blobs, const struct gc_opts *o,
           struct progress *p, struct gc_report *r);

#endif
