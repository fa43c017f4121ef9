/*
 * meta_sqlite.c - the embedded metadata backend: one SQLite database in WAL mode.
 *
 * Connections: one writer connection behind a mutex (every write is one BEGIN
 * IMMEDIATE transaction on it) and a fixed pool of query_only reader
 * connections, so a read never queues behind a slow write (WAL readers see the
 * last commit and never block on the writer). synchronous=FULL: a commit that
 * returned has been fsynced and survives a crash or a power loss.
 * Invariants: a variants row exists only while its image is live (put checks
 * liveness and delete drops the rows in the same transaction); a blobs row
 * exists while its refs or pins count is positive, or while a release job for
 * it is queued; the bytes are removed only under the write lock (the row's
 * lock here) while refs and pins are both zero. The job queue has the same
 * semantics as on PostgreSQL: the single writer stands in for SKIP LOCKED.
 */
#include "core/codec.h"
#include "core/err.h"
#include "core/log.h"
#include "core/xalloc.h"
#include "meta/meta_int.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SQ_READERS    4    /* reader connections in the pool */
#define SQ_BUSY_MS    5000 /* how long a statement waits for another process's lock */
#define SQ_ACQUIRE_MS 5000 /* how long a read waits for a free reader connection */

/*
 * Embedded migrations: entry i brings the schema from version i to i + 1
 * (PRAGMA user_version). Append only; never edit an entry that shipped.
 */
static const char *const sq_migrations[] = {
    /* 1: images, blobs, variants */
    "CREATE TABLE images ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT," /* grows, never reused: listing order */
    "  id TEXT NOT NULL UNIQUE,"
    "  key TEXT NOT NULL CHECK (length(key) = 64),"
    "  format TEXT NOT NULL,"
    "  width INTEGER NOT NULL,"
    "  height INTEGER NOT NULL,"
    "  frames INTEGER NOT NULL,"
    "  bytes INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  owner TEXT," /* API key id, NULL for none */
    "  token_hash TEXT NOT NULL,"
    "  deleted_at INTEGER" /* NULL while live; the row stays so the id is never reused */
    ");"
    /* Keyset listing walks only live rows: O(limit) however many were deleted. */
    "CREATE INDEX images_live ON images(seq) WHERE deleted_at IS NULL;"
    "CREATE TABLE blobs ("
    "  key TEXT PRIMARY KEY CHECK (length(key) = 64),"
    "  refs INTEGER NOT NULL CHECK (refs >= 0),"
    "  bytes INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE TABLE variants ("
    "  image_id TEXT NOT NULL REFERENCES images(id),"
    "  name TEXT NOT NULL,"
    "  key TEXT NOT NULL CHECK (length(key) = 64),"
    "  format TEXT NOT NULL,"
    "  width INTEGER NOT NULL,"
    "  height INTEGER NOT NULL,"
    "  bytes INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  PRIMARY KEY (image_id, name)"
    ") WITHOUT ROWID;",
    /* 2: settings every service must agree on (the ring epoch) */
    "CREATE TABLE settings ("
    "  name TEXT PRIMARY KEY,"
    "  value TEXT NOT NULL,"
    "  updated_at INTEGER NOT NULL"
    ") WITHOUT ROWID;",
    /* 3: blob pins (uploads in flight) and the job queue */
    "ALTER TABLE blobs ADD COLUMN pins INTEGER NOT NULL DEFAULT 0 CHECK (pins >= 0);"
    "ALTER TABLE blobs ADD COLUMN pinned_at INTEGER;"
    "CREATE TABLE jobs ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  kind TEXT NOT NULL,"
    "  payload TEXT NOT NULL,"
    "  state TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'dead')),"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  run_after INTEGER NOT NULL," /* ms since the epoch */
    "  lease_until INTEGER,"
    "  lease_token INTEGER,"
    "  last_error TEXT,"
    "  created_at INTEGER NOT NULL"
    ");"
    "CREATE INDEX jobs_due ON jobs(run_after) WHERE state = 'queued';"
    "CREATE INDEX jobs_leased ON jobs(lease_until) WHERE state = 'running';",
    /* 4: the secret of listing cursors (256 bits, SQLite's ChaCha20 generator seeded by the OS) */
    "INSERT OR IGNORE INTO settings (name, value, updated_at) VALUES ('cursor.secret',"
    " lower(hex(randomblob(32))), CAST(strftime('%s', 'now') AS INTEGER));",
    /* 5: the renditions' LRU (last use, NULL: never since made) and their making leases */
    "ALTER TABLE variants ADD COLUMN used_at INTEGER;"
    "CREATE INDEX variants_lru ON variants(coalesce(used_at, created_at))"
    " WHERE instr(name, ':') > 0;"
    "CREATE TABLE rendition_leases ("
    "  image_id TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  holder INTEGER NOT NULL,"
    "  until INTEGER NOT NULL," /* ms since the epoch */
    "  PRIMARY KEY (image_id, name)"
    ") WITHOUT ROWID;",
};

const int meta_sqlite_schema_version = (int)(sizeof(sq_migrations) / sizeof(sq_migrations[0]));

#define SQ_IMAGE_COLS                                                                              \
    "id, seq, key, format, width, height, frames, bytes, created_at, owner, token_hash"

#define SQ_BLOB_COLS "key, refs, pins, bytes, created_at, coalesce(pinned_at, 0)"

/* What gc collects: no reference, and no pin or only a stale one (?2), created before ?1. */
#define SQ_GC_UNUSED "refs = 0 AND (pins = 0 OR coalesce(pinned_at, 0) < ?2) AND created_at < ?1"

#define SQ_RENDITION "instr(name, ':') > 0"

const char meta_sqlite_list_sql[] = "SELECT " SQ_IMAGE_COLS " FROM images"
                                    " WHERE deleted_at IS NULL AND seq < ?1"
                                    " ORDER BY seq DESC LIMIT ?2";

enum sq_stmt {
    /* writer */
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_IMAGE_INSERT,
    ST_BLOB_REF,
    ST_IMAGE_MARK_DELETED,
    ST_VARIANTS_DROP,
    ST_BLOB_UNREF,
    ST_BLOB_DROP,
    ST_IMAGE_LIVE,
    ST_VARIANT_INSERT,
    ST_VARIANT_COUNT,
    ST_SETTING_SET,
    ST_JOB_INSERT,
    ST_BLOB_PIN,
    ST_BLOB_UNPIN,
    ST_BLOB_STATE,
    ST_JOB_CLAIM,
    ST_JOB_DONE,
    ST_JOB_FAIL,
    ST_JOB_EXTEND,
    ST_BLOB_UNPIN_STALE,
    ST_VARIANTS_DROP_DEAD,
    ST_JOB_PURGE_DEAD,
    ST_VARIANT_TOUCH,
    ST_VARIANT_DELETE,
    ST_RENDITIONS_BYTES,
    ST_RENDITIONS_OLDEST,
    ST_RENDITIONS_OF,
    ST_LEASE_TAKE,
    ST_LEASE_DROP,
    ST_LEASES_DROP_STALE,
    /* readers */
    ST_PING,
    ST_IMAGE_GET,
    ST_IMAGE_LIST,
    ST_VARIANT_GET,
    ST_BLOB_REFS,
    ST_IMAGE_COUNT,
    ST_SETTING_GET,
    ST_JOB_STATS,
    ST_BLOB_GET,
    ST_GC_COUNT,
    ST_BLOB_LIST_UNUSED,
    ST_COUNT
};

static const struct {
    const char *sql;
    bool reader; /* prepared on the reader connections, else on the writer */
} sq_sql[ST_COUNT] = {
    [ST_BEGIN] = {"BEGIN IMMEDIATE", false},
    [ST_COMMIT] = {"COMMIT", false},
    [ST_ROLLBACK] = {"ROLLBACK", false},
    [ST_IMAGE_INSERT] = {"INSERT INTO images (id, key, format, width, height, frames, bytes,"
                         " created_at, owner, token_hash)"
                         " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                         false},
    [ST_BLOB_REF] = {"INSERT INTO blobs (key, refs, bytes, created_at) VALUES (?1, 1, ?2, ?3)"
                     " ON CONFLICT (key) DO UPDATE SET refs = refs + 1",
                     false},
    [ST_IMAGE_MARK_DELETED] = {"UPDATE images SET deleted_at = ?2"
                               " WHERE id = ?1 AND deleted_at IS NULL RETURNING key, format",
                               false},
    [ST_VARIANTS_DROP] = {"DELETE FROM variants WHERE image_id = ?1 RETURNING key", false},
    [ST_BLOB_UNREF] = {"UPDATE blobs SET refs = refs - 1 WHERE key = ?1 RETURNING refs, pins",
                       false},
    [ST_BLOB_DROP] = {"DELETE FROM blobs WHERE key = ?1 AND refs = 0 AND pins = 0", false},
    [ST_JOB_INSERT] = {"INSERT INTO jobs (kind, payload, run_after, created_at)"
                       " VALUES (?1, ?2, ?3, ?4)",
                       false},
    [ST_BLOB_PIN] = {"INSERT INTO blobs (key, refs, pins, bytes, created_at, pinned_at)"
                     " VALUES (?1, 0, 1, ?2, ?3, ?3)"
                     " ON CONFLICT (key) DO UPDATE SET pins = pins + 1, pinned_at = ?3",
                     false},
    [ST_BLOB_UNPIN] = {"UPDATE blobs SET pins = pins - 1 WHERE key = ?1 AND pins > 0"
                       " RETURNING refs, pins",
                       false},
    [ST_BLOB_STATE] = {"SELECT refs, pins FROM blobs WHERE key = ?1", false},
    [ST_JOB_CLAIM] =
        {"UPDATE jobs SET state = 'running', attempts = attempts + 1,"
         " lease_until = ?1 + ?2, lease_token = ?3"
         " WHERE id = (SELECT id FROM jobs WHERE (state = 'queued' AND run_after <= ?1)"
         " OR (state = 'running' AND lease_until < ?1) ORDER BY run_after LIMIT 1)"
         " RETURNING id, kind, payload, attempts",
         false},
    [ST_JOB_DONE] = {"DELETE FROM jobs WHERE id = ?1 AND lease_token = ?2 AND state = 'running'",
                     false},
    [ST_JOB_FAIL] =
        {"UPDATE jobs SET state = CASE WHEN attempts >= ?3 THEN 'dead' ELSE 'queued' END,"
         " run_after = ?4, last_error = ?5, lease_until = NULL, lease_token = NULL"
         " WHERE id = ?1 AND lease_token = ?2 AND state = 'running'",
         false},
    [ST_JOB_EXTEND] = {"UPDATE jobs SET lease_until = ?3"
                       " WHERE id = ?1 AND lease_token = ?2 AND state = 'running'",
                       false},
    [ST_JOB_STATS] = {"SELECT kind, count(*) FILTER (WHERE state = 'queued'),"
                      " count(*) FILTER (WHERE state = 'running'),"
                      " count(*) FILTER (WHERE state = 'dead'),"
                      " coalesce(min(created_at) FILTER (WHERE state <> 'dead'), 0),"
                      " count(*) FILTER (WHERE state = 'queued' AND run_after <= ?1),"
                      " coalesce(min(run_after) FILTER (WHERE state = 'queued'"
                      " AND run_after <= ?1), 0) FROM jobs GROUP BY kind ORDER BY kind",
                      true},
    [ST_IMAGE_LIVE] = {"SELECT 1 FROM images WHERE id = ?1 AND deleted_at IS NULL", false},
    [ST_VARIANT_INSERT] = {"INSERT INTO variants (image_id, name, key, format, width, height,"
                           " bytes, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                           " ON CONFLICT (image_id, name) DO NOTHING",
                           false},
    [ST_VARIANT_COUNT] = {"SELECT count(*) FROM variants WHERE image_id = ?1", false},
    [ST_PING] = {"SELECT max(seq) FROM images", true},
    [ST_IMAGE_GET] = {"SELECT " SQ_IMAGE_COLS " FROM images WHERE id = ?1 AND deleted_at IS NULL",
                      true},
    [ST_IMAGE_LIST] = {meta_sqlite_list_sql, true},
    [ST_VARIANT_GET] =
        {"SELECT image_id, name, key, format, width, height, bytes,"
         " coalesce(used_at, created_at) FROM variants WHERE image_id = ?1 AND name = ?2",
         true},
    [ST_BLOB_REFS] = {"SELECT refs FROM blobs WHERE key = ?1", true},
    [ST_IMAGE_COUNT] = {"SELECT count(*) FROM images WHERE deleted_at IS NULL", true},
    [ST_SETTING_SET] = {"INSERT INTO settings (name, value, updated_at) VALUES (?1, ?2, ?3)"
                        " ON CONFLICT (name) DO UPDATE SET value = ?2, updated_at = ?3",
                        false},
    [ST_SETTING_GET] = {"SELECT value FROM settings WHERE name = ?1", true},
    /* gc: stale pins, unused rows, variants of deleted images, dead jobs */
    [ST_BLOB_UNPIN_STALE] = {"UPDATE blobs SET pins = 0"
                             " WHERE pins > 0 AND coalesce(pinned_at, 0) < ?1 RETURNING key, refs",
                             false},
    [ST_VARIANTS_DROP_DEAD] = {"DELETE FROM variants WHERE (image_id, name) IN"
                               " (SELECT v.image_id, v.name FROM variants v JOIN images i"
                               " ON i.id = v.image_id WHERE i.deleted_at IS NOT NULL LIMIT ?1)"
                               " RETURNING key, bytes",
                               false},
    [ST_JOB_PURGE_DEAD] = {"DELETE FROM jobs WHERE state = 'dead' AND run_after < ?1", false},
    /* renditions: names with ':' (SQ_RENDITION matches the partial index variants_lru) */
    [ST_VARIANT_TOUCH] = {"UPDATE variants SET used_at = ?3 WHERE image_id = ?1 AND name = ?2",
                          false},
    [ST_VARIANT_DELETE] = {"DELETE FROM variants WHERE image_id = ?1 AND name = ?2 RETURNING key",
                           false},
    [ST_RENDITIONS_BYTES] = {"SELECT coalesce(sum(bytes), 0) FROM variants WHERE " SQ_RENDITION,
                             false},
    [ST_RENDITIONS_OLDEST] = {"SELECT image_id, name, bytes FROM variants WHERE " SQ_RENDITION
                              " ORDER BY coalesce(used_at, created_at) LIMIT ?1",
                              false},
    [ST_RENDITIONS_OF] =
        {"SELECT image_id, name, bytes FROM variants WHERE image_id = ?2 AND " SQ_RENDITION
         " LIMIT ?1",
         false},
    [ST_LEASE_TAKE] = {"INSERT INTO rendition_leases (image_id, name, holder, until)"
                       " VALUES (?1, ?2, ?3, ?4) ON CONFLICT (image_id, name) DO UPDATE"
                       " SET holder = excluded.holder, until = excluded.until"
                       " WHERE rendition_leases.until < ?5 OR rendition_leases.holder = ?3",
                       false},
    [ST_LEASE_DROP] = {"DELETE FROM rendition_leases WHERE image_id = ?1 AND name = ?2"
                       " AND holder = ?3",
                       false},
    [ST_LEASES_DROP_STALE] = {"DELETE FROM rendition_leases WHERE until < ?1", false},
    [ST_BLOB_GET] = {"SELECT " SQ_BLOB_COLS " FROM blobs WHERE key = ?1", true},
    [ST_GC_COUNT] =
        {"SELECT count(*) FILTER (WHERE pins > 0 AND coalesce(pinned_at, 0) < ?2),"
         " coalesce(sum(bytes) FILTER (WHERE pins > 0 AND coalesce(pinned_at, 0) < ?2), 0),"
         " count(*) FILTER (WHERE " SQ_GC_UNUSED "),"
         " coalesce(sum(bytes) FILTER (WHERE " SQ_GC_UNUSED "), 0),"
         " (SELECT count(*) FROM variants v JOIN images i ON i.id = v.image_id"
         " WHERE i.deleted_at IS NOT NULL),"
         " (SELECT coalesce(sum(v.bytes), 0) FROM variants v JOIN images i ON i.id = v.image_id"
         " WHERE i.deleted_at IS NOT NULL),"
         " (SELECT count(*) FROM jobs WHERE state = 'dead' AND run_after < ?3) FROM blobs",
         true},
    [ST_BLOB_LIST_UNUSED] = {"SELECT " SQ_BLOB_COLS " FROM blobs WHERE key > ?1 AND refs = 0"
                             " AND pins = 0 AND created_at < ?2 ORDER BY key LIMIT ?3",
                             true},
};

struct sq_conn {
    sqlite3 *db;
    sqlite3_stmt *st[ST_COUNT];
};

struct sq {
    struct sq_conn writer; /* used only with wlock held */
    pthread_mutex_t wlock;
    struct sq_conn readers[SQ_READERS];
    struct sq_conn *idle[SQ_READERS]; /* free readers, guarded by rlock */
    size_t nidle;
    pthread_mutex_t rlock;
    pthread_cond_t rfree;
};

/*
 * sq_fail maps a SQLite result code to a status and logs it with what was being
 * done: busy/locked (after the busy timeout) is the database being unavailable,
 * a full disk is E_NOSPACE, a uniqueness violation is E_EXISTS (not logged: the
 * caller decides), anything else E_IO.
 */
static int sq_fail(sqlite3 *db, int src, const char *what)
{
    int rc;

    switch (src & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        rc = E_UNAVAILABLE;
        break;
    case SQLITE_FULL:
        rc = E_NOSPACE;
        break;
    case SQLITE_CONSTRAINT:
        rc = (src == SQLITE_CONSTRAINT_UNIQUE || src == SQLITE_CONSTRAINT_PRIMARYKEY) ? E_EXISTS
                                                                                      : E_IO;
        break;
    default:
        rc = E_IO;
        break;
    }
    if (rc != E_EXISTS)
        log_error("meta", "sqlite %s: %s (%s)", what, db ? sqlite3_errmsg(db) : "",
                  sqlite3_errstr(src));
    return rc;
}

/* sq_reset makes a statement ready for its next use and ends its read, if any. */
static void sq_reset(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* sq_exec runs a statement without results to completion and resets it. */
static int sq_exec(struct sq_conn *c, enum sq_stmt i, const char *what)
{
    int src = sqlite3_step(c->st[i]);
    int rc = OK;

    if (src != SQLITE_DONE)
        rc = sq_fail(c->db, src, what);
    sq_reset(c->st[i]);
    return rc;
}

static void sq_bind_text(sqlite3_stmt *st, int i, const char *s)
{
    sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
}

/* sq_col_text copies text column i into buf (capacity cap), truncating; NULL reads as "". */
static void sq_col_text(sqlite3_stmt *st, int i, char *buf, size_t cap)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    size_t len = t ? (size_t)sqlite3_column_bytes(st, i) : 0;

    if (len >= cap)
        len = cap - 1;
    if (len > 0)
        memcpy(buf, t, len);
    buf[len] = '\0';
}

static void sq_col_image(sqlite3_stmt *st, struct image_rec *img)
{
    memset(img, 0, sizeof(*img));
    sq_col_text(st, 0, img->id, sizeof(img->id));
    img->seq = sqlite3_column_int64(st, 1);
    sq_col_text(st, 2, img->key, sizeof(img->key));
    sq_col_text(st, 3, img->format, sizeof(img->format));
    img->width = (uint32_t)sqlite3_column_int64(st, 4);
    img->height = (uint32_t)sqlite3_column_int64(st, 5);
    img->frames = (uint32_t)sqlite3_column_int64(st, 6);
    img->bytes = (uint64_t)sqlite3_column_int64(st, 7);
    img->created_at = sqlite3_column_int64(st, 8);
    sq_col_text(st, 9, img->owner, sizeof(img->owner));
    sq_col_text(st, 10, img->token_hash, sizeof(img->token_hash));
}

/* ---- connections ---- */

static void sq_conn_close(struct sq_conn *c)
{
    if (c->db == NULL)
        return;
    for (size_t i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(c->st[i]);
    if (sqlite3_close(c->db) != SQLITE_OK)
        log_error("meta", "sqlite close: %s", sqlite3_errmsg(c->db));
    memset(c, 0, sizeof(*c));
}

/* sq_pragma runs a PRAGMA and, when want is given, checks its one-row answer. */
static int sq_pragma(sqlite3 *db, const char *sql, const char *want)
{
    sqlite3_stmt *st = NULL;
    int src = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    int rc = OK;

    if (src != SQLITE_OK) {
        rc = sq_fail(db, src, sql);
        goto out;
    }
    src = sqlite3_step(st);
    if (src != SQLITE_ROW && src != SQLITE_DONE) {
        rc = sq_fail(db, src, sql);
        goto out;
    }
    if (want != NULL) {
        const char *got = src == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
        if (got == NULL || strcmp(got, want) != 0) {
            log_error("meta", "sqlite %s: answered '%s', want '%s'", sql, got ? got : "", want);
            rc = E_IO;
            goto out;
        }
    }
out:
    sqlite3_finalize(st);
    return rc;
}

/*
 * sq_conn_open opens one connection to path with the settings every connection
 * needs (they are per connection in SQLite). The writer creates the file and
 * switches it to WAL (persistent in the file); readers are query_only.
 */
static int sq_conn_open(const char *path, bool writer, struct sq_conn *c)
{
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (writer ? SQLITE_OPEN_CREATE : 0);
    int src = sqlite3_open_v2(path, &c->db, flags, NULL);
    int rc = OK;

    if (src != SQLITE_OK) {
        log_error("meta", "cannot open sqlite database '%s': %s", path,
                  c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(src));
        rc = E_IO;
        goto out;
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_timeout(c->db, SQ_BUSY_MS);
    if (writer) {
        rc = sq_pragma(c->db, "PRAGMA journal_mode = WAL", "wal");
        if (rc != OK)
            goto out;
    }
    rc = sq_pragma(c->db, "PRAGMA synchronous = FULL", NULL);
    if (rc != OK)
        goto out;
    rc = sq_pragma(c->db, "PRAGMA foreign_keys = ON", NULL);
    if (rc != OK)
        goto out;
    if (!writer)
        rc = sq_pragma(c->db, "PRAGMA query_only = ON", NULL);
out:
    return rc;
}

/* sq_conn_prepare prepares the statements of a connection's role, once, for its lifetime. */
static int sq_conn_prepare(struct sq_conn *c, bool reader)
{
    int rc = OK;

    for (size_t i = 0; i < ST_COUNT; i++) {
        if (sq_sql[i].reader != reader)
            continue;
        int src = sqlite3_prepare_v3(c->db, sq_sql[i].sql, -1, SQLITE_PREPARE_PERSISTENT, &c->st[i],
                                     NULL);
        if (src != SQLITE_OK) {
            rc = sq_fail(c->db, src, sq_sql[i].sql);
            goto out;
        }
    }
out:
    return rc;
}

/*
 * sq_migrate brings the schema to meta_sqlite_schema_version in one write
 * transaction: idempotent, and safe against another process migrating at once
 * (BEGIN IMMEDIATE serialises them; the second finds nothing to do).
 */
static int sq_migrate(sqlite3 *db, const char *path)
{
    sqlite3_stmt *st = NULL;
    char sql[64];
    int version = 0;
    int src = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    int rc = OK;

    if (src != SQLITE_OK) {
        rc = sq_fail(db, src, "begin migration");
        goto out;
    }
    src = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL);
    if (src == SQLITE_OK)
        src = sqlite3_step(st);
    if (src != SQLITE_ROW) {
        rc = sq_fail(db, src, "read schema version");
        goto out;
    }
    version = sqlite3_column_int(st, 0);
    if (version > meta_sqlite_schema_version) {
        log_error("meta", "database '%s' has schema version %d, newer than this build's %d", path,
                  version, meta_sqlite_schema_version);
        rc = E_IO;
        goto out;
    }
    for (int v = version; v < meta_sqlite_schema_version; v++) {
        src = sqlite3_exec(db, sq_migrations[v], NULL, NULL, NULL);
        if (src != SQLITE_OK) {
            rc = sq_fail(db, src, "migration");
            goto out;
        }
    }
    snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", meta_sqlite_schema_version);
    src = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (src == SQLITE_OK)
        src = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (src != SQLITE_OK) {
        rc = sq_fail(db, src, "commit migration");
        goto out;
    }
    if (version < meta_sqlite_schema_version)
        log_info("meta", "database '%s' migrated from schema version %d to %d", path, version,
                 meta_sqlite_schema_version);
out:
    sqlite3_finalize(st);
    if (rc != OK && !sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* sq_reader_get takes a free reader connection, waiting up to SQ_ACQUIRE_MS. */
static int sq_reader_get(struct sq *s, struct sq_conn **out)
{
    struct timespec deadline;
    int rc = OK;

    time_deadline(&deadline, CLOCK_MONOTONIC, SQ_ACQUIRE_MS);
    pthread_mutex_lock(&s->rlock);
    while (s->nidle == 0) {
        if (pthread_cond_timedwait(&s->rfree, &s->rlock, &deadline) == ETIMEDOUT && s->nidle == 0) {
            rc = E_UNAVAILABLE;
            break;
        }
    }
    if (rc == OK)
        *out = s->idle[--s->nidle];
    pthread_mutex_unlock(&s->rlock);
    if (rc != OK)
        log_error("meta", "no free sqlite reader after %d ms", SQ_ACQUIRE_MS);
    return rc;
}

static void sq_reader_put(struct sq *s, struct sq_conn *c)
{
    pthread_mutex_lock(&s->rlock);
    s->idle[s->nidle++] = c;
    pthread_cond_signal(&s->rfree);
    pthread_mutex_unlock(&s->rlock);
}

/* ---- writes: each one BEGIN IMMEDIATE ... COMMIT on the writer, wlock held ---- */

static int sq_begin(struct sq *s)
{
    pthread_mutex_lock(&s->wlock);
    return sq_exec(&s->writer, ST_BEGIN, "begin");
}

/* sq_end commits when rc is OK (a failed commit becomes rc), else rolls back; unlocks. */
static int sq_end(struct sq *s, int rc)
{
    struct sq_conn *w = &s->writer;

    if (rc == OK)
        rc = sq_exec(w, ST_COMMIT, "commit");
    if (rc != OK && !sqlite3_get_autocommit(w->db))
        sq_exec(w, ST_ROLLBACK, "rollback");
    pthread_mutex_unlock(&s->wlock);
    return rc;
}

/*
 * sq_end_as commits also when rc is keep, a definite answer that changed
 * nothing to undo (E_NOTFOUND, E_EXISTS); returns rc or the commit's failure.
 */
static int sq_end_as(struct sq *s, int rc, int keep)
{
    int erc = sq_end(s, rc == keep ? OK : rc);

    return erc != OK ? erc : rc;
}

/* sq_blob_ref takes one reference on key, creating its row at one. */
static int sq_blob_ref(struct sq_conn *w, const char *key, uint64_t bytes)
{
    sqlite3_stmt *st = w->st[ST_BLOB_REF];

    sq_bind_text(st, 1, key);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)bytes);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)time(NULL));
    return sq_exec(w, ST_BLOB_REF, "blob reference");
}

/* sq_job_insert queues a job on the writer, inside the caller's transaction. */
static int sq_job_insert(struct sq_conn *w, const char *kind, const char *payload, int64_t delay_ms)
{
    sqlite3_stmt *st = w->st[ST_JOB_INSERT];
    int64_t now = meta_now_ms();

    sq_bind_text(st, 1, kind);
    sq_bind_text(st, 2, payload);
    sqlite3_bind_int64(st, 3, now + delay_ms);
    sqlite3_bind_int64(st, 4, now);
    return sq_exec(w, ST_JOB_INSERT, "job enqueue");
}

/* ---- the statements of the write protocols (meta_refs.c), on the writer ---- */

static const struct meta_tx_ops sq_tx_ops;

static int sq_tx_write(void *be, meta_tx_body_fn *body, void *arg)
{
    struct sq *s = be;
    struct meta_tx tx = {&sq_tx_ops, s, &s->writer};
    int rc = sq_begin(s);

    if (rc == OK)
        rc = body(&tx, arg);
    return sq_end(s, rc);
}

/* sq_step_counts steps st (bound) for one optional row of two integers; E_NOTFOUND for none. */
static int sq_step_counts(struct sq_conn *w, sqlite3_stmt *st, const char *what, int64_t *a,
                          int64_t *b)
{
    int src = sqlite3_step(st);
    int rc = OK;

    if (src == SQLITE_ROW) {
        *a = sqlite3_column_int64(st, 0);
        *b = sqlite3_column_int64(st, 1);
        src = sqlite3_step(st);
    } else if (src == SQLITE_DONE) {
        rc = E_NOTFOUND;
    }
    if (src != SQLITE_DONE)
        rc = sq_fail(w->db, src, what);
    sq_reset(st);
    return rc;
}

/* sq_step_keys steps st (bound) to the end, adding column 0 of each row to out (and column 1
 * to *sum when given). */
static int sq_step_keys(struct sq_conn *w, sqlite3_stmt *st, const char *what,
                        struct meta_keys *out, uint64_t *sum)
{
    int src;

    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        char key[SHA256_HEX];
        sq_col_text(st, 0, key, sizeof(key));
        meta_keys_add(out, key);
        if (sum != NULL)
            *sum += (uint64_t)sqlite3_column_int64(st, 1);
    }
    sq_reset(st);
    return src == SQLITE_DONE ? OK : sq_fail(w->db, src, what);
}

static int sq_tx_image_insert(struct meta_tx *tx, struct image_rec *img)
{
    struct sq_conn *w = tx->conn;
    sqlite3_stmt *st = w->st[ST_IMAGE_INSERT];
    int rc;

    sq_bind_text(st, 1, img->id);
    sq_bind_text(st, 2, img->key);
    sq_bind_text(st, 3, img->format);
    sqlite3_bind_int64(st, 4, img->width);
    sqlite3_bind_int64(st, 5, img->height);
    sqlite3_bind_int64(st, 6, img->frames);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)img->bytes);
    sqlite3_bind_int64(st, 8, img->created_at);
    if (img->owner[0] != '\0')
        sq_bind_text(st, 9, img->owner);
    sq_bind_text(st, 10, img->token_hash);
    rc = sq_exec(w, ST_IMAGE_INSERT, "image insert");
    if (rc == OK)
        img->seq = sqlite3_last_insert_rowid(w->db);
    return rc;
}

static int sq_tx_image_mark_deleted(struct meta_tx *tx, const char *id, char key[SHA256_HEX],
                                    char format[META_FORMAT_MAX])
{
    struct sq_conn *w = tx->conn;
    sqlite3_stmt *st = w->st[ST_IMAGE_MARK_DELETED];
    int src;
    bool found = false;

    sq_bind_text(st, 1, id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)time(NULL));
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        sq_col_text(st, 0, key, SHA256_HEX);
        sq_col_text(st, 1, format, META_FORMAT_MAX);
        found = true;
    }
    sq_reset(st);
    if (src != SQLITE_DONE)
        return sq_fail(w->db, src, "image delete");
    return found ? OK : E_NOTFOUND;
}

static int sq_tx_image_live(struct meta_tx *tx, const char *id)
{
    struct sq_conn *w = tx->conn;
    sqlite3_stmt *st = w->st[ST_IMAGE_LIVE];
    int src;

    /* the writer lock keeps a delete out until commit */
    sq_bind_text(st, 1, id);
    src = sqlite3_step(st);
    sq_reset(st);
    if (src == SQLITE_DONE)
        return E_NOTFOUND;
    return src == SQLITE_ROW ? OK : sq_fail(w->db, src, "image lookup");
}

static int sq_tx_variant_insert(struct meta_tx *tx, const struct variant_rec *v, bool *inserted)
{
    struct sq_conn *w = tx->conn;
    sqlite3_stmt *st = w->st[ST_VARIANT_INSERT];
    int rc;

    sq_bind_text(st, 1, v->image_id);
    sq_bind_text(st, 2, v->name);
    sq_bind_text(st, 3, v->key);
    sq_bind_text(st, 4, v->format);
    sqlite3_bind_int64(st, 5, v->width);
    sqlite3_bind_int64(st, 6, v->height);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)v->bytes);
    sqlite3_bind_int64(st, 8, (sqlite3_int64)time(NULL));
    rc = sq_exec(w, ST_VARIANT_INSERT, "variant insert");
    *inserted = rc == OK && sqlite3_changes(w->db) > 0;
    return rc;
}

static int sq_tx_variant_count(struct meta_tx *tx, const char *image_id, int64_t *n)
{
    struct sq_conn *w = tx->conn;
    sqlite3_stmt *st = w->st[ST_VARIANT_COUNT];
    int src;

    sq_bind_text(st, 1, image_id);
    src = sqlite3_step(st);
    if (src == SQLITE_ROW)
        *n = sqlite3_column_int64(st, 0);
    sq_reset(st);
    return src == SQLITE_ROW ? OK : sq_fail(w->db, src, "variant count");
}

static int sq_tx_variants_drop(struct meta_tx *tx, const char *image_id, struct meta_keys *out)
{
    struct sq_conn *w = tx->conn;
    sqlite3_stmt *st = w->st[ST_VARIANTS_DROP];

    sq_bind_text(st, 1, image_id);
    return sq_step_keys(w, st, "variants delete", out, NULL);
}

static int sq_tx_variants_drop_dead(struct meta_tx *tx, size_t limit, struct meta_keys *out,
                                    uint64_t *bytes)
{
    struct sq_conn *w = tx->conn;
    sqlite3_stmt *st = w->st[ST_VARIANTS_DROP_DEAD];

    *bytes = 0;
    sqlite3_bind_int64(st, 1, limit > INT_MAX ? INT_MAX : (sqlite3_int64)limit);
    return sq_step_keys(w, st, "variants drop dead", out, bytes);
}

static int sq_tx_blob_ref(struct meta_tx *tx, const char *key, uint64_t bytes)
{
    return sq_blob_ref(tx->conn, key, bytes);
}

static int sq_tx_blob_unref(struct meta_tx *tx, const char *key, int64_t *refs, int64_t *pins)
{
    struct sq_conn *w = tx->conn;
    sqlite3_stmt *st = w->st[ST_BLOB_UNREF];

    sq_bind_text(st, 1, key);
    return sq_step_counts(w, st, "blob unreference", refs, pins);
}

static int sq_tx_blob_pin(struct meta_tx *tx, const char *key, uint64_t bytes)
{
    struct sq_conn *w = tx->conn;
    sqlite3_stmt *st = w->st[ST_BLOB_PIN];

    sq_bind_text(st, 1, key);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)bytes);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)time(NULL));
    return sq_exec(w, ST_BLOB_PIN, "blob pin");
}

static int sq_tx_blob_unpin(struct meta_tx *tx, const char *key, int64_t *refs, int64_t *pins)
{
    struct sq_conn *w = tx->conn;
    sqlite3_stmt *st = w->st[ST_BLOB_UNPIN];

    sq_bind_text(st, 1, key);
    return sq_step_counts(w, st, "blob unpin", refs, pins);
}

static int sq_tx_blob_unpin_stale(struct meta_tx *tx, int64_t before,
                                  struct meta_keys *unreferenced, int64_t *reset)
{
    struct sq_conn *w = tx->conn;
    sqlite3_stmt *st = w->st[ST_BLOB_UNPIN_STALE];
    int src;

    *reset = 0;
    sqlite3_bind_int64(st, 1, before);
    /* every row first: RETURNING rows are read before other statements run */
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        char key[SHA256_HEX];
        (*reset)++;
        if (sqlite3_column_int64(st, 1) != 0)
            continue;
        sq_col_text(st, 0, key, sizeof(key));
        meta_keys_add(unreferenced, key);
    }
    sq_reset(st);
    return src == SQLITE_DONE ? OK : sq_fail(w->db, src, "blob unpin stale");
}

/* The write transaction is the lock: SQLite has one writer per database, in every process. */
static int sq_tx_blob_lock(struct meta_tx *tx, const char *key, int64_t *refs, int64_t *pins)
{
    struct sq_conn *w = tx->conn;
    sqlite3_stmt *st = w->st[ST_BLOB_STATE];

    sq_bind_text(st, 1, key);
    return sq_step_counts(w, st, "blob state", refs, pins);
}

/* The claim is the writer lock too: no pin can create key's row until commit. */
static int sq_tx_blob_claim(struct meta_tx *tx, const char *key)
{
    int64_t refs = 0, pins = 0;
    int rc = sq_tx_blob_lock(tx, key, &refs, &pins);

    if (rc == OK)
        return E_EXISTS;
    return rc == E_NOTFOUND ? OK : rc;
}

static int sq_tx_blob_drop(struct meta_tx *tx, const char *key)
{
    struct sq_conn *w = tx->conn;

    sq_bind_text(w->st[ST_BLOB_DROP], 1, key);
    return sq_exec(w, ST_BLOB_DROP, "blob drop");
}

static int sq_tx_job_insert(struct meta_tx *tx, const char *kind, const char *payload,
                            int64_t delay_ms)
{
    return sq_job_insert(tx->conn, kind, payload, delay_ms);
}

static int sq_tx_variant_touch(struct meta_tx *tx, const struct meta_variant_ref *v, int64_t now)
{
    struct sq_conn *w = tx->conn;
    sqlite3_stmt *st = w->st[ST_VARIANT_TOUCH];

    sq_bind_text(st, 1, v->image_id);
    sq_bind_text(st, 2, v->name);
    sqlite3_bind_int64(st, 3, now);
    return sq_exec(w, ST_VARIANT_TOUCH, "variant touch");
}

static int sq_tx_variant_delete(struct meta_tx *tx, const struct meta_variant_ref *v,
                                char key[SHA256_HEX])
{
    struct sq_conn *w = tx->conn;
    sqlite3_stmt *st = w->st[ST_VARIANT_DELETE];
    struct meta_keys k = {0};
    int rc;

    sq_bind_text(st, 1, v->image_id);
    sq_bind_text(st, 2, v->name);
    rc = sq_step_keys(w, st, "variant delete", &k, NULL);
    if (rc == OK && k.n == 0)
        rc = E_NOTFOUND;
    if (rc == OK)
        memcpy(key, k.v[0], SHA256_HEX);
    meta_keys_release(&k);
    return rc;
}

/* One writer per database: the write transaction is the eviction's lock too. */
static int sq_tx_evict_lock(struct meta_tx *tx, bool *got)
{
    (void)tx;
    *got = true;
    return OK;
}

static int sq_tx_renditions_bytes(struct meta_tx *tx, uint64_t *total)
{
    struct sq_conn *w = tx->conn;
    sqlite3_stmt *st = w->st[ST_RENDITIONS_BYTES];
    int src = sqlite3_step(st);

    if (src == SQLITE_ROW)
        *total = (uint64_t)sqlite3_column_int64(st, 0);
    sq_reset(st);
    return src == SQLITE_ROW ? OK : sq_fail(w->db, src, "renditions bytes");
}

/* sq_step_refs reads (image_id, name, bytes) rows of st (bound, limited to cap). */
static int sq_step_refs(struct sq_conn *w, sqlite3_stmt *st, size_t cap,
                        struct meta_variant_ref *out, uint64_t *bytes, size_t *n)
{
    int src = SQLITE_DONE;

    *n = 0;
    while (*n < cap && (src = sqlite3_step(st)) == SQLITE_ROW) {
        sq_col_text(st, 0, out[*n].image_id, sizeof(out[*n].image_id));
        sq_col_text(st, 1, out[*n].name, sizeof(out[*n].name));
        if (bytes != NULL)
            bytes[*n] = (uint64_t)sqlite3_column_int64(st, 2);
        (*n)++;
    }
    if (*n == cap)
        src = SQLITE_DONE;
    sq_reset(st);
    return src == SQLITE_DONE ? OK : sq_fail(w->db, src, "renditions");
}

static int sq_tx_renditions_oldest(struct meta_tx *tx, size_t cap, struct meta_variant_ref *out,
                                   uint64_t *bytes, size_t *n)
{
    struct sq_conn *w = tx->conn;
    sqlite3_stmt *st = w->st[ST_RENDITIONS_OLDEST];

    sqlite3_bind_int64(st, 1, (sqlite3_int64)cap);
    return sq_step_refs(w, st, cap, out, bytes, n);
}

static int sq_tx_renditions_of(struct meta_tx *tx, const char *image_id, size_t cap,
                               struct meta_variant_ref *out, size_t *n)
{
    struct sq_conn *w = tx->conn;
    sqlite3_stmt *st = w->st[ST_RENDITIONS_OF];

    sqlite3_bind_int64(st, 1, (sqlite3_int64)cap);
    sq_bind_text(st, 2, image_id);
    return sq_step_refs(w, st, cap, out, NULL, n);
}

static int sq_tx_lease_take(struct meta_tx *tx, const struct meta_variant_ref *v, int64_t holder,
                            int64_t until_ms, int64_t now_ms, bool *got)
{
    struct sq_conn *w = tx->conn;
    sqlite3_stmt *st = w->st[ST_LEASE_TAKE];
    int rc;

    sq_bind_text(st, 1, v->image_id);
    sq_bind_text(st, 2, v->name);
    sqlite3_bind_int64(st, 3, holder);
    sqlite3_bind_int64(st, 4, until_ms);
    sqlite3_bind_int64(st, 5, now_ms);
    rc = sq_exec(w, ST_LEASE_TAKE, "lease take");
    *got = rc == OK && sqlite3_changes(w->db) > 0;
    return rc;
}

static int sq_tx_lease_drop(struct meta_tx *tx, const struct meta_variant_ref *v, int64_t holder)
{
    struct sq_conn *w = tx->conn;
    sqlite3_stmt *st = w->st[ST_LEASE_DROP];

    sq_bind_text(st, 1, v->image_id);
    sq_bind_text(st, 2, v->name);
    sqlite3_bind_int64(st, 3, holder);
    return sq_exec(w, ST_LEASE_DROP, "lease drop");
}

static int sq_tx_leases_drop_stale(struct meta_tx *tx, int64_t before_ms)
{
    struct sq_conn *w = tx->conn;

    sqlite3_bind_int64(w->st[ST_LEASES_DROP_STALE], 1, before_ms);
    return sq_exec(w, ST_LEASES_DROP_STALE, "leases drop stale");
}

static const struct meta_tx_ops sq_tx_ops = {
    .write = sq_tx_write,
    .image_inserted = NULL,
    .image_insert = sq_tx_image_insert,
    .image_mark_deleted = sq_tx_image_mark_deleted,
    .image_live = sq_tx_image_live,
    .variant_insert = sq_tx_variant_insert,
    .variant_count = sq_tx_variant_count,
    .variants_drop = sq_tx_variants_drop,
    .variants_drop_dead = sq_tx_variants_drop_dead,
    .blob_ref = sq_tx_blob_ref,
    .blob_unref = sq_tx_blob_unref,
    .blob_pin = sq_tx_blob_pin,
    .blob_unpin = sq_tx_blob_unpin,
    .blob_unpin_stale = sq_tx_blob_unpin_stale,
    .blob_lock = sq_tx_blob_lock,
    .blob_claim = sq_tx_blob_claim,
    .blob_drop = sq_tx_blob_drop,
    .job_insert = sq_tx_job_insert,
    .variant_touch = sq_tx_variant_touch,
    .variant_delete = sq_tx_variant_delete,
    .evict_lock = sq_tx_evict_lock,
    .renditions_bytes = sq_tx_renditions_bytes,
    .renditions_oldest = sq_tx_renditions_oldest,
    .renditions_of = sq_tx_renditions_of,
    .lease_take = sq_tx_lease_take,
    .lease_drop = sq_tx_lease_drop,
    .leases_drop_stale = sq_tx_leases_drop_stale,
};

/* ---- reads: one statement on a pooled reader connection ---- */

static int sq_ping(void *be)
{
    struct sq *s = be;
    struct sq_conn *r = NULL;
    int rc = sq_reader_get(s, &r);
    int src;

    if (rc != OK)
        goto out;
    src = sqlite3_step(r->st[ST_PING]);
    sq_reset(r->st[ST_PING]);
    if (src != SQLITE_ROW) {
        sq_fail(r->db, src, "ping");
        rc = E_UNAVAILABLE;
    }
out:
    if (r != NULL)
        sq_reader_put(s, r);
    return rc;
}

static int sq_image_get(void *be, const char *id, struct image_rec *out)
{
    struct sq *s = be;
    struct sq_conn *r = NULL;
    sqlite3_stmt *st = NULL;
    int rc = sq_reader_get(s, &r);
    int src;

    if (rc != OK)
        goto out;
    st = r->st[ST_IMAGE_GET];
    sq_bind_text(st, 1, id);
    src = sqlite3_step(st);
    if (src == SQLITE_ROW)
        sq_col_image(st, out);
    else if (src == SQLITE_DONE)
        rc = E_NOTFOUND;
    else
        rc = sq_fail(r->db, src, "image get");
    sq_reset(st);
out:
    if (r != NULL)
        sq_reader_put(s, r);
    return rc;
}

static int sq_image_list(void *be, int64_t before, size_t limit, struct image_rec *out, size_t *n)
{
    struct sq *s = be;
    struct sq_conn *r = NULL;
    sqlite3_stmt *st = NULL;
    int rc = sq_reader_get(s, &r);
    int src = SQLITE_DONE;
    size_t got = 0;

    if (rc != OK)
        goto out;
    st = r->st[ST_IMAGE_LIST];
    sqlite3_bind_int64(st, 1, before);
    sqlite3_bind_int64(st, 2, limit > INT_MAX ? INT_MAX : (sqlite3_int64)limit);
    while (got < limit) {
        src = sqlite3_step(st);
        if (src != SQLITE_ROW)
            break;
        sq_col_image(st, &out[got++]);
    }
    if (src != SQLITE_ROW && src != SQLITE_DONE)
        rc = sq_fail(r->db, src, "image list");
    sq_reset(st);
out:
    if (r != NULL)
        sq_reader_put(s, r);
    *n = rc == OK ? got : 0;
    return rc;
}

static int sq_variant_get(void *be, const char *image_id, const char *name, struct variant_rec *out)
{
    struct sq *s = be;
    struct sq_conn *r = NULL;
    sqlite3_stmt *st = NULL;
    int rc = sq_reader_get(s, &r);
    int src;

    if (rc != OK)
        goto out;
    st = r->st[ST_VARIANT_GET];
    sq_bind_text(st, 1, image_id);
    sq_bind_text(st, 2, name);
    src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        memset(out, 0, sizeof(*out));
        sq_col_text(st, 0, out->image_id, sizeof(out->image_id));
        sq_col_text(st, 1, out->name, sizeof(out->name));
        sq_col_text(st, 2, out->key, sizeof(out->key));
        sq_col_text(st, 3, out->format, sizeof(out->format));
        out->width = (uint32_t)sqlite3_column_int64(st, 4);
        out->height = (uint32_t)sqlite3_column_int64(st, 5);
        out->bytes = (uint64_t)sqlite3_column_int64(st, 6);
        out->used_at = sqlite3_column_int64(st, 7);
    } else if (src == SQLITE_DONE) {
        rc = E_NOTFOUND;
    } else {
        rc = sq_fail(r->db, src, "variant get");
    }
    sq_reset(st);
out:
    if (r != NULL)
        sq_reader_put(s, r);
    return rc;
}

/* sq_read_int runs a reader statement with an optional text parameter and reads one integer. */
static int sq_read_int(struct sq *s, enum sq_stmt i, const char *arg, int64_t *v)
{
    struct sq_conn *r = NULL;
    int rc = sq_reader_get(s, &r);
    int src;

    *v = 0;
    if (rc != OK)
        goto out;
    if (arg != NULL)
        sq_bind_text(r->st[i], 1, arg);
    src = sqlite3_step(r->st[i]);
    if (src == SQLITE_ROW)
        *v = sqlite3_column_int64(r->st[i], 0);
    else if (src != SQLITE_DONE)
        rc = sq_fail(r->db, src, sq_sql[i].sql);
    sq_reset(r->st[i]);
out:
    if (r != NULL)
        sq_reader_put(s, r);
    return rc;
}

static int sq_blob_refs(void *be, const char *key, int64_t *refs)
{
    return sq_read_int(be, ST_BLOB_REFS, key, refs);
}

static int sq_image_count(void *be, int64_t *n)
{
    return sq_read_int(be, ST_IMAGE_COUNT, NULL, n);
}

static int sq_setting_get(void *be, const char *name, char *value, size_t cap)
{
    struct sq *s = be;
    struct sq_conn *r = NULL;
    sqlite3_stmt *st;
    int rc = sq_reader_get(s, &r);
    int src;

    if (rc != OK)
        goto out;
    st = r->st[ST_SETTING_GET];
    sq_bind_text(st, 1, name);
    src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        const char *v = (const char *)sqlite3_column_text(st, 0);
        if (v == NULL || strlen(v) >= cap)
            rc = E_TOOBIG;
        else
            memcpy(value, v, strlen(v) + 1);
    } else if (src == SQLITE_DONE) {
        rc = E_NOTFOUND;
    } else {
        rc = sq_fail(r->db, src, sq_sql[ST_SETTING_GET].sql);
    }
    sq_reset(st);
out:
    if (r != NULL)
        sq_reader_put(s, r);
    return rc;
}

static int sq_setting_set(void *be, const char *name, const char *value)
{
    struct sq *s = be;
    sqlite3_stmt *st;
    int rc, src;

    pthread_mutex_lock(&s->wlock);
    st = s->writer.st[ST_SETTING_SET];
    sq_bind_text(st, 1, name);
    sq_bind_text(st, 2, value);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)time(NULL));
    src = sqlite3_step(st);
    rc = src == SQLITE_DONE ? OK : sq_fail(s->writer.db, src, sq_sql[ST_SETTING_SET].sql);
    sq_reset(st);
    pthread_mutex_unlock(&s->wlock);
    return rc;
}

/* ---- blob pins, release and the job queue: writes on the writer ---- */

/* ---- garbage collection ---- */

static void sq_col_blob(sqlite3_stmt *st, struct meta_blob *b)
{
    memset(b, 0, sizeof(*b));
    sq_col_text(st, 0, b->key, sizeof(b->key));
    b->refs = sqlite3_column_int64(st, 1);
    b->pins = sqlite3_column_int64(st, 2);
    b->bytes = (uint64_t)sqlite3_column_int64(st, 3);
    b->created_at = sqlite3_column_int64(st, 4);
    b->pinned_at = sqlite3_column_int64(st, 5);
}

static int sq_blob_get(void *be, const char *key, struct meta_blob *out)
{
    struct sq *s = be;
    struct sq_conn *r = NULL;
    sqlite3_stmt *st;
    int rc = sq_reader_get(s, &r);
    int src;

    if (rc != OK)
        goto out;
    st = r->st[ST_BLOB_GET];
    sq_bind_text(st, 1, key);
    src = sqlite3_step(st);
    if (src == SQLITE_ROW)
        sq_col_blob(st, out);
    else if (src == SQLITE_DONE)
        rc = E_NOTFOUND;
    else
        rc = sq_fail(r->db, src, "blob get");
    sq_reset(st);
out:
    if (r != NULL)
        sq_reader_put(s, r);
    return rc;
}

static int sq_gc_count(void *be, const struct meta_gc_cutoffs *c, struct meta_gc_counts *out)
{
    struct sq *s = be;
    struct sq_conn *r = NULL;
    sqlite3_stmt *st;
    int rc = sq_reader_get(s, &r);
    int src;

    if (rc != OK)
        goto out;
    st = r->st[ST_GC_COUNT];
    sqlite3_bind_int64(st, 1, c->created_before);
    sqlite3_bind_int64(st, 2, c->pinned_before);
    sqlite3_bind_int64(st, 3, c->job_before_ms);
    src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        out->stale_pins = sqlite3_column_int64(st, 0);
        out->stale_pin_bytes = (uint64_t)sqlite3_column_int64(st, 1);
        out->unused = sqlite3_column_int64(st, 2);
        out->unused_bytes = (uint64_t)sqlite3_column_int64(st, 3);
        out->dead_variants = sqlite3_column_int64(st, 4);
        out->dead_variant_bytes = (uint64_t)sqlite3_column_int64(st, 5);
        out->dead_jobs = sqlite3_column_int64(st, 6);
    } else {
        rc = sq_fail(r->db, src, "gc count");
    }
    sq_reset(st);
out:
    if (r != NULL)
        sq_reader_put(s, r);
    return rc;
}

static int sq_blob_list_unused(void *be, const char *after, int64_t created_before,
                               struct meta_blob *out, size_t cap, size_t *n)
{
    struct sq *s = be;
    struct sq_conn *r = NULL;
    sqlite3_stmt *st = NULL;
    int rc = sq_reader_get(s, &r);
    int src = SQLITE_DONE;
    size_t got = 0;

    if (rc != OK)
        goto out;
    st = r->st[ST_BLOB_LIST_UNUSED];
    sq_bind_text(st, 1, after);
    sqlite3_bind_int64(st, 2, created_before);
    sqlite3_bind_int64(st, 3, cap > INT_MAX ? INT_MAX : (sqlite3_int64)cap);
    while (got < cap) {
        src = sqlite3_step(st);
        if (src != SQLITE_ROW)
            break;
        sq_col_blob(st, &out[got++]);
    }
    if (src != SQLITE_ROW && src != SQLITE_DONE)
        rc = sq_fail(r->db, src, "blob list unused");
    sq_reset(st);
out:
    if (r != NULL)
        sq_reader_put(s, r);
    *n = rc == OK ? got : 0;
    return rc;
}

static int sq_job_purge_dead(void *be, int64_t before_ms, int64_t *n)
{
    struct sq *s = be;
    struct sq_conn *w = &s->writer;
    int64_t purged = 0;
    int rc = sq_begin(s);

    if (rc != OK)
        goto out;
    sqlite3_bind_int64(w->st[ST_JOB_PURGE_DEAD], 1, before_ms);
    rc = sq_exec(w, ST_JOB_PURGE_DEAD, "job purge dead");
    if (rc == OK)
        purged = sqlite3_changes(w->db);
out:
    rc = sq_end(s, rc);
    *n = rc == OK ? purged : 0;
    return rc;
}

static int sq_job_enqueue(void *be, const char *kind, const char *payload, int64_t delay_ms)
{
    struct sq *s = be;
    int rc = sq_begin(s);

    if (rc == OK)
        rc = sq_job_insert(&s->writer, kind, payload, delay_ms);
    return sq_end(s, rc);
}

static int sq_job_claim(void *be, int64_t lease_ms, struct meta_job *out)
{
    struct sq *s = be;
    struct sq_conn *w = &s->writer;
    sqlite3_stmt *st = w->st[ST_JOB_CLAIM];
    int64_t lease = meta_lease_new();
    int rc = sq_begin(s);
    int src;

    if (rc != OK)
        goto out;
    sqlite3_bind_int64(st, 1, meta_now_ms());
    sqlite3_bind_int64(st, 2, lease_ms);
    sqlite3_bind_int64(st, 3, lease);
    src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        out->id = sqlite3_column_int64(st, 0);
        sq_col_text(st, 1, out->kind, sizeof(out->kind));
        sq_col_text(st, 2, out->payload, sizeof(out->payload));
        out->attempts = sqlite3_column_int(st, 3);
        out->lease = lease;
        src = sqlite3_step(st);
    } else if (src == SQLITE_DONE) {
        rc = E_NOTFOUND;
    }
    sq_reset(st);
    if (src != SQLITE_DONE)
        rc = sq_fail(w->db, src, "job claim");
out:
    return sq_end_as(s, rc, E_NOTFOUND);
}

static int sq_job_done(void *be, const struct meta_job *job)
{
    struct sq *s = be;
    struct sq_conn *w = &s->writer;
    sqlite3_stmt *st = w->st[ST_JOB_DONE];
    int rc = sq_begin(s);

    if (rc != OK)
        goto out;
    sqlite3_bind_int64(st, 1, job->id);
    sqlite3_bind_int64(st, 2, job->lease);
    rc = sq_exec(w, ST_JOB_DONE, "job done");
    if (rc == OK && sqlite3_changes(w->db) == 0)
        rc = E_NOTFOUND;
out:
    return sq_end_as(s, rc, E_NOTFOUND);
}

static int sq_job_fail(void *be, const struct meta_job *job, const char *error, int max_attempts,
                       int64_t retry_ms)
{
    struct sq *s = be;
    struct sq_conn *w = &s->writer;
    sqlite3_stmt *st = w->st[ST_JOB_FAIL];
    int rc = sq_begin(s);

    if (rc != OK)
        goto out;
    sqlite3_bind_int64(st, 1, job->id);
    sqlite3_bind_int64(st, 2, job->lease);
    sqlite3_bind_int64(st, 3, max_attempts);
    sqlite3_bind_int64(st, 4, meta_now_ms() + retry_ms);
    sq_bind_text(st, 5, error);
    rc = sq_exec(w, ST_JOB_FAIL, "job fail");
    if (rc == OK && sqlite3_changes(w->db) == 0)
        rc = E_NOTFOUND;
out:
    return sq_end_as(s, rc, E_NOTFOUND);
}

static int sq_job_extend(void *be, const struct meta_job *job, int64_t lease_ms)
{
    struct sq *s = be;
    struct sq_conn *w = &s->writer;
    sqlite3_stmt *st = w->st[ST_JOB_EXTEND];
    int rc = sq_begin(s);

    if (rc != OK)
        goto out;
    sqlite3_bind_int64(st, 1, job->id);
    sqlite3_bind_int64(st, 2, job->lease);
    sqlite3_bind_int64(st, 3, meta_now_ms() + lease_ms);
    rc = sq_exec(w, ST_JOB_EXTEND, "job extend");
    if (rc == OK && sqlite3_changes(w->db) == 0)
        rc = E_NOTFOUND;
out:
    return sq_end_as(s, rc, E_NOTFOUND);
}

static int sq_job_stats(void *be, struct meta_job_stats *js)
{
    struct sq *s = be;
    struct sq_conn *r = NULL;
    sqlite3_stmt *st;
    int rc = sq_reader_get(s, &r);
    int src;

    if (rc != OK)
        goto out;
    int64_t now = meta_now_ms();
    st = r->st[ST_JOB_STATS];
    sqlite3_bind_int64(st, 1, now);
    for (src = sqlite3_step(st); src == SQLITE_ROW; src = sqlite3_step(st)) {
        int64_t v[6];
        for (int i = 0; i < 6; i++)
            v[i] = sqlite3_column_int64(st, i + 1);
        meta_job_stats_add(js, (const char *)sqlite3_column_text(st, 0), v, now);
    }
    if (src != SQLITE_DONE)
        rc = sq_fail(r->db, src, "job stats");
    sq_reset(st);
out:
    if (r != NULL)
        sq_reader_put(s, r);
    return rc;
}

static void sq_nodes(void *be, struct meta_node *out, size_t cap, size_t *n)
{
    (void)cap;
    memset(out, 0, sizeof(*out));
    snprintf(out->name, sizeof(out->name), "sqlite");
    out->role = "sqlite";
    out->reachable = out->usable = sq_ping(be) == OK;
    *n = 1;
}

/* ---- lifecycle ---- */

static void sq_free(struct sq *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < SQ_READERS; i++)
        sq_conn_close(&s->readers[i]);
    sq_conn_close(&s->writer); /* last: the last connection checkpoints the WAL */
    pthread_mutex_destroy(&s->wlock);
    pthread_mutex_destroy(&s->rlock);
    pthread_cond_destroy(&s->rfree);
    free(s);
}

static void sq_close(void *be)
{
    sq_free(be);
}

static const struct meta_ops sq_ops = {
    .name = "sqlite",
    .tx = &sq_tx_ops,
    .close = sq_close,
    .ping = sq_ping,
    .image_get = sq_image_get,
    .image_list = sq_image_list,
    .variant_get = sq_variant_get,
    .blob_refs = sq_blob_refs,
    .image_count = sq_image_count,
    .setting_get = sq_setting_get,
    .setting_set = sq_setting_set,
    .blob_get = sq_blob_get,
    .gc_count = sq_gc_count,
    .blob_list_unused = sq_blob_list_unused,
    .job_purge_dead = sq_job_purge_dead,
    .job_enqueue = sq_job_enqueue,
    .job_claim = sq_job_claim,
    .job_done = sq_job_done,
    .job_fail = sq_job_fail,
    .job_extend = sq_job_extend,
    .job_stats = sq_job_stats,
    .nodes = sq_nodes,
};

int meta_open_sqlite(const char *path, struct meta_store **out)
{
    struct sq *s = NULL;
    pthread_condattr_t ca;
    int rc = OK;

    *out = NULL;
    if (path == NULL || path[0] == '\0')
        return E_IO;
    if (!sqlite3_threadsafe()) {
        log_error("meta", "sqlite was built without thread support");
        return E_IO;
    }
    s = xcalloc(1, sizeof(*s));
    pthread_mutex_init(&s->wlock, NULL);
    pthread_mutex_init(&s->rlock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->rfree, &ca);
    pthread_condattr_destroy(&ca);

    rc = sq_conn_open(path, true, &s->writer);
    if (rc != OK)
        goto out;
    rc = sq_migrate(s->writer.db, path);
    if (rc != OK)
        goto out;
    rc = sq_conn_prepare(&s->writer, false);
    if (rc != OK)
        goto out;
    for (size_t i = 0; i < SQ_READERS; i++) {
        rc = sq_conn_open(path, false, &s->readers[i]);
        if (rc != OK)
            goto out;
        rc = sq_conn_prepare(&s->readers[i], true);
        if (rc != OK)
            goto out;
        s->idle[s->nidle++] = &s->readers[i];
    }
    *out = meta_store_new(&sq_ops, s);
    s = NULL;
out:
    sq_free(s);
    if (rc != OK)
        rc = E_IO; /* the contract: E_IO when the database cannot be opened */
    return rc;
}
