/*
 * ring_follow.h - a service follows the ring in force without a restart.
 *
 * A thread polls the ring recorded in the metadata store (its epoch and,
 * during a rebalance, the previous ring) and, when either changes, opens ring
 * stores for them and swaps them into the service's blob switch: writes go
 * to the new placement at once, reads fall back to the previous one until
 * the rebalance clears it.
 */
#ifndef APP_RING_FOLLOW_H
#define APP_RING_FOLLOW_H

#include "store/blob_ring.h"

#include <stdint.h>

struct meta_store;
struct blob_store;
struct ring_follow;

/*
 * ring_follow_start starts following: meta and sw (a blob_switch) are
 * borrowed and must outlive the follower; o (copied; its tmp_dir too) opens
 * the ring stores; epoch is the ring sw serves now. Polls every poll_ms,
 * the first time at once. Returns OK (E_INTERNAL without a thread).
 */
int ring_follow_start(struct meta_store *meta, struct blob_store *sw,
                      const struct blob_ring_opts *o, int64_t poll_ms, const char *epoch,
                      struct ring_follow **out);

/* ring_follow_stop stops the thread and frees f; NULL is fine. */
void ring_follow_stop(struct ring_follow *f);

#endif
