/*
 * runtime.c - opening and closing a process's parts from the configuration.
 *
 * Order: directories, image library, metadata store, blob store (the ring is
 * checked against the one in force, which needs the metadata store), local
 * blob cache, metadata cache, CDN purger. runtime_close undoes it backwards.
 */
#include "app/runtime.h"

#include "app/repair.h"
#include "app/ring_follow.h"
#include "app/ring_state.h"
#include "cache/cache.h"
#include "cdn/cdn.h"
#include "core/err.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/str.h"
#include "core/strbuf.h"
#include "core/xalloc.h"
#include "image/image.h"
#include "jobs/jobs.h"
#include "meta/meta.h"
#include "store/blob.h"
#include "store/blob_cache.h"
#include "store/blob_ring.h"
#include "store/blob_s3.h"
#include "store/blob_switch.h"
#include "store/ring.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int rt_mkdir(const char *path)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        log_error("runtime", "cannot create \"%s\": %s", path, strerror(errno));
        return E_IO;
    }
    return OK;
}

static int rt_path(char *buf, size_t cap, const char *a, const char *b)
{
    int n = snprintf(buf, cap, "%s%s", a, b);

    if (n < 0 || (size_t)n >= cap) {
        log_error("runtime", "path too long: \"%s%s\"", a, b);
        return E_INVALID;
    }
    return OK;
}

/* rt_dirs makes data_dir and data_dir/tmp and fills the paths derived from them. */
static int rt_dirs(const struct config *cfg, struct runtime *rt)
{
    int rc = rt_mkdir(cfg->storage.data_dir);

    if (rc != OK)
        return rc;
    if (realpath(cfg->storage.data_dir, rt->data_dir) == NULL) {
        log_error("runtime", "cannot resolve \"%s\": %s", cfg->storage.data_dir, strerror(errno));
        return E_IO;
    }
    rc = rt_path(rt->tmp_dir, sizeof(rt->tmp_dir), rt->data_dir, "/tmp");
    if (rc == OK)
        rc = rt_mkdir(rt->tmp_dir);
    if (rc != OK)
        return rc;
    if (cfg->storage.db[0] != '\0')
        rc = rt_path(rt->db_path, sizeof(rt->db_path), cfg->storage.db, "");
    else
        rc = rt_path(rt->db_path, sizeof(rt->db_path), rt->data_dir, "/meta.db");
    if (rc != OK)
        return rc;
    if (cfg->storage.blobs[0] != '\0')
        return rt_path(rt->blob_url, sizeof(rt->blob_url), cfg->storage.blobs, "");
    int n = snprintf(rt->blob_url, sizeof(rt->blob_url), "file://%s/blobs", rt->data_dir);
    return n > 0 && (size_t)n < sizeof(rt->blob_url) ? OK : E_INVALID;
}

void runtime_base_url(const struct config *cfg, char *out, size_t cap)
{
    const char *base = cfg->cdn.base_url[0]        ? cfg->cdn.base_url
                       : cfg->server.public_url[0] ? cfg->server.public_url
                                                   : NULL;
    const char *listen = cfg->server.listen;

    if (base != NULL)
        snprintf(out, cap, "%s", base);
    else if (strncmp(listen, "0.0.0.0:", 8) == 0 || listen[0] == ':')
        snprintf(out, cap, "http://127.0.0.1:%s", strrchr(listen, ':') + 1);
    else
        snprintf(out, cap, "http://%s", listen);
    size_t n = strlen(out);
    while (n > 0 && out[n - 1] == '/')
        out[--n] = '\0';
}

static int rt_meta(const struct config *cfg, bool migrate, struct runtime *rt)
{
    struct meta_options o = {
        .url = cfg->db.url,
        .replicas = cfg->db.replicas,
        .sqlite_path = rt->db_path,
        .max_replica_lag_ms = cfg->db.max_replica_lag_ms,
        .statement_timeout_ms = cfg->db.statement_timeout_ms,
        .connect_timeout_ms = cfg->db.connect_timeout_ms,
        .pool = (int)cfg->db.pool,
        .migrate = migrate,
    };
    int rc = meta_open(&o, &rt->meta);

    if (rc != OK)
        log_error("runtime", "cannot open the metadata store \"%s\": %s",
                  cfg->db.url[0] ? "db.url" : rt->db_path, err_str(rc));
    return rc;
}

/*
 * rt_ring_check compares the configured ring with the one in force: records
 * it when none is, refuses a different one, and starts unchecked when the
 * database cannot be read now (the service is not ready until it answers).
 */
static int rt_ring_check(struct runtime *rt, const struct ring *ring)
{
    char recorded[64];
    int rc = ring_state_epoch(rt->meta, recorded, sizeof(recorded));

    if (rc == E_NOTFOUND) {
        log_info("ring", "no ring recorded yet: recording this one (epoch %s, %zu shards)",
                 ring->epoch, ring->n);
        return ring_state_record(rt->meta, ring);
    }
    if (rc == E_UNAVAILABLE) {
        log_warn("ring",
                 "the recorded ring could not be read: starting on the configured ring "
                 "(epoch %s) unchecked",
                 ring->epoch);
        return OK;
    }
    if (rc == OK && strcmp(recorded, ring->epoch) != 0) {
        log_error("ring",
                  "the configured ring (storage.shards, epoch %s) is not the ring in force (epoch "
                  "%s): `tessera ring plan` shows what the change moves, `tessera ring "
                  "rebalance` moves the blobs and records it; `tessera ring apply` records it "
                  "without moving anything (then run `tessera repair`)",
                  ring->epoch, recorded);
        return E_INVALID;
    }
    return rc;
}

void runtime_ring_opts(const struct runtime *rt, struct blob_ring_opts *o)
{
    const struct config *cfg = rt->cfg;

    memset(o, 0, sizeof(*o));
    o->tmp_dir = rt->tmp_dir;
    o->connect_ms = (long)cfg->storage.connect_timeout_ms;
    o->read_ms = (long)cfg->storage.read_timeout_ms;
    o->backoff_ms = (long)cfg->storage.down_backoff_ms;
    o->s3_region = cfg->storage.s3_region;
    o->s3_credentials_file = cfg->storage.s3_credentials_file;
    o->s3_virtual_host = strcmp(cfg->storage.s3_addressing, "virtual") == 0;
    o->s3_multipart_bytes = (uint64_t)cfg->storage.s3_multipart_bytes;
    o->node_key = &cfg->storage_secret;
}

static int rt_blobs(const struct config *cfg, unsigned parts, struct runtime *rt)
{
    struct ring *ring = NULL;
    char why[512];
    int rc;

    if (cfg->storage.shards[0] == '\0') {
        if (parts & RT_RING) {
            log_error("runtime", "storage.shards is empty: there is no ring");
            return E_INVALID;
        }
        rc = blob_store_open(rt->blob_url, &rt->blobs);
        if (rc != OK)
            log_error("runtime", "cannot open the blob store \"%s\": %s", rt->blob_url,
                      err_str(rc));
        return rc;
    }
    rc = ring_parse_spec(cfg->storage.shards, (unsigned)cfg->storage.replicas,
                         (unsigned)cfg->storage.write_quorum, &ring, why, sizeof(why));
    if (rc != OK) {
        log_error("ring", "%s", why);
        return rc;
    }
    rc = rt->meta != NULL ? rt_ring_check(rt, ring) : OK;
    if (rc != OK) {
        ring_free(ring);
        return rc;
    }
    log_info("ring", "ring epoch %s: %zu shards, %u replicas, write quorum %u", ring->epoch,
             ring->n, ring->replicas, ring->write_quorum);
    struct blob_ring_opts o;
    runtime_ring_opts(rt, &o);
    char epoch[sizeof(ring->epoch)];
    snprintf(epoch, sizeof(epoch), "%s", ring->epoch);
    rc = blob_ring_open(ring, &o, &rt->blobs);
    if (rc != OK) {
        ring_free(ring);
        log_error("runtime", "cannot open the ring store: %s", err_str(rc));
        return rc;
    }
    if (!(parts & RT_RING_FOLLOW) || rt->meta == NULL)
        return OK;
    rc = blob_switch_open(rt->blobs, &rt->ring_switch);
    if (rc != OK)
        return rc;
    rt->blobs = rt->ring_switch;
    rc = ring_follow_start(rt->meta, rt->ring_switch, &o, cfg->storage.ring_poll_ms, epoch,
                           &rt->follow);
    if (rc != OK)
        log_error("runtime", "cannot follow the ring: %s", err_str(rc));
    return rc;
}

/* rt_blob_cache wraps a remote store in a local copy cache; without one it goes on uncached. */
static void rt_blob_cache(const struct config *cfg, struct runtime *rt)
{
    char dir[PATH_MAX];
    struct blob_store *cached = NULL;

    if (cfg->storage.cache_bytes <= 0 || !blob_store_may_block(rt->blobs))
        return;
    if (rt_path(dir, sizeof(dir), rt->data_dir, "/blobcache") != OK)
        return;
    if (blob_cache_open(rt->blobs, dir, (uint64_t)cfg->storage.cache_bytes, &cached) == OK)
        rt->blobs = cached;
    else
        log_warn("runtime", "no local blob cache in \"%s\": reads go to the shards", dir);
}

_Static_assert(CONFIG_MAX_VARIANTS <= CDN_MAX_VARIANTS, "the purger must name every preset");

/* rt_cdn_opts: the [cdn] section, the public base URL, and each preset's name and URL extension. */
static void rt_cdn_opts(const struct config *cfg, const struct runtime *rt, struct cdn_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->purger = cfg->cdn.purger;
    o->purge_urls = cfg->cdn.purge_urls;
    o->purge_timeout_ms = cfg->cdn.purge_timeout_ms;
    o->base_url = rt->base_url;
    o->cloudflare_api = cfg->cdn.cloudflare_api;
    o->cloudflare_zone = cfg->cdn.cloudflare_zone;
    o->cloudflare_token = cfg->cdn.cloudflare_token;
    o->cloudflare_tags = cfg->cdn.cloudflare_tags;
    o->fastly_api = cfg->cdn.fastly_api;
    o->fastly_service = cfg->cdn.fastly_service;
    o->fastly_key = cfg->cdn.fastly_key;
    for (size_t i = 0; i < cfg->n_variants; i++) {
        const struct variant_preset *vp = &cfg->variant[i];
        o->variant[i].name = vp->name;
        o->variant[i].ext = img_format_ext(img_format_from_name(str_from(vp->format)));
    }
    o->n_variants = cfg->n_variants;
    o->sign_keys = cfg->transform_key;
    o->n_sign_keys = cfg->n_transform_keys;
}

/* metric_head writes the HELP and TYPE lines of one metric. */
static void metric_head(struct strbuf *sb, const char *name, const char *type, const char *help)
{
    strbuf_addf(sb, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* repair_metrics renders what the last complete repair walk left (none before the first). */
static void repair_metrics(struct strbuf *sb, struct meta_store *meta)
{
    struct repair_last r;

    if (repair_last_get(meta, &r) != OK)
        return;
    metric_head(sb, "tessera_repair_last_walk_timestamp_seconds", "gauge",
                "When the last complete `tessera repair` walk (dry run or not) ended.");
    strbuf_addf(sb, "tessera_repair_last_walk_timestamp_seconds %lld\n", (long long)r.at);
    metric_head(sb, "tessera_ring_copies_away_from_home", "gauge",
                "Blob copies off their home shards (hinted copies waiting) as of the last "
                "repair walk: a dry run counts them, a real run moves them (0).");
    strbuf_addf(sb, "tessera_ring_copies_away_from_home %lld\n", (long long)r.away);
    metric_head(sb, "tessera_ring_copies_missing", "gauge",
                "Home copies missing as of the last repair walk (a real run makes them: 0).");
    strbuf_addf(sb, "tessera_ring_copies_missing %lld\n", (long long)r.missing);
    metric_head(sb, "tessera_ring_blobs_lost", "gauge",
                "Referenced blobs with no good copy on any shard, as of the last repair walk.");
    strbuf_addf(sb, "tessera_ring_blobs_lost %lld\n", (long long)r.lost);
}

/*
 * runtime_metrics renders what this process sees of the shared parts: each
 * database server (reachable, leading, lag, traffic), the ring's shards
 * (probed now if the last probe is older than the ring's check interval) and
 * what the last repair walk found.
 */
static void runtime_metrics(struct strbuf *sb, void *arg)
{
    struct runtime *rt = arg;

    if (rt->meta != NULL) {
        struct meta_node nodes[META_NODES_MAX];
        size_t n = 0;
        static const char *const name[] = {"tessera_db_up", "tessera_db_usable",
                                           "tessera_db_primary", "tessera_db_queries_total",
                                           "tessera_db_errors_total"};
        static const char *const help[] = {
            "1 when the database server answered the last probe.",
            "1 when reads may use the server (reachable, not backing off, within the lag limit).",
            "1 when the server leads (takes writes); the write pool always does.",
            "Statements answered, by database server.",
            "Failed statements and connection attempts, by database server."};

        meta_nodes(rt->meta, nodes, META_NODES_MAX, &n);
        for (size_t m = 0; m < sizeof(name) / sizeof(name[0]); m++) {
            metric_head(sb, name[m], m < 3 ? "gauge" : "counter", help[m]);
            for (size_t i = 0; i < n; i++) {
                int64_t v = m == 0   ? nodes[i].reachable
                            : m == 1 ? nodes[i].usable
                            : m == 2 ? strcmp(nodes[i].role, "replica") != 0
                            : m == 3 ? nodes[i].queries
                                     : nodes[i].errors;
                strbuf_addf(sb, "%s{node=\"%s\",addr=\"%s\"} %lld\n", name[m], nodes[i].name,
                            nodes[i].addr, (long long)v);
            }
        }
        metric_head(sb, "tessera_db_replica_lag_seconds", "gauge",
                    "Replay lag of each standby as last measured (absent: unknown).");
        for (size_t i = 0; i < n; i++) {
            if (strcmp(nodes[i].role, "replica") == 0 && nodes[i].lag_ms >= 0)
                strbuf_addf(sb, "tessera_db_replica_lag_seconds{node=\"%s\",addr=\"%s\"} %.3f\n",
                            nodes[i].name, nodes[i].addr, (double)nodes[i].lag_ms / 1000.0);
        }
    }
    if (rt->blobs != NULL) {
        struct blob_shard_state *sh = xcalloc(RING_MAX_SHARDS, sizeof(*sh));
        char epoch[BLOB_EPOCH_MAX + 1];
        size_t n;

        blob_store_check(rt->blobs); /* refreshes the shards' probes when they are stale */
        n = blob_store_shards(rt->blobs, sh, RING_MAX_SHARDS, epoch);
        if (n > 0) {
            if (rt->meta != NULL)
                repair_metrics(sb, rt->meta);
            metric_head(sb, "tessera_ring_shard_up", "gauge",
                        "1 when the shard answered its last probe and is not backing off.");
            for (size_t i = 0; i < n; i++)
                strbuf_addf(sb, "tessera_ring_shard_up{shard=\"%s\",addr=\"%s\"} %d\n", sh[i].id,
                            sh[i].addr, sh[i].up ? 1 : 0);
            metric_head(sb, "tessera_ring_info", "gauge",
                        "The ring in force: its epoch (a digest of its description) as a label.");
            strbuf_addf(sb, "tessera_ring_info{epoch=\"%s\"} 1\n", epoch);
        }
        free(sh);
    }
}

int runtime_open(const struct config *cfg, unsigned parts, struct runtime *rt)
{
    int rc;

    memset(rt, 0, sizeof(*rt));
    rt->cfg = cfg;
    runtime_base_url(cfg, rt->base_url, sizeof(rt->base_url));
    rc = rt_dirs(cfg, rt);
    if (rc != OK)
        goto out;
    if (parts & RT_IMAGE) {
        rc = img_init("tessera", (int)cfg->image.concurrency, (size_t)cfg->image.cache_bytes);
        if (rc != OK) {
            log_error("runtime", "cannot start libvips");
            goto out;
        }
        rt->parts |= RT_IMAGE;
    }
    if (parts & RT_META) {
        rc = rt_meta(cfg, (parts & RT_MIGRATE) != 0, rt);
        if (rc != OK)
            goto out;
    }
    if (parts & RT_BLOBS) {
        rc = rt_blobs(cfg, parts, rt);
        if (rc != OK)
            goto out;
        if (parts & RT_BLOB_CACHE)
            rt_blob_cache(cfg, rt);
    }
    if (parts & RT_CACHE) {
        struct cache_opts co = {
            .redis = cfg->cache.redis,
            .channel = cfg->cache.channel,
            .ttl_ms = cfg->cache.ttl_ms,
            .negative_ttl_ms = cfg->cache.negative_ttl_ms,
            .tombstone_ttl_ms = cfg->cache.tombstone_ttl_ms,
            .ack_timeout_ms = cfg->cache.ack_timeout_ms,
            .lru_entries = cfg->cache.lru_entries,
            .lru_ttl_ms = cfg->cache.lru_ttl_ms,
            .connect_timeout_ms = cfg->cache.connect_timeout_ms,
            .timeout_ms = cfg->cache.timeout_ms,
            .down_backoff_ms = cfg->cache.down_backoff_ms,
            .pool = cfg->cache.pool,
            .local_deletes_only = (parts & RT_LOCAL_DELETES) != 0,
            .redis_user = cfg->cache.redis_user,
            .redis_password = &cfg->redis_password,
            .secret = &cfg->cache_secret,
        };
        rc = cache_new(&co, &rt->cache);
        if (rc != OK)
            goto out;
    }
    if (parts & RT_CDN) {
        struct cdn_opts co;
        rt_cdn_opts(cfg, rt, &co);
        if (cdn_new(&co, &rt->cdn) != OK)
            log_warn("runtime", "no CDN purger: deletes leave the CDN's copies to expire");
    }
out:
    if (rc != OK) {
        runtime_close(rt);
    } else {
        rt->parts = parts;
        metrics_add_renderer(runtime_metrics, rt);
    }
    return rc;
}

void runtime_close(struct runtime *rt)
{
    metrics_remove_renderer(runtime_metrics, rt);
    ring_follow_stop(rt->follow);
    rt->follow = NULL;
    cdn_free(rt->cdn);
    rt->cdn = NULL;
    cache_free(rt->cache);
    rt->cache = NULL;
    blob_store_free(rt->blobs); /* the switch is under it (or is it) */
    rt->blobs = NULL;
    rt->ring_switch = NULL;
    meta_close(rt->meta);
    rt->meta = NULL;
    if (rt->parts & RT_IMAGE)
        img_shutdown();
    rt->parts = 0;
}

void runtime_jobs_opts(const struct config *cfg, struct jobs_opts *o)
{
    o->workers = (int)cfg->jobs.workers;
    o->lease_ms = cfg->jobs.lease_ms;
    o->max_attempts = (int)cfg->jobs.max_attempts;
    o->backoff_ms = cfg->jobs.backoff_ms;
    o->poll_ms = cfg->jobs.poll_ms;
}

int runtime_check_config(const struct config *cfg, char *why, size_t cap)
{
    struct ring *ring = NULL;
    int rc;

    if (cfg->storage.shards[0] == '\0')
        return OK;
    rc = ring_parse_spec(cfg->storage.shards, (unsigned)cfg->storage.replicas,
                         (unsigned)cfg->storage.write_quorum, &ring, why, cap);
    /* an S3 shard needs credentials: say which setting is missing before anything starts */
    for (size_t i = 0; rc == OK && i < ring->n; i++) {
        if (blob_s3_is(ring->shards[i].url))
            rc = blob_s3_check_credentials(cfg->storage.s3_credentials_file, ring->shards[i].id,
                                           why, cap);
    }
    ring_free(ring);
    return rc;
}
