/*
 * runtime.h - the one place where a process opens what it runs on.
 *
 * Every role and admin command names the parts it needs; runtime_open opens
 * them from the configuration in dependency order (image library, metadata
 * store, blob store checked against the ring in force, metadata cache, CDN
 * purger) and runtime_close releases them in reverse. Nothing else in the
 * program turns settings into open stores.
 */
#ifndef APP_RUNTIME_H
#define APP_RUNTIME_H

#include "config/config.h"

#include <limits.h>
#include <stdbool.h>

struct meta_store;
struct blob_store;
struct cache;
struct cdn;
struct ring_follow;

enum runtime_part {
    RT_IMAGE = 1u << 0,      /* libvips (image.concurrency, image.cache_bytes) */
    RT_META = 1u << 1,       /* the metadata store: db.url (+ db.replicas), else SQLite */
    RT_MIGRATE = 1u << 2,    /* with RT_META: apply the embedded migrations on open */
    RT_BLOBS = 1u << 3,      /* the ring of storage.shards, else storage.blobs or data_dir/blobs */
    RT_RING = 1u << 4,       /* with RT_BLOBS: the ring is required (admin commands) */
    RT_BLOB_CACHE = 1u << 5, /* with RT_BLOBS: local copies when the store is remote */
    RT_CACHE = 1u << 6,      /* the metadata cache (LRU, Redis Cluster) */
    RT_LOCAL_DELETES = 1u << 7, /* with RT_CACHE: every delete happens in this process */
    RT_CDN = 1u << 8,           /* the purger of cdn.purger (none when unset) */
    RT_RING_FOLLOW = 1u << 9,   /* with RT_BLOBS: follow ring changes live (services) */
};

#define RUNTIME_BASE_URL_MAX 512

struct runtime {
    const struct config *cfg;
    unsigned parts;          /* what runtime_open opened */
    char data_dir[PATH_MAX]; /* storage.data_dir, absolute */
    char tmp_dir[PATH_MAX];  /* data_dir/tmp: same file system as file:// blobs */
    char db_path[PATH_MAX];  /* the SQLite file (when db.url is empty) */
    char blob_url[PATH_MAX + 16];
    char
        base_url[RUNTIME_BASE_URL_MAX]; /* public URLs: cdn.base_url, server.public_url or listen */
    struct meta_store *meta;
    struct blob_store *blobs;
    struct blob_store *ring_switch; /* with RT_RING_FOLLOW and a ring: under blobs, swapped live */
    struct ring_follow *follow;     /* the thread that swaps it */
    struct cache *cache;            /* NULL when the configuration asks for none */
    struct cdn *cdn;                /* NULL when cdn.purger is empty */
};

/*
 * runtime_open opens the parts of cfg (borrowed: it must outlive rt) named
 * by parts (enum runtime_part) into rt. Creates data_dir and its tmp/
 * directory. With RT_BLOBS and storage.shards set, the configured ring must
 * be the ring in force (recorded in the metadata store; recorded now when
 * none is): E_INVALID otherwise. On failure logs why, closes what was
 * opened and returns the error (E_INVALID, E_IO, E_UNAVAILABLE, ...).
 * Blocks (connects to servers); call from one thread at start-up.
 */
int runtime_open(const struct config *cfg, unsigned parts, struct runtime *rt);

/*
 * runtime_check_config checks the settings runtime_open turns into modules'
 * options that config.c cannot judge (the ring's shard list): a
 * config_check_fn, registered by the command line before loading.
 */
int runtime_check_config(const struct config *cfg, char *why, size_t cap);

struct blob_ring_opts;

/*
 * runtime_ring_opts fills o from the storage section of rt's configuration: timeouts,
 * back-off, the S3 settings, rt's tmp_dir (o borrows rt's and the configuration's strings).
 */
void runtime_ring_opts(const struct runtime *rt, struct blob_ring_opts *o);

struct jobs_opts;

/* runtime_jobs_opts fills o from the jobs section of cfg. */
void runtime_jobs_opts(const struct config *cfg, struct jobs_opts *o);

/* runtime_close releases everything runtime_open opened; a zeroed rt is fine. */
void runtime_close(struct runtime *rt);

/*
 * runtime_base_url writes the base of public URLs (cdn.base_url, else
 * server.public_url, else http://<server.listen>; no trailing /) into out
 * (capacity cap). Opens nothing; thread-safe.
 */
void runtime_base_url(const struct config *cfg, char *out, size_t cap);

#endif
