/*
 * ring_state.h - the ring in force, as recorded in the metadata store.
 *
 * Every service must place blobs on the same ring. The ring in force is two
 * settings rows: its description (ring_describe) and its epoch (a digest of
 * it), which is what services compare against their configured ring.
 */
#ifndef APP_RING_STATE_H
#define APP_RING_STATE_H

#include <stddef.h>

struct meta_store;
struct ring;

#define RING_STATE_EPOCH    "ring.epoch"
#define RING_STATE_CONFIG   "ring.config"
#define RING_STATE_PREVIOUS "ring.previous" /* during a rebalance: the ring blobs move from */
#define RING_STATE_MAX      (1024 * 1024)   /* bytes of a recorded description */

/* ring_state_record makes ring the one in force: its text, then its epoch. Logs failures. */
int ring_state_record(struct meta_store *meta, const struct ring *ring);

/*
 * ring_state_epoch reads the epoch in force into epoch (capacity cap).
 * E_NOTFOUND when none was recorded yet; E_UNAVAILABLE when the database is down.
 */
int ring_state_epoch(struct meta_store *meta, char *epoch, size_t cap);

/*
 * ring_state_config reads the description of the ring in force into a new
 * string (*out, the caller frees it). E_NOTFOUND when none was recorded.
 */
int ring_state_config(struct meta_store *meta, char **out);

/*
 * ring_state_set_previous records prev (NULL: none) as the ring a rebalance
 * moves blobs from: services read there when the new placement has no copy
 * yet. Logs failures.
 */
int ring_state_set_previous(struct meta_store *meta, const struct ring *prev);

/*
 * ring_state_previous reads the description of the previous ring into a new
 * string (*out, the caller frees it; "" when no rebalance is in progress).
 */
int ring_state_previous(struct meta_store *meta, char **out);

#endif
