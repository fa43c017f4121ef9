/*
 * cdn.h - purgers: evict a deleted image and its variants from the CDN.
 *
 * A purge is planned (pure: the HTTP requests it takes, testable without a
 * network) and then sent with libcurl. Every purge is idempotent, so the job
 * that runs it may run it again: a failure (transport error, 429, 5xx, or any
 * answer the purger does not accept) fails the whole job, which is retried.
 */
#ifndef CDN_CDN_H
#define CDN_CDN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CDN_MAX_CACHES   16 /* entries of cdn.purge_urls */
#define CDN_MAX_VARIANTS 16 /* variant presets whose URLs a purge names */
#define CDN_MAX_PATHS    (3 + CDN_MAX_VARIANTS)
#define CDN_PLAN_MAX     (CDN_MAX_CACHES * CDN_MAX_PATHS)
#define CDN_REQ_HEADERS  4
#define CDN_CF_FILES     30 /* URLs per Cloudflare purge_cache call */
#define CDN_MAX_KEYS     4  /* transform signing keys whose ?s= a rendition's URL purge names */

enum cdn_kind { CDN_NONE, CDN_VARNISH, CDN_CLOUDFLARE, CDN_FASTLY, CDN_HTTP };

/* One HTTP request of a purge; every pointer is owned by the request. */
struct cdn_req {
    const char *method; /* "PURGE" or "POST" (static) */
    char *url;
    char *headers[CDN_REQ_HEADERS]; /* "Name: value" */
    size_t n_headers;
    char *body; /* NULL: none */
    /* varnish: the xkey purge counts only when the edge says it ran it (X-Xkey-Purged) */
    bool xkey;
    size_t cache; /* index in cdn.purge_urls (varnish, http) */
};

struct cdn_plan {
    struct cdn_req req[CDN_PLAN_MAX];
    size_t n;
};

/* A variant preset as its URL shows it: "/i/{id}/{name}.{ext}". */
struct cdn_variant {
    const char *name; /* "thumb" */
    const char *ext;  /* "webp": the URL extension of the preset's format */
};

/*
 * The purger's settings (the [cdn] section and the variant presets). Read
 * only during cdn_new, which copies what it keeps. A NULL string is "".
 */
struct cdn_opts {
    const char *purger;     /* "", "varnish", "cloudflare", "fastly", "http"; else none */
    const char *purge_urls; /* comma-separated base URLs of caches (varnish, http) */
    int64_t purge_timeout_ms;
    const char *base_url; /* public base of image URLs (Cloudflare's file list) */
    const char *cloudflare_api;
    const char *cloudflare_zone;
    const char *cloudflare_token; /* "": $CLOUDFLARE_API_TOKEN */
    bool cloudflare_tags;
    const char *fastly_api;
    const char *fastly_service;
    const char *fastly_key; /* "": $FASTLY_API_KEY */
    size_t n_variants;      /* at most CDN_MAX_VARIANTS */
    struct cdn_variant variant[CDN_MAX_VARIANTS];
    char *const *sign_keys; /* transform keys (renditions' URLs carry ?s= of each); may be 0 */
    size_t n_sign_keys;
};

struct cdn;

/*
 * cdn_new builds the purger o->purger names (*out NULL for none, OK). The
 * token settings fall back to $CLOUDFLARE_API_TOKEN and $FASTLY_API_KEY.
 * E_INVALID (and *out NULL) when o->n_variants exceeds CDN_MAX_VARIANTS or a
 * variant lacks its name or extension. Registers the purge metrics. Not
 * thread-safe (start-up).
 */
int cdn_new(const struct cdn_opts *o, struct cdn **out);

/* cdn_free frees c; NULL is fine. */
void cdn_free(struct cdn *c);

/* cdn_kind_of is the kind of c (CDN_NONE for NULL). */
enum cdn_kind cdn_kind_of(const struct cdn *c);

/*
 * cdn_paths fills out[0..n) with the URL paths of an image: "/i/{id}",
 * "/i/{id}.{ext}" (when format is known), "/i/{id}/{variant}.{ext}" for each
 * preset of c (none for a NULL c). The caller frees each string. Returns n
 * (at most CDN_MAX_PATHS). Thread-safe.
 */
size_t cdn_paths(const struct cdn *c, const char *id, const char *format, char **out);

/*
 * cdn_plan_build plans the purge of payload into p: the first requests of
 * c's kind. Payload "id:format" or "id" (a deleted image: varnish one xkey
 * PURGE per cache, else its URLs or its tag), or "id/t/name" (one rendition,
 * evicted or of a deleted image: varnish a BAN of its path per cache, and of
 * its .auto sibling for AVIF and WebP; http and cloudflare its URLs with ?s=
 * of each signing key (the first CDN_MAX_KEYS); fastly nothing: its purge
 * by the key img-{id} covers a delete, and an evicted rendition at the edge
 * is still the right bytes). E_INVALID for a malformed payload. Release with
 * cdn_plan_release.
 */
int cdn_plan_build(const struct cdn *c, const char *payload, struct cdn_plan *p);

/* cdn_plan_fallback plans the URL PURGEs of payload to cache number cache (varnish without xkey).
 */
int cdn_plan_fallback(const struct cdn *c, const char *payload, size_t cache, struct cdn_plan *p);

/* cdn_plan_release frees what p's requests own and empties it. */
void cdn_plan_release(struct cdn_plan *p);

/*
 * cdn_purge purges payload's image everywhere c names: OK when every request
 * was accepted, else E_UNAVAILABLE with a sentence in err. Blocks (network,
 * cdn.purge_timeout per request). Thread-safe. Counted in /metrics.
 */
int cdn_purge(struct cdn *c, const char *payload, char *err, size_t cap);

#endif
