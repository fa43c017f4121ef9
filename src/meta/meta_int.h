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
};

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

#endif
