/*
 * meta_int.h - what the metadata backends share inside src/meta/: the ops table.
 *
 * struct meta_store is an ops table plus the backend's own state; meta.c checks
 * the arguments once and dispatches, so a backend only ever sees valid records
 * (ids, keys and names already checked, strings NUL-terminated in their arrays).
 */
#ifndef META_META_INT_H
#define META_META_INT_H

#include "meta/meta.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Keys collected in a transaction (grown with xrealloc). */
struct meta_keys {
    char (*v)[SHA256_HEX];
    size_t n, cap;
};

void meta_keys_add(struct meta_keys *k, const char *key);
void meta_keys_release(struct meta_keys *k);

/* A write transaction of a backend: what its statements run on. */
struct meta_tx {
    const struct meta_tx_ops *ops;
    void *be;   /* the backend's state */
    void *conn; /* the backend's connection of this transaction */
};

typedef int meta_tx_body_fn(struct meta_tx *tx, void *arg);

/*
 * The statements the reference-counting protocols of meta_refs.c are written
 * with. Each runs inside tx and returns OK, a definite answer (E_NOTFOUND,
 * E_EXISTS as documented) or the backend's error, which the protocol passes
 * on unchanged (the backend's write then rolls back, or retries).
 */
struct meta_tx_ops {
    /*
     * write runs body in one write transaction (PostgreSQL: on the primary;
     * SQLite: BEGIN IMMEDIATE on the writer): commits when body returned OK,
     * else rolls back; returns body's status or the commit's failure. The
     * backend may run body again when the transaction failed before anything
     * was known to be committed (a stale session, a serialization failure).
     */
    int (*write)(void *be, meta_tx_body_fn *body, void *arg);
    /* image_inserted (may be NULL) is told of an image committed by this process. */
    void (*image_inserted)(void *be, const char *id);
    int (*image_insert)(struct meta_tx *tx, struct image_rec *img); /* sets seq; E_EXISTS id */
    /* image_mark_deleted tombstones a live image; its key and format out; E_NOTFOUND. */
    int (*image_mark_deleted)(struct meta_tx *tx, const char *id, char key[SHA256_HEX],
                              char format[META_FORMAT_MAX]);
    /* image_live: OK for a live image, locked against a delete until commit; E_NOTFOUND. */
    int (*image_live)(struct meta_tx *tx, const char *id);
    int (*variant_insert)(struct meta_tx *tx, const struct variant_rec *v, bool *inserted);
    int (*variant_count)(struct meta_tx *tx, const char *image_id, int64_t *n);
    /* variants_drop deletes an image's variant rows, adding their keys to out. */
    int (*variants_drop)(struct meta_tx *tx, const char *image_id, struct meta_keys *out);
    /* variants_drop_dead deletes up to limit variant rows of deleted images (keys, bytes out). */
    int (*variants_drop_dead)(struct meta_tx *tx, size_t limit, struct meta_keys *out,
                              uint64_t *bytes);
    int (*blob_ref)(struct meta_tx *tx, const char *key, uint64_t bytes); /* row made at 1 */
    /* blob_unref: one reference less; the counts after; E_NOTFOUND no row. */
    int (*blob_unref)(struct meta_tx *tx, const char *key, int64_t *refs, int64_t *pins);
    int (*blob_pin)(struct meta_tx *tx, const char *key, uint64_t bytes); /* row made at 0 refs */
    /* blob_unpin: one pin less; the counts after; E_NOTFOUND no row or no pin. */
    int (*blob_unpin)(struct meta_tx *tx, const char *key, int64_t *refs, int64_t *pins);
    /* blob_unpin_stale: pins older than before reset; keys left with no reference out. */
    int (*blob_unpin_stale)(struct meta_tx *tx, int64_t before, struct meta_keys *unreferenced,
                            int64_t *reset);
    /* blob_lock: the row's counts, the row held until commit (pins wait); E_NOTFOUND. */
    int (*blob_lock)(struct meta_tx *tx, const char *key, int64_t *refs, int64_t *pins);
    /* blob_claim: a hold on a key with no row that a pin waits for; E_EXISTS it has a row. */
    int (*blob_claim)(struct meta_tx *tx, const char *key);
    int (*blob_drop)(struct meta_tx *tx, const char *key); /* the row (or claim), if unused */
    int (*job_insert)(struct meta_tx *tx, const char *kind, const char *payload, int64_t delay_ms);
    /* variant_touch sets a variant's used_at (a row gone is no error). */
    int (*variant_touch)(struct meta_tx *tx, const struct meta_variant_ref *v, int64_t now);
    /* variant_delete drops one variant row; its key out; E_NOTFOUND when gone. */
    int (*variant_delete)(struct meta_tx *tx, const struct meta_variant_ref *v,
                          char key[SHA256_HEX]);
    /* evict_lock: *got false when another transaction evicts now (held until commit). */
    int (*evict_lock)(struct meta_tx *tx, bool *got);
    int (*renditions_bytes)(struct meta_tx *tx, uint64_t *total);
    /* renditions_oldest: up to cap renditions, least recently used first, with their bytes. */
    /* renditions_of: up to cap renditions of one image (names out). */
    int (*renditions_of)(struct meta_tx *tx, const char *image_id, size_t cap,
                         struct meta_variant_ref *out, size_t *n);
    int (*renditions_oldest)(struct meta_tx *tx, size_t cap, struct meta_variant_ref *out,
                             uint64_t *bytes, size_t *n);
    /* lease_take: *got when (image_id, name) had no live lease or holder's; then it is until. */
    int (*lease_take)(struct meta_tx *tx, const struct meta_variant_ref *v, int64_t holder,
                      int64_t until_ms, int64_t now_ms, bool *got);
    int (*lease_drop)(struct meta_tx *tx, const struct meta_variant_ref *v, int64_t holder);
    int (*leases_drop_stale)(struct meta_tx *tx, int64_t before_ms); /* expired before */
};

/* The protocols (meta_refs.c), dispatched to by meta.c once the arguments are checked. */
int meta_refs_image_insert(struct meta_store *ms, struct image_rec *img);
int meta_refs_image_delete(struct meta_store *ms, const char *id, struct meta_released *rel);
int meta_refs_variant_put(struct meta_store *ms, const struct variant_rec *v);
int meta_refs_blob_pin(struct meta_store *ms, const char *key, uint64_t bytes);
int meta_refs_blob_unpin(struct meta_store *ms, const char *key);
int meta_refs_blob_release(struct meta_store *ms, const char *key, meta_release_fn *fn, void *arg);
int meta_refs_blob_collect_orphan(struct meta_store *ms, const char *key, meta_release_fn *fn,
                                  void *arg);
int meta_refs_blob_unpin_stale(struct meta_store *ms, int64_t pinned_before, int64_t *n);
int meta_refs_variants_drop_dead(struct meta_store *ms, size_t limit, int64_t *n, uint64_t *bytes);
int meta_refs_variants_touch(struct meta_store *ms, const struct meta_variant_ref *refs, size_t n,
                             int64_t now);
int meta_refs_renditions_evict(struct meta_store *ms, uint64_t budget, struct meta_evicted *out);
int meta_refs_lease_take(struct meta_store *ms, const struct meta_variant_ref *v, int64_t holder,
                         int64_t until_ms, bool *got);
int meta_refs_lease_drop(struct meta_store *ms, const struct meta_variant_ref *v, int64_t holder);

/* Each call receives the backend state given to meta_store_new; same contracts as meta.h. */
struct meta_ops {
    const char *name;             /* "sqlite", "postgres": for log lines */
    const struct meta_tx_ops *tx; /* the statements of the write protocols */
    void (*close)(void *be);
    int (*ping)(void *be);
    int (*image_get)(void *be, const char *id, struct image_rec *out);
    int (*image_list)(void *be, int64_t before, size_t limit, struct image_rec *out, size_t *n);
    int (*variant_get)(void *be, const char *image_id, const char *name, struct variant_rec *out);
    int (*blob_refs)(void *be, const char *key, int64_t *refs);
    int (*image_count)(void *be, int64_t *n);
    int (*setting_get)(void *be, const char *name, char *value, size_t cap);
    int (*setting_set)(void *be, const char *name, const char *value);
    int (*blob_get)(void *be, const char *key, struct meta_blob *out);
    int (*gc_count)(void *be, const struct meta_gc_cutoffs *c, struct meta_gc_counts *out);
    int (*blob_list_unused)(void *be, const char *after, int64_t created_before,
                            struct meta_blob *out, size_t cap, size_t *n);
    int (*job_purge_dead)(void *be, int64_t before_ms, int64_t *n);
    int (*job_enqueue)(void *be, const char *kind, const char *payload, int64_t delay_ms);
    int (*job_claim)(void *be, int64_t lease_ms, struct meta_job *out);
    int (*job_done)(void *be, const struct meta_job *job);
    int (*job_fail)(void *be, const struct meta_job *job, const char *error, int max_attempts,
                    int64_t retry_ms);
    int (*job_extend)(void *be, const struct meta_job *job, int64_t lease_ms);
    int (*job_stats)(void *be, struct meta_job_stats *st);
    void (*nodes)(void *be, struct meta_node *out, size_t cap, size_t *n);
};

/* meta_now_ms is the wall clock in milliseconds: job times are compared in it. */
int64_t meta_now_ms(void);

/*
 * meta_job_stats_add adds one kind's row of the stats query to st (the totals
 * and, while there is room, the kind's entry): v = queued, running, dead, the
 * oldest live job's created_at, due, the oldest due job's run_after (times in
 * ms, 0: none), measured against now.
 */
void meta_job_stats_add(struct meta_job_stats *st, const char *kind, const int64_t v[6],
                        int64_t now);

/* meta_lease_new is a random non-zero fencing token for a job claim. */
int64_t meta_lease_new(void);

struct meta_store {
    const struct meta_ops *ops;
    const struct meta_tx_ops *tx; /* ops->tx */
    void *be;
};

/* meta_store_new wraps a backend's state; meta_close later calls ops->close(be). */
struct meta_store *meta_store_new(const struct meta_ops *ops, void *be);

/*
 * The SQLite listing query (exported so test_meta can check with EXPLAIN QUERY
 * PLAN that it walks the partial index instead of scanning or sorting).
 */
extern const char meta_sqlite_list_sql[];

/* The schema version the SQLite migrations bring a database to (PRAGMA user_version). */
extern const int meta_sqlite_schema_version;

/* The PostgreSQL schema version and its listing query (for EXPLAIN in test_meta). */
extern const int meta_pg_schema_version;
extern const char meta_pg_list_sql[];

#endif
