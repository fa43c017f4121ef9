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

/* Each call receives the backend state given to meta_store_new; same contracts as meta.h. */
struct meta_ops {
    const char *name; /* "sqlite", "postgres": for log lines */
    void (*close)(void *be);
    int (*ping)(void *be);
    int (*image_insert)(void *be, struct image_rec *img);
    int (*image_get)(void *be, const char *id, struct image_rec *out);
    int (*image_list)(void *be, int64_t before, size_t limit, struct image_rec *out, size_t *n);
    int (*image_delete)(void *be, const char *id, struct meta_released *rel);
    int (*variant_get)(void *be, const char *image_id, const char *name, struct variant_rec *out);
    int (*variant_put)(void *be, const struct variant_rec *v);
    int (*blob_refs)(void *be, const char *key, int64_t *refs);
    int (*image_count)(void *be, int64_t *n);
    int (*setting_get)(void *be, const char *name, char *value, size_t cap);
    int (*setting_set)(void *be, const char *name, const char *value);
    int (*blob_pin)(void *be, const char *key, uint64_t bytes);
    int (*blob_unpin)(void *be, const char *key);
    int (*blob_release)(void *be, const char *key, meta_release_fn *fn, void *arg);
    int (*blob_get)(void *be, const char *key, struct meta_blob *out);
    int (*gc_count)(void *be, const struct meta_gc_cutoffs *c, struct meta_gc_counts *out);
    int (*blob_list_unused)(void *be, const char *after, int64_t created_before,
                            struct meta_blob *out, size_t cap, size_t *n);
    int (*blob_unpin_stale)(void *be, int64_t pinned_before, int64_t *n);
    int (*blob_collect_orphan)(void *be, const char *key, meta_release_fn *fn, void *arg);
    int (*variants_drop_dead)(void *be, size_t limit, int64_t *n, uint64_t *bytes);
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

/* meta_lease_new is a random non-zero fencing token for a job claim. */
int64_t meta_lease_new(void);

struct meta_store {
    const struct meta_ops *ops;
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
