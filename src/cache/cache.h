/*
 * cache.h - the image metadata cache of the read path: in-process LRU, then
 * Redis Cluster, then the metadata store, filling both on the way back.
 *
 * Redis is an accelerator, never the truth: every cache failure falls through
 * to the store, and the answer is the store's. Invariant: after
 * cache_image_deleted returned, no process serves the image from its LRU or
 * from Redis (a tombstone replaces the entry; readers never overwrite one;
 * each LRU is used only while its invalidation subscription is live).
 * Only metadata is cached, never bytes. With a secret (cache.secret_file)
 * every Redis value and pub/sub message carries an HMAC; one that fails the
 * check is dropped, counted and logged, and the read goes to the store, so a
 * writer of Redis cannot choose what an id serves. See docs/internals/cache.md.
 */
#ifndef CACHE_CACHE_H
#define CACHE_CACHE_H

#include "core/crypto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cache;
struct meta_store;
struct image_rec;

/* The cache's settings (the [cache] section); strings are borrowed and must outlive the cache. */
struct cache_opts {
    const char *redis;   /* Redis Cluster seed nodes "host:port,..."; "" = no Redis */
    const char *channel; /* pub/sub channel of invalidations */
    int64_t ttl_ms;      /* of a Redis entry */
    int64_t negative_ttl_ms;
    int64_t tombstone_ttl_ms;
    int64_t ack_timeout_ms; /* a delete waits this long for the LRUs' acknowledgements */
    int64_t lru_entries;    /* 0 = no in-process cache */
    int64_t lru_ttl_ms;
    int64_t connect_timeout_ms;
    int64_t timeout_ms;
    int64_t down_backoff_ms;
    int64_t pool;
    bool local_deletes_only;             /* every delete happens in this process */
    const char *redis_user;              /* Redis ACL user (NULL or "": default) */
    const struct secret *redis_password; /* NULL or len 0: no AUTH */
    /* HMAC key of Redis values and invalidation messages (copied); NULL or len 0: none */
    const struct secret *secret;
};

/*
 * cache_new makes the cache of o: an LRU unless o->lru_entries is 0, a
 * Redis Cluster client and its invalidation subscriber unless o->redis is "".
 * Without Redis, a process learns of no other process's deletes, so its LRU
 * is used only when o->local_deletes_only (it is the sole deleter, e.g.
 * tessera serve on SQLite). Never connects synchronously: Redis may be down.
 * E_INVALID for a malformed o->redis.
 */
int cache_new(const struct cache_opts *o, struct cache **out);

/* cache_free stops the subscriber and frees c; NULL is fine. */
void cache_free(struct cache *c);

/*
 * cache_image_get fills *out for a live image: LRU, Redis, then
 * meta_image_get(ms) (whose answer then fills both). E_NOTFOUND for an unknown
 * or deleted id (cached as such for cache.negative_ttl), the store's error
 * otherwise. c may be NULL (straight to the store). Thread-safe; may block
 * (Redis: at most a few cache.timeout; the store: its own timeouts).
 */
int cache_image_get(struct cache *c, struct meta_store *ms, const char *id, struct image_rec *out);

/*
 * cache_image_peek is cache_image_get's first step alone, for a thread that
 * must not block: OK or E_NOTFOUND from this process's LRU, E_AGAIN when the
 * LRU does not know (or may not be used) and only cache_image_get can tell.
 */
int cache_image_peek(struct cache *c, const char *id, struct image_rec *out);

/*
 * cache_image_deleted is called after the image's row was deleted: tombstones
 * it in this process's LRU, writes a tombstone over its Redis entry,
 * publishes the id on the invalidation channel and waits (at most
 * cache.ack_timeout) until every subscribed process acknowledged that its LRU
 * dropped it. Redis failures are logged and counted, never returned: a
 * process that is not subscribed does not use its LRU.
 * c may be NULL. Thread-safe; may block like cache_image_get.
 */
void cache_image_deleted(struct cache *c, const char *id);

/* cache_ready_detail: a short state for /readyz ("off", "subscribed", "degraded"); never blocks. */
const char *cache_state(struct cache *c);

/* --- the Redis value of an entry; exported for the unit tests --- */

#define CACHE_VALUE_MAX 512

/* cache_rec_encode writes rec as a Redis value into buf (capacity CACHE_VALUE_MAX); its length. */
size_t cache_rec_encode(const struct image_rec *rec, char *buf);

/* cache_rec_decode parses a value: OK (rec filled), E_NOTFOUND (a tombstone), E_INVALID. */
int cache_rec_decode(const char *val, size_t len, const char *id, struct image_rec *rec);

#define CACHE_MAC_HEX 32 /* hex digits of the HMAC a sealed value or message ends with */

/*
 * cache_seal appends "|" and the HMAC (CACHE_MAC_HEX hex digits of
 * HMAC-SHA256(key, domain "\n" id "\n" text)) to the len bytes of text in buf
 * (capacity cap); returns the new length, or 0 when it does not fit. The id
 * is bound in, so a record cannot be moved to another image. Pure.
 */
size_t cache_seal(const struct secret *key, const char *domain, const char *id, char *buf,
                  size_t len, size_t cap);

/*
 * cache_unseal checks the HMAC cache_seal appended and returns the length of
 * the text before it (through *len), or E_INVALID when it is missing or
 * wrong (compared in constant time). Pure.
 */
int cache_unseal(const struct secret *key, const char *domain, const char *id, const char *buf,
                 size_t *len);

struct rcluster_node_info;

/*
 * cache_redis_nodes fills out (capacity cap) with the Redis nodes the cache
 * talks to and their state; returns how many (0: no Redis, or c is NULL).
 * Never blocks; thread-safe.
 */
size_t cache_redis_nodes(struct cache *c, struct rcluster_node_info *out, size_t cap);

#endif
