/*
 * lru.h - the one bounded, thread-safe, in-process LRU: small fixed-size
 * values with TTLs, bounded by entry count and/or by a total weight.
 *
 * Striped: a key hashes to one of a few stripes, each with its own lock, hash
 * table and recency list, so readers on different keys rarely contend. Both
 * bounds are split evenly over the stripes, and recency is per stripe: ask for
 * one stripe when a bound must hold exactly across all keys. An entry is
 * either a value or a tombstone ("known absent"); an unexpired tombstone is
 * only replaced by a forced put, so a slow reader cannot re-fill a value an
 * invalidation removed. Users: the metadata cache (cache/cache.c: entries,
 * TTLs, tombstones) and the local blob cache (store/blob_cache.c: weight =
 * bytes, an eviction callback that removes the file).
 */
#ifndef CORE_LRU_H
#define CORE_LRU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LRU_KEY_MAX     48        /* default longest key, NUL included */
#define LRU_STRIPES_MAX 16        /* most stripes an LRU has */
#define LRU_NEVER       INT64_MAX /* an expiry time that never comes */

struct lru;

enum lru_state {
    LRU_MISS = 0, /* not cached (or expired) */
    LRU_VALUE,    /* a value was copied out */
    LRU_GONE,     /* a tombstone: known absent */
};

/*
 * lru_evict_fn is told about one entry a put evicted to keep a bound: its key,
 * its value (value_size bytes, a tombstone's are zero) and its weight. It is
 * called on the putting thread after the stripe lock is released, so it may
 * block (unlink a file) and may call back into the LRU; by then the key may
 * already have been put again by another thread.
 */
typedef void lru_evict_fn(void *arg, const char *key, const void *value, uint64_t weight);

struct lru_opts {
    size_t max_entries;  /* bound on the number of entries; 0: none */
    uint64_t max_weight; /* bound on the sum of the entries' weights; 0: none */
    size_t value_size;   /* bytes of each value, copied in and out */
    size_t key_max;      /* longest key, NUL included; 0: LRU_KEY_MAX */
    size_t stripes;      /* 0: LRU_STRIPES_MAX if max_entries >= 1024, else 1 */
    lru_evict_fn *evict; /* NULL: evictions are silent */
    void *evict_arg;
};

/*
 * lru_new makes an LRU of o. With neither bound set it holds one entry. Each
 * stripe gets its share of max_entries and max_weight (the stripe count is
 * capped so that every share is at least 1). Memory grows with the entries
 * held, nothing is preallocated but the hash tables. Allocation cannot fail
 * (xmalloc).
 */
struct lru *lru_new(const struct lru_opts *o);

/* lru_free frees l and every entry, calling no evict function; NULL is fine. */
void lru_free(struct lru *l);

/*
 * lru_get looks key up at time now_us: LRU_VALUE (value_size bytes copied to
 * out, which may be NULL when value_size is 0), LRU_GONE or LRU_MISS. A hit
 * makes the entry the stripe's most recent. An expired entry is dropped
 * (without an evict call) and reported as a miss. Thread-safe; never blocks
 * on anything but a stripe lock.
 */
enum lru_state lru_get(struct lru *l, const char *key, int64_t now_us, void *out);

/*
 * lru_put_weighted stores value (NULL: a tombstone) of the given weight under
 * key until expires_us (LRU_NEVER: for good), replacing the key's entry, then
 * evicts the stripe's least recently used other entries until the stripe is
 * within both bounds again, passing each to the evict function after
 * unlocking. Returns false, changing nothing, when: an unexpired tombstone is
 * held for key and not force; key is longer than key_max - 1; or weight alone
 * exceeds the stripe's share of max_weight. Thread-safe; blocks only on the
 * stripe lock and in the evict function.
 */
bool lru_put_weighted(struct lru *l, const char *key, const void *value, uint64_t weight,
                      int64_t expires_us, int64_t now_us, bool force);

/* lru_put is lru_put_weighted with weight 0, for an LRU bounded by entries. */
bool lru_put(struct lru *l, const char *key, const void *value, int64_t expires_us, int64_t now_us,
             bool force);

/* lru_del drops key if present (no evict call); returns whether it was. Thread-safe. */
bool lru_del(struct lru *l, const char *key);

/* lru_clear drops every entry (no evict calls). Thread-safe. */
void lru_clear(struct lru *l);

/* lru_count returns the number of entries held (expired ones included until touched). */
size_t lru_count(struct lru *l);

/* lru_weight returns the sum of the weights of the entries held. Thread-safe. */
uint64_t lru_weight(struct lru *l);

#endif
