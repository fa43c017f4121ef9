/*
 * meta.h - the metadata store interface: images, variants, blob reference counts.
 *
 * The source of truth for what exists. SQLite (WAL) is the embedded backend;
 * PostgreSQL implements the same calls. Invariant: a row never names a blob
 * that was not durably stored first (callers put blobs before rows), and a
 * blob's reference count equals the live images and variants that name it.
 * A blobs row outlives its last reference until a "release" job removed the
 * bytes (see meta_blob_release), so bytes are only ever removed under the
 * row's lock while nothing references or pins them.
 * Every function is thread-safe and may block.
 */
#ifndef META_META_H
#define META_META_H

#include "core/crypto.h"
#include "core/ident.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define META_FORMAT_MAX 8 /* "jpeg", "webp", ... and a NUL */
/* variant names: presets [a-z0-9_-]{1,31}; renditions their canonical "ops.ext" ([a-z0-9:,.]) */
#define META_VARIANT_MAX        64
#define META_OWNER_MAX          64
#define META_VARIANTS_PER_IMAGE 256 /* presets and renditions of one image */
#define META_RELEASE_MAX        (1 + META_VARIANTS_PER_IMAGE) /* the image blob and its variants */

struct image_rec {
    char id[IMAGE_ID_MAX + 1];
    int64_t seq;          /* listing order, assigned by the store on insert, grows */
    char key[SHA256_HEX]; /* blob key: sha256 of the stored bytes */
    char format[META_FORMAT_MAX];
    uint32_t width;
    uint32_t height;
    uint32_t frames;
    uint64_t bytes;
    int64_t created_at;          /* seconds since the epoch, UTC */
    char owner[META_OWNER_MAX];  /* API key id, "" for none */
    char token_hash[SHA256_HEX]; /* hex SHA-256 of the delete token */
};

struct variant_rec {
    char image_id[IMAGE_ID_MAX + 1];
    char name[META_VARIANT_MAX];
    char key[SHA256_HEX];
    char format[META_FORMAT_MAX];
    uint32_t width;
    uint32_t height;
    uint64_t bytes;
    int64_t used_at; /* seconds: last recorded use (renditions' LRU), its creation if never */
};

/*
 * Renditions (/i/{id}/t/) are the variants whose name holds ':' (a preset's
 * name cannot): they count against a disk budget, least recently used first
 * out; presets are never evicted.
 */
#define META_IS_RENDITION(name) (strchr((name), ':') != NULL)

/* One variant, by name (touches, evictions). */
struct meta_variant_ref {
    char image_id[IMAGE_ID_MAX + 1];
    char name[META_VARIANT_MAX];
};

#define META_EVICT_MAX 64 /* renditions one eviction transaction removes at most */

/* What meta_renditions_evict did. */
struct meta_evicted {
    uint64_t total; /* bytes of every rendition before */
    uint64_t bytes; /* bytes evicted */
    size_t n;       /* renditions evicted */
    bool skipped;   /* another process was evicting: nothing done */
    struct meta_variant_ref ref[META_EVICT_MAX];
};

/* Blob keys whose reference count reached zero: the caller removes those blobs. */
struct meta_released {
    size_t n;
    char keys[META_RELEASE_MAX][SHA256_HEX];
};

struct meta_store;

#define META_JOB_KIND_MAX    16
#define META_JOB_PAYLOAD_MAX 128
#define META_JOB_ERROR_MAX   256

/* Job kinds enqueued by the store itself (transactional outbox). */
#define META_JOB_VARIANTS "variants" /* payload: image id; make its preset variants */
#define META_JOB_RELEASE  "release"  /* payload: blob key; remove the bytes if unreferenced */
#define META_JOB_PURGE    "purge"    /* payload: "id:format" of a deleted image; purge the CDN */
/* payload "id/t/name": purge one rendition's URLs from the CDN (evicted, or its image deleted) */
#define META_JOB_PURGE_RENDITION "purgerendition"
/* payload "id/t/name": make a rendition in the background (auto's AVIF behind a WebP stand-in) */
#define META_JOB_RENDITION "rendition"

/* A claimed job: valid until its lease runs out; lease is the fencing token. */
struct meta_job {
    int64_t id;
    char kind[META_JOB_KIND_MAX];
    char payload[META_JOB_PAYLOAD_MAX];
    int attempts; /* claims so far, this one included */
    int64_t lease;
};

#define META_JOB_KINDS_MAX 16

/* The queue of one job kind. */
struct meta_job_kind_stats {
    char kind[META_JOB_KIND_MAX];
    int64_t queued;         /* waiting (due or backing off) */
    int64_t due;            /* waiting and due now */
    int64_t running;        /* leased */
    int64_t dead;           /* gave up after max attempts */
    int64_t oldest_due_age; /* seconds since the longest-waiting due job became due; 0: none */
};

struct meta_job_stats {
    int64_t queued;     /* waiting (due or backing off) */
    int64_t running;    /* leased */
    int64_t dead;       /* gave up after max attempts */
    int64_t oldest_age; /* seconds since the oldest queued or running job was enqueued */
    size_t nkinds;      /* by kind, in name order (kinds past META_JOB_KINDS_MAX: totals only) */
    struct meta_job_kind_stats kind[META_JOB_KINDS_MAX];
};

#define META_NODE_NAME_MAX 64
#define META_NODES_MAX     9

/* What a backend reports of each database server it talks to (readiness, metrics). */
struct meta_node {
    char name[META_NODE_NAME_MAX]; /* "primary", "replica-1", ... */
    char addr[META_NODE_NAME_MAX]; /* host:port ("" when not a server, e.g. SQLite) */
    const char *role;              /* "primary", "replica" or "sqlite" */
    bool reachable;
    bool usable;    /* reachable, not backing off and within the lag limit */
    int64_t lag_ms; /* replay lag (replicas), -1 unknown */
    int64_t queries;
    int64_t errors;
};

/* How meta_open finds the store. url "" means SQLite at sqlite_path. */
struct meta_options {
    const char *url;            /* postgresql:// URL or conninfo of the primary (multi-host ok) */
    const char *replicas;       /* comma-separated URLs, one per streaming replica; may be "" */
    const char *sqlite_path;    /* used when url is "" */
    int64_t max_replica_lag_ms; /* replicas lagging more are skipped */
    int64_t statement_timeout_ms;
    int64_t connect_timeout_ms;
    int pool;     /* idle connections kept per server */
    bool migrate; /* apply missing migrations at open (on PostgreSQL: only on a primary) */
};

/*
 * meta_open_sqlite opens (creating if needed) the SQLite database at path in
 * WAL mode and applies the embedded migrations. E_IO if it cannot.
 */
int meta_open_sqlite(const char *path, struct meta_store **out);

/*
 * meta_open opens the backend o names: SQLite when o->url is "", else
 * PostgreSQL (meta_open_pg). E_IO / E_UNAVAILABLE when it cannot.
 */
int meta_open(const struct meta_options *o, struct meta_store **out);

/*
 * meta_open_pg connects to the primary (o->url, libpq multi-host with
 * target_session_attrs=read-write) and the replicas, checks the schema
 * version (migrating first when o->migrate) and starts the background
 * health and lag monitor. E_UNAVAILABLE when no server answers, E_IO for a
 * schema it cannot use, E_INVALID when asked to migrate a replica.
 */
int meta_open_pg(const struct meta_options *o, struct meta_store **out);

/*
 * meta_migrate_pg applies the embedded PostgreSQL migrations on the primary
 * at url, in one transaction; OK when already current. E_INVALID when url
 * reaches a server in recovery (a replica), E_UNAVAILABLE when unreachable.
 * *from and *to (either may be NULL) get the versions before and after.
 */
int meta_migrate_pg(const char *url, int *from, int *to);

/* meta_backend is "sqlite" or "postgres". */
const char *meta_backend(const struct meta_store *ms);

/*
 * meta_nodes fills out[0..*n) (at most cap) with what the store knows of each
 * server, without blocking on the network (the monitor refreshes it).
 */
void meta_nodes(struct meta_store *ms, struct meta_node *out, size_t cap, size_t *n);

/* meta_close closes the store; NULL is fine. */
void meta_close(struct meta_store *ms);

/* meta_ping: OK when the store answers queries now, else E_UNAVAILABLE (readiness). */
int meta_ping(struct meta_store *ms);

/*
 * meta_image_insert records a new image and takes one reference on its blob
 * (creating the blob's row with one reference if new), and enqueues a
 * "variants" job for it, in one transaction.
 * Sets img->seq. E_EXISTS if the id is taken (live or deleted: ids are never
 * reused), E_INVALID for a malformed record (id, key, format, token_hash),
 * E_UNAVAILABLE when the database stays locked, E_NOSPACE on a full disk.
 */
int meta_image_insert(struct meta_store *ms, struct image_rec *img);

/*
 * meta_image_get fills *out for a live image; E_NOTFOUND if unknown or deleted
 * (also for an id that is not well-formed: it cannot exist).
 */
int meta_image_get(struct meta_store *ms, const char *id, struct image_rec *out);

/*
 * meta_image_list fills out[0..*n) with live images, newest first (seq
 * descending), those with seq < before (before <= 0: from the newest), at most
 * limit of them. Cost does not grow with the number of images (keyset on seq).
 */
int meta_image_list(struct meta_store *ms, int64_t before, size_t limit, struct image_rec *out,
                    size_t *n);

/*
 * meta_image_delete marks a live image deleted and, in the same transaction,
 * drops its variants and one reference from each blob it and its variants
 * named; keys whose count reached zero are reported in *rel (rel may be
 * NULL; rel->n is 0 on failure) and a "release" job is enqueued for each in
 * the same transaction, after one "purge" job (payload "id:format") that
 * evicts the image and its variants from the CDN, and one "purgerendition"
 * job per rendition (for purgers that purge by URL). E_NOTFOUND if unknown or
 * already deleted.
 */
int meta_image_delete(struct meta_store *ms, const char *id, struct meta_released *rel);

/* meta_variant_get fills *out; E_NOTFOUND when the variant was not made yet (or the image is gone).
 */
int meta_variant_get(struct meta_store *ms, const char *image_id, const char *name,
                     struct variant_rec *out);

/*
 * meta_variant_put records a made variant and takes one reference on its blob.
 * Idempotent: if the variant is already recorded, nothing changes
 * and OK is returned. E_NOTFOUND if the image is unknown or deleted,
 * E_INVALID for a malformed record (name: [a-z0-9_:,.-]{1,63}), E_TOOBIG if the
 * image already has META_VARIANTS_PER_IMAGE variants (so a delete can always
 * report every blob it releases in struct meta_released).
 */
int meta_variant_put(struct meta_store *ms, const struct variant_rec *v);

/*
 * meta_variants_touch records that the n variants of refs were used at now
 * (seconds), in one write transaction: the renditions' LRU. Rows gone
 * meanwhile are skipped. E_UNAVAILABLE while the primary takes no writes (the
 * caller drops the touches: recency is approximate).
 */
int meta_variants_touch(struct meta_store *ms, const struct meta_variant_ref *refs, size_t n,
                        int64_t now);

/*
 * meta_renditions_evict keeps the renditions within budget bytes: in one
 * write transaction, if their bytes exceed budget, it drops the least
 * recently used rendition rows (at most META_EVICT_MAX, enough to get under
 * budget when possible), one blob reference each (a release job for each
 * blob left unreferenced) and queues a "purge_rendition" job for each, and
 * reports them in *out. Presets are never evicted. One process evicts at a
 * time: another finds out->skipped. Stale rendition leases go too.
 */
int meta_renditions_evict(struct meta_store *ms, uint64_t budget, struct meta_evicted *out);

/*
 * meta_lease_take tries to lease the making of variant (image_id, name) for
 * holder (non-zero) until until_ms (wall clock ms): *got tells whether it is
 * ours now (no lease, an expired one, or ours already). E_UNAVAILABLE while
 * the primary takes no writes. meta_lease_drop ends holder's lease (others'
 * are left alone).
 */
int meta_lease_take(struct meta_store *ms, const char *image_id, const char *name, int64_t holder,
                    int64_t until_ms, bool *got);
int meta_lease_drop(struct meta_store *ms, const char *image_id, const char *name, int64_t holder);

/* meta_blob_refs sets *refs to the blob's reference count (0 when it has no row); E_INVALID bad
 * key. */
int meta_blob_refs(struct meta_store *ms, const char *key, int64_t *refs);

/*
 * meta_setting_get copies the value of a named setting that every service
 * must agree on (e.g. "ring.epoch") into value (capacity cap). E_NOTFOUND if
 * never set, E_TOOBIG if it does not fit. Names: [a-z0-9_.-]{1,63}.
 */
int meta_setting_get(struct meta_store *ms, const char *name, char *value, size_t cap);

/* meta_setting_set stores a named setting (insert or replace); E_INVALID bad name. */
int meta_setting_set(struct meta_store *ms, const char *name, const char *value);

/*
 * meta_blob_pin records that an upload (or a variant) is about to store the
 * blob key and reference it: until meta_blob_unpin no release removes the
 * bytes. Pin before writing the bytes, unpin after the row is committed (or
 * the write failed). E_INVALID bad key.
 */
int meta_blob_pin(struct meta_store *ms, const char *key, uint64_t bytes);

/*
 * meta_blob_unpin drops a pin; when nothing references or pins the blob any
 * more a release job is enqueued in the same transaction.
 */
int meta_blob_unpin(struct meta_store *ms, const char *key);

/* meta_release_fn removes the bytes of key from the blob store; OK when gone (or absent). */
typedef int meta_release_fn(void *arg, const char *key);

/*
 * meta_blob_release: in one write transaction holding the blob's row lock,
 * if the blob has neither references nor pins, calls fn to remove its bytes
 * and, if fn returned OK, drops the row. OK when released or already gone,
 * E_EXISTS when referenced or pinned again (nothing done), fn's error
 * (the row stays, the job retries). Idempotent.
 */
int meta_blob_release(struct meta_store *ms, const char *key, meta_release_fn *fn, void *arg);

/* ---- garbage collection (tessera gc): see docs/operations.md ---- */

/* A blobs row as gc sees it. */
struct meta_blob {
    char key[SHA256_HEX];
    int64_t refs;
    int64_t pins;
    uint64_t bytes;
    int64_t created_at; /* seconds since the epoch */
    int64_t pinned_at;  /* seconds since the epoch of the last pin, 0 never pinned */
};

/* What gc would collect with the given cutoffs (meta_gc_count). */
struct meta_gc_cutoffs {
    int64_t created_before; /* seconds: blobs rows created before this may go */
    int64_t pinned_before;  /* seconds: pins taken before this are stale */
    int64_t job_before_ms;  /* ms: dead jobs whose last attempt is before this go */
};

struct meta_gc_counts {
    int64_t stale_pins; /* rows with pins whose last pin is stale */
    uint64_t stale_pin_bytes;
    int64_t unused; /* refs 0, no pin (or only a stale one), created before the cutoff */
    uint64_t unused_bytes;
    int64_t dead_variants; /* variants rows whose image is deleted */
    uint64_t dead_variant_bytes;
    int64_t dead_jobs;
};

/*
 * meta_blob_get fills *out with key's blobs row, read on the primary (it
 * decides what is removed). E_NOTFOUND when the blob has no row, E_INVALID bad key.
 */
int meta_blob_get(struct meta_store *ms, const char *key, struct meta_blob *out);

/* meta_gc_count counts, on the primary, what each gc category holds for cutoffs c. */
int meta_gc_count(struct meta_store *ms, const struct meta_gc_cutoffs *c,
                  struct meta_gc_counts *out);

/*
 * meta_blob_list_unused fills out[0..*n) (at most cap) with the blobs rows
 * that have neither references nor pins and were created before
 * created_before, in key order after after ("": from the first); *n < cap
 * means the end. Read on the primary. The caller removes them with
 * meta_blob_release, which checks again under the row lock.
 */
int meta_blob_list_unused(struct meta_store *ms, const char *after, int64_t created_before,
                          struct meta_blob *out, size_t cap, size_t *n);

/*
 * meta_blob_unpin_stale clears the pins of every blob last pinned before
 * pinned_before (seconds): an upload that crashed between its blob write and
 * its unpin. In the same transaction a release job is queued for each blob
 * left without references, as meta_blob_unpin does. *n gets the rows reset.
 * The cutoff must be older than any upload in flight can be.
 */
int meta_blob_unpin_stale(struct meta_store *ms, int64_t pinned_before, int64_t *n);

/*
 * meta_blob_collect_orphan removes bytes that have no blobs row: in one write
 * transaction that holds a claim on key which a concurrent meta_blob_pin (or
 * reference) waits for, it checks that key still has no row, calls fn to
 * remove the bytes and drops the claim. So an upload that pins key either
 * comes first (E_EXISTS: nothing removed) or waits and writes its bytes after
 * fn removed the old ones. OK when removed, E_EXISTS when key has a row, fn's
 * error (nothing changed). Keep fn short: uploads of key wait for it.
 */
int meta_blob_collect_orphan(struct meta_store *ms, const char *key, meta_release_fn *fn,
                             void *arg);

/*
 * meta_variants_drop_dead drops up to limit variants rows whose image is
 * deleted (none should remain: a delete drops them in its transaction) and
 * one reference from each of their blobs, queueing a release job for each
 * blob left unreferenced, in one transaction. *n and *bytes get what went.
 */
int meta_variants_drop_dead(struct meta_store *ms, size_t limit, int64_t *n, uint64_t *bytes);

/* meta_job_purge_dead deletes dead jobs whose last attempt is before before_ms; *n: how many. */
int meta_job_purge_dead(struct meta_store *ms, int64_t before_ms, int64_t *n);

/* meta_job_enqueue queues a job due in delay_ms; kind [a-z]{1,15}, payload < 128 bytes. */
int meta_job_enqueue(struct meta_store *ms, const char *kind, const char *payload,
                     int64_t delay_ms);

/*
 * meta_job_claim leases the oldest due job (queued and due, or running with
 * an expired lease: its worker died) for lease_ms, skipping jobs other
 * workers hold (FOR UPDATE SKIP LOCKED). E_NOTFOUND when none is due.
 */
int meta_job_claim(struct meta_store *ms, int64_t lease_ms, struct meta_job *out);

/* meta_job_done removes a finished job. E_NOTFOUND when the lease was lost (another owns it). */
int meta_job_done(struct meta_store *ms, const struct meta_job *job);

/*
 * meta_job_fail records an error: the job is queued again in retry_ms, or
 * becomes dead when it was claimed max_attempts times. E_NOTFOUND when the
 * lease was lost.
 */
int meta_job_fail(struct meta_store *ms, const struct meta_job *job, const char *error,
                  int max_attempts, int64_t retry_ms);

/*
 * meta_job_extend renews a claim: the job stays ours for lease_ms from now.
 * The job runner calls it while a handler runs, so a lease runs out only
 * when its worker died or hung. E_NOTFOUND when the lease was already lost.
 */
int meta_job_extend(struct meta_store *ms, const struct meta_job *job, int64_t lease_ms);

/* meta_job_stats counts jobs by state, in all and by kind, read on the primary. */
int meta_job_stats(struct meta_store *ms, struct meta_job_stats *st);

/* meta_image_count sets *n to the number of live images (for metrics and tests). */
int meta_image_count(struct meta_store *ms, int64_t *n);

/*
 * meta_may_block tells whether calls may wait on the network (a database
 * server): callers then keep them off threads that serve other connections.
 */
bool meta_may_block(const struct meta_store *ms);

#endif
