/*
 * config.c - the settings table and the loaders it drives.
 *
 * Invariant: every setting lives in config_table exactly once; the INI file,
 * the environment, the flags, the printed defaults and the docs all read it.
 */
#include "config/config.h"

#include "core/crypto.h"
#include "core/err.h"
#include "core/log.h"
#include "core/xalloc.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum cfg_type {
    CFG_STR,
    CFG_INT,      /* integer in [min, max] */
    CFG_SIZE,     /* bytes, with an optional K/M/G (binary) suffix */
    CFG_DURATION, /* milliseconds, with an ms/s/m/h suffix (bare numbers are seconds) */
    CFG_BOOL,
};

struct cfg_entry {
    const char *section;
    const char *key;
    enum cfg_type type;
    const char *def;
    int64_t min;
    int64_t max;
    size_t offset;
    const char *help;
};

#define F(field) offsetof(struct config, field)
#define KiB      1024LL
#define MiB      (1024LL * 1024)
#define GiB      (1024LL * 1024 * 1024)

static const struct cfg_entry config_table[] = {
    {"server", "listen", CFG_STR, "127.0.0.1:8080", 0, 0, F(server.listen),
     "Address and port to listen on (host:port)."},
    {"server", "public_url", CFG_STR, "", 0, 0, F(server.public_url),
     "Base URL clients reach this service at, used in API answers; empty: http://<listen>."},
    {"server", "thread_pool", CFG_INT, "2", 0, 256, F(server.thread_pool),
     "N: an epoll pool of N threads serving connections, with blocking work (uploads, "
     "variants, deletes, listings) on server.workers threads; 0: one thread per connection."},
    {"server", "workers", CFG_INT, "16", 1, 1024, F(server.workers),
     "Threads that run blocking requests when thread_pool > 0 (queued beyond that)."},
    {"server", "max_connections", CFG_INT, "1024", 1, 65535, F(server.max_connections),
     "Most simultaneous client connections; more are refused."},
    {"server", "idle_timeout", CFG_DURATION, "30s", 1000, 3600000, F(server.idle_timeout_ms),
     "A connection idle this long (headers or body not arriving) is closed."},
    {"server", "max_header_bytes", CFG_SIZE, "16K", 4 * KiB, 256 * KiB, F(server.max_header_bytes),
     "Largest request line + headers; larger answers 431 (beyond twice this libmicrohttpd "
     "refuses by itself)."},
    {"server", "max_url_bytes", CFG_SIZE, "4K", 256, 64 * KiB, F(server.max_url_bytes),
     "Longest request target; longer answers 414. Keep it well under max_header_bytes."},
    {"server", "shutdown_timeout", CFG_DURATION, "10s", 0, 600000, F(server.shutdown_timeout_ms),
     "On SIGTERM/SIGINT, time given to requests in flight before the process exits."},
    {"server", "trusted_proxies", CFG_STR, "", 0, 0, F(server.trusted_proxies),
     "Comma-separated proxy addresses (e.g. the balancer's) whose X-Forwarded-For names the "
     "client for rate limits; from any other peer the header is ignored."},

    {"limits", "max_upload_bytes", CFG_SIZE, "50M", 1, 4 * GiB, F(limits.max_upload_bytes),
     "Largest upload body; larger answers 413 and nothing is kept."},
    {"limits", "max_pixels", CFG_INT, "100000000", 1, 1000000000, F(limits.max_pixels),
     "Most pixels in one frame (a GIF's logical screen counts); more answers 422 before decoding."},
    {"limits", "max_frames", CFG_INT, "1000", 1, 100000, F(limits.max_frames),
     "Most frames in an animation; more answers 422."},
    {"limits", "max_animation_pixels", CFG_INT, "500000000", 1, 10000000000LL,
     F(limits.max_animation_pixels), "Most pixels over all frames of an animation."},
    {"limits", "max_list", CFG_INT, "1000", 1, 10000, F(limits.max_list),
     "Largest page size a listing may ask for."},
    {"limits", "upload_rate", CFG_INT, "0", 0, 1000000, F(limits.upload_rate),
     "Uploads a minute per API key (or per client address without a key); more answers 429 "
     "with Retry-After. 0: no limit."},
    {"limits", "upload_burst", CFG_INT, "10", 1, 100000, F(limits.upload_burst),
     "Uploads a key or address may make at once before limits.upload_rate applies."},

    {"storage", "data_dir", CFG_STR, "./tessera-data", 0, 0, F(storage.data_dir),
     "Directory for the embedded store (tessera serve): database, blobs, temporaries."},
    {"storage", "blobs", CFG_STR, "", 0, 0, F(storage.blobs),
     "Blob store URL (file:///path); empty: file://<data_dir>/blobs."},
    {"storage", "db", CFG_STR, "", 0, 0, F(storage.db),
     "SQLite database path; empty: <data_dir>/meta.db."},
    {"storage", "shards", CFG_STR, "", 0, 0, F(storage.shards),
     "The storage ring: comma-separated ID=URL[;zone=Z][;weight=W] (URL file:///path, "
     "http://host:port of a `tessera storage` node, or s3+http(s)://host[:port]/bucket[/prefix] "
     "of an S3 bucket, with an optional ;region=R over storage.s3_region), or @FILE with one "
     "shard per line; empty: the single store of storage.blobs. Changing it needs `tessera ring "
     "apply`, `rebalance` or `migrate`."},
    {"storage", "s3_region", CFG_STR, "us-east-1", 0, 0, F(storage.s3_region),
     "Region S3 requests are signed for (AWS SigV4); most other S3 servers take us-east-1."},
    {"storage", "s3_credentials_file", CFG_STR, "", 0, 0, F(storage.s3_credentials_file),
     "File with the S3 access key and secret (aws_access_key_id = ..., aws_secret_access_key "
     "= ... lines; keep it mode 600): a shard's [ID] section when there is one, else [default] "
     "or the lines before any section. Empty: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."},
    {"storage", "s3_addressing", CFG_STR, "path", 0, 0, F(storage.s3_addressing),
     "path: requests go to host/bucket/key; virtual: to bucket.host/key (AWS for new "
     "buckets; needs the bucket's name in DNS)."},
    {"storage", "s3_multipart_bytes", CFG_SIZE, "64M", 5 * MiB, 5 * GiB,
     F(storage.s3_multipart_bytes),
     "Blobs larger than this go to S3 as a multipart upload in parts of this size."},
    {"storage", "replicas", CFG_INT, "2", 1, 8, F(storage.replicas),
     "R: copies of every blob, on distinct shards (and zones while there are enough)."},
    {"storage", "write_quorum", CFG_INT, "2", 1, 8, F(storage.write_quorum),
     "W: durable copies an upload waits for; fewer reachable answers 503 and stores nothing."},
    {"storage", "connect_timeout", CFG_DURATION, "1s", 10, 60000, F(storage.connect_timeout_ms),
     "Time to connect to a storage node before trying the next replica."},
    {"storage", "read_timeout", CFG_DURATION, "10s", 100, 600000, F(storage.read_timeout_ms),
     "A storage node sending nothing for this long is given up on."},
    {"storage", "down_backoff", CFG_DURATION, "2s", 100, 600000, F(storage.down_backoff_ms),
     "A shard that failed twice in a row is skipped this long (doubling while it stays down, "
     "up to 16 times this), then tried again."},
    {"storage", "min_free", CFG_SIZE, "64M", 0, 1024 * GiB, F(storage.min_free),
     "tessera storage: /readyz answers 503 when the disk has less free space than this."},
    {"storage", "cache_bytes", CFG_SIZE, "1G", 0, 1024 * GiB, F(storage.cache_bytes),
     "Local disk cache of blobs read from remote storage nodes (read services): most bytes "
     "kept in <data_dir>/blobcache; 0 turns it off."},
    {"storage", "scrub_bytes_per_s", CFG_SIZE, "8M", 0, 64 * GiB, F(storage.scrub_bytes_per_s),
     "tessera storage: re-reads every blob in the background at most this many bytes a second, "
     "checks it against its key and quarantines a bad copy (<data_dir>/quarantine, never "
     "served); 0 turns scrubbing off."},
    {"storage", "scrub_interval", CFG_DURATION, "24h", 100, 3650LL * 24 * 3600000,
     F(storage.scrub_interval_ms),
     "tessera storage: a scrub pass over every blob starts at most this often (a pass that "
     "takes longer at storage.scrub_bytes_per_s is followed at once by the next)."},
    {"storage", "repair_grace", CFG_DURATION, "24h", 0, 3650LL * 24 * 3600000,
     F(storage.repair_grace_ms),
     "tessera repair and tessera gc remove bytes no image references only when older than "
     "this (gc: blobs rows and stored copies alike)."},
    {"storage", "ring_poll", CFG_DURATION, "2s", 100, 60000, F(storage.ring_poll_ms),
     "How often a service looks for a new ring in force (after `tessera ring rebalance`) and "
     "follows it without a restart."},
    {"storage", "pin_grace", CFG_DURATION, "1h", 1000, 3650LL * 24 * 3600000,
     F(storage.pin_grace_ms),
     "tessera gc clears a blob's pin older than this (an upload that crashed between writing the "
     "blob and recording the image); keep it above the longest upload."},
    {"storage", "secret_file", CFG_STR, "", 0, 0, F(storage.secret_file),
     "File holding the secret (32 bytes or more: `openssl rand -hex 32`) that signs every "
     "request between the services and the storage nodes (HMAC-SHA256); the nodes refuse "
     "unsigned, wrongly signed and stale ones with 401. Empty: requests are unsigned, and a "
     "storage node refuses to listen beyond loopback."},
    {"storage", "secret_file_previous", CFG_STR, "", 0, 0, F(storage.secret_file_previous),
     "A second secret file a storage node also accepts (services sign with storage.secret_file "
     "only), so the secret can be rotated without downtime (docs/operations.md)."},

    {"db", "url", CFG_STR, "", 0, 0, F(db.url),
     "PostgreSQL primary: a postgresql:// URL or conninfo (multi-host for failover, e.g. "
     "postgresql://h1:5432,h2:5432/db); empty: the embedded SQLite database (storage.db)."},
    {"db", "replicas", CFG_STR, "", 0, 0, F(db.replicas),
     "Comma-separated postgresql:// URLs of the database nodes that serve reads (one host "
     "each; list every node: each one's role is learned, so after a failover the new primary "
     "is read only when no standby answers). Empty: every host of a multi-host db.url."},
    {"db", "max_replica_lag", CFG_DURATION, "1s", 0, 3600000, F(db.max_replica_lag_ms),
     "A replica whose replay lag exceeds this is skipped for reads."},
    {"db", "statement_timeout", CFG_DURATION, "5s", 100, 600000, F(db.statement_timeout_ms),
     "Longest a database statement may run (also the lock timeout, and the longest a commit "
     "waits for a synchronous standby: then the write answers 503)."},
    {"db", "connect_timeout", CFG_DURATION, "2s", 1000, 60000, F(db.connect_timeout_ms),
     "Longest a connection attempt to one database server may take (whole seconds, min 2)."},
    {"db", "pool", CFG_INT, "8", 1, 64, F(db.pool),
     "Idle connections kept open per database server."},

    {"jobs", "workers", CFG_INT, "1", 0, 64, F(jobs.workers),
     "Job threads (variants, blob release) in serve and worker; 0 in serve: no jobs run there."},
    {"jobs", "lease", CFG_DURATION, "30s", 1000, 3600000, F(jobs.lease_ms),
     "A claimed job's lease, renewed every third of it while the job runs; once a dead or hung"
     " worker let it run out, another worker takes the job."},
    {"jobs", "max_attempts", CFG_INT, "8", 1, 1000, F(jobs.max_attempts),
     "Claims before a failing job is set aside as dead."},
    {"jobs", "backoff", CFG_DURATION, "1s", 10, 3600000, F(jobs.backoff_ms),
     "Delay before the first retry of a failed job; doubles each attempt (capped at 1 h)."},
    {"jobs", "poll", CFG_DURATION, "500ms", 10, 60000, F(jobs.poll_ms),
     "How often an idle job thread looks for due jobs."},
    {"jobs", "listen", CFG_STR, "", 0, 0, F(jobs.listen),
     "host:port where `tessera worker` answers /healthz, /readyz and /metrics (the token of "
     "metrics.token_file applies); empty: no listener. One port per worker process."},
    {"jobs", "dead_retention", CFG_DURATION, "168h", 0, 3650LL * 24 * 3600000,
     F(jobs.dead_retention_ms),
     "tessera gc deletes dead jobs (failed max_attempts times) whose last attempt is older than "
     "this."},

    {"auth", "upload_keys", CFG_STR, "", 0, 0, F(auth.upload_keys),
     "Comma-separated API keys allowed to upload (24 characters or more: `openssl rand -base64 "
     "32`); empty: anyone may upload."},
    {"auth", "admin_keys", CFG_STR, "", 0, 0, F(auth.admin_keys),
     "Comma-separated API keys that may delete any image (and upload); 24 characters or more."},
    {"auth", "admin_keys_file", CFG_STR, "", 0, 0, F(auth.admin_keys_file),
     "File of more admin keys, one a line (added to auth.admin_keys): keeps them out of the "
     "configuration file."},
    {"auth", "list_requires_key", CFG_BOOL, "false", 0, 1, F(auth.list_requires_key),
     "GET /api/v1/images (the listing) needs an upload or admin key (Authorization: Bearer), "
     "else 401; images stay readable by their URLs. Needs auth.upload_keys or auth.admin_keys."},

    {"cdn", "base_url", CFG_STR, "", 0, 0, F(cdn.base_url),
     "Base URL of the CDN in front; when set, image URLs in answers use it."},
    {"cdn", "purger", CFG_STR, "", 0, 0, F(cdn.purger),
     "What a delete purges (a retried job): varnish (xkey purge of img-{id}, else PURGE per "
     "URL), cloudflare, fastly, http (PURGE per URL to each of cdn.purge_urls); empty: none."},
    {"cdn", "purge_urls", CFG_STR, "", 0, 0, F(cdn.purge_urls),
     "Comma-separated base URLs of the caches the varnish and http purgers send PURGE to."},
    {"cdn", "purge_timeout", CFG_DURATION, "5s", 100, 600000, F(cdn.purge_timeout_ms),
     "Longest one purge request may take; a timeout fails the job, which is retried."},
    {"cdn", "cloudflare_api", CFG_STR, "https://api.cloudflare.com/client/v4", 0, 0,
     F(cdn.cloudflare_api), "Base URL of the Cloudflare API (a stub in tests)."},
    {"cdn", "cloudflare_zone", CFG_STR, "", 0, 0, F(cdn.cloudflare_zone),
     "Cloudflare zone id whose cache the cloudflare purger purges."},
    {"cdn", "cloudflare_token", CFG_STR, "", 0, 0, F(cdn.cloudflare_token),
     "Cloudflare API token (Cache Purge permission); empty: $CLOUDFLARE_API_TOKEN."},
    {"cdn", "cloudflare_tags", CFG_BOOL, "false", 0, 1, F(cdn.cloudflare_tags),
     "Also purge by Cache-Tag img-{id} (Enterprise zones); URLs are always purged."},
    {"cdn", "fastly_api", CFG_STR, "https://api.fastly.com", 0, 0, F(cdn.fastly_api),
     "Base URL of the Fastly API (a stub in tests)."},
    {"cdn", "fastly_service", CFG_STR, "", 0, 0, F(cdn.fastly_service),
     "Fastly service id the fastly purger purges img-{id} (a surrogate key) in."},
    {"cdn", "fastly_key", CFG_STR, "", 0, 0, F(cdn.fastly_key),
     "Fastly API token (Fastly-Key); empty: $FASTLY_API_KEY."},

    {"cache", "redis", CFG_STR, "", 0, 0, F(cache.redis),
     "Redis Cluster seed nodes, comma-separated host:port (the slot map is read from them); "
     "empty: no Redis (metadata reads go to the database, the LRU only in a sole deleter)."},
    {"cache", "channel", CFG_STR, "tessera:invalidate", 0, 0, F(cache.channel),
     "Redis pub/sub channel on which deletes publish the ids every read service drops."},
    {"cache", "ttl", CFG_DURATION, "1h", 1000, 7 * 24 * 3600000LL, F(cache.ttl_ms),
     "Lifetime of an image's metadata entry in Redis."},
    {"cache", "negative_ttl", CFG_DURATION, "5s", 100, 3600000, F(cache.negative_ttl_ms),
     "Lifetime of an \"unknown id\" entry (Redis and LRU)."},
    {"cache", "tombstone_ttl", CFG_DURATION, "60s", 1000, 3600000, F(cache.tombstone_ttl_ms),
     "Lifetime of the tombstone a delete writes; keep it above the slowest metadata read "
     "(db.statement_timeout) so a read that began before the delete cannot re-fill the entry."},
    {"cache", "ack_timeout", CFG_DURATION, "100ms", 0, 10000, F(cache.ack_timeout_ms),
     "A delete waits this long at most for every subscribed service to acknowledge that it "
     "dropped the image from its LRU before answering 204; 0: do not wait."},
    {"cache", "lru_entries", CFG_INT, "100000", 0, 100000000, F(cache.lru_entries),
     "Entries of the in-process LRU (about 400 bytes each); 0: no in-process cache."},
    {"cache", "lru_ttl", CFG_DURATION, "30s", 100, 3600000, F(cache.lru_ttl_ms),
     "Lifetime of an entry in the in-process LRU (bounds staleness if an invalidation is lost)."},
    {"cache", "connect_timeout", CFG_DURATION, "100ms", 1, 10000, F(cache.connect_timeout_ms),
     "Longest a connection attempt to one Redis node may take."},
    {"cache", "timeout", CFG_DURATION, "100ms", 1, 10000, F(cache.timeout_ms),
     "Longest a Redis command may take before the node counts as failed."},
    {"cache", "down_backoff", CFG_DURATION, "1s", 10, 600000, F(cache.down_backoff_ms),
     "A Redis node that failed is skipped this long (doubling while it stays down, up to 16 "
     "times this), then one request probes it."},
    {"cache", "pool", CFG_INT, "8", 1, 16, F(cache.pool),
     "Idle keep-alive connections kept per Redis node."},
    {"cache", "redis_user", CFG_STR, "", 0, 0, F(cache.redis_user),
     "Redis ACL user every new connection authenticates as (AUTH user password); empty: "
     "\"default\" when cache.redis_password_file is set."},
    {"cache", "redis_password_file", CFG_STR, "", 0, 0, F(cache.redis_password_file),
     "File holding the Redis password (24 bytes or more); empty: no AUTH."},
    {"cache", "secret_file", CFG_STR, "", 0, 0, F(cache.secret_file),
     "File holding the secret (32 bytes or more) whose HMAC every cached record and "
     "invalidation message carries; one that fails the check is dropped, counted and logged, "
     "and the read goes to the database. Empty: Redis is trusted (a warning at start)."},

    {"image", "concurrency", CFG_INT, "1", 1, 64, F(image.concurrency),
     "libvips worker threads per image operation."},
    {"image", "max_parallel", CFG_INT, "2", 1, 256, F(image.max_parallel),
     "Most images decoded or resized at once; more requests wait their turn (bounds memory)."},
    {"image", "cache_bytes", CFG_SIZE, "0", 0, 4 * GiB, F(image.cache_bytes),
     "Most pixel memory libvips' operation cache may hold; 0: no cache (the default: a cached "
     "load also keeps its whole input file, which this limit does not count, and every "
     "request reads different bytes)."},
    {"image", "variants", CFG_STR, "thumb:256x256:webp:80", 0, 0, F(image.variants),
     "Variant presets, comma-separated name:WxH:format:quality; 'thumb' must exist."},

    {"admin", "prometheus_url", CFG_STR, "", 0, 0, F(admin.prometheus_url),
     "Base URL of the Prometheus that scrapes the cluster (http://host:port); the status page "
     "/admin shows every instance's health and the request and error rates from it. Empty: the "
     "page shows only what this process sees."},

    {"metrics", "token_file", CFG_STR, "", 0, 0, F(metrics.token_file),
     "File holding a bearer token (24 bytes or more); when set, GET /metrics needs "
     "`Authorization: Bearer <token>` (else 401). Empty: /metrics is open."},

    {"transforms", "max_dimension", CFG_INT, "4096", 1, 16383, F(transforms.max_dimension),
     "Largest w and h of an on-the-fly transform (/i/{id}/t/{ops}.{ext}), before dpr."},
    {"transforms", "keys", CFG_STR, "", 0, 0, F(transforms.keys),
     "Comma-separated keys that sign transform URLs (?s=); several are valid at once, for "
     "rotation; 24 characters or more. With no key (here or in keys_file) transforms answer "
     "404 unless transforms.unsigned is true."},
    {"transforms", "keys_file", CFG_STR, "", 0, 0, F(transforms.keys_file),
     "File of more signing keys, one a line (a key is the line's bytes without its line end; "
     "empty lines are skipped); read at start."},
    {"transforms", "unsigned", CFG_BOOL, "false", 0, 1, F(transforms.allow_unsigned),
     "Serve transforms without checking a signature (a development setting: anyone may then "
     "make the server render any size)."},
    {"transforms", "memory_budget", CFG_SIZE, "0", 0, 1024 * GiB, F(transforms.memory_budget),
     "Most decode memory (predicted from the image header, after shrink-on-load) that "
     "renditions being made may take at once; 0: a quarter of physical memory, at most 2G."},
    {"transforms", "queue_timeout", CFG_DURATION, "2s", 0, 600000, F(transforms.queue_timeout_ms),
     "A rendition that does not fit in the memory budget waits this long for room, then "
     "answers 503 with Retry-After."},
    {"transforms", "srcset_widths", CFG_STR, "320,640,960,1280,1920", 0, 0,
     F(transforms.srcset_widths),
     "Comma-separated widths, ascending, of the srcset of signed w:{width}.auto URLs in image "
     "answers (only while a key is configured; widths above the image's are left out); empty: "
     "no srcset."},
    {"transforms", "cache_bytes", CFG_SIZE, "0", 0, 1024 * 1024 * GiB, F(transforms.cache_bytes),
     "Disk budget of the renditions (/i/{id}/t/; presets do not count and are never evicted): "
     "over it, the least recently used are deleted (row, blob, edge copies) and made again on "
     "request. 0: no budget."},
    {"transforms", "touch_interval", CFG_DURATION, "10m", 1000, 7 * 24 * 3600000LL,
     F(transforms.touch_interval_ms),
     "A rendition's use is written (batched, in the background) at most once per this interval: "
     "the eviction order is this coarse. Only with transforms.cache_bytes."},
    {"transforms", "evict_interval", CFG_DURATION, "1m", 100, 24 * 3600000LL,
     F(transforms.evict_interval_ms),
     "How often a read service checks the renditions' disk budget (also soon after it recorded "
     "one); one service at a time evicts."},
    {"transforms", "lease_timeout", CFG_DURATION, "15s", 0, 600000, F(transforms.lease_timeout_ms),
     "Services asked for the same new rendition at once: one takes a lease in the database and "
     "makes it, the others wait for it at most this long, then make their own. 0: no lease."},
    {"transforms", "auto_standin", CFG_BOOL, "false", 0, 1, F(transforms.auto_standin),
     "For .auto answered in AVIF: while the AVIF rendition does not exist, answer the WebP one "
     "(with Cache-Control max-age transforms.standin_max_age, not immutable) and make the AVIF "
     "in the background (a job)."},
    {"transforms", "standin_max_age", CFG_DURATION, "1m", 0, 3600000,
     F(transforms.standin_max_age_ms),
     "Cache-Control max-age of a WebP stand-in answer (transforms.auto_standin)."},

    {"log", "level", CFG_STR, "info", 0, 0, F(log.level), "debug, info, warn, error or off."},
    {"log", "access", CFG_BOOL, "true", 0, 1, F(log.access),
     "Write one access log line per request."},
};

#define CONFIG_N (sizeof(config_table) / sizeof(config_table[0]))

struct cfg_err {
    char *buf;
    size_t cap;
};

static int cfg_fail(struct cfg_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int cfg_fail(struct cfg_err *e, const char *fmt, ...)
{
    va_list ap;

    if (e->buf != NULL && e->cap > 0) {
        va_start(ap, fmt);
        vsnprintf(e->buf, e->cap, fmt, ap);
        va_end(ap);
    }
    return E_INVALID;
}

static const struct cfg_entry *cfg_find(const char *section, size_t slen, const char *key,
                                        size_t klen)
{
    for (size_t i = 0; i < CONFIG_N; i++) {
        const struct cfg_entry *ce = &config_table[i];
        if (strlen(ce->section) == slen && strncasecmp(ce->section, section, slen) == 0 &&
            strlen(ce->key) == klen && strncasecmp(ce->key, key, klen) == 0)
            return ce;
    }
    return NULL;
}

static bool cfg_section_known(const char *section, size_t slen)
{
    for (size_t i = 0; i < CONFIG_N; i++) {
        if (strlen(config_table[i].section) == slen &&
            strncasecmp(config_table[i].section, section, slen) == 0)
            return true;
    }
    return false;
}

/* cfg_parse_number parses an integer with an optional suffix scaled by the table in units. */
static int cfg_parse_number(const char *s, enum cfg_type type, int64_t *out)
{
    char *end = NULL;
    long long v;
    int64_t mul = 1;

    while (isspace((unsigned char)*s))
        s++;
    if (*s == '\0' || *s == '+' || *s == '-')
        return E_INVALID;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == s)
        return E_INVALID;
    while (isspace((unsigned char)*end))
        end++;
    if (type == CFG_SIZE) {
        if (strcasecmp(end, "k") == 0 || strcasecmp(end, "kib") == 0)
            mul = KiB;
        else if (strcasecmp(end, "m") == 0 || strcasecmp(end, "mib") == 0)
            mul = MiB;
        else if (strcasecmp(end, "g") == 0 || strcasecmp(end, "gib") == 0)
            mul = GiB;
        else if (*end != '\0' && strcasecmp(end, "b") != 0)
            return E_INVALID;
    } else if (type == CFG_DURATION) {
        if (strcmp(end, "ms") == 0)
            mul = 1;
        else if (*end == '\0' || strcmp(end, "s") == 0)
            mul = 1000;
        else if (strcmp(end, "m") == 0)
            mul = 60 * 1000;
        else if (strcmp(end, "h") == 0)
            mul = 3600 * 1000;
        else
            return E_INVALID;
    } else if (*end != '\0') {
        return E_INVALID;
    }
    if (v > INT64_MAX / mul)
        return E_INVALID;
    *out = (int64_t)v * mul;
    return OK;
}

static int cfg_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};

    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return OK;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return OK;
        }
    }
    return E_INVALID;
}

/* cfg_apply stores text into the setting ce; where names the source for the error. */
static int cfg_apply(struct config *cfg, const struct cfg_entry *ce, const char *value,
                     const char *where, struct cfg_err *e)
{
    void *field = (char *)cfg + ce->offset;
    int64_t n = 0;
    bool b = false;

    switch (ce->type) {
    case CFG_STR:
        free(*(char **)field);
        *(char **)field = xstrdup(value);
        return OK;
    case CFG_BOOL:
        if (cfg_parse_bool(value, &b) != OK)
            return cfg_fail(e, "%s: %s.%s: \"%s\" is not a boolean (true or false)", where,
                            ce->section, ce->key, value);
        *(bool *)field = b;
        return OK;
    case CFG_INT:
    case CFG_SIZE:
    case CFG_DURATION:
        if (cfg_parse_number(value, ce->type, &n) != OK)
            return cfg_fail(e, "%s: %s.%s: \"%s\" is not %s", where, ce->section, ce->key, value,
                            ce->type == CFG_INT    ? "an integer"
                            : ce->type == CFG_SIZE ? "a size (e.g. 512K, 50M)"
                                                   : "a duration (e.g. 500ms, 30s, 5m)");
        if (n < ce->min || n > ce->max)
            return cfg_fail(e, "%s: %s.%s: %s is out of range [%lld, %lld]", where, ce->section,
                            ce->key, value, (long long)ce->min, (long long)ce->max);
        *(int64_t *)field = n;
        return OK;
    }
    return E_INTERNAL;
}

void config_init(struct config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < CONFIG_N; i++) {
        int rc = cfg_apply(cfg, &config_table[i], config_table[i].def, "default", NULL);
        if (rc != OK) {
            fprintf(stderr, "fatal: bad default for %s.%s\n", config_table[i].section,
                    config_table[i].key);
            abort();
        }
    }
}

static void cfg_keys_free(char **keys, size_t *n)
{
    for (size_t i = 0; i < *n; i++)
        free(keys[i]);
    *n = 0;
}

void config_release(struct config *cfg)
{
    for (size_t i = 0; i < CONFIG_N; i++) {
        if (config_table[i].type == CFG_STR) {
            char **field = (char **)((char *)cfg + config_table[i].offset);
            free(*field);
            *field = NULL;
        }
    }
    cfg_keys_free(cfg->upload_key, &cfg->n_upload_keys);
    cfg_keys_free(cfg->admin_key, &cfg->n_admin_keys);
    cfg_keys_free(cfg->transform_key, &cfg->n_transform_keys);
}

struct ini_state {
    struct config *cfg;
    const char *path;
    struct cfg_err *e;
    FILE *f;
    int lineno;
    int too_long; /* the line that did not fit, 0 if none */
    int rc;
};

/* cfg_ini_reader is fgets that counts lines: Debian's inih does not pass line numbers. */
static char *cfg_ini_reader(char *str, int num, void *stream)
{
    struct ini_state *st = stream;
    char *line;

    st->lineno++;
    line = fgets(str, num, st->f);
    if (line != NULL && strchr(line, '\n') == NULL && !feof(st->f)) {
        /* inih's line buffer is fixed: refuse rather than misread the rest */
        st->too_long = st->lineno;
        return NULL;
    }
    return line;
}

static int cfg_ini_handler(void *user, const char *section, const char *name, const char *value)
{
    int lineno = ((struct ini_state *)user)->lineno;

    struct ini_state *st = user;
    const struct cfg_entry *ce;
    char where[512];

    if (st->rc != OK)
        return 0;
    snprintf(where, sizeof(where), "%s:%d", st->path, lineno);
    ce = cfg_find(section, strlen(section), name, strlen(name));
    if (ce == NULL) {
        st->rc = cfg_fail(st->e, "%s: unknown setting %s.%s", where, section, name);
        return 0;
    }
    st->rc = cfg_apply(st->cfg, ce, value, where, st->e);
    return st->rc == OK;
}

/* cfg_split_keys splits a comma-separated list into owned, trimmed strings. */
static int cfg_split_keys(const char *list, char **keys, size_t *n, const char *name,
                          struct cfg_err *e)
{
    const char *p = list;

    while (*p != '\0') {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *s = p;
        while (len > 0 && isspace((unsigned char)*s)) {
            s++;
            len--;
        }
        while (len > 0 && isspace((unsigned char)s[len - 1]))
            len--;
        if (len > 0) {
            if (*n == CONFIG_MAX_KEYS)
                return cfg_fail(e, "%s: more than %d keys", name, CONFIG_MAX_KEYS);
            if (len < CONFIG_KEY_MIN)
                return cfg_fail(e,
                                "%s: a key shorter than %d characters is too easy to guess; "
                                "make one with `openssl rand -base64 32`",
                                name, CONFIG_KEY_MIN);
            if (memmem(s, len, "change-me", 9) != NULL || memmem(s, len, "example", 7) != NULL)
                return cfg_fail(e,
                                "%s: \"%.*s\" is the documentation's placeholder, not a key; "
                                "make one with `openssl rand -base64 32`",
                                name, (int)len, s);
            keys[(*n)++] = xstrndup(s, len);
        }
        if (end == NULL)
            break;
        p = end + 1;
    }
    return OK;
}

/*
 * cfg_read_keys_file adds each line of path to keys: a key is the line's
 * bytes without its line end ("\n" or "\r\n"); empty lines are skipped. name is the
 * setting, for errors.
 */
static int cfg_read_keys_file(const char *name, const char *path, char **keys, size_t *n,
                              struct cfg_err *e)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    int lineno = 0, rc = OK;

    if (f == NULL)
        return cfg_fail(e, "%s: %s: cannot open: %s", name, path, strerror(errno));
    while (rc == OK && fgets(line, sizeof(line), f) != NULL) {
        size_t len = strlen(line);
        lineno++;
        if (len == sizeof(line) - 1 && line[len - 1] != '\n') {
            rc = cfg_fail(e, "%s: %s:%d: line too long", name, path, lineno);
            break;
        }
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = '\0';
        if (len > 0 && line[len - 1] == '\r')
            line[--len] = '\0';
        if (len == 0)
            continue;
        if (*n == CONFIG_MAX_KEYS)
            rc = cfg_fail(e, "%s: more than %d keys", name, CONFIG_MAX_KEYS);
        else if (len < CONFIG_KEY_MIN)
            rc = cfg_fail(e, "%s: %s:%d: a key shorter than %d characters", name, path, lineno,
                          CONFIG_KEY_MIN);
        else
            keys[(*n)++] = xstrndup(line, len);
    }
    memset(line, 0, sizeof(line));
    fclose(f);
    return rc;
}

/* cfg_parse_srcset reads transforms.srcset_widths: ascending widths within max_dimension. */
static int cfg_parse_srcset(struct config *cfg, struct cfg_err *e)
{
    const char *p = cfg->transforms.srcset_widths;

    cfg->n_srcset_widths = 0;
    if (*p == '\0')
        return OK;
    for (;;) {
        char *end = NULL;
        long w;

        while (*p == ' ')
            p++;
        errno = 0;
        w = strtol(p, &end, 10);
        if (end == p || errno != 0 || w < 1 || w > cfg->transforms.max_dimension)
            return cfg_fail(
                e, "transforms.srcset_widths: \"%s\" is not a list of widths from 1 to %lld",
                cfg->transforms.srcset_widths, (long long)cfg->transforms.max_dimension);
        if (cfg->n_srcset_widths == CONFIG_MAX_SRCSET)
            return cfg_fail(e, "transforms.srcset_widths: more than %d widths", CONFIG_MAX_SRCSET);
        if (cfg->n_srcset_widths > 0 && (uint32_t)w <= cfg->srcset_width[cfg->n_srcset_widths - 1])
            return cfg_fail(e, "transforms.srcset_widths: widths must ascend");
        cfg->srcset_width[cfg->n_srcset_widths++] = (uint32_t)w;
        while (*end == ' ')
            end++;
        if (*end == '\0')
            break;
        if (*end != ',')
            return cfg_fail(
                e, "transforms.srcset_widths: \"%s\" is not a list of widths from 1 to %lld",
                cfg->transforms.srcset_widths, (long long)cfg->transforms.max_dimension);
        p = end + 1;
    }
    return OK;
}

static bool cfg_variant_name_ok(const char *s, size_t len)
{
    if (len == 0 || len >= sizeof(((struct variant_preset *)0)->name))
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* cfg_parse_variants parses "name:WxH:format:quality,..." into cfg->variant. */
static int cfg_parse_variants(struct config *cfg, struct cfg_err *e)
{
    const char *p = cfg->image.variants;
    bool thumb = false;

    cfg->n_variants = 0;
    while (*p != '\0') {
        struct variant_preset vp;
        char name[64], fmt[8];
        unsigned w, h;
        int q, used = 0;
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char item[128];

        if (len >= sizeof(item))
            return cfg_fail(e, "image.variants: entry too long");
        memcpy(item, p, len);
        item[len] = '\0';
        if (sscanf(item, " %63[^:]:%ux%u:%7[^:]:%d %n", name, &w, &h, fmt, &q, &used) != 5 ||
            item[used] != '\0')
            return cfg_fail(e, "image.variants: \"%s\" is not name:WxH:format:quality", item);
        if (!cfg_variant_name_ok(name, strlen(name)))
            return cfg_fail(e, "image.variants: bad name \"%s\" (use a-z 0-9 _ -)", name);
        if (w < 1 || w > 8192 || h < 1 || h > 8192)
            return cfg_fail(e, "image.variants: %s: size %ux%u out of range [1, 8192]", name, w, h);
        if (strcmp(fmt, "webp") != 0 && strcmp(fmt, "jpeg") != 0 && strcmp(fmt, "png") != 0 &&
            strcmp(fmt, "avif") != 0)
            return cfg_fail(e, "image.variants: %s: format \"%s\" is not webp, jpeg, png or avif",
                            name, fmt);
        if (q < 1 || q > 100)
            return cfg_fail(e, "image.variants: %s: quality %d out of range [1, 100]", name, q);
        if (cfg->n_variants == CONFIG_MAX_VARIANTS)
            return cfg_fail(e, "image.variants: more than %d presets", CONFIG_MAX_VARIANTS);
        if (config_variant(cfg, name, strlen(name)) != NULL)
            return cfg_fail(e, "image.variants: \"%s\" is defined twice", name);
        memset(&vp, 0, sizeof(vp));
        memcpy(vp.name, name, strlen(name)); /* cfg_variant_name_ok: shorter than vp.name */
        memcpy(vp.format, fmt, strlen(fmt)); /* one of the four names above */
        vp.width = w;
        vp.height = h;
        vp.quality = q;
        cfg->variant[cfg->n_variants++] = vp;
        thumb = thumb || strcmp(name, "thumb") == 0;
        if (end == NULL)
            break;
        p = end + 1;
    }
    if (!thumb)
        return cfg_fail(e, "image.variants: the preset \"thumb\" must exist");
    return OK;
}

/* cfg_secret reads the file a setting names (when it names one) into out. */
static int cfg_secret(const char *name, const char *path, size_t min, struct secret *out,
                      struct cfg_err *e)
{
    char why[512];
    struct stat st;

    memset(out, 0, sizeof(*out));
    if (path[0] == '\0')
        return OK;
    if (secret_file_read(path, min, out, why, sizeof(why)) != OK)
        return cfg_fail(e, "%s: %s", name, why);
    if (stat(path, &st) == 0 && (st.st_mode & S_IROTH))
        log_warn("config", "%s: \"%s\" is readable by every user (chmod 640 or 600)", name, path);
    return OK;
}

static int cfg_load_secrets(struct config *cfg, struct cfg_err *e)
{
    int rc;

    if (cfg->storage.secret_file_previous[0] != '\0' && cfg->storage.secret_file[0] == '\0')
        return cfg_fail(e, "storage.secret_file_previous: needs storage.secret_file");
    if (cfg->cache.redis_user[0] != '\0' && cfg->cache.redis_password_file[0] == '\0')
        return cfg_fail(e, "cache.redis_user: needs cache.redis_password_file");
    rc = cfg_secret("storage.secret_file", cfg->storage.secret_file, CONFIG_SECRET_MIN,
                    &cfg->storage_secret, e);
    if (rc == OK)
        rc = cfg_secret("storage.secret_file_previous", cfg->storage.secret_file_previous,
                        CONFIG_SECRET_MIN, &cfg->storage_secret_previous, e);
    if (rc == OK)
        rc = cfg_secret("cache.secret_file", cfg->cache.secret_file, CONFIG_SECRET_MIN,
                        &cfg->cache_secret, e);
    if (rc == OK)
        rc = cfg_secret("cache.redis_password_file", cfg->cache.redis_password_file, CONFIG_KEY_MIN,
                        &cfg->redis_password, e);
    if (rc == OK)
        rc = cfg_secret("metrics.token_file", cfg->metrics.token_file, CONFIG_KEY_MIN,
                        &cfg->metrics_token, e);
    return rc;
}

static config_check_fn *cfg_checks[CONFIG_MAX_CHECKS];
static size_t cfg_n_checks;

void config_add_check(config_check_fn *fn)
{
    for (size_t i = 0; i < cfg_n_checks; i++) {
        if (cfg_checks[i] == fn)
            return;
    }
    if (cfg_n_checks < CONFIG_MAX_CHECKS)
        cfg_checks[cfg_n_checks++] = fn;
}

static int cfg_validate(struct config *cfg, struct cfg_err *e)
{
    int rc;

    if (strchr(cfg->server.listen, ':') == NULL)
        return cfg_fail(e, "server.listen: \"%s\" is not host:port", cfg->server.listen);
    if (cfg->server.max_url_bytes >= cfg->server.max_header_bytes)
        return cfg_fail(e, "server.max_url_bytes must be smaller than server.max_header_bytes");
    if (log_level_valid(cfg->log.level) == false)
        return cfg_fail(e, "log.level: \"%s\" is not debug, info, warn, error or off",
                        cfg->log.level);
    if (cfg->storage.blobs[0] != '\0' && strncmp(cfg->storage.blobs, "file:///", 8) != 0)
        return cfg_fail(e, "storage.blobs: \"%s\" is not a file:/// URL", cfg->storage.blobs);
    if (cfg->storage.data_dir[0] == '\0')
        return cfg_fail(e, "storage.data_dir: must not be empty");
    if (strcmp(cfg->storage.s3_addressing, "path") != 0 &&
        strcmp(cfg->storage.s3_addressing, "virtual") != 0)
        return cfg_fail(e, "storage.s3_addressing: \"%s\" is not path or virtual",
                        cfg->storage.s3_addressing);
    for (size_t i = 0; i < cfg_n_checks; i++) {
        char why[512] = "";
        if (cfg_checks[i](cfg, why, sizeof(why)) != OK)
            return cfg_fail(e, "%s", why);
    }
    if (cfg->cdn.purger[0] != '\0' && strcmp(cfg->cdn.purger, "varnish") != 0 &&
        strcmp(cfg->cdn.purger, "cloudflare") != 0 && strcmp(cfg->cdn.purger, "fastly") != 0 &&
        strcmp(cfg->cdn.purger, "http") != 0)
        return cfg_fail(e, "cdn.purger: \"%s\" is not varnish, cloudflare, fastly, http or empty",
                        cfg->cdn.purger);
    if ((strcmp(cfg->cdn.purger, "varnish") == 0 || strcmp(cfg->cdn.purger, "http") == 0) &&
        cfg->cdn.purge_urls[0] == '\0')
        return cfg_fail(e, "cdn.purge_urls: the %s purger needs the caches' base URLs",
                        cfg->cdn.purger);
    if (strcmp(cfg->cdn.purger, "cloudflare") == 0 && cfg->cdn.cloudflare_zone[0] == '\0')
        return cfg_fail(e, "cdn.cloudflare_zone: the cloudflare purger needs the zone id");
    if (strcmp(cfg->cdn.purger, "fastly") == 0 && cfg->cdn.fastly_service[0] == '\0')
        return cfg_fail(e, "cdn.fastly_service: the fastly purger needs the service id");
    rc = cfg_parse_variants(cfg, e);
    if (rc != OK)
        return rc;
    rc = cfg_load_secrets(cfg, e);
    if (rc != OK)
        return rc;
    cfg_keys_free(cfg->upload_key, &cfg->n_upload_keys);
    cfg_keys_free(cfg->admin_key, &cfg->n_admin_keys);
    rc = cfg_split_keys(cfg->auth.upload_keys, cfg->upload_key, &cfg->n_upload_keys,
                        "auth.upload_keys", e);
    if (rc != OK)
        return rc;
    rc = cfg_split_keys(cfg->auth.admin_keys, cfg->admin_key, &cfg->n_admin_keys, "auth.admin_keys",
                        e);
    if (rc == OK && cfg->auth.admin_keys_file[0] != '\0')
        rc = cfg_read_keys_file("auth.admin_keys_file", cfg->auth.admin_keys_file, cfg->admin_key,
                                &cfg->n_admin_keys, e);
    if (rc != OK)
        return rc;
    if (cfg->auth.list_requires_key && cfg->n_upload_keys == 0 && cfg->n_admin_keys == 0)
        return cfg_fail(e, "auth.list_requires_key: needs auth.upload_keys or auth.admin_keys");
    cfg_keys_free(cfg->transform_key, &cfg->n_transform_keys);
    rc = cfg_split_keys(cfg->transforms.keys, cfg->transform_key, &cfg->n_transform_keys,
                        "transforms.keys", e);
    if (rc == OK && cfg->transforms.keys_file[0] != '\0')
        rc = cfg_read_keys_file("transforms.keys_file", cfg->transforms.keys_file,
                                cfg->transform_key, &cfg->n_transform_keys, e);
    if (rc == OK)
        rc = cfg_parse_srcset(cfg, e);
    return rc;
}

int config_set(struct config *cfg, const char *name, const char *value, char *errbuf, size_t errcap)
{
    struct cfg_err e = {errbuf, errcap};
    const char *dot = strchr(name, '.');
    const struct cfg_entry *ce;
    char where[300];

    if (dot == NULL)
        return cfg_fail(&e, "flag --%s: settings are named section.key", name);
    ce = cfg_find(name, (size_t)(dot - name), dot + 1, strlen(dot + 1));
    if (ce == NULL)
        return cfg_fail(&e, "flag --%s: unknown setting", name);
    snprintf(where, sizeof(where), "flag --%s", name);
    return cfg_apply(cfg, ce, value, where, &e);
}

/* cfg_apply_env applies TESSERA_<SECTION>_<KEY>=value for the sections the table knows. */
static int cfg_apply_env(struct config *cfg, char *const *env, struct cfg_err *e)
{
    for (size_t i = 0; env != NULL && env[i] != NULL; i++) {
        const char *s = env[i];
        const char *eq = strchr(s, '=');
        const char *sec, *us;
        const struct cfg_entry *ce;
        char where[300];
        int rc;

        if (strncmp(s, "TESSERA_", 8) != 0 || eq == NULL)
            continue;
        sec = s + 8;
        us = memchr(sec, '_', (size_t)(eq - sec));
        if (us == NULL || !cfg_section_known(sec, (size_t)(us - sec)))
            continue;
        snprintf(where, sizeof(where), "environment %.*s", (int)(eq - s), s);
        ce = cfg_find(sec, (size_t)(us - sec), us + 1, (size_t)(eq - us - 1));
        if (ce == NULL)
            return cfg_fail(e, "%s: unknown setting", where);
        rc = cfg_apply(cfg, ce, eq + 1, where, e);
        if (rc != OK)
            return rc;
    }
    return OK;
}

int config_load(struct config *cfg, const char *path, char *const *environ_vars, char *const *flags,
                size_t n_flags, char *errbuf, size_t errcap)
{
    struct cfg_err e = {errbuf, errcap};
    int rc;

    if (path != NULL) {
        struct ini_state st = {cfg, path, &e, NULL, 0, 0, OK};
        st.f = fopen(path, "r");
        if (st.f == NULL)
            return cfg_fail(&e, "%s: cannot open: %s", path, strerror(errno));
        int line = ini_parse_stream(cfg_ini_reader, &st, cfg_ini_handler, &st);
        fclose(st.f);
        if (st.rc != OK)
            return st.rc;
        if (st.too_long != 0)
            return cfg_fail(&e,
                            "%s:%d: line longer than %d characters (set long lists with the "
                            "environment or a flag)",
                            path, st.too_long, INI_MAX_LINE - 1);
        if (line != 0)
            return cfg_fail(&e, "%s:%d: syntax error (expected [section] or key = value)", path,
                            line);
    }
    rc = cfg_apply_env(cfg, environ_vars, &e);
    if (rc != OK)
        return rc;
    for (size_t i = 0; i < n_flags; i++) {
        const char *eq = strchr(flags[i], '=');
        char name[128];
        if (eq == NULL || (size_t)(eq - flags[i]) >= sizeof(name))
            return cfg_fail(&e, "flag --%s: expected --section.key=value", flags[i]);
        memcpy(name, flags[i], (size_t)(eq - flags[i]));
        name[eq - flags[i]] = '\0';
        rc = config_set(cfg, name, eq + 1, errbuf, errcap);
        if (rc != OK)
            return rc;
    }
    return cfg_validate(cfg, &e);
}

const struct variant_preset *config_variant(const struct config *cfg, const char *name, size_t len)
{
    for (size_t i = 0; i < cfg->n_variants; i++) {
        if (strlen(cfg->variant[i].name) == len && memcmp(cfg->variant[i].name, name, len) == 0)
            return &cfg->variant[i];
    }
    return NULL;
}

static const char *cfg_type_name(enum cfg_type t)
{
    switch (t) {
    case CFG_STR:
        return "string";
    case CFG_INT:
        return "integer";
    case CFG_SIZE:
        return "size";
    case CFG_DURATION:
        return "duration";
    case CFG_BOOL:
        return "boolean";
    }
    return "?";
}

static void cfg_env_name(const struct cfg_entry *ce, char *out, size_t cap)
{
    size_t n = (size_t)snprintf(out, cap, "TESSERA_%s_%s", ce->section, ce->key);
    for (size_t i = 0; i < n && i < cap; i++)
        out[i] = (char)toupper((unsigned char)out[i]);
}

/* cfg_print_wrapped writes text as "# " comment lines of at most 80 columns. */
static void cfg_print_wrapped(FILE *f, const char *text)
{
    const char *p = text;

    while (*p != '\0') {
        size_t len = strlen(p);
        size_t cut = len;
        if (len > 78) {
            cut = 78;
            while (cut > 0 && p[cut] != ' ')
                cut--;
            if (cut == 0)
                cut = 78;
        }
        fprintf(f, "# %.*s\n", (int)cut, p);
        p += cut;
        while (*p == ' ')
            p++;
    }
}

void config_print_defaults(FILE *f)
{
    const char *section = "";

    fprintf(f, "# Tessera configuration: every setting with its default.\n"
               "# Environment TESSERA_<SECTION>_<KEY> and flags --section.key=value override "
               "this file.\n");
    for (size_t i = 0; i < CONFIG_N; i++) {
        const struct cfg_entry *ce = &config_table[i];
        if (strcmp(section, ce->section) != 0) {
            section = ce->section;
            fprintf(f, "\n[%s]\n", section);
        }
        char comment[1024];
        size_t n =
            (size_t)snprintf(comment, sizeof(comment), "%s (%s", ce->help, cfg_type_name(ce->type));
        if (n < sizeof(comment) &&
            (ce->type == CFG_INT || ce->type == CFG_SIZE || ce->type == CFG_DURATION))
            n += (size_t)snprintf(comment + n, sizeof(comment) - n, ", %lld..%lld%s",
                                  (long long)ce->min, (long long)ce->max,
                                  ce->type == CFG_SIZE       ? " bytes"
                                  : ce->type == CFG_DURATION ? " ms"
                                                             : "");
        if (n < sizeof(comment))
            snprintf(comment + n, sizeof(comment) - n, ")");
        fputc('\n', f);
        cfg_print_wrapped(f, comment);
        fprintf(f, "%s = %s\n", ce->key, ce->def);
    }
}

void config_print_markdown(FILE *f)
{
    const char *section = "";
    char env[128];

    fprintf(f, "# Configuration reference\n\n"
               "Generated by `tessera config --markdown` from the settings table in "
               "`src/config/config.c`; do not edit by hand.\n\n"
               "Settings come from, in increasing priority: the defaults below, the INI file "
               "given with `--config FILE`, environment variables `TESSERA_<SECTION>_<KEY>`, "
               "and flags `--section.key=value`. A bad value stops the program at start with "
               "the key, where it came from (file and line, variable or flag) and why.\n\n"
               "Sizes take K, M or G (binary) suffixes; durations take ms, s, m or h (a bare "
               "number is seconds).\n");
    for (size_t i = 0; i < CONFIG_N; i++) {
        const struct cfg_entry *ce = &config_table[i];
        if (strcmp(section, ce->section) != 0) {
            section = ce->section;
            fprintf(f,
                    "\n## [%s]\n\n| key | type | default | bounds | environment | meaning |\n"
                    "| --- | --- | --- | --- | --- | --- |\n",
                    section);
        }
        cfg_env_name(ce, env, sizeof(env));
        fprintf(f, "| `%s` | %s | `%s` | ", ce->key, cfg_type_name(ce->type),
                ce->def[0] ? ce->def : "\"\"");
        if (ce->type == CFG_INT || ce->type == CFG_SIZE || ce->type == CFG_DURATION)
            fprintf(f, "%lld – %lld%s", (long long)ce->min, (long long)ce->max,
                    ce->type == CFG_SIZE       ? " bytes"
                    : ce->type == CFG_DURATION ? " ms"
                                               : "");
        fprintf(f, " | `%s` | %s |\n", env, ce->help);
    }
}

void config_print_effective(const struct config *cfg, FILE *f)
{
    const char *section = "";

    for (size_t i = 0; i < CONFIG_N; i++) {
        const struct cfg_entry *ce = &config_table[i];
        const void *field = (const char *)cfg + ce->offset;
        if (strcmp(section, ce->section) != 0) {
            section = ce->section;
            fprintf(f, "%s[%s]\n", i ? "\n" : "", section);
        }
        if (ce->type == CFG_STR)
            fprintf(f, "%s = %s\n", ce->key, *(char *const *)field);
        else if (ce->type == CFG_BOOL)
            fprintf(f, "%s = %s\n", ce->key, *(const bool *)field ? "true" : "false");
        else if (ce->type == CFG_DURATION)
            fprintf(f, "%s = %lldms\n", ce->key, (long long)*(const int64_t *)field);
        else
            fprintf(f, "%s = %lld\n", ce->key, (long long)*(const int64_t *)field);
    }
}
