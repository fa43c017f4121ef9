/*
 * keeper.h - the renditions' disk budget: batched last-use touches and the
 * least-recently-used eviction, on one background thread of a read service.
 *
 * Invariant: a GET never writes to the database. A read that finds a
 * rendition's last use older than transforms.touch_interval queues a touch;
 * the thread writes queued touches in one transaction about once a second
 * and drops them while the primary takes no writes (recency is approximate,
 * never a reason to fail a read). It checks transforms.cache_bytes every
 * transforms.evict_interval and soon after a rendition was recorded.
 */
#ifndef APP_KEEPER_H
#define APP_KEEPER_H

#include "meta/meta.h"

struct app;
struct keeper;

/*
 * keeper_start starts the thread for a (borrowed: a outlives it); *out NULL
 * when transforms.cache_bytes is 0 (nothing to keep). E_INTERNAL when the
 * thread cannot start.
 */
int keeper_start(struct app *a, struct keeper **out);

/* keeper_stop writes the queued touches, stops the thread and frees k; NULL is fine. */
void keeper_stop(struct keeper *k);

/* keeper_used notes a use of rendition v (recorded when its used_at is stale). Thread-safe. */
void keeper_used(struct keeper *k, const struct variant_rec *v);

/* keeper_recorded tells the thread a rendition was recorded: check the budget soon. */
void keeper_recorded(struct keeper *k);

/*
 * keeper_evict brings the renditions under budget now (several transactions
 * when needed); *n and *bytes get what went. For the thread and tests.
 */
int keeper_evict(struct app *a, uint64_t budget, size_t *n, uint64_t *bytes);

#endif
