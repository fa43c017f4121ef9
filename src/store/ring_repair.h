/*
 * ring_repair.h - bringing one blob to exactly its R home copies on a ring store.
 *
 * From the key's listed copies (store/ring_walk.h) and its reference count
 * (how many records name it, which the caller reads from the metadata):
 * unreferenced copies older than a grace period go; referenced ones are
 * verified, corrupt copies removed, missing home copies restored from a good
 * one, and copies off the homes (hinted, left by a move) removed only once
 * every home copy is in place.
 */
#ifndef STORE_RING_REPAIR_H
#define STORE_RING_REPAIR_H

#include "store/ring_walk.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct blob_store;
struct progress;

/*
 * ring_repair_guard_fn removes an unreferenced key's copies by calling
 * remove(rarg, key) only while the metadata allows it (no reference, no pin,
 * under a claim that an upload of the key waits for): OK when removed,
 * E_EXISTS when the key is in use again (nothing removed), else an error.
 */
typedef int ring_repair_guard_fn(void *arg, const char *key, int (*remove)(void *, const char *),
                                 void *rarg);

struct ring_repair_opts {
    bool dry_run;    /* count what would be done, change nothing */
    int64_t now;     /* seconds since the epoch */
    int64_t grace_s; /* unreferenced copies younger than this stay (uploads in flight) */
    ring_repair_guard_fn *guard; /* NULL: unreferenced copies are removed without asking */
    void *guard_arg;
};

/* What repair did (or, in a dry run, would do); every count is of copies unless named. */
struct ring_repair_counts {
    size_t keys;            /* keys repaired */
    size_t restored;        /* home copies made */
    size_t moved_home;      /* copies off the homes removed (their home copies are in place) */
    size_t corrupt;         /* copies whose bytes did not hash to their key, removed */
    size_t orphans_removed; /* unreferenced copies past the grace period, removed */
    size_t orphans_young;   /* unreferenced keys within the grace period, kept */
    size_t lost;            /* referenced keys with no good copy anywhere */
    size_t errors;          /* operations that failed (the copy is left as it was) */
};

/*
 * ring_repair_key repairs the key of copies[0..n) (n >= 1, one key's copies
 * listed on the ring store store), which refs records name, and adds to k
 * (not k->keys). Reports corrupt, lost and failed copies to p. Blocks
 * (reads every copy); thread-safe for distinct keys.
 */
void ring_repair_key(struct blob_store *store, const struct ring_copy *copies, size_t n,
                     int64_t refs, const struct ring_repair_opts *o, struct progress *p,
                     struct ring_repair_counts *k);

#endif
