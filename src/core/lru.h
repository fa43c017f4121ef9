/*
 * lru.h - a bounded, thread-safe, in-process LRU of small fixed-size values with TTLs.
 *
 * Striped: a key hashes to one of a few stripes, each with its own lock, hash
 * table and recency list, so readers on different keys rarely contend. Memory
 * is bounded by max_entries entries of a size fixed at lru_new. An entry is
 * either a value or a tombstone ("known absent"); an unexpired tombstone is
 * only replaced by a forced put, so a slow reader cannot re-fill a value an
 * invalidation removed.
 */
#ifndef CORE_LRU_H
#define CORE_LRU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LRU_KEY_MAX 48 /* longest key, NUL included */

struct lru;

enum lru_state {
    LRU_MISS = 0, /* not cached (or expired) */
    LRU_VALUE,    /* a value was copied out */
    LRU_GONE,     /* a tombstone: known absent */
};

/*
 * lru_new makes an LRU of at most max_entries (>= 1) entries of value_size
 * bytes each. Allocation cannot fail (xmalloc).
 */
struct lru *lru_new(size_t max_entries, size_t value_size);

/* lru_free frees l; NULL is fine. */
void lru_free(struct lru *l);

/*
 * lru_get looks key up at time now_us: LRU_VALUE (value_size bytes copied to
 * out), LRU_GONE or LRU_MISS. An expired entry is dropped and reported as a
 * miss. Thread-safe; never blocks on anything but a stripe lock.
 */
enum lru_state lru_get(struct lru *l, const char *key, int64_t now_us, void *out);

/*
 * lru_put stores value (NULL: a tombstone) under key until expires_us,
 * evicting the stripe's least recently used entry when full. Unless force, an
 * unexpired tombstone is kept and the put is ignored (returns false).
 * A key longer than LRU_KEY_MAX - 1 is not cached (returns false). Thread-safe.
 */
bool lru_put(struct lru *l, const char *key, const void *value, int64_t expires_us, int64_t now_us,
             bool force);

/* lru_del drops key if present. Thread-safe. */
void lru_del(struct lru *l, const char *key);

/* lru_clear drops every entry. Thread-safe. */
void lru_clear(struct lru *l);

/* lru_count returns the number of entries held (expired ones included until touched). */
size_t lru_count(struct lru *l);

#endif
