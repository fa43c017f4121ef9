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

#include "config/config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CDN_MAX_CACHES  16 /* entries of cdn.purge_urls */
#define CDN_MAX_PATHS   (3 + CONFIG_MAX_VARIANTS)
#define CDN_PLAN_MAX    (CDN_MAX_CACHES * CDN_MAX_PATHS)
#define CDN_REQ_HEADERS 4
#define CDN_CF_FILES    30 /* URLs per Cloudflare purge_cache call */

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

struct cdn;

/*
 * cdn_new builds the purger cfg->cdn names (*out NULL for none); base_url is
 * the public base of image URLs (what the Cloudflare purger names in its file
 * list). The token settings fall back to $CLOUDFLARE_API_TOKEN and
 * $FASTLY_API_KEY. Registers the purge metrics. Not thread-safe (start-up).
 */
int cdn_new(const struct config *cfg, const char *base_url, struct cdn **out);

/* cdn_free frees c; NULL is fine. */
void cdn_free(struct cdn *c);

/* cdn_kind_of is the kind of c (CDN_NONE for NULL). */
enum cdn_kind cdn_kind_of(const struct cdn *c);

/*
 * cdn_paths fills out[0..n) with the URL paths of an image: "/i/{id}",
 * "/i/{id}.{ext}" (when format is known), "/i/{id}/{variant}.{ext}" for each
 * preset. The caller frees each string. Returns n (at most CDN_MAX_PATHS).
 */
size_t cdn_paths(const struct config *cfg, const char *id, const char *format, char **out);

/*
 * cdn_plan_build plans the purge of payload ("id:format" or "id", the purge
 * job's payload) into p: the first requests of c's kind (varnish: one xkey
 * PURGE per cache). E_INVALID for a malformed payload. Release with
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
