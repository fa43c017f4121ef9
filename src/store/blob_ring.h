/*
 * blob_ring.h - a blob store over the shards of a ring: R replicas, W to write.
 *
 * Implements blob.h: blob_put_path writes the R replicas in parallel and
 * succeeds when W are durable, replacing a shard that is down by the next one
 * in the key's ring order (a hinted copy, moved home by `tessera repair`);
 * blob_open reads the first replica that answers, then the next positions.
 * Repair and rebalance reach the shards one by one through blob_ring_shard.
 */
#ifndef STORE_BLOB_RING_H
#define STORE_BLOB_RING_H

#include "store/blob.h"
#include "store/ring.h"

struct blob_ring_opts {
    const char *tmp_dir; /* local: uploads' temporaries, downloads from remote shards */
    long connect_ms;     /* to a storage node or S3 endpoint */
    long read_ms;        /* no progress from a remote shard for this long fails the request */
    long backoff_ms;     /* first pause of a shard marked down (doubles, up to 16x) */
    const struct secret *node_key; /* signs requests to storage nodes; NULL: unsigned */
    /* s3+http(s):// shards (borrowed strings: they must outlive the store) */
    const char *s3_region;
    const char *s3_credentials_file; /* "": the AWS_* environment */
    bool s3_virtual_host;
    uint64_t s3_multipart_bytes;
};

/*
 * blob_ring_open opens a store over ring (which it takes on success, freeing
 * it with the store; on failure the caller keeps it) with one backend per
 * shard: file:///path, http://host:port or s3+http(s)://host[:port]/bucket[/prefix].
 * E_INVALID for a bad shard or options, E_IO if a file:// shard is unusable.
 * Remote shards are not contacted here: a node may be down at start.
 */
int blob_ring_open(struct ring *ring, const struct blob_ring_opts *o, struct blob_store **out);

/* blob_ring_ring returns the ring of a ring store, or NULL for another kind of store. */
const struct ring *blob_ring_ring(struct blob_store *bs);

/*
 * blob_ring_shard returns the store of shard i of a ring store (owned by it),
 * for tools that work shard by shard; NULL if bs is not a ring store.
 */
struct blob_store *blob_ring_shard(struct blob_store *bs, size_t i);

/* blob_ring_shard_up tells whether shard i is not marked down (failures with back-off). */
bool blob_ring_shard_up(struct blob_store *bs, size_t i);

#endif
