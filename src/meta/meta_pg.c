/*
 * meta_pg.c - the PostgreSQL metadata backend: one primary, streaming replicas.
 *
 * Writes go through a pool of connections to the primary's URL with
 * target_session_attrs=read-write: libpq tries every host of a multi-host URL
 * and keeps the writable one, so after a failover the next new connection
 * finds the new primary with no restart. A commit that PostgreSQL confirms
 * with a warning (its wait for a synchronous standby was cancelled: committed
 * locally, maybe not replicated) is reported E_UNAVAILABLE, never as durable.
 *
 * Reads go round-robin over the read nodes (db.replicas, or every host of a
 * multi-host db.url) that are reachable, not backing off, within
 * max_replica_lag and in recovery; a monitor thread learns each node's role
 * (pg_is_in_recovery()) and lag, so after a failover the new primary is read
 * only when no standby can answer and a rejoined old primary serves reads
 * again. A read that fails on one node is retried on the next. A miss on a
 * standby is asked again on the primary (read-your-writes) and remembered
 * briefly; while no primary answers, an image id a standby does not know is
 * E_UNAVAILABLE (it may have been acknowledged a moment ago), not E_NOTFOUND.
 * Every connection has connect_timeout and statement_timeout: a dead server
 * costs at most those, never a hang. PGresult never leaves this file.
 */
#include "core/codec.h"
#include "core/err.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/xalloc.h"
#include "meta/meta_int.h"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PG_MAX_REPLICAS        (META_NODES_MAX - 1)
#define PG_POOL_MAX            64   /* idle connections kept per server, at most */
#define PG_NEG_SLOTS           1024 /* negative cache of ids the primary did not have */
#define PG_NEG_TTL_MS          1000
#define PG_WRITE_TRIES         4   /* stale pooled connection or serialization failure: again */
#define PG_BACKOFF_MIN         250 /* ms a failed server is skipped, doubling */
#define PG_BACKOFF_MAX         5000
#define PG_PRIMARY_BACKOFF_MAX 1000  /* writes fail fast while the primary is down, not longer */
#define PG_MIGRATE_LOCK        74185 /* pg_advisory_xact_lock key serialising migrators */
#define PG_EVICT_LOCK          74186 /* pg_try_advisory_xact_lock key: one evicting process */

/* Statuses of this file only, never returned to callers. */
#define PG_RETRY 1 /* serialization failure, deadlock, recovery conflict: run it again */
#define PG_LOST  2 /* the connection broke: nothing more can be done on it */

/*
 * Embedded migrations: entry i brings the schema from version i to i + 1
 * (table schema_migrations). Append only; never edit an entry that shipped.
 * Times are integers like in SQLite: seconds for rows, milliseconds for jobs.
 */
static const char *const pg_migrations[] = {
    /* 1: images, blobs (with pins), variants, settings, the job queue */
    "CREATE TABLE images ("
    "  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    "  id text NOT NULL UNIQUE,"
    "  key text NOT NULL CHECK (length(key) = 64),"
    "  format text NOT NULL,"
    "  width integer NOT NULL,"
    "  height integer NOT NULL,"
    "  frames integer NOT NULL,"
    "  bytes bigint NOT NULL,"
    "  created_at bigint NOT NULL,"
    "  owner text,"
    "  token_hash text NOT NULL,"
    "  deleted_at bigint"
    ");"
    "CREATE INDEX images_live ON images (seq) WHERE deleted_at IS NULL;"
    "CREATE TABLE blobs ("
    "  key text PRIMARY KEY CHECK (length(key) = 64),"
    "  refs bigint NOT NULL CHECK (refs >= 0),"
    "  pins integer NOT NULL DEFAULT 0 CHECK (pins >= 0),"
    "  bytes bigint NOT NULL,"
    "  created_at bigint NOT NULL,"
    "  pinned_at bigint"
    ");"
    "CREATE TABLE variants ("
    "  image_id text NOT NULL REFERENCES images (id),"
    "  name text NOT NULL,"
    "  key text NOT NULL CHECK (length(key) = 64),"
    "  format text NOT NULL,"
    "  width integer NOT NULL,"
    "  height integer NOT NULL,"
    "  bytes bigint NOT NULL,"
    "  created_at bigint NOT NULL,"
    "  PRIMARY KEY (image_id, name)"
    ");"
    "CREATE TABLE settings ("
    "  name text PRIMARY KEY,"
    "  value text NOT NULL,"
    "  updated_at bigint NOT NULL"
    ");"
    "CREATE TABLE jobs ("
    "  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    "  kind text NOT NULL,"
    "  payload text NOT NULL,"
    "  state text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'dead')),"
    "  attempts integer NOT NULL DEFAULT 0,"
    "  run_after bigint NOT NULL,"
    "  lease_until bigint,"
    "  lease_token bigint,"
    "  last_error text,"
    "  created_at bigint NOT NULL"
    ");"
    "CREATE INDEX jobs_due ON jobs (run_after) WHERE state = 'queued';"
    "CREATE INDEX jobs_leased ON jobs (lease_until) WHERE state = 'running';",
    /* 2: the secret of listing cursors: 244 random bits (two v4 UUIDs of pg_strong_random) */
    "INSERT INTO settings (name, value, updated_at) VALUES ('cursor.secret',"
    " replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''),"
    " extract(epoch FROM now())::bigint) ON CONFLICT (name) DO NOTHING;",
    /* 3: the renditions' LRU (last use, NULL: never since made) and their making leases */
    "ALTER TABLE variants ADD COLUMN used_at bigint;"
    "CREATE INDEX variants_lru ON variants ((coalesce(used_at, created_at)))"
    " WHERE strpos(name, ':') > 0;"
    "CREATE TABLE rendition_leases ("
    "  image_id text NOT NULL,"
    "  name text NOT NULL,"
    "  holder bigint NOT NULL,"
    "  until bigint NOT NULL," /* ms since the epoch */
    "  PRIMARY KEY (image_id, name)"
    ");",
};

const int meta_pg_schema_version = (int)(sizeof(pg_migrations) / sizeof(pg_migrations[0]));

#define PG_IMAGE_COLS                                                                              \
    "id, seq, key, format, width, height, frames, bytes, created_at, coalesce(owner, ''),"         \
    " token_hash"

#define PG_BLOB_COLS "key, refs, pins, bytes, created_at, coalesce(pinned_at, 0)"

/* What gc collects: no reference, and no pin or only a stale one ($2), created before $1. */
#define PG_GC_UNUSED                                                                               \
    "refs = 0 AND (pins = 0 OR coalesce(pinned_at, 0) < $2::bigint) AND created_at < $1::bigint"

#define PG_RENDITION "strpos(name, ':') > 0"
#define PG_STR_(x)   #x
#define PG_STR(x)    PG_STR_(x)

const char meta_pg_list_sql[] = "SELECT " PG_IMAGE_COLS " FROM images"
                                " WHERE deleted_at IS NULL AND seq < $1::bigint"
                                " ORDER BY seq DESC LIMIT $2::bigint";

enum pg_stmt {
    PS_IMAGE_INSERT,
    PS_BLOB_REF,
    PS_JOB_INSERT,
    PS_IMAGE_MARK_DELETED,
    PS_VARIANTS_DROP,
    PS_BLOB_UNREF,
    PS_IMAGE_LIVE,
    PS_VARIANT_INSERT,
    PS_VARIANT_COUNT,
    PS_SETTING_SET,
    PS_BLOB_PIN,
    PS_BLOB_UNPIN,
    PS_BLOB_LOCK,
    PS_BLOB_DROP,
    PS_JOB_CLAIM,
    PS_JOB_DONE,
    PS_JOB_FAIL,
    PS_JOB_EXTEND,
    PS_JOB_STATS,
    PS_PING,
    PS_IMAGE_GET,
    PS_IMAGE_KNOWN,
    PS_IMAGE_LIST,
    PS_VARIANT_GET,
    PS_BLOB_REFS,
    PS_IMAGE_COUNT,
    PS_SETTING_GET,
    PS_PRIMARY_LSN,
    PS_LAG,
    PS_BLOB_GET,
    PS_GC_COUNT,
    PS_BLOB_LIST_UNUSED,
    PS_BLOB_UNPIN_STALE,
    PS_BLOB_CLAIM,
    PS_VARIANTS_DROP_DEAD,
    PS_JOB_PURGE_DEAD,
    PS_VARIANT_TOUCH,
    PS_VARIANT_DELETE,
    PS_EVICT_LOCK,
    PS_RENDITIONS_BYTES,
    PS_RENDITIONS_OLDEST,
    PS_RENDITIONS_OF,
    PS_LEASE_TAKE,
    PS_LEASE_DROP,
    PS_LEASES_DROP_STALE,
    PS_COUNT
};

_Static_assert(PS_COUNT <= 64, "pg_conn.prepared has one bit per statement");

static const char *const pg_sql[PS_COUNT] = {
    [PS_IMAGE_INSERT] = "INSERT INTO images (id, key, format, width, height, frames, bytes,"
                        " created_at, owner, token_hash) VALUES ($1, $2, $3, $4::integer,"
                        " $5::integer, $6::integer, $7::bigint, $8::bigint, $9, $10) RETURNING seq",
    [PS_BLOB_REF] = "INSERT INTO blobs (key, refs, bytes, created_at) VALUES ($1, 1, $2::bigint,"
                    " $3::bigint) ON CONFLICT (key) DO UPDATE SET refs = blobs.refs + 1",
    [PS_JOB_INSERT] = "INSERT INTO jobs (kind, payload, run_after, created_at)"
                      " VALUES ($1, $2, $3::bigint, $4::bigint)",
    [PS_IMAGE_MARK_DELETED] = "UPDATE images SET deleted_at = $2::bigint"
                              " WHERE id = $1 AND deleted_at IS NULL RETURNING key, format",
    [PS_VARIANTS_DROP] = "DELETE FROM variants WHERE image_id = $1 RETURNING key",
    [PS_BLOB_UNREF] = "UPDATE blobs SET refs = refs - 1 WHERE key = $1 RETURNING refs, pins",
    /* FOR SHARE: a delete of the image waits for this transaction, or this one sees it. */
    [PS_IMAGE_LIVE] = "SELECT 1 FROM images WHERE id = $1 AND deleted_at IS NULL FOR SHARE",
    [PS_VARIANT_INSERT] = "INSERT INTO variants (image_id, name, key, format, width, height,"
                          " bytes, created_at) VALUES ($1, $2, $3, $4, $5::integer, $6::integer,"
                          " $7::bigint, $8::bigint) ON CONFLICT (image_id, name) DO NOTHING",
    [PS_VARIANT_COUNT] = "SELECT count(*) FROM variants WHERE image_id = $1",
    [PS_SETTING_SET] = "INSERT INTO settings (name, value, updated_at) VALUES ($1, $2, $3::bigint)"
                       " ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value,"
                       " updated_at = EXCLUDED.updated_at",
    [PS_BLOB_PIN] = "INSERT INTO blobs (key, refs, pins, bytes, created_at, pinned_at)"
                    " VALUES ($1, 0, 1, $2::bigint, $3::bigint, $3::bigint) ON CONFLICT (key)"
                    " DO UPDATE SET pins = blobs.pins + 1, pinned_at = EXCLUDED.pinned_at",
    [PS_BLOB_UNPIN] = "UPDATE blobs SET pins = pins - 1 WHERE key = $1 AND pins > 0"
                      " RETURNING refs, pins",
    [PS_BLOB_LOCK] = "SELECT refs, pins FROM blobs WHERE key = $1 FOR UPDATE",
    [PS_BLOB_DROP] = "DELETE FROM blobs WHERE key = $1 AND refs = 0 AND pins = 0",
    [PS_JOB_CLAIM] = "UPDATE jobs SET state = 'running', attempts = attempts + 1,"
                     " lease_until = $1::bigint + $2::bigint, lease_token = $3::bigint"
                     " WHERE id = (SELECT id FROM jobs WHERE (state = 'queued' AND"
                     " run_after <= $1::bigint) OR (state = 'running' AND lease_until < $1::bigint)"
                     " ORDER BY run_after LIMIT 1 FOR UPDATE SKIP LOCKED)"
                     " RETURNING id, kind, payload, attempts",
    [PS_JOB_DONE] = "DELETE FROM jobs WHERE id = $1::bigint AND lease_token = $2::bigint"
                    " AND state = 'running'",
    [PS_JOB_FAIL] = "UPDATE jobs SET state = CASE WHEN attempts >= $3::integer THEN 'dead'"
                    " ELSE 'queued' END, run_after = $4::bigint, last_error = $5,"
                    " lease_until = NULL, lease_token = NULL"
                    " WHERE id = $1::bigint AND lease_token = $2::bigint AND state = 'running'",
    [PS_JOB_EXTEND] = "UPDATE jobs SET lease_until = $3::bigint"
                      " WHERE id = $1::bigint AND lease_token = $2::bigint AND state = 'running'",
    [PS_JOB_STATS] = "SELECT kind, count(*) FILTER (WHERE state = 'queued'),"
                     " count(*) FILTER (WHERE state = 'running'),"
                     " count(*) FILTER (WHERE state = 'dead'),"
                     " coalesce(min(created_at) FILTER (WHERE state <> 'dead'), 0),"
                     " count(*) FILTER (WHERE state = 'queued' AND run_after <= $1::bigint),"
                     " coalesce(min(run_after) FILTER (WHERE state = 'queued'"
                     " AND run_after <= $1::bigint), 0) FROM jobs GROUP BY kind ORDER BY kind",
    [PS_PING] = "SELECT 1",
    [PS_IMAGE_GET] = "SELECT " PG_IMAGE_COLS " FROM images WHERE id = $1 AND deleted_at IS NULL",
    /* deleted or not: a standby that has the row knows the answer without the primary */
    [PS_IMAGE_KNOWN] = "SELECT 1 FROM images WHERE id = $1",
    [PS_IMAGE_LIST] = meta_pg_list_sql,
    [PS_VARIANT_GET] =
        "SELECT image_id, name, key, format, width, height, bytes,"
        " coalesce(used_at, created_at) FROM variants WHERE image_id = $1 AND name = $2",
    [PS_BLOB_REFS] = "SELECT refs FROM blobs WHERE key = $1",
    [PS_IMAGE_COUNT] = "SELECT count(*) FROM images WHERE deleted_at IS NULL",
    [PS_SETTING_GET] = "SELECT value FROM settings WHERE name = $1",
    [PS_PRIMARY_LSN] = "SELECT pg_current_wal_lsn()::text",
    /*
     * The node's role, and its lag: 0 when caught up with the primary's LSN
     * read just before (or when that is unknown: the primary is down).
     */
    [PS_LAG] = "SELECT pg_is_in_recovery(), CASE WHEN NOT pg_is_in_recovery()"
               " OR $1::pg_lsn IS NULL OR pg_last_wal_replay_lsn() >= $1::pg_lsn THEN 0"
               " ELSE coalesce((extract(epoch FROM clock_timestamp() -"
               " pg_last_xact_replay_timestamp()) * 1000)::bigint, 0) END",
    /* gc: read on the primary, which decides what is removed */
    [PS_BLOB_GET] = "SELECT " PG_BLOB_COLS " FROM blobs WHERE key = $1",
    [PS_GC_COUNT] =
        "SELECT count(*) FILTER (WHERE pins > 0 AND coalesce(pinned_at, 0) < $2::bigint),"
        " coalesce(sum(bytes) FILTER (WHERE pins > 0 AND coalesce(pinned_at, 0) < $2::bigint), 0),"
        " count(*) FILTER (WHERE " PG_GC_UNUSED "),"
        " coalesce(sum(bytes) FILTER (WHERE " PG_GC_UNUSED "), 0),"
        " (SELECT count(*) FROM variants v JOIN images i ON i.id = v.image_id"
        " WHERE i.deleted_at IS NOT NULL),"
        " (SELECT coalesce(sum(v.bytes), 0) FROM variants v JOIN images i ON i.id = v.image_id"
        " WHERE i.deleted_at IS NOT NULL),"
        " (SELECT count(*) FROM jobs WHERE state = 'dead' AND run_after < $3::bigint) FROM blobs",
    [PS_BLOB_LIST_UNUSED] = "SELECT " PG_BLOB_COLS " FROM blobs WHERE key > $1 AND refs = 0"
                            " AND pins = 0 AND created_at < $2::bigint ORDER BY key"
                            " LIMIT $3::bigint",
    [PS_BLOB_UNPIN_STALE] = "UPDATE blobs SET pins = 0 WHERE pins > 0"
                            " AND coalesce(pinned_at, 0) < $1::bigint RETURNING key, refs",
    /*
     * The claim of a row-less blob: an uncommitted row a concurrent pin's
     * INSERT ... ON CONFLICT waits for; gc deletes it again in the same transaction.
     */
    [PS_BLOB_CLAIM] =
        "INSERT INTO blobs (key, refs, pins, bytes, created_at)"
        " VALUES ($1, 0, 0, 0, $2::bigint) ON CONFLICT (key) DO NOTHING RETURNING key",
    [PS_VARIANTS_DROP_DEAD] = "DELETE FROM variants WHERE (image_id, name) IN"
                              " (SELECT v.image_id, v.name FROM variants v JOIN images i"
                              " ON i.id = v.image_id WHERE i.deleted_at IS NOT NULL"
                              " LIMIT $1::bigint FOR UPDATE OF v) RETURNING key, bytes",
    [PS_JOB_PURGE_DEAD] = "DELETE FROM jobs WHERE state = 'dead' AND run_after < $1::bigint",
    /* renditions: names with ':' (PG_RENDITION matches the partial index variants_lru) */
    [PS_VARIANT_TOUCH] = "UPDATE variants SET used_at = $3::bigint WHERE image_id = $1"
                         " AND name = $2",
    [PS_VARIANT_DELETE] = "DELETE FROM variants WHERE image_id = $1 AND name = $2 RETURNING key",
    [PS_EVICT_LOCK] = "SELECT pg_try_advisory_xact_lock(" PG_STR(PG_EVICT_LOCK) ")",
    [PS_RENDITIONS_BYTES] = "SELECT coalesce(sum(bytes), 0) FROM variants WHERE " PG_RENDITION,
    [PS_RENDITIONS_OLDEST] = "SELECT image_id, name, bytes FROM variants WHERE " PG_RENDITION
                             " ORDER BY coalesce(used_at, created_at) LIMIT $1::bigint",
    [PS_RENDITIONS_OF] =
        "SELECT image_id, name, bytes FROM variants WHERE image_id = $2 AND " PG_RENDITION
        " LIMIT $1::bigint",
    [PS_LEASE_TAKE] = "INSERT INTO rendition_leases (image_id, name, holder, until)"
                      " VALUES ($1, $2, $3::bigint, $4::bigint) ON CONFLICT (image_id, name)"
                      " DO UPDATE SET holder = EXCLUDED.holder, until = EXCLUDED.until"
                      " WHERE rendition_leases.until < $5::bigint"
                      " OR rendition_leases.holder = EXCLUDED.holder RETURNING 1",
    [PS_LEASE_DROP] = "DELETE FROM rendition_leases WHERE image_id = $1 AND name = $2"
                      " AND holder = $3::bigint",
    [PS_LEASES_DROP_STALE] = "DELETE FROM rendition_leases WHERE until < $1::bigint",
};

struct pg_conn {
    PGconn *c;
    uint64_t prepared; /* bit i: pg_sql[i] is prepared on this session as "t<i>" */
    bool warned;       /* the server sent a WARNING since the flag was cleared */
};

struct pg_node {
    char name[META_NODE_NAME_MAX];
    char addr[META_NODE_NAME_MAX]; /* host:port; the host list of the write pool */
    char *conninfo;
    char *host; /* overrides the conninfo's host list (a node split out of db.url) */
    char *port;
    bool primary;         /* the write pool (db.url with target_session_attrs=read-write) */
    _Atomic bool standby; /* learned: in recovery (read nodes only) */
    pthread_mutex_t lock; /* guards idle, nidle */
    struct pg_conn *idle[PG_POOL_MAX];
    size_t nidle;
    _Atomic int64_t down_until; /* monotonic ms: skipped until then */
    _Atomic int64_t backoff_ms;
    _Atomic bool reachable;
    _Atomic int64_t lag_ms;
    _Atomic int64_t queries;
    _Atomic int64_t errors;
};

struct pg_neg {
    char id[IMAGE_ID_MAX + 1];
    int64_t until; /* monotonic ms */
};

struct pg {
    int64_t max_lag_ms;
    int64_t statement_timeout_ms;
    int64_t connect_timeout_ms;
    size_t pool;
    struct pg_node primary;
    struct pg_node replica[PG_MAX_REPLICAS];
    size_t nreplicas;
    _Atomic unsigned rr;
    int leader; /* the read node seen leading last (monitor thread only); -1: none yet */
    pthread_t monitor;
    bool monitor_on;
    bool stopping; /* guarded by mlock */
    pthread_mutex_t mlock;
    pthread_cond_t mwake;
    pthread_mutex_t neglock;
    struct pg_neg neg[PG_NEG_SLOTS];
};

typedef int pg_fn(struct pg_node *n, struct pg_conn *c, void *arg);

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* pg_first_line copies the first line of a libpq message (they end in newlines). */
static void pg_first_line(const char *msg, char *buf, size_t cap)
{
    size_t len = msg ? strcspn(msg, "\n") : 0;

    if (len >= cap)
        len = cap - 1;
    if (len > 0)
        memcpy(buf, msg, len);
    buf[len] = '\0';
}

/* ---- health marks ---- */

static void pg_conn_free(struct pg_conn *c)
{
    if (c == NULL)
        return;
    PQfinish(c->c);
    free(c);
}

/* pg_flush closes every idle connection of n: after one broke, the others likely did too. */
static void pg_flush(struct pg_node *n)
{
    struct pg_conn *drop[PG_POOL_MAX];
    size_t k;

    pthread_mutex_lock(&n->lock);
    k = n->nidle;
    memcpy(drop, n->idle, k * sizeof(drop[0]));
    n->nidle = 0;
    pthread_mutex_unlock(&n->lock);
    for (size_t i = 0; i < k; i++)
        pg_conn_free(drop[i]);
}

static void pg_mark_down(struct pg_node *n)
{
    int64_t cap = n->primary ? PG_PRIMARY_BACKOFF_MAX : PG_BACKOFF_MAX;
    int64_t b = atomic_load(&n->backoff_ms);

    b = b == 0 ? PG_BACKOFF_MIN : (2 * b > cap ? cap : 2 * b);
    atomic_store(&n->backoff_ms, b);
    atomic_store(&n->down_until, mono_ms() + b);
    if (atomic_exchange(&n->reachable, false))
        log_warn("meta", "postgres %s unreachable: skipped for %lld ms", n->name, (long long)b);
    pg_flush(n);
}

static void pg_mark_up(struct pg_node *n)
{
    atomic_store(&n->backoff_ms, 0);
    atomic_store(&n->down_until, 0);
    if (!atomic_exchange(&n->reachable, true))
        log_info("meta", "postgres %s reachable", n->name);
}

static bool pg_usable(const struct pg *p, struct pg_node *n)
{
    return atomic_load(&n->reachable) && mono_ms() >= atomic_load(&n->down_until) &&
           atomic_load(&n->lag_ms) <= p->max_lag_ms;
}

/* ---- connections ---- */

/*
 * pg_notice receives a session's notices: a WARNING is logged and flagged on
 * the session, since one at COMMIT means the commit is not confirmed durable.
 */
static void pg_notice(void *arg, const PGresult *r)
{
    struct pg_conn *c = arg;
    const char *sev = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
    char msg[200];

    if (sev == NULL || strcmp(sev, "WARNING") != 0)
        return;
    c->warned = true;
    pg_first_line(PQresultErrorMessage(r), msg, sizeof(msg));
    log_warn("meta", "postgres: %s", msg);
}

/*
 * pg_connect opens a session to n with the timeouts every session carries;
 * NULL when it cannot (logged once per outage by pg_mark_down's caller).
 */
static struct pg_conn *pg_connect(const struct pg *p, struct pg_node *n)
{
    char ct[24], opts[160], err[200];
    /* host and port come after dbname: they override the hosts of an expanded URL */
    const char *keys[] = {"dbname",
                          "connect_timeout",
                          "options",
                          "application_name",
                          "target_session_attrs",
                          "keepalives_idle",
                          "keepalives_interval",
                          "keepalives_count",
                          n->host ? "host" : NULL,
                          "port",
                          NULL};
    const char *vals[sizeof(keys) / sizeof(keys[0])];
    struct pg_conn *c;
    PGconn *pc;

    /* libpq counts whole seconds (and treats 1 as 2) */
    snprintf(ct, sizeof(ct), "%lld", (long long)((p->connect_timeout_ms + 999) / 1000));
    snprintf(opts, sizeof(opts),
             "-c statement_timeout=%lld -c lock_timeout=%lld "
             "-c idle_in_transaction_session_timeout=%lld -c client_min_messages=warning",
             (long long)p->statement_timeout_ms, (long long)p->statement_timeout_ms,
             (long long)(p->statement_timeout_ms * 4));
    vals[0] = n->conninfo;
    vals[1] = ct;
    vals[2] = opts;
    vals[3] = "tessera";
    vals[4] = n->primary ? "read-write" : "any";
    vals[5] = "5";
    vals[6] = "2";
    vals[7] = "2";
    vals[8] = n->host;
    vals[9] = n->port ? n->port : "";
    vals[10] = NULL;
    pc = PQconnectdbParams(keys, vals, 1);
    if (pc == NULL)
        return NULL;
    if (PQstatus(pc) != CONNECTION_OK) {
        pg_first_line(PQerrorMessage(pc), err, sizeof(err));
        log_debug("meta", "postgres %s: cannot connect: %s", n->name, err);
        PQfinish(pc);
        return NULL;
    }
    c = xcalloc(1, sizeof(*c));
    c->c = pc;
    PQsetNoticeReceiver(pc, pg_notice, c);
    return c;
}

/* pg_get takes an idle session of n or opens one; NULL (and n marked down) when it cannot. */
static struct pg_conn *pg_get(const struct pg *p, struct pg_node *n)
{
    struct pg_conn *c = NULL;

    pthread_mutex_lock(&n->lock);
    if (n->nidle > 0)
        c = n->idle[--n->nidle];
    pthread_mutex_unlock(&n->lock);
    if (c != NULL)
        return c;
    c = pg_connect(p, n);
    if (c == NULL) {
        atomic_fetch_add(&n->errors, 1);
        pg_mark_down(n);
    }
    return c;
}

/* pg_put returns a session to the pool, or closes it when broken or mid-transaction. */
static void pg_put(const struct pg *p, struct pg_node *n, struct pg_conn *c, bool broken)
{
    if (c == NULL)
        return;
    if (broken || PQstatus(c->c) != CONNECTION_OK || PQtransactionStatus(c->c) != PQTRANS_IDLE) {
        pg_conn_free(c);
        return;
    }
    pthread_mutex_lock(&n->lock);
    if (n->nidle < p->pool && n->nidle < PG_POOL_MAX) {
        n->idle[n->nidle++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&n->lock);
    pg_conn_free(c);
}

/*
 * pg_check maps a result to a status: OK, E_EXISTS (unique violation, not
 * logged), PG_RETRY, PG_LOST (the session is unusable), E_UNAVAILABLE
 * (timeouts, resources), E_NOSPACE, else E_IO. Logs what was being done.
 */
static int pg_check(struct pg_node *n, struct pg_conn *c, PGresult *r, const char *what)
{
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    char msg[200];
    int rc;

    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return OK;
    pg_first_line(r ? PQresultErrorMessage(r) : PQerrorMessage(c->c), msg, sizeof(msg));
    if (PQstatus(c->c) != CONNECTION_OK || state == NULL)
        rc = PG_LOST;
    else if (strcmp(state, "23505") == 0)
        return E_EXISTS;
    else if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0)
        rc = PG_RETRY;
    else if (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0 ||
             strcmp(state, "25006") == 0) /* read-only: this "primary" is a standby now */
        rc = PG_LOST;
    else if (strcmp(state, "53100") == 0)
        rc = E_NOSPACE;
    else if (strcmp(state, "57014") == 0 || strcmp(state, "55P03") == 0 ||
             strncmp(state, "53", 2) == 0)
        rc = E_UNAVAILABLE; /* statement or lock timeout, out of resources */
    else
        rc = E_IO;
    atomic_fetch_add(&n->errors, 1);
    if (rc == PG_RETRY)
        log_debug("meta", "postgres %s %s: %s (retried)", n->name, what, msg);
    else
        log_warn("meta", "postgres %s %s: %s [%s]", n->name, what, msg, state ? state : "-");
    return rc;
}

/* pg_run executes statement i with text parameters (NULL: SQL NULL), preparing it once per session.
 */
static PGresult *pg_run(struct pg_conn *c, enum pg_stmt i, int nparams, const char *const *v)
{
    char name[8];

    snprintf(name, sizeof(name), "t%d", (int)i);
    if ((c->prepared & (UINT64_C(1) << i)) == 0) {
        PGresult *r = PQprepare(c->c, name, pg_sql[i], 0, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            return r;
        PQclear(r);
        c->prepared |= UINT64_C(1) << i;
    }
    return PQexecPrepared(c->c, name, nparams, v, NULL, NULL, 0);
}

/* pg_exec runs statement i and checks it; *out (when given) gets the result to PQclear. */
static int pg_exec(struct pg_node *n, struct pg_conn *c, enum pg_stmt i, int nparams,
                   const char *const *v, PGresult **out)
{
    PGresult *r = pg_run(c, i, nparams, v);
    int rc = pg_check(n, c, r, pg_sql[i]);

    if (rc == OK)
        atomic_fetch_add(&n->queries, 1);
    if (rc == OK && out != NULL)
        *out = r;
    else
        PQclear(r);
    return rc;
}

static int pg_simple(struct pg_node *n, struct pg_conn *c, const char *sql)
{
    PGresult *r = PQexec(c->c, sql);
    int rc = pg_check(n, c, r, sql);

    PQclear(r);
    return rc;
}

static int64_t pg_i64(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* pg_text copies a text value into buf (capacity cap), truncating; NULL reads as "". */
static void pg_text(const PGresult *r, int row, int col, char *buf, size_t cap)
{
    const char *t = PQgetvalue(r, row, col);
    size_t len = PQgetisnull(r, row, col) ? 0 : (size_t)PQgetlength(r, row, col);

    if (len >= cap)
        len = cap - 1;
    if (len > 0)
        memcpy(buf, t, len);
    buf[len] = '\0';
}

static void pg_image(const PGresult *r, int row, struct image_rec *img)
{
    memset(img, 0, sizeof(*img));
    pg_text(r, row, 0, img->id, sizeof(img->id));
    img->seq = pg_i64(r, row, 1);
    pg_text(r, row, 2, img->key, sizeof(img->key));
    pg_text(r, row, 3, img->format, sizeof(img->format));
    img->width = (uint32_t)pg_i64(r, row, 4);
    img->height = (uint32_t)pg_i64(r, row, 5);
    img->frames = (uint32_t)pg_i64(r, row, 6);
    img->bytes = (uint64_t)pg_i64(r, row, 7);
    img->created_at = pg_i64(r, row, 8);
    pg_text(r, row, 9, img->owner, sizeof(img->owner));
    pg_text(r, row, 10, img->token_hash, sizeof(img->token_hash));
}

/* ---- routing ---- */

/*
 * pg_on runs fn (autocommit statements) on a session of n. A pooled session
 * that turns out broken is replaced once (the server may have restarted);
 * a second failure marks n down. Answers OK, E_NOTFOUND and other definite
 * statuses as fn gave them, E_UNAVAILABLE when n cannot answer now.
 */
static int pg_on(struct pg *p, struct pg_node *n, pg_fn *fn, void *arg)
{
    int rc = E_UNAVAILABLE;

    for (int attempt = 0; attempt < 2; attempt++) {
        struct pg_conn *c = pg_get(p, n);
        if (c == NULL)
            return E_UNAVAILABLE;
        rc = fn(n, c, arg);
        pg_put(p, n, c, rc == PG_LOST);
        if (rc != PG_LOST)
            break;
        pg_flush(n);
        if (attempt == 1)
            pg_mark_down(n);
    }
    if (rc == PG_LOST || rc == PG_RETRY)
        rc = E_UNAVAILABLE;
    return rc;
}

/*
 * pg_on_leader runs a read on the primary: a read node that leads now, else
 * the write pool (unless it is backing off: a read never waits on a primary
 * known to be down). Definite answers (OK, E_NOTFOUND, E_TOOBIG) end the search.
 */
static int pg_on_leader(struct pg *p, pg_fn *fn, void *arg)
{
    int rc;

    for (size_t i = 0; i < p->nreplicas; i++) {
        struct pg_node *n = &p->replica[i];
        if (atomic_load(&n->standby) || !pg_usable(p, n))
            continue;
        rc = pg_on(p, n, fn, arg);
        if (rc == OK || rc == E_NOTFOUND || rc == E_TOOBIG)
            return rc;
    }
    if (mono_ms() < atomic_load(&p->primary.down_until))
        return E_UNAVAILABLE;
    return pg_on(p, &p->primary, fn, arg);
}

/*
 * pg_read runs a read on a usable standby (round-robin; one that fails is
 * skipped for the next), else on the primary. *on_primary tells which
 * answered. Definite answers (OK, E_NOTFOUND, E_TOOBIG) end the search.
 */
static int pg_read(struct pg *p, pg_fn *fn, void *arg, bool *on_primary)
{
    unsigned start = atomic_fetch_add(&p->rr, 1);
    int rc;

    for (size_t k = 0; k < p->nreplicas; k++) {
        struct pg_node *n = &p->replica[(start + k) % p->nreplicas];
        if (!atomic_load(&n->standby) || !pg_usable(p, n))
            continue;
        rc = pg_on(p, n, fn, arg);
        if (rc == OK || rc == E_NOTFOUND || rc == E_TOOBIG) {
            *on_primary = false;
            return rc;
        }
    }
    *on_primary = true;
    return pg_on_leader(p, fn, arg);
}

/*
 * pg_cancel_backend cancels what session c runs, from a new session to the
 * same server (PQcancel has no connect timeout: a dead host would hang it).
 */
static void pg_cancel_session(const struct pg *p, struct pg_node *n, struct pg_conn *c)
{
    char ct[24], pid[24];
    const char *keys[] = {"dbname", "host", "port", "connect_timeout", "application_name", NULL};
    const char *vals[] = {n->conninfo, PQhost(c->c), PQport(c->c), ct, "tessera-cancel", NULL};
    const char *v[] = {pid};
    PGconn *k;

    snprintf(ct, sizeof(ct), "%lld", (long long)((p->connect_timeout_ms + 999) / 1000));
    snprintf(pid, sizeof(pid), "%d", PQbackendPID(c->c));
    k = PQconnectdbParams(keys, vals, 1);
    if (k != NULL && PQstatus(k) == CONNECTION_OK)
        PQclear(
            PQexecParams(k, "SELECT pg_cancel_backend($1::integer)", 1, NULL, v, NULL, NULL, 0));
    PQfinish(k);
}

/*
 * pg_commit commits c's transaction within statement_timeout, which the
 * server does not apply to a commit waiting for a synchronous standby: past
 * the deadline the wait is cancelled. The server then has committed locally
 * and says so in a WARNING; no standby confirmed it, so a failover may lose
 * it: E_UNAVAILABLE, never reported as done (the client retries). PG_LOST
 * when the server does not answer even the cancel.
 */
static int pg_commit(const struct pg *p, struct pg_node *n, struct pg_conn *c)
{
    int64_t deadline = mono_ms() + p->statement_timeout_ms;
    bool cancelled = false;
    PGresult *r;
    int rc = OK;

    c->warned = false;
    if (!PQsendQuery(c->c, "COMMIT"))
        return PG_LOST;
    while (PQconsumeInput(c->c) && PQisBusy(c->c)) {
        int64_t left = deadline - mono_ms();
        if (left <= 0 && cancelled)
            break;
        if (left <= 0) {
            log_error("meta",
                      "postgres %s: commit waits for a synchronous standby for over %lld"
                      " ms: cancelling the wait",
                      n->name, (long long)p->statement_timeout_ms);
            pg_cancel_session(p, n, c);
            cancelled = true;
            deadline = mono_ms() + p->statement_timeout_ms;
            continue;
        }
        struct pollfd pfd = {.fd = PQsocket(c->c), .events = POLLIN};
        if (poll(&pfd, 1, (int)(left < 1000 ? left : 1000)) < 0 && errno != EINTR)
            break;
    }
    if (PQisBusy(c->c))
        return PG_LOST; /* the caller drops the session */
    while ((r = PQgetResult(c->c)) != NULL) {
        int one = pg_check(n, c, r, "COMMIT");
        if (rc == OK)
            rc = one;
        PQclear(r);
    }
    if (rc == OK && (c->warned || cancelled)) {
        log_error("meta",
                  "postgres %s: commit not confirmed by a synchronous standby: answered"
                  " as failed",
                  n->name);
        rc = E_UNAVAILABLE;
    }
    return rc;
}

/*
 * pg_write runs fn in one transaction on the primary. A stale pooled session
 * (the failure is at BEGIN: nothing was sent) is replaced, and serialization
 * failures and deadlocks run the transaction again; a session lost later is
 * E_UNAVAILABLE (the outcome is unknown: never replayed blindly). While the
 * primary is marked down writes fail at once (the monitor clears the mark).
 */
static int pg_write(struct pg *p, pg_fn *fn, void *arg)
{
    struct pg_node *n = &p->primary;
    int rc = E_UNAVAILABLE;

    if (mono_ms() < atomic_load(&n->down_until))
        return E_UNAVAILABLE;
    for (int attempt = 0; attempt < PG_WRITE_TRIES; attempt++) {
        struct pg_conn *c = pg_get(p, n);
        if (c == NULL)
            return E_UNAVAILABLE;
        rc = pg_simple(n, c, "BEGIN");
        if (rc == PG_LOST) {
            pg_put(p, n, c, true);
            pg_flush(n);
            continue;
        }
        if (rc == OK)
            rc = fn(n, c, arg);
        if (rc == OK)
            rc = pg_commit(p, n, c);
        else if (rc != PG_LOST)
            pg_simple(n, c, "ROLLBACK");
        pg_put(p, n, c, rc == PG_LOST);
        if (rc != PG_RETRY)
            break;
        usleep((useconds_t)(1000 << attempt));
    }
    if (rc == PG_LOST) {
        pg_mark_down(n);
        rc = E_UNAVAILABLE;
    }
    if (rc == PG_RETRY)
        rc = E_UNAVAILABLE;
    return rc;
}

/* ---- negative cache: ids the primary did not have, for PG_NEG_TTL_MS ---- */

static size_t pg_neg_slot(const char *id)
{
    return (size_t)(fnv1a64_str(id) % PG_NEG_SLOTS);
}

static bool pg_neg_has(struct pg *p, const char *id)
{
    struct pg_neg *e = &p->neg[pg_neg_slot(id)];
    bool hit;

    pthread_mutex_lock(&p->neglock);
    hit = strcmp(e->id, id) == 0 && e->until > mono_ms();
    pthread_mutex_unlock(&p->neglock);
    return hit;
}

static void pg_neg_set(struct pg *p, const char *id, bool missing)
{
    struct pg_neg *e = &p->neg[pg_neg_slot(id)];

    pthread_mutex_lock(&p->neglock);
    if (missing) {
        snprintf(e->id, sizeof(e->id), "%s", id);
        e->until = mono_ms() + PG_NEG_TTL_MS;
    } else if (strcmp(e->id, id) == 0) {
        e->id[0] = '\0';
    }
    pthread_mutex_unlock(&p->neglock);
}

/* ---- writes ---- */

static int pg_job_insert(struct pg_node *n, struct pg_conn *c, const char *kind,
                         const char *payload, int64_t delay_ms)
{
    char due[24], now[24];
    int64_t t = meta_now_ms();
    const char *v[] = {kind, payload, due, now};

    snprintf(due, sizeof(due), "%lld", (long long)(t + delay_ms));
    snprintf(now, sizeof(now), "%lld", (long long)t);
    return pg_exec(n, c, PS_JOB_INSERT, 4, v, NULL);
}

static int pg_blob_ref(struct pg_node *n, struct pg_conn *c, const char *key, uint64_t bytes)
{
    char b[24], now[24];
    const char *v[] = {key, b, now};

    snprintf(b, sizeof(b), "%llu", (unsigned long long)bytes);
    snprintf(now, sizeof(now), "%lld", (long long)time(NULL));
    return pg_exec(n, c, PS_BLOB_REF, 3, v, NULL);
}

/* ---- the statements of the write protocols (meta_refs.c), in pg_write's transaction ---- */

struct pg_txc {
    struct pg_node *n;
    struct pg_conn *c;
};

struct pg_txw {
    struct pg *p;
    meta_tx_body_fn *body;
    void *arg;
};

static const struct meta_tx_ops pg_tx_ops;

static int pg_tx_fn(struct pg_node *n, struct pg_conn *c, void *arg)
{
    struct pg_txw *w = arg;
    struct pg_txc tc = {n, c};
    struct meta_tx tx = {&pg_tx_ops, w->p, &tc};

    return w->body(&tx, w->arg);
}

/* pg_tx_write: pg_write may run body again after a serialization failure or deadlock. */
static int pg_tx_write(void *be, meta_tx_body_fn *body, void *arg)
{
    struct pg_txw w = {be, body, arg};

    return pg_write(be, pg_tx_fn, &w);
}

static void pg_tx_image_inserted(void *be, const char *id)
{
    pg_neg_set(be, id, false);
}

/* pg_tx_exec runs statement i of tx; *r (when given) gets the result, cleared by the caller. */
static int pg_tx_exec(struct meta_tx *tx, enum pg_stmt i, int nparams, const char *const *v,
                      PGresult **r)
{
    struct pg_txc *tc = tx->conn;

    return pg_exec(tc->n, tc->c, i, nparams, v, r);
}

/* pg_tx_counts runs i for one optional row of two integers; E_NOTFOUND for none. */
static int pg_tx_counts(struct meta_tx *tx, enum pg_stmt i, const char *key, int64_t *a, int64_t *b)
{
    const char *v[] = {key};
    PGresult *r = NULL;
    int rc = pg_tx_exec(tx, i, 1, v, &r);

    if (rc == OK && PQntuples(r) == 0)
        rc = E_NOTFOUND;
    if (rc == OK) {
        *a = pg_i64(r, 0, 0);
        *b = pg_i64(r, 0, 1);
    }
    PQclear(r);
    return rc;
}

/* pg_tx_keys runs i, adding column 0 of every row to out (and column 1 to *sum when given). */
static int pg_tx_keys(struct meta_tx *tx, enum pg_stmt i, const char *arg, struct meta_keys *out,
                      uint64_t *sum)
{
    const char *v[] = {arg};
    PGresult *r = NULL;
    int rc = pg_tx_exec(tx, i, 1, v, &r);

    for (int row = 0; rc == OK && row < PQntuples(r); row++) {
        meta_keys_add(out, PQgetvalue(r, row, 0));
        if (sum != NULL)
            *sum += (uint64_t)pg_i64(r, row, 1);
    }
    PQclear(r);
    return rc;
}

static int pg_tx_image_insert(struct meta_tx *tx, struct image_rec *img)
{
    char w[16], h[16], f[16], b[24], t[24];
    const char *v[] = {
        img->id,        img->key, img->format, w, h, f, b, t, img->owner[0] ? img->owner : NULL,
        img->token_hash};
    PGresult *r = NULL;
    int rc;

    snprintf(w, sizeof(w), "%u", img->width);
    snprintf(h, sizeof(h), "%u", img->height);
    snprintf(f, sizeof(f), "%u", img->frames);
    snprintf(b, sizeof(b), "%llu", (unsigned long long)img->bytes);
    snprintf(t, sizeof(t), "%lld", (long long)img->created_at);
    rc = pg_tx_exec(tx, PS_IMAGE_INSERT, 10, v, &r);
    if (rc == OK)
        img->seq = pg_i64(r, 0, 0);
    PQclear(r);
    return rc;
}

static int pg_tx_image_mark_deleted(struct meta_tx *tx, const char *id, char key[SHA256_HEX],
                                    char format[META_FORMAT_MAX])
{
    char now[24];
    const char *v[] = {id, now};
    PGresult *r = NULL;
    int rc;

    snprintf(now, sizeof(now), "%lld", (long long)time(NULL));
    rc = pg_tx_exec(tx, PS_IMAGE_MARK_DELETED, 2, v, &r);
    if (rc == OK && PQntuples(r) == 0)
        rc = E_NOTFOUND;
    if (rc == OK) {
        pg_text(r, 0, 0, key, SHA256_HEX);
        pg_text(r, 0, 1, format, META_FORMAT_MAX);
    }
    PQclear(r);
    return rc;
}

/* FOR SHARE: a delete of the image waits for this transaction, or this one sees it. */
static int pg_tx_image_live(struct meta_tx *tx, const char *id)
{
    const char *v[] = {id};
    PGresult *r = NULL;
    int rc = pg_tx_exec(tx, PS_IMAGE_LIVE, 1, v, &r);

    if (rc == OK && PQntuples(r) == 0)
        rc = E_NOTFOUND;
    PQclear(r);
    return rc;
}

static int pg_tx_variant_insert(struct meta_tx *tx, const struct variant_rec *vr, bool *inserted)
{
    char w[16], h[16], b[24], t[24];
    const char *v[] = {vr->image_id, vr->name, vr->key, vr->format, w, h, b, t};
    PGresult *r = NULL;
    int rc;

    snprintf(w, sizeof(w), "%u", vr->width);
    snprintf(h, sizeof(h), "%u", vr->height);
    snprintf(b, sizeof(b), "%llu", (unsigned long long)vr->bytes);
    snprintf(t, sizeof(t), "%lld", (long long)time(NULL));
    rc = pg_tx_exec(tx, PS_VARIANT_INSERT, 8, v, &r);
    *inserted = rc == OK && strcmp(PQcmdTuples(r), "0") != 0;
    PQclear(r);
    return rc;
}

static int pg_tx_variant_count(struct meta_tx *tx, const char *image_id, int64_t *n)
{
    const char *v[] = {image_id};
    PGresult *r = NULL;
    int rc = pg_tx_exec(tx, PS_VARIANT_COUNT, 1, v, &r);

    if (rc == OK)
        *n = pg_i64(r, 0, 0);
    PQclear(r);
    return rc;
}

static int pg_tx_variants_drop(struct meta_tx *tx, const char *image_id, struct meta_keys *out)
{
    return pg_tx_keys(tx, PS_VARIANTS_DROP, image_id, out, NULL);
}

static int pg_tx_variants_drop_dead(struct meta_tx *tx, size_t limit, struct meta_keys *out,
                                    uint64_t *bytes)
{
    char l[24];

    *bytes = 0;
    snprintf(l, sizeof(l), "%zu", limit);
    return pg_tx_keys(tx, PS_VARIANTS_DROP_DEAD, l, out, bytes);
}

static int pg_tx_blob_ref(struct meta_tx *tx, const char *key, uint64_t bytes)
{
    struct pg_txc *tc = tx->conn;

    return pg_blob_ref(tc->n, tc->c, key, bytes);
}

static int pg_tx_blob_unref(struct meta_tx *tx, const char *key, int64_t *refs, int64_t *pins)
{
    return pg_tx_counts(tx, PS_BLOB_UNREF, key, refs, pins);
}

static int pg_tx_blob_pin(struct meta_tx *tx, const char *key, uint64_t bytes)
{
    char b[24], t[24];
    const char *v[] = {key, b, t};

    snprintf(b, sizeof(b), "%llu", (unsigned long long)bytes);
    snprintf(t, sizeof(t), "%lld", (long long)time(NULL));
    return pg_tx_exec(tx, PS_BLOB_PIN, 3, v, NULL);
}

static int pg_tx_blob_unpin(struct meta_tx *tx, const char *key, int64_t *refs, int64_t *pins)
{
    return pg_tx_counts(tx, PS_BLOB_UNPIN, key, refs, pins);
}

static int pg_tx_blob_unpin_stale(struct meta_tx *tx, int64_t before,
                                  struct meta_keys *unreferenced, int64_t *reset)
{
    char a[24];
    const char *v[] = {a};
    PGresult *r = NULL;
    int rc;

    *reset = 0;
    snprintf(a, sizeof(a), "%lld", (long long)before);
    rc = pg_tx_exec(tx, PS_BLOB_UNPIN_STALE, 1, v, &r);
    for (int i = 0; rc == OK && i < PQntuples(r); i++) {
        (*reset)++;
        if (pg_i64(r, i, 1) == 0)
            meta_keys_add(unreferenced, PQgetvalue(r, i, 0));
    }
    PQclear(r);
    return rc;
}

/* FOR UPDATE: the row is held while the caller removes the bytes; a pin waits for it. */
static int pg_tx_blob_lock(struct meta_tx *tx, const char *key, int64_t *refs, int64_t *pins)
{
    return pg_tx_counts(tx, PS_BLOB_LOCK, key, refs, pins);
}

/* The claim is a row of key, uncommitted until the caller is done: a pin of key waits for it. */
static int pg_tx_blob_claim(struct meta_tx *tx, const char *key)
{
    char t[24];
    const char *v[] = {key, t};
    PGresult *r = NULL;
    int rc;

    snprintf(t, sizeof(t), "%lld", (long long)time(NULL));
    rc = pg_tx_exec(tx, PS_BLOB_CLAIM, 2, v, &r);
    if (rc == OK && PQntuples(r) == 0)
        rc = E_EXISTS; /* a row exists: pinned or referenced, not an orphan */
    PQclear(r);
    return rc;
}

static int pg_tx_blob_drop(struct meta_tx *tx, const char *key)
{
    const char *v[] = {key};

    return pg_tx_exec(tx, PS_BLOB_DROP, 1, v, NULL);
}

static int pg_tx_job_insert(struct meta_tx *tx, const char *kind, const char *payload,
                            int64_t delay_ms)
{
    struct pg_txc *tc = tx->conn;

    return pg_job_insert(tc->n, tc->c, kind, payload, delay_ms);
}

static int pg_tx_variant_touch(struct meta_tx *tx, const struct meta_variant_ref *ref, int64_t now)
{
    char t[24];
    const char *v[] = {ref->image_id, ref->name, t};

    snprintf(t, sizeof(t), "%lld", (long long)now);
    return pg_tx_exec(tx, PS_VARIANT_TOUCH, 3, v, NULL);
}

static int pg_tx_variant_delete(struct meta_tx *tx, const struct meta_variant_ref *ref,
                                char key[SHA256_HEX])
{
    const char *v[] = {ref->image_id, ref->name};
    PGresult *r = NULL;
    int rc = pg_tx_exec(tx, PS_VARIANT_DELETE, 2, v, &r);

    if (rc == OK && PQntuples(r) == 0)
        rc = E_NOTFOUND;
    if (rc == OK)
        pg_text(r, 0, 0, key, SHA256_HEX);
    PQclear(r);
    return rc;
}

/* A transaction-scoped advisory lock: released by the commit, or by a crash of the session. */
static int pg_tx_evict_lock(struct meta_tx *tx, bool *got)
{
    PGresult *r = NULL;
    int rc = pg_tx_exec(tx, PS_EVICT_LOCK, 0, NULL, &r);

    *got = rc == OK && PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    return rc;
}

static int pg_tx_renditions_bytes(struct meta_tx *tx, uint64_t *total)
{
    PGresult *r = NULL;
    int rc = pg_tx_exec(tx, PS_RENDITIONS_BYTES, 0, NULL, &r);

    if (rc == OK)
        *total = (uint64_t)pg_i64(r, 0, 0);
    PQclear(r);
    return rc;
}

/* pg_tx_refs runs i (limit cap, then image_id when given) for (image_id, name, bytes) rows. */
static int pg_tx_refs(struct meta_tx *tx, enum pg_stmt i, const char *image_id, size_t cap,
                      struct meta_variant_ref *out, uint64_t *bytes, size_t *n)
{
    char lim[24];
    const char *v[] = {lim, image_id};
    PGresult *r = NULL;
    int rc;

    *n = 0;
    snprintf(lim, sizeof(lim), "%zu", cap);
    rc = pg_tx_exec(tx, i, image_id != NULL ? 2 : 1, v, &r);
    for (int row = 0; rc == OK && row < PQntuples(r) && *n < cap; row++) {
        pg_text(r, row, 0, out[*n].image_id, sizeof(out[*n].image_id));
        pg_text(r, row, 1, out[*n].name, sizeof(out[*n].name));
        if (bytes != NULL)
            bytes[*n] = (uint64_t)pg_i64(r, row, 2);
        (*n)++;
    }
    PQclear(r);
    return rc;
}

static int pg_tx_renditions_oldest(struct meta_tx *tx, size_t cap, struct meta_variant_ref *out,
                                   uint64_t *bytes, size_t *n)
{
    return pg_tx_refs(tx, PS_RENDITIONS_OLDEST, NULL, cap, out, bytes, n);
}

static int pg_tx_renditions_of(struct meta_tx *tx, const char *image_id, size_t cap,
                               struct meta_variant_ref *out, size_t *n)
{
    return pg_tx_refs(tx, PS_RENDITIONS_OF, image_id, cap, out, NULL, n);
}

static int pg_tx_lease_take(struct meta_tx *tx, const struct meta_variant_ref *ref, int64_t holder,
                            int64_t until_ms, int64_t now_ms, bool *got)
{
    char h[24], u[24], now[24];
    const char *v[] = {ref->image_id, ref->name, h, u, now};
    PGresult *r = NULL;
    int rc;

    snprintf(h, sizeof(h), "%lld", (long long)holder);
    snprintf(u, sizeof(u), "%lld", (long long)until_ms);
    snprintf(now, sizeof(now), "%lld", (long long)now_ms);
    rc = pg_tx_exec(tx, PS_LEASE_TAKE, 5, v, &r);
    *got = rc == OK && PQntuples(r) == 1;
    PQclear(r);
    return rc;
}

static int pg_tx_lease_drop(struct meta_tx *tx, const struct meta_variant_ref *ref, int64_t holder)
{
    char h[24];
    const char *v[] = {ref->image_id, ref->name, h};

    snprintf(h, sizeof(h), "%lld", (long long)holder);
    return pg_tx_exec(tx, PS_LEASE_DROP, 3, v, NULL);
}

static int pg_tx_leases_drop_stale(struct meta_tx *tx, int64_t before_ms)
{
    char b[24];
    const char *v[] = {b};

    snprintf(b, sizeof(b), "%lld", (long long)before_ms);
    return pg_tx_exec(tx, PS_LEASES_DROP_STALE, 1, v, NULL);
}

static const struct meta_tx_ops pg_tx_ops = {
    .write = pg_tx_write,
    .image_inserted = pg_tx_image_inserted,
    .image_insert = pg_tx_image_insert,
    .image_mark_deleted = pg_tx_image_mark_deleted,
    .image_live = pg_tx_image_live,
    .variant_insert = pg_tx_variant_insert,
    .variant_count = pg_tx_variant_count,
    .variants_drop = pg_tx_variants_drop,
    .variants_drop_dead = pg_tx_variants_drop_dead,
    .blob_ref = pg_tx_blob_ref,
    .blob_unref = pg_tx_blob_unref,
    .blob_pin = pg_tx_blob_pin,
    .blob_unpin = pg_tx_blob_unpin,
    .blob_unpin_stale = pg_tx_blob_unpin_stale,
    .blob_lock = pg_tx_blob_lock,
    .blob_claim = pg_tx_blob_claim,
    .blob_drop = pg_tx_blob_drop,
    .job_insert = pg_tx_job_insert,
    .variant_touch = pg_tx_variant_touch,
    .variant_delete = pg_tx_variant_delete,
    .evict_lock = pg_tx_evict_lock,
    .renditions_bytes = pg_tx_renditions_bytes,
    .renditions_oldest = pg_tx_renditions_oldest,
    .renditions_of = pg_tx_renditions_of,
    .lease_take = pg_tx_lease_take,
    .lease_drop = pg_tx_lease_drop,
    .leases_drop_stale = pg_tx_leases_drop_stale,
};

struct pg_kv {
    const char *name;
    const char *value;
    char *out;
    size_t cap;
};

static int pg_setting_set_fn(struct pg_node *n, struct pg_conn *c, void *arg)
{
    struct pg_kv *kv = arg;
    char t[24];
    const char *v[] = {kv->name, kv->value, t};

    snprintf(t, sizeof(t), "%lld", (long long)time(NULL));
    return pg_exec(n, c, PS_SETTING_SET, 3, v, NULL);
}

static int pg_setting_set(void *be, const char *name, const char *value)
{
    struct pg_kv kv = {name, value, NULL, 0};

    return pg_write(be, pg_setting_set_fn, &kv);
}

/* ---- garbage collection ---- */

struct pg_gc {
    const char *key;
    const char *after;
    int64_t a;
    int64_t b;
    int64_t c;
    size_t cap;
    size_t n;
    int64_t count;
    uint64_t bytes;
    struct meta_blob *blobs;
    struct meta_gc_counts *counts;
    meta_release_fn *fn;
    void *arg;
};

static void pg_blob_row(const PGresult *r, int row, struct meta_blob *b)
{
    memset(b, 0, sizeof(*b));
    pg_text(r, row, 0, b->key, sizeof(b->key));
    b->refs = pg_i64(r, row, 1);
    b->pins = pg_i64(r, row, 2);
    b->bytes = (uint64_t)pg_i64(r, row, 3);
    b->created_at = pg_i64(r, row, 4);
    b->pinned_at = pg_i64(r, row, 5);
}

static int pg_blob_get_fn(struct pg_node *n, struct pg_conn *c, void *arg)
{
    struct pg_gc *g = arg;
    const char *v[] = {g->key};
    PGresult *r = NULL;
    int rc = pg_exec(n, c, PS_BLOB_GET, 1, v, &r);

    if (rc == OK && PQntuples(r) == 0)
        rc = E_NOTFOUND;
    else if (rc == OK)
        pg_blob_row(r, 0, g->blobs);
    PQclear(r);
    return rc;
}

static int pg_blob_get(void *be, const char *key, struct meta_blob *out)
{
    struct pg *p = be;
    struct pg_gc g = {.key = key, .blobs = out};

    return pg_on(p, &p->primary, pg_blob_get_fn, &g);
}

static int pg_gc_count_fn(struct pg_node *n, struct pg_conn *c, void *arg)
{
    struct pg_gc *g = arg;
    char a[24], b[24], t[24];
    const char *v[] = {a, b, t};
    PGresult *r = NULL;
    int rc;

    snprintf(a, sizeof(a), "%lld", (long long)g->a);
    snprintf(b, sizeof(b), "%lld", (long long)g->b);
    snprintf(t, sizeof(t), "%lld", (long long)g->c);
    rc = pg_exec(n, c, PS_GC_COUNT, 3, v, &r);
    if (rc == OK) {
        g->counts->stale_pins = pg_i64(r, 0, 0);
        g->counts->stale_pin_bytes = (uint64_t)pg_i64(r, 0, 1);
        g->counts->unused = pg_i64(r, 0, 2);
        g->counts->unused_bytes = (uint64_t)pg_i64(r, 0, 3);
        g->counts->dead_variants = pg_i64(r, 0, 4);
        g->counts->dead_variant_bytes = (uint64_t)pg_i64(r, 0, 5);
        g->counts->dead_jobs = pg_i64(r, 0, 6);
    }
    PQclear(r);
    return rc;
}

static int pg_gc_count(void *be, const struct meta_gc_cutoffs *c, struct meta_gc_counts *out)
{
    struct pg *p = be;
    struct pg_gc g = {
        .a = c->created_before, .b = c->pinned_before, .c = c->job_before_ms, .counts = out};

    return pg_on(p, &p->primary, pg_gc_count_fn, &g);
}

static int pg_list_unused_fn(struct pg_node *n, struct pg_conn *c, void *arg)
{
    struct pg_gc *g = arg;
    char a[24], l[24];
    const char *v[] = {g->after, a, l};
    PGresult *r = NULL;
    int rc;

    snprintf(a, sizeof(a), "%lld", (long long)g->a);
    snprintf(l, sizeof(l), "%zu", g->cap);
    rc = pg_exec(n, c, PS_BLOB_LIST_UNUSED, 3, v, &r);
    g->n = 0;
    for (int i = 0; rc == OK && i < PQntuples(r) && g->n < g->cap; i++)
        pg_blob_row(r, i, &g->blobs[g->n++]);
    PQclear(r);
    return rc;
}

static int pg_blob_list_unused(void *be, const char *after, int64_t created_before,
                               struct meta_blob *out, size_t cap, size_t *n)
{
    struct pg *p = be;
    struct pg_gc g = {.after = after, .a = created_before, .cap = cap, .blobs = out};
    int rc = pg_on(p, &p->primary, pg_list_unused_fn, &g);

    *n = rc == OK ? g.n : 0;
    return rc;
}

static int pg_job_purge_dead_fn(struct pg_node *n, struct pg_conn *c, void *arg)
{
    struct pg_gc *g = arg;
    char a[24];
    const char *v[] = {a};
    PGresult *r = NULL;
    int rc;

    snprintf(a, sizeof(a), "%lld", (long long)g->a);
    rc = pg_exec(n, c, PS_JOB_PURGE_DEAD, 1, v, &r);
    if (rc == OK)
        g->count = strtoll(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return rc;
}

static int pg_job_purge_dead(void *be, int64_t before_ms, int64_t *n)
{
    struct pg_gc g = {.a = before_ms};
    int rc = pg_write(be, pg_job_purge_dead_fn, &g);

    *n = rc == OK ? g.count : 0;
    return rc;
}

struct pg_jobq {
    const char *kind;
    const char *payload;
    int64_t delay_ms;
    int64_t lease_ms;
    struct meta_job *job;
    const struct meta_job *cjob;
    const char *error;
    int max_attempts;
    struct meta_job_stats *st;
};

static int pg_enqueue_fn(struct pg_node *n, struct pg_conn *c, void *arg)
{
    struct pg_jobq *q = arg;

    return pg_job_insert(n, c, q->kind, q->payload, q->delay_ms);
}

static int pg_job_enqueue(void *be, const char *kind, const char *payload, int64_t delay_ms)
{
    struct pg_jobq q = {.kind = kind, .payload = payload, .delay_ms = delay_ms};

    return pg_write(be, pg_enqueue_fn, &q);
}

static int pg_claim_fn(struct pg_node *n, struct pg_conn *c, void *arg)
{
    struct pg_jobq *q = arg;
    char now[24], lease_ms[24], token[24];
    const char *v[] = {now, lease_ms, token};
    int64_t lease = meta_lease_new();
    PGresult *r = NULL;
    int rc;

    snprintf(now, sizeof(now), "%lld", (long long)meta_now_ms());
    snprintf(lease_ms, sizeof(lease_ms), "%lld", (long long)q->lease_ms);
    snprintf(token, sizeof(token), "%lld", (long long)lease);
    rc = pg_exec(n, c, PS_JOB_CLAIM, 3, v, &r);
    if (rc != OK)
        goto out;
    if (PQntuples(r) == 0) {
        rc = E_NOTFOUND;
        goto out;
    }
    q->job->id = pg_i64(r, 0, 0);
    pg_text(r, 0, 1, q->job->kind, sizeof(q->job->kind));
    pg_text(r, 0, 2, q->job->payload, sizeof(q->job->payload));
    q->job->attempts = (int)pg_i64(r, 0, 3);
    q->job->lease = lease;
out:
    PQclear(r);
    return rc;
}

static int pg_job_claim(void *be, int64_t lease_ms, struct meta_job *out)
{
    struct pg_jobq q = {.lease_ms = lease_ms, .job = out};

    return pg_write(be, pg_claim_fn, &q);
}

static int pg_done_fn(struct pg_node *n, struct pg_conn *c, void *arg)
{
    struct pg_jobq *q = arg;
    char id[24], lease[24];
    const char *v[] = {id, lease};
    PGresult *r = NULL;
    int rc;

    snprintf(id, sizeof(id), "%lld", (long long)q->cjob->id);
    snprintf(lease, sizeof(lease), "%lld", (long long)q->cjob->lease);
    rc = pg_exec(n, c, PS_JOB_DONE, 2, v, &r);
    if (rc == OK && strcmp(PQcmdTuples(r), "0") == 0)
        rc = E_NOTFOUND;
    PQclear(r);
    return rc;
}

static int pg_job_done(void *be, const struct meta_job *job)
{
    struct pg_jobq q = {.cjob = job};

    return pg_write(be, pg_done_fn, &q);
}

static int pg_fail_fn(struct pg_node *n, struct pg_conn *c, void *arg)
{
    struct pg_jobq *q = arg;
    char id[24], lease[24], max[16], due[24];
    const char *v[] = {id, lease, max, due, q->error};
    PGresult *r = NULL;
    int rc;

    snprintf(id, sizeof(id), "%lld", (long long)q->cjob->id);
    snprintf(lease, sizeof(lease), "%lld", (long long)q->cjob->lease);
    snprintf(max, sizeof(max), "%d", q->max_attempts);
    snprintf(due, sizeof(due), "%lld", (long long)(meta_now_ms() + q->delay_ms));
    rc = pg_exec(n, c, PS_JOB_FAIL, 5, v, &r);
    if (rc == OK && strcmp(PQcmdTuples(r), "0") == 0)
        rc = E_NOTFOUND;
    PQclear(r);
    return rc;
}

static int pg_job_fail(void *be, const struct meta_job *job, const char *error, int max_attempts,
                       int64_t retry_ms)
{
    struct pg_jobq q = {
        .cjob = job, .error = error, .max_attempts = max_attempts, .delay_ms = retry_ms};

    return pg_write(be, pg_fail_fn, &q);
}

static int pg_extend_fn(struct pg_node *n, struct pg_conn *c, void *arg)
{
    struct pg_jobq *q = arg;
    char id[24], lease[24], until[24];
    const char *v[] = {id, lease, until};
    PGresult *r = NULL;
    int rc;

    snprintf(id, sizeof(id), "%lld", (long long)q->cjob->id);
    snprintf(lease, sizeof(lease), "%lld", (long long)q->cjob->lease);
    snprintf(until, sizeof(until), "%lld", (long long)(meta_now_ms() + q->lease_ms));
    rc = pg_exec(n, c, PS_JOB_EXTEND, 3, v, &r);
    if (rc == OK && strcmp(PQcmdTuples(r), "0") == 0)
        rc = E_NOTFOUND;
    PQclear(r);
    return rc;
}

static int pg_job_extend(void *be, const struct meta_job *job, int64_t lease_ms)
{
    struct pg_jobq q = {.cjob = job, .lease_ms = lease_ms};

    return pg_write(be, pg_extend_fn, &q);
}

/* ---- reads ---- */

struct pg_get {
    const char *a;
    const char *b;
    void *out;
    int64_t before;
    size_t limit;
    size_t n;
    size_t cap;
};

static int pg_stats_fn(struct pg_node *n, struct pg_conn *c, void *arg)
{
    struct meta_job_stats *st = ((struct pg_get *)arg)->out;
    int64_t now = meta_now_ms();
    char nows[24];
    const char *v[] = {nows};
    PGresult *r = NULL;
    int rc;

    snprintf(nows, sizeof(nows), "%lld", (long long)now);
    rc = pg_exec(n, c, PS_JOB_STATS, 1, v, &r);
    for (int row = 0; rc == OK && row < PQntuples(r); row++) {
        int64_t k[6];
        char kind[META_JOB_KIND_MAX];
        for (int i = 0; i < 6; i++)
            k[i] = pg_i64(r, row, i + 1);
        pg_text(r, row, 0, kind, sizeof(kind));
        meta_job_stats_add(st, kind, k, now);
    }
    PQclear(r);
    return rc;
}

static int pg_job_stats(void *be, struct meta_job_stats *st)
{
    struct pg *p = be;
    struct pg_get g = {.out = st};

    return pg_on(p, &p->primary, pg_stats_fn, &g);
}

static int pg_ping_fn(struct pg_node *n, struct pg_conn *c, void *arg)
{
    (void)arg;
    return pg_exec(n, c, PS_PING, 0, NULL, NULL);
}

/* Ready when some server answers: reads work from replicas while the primary is down. */
static int pg_ping(void *be)
{
    bool on_primary;

    return pg_read(be, pg_ping_fn, NULL, &on_primary) == OK ? OK : E_UNAVAILABLE;
}

static int pg_image_get_fn(struct pg_node *n, struct pg_conn *c, void *arg)
{
    struct pg_get *g = arg;
    const char *v[] = {g->a};
    PGresult *r = NULL;
    int rc = pg_exec(n, c, PS_IMAGE_GET, 1, v, &r);

    if (rc == OK && PQntuples(r) == 0)
        rc = E_NOTFOUND;
    if (rc == OK)
        pg_image(r, 0, g->out);
    PQclear(r);
    return rc;
}

static int pg_image_known_fn(struct pg_node *n, struct pg_conn *c, void *arg)
{
    struct pg_get *g = arg;
    const char *v[] = {g->a};
    PGresult *r = NULL;
    int rc = pg_exec(n, c, PS_IMAGE_KNOWN, 1, v, &r);

    if (rc == OK && PQntuples(r) == 0)
        rc = E_NOTFOUND;
    PQclear(r);
    return rc;
}

/*
 * pg_read_standbys runs a read on every usable standby until one answers OK:
 * OK, E_NOTFOUND when every standby that answered had nothing, else
 * E_UNAVAILABLE. For the rare question no primary can answer now.
 */
static int pg_read_standbys(struct pg *p, pg_fn *fn, void *arg)
{
    int rc = E_UNAVAILABLE;

    for (size_t i = 0; i < p->nreplicas; i++) {
        struct pg_node *n = &p->replica[i];
        if (!atomic_load(&n->standby) || !pg_usable(p, n))
            continue;
        int r = pg_on(p, n, fn, arg);
        if (r == OK)
            return OK;
        if (r == E_NOTFOUND)
            rc = E_NOTFOUND;
    }
    return rc;
}

/*
 * pg_read_own reads on a standby and, on a miss there, on the primary: an
 * image uploaded a moment ago is found even before the standby replayed it.
 * When no primary answers, an image id (neg_id) is asked of every standby
 * (one may have replayed further); a miss on all of them stands only if one
 * has the row (deleted), otherwise the id may be one acknowledged just before
 * the primary went down: E_UNAVAILABLE, never a false 404. Other misses
 * (variants, settings) stand.
 */
static int pg_read_own(struct pg *p, pg_fn *fn, struct pg_get *g, const char *neg_id)
{
    bool on_primary = false;
    int rc = pg_read(p, fn, g, &on_primary);

    if (rc != E_NOTFOUND || on_primary)
        return rc;
    if (neg_id != NULL && pg_neg_has(p, neg_id))
        return E_NOTFOUND;
    int prc = pg_on_leader(p, fn, g);
    if (prc == OK || prc == E_NOTFOUND) {
        if (neg_id != NULL && prc == E_NOTFOUND)
            pg_neg_set(p, neg_id, true);
        return prc;
    }
    if (neg_id == NULL)
        return rc;
    if (pg_read_standbys(p, fn, g) == OK)
        return OK;
    struct pg_get k = {.a = neg_id};
    return pg_read_standbys(p, pg_image_known_fn, &k) == OK ? E_NOTFOUND : E_UNAVAILABLE;
}

static int pg_image_get(void *be, const char *id, struct image_rec *out)
{
    struct pg_get g = {.a = id, .out = out};

    return pg_read_own(be, pg_image_get_fn, &g, id);
}

static int pg_list_fn(struct pg_node *n, struct pg_conn *c, void *arg)
{
    struct pg_get *g = arg;
    char before[24], limit[24];
    const char *v[] = {before, limit};
    struct image_rec *out = g->out;
    PGresult *r = NULL;
    int rc;

    snprintf(before, sizeof(before), "%lld", (long long)g->before);
    snprintf(limit, sizeof(limit), "%zu", g->limit);
    rc = pg_exec(n, c, PS_IMAGE_LIST, 2, v, &r);
    g->n = 0;
    if (rc == OK) {
        for (int i = 0; i < PQntuples(r) && g->n < g->limit; i++)
            pg_image(r, i, &out[g->n++]);
    }
    PQclear(r);
    return rc;
}

static int pg_image_list(void *be, int64_t before, size_t limit, struct image_rec *out, size_t *n)
{
    struct pg_get g = {.out = out, .before = before, .limit = limit};
    bool on_primary;
    int rc = pg_read(be, pg_list_fn, &g, &on_primary);

    *n = rc == OK ? g.n : 0;
    return rc;
}

static int pg_variant_get_fn(struct pg_node *n, struct pg_conn *c, void *arg)
{
    struct pg_get *g = arg;
    const char *v[] = {g->a, g->b};
    struct variant_rec *out = g->out;
    PGresult *r = NULL;
    int rc = pg_exec(n, c, PS_VARIANT_GET, 2, v, &r);

    if (rc == OK && PQntuples(r) == 0)
        rc = E_NOTFOUND;
    if (rc == OK) {
        memset(out, 0, sizeof(*out));
        pg_text(r, 0, 0, out->image_id, sizeof(out->image_id));
        pg_text(r, 0, 1, out->name, sizeof(out->name));
        pg_text(r, 0, 2, out->key, sizeof(out->key));
        pg_text(r, 0, 3, out->format, sizeof(out->format));
        out->width = (uint32_t)pg_i64(r, 0, 4);
        out->height = (uint32_t)pg_i64(r, 0, 5);
        out->bytes = (uint64_t)pg_i64(r, 0, 6);
        out->used_at = pg_i64(r, 0, 7);
    }
    PQclear(r);
    return rc;
}

static int pg_variant_get(void *be, const char *image_id, const char *name, struct variant_rec *out)
{
    struct pg_get g = {.a = image_id, .b = name, .out = out};

    /* no negative cache: a variant appears when a worker made it */
    return pg_read_own(be, pg_variant_get_fn, &g, NULL);
}

static int pg_int_fn(struct pg_node *n, struct pg_conn *c, void *arg)
{
    struct pg_get *g = arg;
    const char *v[] = {g->a};
    PGresult *r = NULL;
    int rc = pg_exec(n, c, (enum pg_stmt)g->limit, g->a ? 1 : 0, v, &r);

    if (rc == OK)
        *(int64_t *)g->out = PQntuples(r) > 0 ? pg_i64(r, 0, 0) : 0;
    PQclear(r);
    return rc;
}

/* Reference counts decide what is removed: read on the primary, never a replica. */
static int pg_blob_refs(void *be, const char *key, int64_t *refs)
{
    struct pg *p = be;
    struct pg_get g = {.a = key, .out = refs, .limit = PS_BLOB_REFS};

    return pg_on(p, &p->primary, pg_int_fn, &g);
}

static int pg_image_count(void *be, int64_t *n)
{
    struct pg_get g = {.out = n, .limit = PS_IMAGE_COUNT};
    bool on_primary;

    return pg_read(be, pg_int_fn, &g, &on_primary);
}

static int pg_setting_get_fn(struct pg_node *n, struct pg_conn *c, void *arg)
{
    struct pg_get *g = arg;
    const char *v[] = {g->a};
    PGresult *r = NULL;
    int rc = pg_exec(n, c, PS_SETTING_GET, 1, v, &r);

    if (rc == OK && PQntuples(r) == 0)
        rc = E_NOTFOUND;
    if (rc == OK) {
        if ((size_t)PQgetlength(r, 0, 0) >= g->cap)
            rc = E_TOOBIG;
        else
            pg_text(r, 0, 0, g->out, g->cap);
    }
    PQclear(r);
    return rc;
}

static int pg_setting_get(void *be, const char *name, char *value, size_t cap)
{
    struct pg_get g = {.a = name, .out = value, .cap = cap};

    return pg_read_own(be, pg_setting_get_fn, &g, NULL);
}

/* ---- the monitor: health and replay lag of every server, in the background ---- */

struct pg_probe {
    const char *lsn; /* the primary's, or NULL */
    int64_t lag_ms;
    bool in_recovery;
    char buf[64];
};

static int pg_lsn_fn(struct pg_node *n, struct pg_conn *c, void *arg)
{
    struct pg_probe *pr = arg;
    PGresult *r = NULL;
    int rc = pg_exec(n, c, PS_PRIMARY_LSN, 0, NULL, &r);

    if (rc == OK)
        pg_text(r, 0, 0, pr->buf, sizeof(pr->buf));
    PQclear(r);
    return rc;
}

static int pg_lag_fn(struct pg_node *n, struct pg_conn *c, void *arg)
{
    struct pg_probe *pr = arg;
    const char *v[] = {pr->lsn};
    PGresult *r = NULL;
    int rc = pg_exec(n, c, PS_LAG, 1, v, &r);

    if (rc == OK) {
        pr->in_recovery = PQgetvalue(r, 0, 0)[0] == 't';
        pr->lag_ms = pg_i64(r, 0, 1);
    }
    PQclear(r);
    return rc;
}

static struct metric m_leader_changes = {
    "tessera_db_leader_changes_total",
    "Times a database node other than the last one seen leading was found leading (failovers "
    "and switchovers seen by this process's monitor).",
    "counter", 0};

/* pg_probe asks every server (even one backing off: this is how it comes back). */
static void pg_probe_all(struct pg *p)
{
    struct pg_probe pr = {.lsn = NULL};

    if (pg_on(p, &p->primary, pg_lsn_fn, &pr) == OK) {
        pg_mark_up(&p->primary);
        pr.lsn = pr.buf;
    }
    for (size_t i = 0; i < p->nreplicas; i++) {
        struct pg_node *n = &p->replica[i];
        pr.lag_ms = -1;
        if (pg_on(p, n, pg_lag_fn, &pr) == OK) {
            atomic_store(&n->lag_ms, pr.lag_ms);
            if (atomic_exchange(&n->standby, pr.in_recovery) != pr.in_recovery)
                log_info("meta", "postgres %s is %s now", n->name,
                         pr.in_recovery ? "a standby (reads)" : "the primary");
            if (!pr.in_recovery && p->leader != (int)i) {
                if (p->leader >= 0)
                    metric_add(&m_leader_changes, 1);
                p->leader = (int)i;
            }
            pg_mark_up(n);
        }
    }
}

static void *pg_monitor(void *arg)
{
    struct pg *p = arg;
    int64_t every = p->max_lag_ms / 4;

    if (every < 50)
        every = 50;
    if (every > 250)
        every = 250;
    pthread_mutex_lock(&p->mlock);
    while (!p->stopping) {
        struct timespec ts;
        pthread_mutex_unlock(&p->mlock);
        pg_probe_all(p);
        time_deadline(&ts, CLOCK_MONOTONIC, every);
        pthread_mutex_lock(&p->mlock);
        if (!p->stopping)
            pthread_cond_timedwait(&p->mwake, &p->mlock, &ts);
    }
    pthread_mutex_unlock(&p->mlock);
    return NULL;
}

static void pg_node_report(const struct pg *p, struct pg_node *n, struct meta_node *out)
{
    memset(out, 0, sizeof(*out));
    snprintf(out->name, sizeof(out->name), "%s", n->name);
    snprintf(out->addr, sizeof(out->addr), "%s", n->addr);
    out->role = n->primary || !atomic_load(&n->standby) ? "primary" : "replica";
    out->reachable = atomic_load(&n->reachable);
    out->usable = n->primary ? out->reachable : pg_usable(p, n);
    out->lag_ms = n->primary ? 0 : atomic_load(&n->lag_ms);
    out->queries = atomic_load(&n->queries);
    out->errors = atomic_load(&n->errors);
}

static void pg_nodes(void *be, struct meta_node *out, size_t cap, size_t *n)
{
    struct pg *p = be;

    pg_node_report(p, &p->primary, &out[(*n)++]);
    for (size_t i = 0; i < p->nreplicas && *n < cap; i++)
        pg_node_report(p, &p->replica[i], &out[(*n)++]);
}

/* ---- migrations ---- */

/* pg_one runs a one-value query outside the pool (migrations, open checks). */
static int pg_one(PGconn *c, const char *sql, char *buf, size_t cap)
{
    PGresult *r = PQexec(c, sql);
    char msg[200];
    int rc = OK;

    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK) {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        pg_first_line(PQresultErrorMessage(r), msg, sizeof(msg));
        rc = state != NULL && strcmp(state, "42P01") == 0 ? E_NOTFOUND : E_IO;
        if (rc != E_NOTFOUND)
            log_error("meta", "postgres: %.60s: %s", sql, msg);
        goto out;
    }
    if (buf != NULL) {
        buf[0] = '\0';
        if (PQntuples(r) > 0)
            pg_text(r, 0, 0, buf, cap);
    }
out:
    PQclear(r);
    return rc;
}

static PGconn *pg_connect_url(const char *url, bool writable, int64_t timeout_ms)
{
    char ct[24], err[200];
    const char *keys[] = {
        "dbname", "connect_timeout", "application_name", "target_session_attrs", "options", NULL};
    const char *vals[] = {
        url, ct, "tessera", writable ? "read-write" : "any", "-c client_min_messages=warning",
        NULL};
    PGconn *c;

    snprintf(ct, sizeof(ct), "%lld", (long long)((timeout_ms + 999) / 1000));
    c = PQconnectdbParams(keys, vals, 1);
    if (c != NULL && PQstatus(c) == CONNECTION_OK)
        return c;
    pg_first_line(c ? PQerrorMessage(c) : "out of memory", err, sizeof(err));
    log_error("meta", "postgres: cannot connect%s: %s", writable ? " to a primary" : "", err);
    PQfinish(c);
    return NULL;
}

/* pg_version reads the schema version of the database c reaches (0: never migrated). */
static int pg_version(PGconn *c, int *version)
{
    char buf[32];
    int rc = pg_one(c, "SELECT coalesce(max(version), 0) FROM schema_migrations", buf, sizeof(buf));

    *version = 0;
    if (rc == E_NOTFOUND)
        return OK;
    if (rc == OK)
        *version = atoi(buf);
    return rc;
}

int meta_migrate_pg(const char *url, int *from, int *to)
{
    PGconn *c = NULL;
    char buf[64];
    int version = 0;
    int rc;

    if (from != NULL)
        *from = 0;
    if (to != NULL)
        *to = 0;
    /* A URL that asks for target_session_attrs=read-write (every node of a cluster: the primary
     * is whichever takes writes now, not always the first host) gets it; any other is opened
     * with "any": a replica must be reached to be refused by name, not skipped silently. */
    c = pg_connect_url(url, strstr(url, "target_session_attrs=read-write") != NULL, 5000);
    if (c == NULL)
        return E_UNAVAILABLE;
    rc = pg_one(c, "SELECT pg_is_in_recovery()", buf, sizeof(buf));
    if (rc != OK)
        goto out;
    if (strcmp(buf, "t") == 0) {
        log_error("meta",
                  "postgres %s:%s is a replica (in recovery): migrations run on the "
                  "primary",
                  PQhost(c), PQport(c));
        rc = E_INVALID;
        goto out;
    }
    rc = pg_one(c, "BEGIN", NULL, 0);
    if (rc != OK)
        goto out;
    snprintf(buf, sizeof(buf), "SELECT pg_advisory_xact_lock(%d)", PG_MIGRATE_LOCK);
    rc = pg_one(c, buf, NULL, 0);
    if (rc == OK)
        rc = pg_one(c,
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY,"
                    " applied_at timestamptz NOT NULL DEFAULT now())",
                    NULL, 0);
    if (rc == OK)
        rc = pg_version(c, &version);
    if (rc != OK)
        goto out;
    if (from != NULL)
        *from = version;
    if (version > meta_pg_schema_version) {
        log_error("meta", "database has schema version %d, newer than this build's %d", version,
                  meta_pg_schema_version);
        rc = E_IO;
        goto out;
    }
    for (int v = version; v < meta_pg_schema_version && rc == OK; v++) {
        rc = pg_one(c, pg_migrations[v], NULL, 0);
        snprintf(buf, sizeof(buf), "INSERT INTO schema_migrations (version) VALUES (%d)", v + 1);
        if (rc == OK)
            rc = pg_one(c, buf, NULL, 0);
    }
    if (rc == OK)
        rc = pg_one(c, "COMMIT", NULL, 0);
    if (rc == OK && to != NULL)
        *to = meta_pg_schema_version;
    if (rc == OK && version < meta_pg_schema_version)
        log_info("meta", "postgres %s:%s migrated from schema version %d to %d", PQhost(c),
                 PQport(c), version, meta_pg_schema_version);
out:
    if (rc != OK && PQtransactionStatus(c) != PQTRANS_IDLE)
        pg_one(c, "ROLLBACK", NULL, 0);
    PQfinish(c);
    return rc;
}

/* ---- lifecycle ---- */

/* pg_conninfo_get copies keyword kw of a parsed conninfo ("" when absent). */
static void pg_conninfo_get(PQconninfoOption *opts, const char *kw, char *buf, size_t cap)
{
    buf[0] = '\0';
    for (PQconninfoOption *o = opts; o != NULL && o->keyword != NULL; o++)
        if (strcmp(o->keyword, kw) == 0 && o->val != NULL)
            snprintf(buf, cap, "%s", o->val);
}

/*
 * pg_node_init sets up a node: the write pool ("primary") or a read node
 * ("replica-N" whatever its role now); host and port, when given, override
 * the conninfo's.
 */
static void pg_node_init(struct pg_node *n, const char *name, const char *conninfo,
                         const char *host, const char *port, bool primary)
{
    char h[256] = "", pt[64] = "";

    n->conninfo = xstrdup(conninfo);
    n->host = host ? xstrdup(host) : NULL;
    n->port = port && port[0] != '\0' ? xstrdup(port) : NULL;
    n->primary = primary;
    atomic_store(&n->standby, !primary);
    pthread_mutex_init(&n->lock, NULL);
    atomic_store(&n->lag_ms, primary ? 0 : -1);
    snprintf(n->name, sizeof(n->name), "%s", name);
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
    pg_conninfo_get(opts, "host", h, sizeof(h));
    pg_conninfo_get(opts, "port", pt, sizeof(pt));
    PQconninfoFree(opts);
    if (host != NULL)
        snprintf(h, sizeof(h), "%s", host);
    if (n->port != NULL)
        snprintf(pt, sizeof(pt), "%s", n->port);
    if (primary) /* whichever host of db.url is writable now */
        snprintf(n->addr, sizeof(n->addr), "db.url");
    else
        snprintf(n->addr, sizeof(n->addr), "%.40s:%.16s", h[0] ? h : "localhost",
                 pt[0] ? pt : "5432");
}

static void pg_node_release(struct pg_node *n)
{
    if (n->conninfo == NULL)
        return;
    pg_flush(n);
    pthread_mutex_destroy(&n->lock);
    free(n->conninfo);
    free(n->host);
    free(n->port);
    n->conninfo = NULL;
}

static void pg_free(struct pg *p)
{
    if (p == NULL)
        return;
    if (p->monitor_on) {
        pthread_mutex_lock(&p->mlock);
        p->stopping = true;
        pthread_cond_signal(&p->mwake);
        pthread_mutex_unlock(&p->mlock);
        pthread_join(p->monitor, NULL);
    }
    pg_node_release(&p->primary);
    for (size_t i = 0; i < p->nreplicas; i++)
        pg_node_release(&p->replica[i]);
    pthread_mutex_destroy(&p->mlock);
    pthread_cond_destroy(&p->mwake);
    pthread_mutex_destroy(&p->neglock);
    free(p);
}

static void pg_close(void *be)
{
    pg_free(be);
}

static const struct meta_ops pg_ops = {
    .name = "postgres",
    .tx = &pg_tx_ops,
    .close = pg_close,
    .ping = pg_ping,
    .image_get = pg_image_get,
    .image_list = pg_image_list,
    .variant_get = pg_variant_get,
    .blob_refs = pg_blob_refs,
    .image_count = pg_image_count,
    .setting_get = pg_setting_get,
    .setting_set = pg_setting_set,
    .blob_get = pg_blob_get,
    .gc_count = pg_gc_count,
    .blob_list_unused = pg_blob_list_unused,
    .job_purge_dead = pg_job_purge_dead,
    .job_enqueue = pg_job_enqueue,
    .job_claim = pg_job_claim,
    .job_done = pg_job_done,
    .job_fail = pg_job_fail,
    .job_extend = pg_job_extend,
    .job_stats = pg_job_stats,
    .nodes = pg_nodes,
};

static int pg_add_node(struct pg *p, const char *conninfo, const char *host, const char *port)
{
    if (p->nreplicas == PG_MAX_REPLICAS) {
        log_error("meta", "db.replicas: at most %d read nodes", PG_MAX_REPLICAS);
        return E_INVALID;
    }
    char name[24];

    snprintf(name, sizeof(name), "replica-%zu", p->nreplicas + 1);
    pg_node_init(&p->replica[p->nreplicas++], name, conninfo, host, port, false);
    return OK;
}

/* pg_add_replicas splits a comma-separated list of URLs into read nodes. */
static int pg_add_replicas(struct pg *p, const char *list)
{
    const char *s = list ? list : "";
    int rc = OK;

    while (*s != '\0' && rc == OK) {
        size_t len = strcspn(s, ",");
        size_t b = 0, e = len;
        while (b < e && (s[b] == ' ' || s[b] == '\t'))
            b++;
        while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t'))
            e--;
        if (e > b) {
            char *url = xstrndup(s + b, e - b);
            rc = pg_add_node(p, url, NULL, NULL);
            free(url);
        }
        s += len;
        if (*s == ',')
            s++;
    }
    return rc;
}

/*
 * pg_add_url_hosts makes a read node of every host of a multi-host db.url
 * (used when db.replicas is empty): the monitor learns which one leads.
 * A URL with one host adds none: that server answers everything.
 */
static int pg_add_url_hosts(struct pg *p, const char *url)
{
    char hosts[1024], ports[256];
    PQconninfoOption *opts = PQconninfoParse(url, NULL);
    const char *h = hosts, *pt = ports;
    int rc = OK;

    if (opts == NULL)
        return OK; /* not parseable here: libpq reports it at connect */
    pg_conninfo_get(opts, "host", hosts, sizeof(hosts));
    pg_conninfo_get(opts, "port", ports, sizeof(ports));
    PQconninfoFree(opts);
    if (strchr(hosts, ',') == NULL)
        return OK;
    while (*h != '\0' && rc == OK) {
        size_t hl = strcspn(h, ","), pl = strcspn(pt, ",");
        char *host = xstrndup(h, hl), *port = xstrndup(pt, pl);
        rc = pg_add_node(p, url, host, port);
        free(host);
        free(port);
        h += hl + (h[hl] == ',');
        /* one port for every host, or one port per host */
        if (strchr(ports, ',') != NULL)
            pt += pl + (pt[pl] == ',');
    }
    return rc;
}

/* pg_check_schema reads the version on any server that answers; E_UNAVAILABLE when none does. */
static int pg_check_schema(struct pg *p)
{
    struct pg_node *nodes[META_NODES_MAX];
    size_t k = 0;
    int rc = E_UNAVAILABLE;

    nodes[k++] = &p->primary;
    for (size_t i = 0; i < p->nreplicas; i++)
        nodes[k++] = &p->replica[i];
    for (size_t i = 0; i < k && rc == E_UNAVAILABLE; i++) {
        PGconn *c = pg_connect_url(nodes[i]->conninfo, nodes[i]->primary, p->connect_timeout_ms);
        int version = 0;
        if (c == NULL)
            continue;
        rc = pg_version(c, &version);
        PQfinish(c);
        if (rc != OK)
            rc = E_IO;
        else if (version != meta_pg_schema_version) {
            log_error("meta", "postgres %s has schema version %d, this build needs %d%s",
                      nodes[i]->name, version, meta_pg_schema_version,
                      version < meta_pg_schema_version ? ": run `tessera migrate`" : "");
            rc = E_IO;
        }
    }
    return rc;
}

int meta_open_pg(const struct meta_options *o, struct meta_store **out)
{
    struct pg *p = NULL;
    pthread_condattr_t ca;
    int rc = OK;

    *out = NULL;
    if (o->url == NULL || o->url[0] == '\0')
        return E_INVALID;
    p = xcalloc(1, sizeof(*p));
    p->max_lag_ms = o->max_replica_lag_ms > 0 ? o->max_replica_lag_ms : 1000;
    p->statement_timeout_ms = o->statement_timeout_ms > 0 ? o->statement_timeout_ms : 5000;
    p->connect_timeout_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 2000;
    p->pool = o->pool > 0 ? (size_t)o->pool : 8;
    pthread_mutex_init(&p->mlock, NULL);
    pthread_mutex_init(&p->neglock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->mwake, &ca);
    pthread_condattr_destroy(&ca);
    pg_node_init(&p->primary, "primary", o->url, NULL, NULL, true);
    p->leader = -1;
    metric_register(&m_leader_changes);
    if (o->replicas != NULL && o->replicas[0] != '\0')
        rc = pg_add_replicas(p, o->replicas);
    else
        rc = pg_add_url_hosts(p, o->url);
    if (rc != OK)
        goto out;
    if (o->migrate) {
        rc = meta_migrate_pg(o->url, NULL, NULL);
        if (rc == E_UNAVAILABLE) {
            log_warn("meta", "postgres primary unreachable: not migrated");
            rc = OK;
        }
        if (rc != OK)
            goto out;
    }
    rc = pg_check_schema(p);
    if (rc == E_UNAVAILABLE) {
        /* start anyway, not ready: the monitor finds the servers when they come back */
        log_warn("meta", "postgres: no server reachable at start: serving 503 until one is");
        rc = OK;
    }
    if (rc != OK)
        goto out;
    pg_probe_all(p);
    if (pthread_create(&p->monitor, NULL, pg_monitor, p) != 0) {
        rc = E_IO;
        goto out;
    }
    p->monitor_on = true;
    log_info("meta", "postgres: primary %s, %zu read node(s), max replica lag %lld ms",
             atomic_load(&p->primary.reachable) ? "reachable" : "unreachable", p->nreplicas,
             (long long)p->max_lag_ms);
    *out = meta_store_new(&pg_ops, p);
    p = NULL;
out:
    pg_free(p);
    return rc;
}
