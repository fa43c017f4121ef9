/*
 * ring.h - where a blob lives: weighted rendezvous (HRW) placement over shards.
 *
 * A ring is a list of shards (id, url, weight, zone), a replication factor R
 * and a write quorum W. Placement is a pure function of the ring and the key:
 * every process with the same ring computes the same replicas, and adding or
 * removing a shard only moves keys onto or off that shard (docs/internals/ring.md).
 * A ring is immutable once parsed: every lookup is thread-safe and never blocks.
 */
#ifndef STORE_RING_H
#define STORE_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RING_MAX_SHARDS   1024
#define RING_MAX_REPLICAS 8
#define RING_ID_MAX       32 /* shard ids: [a-z0-9_-]{1,32} */
#define RING_ZONE_MAX     32 /* zones: [A-Za-z0-9_.-]{1,32} */
#define RING_REGION_MAX   32 /* an S3 shard's signing region: [a-z0-9-]{1,31} */
#define RING_URL_MAX      1024
#define RING_EPOCH_LEN    16 /* hex digits of the epoch */

struct ring_shard {
    char id[RING_ID_MAX + 1];
    char url[RING_URL_MAX];       /* file:///abs/path, http://host:port or s3+http(s)://h/bucket */
    char zone[RING_ZONE_MAX];     /* "" when the ring has no zones */
    char region[RING_REGION_MAX]; /* S3 shards: "" for storage.s3_region */
    double weight;                /* > 0; 1 is a plain shard */
    uint64_t seed;                /* from the id: placement depends on ids, not list order */
    unsigned zone_idx;            /* index into the ring's distinct zones */
};

struct ring {
    size_t n;
    struct ring_shard *shards; /* n of them, in configuration order */
    unsigned replicas;         /* R: copies of every blob */
    unsigned write_quorum;     /* W: durable copies an upload waits for */
    unsigned nzones;           /* distinct zones (1 when none are given) */
    bool equal_weights;        /* fast path: rank by hash alone */
    uint64_t *seed;            /* n: the shards' seeds and weights packed for the lookup loop */
    double *weight;
    char epoch[RING_EPOCH_LEN + 1];
};

/*
 * ring_parse builds a ring from the text of storage.shards: entries separated
 * by commas or newlines, each "ID=URL[;zone=Z][;weight=W][;region=R]" (region: S3
 * shards only, overriding storage.s3_region); blank entries and
 * lines starting with '#' are ignored. replicas and write_quorum must satisfy
 * 1 <= W <= R <= number of shards. On error returns E_INVALID with a sentence
 * naming the entry in err (capacity cap) and sets *out to NULL. The caller
 * frees *out with ring_free.
 */
int ring_parse(const char *text, unsigned replicas, unsigned write_quorum, struct ring **out,
               char *err, size_t cap);

/*
 * ring_parse_spec is ring_parse for storage.shards as configured: "@/path"
 * reads the entries from that file (one per line), anything else is the text.
 */
int ring_parse_spec(const char *spec, unsigned replicas, unsigned write_quorum, struct ring **out,
                    char *err, size_t cap);

/* ring_free frees a ring; NULL is fine. */
void ring_free(struct ring *r);

/* ring_key_hash maps a blob key (64 hex digits; only the first 16 are read) to its 64-bit hash. */
uint64_t ring_key_hash(const char *key);

/*
 * ring_lookup_hash writes into out[0..n) the indexes of the n shards that
 * hold a key of hash h, in placement order, and returns how many it wrote
 * (min(n, shard count)). The first min(R, n) are the key's replicas: distinct
 * shards, on distinct zones while unused zones remain, by descending score.
 * Positions past R follow in descending score: where hinted copies go when
 * replicas are down. Deterministic, thread-safe, allocation-free.
 */
size_t ring_lookup_hash(const struct ring *r, uint64_t h, unsigned *out, size_t n);

/* ring_lookup is ring_lookup_hash of ring_key_hash(key). */
size_t ring_lookup(const struct ring *r, const char *key, unsigned *out, size_t n);

/* ring_parse_described parses the text of ring_describe (R and W from its first line). */
int ring_parse_described(const char *text, struct ring **out, char *err, size_t cap);

/* ring_find returns the index of the shard with id, or -1. */
int ring_find(const struct ring *r, const char *id);

/*
 * ring_describe returns (caller frees) the canonical text of the ring, what
 * its epoch hashes: "# replicas=R write_quorum=W" then one entry a line,
 * sorted by id. ring_parse_described reads it back.
 */
char *ring_describe(const struct ring *r);

/*
 * ring_without builds (*out, the caller frees it) the ring r without the shard id, with r's
 * R and W: what draining that shard moves to. E_NOTFOUND when r has no such shard;
 * E_INVALID when what is left cannot hold R copies of every blob (fewer shards than R), or
 * when r's copies are spread over at least R zones and what is left has fewer: a sentence
 * saying why in err (capacity cap) in both cases. Pure.
 */
int ring_without(const struct ring *r, const char *id, struct ring **out, char *err, size_t cap);

#endif
