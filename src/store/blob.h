/*
 * blob.h - the blob store interface: immutable bytes addressed by their SHA-256.
 *
 * A blob is written once and never changed. Keys are validated as 64 lowercase
 * hex digits before they touch a path. Today's backend is a file:// shard (a
 * local directory); the ring and remote storage nodes implement the same calls.
 * Every function is thread-safe and may block on disk I/O.
 */
#ifndef STORE_BLOB_H
#define STORE_BLOB_H

#include "core/ident.h" /* BLOB_KEY_LEN */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct blob_store;

/*
 * blob_store_open opens the store at url ("file:///abs/path"), creating the
 * directory if needed. E_INVALID for a bad url, E_IO if it cannot be used.
 */
int blob_store_open(const char *url, struct blob_store **out);

/* blob_store_free closes the store; NULL is fine. */
void blob_store_free(struct blob_store *bs);

/*
 * blob_put_path stores the file at src_path under key, durably: written to a
 * temporary file in the store, fsynced, renamed into place, directory fsynced.
 * Idempotent: if the blob is already there it returns OK without writing.
 * The caller guarantees key is the SHA-256 of the file. E_INVALID bad key,
 * E_NOSPACE disk full, E_IO otherwise (no partial blob is ever visible).
 */
int blob_put_path(struct blob_store *bs, const char *key, const char *src_path);

/*
 * blob_open opens the blob for reading: *fd (the caller closes it) and *size.
 * A local backend returns a real file so it can be sent with sendfile.
 * E_NOTFOUND if absent, E_INVALID bad key, E_IO.
 */
int blob_open(struct blob_store *bs, const char *key, int *fd, uint64_t *size);

/*
 * blob_peek is blob_open when it needs no network request (a local backend,
 * or the copy a local blob cache holds), for a thread that must not block;
 * E_AGAIN when only blob_open can tell.
 */
int blob_peek(struct blob_store *bs, const char *key, int *fd, uint64_t *size);

/* blob_exists sets *exists; E_INVALID bad key, E_IO. */
int blob_exists(struct blob_store *bs, const char *key, bool *exists);

/* blob_delete removes the blob; OK if it was not there. E_INVALID bad key, E_IO. */
int blob_delete(struct blob_store *bs, const char *key);

/*
 * blob_tmp_path writes into buf (capacity cap) a fresh unique path for a
 * temporary file on the same filesystem as the store, for callers that build
 * a file to put. E_INVALID if it does not fit.
 */
int blob_tmp_path(struct blob_store *bs, char *buf, size_t cap);

/* blob_store_check tells whether the store can take writes now (readiness): OK or E_UNAVAILABLE. */
int blob_store_check(struct blob_store *bs);

/*
 * blob_store_why writes into buf (capacity cap) why the last blob_store_check failed, naming
 * the shard and the setting when the backend knows ("S3 bucket x does not exist at ..."),
 * or "" when it has nothing to add to the status. Never blocks; thread-safe.
 */
void blob_store_why(struct blob_store *bs, char *buf, size_t cap);

#define BLOB_SHARD_ID_MAX 32
#define BLOB_EPOCH_MAX    16

/* A shard of the ring behind a store, as this process sees it (metrics, status page). */
struct blob_shard_state {
    char id[BLOB_SHARD_ID_MAX + 1];
    char addr[128]; /* host:port of a storage node, else the shard URL's start */
    bool up;        /* its last probe answered and it is not backing off after a failure */
};

/*
 * blob_store_shards fills out (capacity cap) with the shards of the ring in
 * force behind bs (through a ring switch) and epoch with its epoch; returns
 * how many (0: bs is not a ring store, epoch then ""). Never blocks (reports
 * the last blob_store_check); thread-safe.
 */
size_t blob_store_shards(struct blob_store *bs, struct blob_shard_state *out, size_t cap,
                         char epoch[BLOB_EPOCH_MAX + 1]);

/* One blob of a listing. */
struct blob_entry {
    char key[BLOB_KEY_LEN + 1];
    uint64_t size;
    int64_t mtime; /* seconds since the epoch: when this copy was stored */
};

/*
 * blob_list fills out[0..*n) with at most cap blobs whose keys sort after
 * after ("" or NULL: from the first), in key order; *n < cap means the end.
 * Cost grows with cap, not with the store. E_INVALID for a bad after,
 * E_UNSUPPORTED for a store that cannot list (a ring: list each shard),
 * E_UNAVAILABLE / E_IO otherwise.
 */
int blob_list(struct blob_store *bs, const char *after, struct blob_entry *out, size_t cap,
              size_t *n);

/* blob_each_fn is called for each listed blob; anything but OK stops the walk. */
typedef int blob_each_fn(void *arg, const struct blob_entry *e);

/*
 * blob_each walks the whole listing of bs in key order, a page at a time
 * (BLOB_EACH_PAGE entries, allocated once), calling fn for each blob.
 * Returns OK after the last, or the first error of blob_list or fn. Blocks.
 */
int blob_each(struct blob_store *bs, blob_each_fn *fn, void *arg);

#define BLOB_EACH_PAGE 1000

/*
 * blob_quarantined fills out[0..*n) with at most cap copies the store's scrubber set aside
 * (a storage node's quarantine: failed their check, kept, never served). E_UNSUPPORTED for
 * a store without one; E_UNAVAILABLE / E_IO otherwise. Blocks.
 */
int blob_quarantined(struct blob_store *bs, struct blob_entry *out, size_t cap, size_t *n);

/*
 * blob_store_may_block tells whether calls may wait on the network (a remote
 * shard): callers then keep them off threads that serve other connections.
 */
bool blob_store_may_block(const struct blob_store *bs);

#endif
