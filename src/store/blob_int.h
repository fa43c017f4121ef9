/*
 * blob_int.h - what the blob backends share inside src/store/: the ops table.
 *
 * struct blob_store is an ops table plus the backend's own state; blob.c checks
 * keys once (64 lowercase hex, before any backend builds a path from one) and
 * dispatches, so backends (file:// today, a ring of remote shards later) only
 * ever see valid keys.
 */
#ifndef STORE_BLOB_INT_H
#define STORE_BLOB_INT_H

#include "core/crypto.h"
#include "store/blob.h"

/* Each call receives the backend state given to blob_store_new; same contracts as blob.h. */
struct blob_ops {
    const char *name; /* "file": for log lines */
    void (*free)(void *be);
    int (*put_path)(void *be, const char *key, const char *src_path);
    int (*open)(void *be, const char *key, int *fd, uint64_t *size);
    int (*exists)(void *be, const char *key, bool *exists);
    int (*del)(void *be, const char *key);
    int (*tmp_path)(void *be, char *buf, size_t cap);
    int (*check)(void *be);
    void (*why)(void *be, char *buf, size_t cap); /* NULL: check's status says it all */
    int (*list)(void *be, const char *after, struct blob_entry *out, size_t cap, size_t *n);
    bool (*may_block)(void *be); /* NULL: local disk only */
    /* NULL: not a ring */
    size_t (*shards)(void *be, struct blob_shard_state *out, size_t cap, char *epoch);
    /* open without a network request (a local copy), else E_AGAIN; NULL: open if !may_block */
    int (*peek)(void *be, const char *key, int *fd, uint64_t *size);
    int (*quarantined)(void *be, struct blob_entry *out, size_t cap, size_t *n); /* NULL: none */
};

struct blob_store {
    const struct blob_ops *ops;
    void *be;
};

/*
 * blob_tmp_name writes "dir/<32 random hex digits>.tmp" into buf (capacity
 * cap): a fresh temporary name shared by every backend. E_INVALID if it does
 * not fit.
 */
int blob_tmp_name(const char *dir, char *buf, size_t cap);

/*
 * blob_tmp_unlinked opens a new read-write file in dir that has no name (O_TMPFILE, else a
 * temporary unlinked at once): downloads from remote shards disappear with their last
 * descriptor. Returns the descriptor, or -1 with errno set.
 */
int blob_tmp_unlinked(const char *dir);

/* blob_store_new wraps a backend's state; blob_store_free later calls ops->free(be). */
struct blob_store *blob_store_new(const struct blob_ops *ops, void *be);

/*
 * blob_file_open opens the file:// backend rooted at the absolute directory
 * root (created if needed) and removes temporaries older than an hour that a
 * crash left in root/tmp. E_INVALID if root is not absolute, E_IO if unusable.
 */
int blob_file_open(const char *root, struct blob_store **out);

/*
 * blob_file_quarantine moves the copy of key that is open at fd out of the file:// store bs
 * into the directory dir (same filesystem, created if needed) as "<key>.<unix seconds>", and
 * fsyncs both directories: the store no longer lists or serves it, and its bytes are kept.
 * E_NOTFOUND when the file under key's name is no longer the one open at fd (deleted, or
 * replaced by a new put): nothing moved. E_INVALID if bs is not a file:// store; E_IO.
 * The name it got goes into moved (capacity cap). Blocks; thread-safe.
 */
int blob_file_quarantine(struct blob_store *bs, const char *key, int fd, const char *dir,
                         char *moved, size_t cap);

/*
 * blob_http_open opens a client of the `tessera storage` node at base
 * ("http://host:port"). Downloads go to unlinked files in tmp_dir (local).
 * Timeouts in milliseconds: to connect, and of no progress while reading.
 * key (copied; NULL or len 0: unsigned) signs every request (node_auth.h).
 */
int blob_http_open(const char *base, const char *tmp_dir, long connect_ms, long read_ms,
                   const struct secret *key, struct blob_store **out);

#endif
