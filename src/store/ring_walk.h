/*
 * ring_walk.h - every copy on every shard of a ring store, and verified copies.
 *
 * Repair and rebalance work from the shards' own listings, so they see every
 * copy (home, hinted or stray), not only where the ring says a blob should be.
 * A listing is sorted by (key, shard): the copies of one key are adjacent.
 */
#ifndef STORE_RING_WALK_H
#define STORE_RING_WALK_H

#include "core/ident.h" /* BLOB_KEY_LEN */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct blob_store;
struct progress;

/* One copy of a blob on one shard, as the shard listed it. */
struct ring_copy {
    char key[BLOB_KEY_LEN + 1];
    unsigned shard; /* index in the ring of the store that was listed */
    uint64_t size;
    int64_t mtime; /* seconds since the epoch: when this copy was stored */
};

struct ring_listing {
    struct ring_copy *v; /* n copies, sorted by key then shard */
    size_t n, alloc;
    bool *listed;   /* per shard: its listing is complete */
    size_t nshards; /* of the ring listed */
    size_t nkeys;   /* distinct keys */
};

/*
 * ring_walk_list lists every shard of the ring store into l (zeroed by the
 * caller; ring_walk_release frees it even on failure), reporting each shard's
 * count or failure to p (a phase "listing", one item a shard). A shard that
 * cannot be listed is marked unlisted and its copies are absent:
 * E_UNAVAILABLE then, with every other shard listed. E_INVALID if store is not
 * a ring store. Blocks (one request a page a shard).
 */
int ring_walk_list(struct blob_store *store, struct ring_listing *l, struct progress *p);

/* ring_walk_release frees what ring_walk_list filled; a zeroed l is fine. */
void ring_walk_release(struct ring_listing *l);

/* ring_walk_group returns the end of the copies of the key at i: l->v[i..end) share its key. */
size_t ring_walk_group(const struct ring_listing *l, size_t i);

/* ring_walk_has tells whether some shard listed key (binary search). */
bool ring_walk_has(const struct ring_listing *l, const char *key);

/*
 * ring_walk_verify opens key on bs and checks that its bytes hash to key: OK,
 * E_NOTFOUND (missing or corrupt), or the store's error. On OK with fd_out
 * not NULL the open descriptor is handed over (the caller closes it);
 * otherwise nothing stays open. Blocks (reads the whole blob).
 */
int ring_walk_verify(struct blob_store *bs, const char *key, int *fd_out);

/*
 * ring_walk_copy stores the blob open at fd (verified by the caller: its bytes
 * hash to key) on bs. Idempotent like blob_put_path; fd stays open. Blocks.
 */
int ring_walk_copy(struct blob_store *bs, const char *key, int fd);

#endif
