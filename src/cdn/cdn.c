/*
 * cdn.c - the purgers of cdn.h: plan the requests, send them with libcurl.
 *
 * Invariant: a purge succeeds only when every cache (or the CDN's API)
 * accepted every request of it; anything else fails the purge job, which the
 * job runner retries with back-off, so a cache that was down while an image
 * was deleted is purged once it is back.
 */
#include "cdn/cdn.h"

#include "core/err.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/strbuf.h"
#include "core/xalloc.h"
#include "image/image.h"
#include "image/ops.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define CDN_ID_MAX   64
#define CDN_BODY_CAP 4096 /* of an answer we look at (Cloudflare's JSON) */

/* Everything of cdn_opts a purge needs, copied: the options need not outlive the purger. */
struct cdn {
    enum cdn_kind kind;
    char base_url[512];
    char *token; /* Cloudflare token or Fastly key */
    char *caches[CDN_MAX_CACHES];
    size_t n_caches;
    int64_t timeout_ms;
    char *cloudflare_api;
    char *cloudflare_zone;
    bool cloudflare_tags;
    char *fastly_api;
    char *fastly_service;
    char *variants[CDN_MAX_VARIANTS]; /* "{name}.{ext}" */
    size_t n_variants;
    char *keys[CDN_MAX_KEYS]; /* transform signing keys: a rendition URL's ?s= */
    size_t n_keys;
};

/* --- metrics --- */

static struct metric m_purges = {"tessera_cdn_purges_total", "Image purges the CDN accepted.",
                                 "counter", 0};
static struct metric m_failures = {"tessera_cdn_purge_failures_total",
                                   "Image purges that failed (the purge job is retried).",
                                   "counter", 0};
static struct metric m_requests = {"tessera_cdn_purge_requests_total",
                                   "HTTP requests sent by the purgers.", "counter", 0};
static struct metric m_xkey_fallbacks = {"tessera_cdn_purge_url_fallbacks_total",
                                         "Varnish purges that fell back from xkey to URL PURGEs.",
                                         "counter", 0};

static const int64_t cdn_buckets_ms[] = {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000};
#define CDN_NBUCKETS (sizeof(cdn_buckets_ms) / sizeof(cdn_buckets_ms[0]))
static _Atomic int64_t h_bucket[CDN_NBUCKETS];
static _Atomic int64_t h_count;
static _Atomic int64_t h_sum_us;

static void cdn_histogram_render(struct strbuf *sb, void *arg)
{
    (void)arg;
    strbuf_addf(sb, "# HELP tessera_cdn_purge_seconds Time an image purge took (all its "
                    "requests), successful or not.\n# TYPE tessera_cdn_purge_seconds histogram\n");
    for (size_t i = 0; i < CDN_NBUCKETS; i++)
        strbuf_addf(sb, "tessera_cdn_purge_seconds_bucket{le=\"%g\"} %lld\n",
                    (double)cdn_buckets_ms[i] / 1000.0, (long long)atomic_load(&h_bucket[i]));
    strbuf_addf(sb, "tessera_cdn_purge_seconds_bucket{le=\"+Inf\"} %lld\n",
                (long long)atomic_load(&h_count));
    strbuf_addf(sb, "tessera_cdn_purge_seconds_sum %.6f\n", (double)atomic_load(&h_sum_us) / 1e6);
    strbuf_addf(sb, "tessera_cdn_purge_seconds_count %lld\n", (long long)atomic_load(&h_count));
}

static void cdn_observe(int64_t us)
{
    for (size_t i = 0; i < CDN_NBUCKETS; i++)
        if (us <= cdn_buckets_ms[i] * 1000)
            atomic_fetch_add(&h_bucket[i], 1);
    atomic_fetch_add(&h_count, 1);
    atomic_fetch_add(&h_sum_us, us);
}

static pthread_once_t cdn_once = PTHREAD_ONCE_INIT;

static void cdn_global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    metric_register(&m_purges);
    metric_register(&m_failures);
    metric_register(&m_requests);
    metric_register(&m_xkey_fallbacks);
    metrics_add_renderer(cdn_histogram_render, NULL);
}

/* --- set-up --- */

static enum cdn_kind cdn_kind_parse(const char *s)
{
    if (strcmp(s, "varnish") == 0)
        return CDN_VARNISH;
    if (strcmp(s, "cloudflare") == 0)
        return CDN_CLOUDFLARE;
    if (strcmp(s, "fastly") == 0)
        return CDN_FASTLY;
    if (strcmp(s, "http") == 0)
        return CDN_HTTP;
    return CDN_NONE;
}

/* trim_slashes drops trailing '/' so paths can be appended. */
static char *trim_slashes(char *s)
{
    size_t n = strlen(s);

    while (n > 0 && s[n - 1] == '/')
        s[--n] = '\0';
    return s;
}

/* opt: a string of cdn_opts, NULL read as "". */
static const char *opt(const char *s)
{
    return s != NULL ? s : "";
}

int cdn_new(const struct cdn_opts *o, struct cdn **out)
{
    const char *purger = opt(o->purger);
    enum cdn_kind kind = cdn_kind_parse(purger);
    struct cdn *c;
    const char *tok = NULL;

    *out = NULL;
    if (o->n_variants > CDN_MAX_VARIANTS) {
        log_error("cdn", "%zu variant presets: at most %d can be purged", o->n_variants,
                  CDN_MAX_VARIANTS);
        return E_INVALID;
    }
    for (size_t i = 0; i < o->n_variants; i++)
        if (o->variant[i].name == NULL || o->variant[i].name[0] == '\0' ||
            o->variant[i].ext == NULL || o->variant[i].ext[0] == '\0') {
            log_error("cdn", "variant preset %zu has no name or no extension", i);
            return E_INVALID;
        }
    if (kind == CDN_NONE)
        return OK;
    pthread_once(&cdn_once, cdn_global_init);
    c = xcalloc(1, sizeof(*c));
    c->kind = kind;
    snprintf(c->base_url, sizeof(c->base_url), "%s", opt(o->base_url));
    trim_slashes(c->base_url);
    c->timeout_ms = o->purge_timeout_ms;
    c->cloudflare_api = xstrdup(opt(o->cloudflare_api));
    c->cloudflare_zone = xstrdup(opt(o->cloudflare_zone));
    c->cloudflare_tags = o->cloudflare_tags;
    c->fastly_api = xstrdup(opt(o->fastly_api));
    c->fastly_service = xstrdup(opt(o->fastly_service));
    for (size_t i = 0; i < o->n_variants; i++)
        c->variants[c->n_variants++] = xasprintf("%s.%s", o->variant[i].name, o->variant[i].ext);
    for (size_t i = 0; i < o->n_sign_keys && c->n_keys < CDN_MAX_KEYS; i++)
        c->keys[c->n_keys++] = xstrdup(o->sign_keys[i]);
    if (kind == CDN_CLOUDFLARE)
        tok = opt(o->cloudflare_token)[0] ? o->cloudflare_token : getenv("CLOUDFLARE_API_TOKEN");
    if (kind == CDN_FASTLY)
        tok = opt(o->fastly_key)[0] ? o->fastly_key : getenv("FASTLY_API_KEY");
    c->token = xstrdup(tok != NULL ? tok : "");
    if ((kind == CDN_CLOUDFLARE || kind == CDN_FASTLY) && c->token[0] == '\0')
        log_warn("cdn", "the %s purger has no API token: its purges will be refused", purger);
    /* the caches: "http://a:6081, http://b:6081" */
    const char *p = opt(o->purge_urls);
    while (*p != '\0' && c->n_caches < CDN_MAX_CACHES) {
        size_t len = strcspn(p, ",");
        size_t b = 0;
        while (b < len && (p[b] == ' ' || p[b] == '\t'))
            b++;
        size_t e = len;
        while (e > b && (p[e - 1] == ' ' || p[e - 1] == '\t'))
            e--;
        if (e > b)
            c->caches[c->n_caches++] = trim_slashes(xstrndup(p + b, e - b));
        p += len;
        if (*p == ',')
            p++;
    }
    log_info("cdn", "purger %s (%zu cache(s))", purger, c->n_caches);
    *out = c;
    return OK;
}

void cdn_free(struct cdn *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n_caches; i++)
        free(c->caches[i]);
    for (size_t i = 0; i < c->n_variants; i++)
        free(c->variants[i]);
    for (size_t i = 0; i < c->n_keys; i++)
        free(c->keys[i]);
    free(c->token);
    free(c->cloudflare_api);
    free(c->cloudflare_zone);
    free(c->fastly_api);
    free(c->fastly_service);
    free(c);
}

enum cdn_kind cdn_kind_of(const struct cdn *c)
{
    return c == NULL ? CDN_NONE : c->kind;
}

/* --- planning --- */

/* payload_parse splits "id:format" (format may be absent); E_INVALID when malformed. */
static int payload_parse(const char *payload, char id[CDN_ID_MAX], char format[16])
{
    size_t n = strcspn(payload, ":");

    if (n == 0 || n >= CDN_ID_MAX)
        return E_INVALID;
    for (size_t i = 0; i < n; i++) {
        char ch = payload[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
        if (!ok)
            return E_INVALID;
    }
    memcpy(id, payload, n);
    id[n] = '\0';
    format[0] = '\0';
    if (payload[n] == ':') {
        const char *f = payload + n + 1;
        size_t fl = strlen(f);
        if (fl >= 16)
            return E_INVALID;
        for (size_t i = 0; i < fl; i++)
            if (f[i] < 'a' || f[i] > 'z')
                return E_INVALID;
        memcpy(format, f, fl + 1);
    }
    return OK;
}

size_t cdn_paths(const struct cdn *c, const char *id, const char *format, char **out)
{
    size_t n = 0;

    out[n++] = xasprintf("/i/%s", id);
    if (format != NULL && format[0] != '\0') {
        enum img_format f = img_format_from_name(str_from(format));
        if (f != IMG_UNKNOWN)
            out[n++] = xasprintf("/i/%s.%s", id, img_format_ext(f));
    }
    for (size_t i = 0; c != NULL && i < c->n_variants && n < CDN_MAX_PATHS; i++)
        out[n++] = xasprintf("/i/%s/%s", id, c->variants[i]);
    return n;
}

static struct cdn_req *plan_add(struct cdn_plan *p, const char *method, char *url)
{
    struct cdn_req *r;

    if (p->n == CDN_PLAN_MAX) {
        free(url);
        return NULL;
    }
    r = &p->req[p->n++];
    memset(r, 0, sizeof(*r));
    r->method = method;
    r->url = url;
    return r;
}

static void req_header(struct cdn_req *r, char *h)
{
    if (r->n_headers < CDN_REQ_HEADERS)
        r->headers[r->n_headers++] = h;
    else
        free(h);
}

/* plan_cloudflare: purge_cache calls with the image's URLs (30 a call), then its tag if asked. */
/* plan_purge_paths adds a PURGE of every path at every cache (the "http" purger). */
static void plan_purge_paths(const struct cdn *c, char **paths, size_t np, struct cdn_plan *p)
{
    for (size_t i = 0; i < c->n_caches; i++)
        for (size_t k = 0; k < np; k++) {
            struct cdn_req *r = plan_add(p, "PURGE", xasprintf("%s%s", c->caches[i], paths[k]));
            if (r != NULL)
                r->cache = i;
        }
}

static void plan_cloudflare(const struct cdn *c, const char *id, char **paths, size_t np, bool tags,
                            struct cdn_plan *p)
{
    char base[600];

    snprintf(base, sizeof(base), "%s", c->cloudflare_api);
    trim_slashes(base);
    for (size_t i = 0; i < np; i += CDN_CF_FILES) {
        json_t *files = json_array();
        for (size_t k = i; k < np && k < i + CDN_CF_FILES; k++) {
            char *u = xasprintf("%s%s", c->base_url, paths[k]);
            json_array_append_new(files, json_string(u));
            free(u);
        }
        struct cdn_req *r =
            plan_add(p, "POST", xasprintf("%s/zones/%s/purge_cache", base, c->cloudflare_zone));
        if (r == NULL) {
            json_decref(files);
            return;
        }
        req_header(r, xasprintf("Authorization: Bearer %s", c->token));
        req_header(r, xstrdup("Content-Type: application/json"));
        json_t *j = json_pack("{s:o}", "files", files); /* takes files */
        r->body = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(j);
    }
    if (tags) {
        struct cdn_req *r =
            plan_add(p, "POST", xasprintf("%s/zones/%s/purge_cache", base, c->cloudflare_zone));
        if (r == NULL)
            return;
        req_header(r, xasprintf("Authorization: Bearer %s", c->token));
        req_header(r, xstrdup("Content-Type: application/json"));
        char tag[CDN_ID_MAX + 8];
        snprintf(tag, sizeof(tag), "img-%s", id);
        json_t *j = json_pack("{s:[s]}", "tags", tag);
        r->body = json_dumps(j, JSON_COMPACT);
        json_decref(j);
    }
}

/* rendition_parse splits "id/t/name"; E_INVALID when malformed (name: [a-z0-9:,.]). */
static int rendition_parse(const char *payload, char id[CDN_ID_MAX], char name[OPS_CANON_MAX])
{
    const char *sep = strstr(payload, "/t/");
    char head[CDN_ID_MAX], fmt[16];
    size_t n = sep != NULL ? (size_t)(sep - payload) : 0;
    size_t nl = sep != NULL ? strlen(sep + 3) : 0;

    if (n == 0 || n >= CDN_ID_MAX || nl == 0 || nl >= OPS_CANON_MAX || strchr(sep + 3, '.') == NULL)
        return E_INVALID;
    memcpy(head, payload, n);
    head[n] = '\0';
    if (payload_parse(head, id, fmt) != OK || fmt[0] != '\0')
        return E_INVALID;
    for (size_t i = 0; i < nl; i++) {
        char ch = sep[3 + i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || strchr(":,.", ch)))
            return E_INVALID;
    }
    memcpy(name, sep + 3, nl + 1);
    return OK;
}

/*
 * rendition_names fills out with name and, for an AVIF or WebP rendition,
 * its .auto sibling (an auto URL answers with it); returns how many.
 */
static size_t rendition_names(const char *name, char out[2][OPS_CANON_MAX])
{
    const char *dot = strrchr(name, '.');
    size_t n = 0;

    snprintf(out[n++], OPS_CANON_MAX, "%s", name);
    if (strcmp(dot, ".avif") == 0 || strcmp(dot, ".webp") == 0)
        snprintf(out[n++], OPS_CANON_MAX, "%.*s.auto", (int)(dot - name), name);
    return n;
}

/* rendition_urls fills out with the paths of a rendition as served: each name with ?s= per key. */
static size_t rendition_urls(const struct cdn *c, const char *id, const char *name, char **out)
{
    char names[2][OPS_CANON_MAX];
    size_t nn = rendition_names(name, names), n = 0;

    for (size_t i = 0; i < nn; i++) {
        for (size_t k = 0; k < c->n_keys; k++) {
            char sig[OPS_SIG_LEN + 1];
            img_ops_sign(c->keys[k], strlen(c->keys[k]), id, names[i], sig);
            out[n++] = xasprintf("/i/%s/t/%s?s=%s", id, names[i], sig);
        }
        if (c->n_keys == 0) /* transforms.unsigned */
            out[n++] = xasprintf("/i/%s/t/%s", id, names[i]);
    }
    return n;
}

static int plan_rendition(const struct cdn *c, const char *payload, struct cdn_plan *p)
{
    char id[CDN_ID_MAX], name[OPS_CANON_MAX], names[2][OPS_CANON_MAX];
    char *paths[2 * CDN_MAX_KEYS];
    size_t np = 0, nn;
    int rc = rendition_parse(payload, id, name);

    if (rc != OK)
        return rc;
    switch (c->kind) {
    case CDN_VARNISH:
        /* a BAN regex on the path matches every ?s= and every Accept class of it */
        nn = rendition_names(name, names);
        for (size_t i = 0; i < c->n_caches; i++)
            for (size_t k = 0; k < nn; k++) {
                struct cdn_req *r =
                    plan_add(p, "BAN", xasprintf("%s/i/%s/t/%s", c->caches[i], id, names[k]));
                if (r != NULL)
                    r->cache = i;
            }
        break;
    case CDN_HTTP:
        np = rendition_urls(c, id, name, paths);
        plan_purge_paths(c, paths, np, p);
        break;
    case CDN_CLOUDFLARE:
        /* by URL only: the tag img-{id} would purge the whole image */
        np = rendition_urls(c, id, name, paths);
        plan_cloudflare(c, id, paths, np, false, p);
        break;
    case CDN_FASTLY:
    case CDN_NONE:
        break;
    }
    for (size_t k = 0; k < np; k++)
        free(paths[k]);
    return OK;
}

int cdn_plan_build(const struct cdn *c, const char *payload, struct cdn_plan *p)
{
    char id[CDN_ID_MAX], format[16];
    char *paths[CDN_MAX_PATHS];
    size_t np = 0;
    int rc;

    p->n = 0;
    if (c != NULL && strstr(payload, "/t/") != NULL)
        return plan_rendition(c, payload, p);
    rc = payload_parse(payload, id, format);
    if (rc != OK || c == NULL)
        return rc;
    switch (c->kind) {
    case CDN_VARNISH:
        for (size_t i = 0; i < c->n_caches; i++) {
            struct cdn_req *r = plan_add(p, "PURGE", xasprintf("%s/", c->caches[i]));
            if (r == NULL)
                break;
            req_header(r, xasprintf("xkey: img-%s", id));
            r->xkey = true;
            r->cache = i;
        }
        break;
    case CDN_HTTP:
        np = cdn_paths(c, id, format, paths);
        plan_purge_paths(c, paths, np, p);
        break;
    case CDN_CLOUDFLARE:
        np = cdn_paths(c, id, format, paths);
        plan_cloudflare(c, id, paths, np, c->cloudflare_tags, p);
        break;
    case CDN_FASTLY: {
        char base[600];
        snprintf(base, sizeof(base), "%s", c->fastly_api);
        trim_slashes(base);
        struct cdn_req *r = plan_add(
            p, "POST", xasprintf("%s/service/%s/purge/img-%s", base, c->fastly_service, id));
        if (r != NULL) {
            req_header(r, xasprintf("Fastly-Key: %s", c->token));
            req_header(r, xstrdup("Accept: application/json"));
        }
        break;
    }
    case CDN_NONE:
        break;
    }
    for (size_t k = 0; k < np; k++)
        free(paths[k]);
    return OK;
}

int cdn_plan_fallback(const struct cdn *c, const char *payload, size_t cache, struct cdn_plan *p)
{
    char id[CDN_ID_MAX], format[16];
    char *paths[CDN_MAX_PATHS];
    int rc = payload_parse(payload, id, format);

    p->n = 0;
    if (rc != OK || c == NULL || cache >= c->n_caches)
        return rc != OK ? rc : E_INVALID;
    size_t np = cdn_paths(c, id, format, paths);
    for (size_t k = 0; k < np; k++) {
        struct cdn_req *r = plan_add(p, "PURGE", xasprintf("%s%s", c->caches[cache], paths[k]));
        if (r != NULL)
            r->cache = cache;
        free(paths[k]);
    }
    return OK;
}

void cdn_plan_release(struct cdn_plan *p)
{
    for (size_t i = 0; i < p->n; i++) {
        struct cdn_req *r = &p->req[i];
        free(r->url);
        for (size_t h = 0; h < r->n_headers; h++)
            free(r->headers[h]);
        free(r->body);
    }
    p->n = 0;
}

/* --- sending --- */

struct cdn_answer {
    long status;
    bool xkey_ack; /* X-Xkey-Purged seen */
    struct strbuf body;
};

static size_t on_header(char *buf, size_t size, size_t n, void *arg)
{
    struct cdn_answer *a = arg;
    size_t len = size * n;
    static const char name[] = "x-xkey-purged:";

    if (len >= sizeof(name) - 1 && strncasecmp(buf, name, sizeof(name) - 1) == 0)
        a->xkey_ack = true;
    return len;
}

static size_t on_body(char *buf, size_t size, size_t n, void *arg)
{
    struct cdn_answer *a = arg;

    (void)strbuf_add(&a->body, buf, size * n); /* past the cap: the rest is not looked at */
    return size * n;
}

/* cdn_send sends r on h and fills *a: OK when a transfer happened (any status). */
static int cdn_send(const struct cdn *c, CURL *h, const struct cdn_req *r, struct cdn_answer *a,
                    char *err, size_t cap)
{
    struct curl_slist *hl = NULL;
    CURLcode cc;

    a->status = 0;
    a->xkey_ack = false;
    a->body.len = 0;
    if (a->body.buf != NULL)
        a->body.buf[0] = '\0';
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_URL, r->url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, r->method);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)c->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)c->timeout_ms);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, a);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "tessera-purger");
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    for (size_t i = 0; i < r->n_headers; i++)
        hl = curl_slist_append(hl, r->headers[i]);
    hl = curl_slist_append(hl, "Expect:");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    if (r->body != NULL) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, r->body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(r->body));
    } else if (strcmp(r->method, "POST") == 0) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
    }
    metric_add(&m_requests, 1);
    cc = curl_easy_perform(h);
    curl_slist_free_all(hl);
    if (cc != CURLE_OK) {
        snprintf(err, cap, "%s %s: %s", r->method, r->url, curl_easy_strerror(cc));
        return E_UNAVAILABLE;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &a->status);
    return OK;
}

/* cdn_accepted: whether an answer to r counts as done for c's kind. */
static bool cdn_accepted(const struct cdn *c, const struct cdn_answer *a)
{
    if (c->kind == CDN_HTTP || c->kind == CDN_VARNISH)
        return (a->status >= 200 && a->status < 300) || a->status == 404; /* 404: not cached */
    if (a->status < 200 || a->status >= 300)
        return false;
    if (c->kind == CDN_CLOUDFLARE) {
        /* Cloudflare answers {"success":true,...}; a 200 without it is not a purge */
        json_t *j = json_loads(a->body.buf != NULL ? a->body.buf : "", 0, NULL);
        bool ok = j != NULL && json_is_true(json_object_get(j, "success"));
        json_decref(j);
        return ok;
    }
    return true;
}

/* cdn_run sends every request of p; varnish xkey purges not acknowledged fall back to URLs. */
static int cdn_run(struct cdn *c, CURL *h, const char *payload, const struct cdn_plan *p,
                   struct cdn_answer *a, char *err, size_t cap)
{
    int rc = OK;

    for (size_t i = 0; i < p->n && rc == OK; i++) {
        const struct cdn_req *r = &p->req[i];
        rc = cdn_send(c, h, r, a, err, cap);
        if (rc != OK)
            break;
        if (r->xkey && a->status >= 200 && a->status < 300 && a->xkey_ack)
            continue;
        if (r->xkey && (a->status < 500 && a->status != 429)) {
            /* an edge without xkey: purge every URL of the image instead */
            struct cdn_plan *fb = xcalloc(1, sizeof(*fb));
            metric_add(&m_xkey_fallbacks, 1);
            rc = cdn_plan_fallback(c, payload, r->cache, fb);
            if (rc == OK)
                rc = cdn_run(c, h, payload, fb, a, err, cap);
            cdn_plan_release(fb);
            free(fb);
            continue;
        }
        if (!cdn_accepted(c, a) || r->xkey) {
            snprintf(err, cap, "%s %s: answered %ld%s%.120s", r->method, r->url, a->status,
                     a->body.len ? ": " : "", a->body.len ? a->body.buf : "");
            rc = E_UNAVAILABLE;
        }
    }
    return rc;
}

int cdn_purge(struct cdn *c, const char *payload, char *err, size_t cap)
{
    struct cdn_plan *p = NULL;
    struct cdn_answer a = {0};
    struct timespec t0, t1;
    CURL *h = NULL;
    int rc;

    if (c == NULL)
        return OK;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    p = xcalloc(1, sizeof(*p));
    rc = cdn_plan_build(c, payload, p);
    if (rc != OK) {
        snprintf(err, cap, "purge: malformed payload \"%.64s\"", payload);
        goto out;
    }
    h = curl_easy_init();
    if (h == NULL) {
        fprintf(stderr, "fatal: curl_easy_init failed\n");
        abort();
    }
    strbuf_init(&a.body, CDN_BODY_CAP);
    rc = cdn_run(c, h, payload, p, &a, err, cap);
out:
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (rc != E_INVALID) {
        cdn_observe((int64_t)(t1.tv_sec - t0.tv_sec) * 1000000 + (t1.tv_nsec - t0.tv_nsec) / 1000);
        metric_add(rc == OK ? &m_purges : &m_failures, 1);
    }
    if (h != NULL)
        curl_easy_cleanup(h);
    strbuf_release(&a.body);
    if (p != NULL)
        cdn_plan_release(p);
    free(p);
    return rc;
}
