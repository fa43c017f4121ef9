/*
 * rebalance.h - moving the blobs from the ring in force to a new ring, online.
 *
 * Running services follow the ring in force (app/ring_follow.h), so the new
 * ring is recorded first and the blobs move after. The steps, in order:
 * rebalance_open (the ring to move from, a store over both rings, a listing:
 * the plan; `tessera ring plan` stops here); rebalance_begin (the new ring in
 * force, the old one recorded as "previous": services write to the new
 * placement and read there first, then from the old one); once services had
 * time to follow, rebalance_relist (blobs written to the old placement
 * meanwhile are listed too) and rebalance_copy (every blob to its new homes);
 * rebalance_finish (no previous ring any more: fallback reads stop); once
 * services followed again, rebalance_prune (copies off their new homes go).
 * Readers never miss a blob: until finish every old home keeps its copy and
 * is read as a fallback; after it every new home has one. Interrupted, it
 * resumes: rebalance_open moves from the recorded previous ring while one is.
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
    struct ring *old;         /* the ring moved from: the previous one, else the one in force */
    bool resumed;             /* old is the previous ring of an unfinished rebalance */
    struct blob_store *store; /* over the union of both rings; NULL when nothing moves */
    struct ring_listing listing;
    struct ring_plan plan;
    struct ring_move_result res;
};

/*
 * rebalance_open reads the ring to move from in rt (opened with RT_META): the
 * previous ring of an unfinished rebalance, else the ring in force. When it
 * differs from nw, opens a store over both rings, lists every shard and plans
 * the move into rb (rebalance_release frees it in every case). OK with
 * rb->store NULL: nw is in force and nothing is moving.
 * Errors, each with a sentence in err (capacity cap): E_NOTFOUND no ring
 * recorded yet; E_INVALID a recorded ring that does not parse or a shard
 * whose URL changes; E_UNAVAILABLE a shard could not be listed (moving is
 * unsafe then); the stores' errors. Blocks (lists every shard).
 */
int rebalance_open(const struct runtime *rt, const struct ring *nw, struct rebalance *rb,
                   struct progress *p, char *err, size_t cap);

/*
 * rebalance_copy makes the plan's copies (at most rate keys a second, 0: no limit; jobs keys
 * at once) into rb->res.
 */
void rebalance_copy(struct rebalance *rb, long rate, unsigned jobs, struct progress *p);

/*
 * rebalance_begin records the old ring as the previous one, then nw as the
 * ring in force: services follow within storage.ring_poll. Errors of the
 * metadata store.
 */
int rebalance_begin(struct rebalance *rb);

/* rebalance_relist lists every shard again and plans anew (after services followed). */
int rebalance_relist(struct rebalance *rb, struct progress *p);

/*
 * rebalance_finish clears the previous ring (services stop reading it),
 * unless a copy failed: then E_IO and the fallback stays (run it again: it
 * resumes). Errors of the metadata store otherwise.
 */
int rebalance_finish(struct rebalance *rb);

/* rebalance_follow_ms is how long services may take to follow a ring change: 2 polls + 1 s. */
long rebalance_follow_ms(const struct rebalance *rb);

/* rebalance_prune removes the copies off their new homes (after rebalance_finish) into rb->res. */
void rebalance_prune(struct rebalance *rb, struct progress *p);

/* rebalance_release frees what rebalance_open made; a zeroed rb is fine. */
void rebalance_release(struct rebalance *rb);

#endif
