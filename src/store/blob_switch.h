/*
 * blob_switch.h - a blob store whose ring can be replaced while it serves.
 *
 * Services follow the ring in force without a restart: the store in front
 * holds the ring store of the current ring and, while a rebalance moves
 * blobs, the ring store of the previous one. Writes go to the current
 * placement; reads and existence checks look there first and fall back to
 * the previous placement; deletes reach both.
 */
#ifndef STORE_BLOB_SWITCH_H
#define STORE_BLOB_SWITCH_H

#include "store/blob.h"

/*
 * blob_switch_open makes a switch over cur (owned from now on; freed with the
 * switch or when replaced). *out is freed with blob_store_free.
 */
int blob_switch_open(struct blob_store *cur, struct blob_store **out);

/*
 * blob_switch_set replaces the current store by cur and the fallback by prev
 * (NULL: none); both owned from now on. Calls in progress finish on the
 * stores they started with, which are freed after the last one returns.
 * E_INVALID if sw is not a switch (cur and prev are then freed). Thread-safe.
 */
int blob_switch_set(struct blob_store *sw, struct blob_store *cur, struct blob_store *prev);

/*
 * blob_switch_current returns the current store of a switch, or bs itself
 * when bs is not one. The pointer is valid only until the next
 * blob_switch_set: for tools and tests on a quiet store.
 */
struct blob_store *blob_switch_current(struct blob_store *bs);

#endif
