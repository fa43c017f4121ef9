/*
 * rebalance.h - moving the blobs from the ring in force to a new ring, online.
 *
 * The steps, in order: rebalance_open (read the ring in force, open a store
 * over both rings, list it: the plan), rebalance_copy (every blob to its new
 * homes while the old ring stays in force), rebalance_switch (record the new
 * ring: services follow it), then, once services had time to follow,
 * rebalance_prune (copies off their new homes go). Each step can be the last:
 * `tessera ring plan` stops after the first. Readers never miss a blob: until
 * the switch every old home keeps its copy, after it every new home has one.
 */
#ifndef APP_REBALANCE_H
#define APP_REBALANCE_H

#include "store/ring_move.h"
#include "store/ring_walk.h"

#include <stdbool.h>
#include <stddef.h>

struct runtime;
struct progress;
struct blob_store;

struct rebalance {
    const struct runtime *rt; /* borrowed: its metadata store */
    const struct ring *nw;    /* borrowed: the ring to move to */
    struct ring *old;         /* the ring in force */
    struct blob_store *store; /* over the union of both rings; NULL when nothing moves */
    struct ring_listing listing;
    struct ring_plan plan;
    struct ring_move_result res;
};

/*
 * rebalance_open reads the ring in force from rt (opened with RT_META) and,
 * when its epoch differs from nw's, opens a store over both rings, lists
 * every shard and plans the move into rb (rebalance_release frees it in every
 * case). OK with rb->store NULL: nw is already in force, nothing to move.
 * Errors, each with a sentence in err (capacity cap): E_NOTFOUND no ring
 * recorded yet; E_INVALID a recorded ring that does not parse or a shard
 * whose URL changes; E_UNAVAILABLE a shard could not be listed (moving is
 * unsafe then); the stores' errors. Blocks (lists every shard).
 */
int rebalance_open(const struct runtime *rt, const struct ring *nw, struct rebalance *rb,
                   struct progress *p, char *err, size_t cap);

/* rebalance_copy makes the plan's copies (at most rate keys a second, 0: no limit) into rb->res. */
void rebalance_copy(struct rebalance *rb, long rate, struct progress *p);

/*
 * rebalance_switch records the new ring as the one in force, unless a copy
 * failed: then E_IO and the old ring stays in force (run it again). Errors of
 * the metadata store otherwise.
 */
int rebalance_switch(struct rebalance *rb);

/* rebalance_prune removes the copies off their new homes (after rebalance_switch) into rb->res. */
void rebalance_prune(struct rebalance *rb, struct progress *p);

/* rebalance_release frees what rebalance_open made; a zeroed rb is fine. */
void rebalance_release(struct rebalance *rb);

#endif
