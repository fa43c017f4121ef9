/*
 * ring_move.h - moving blobs from one ring to another: plan, copy, prune.
 *
 * A move works on the union ring (every shard of the old and the new ring)
 * and on a listing of it (store/ring_walk.h). It copies every blob to each of
 * its new homes that lacks it (from a verified source, verified after the
 * copy) while the old ring stays in force; once the new ring is in force,
 * copies off their new homes are pruned, and only for keys whose every new
 * home holds the blob. Nothing here touches the metadata or the configuration.
 */
#ifndef STORE_RING_MOVE_H
#define STORE_RING_MOVE_H

#include "store/ring.h"
#include "store/ring_walk.h"

#include <stddef.h>
#include <stdint.h>

struct blob_store;
struct progress;

/*
 * ring_union builds (*out, the caller frees it) a ring of every shard of old
 * and of nw, R = W = 1 (only its shard stores are used), so one store reaches
 * both placements. A shard id in both must keep its URL: E_INVALID with a
 * sentence in err (capacity cap) otherwise.
 */
int ring_union(const struct ring *old, const struct ring *nw, struct ring **out, char *err,
               size_t cap);

/* What moving one key to the new ring takes, in shard indexes of the union ring. */
struct ring_key_plan {
    unsigned home[RING_MAX_REPLICAS]; /* the key's homes on the new ring */
    size_t nhome;
    unsigned add[RING_MAX_REPLICAS]; /* homes that listed no copy: copies to make */
    size_t nadd;
    size_t nremove;        /* listed copies off every new home: to prune after the switch */
    uint64_t remove_bytes; /* their sizes */
};

/*
 * ring_key_plan plans the key of copies[0..n) (one key's listed copies on the
 * union ring uni, n >= 1) for the new ring nw. uni must contain every shard
 * of nw (ring_union). Pure; thread-safe.
 */
void ring_key_plan(const struct ring *uni, const struct ring *nw, const struct ring_copy *copies,
                   size_t n, struct ring_key_plan *kp);

/* ring_key_plan_is_home tells whether union shard s is one of kp's new homes. */
bool ring_key_plan_is_home(const struct ring_key_plan *kp, unsigned s);

/* The plan of a whole listing. */
struct ring_plan {
    size_t keys;           /* distinct keys listed */
    size_t moving;         /* keys with at least one copy to make */
    size_t add;            /* copies to make */
    uint64_t add_bytes;    /* their bytes */
    size_t remove;         /* copies to prune once the new ring is in force */
    uint64_t remove_bytes; /* their bytes */
};

/* ring_plan sums ring_key_plan over every key of l (a listing of uni) into *out. Pure. */
void ring_plan(const struct ring *uni, const struct ring *nw, const struct ring_listing *l,
               struct ring_plan *out);

/* What ring_move_copy and ring_move_prune did. */
struct ring_move_result {
    size_t copied;  /* copies made and verified */
    size_t removed; /* copies pruned */
    size_t skipped; /* keys not pruned: a new home still lacks the blob */
    size_t errors;  /* copies or removals that failed */
};

#define RING_MOVE_MAX_JOBS 64

/*
 * ring_move_copy copies every key of l to each new home that lacks it (store:
 * a ring store over uni; nw the new ring), walking at most rate keys a second
 * (0: no limit), with jobs keys copied at once (0 or 1: one at a time; at most
 * RING_MOVE_MAX_JOBS) — on a remote store a copy is mostly waiting. Each copy
 * is read from a listed copy that verifies and verified once written. Reports
 * a phase "copying" (one item a copy, its bytes) and each failure to p; adds
 * to res. Blocks for the whole copy.
 */
void ring_move_copy(struct blob_store *store, const struct ring *nw, const struct ring_listing *l,
                    long rate, unsigned jobs, struct progress *p, struct ring_move_result *res);

/*
 * ring_move_prune removes the copies off their new homes, for each key of l
 * whose every new home holds it now (asked again: the listing predates the
 * copy). Call only once nw is the ring in force and readers had time to
 * follow. Reports a phase "pruning" (one item a key) to p; adds to res. Blocks.
 */
void ring_move_prune(struct blob_store *store, const struct ring *nw, const struct ring_listing *l,
                     struct progress *p, struct ring_move_result *res);

#endif
