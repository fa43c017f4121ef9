/*
 * config.h - the whole configuration, driven by one declarative table.
 *
 * The table (config.c) gives each setting its key, type, default, bounds and
 * help; it drives the INI file, TESSERA_<SECTION>_<KEY> environment overrides,
 * --section.key flags, `tessera config --defaults` and docs/configuration.md.
 * Parse, validate, freeze: after config_load succeeds the struct is read-only.
 */
#ifndef CONFIG_CONFIG_H
#define CONFIG_CONFIG_H

#include "core/crypto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_MAX_VARIANTS 16
#define CONFIG_MAX_KEYS     32
#define CONFIG_MAX_SRCSET   16

struct variant_preset {
    char name[32];
    uint32_t width;
    uint32_t height;
    char format[8]; /* "webp", "jpeg", "png", "avif" */
    int quality;
};

struct config {
    struct {
        char *listen;        /* host:port */
        char *public_url;    /* base of URLs in answers; "" = http://listen */
        int64_t thread_pool; /* 0 = one thread per connection */
        int64_t workers;     /* threads for blocking handlers in the epoll model */
        int64_t max_connections;
        int64_t idle_timeout_ms;
        int64_t max_header_bytes;
        int64_t max_url_bytes;
        int64_t shutdown_timeout_ms;
        char *trusted_proxies; /* addresses whose X-Forwarded-For is believed; "" = none */
    } server;
    struct {
        int64_t max_upload_bytes;
        int64_t max_pixels;
        int64_t max_frames;
        int64_t max_animation_pixels;
        int64_t max_list;
        int64_t upload_rate;  /* uploads a minute per API key or client address; 0 = no limit */
        int64_t upload_burst; /* uploads allowed at once before the rate applies */
    } limits;
    struct {
        char *data_dir;
        char *blobs;  /* blob store URL; "" = file://<data_dir>/blobs */
        char *db;     /* SQLite path; "" = <data_dir>/meta.db */
        char *shards; /* the ring: "ID=URL[;zone=Z][;weight=W], ..." or "@FILE"; "" = blobs */
        char *s3_region;
        char *s3_credentials_file; /* "": AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY */
        char *s3_addressing;       /* "path" or "virtual" */
        int64_t s3_multipart_bytes;
        int64_t replicas;
        int64_t write_quorum;
        int64_t connect_timeout_ms;
        int64_t read_timeout_ms;
        int64_t down_backoff_ms;
        int64_t min_free;
        int64_t repair_grace_ms;
        int64_t ring_poll_ms;
        int64_t pin_grace_ms;
        int64_t cache_bytes;
        int64_t scrub_bytes_per_s;  /* tessera storage: background re-read rate; 0 = off */
        int64_t scrub_interval_ms;  /* a scrub pass starts at most this often */
        char *secret_file;          /* signs service <-> storage node requests; "" = unsigned */
        char *secret_file_previous; /* also accepted by nodes, for rotation */
    } storage;
    struct {
        char *url;      /* "": SQLite (storage.db); else the PostgreSQL primary URL */
        char *replicas; /* comma-separated URLs of streaming replicas */
        int64_t max_replica_lag_ms;
        int64_t statement_timeout_ms;
        int64_t connect_timeout_ms;
        int64_t pool;
    } db;
    struct {
        int64_t workers; /* job threads in serve (and worker) */
        int64_t lease_ms;
        int64_t max_attempts;
        int64_t backoff_ms;
        int64_t poll_ms;
        int64_t dead_retention_ms;
        char *listen; /* tessera worker's operational listener; "" = none */
    } jobs;
    struct {
        char *upload_keys;
        char *admin_keys;
        char *admin_keys_file;  /* more admin keys, one a line */
        bool list_requires_key; /* listings need an upload or admin key */
    } auth;
    struct {
        char *prometheus_url; /* the status page's source of cluster-wide figures; "" = none */
    } admin;
    struct {
        char *base_url;
        char *purger;     /* "", "varnish", "cloudflare", "fastly", "http" */
        char *purge_urls; /* comma-separated base URLs of caches (varnish, http) */
        int64_t purge_timeout_ms;
        char *cloudflare_api;
        char *cloudflare_zone;
        char *cloudflare_token; /* "": $CLOUDFLARE_API_TOKEN */
        bool cloudflare_tags;
        char *fastly_api;
        char *fastly_service;
        char *fastly_key; /* "": $FASTLY_API_KEY */
    } cdn;
    struct {
        char *redis;   /* Redis Cluster seed nodes "host:port,..."; "" = no Redis */
        char *channel; /* pub/sub channel of invalidations */
        int64_t ttl_ms;
        int64_t negative_ttl_ms;
        int64_t tombstone_ttl_ms;
        int64_t ack_timeout_ms;
        int64_t lru_entries; /* 0 = no in-process cache */
        int64_t lru_ttl_ms;
        int64_t connect_timeout_ms;
        int64_t timeout_ms;
        int64_t down_backoff_ms;
        int64_t pool;
        char *redis_user;          /* Redis ACL user; "" = default */
        char *redis_password_file; /* "" = no AUTH */
        char *secret_file;         /* HMAC key of cached records and messages; "" = none */
    } cache;
    struct {
        char *token_file; /* bearer token /metrics needs; "" = open */
    } metrics;
    struct {
        int64_t concurrency;
        int64_t max_parallel;
        int64_t cache_bytes;
        char *variants;
    } image;
    struct {
        int64_t max_dimension; /* w and h of /i/{id}/t/ before dpr */
        char *keys;            /* comma-separated signing keys */
        char *keys_file;       /* one signing key a line */
        bool allow_unsigned;   /* "unsigned": serve transforms without a signature */
        int64_t memory_budget; /* bytes of predicted decode memory at once; 0 = from RAM */
        int64_t queue_timeout_ms;
        char *srcset_widths;       /* comma-separated widths of the srcset in image answers */
        int64_t cache_bytes;       /* disk budget of renditions; 0 = unlimited */
        int64_t touch_interval_ms; /* a rendition's use is recorded at most this often */
        int64_t evict_interval_ms; /* how often the disk budget is checked */
        int64_t lease_timeout_ms;  /* others wait this long for a rendition's maker; 0 = no lease */
        bool auto_standin;         /* auto: WebP while the AVIF is made in the background */
        int64_t standin_max_age_ms;
    } transforms;
    struct {
        char *level;
        bool access;
    } log;

    /* derived at validation, never set directly */
    size_t n_variants;
    struct variant_preset variant[CONFIG_MAX_VARIANTS];
    size_t n_upload_keys;
    char *upload_key[CONFIG_MAX_KEYS];
    size_t n_admin_keys;
    char *admin_key[CONFIG_MAX_KEYS];
    /* the contents of the secret files (len 0: not configured); never printed */
    struct secret storage_secret;
    struct secret storage_secret_previous;
    struct secret cache_secret;
    struct secret redis_password;
    struct secret metrics_token;
    size_t n_transform_keys; /* transforms.keys, then the lines of transforms.keys_file */
    char *transform_key[CONFIG_MAX_KEYS];
    size_t n_srcset_widths; /* transforms.srcset_widths, ascending */
    uint32_t srcset_width[CONFIG_MAX_SRCSET];
};

/* config_init fills cfg with every default. */
void config_init(struct config *cfg);

/* config_release frees what cfg owns. */
void config_release(struct config *cfg);

/*
 * config_load builds the configuration from defaults, then the INI file at
 * path (NULL: none), then the environment (TESSERA_<SECTION>_<KEY>), then
 * the flags (each "section.key=value"), and validates the result. On error
 * returns E_INVALID with a sentence naming the key, where it came from (file
 * and line, environment variable or flag) and why, in errbuf.
 */
int config_load(struct config *cfg, const char *path, char *const *environ_vars, char *const *flags,
                size_t n_flags, char *errbuf, size_t errcap);

/*
 * config_check_fn checks settings whose syntax belongs to another module
 * (the ring's shard list, say): OK, or E_INVALID with a sentence naming the
 * key in why (capacity cap).
 */
typedef int config_check_fn(const struct config *cfg, char *why, size_t cap);

#define CONFIG_MAX_CHECKS 8
#define CONFIG_KEY_MIN    24 /* characters of an API key, at least */
#define CONFIG_SECRET_MIN 32 /* bytes of a signing secret (storage, cache), at least */

/*
 * config_add_check adds fn to the checks every later config_load runs after
 * its own validation; so config.c depends on no module. At start-up only
 * (not thread-safe); a check added twice runs once.
 */
void config_add_check(config_check_fn *fn);

/* config_set sets one "section.key" from text, as a flag would; for tests and tools. */
int config_set(struct config *cfg, const char *name, const char *value, char *errbuf,
               size_t errcap);

/* config_print_defaults writes a complete commented INI file of every default to f. */
void config_print_defaults(FILE *f);

/* config_print_markdown writes the reference page (docs/configuration.md) to f. */
void config_print_markdown(FILE *f);

/* config_print_effective writes the effective values of cfg as INI to f. */
void config_print_effective(const struct config *cfg, FILE *f);

/* config_variant finds a preset by name; NULL if there is none. */
const struct variant_preset *config_variant(const struct config *cfg, const char *name, size_t len);

#endif
