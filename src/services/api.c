/*
 * api.c - the handlers of API.md on the metadata and blob store interfaces.
 *
 * Invariant (nothing lost): an upload's blob is durably stored before its row
 * is committed, under a pin on its key (meta_blob_pin) taken before the bytes
 * are written; a delete drops rows first and queues a release job, which
 * removes the bytes only under the blob row's lock while no reference and no
 * pin is left (meta_blob_release), in whichever process runs it.
 */
#include "services/api.h"

#include "cache/cache.h"
#include "cdn/cdn.h"
#include "core/codec.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/ident.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/strbuf.h"
#include "core/xalloc.h"
#include "http/http.h"
#include "http/range.h"
#include "http/ratelimit.h"
#include "image/image.h"
#include "meta/meta.h"
#include "services/cursor.h"
#include "store/blob.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define API_CSP "default-src 'none'; style-src 'unsafe-inline'; sandbox"

static metrics_renderer_fn api_metrics;

void api_init(struct api *a, const struct config *cfg, struct meta_store *meta,
              struct blob_store *blobs)
{
    const char *base = cfg->cdn.base_url[0]        ? cfg->cdn.base_url
                       : cfg->server.public_url[0] ? cfg->server.public_url
                                                   : NULL;

    memset(a, 0, sizeof(*a));
    a->cfg = cfg;
    a->meta = meta;
    a->blobs = blobs;
    if (base != NULL) {
        snprintf(a->base_url, sizeof(a->base_url), "%s", base);
    } else {
        const char *listen = cfg->server.listen;
        if (strncmp(listen, "0.0.0.0:", 8) == 0 || listen[0] == ':')
            snprintf(a->base_url, sizeof(a->base_url), "http://127.0.0.1:%s",
                     strrchr(listen, ':') + 1);
        else
            snprintf(a->base_url, sizeof(a->base_url), "http://%s", listen);
    }
    size_t n = strlen(a->base_url);
    while (n > 0 && a->base_url[n - 1] == '/')
        a->base_url[--n] = '\0';
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->flight_done, NULL);
    pthread_mutex_init(&a->work_lock, NULL);
    pthread_cond_init(&a->work_free, NULL);
    metrics_add_renderer(api_metrics, a);
    a->upload_rl =
        ratelimit_new((uint64_t)cfg->limits.upload_rate, (uint64_t)cfg->limits.upload_burst);
    if (cdn_new(cfg, a->base_url, &a->cdn) != OK)
        log_warn("api", "no CDN purger: deletes leave the CDN's copies to expire");
}

void api_release(struct api *a)
{
    metrics_remove_renderer(api_metrics, a);
    ratelimit_free(a->upload_rl);
    cdn_free(a->cdn);
    pthread_mutex_destroy(&a->lock);
    pthread_cond_destroy(&a->flight_done);
    pthread_mutex_destroy(&a->work_lock);
    pthread_cond_destroy(&a->work_free);
}

int api_ready(void *app, char *why, size_t cap)
{
    struct api *a = app;

    if (meta_ping(a->meta) != OK) {
        snprintf(why, cap, "metadata store unreachable");
        return E_UNAVAILABLE;
    }
    if (blob_store_check(a->blobs) != OK) {
        snprintf(why, cap, "blob store not writable");
        return E_UNAVAILABLE;
    }
    return OK;
}

int api_gate(void *app, char *why, size_t cap)
{
    struct api *a = app;

    if (meta_ping(a->meta) != OK) {
        snprintf(why, cap, "metadata store unreachable");
        return E_UNAVAILABLE;
    }
    return OK;
}

json_t *api_ready_detail(void *app)
{
    struct api *a = app;
    struct meta_node nodes[META_NODES_MAX];
    json_t *arr = json_array();
    size_t n;

    meta_nodes(a->meta, nodes, META_NODES_MAX, &n);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr,
                              json_pack("{s:s,s:s,s:b,s:b,s:I}", "name", nodes[i].name, "role",
                                        nodes[i].role, "reachable", nodes[i].reachable, "usable",
                                        nodes[i].usable, "lag_ms", (json_int_t)nodes[i].lag_ms));
    return json_pack("{s:s,s:o}", "backend", meta_backend(a->meta), "nodes", arr);
}

/* api_metrics renders per-server database metrics: which replica served how much. */
static void api_metrics(struct strbuf *sb, void *arg)
{
    struct api *a = arg;
    struct meta_node nodes[META_NODES_MAX];
    size_t n;
    static const char *const names[] = {"tessera_db_queries_total", "tessera_db_errors_total",
                                        "tessera_db_up", "tessera_db_replica_lag_ms"};
    static const char *const help[] = {"Statements answered, by database server.",
                                       "Failed statements and connection attempts, by server.",
                                       "1 when the server answers now (monitor).",
                                       "Replay lag of each replica as last measured."};
    static const char *const type[] = {"counter", "counter", "gauge", "gauge"};

    meta_nodes(a->meta, nodes, META_NODES_MAX, &n);
    for (size_t m = 0; m < 4; m++) {
        strbuf_addf(sb, "# HELP %s %s\n# TYPE %s %s\n", names[m], help[m], names[m], type[m]);
        for (size_t i = 0; i < n; i++) {
            int64_t v = m == 0   ? nodes[i].queries
                        : m == 1 ? nodes[i].errors
                        : m == 2 ? (int64_t)nodes[i].reachable
                                 : nodes[i].lag_ms;
            strbuf_addf(sb, "%s{node=\"%s\",role=\"%s\"} %lld\n", names[m], nodes[i].name,
                        nodes[i].role, (long long)v);
        }
    }
}

/* --- bounded image work --- */

static void work_enter(struct api *a)
{
    pthread_mutex_lock(&a->work_lock);
    while (a->work_running >= a->cfg->image.max_parallel)
        pthread_cond_wait(&a->work_free, &a->work_lock);
    a->work_running++;
    pthread_mutex_unlock(&a->work_lock);
}

static void work_leave(struct api *a)
{
    /*
     * Connection threads come and go (thread per connection) and libmicrohttpd
     * gives no hook on the exiting thread, so libvips' per-thread buffers are
     * freed after each operation rather than at thread exit.
     */
    img_thread_exit();
    pthread_mutex_lock(&a->work_lock);
    a->work_running--;
    pthread_cond_signal(&a->work_free);
    pthread_mutex_unlock(&a->work_lock);
}

/* --- JSON --- */

static json_t *image_json(const struct api *a, const struct image_rec *img)
{
    enum img_format f = img_format_from_name(str_from(img->format));
    char created[21];
    char *url = xasprintf("%s/i/%s.%s", a->base_url, img->id, img_format_ext(f));
    json_t *variants = json_object();
    json_t *j;

    for (size_t i = 0; i < a->cfg->n_variants; i++) {
        const struct variant_preset *vp = &a->cfg->variant[i];
        enum img_format vf = img_format_from_name(str_from(vp->format));
        char *vurl = xasprintf("%s/i/%s/%s.%s", a->base_url, img->id, vp->name, img_format_ext(vf));
        json_object_set_new(variants, vp->name, json_string(vurl));
        free(vurl);
    }
    time_rfc3339(img->created_at, created);
    j = json_pack("{s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:s,s:s,s:o}", "id", img->id, "url", url,
                  "format", img->format, "content_type", img_format_mime(f), "width",
                  (json_int_t)img->width, "height", (json_int_t)img->height, "frames",
                  (json_int_t)img->frames, "bytes", (json_int_t)img->bytes, "sha256", img->key,
                  "created_at", created, "variants", variants);
    free(url);
    return j;
}

/* --- auth --- */

static const char *bearer(const struct http_req *req)
{
    const char *h = http_header(req, "Authorization");

    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    return *h ? h : NULL;
}

/* key_in compares against every key in constant time per key. */
static bool key_in(const char *key, char *const *keys, size_t n)
{
    uint8_t want[SHA256_LEN], have[SHA256_LEN];
    bool found = false;

    sha256_buf(key, strlen(key), want);
    for (size_t i = 0; i < n; i++) {
        sha256_buf(keys[i], strlen(keys[i]), have);
        found |= ct_equal(want, have, SHA256_LEN);
    }
    return found;
}

static bool is_admin(const struct api *a, const struct http_req *req)
{
    const char *k = bearer(req);

    return k != NULL && key_in(k, a->cfg->admin_key, a->cfg->n_admin_keys);
}

/* --- upload --- */

static int upload_store(struct api *a, const char *path, struct image_rec *img)
{
    uint8_t digest[SHA256_LEN];
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int rc;

    if (fd < 0)
        return E_IO;
    rc = sha256_fd(fd, digest);
    if (rc == OK && fstat(fd, &st) != 0)
        rc = E_IO;
    close(fd);
    if (rc != OK)
        return rc;
    hex_encode(digest, SHA256_LEN, img->key);
    img->bytes = (uint64_t)st.st_size;

    rc = meta_blob_pin(a->meta, img->key, img->bytes);
    if (rc != OK)
        return rc;
    rc = blob_put_path(a->blobs, img->key, path);
    if (rc == OK) {
        do {
            image_id_new(img->id);
            rc = meta_image_insert(a->meta, img);
        } while (rc == E_EXISTS);
    }
    if (meta_blob_unpin(a->meta, img->key) != OK)
        log_warn("api", "blob %.16s stays pinned (gc clears stale pins)", img->key);
    return rc;
}

/*
 * upload_admitted takes a token from the upload bucket of the request's API
 * key (owner, when it authenticated with one) or else of its client address;
 * answers 429 with Retry-After and returns false when the bucket is empty.
 */
static bool upload_admitted(struct api *a, struct http_req *req, const char *owner)
{
    char id[80], peer[64];
    unsigned retry = 1;

    if (a->upload_rl == NULL)
        return true;
    if (owner[0] != '\0') {
        snprintf(id, sizeof(id), "k:%s", owner);
    } else {
        char addr[64];
        http_client_addr(req, peer, sizeof(peer));
        ratelimit_client_addr(peer, http_header(req, "X-Forwarded-For"),
                              a->cfg->server.trusted_proxies, addr, sizeof(addr));
        snprintf(id, sizeof(id), "a:%s", addr);
    }
    if (ratelimit_take(a->upload_rl, id, strlen(id), time_mono_us(), &retry))
        return true;
    char ra[16];
    snprintf(ra, sizeof(ra), "%u", retry);
    http_set_header(req, "Retry-After", ra);
    http_reply_error(req, E_RATELIMITED, "too many uploads: try again in %u s", retry);
    return false;
}

static void h_upload(struct http_req *req)
{
    struct api *a = http_app(req);
    const struct config *cfg = a->cfg;
    struct img_limits lim = {(uint64_t)cfg->limits.max_pixels, (uint64_t)cfg->limits.max_frames,
                             (uint64_t)cfg->limits.max_animation_pixels};
    struct image_rec img;
    struct img_info info;
    struct img_error ierr = {""};
    char out_path[512] = "";
    char token[DELETE_TOKEN_LEN + 1];
    bool unchanged = false;
    const char *key = bearer(req);
    json_t *j;
    int rc;

    memset(&img, 0, sizeof(img));
    if (cfg->n_upload_keys > 0) {
        if (key == NULL) {
            http_reply_error(req, E_UNAUTHORIZED,
                             "uploads need an API key (Authorization: Bearer)");
            goto out;
        }
        if (!key_in(key, cfg->upload_key, cfg->n_upload_keys) && !is_admin(a, req)) {
            http_reply_error(req, E_UNAUTHORIZED, "the API key is not valid");
            goto out;
        }
    }
    if (key != NULL && (cfg->n_upload_keys > 0 || is_admin(a, req))) {
        uint8_t d[SHA256_LEN];
        sha256_buf(key, strlen(key), d);
        hex_encode(d, 8, img.owner);
    }
    if (!upload_admitted(a, req, img.owner))
        goto out;
    if (http_body_len(req) == 0) {
        http_reply_error(req, E_UNSUPPORTED, "the upload is empty");
        goto out;
    }
    rc = blob_tmp_path(a->blobs, out_path, sizeof(out_path));
    if (rc != OK) {
        http_reply_error(req, E_INTERNAL, "no temporary path");
        goto out;
    }
    work_enter(a);
    rc = img_ingest(http_body_path(req), &lim, out_path, &unchanged, &info, &ierr);
    work_leave(a);
    if (rc != OK) {
        http_reply_error(req, rc, "%s", ierr.msg[0] ? ierr.msg : err_str(rc));
        goto out;
    }
    snprintf(img.format, sizeof(img.format), "%s", img_format_name(info.format));
    img.width = info.width;
    img.height = info.height;
    img.frames = info.frames;
    img.created_at = time_now_us() / 1000000;
    delete_token_new(token);
    delete_token_hash(token, strlen(token), img.token_hash);
    rc = upload_store(a, unchanged ? http_body_path(req) : out_path, &img);
    if (rc != OK) {
        log_error("api", "upload not stored: %s", err_str(rc));
        http_reply_error(req, rc == E_NOSPACE || rc == E_IO ? E_UNAVAILABLE : rc,
                         "the image could not be stored: %s", err_str(rc));
        goto out;
    }
    log_info("api", "uploaded %s %s %ux%u %llu bytes key %.16s", img.id, img.format, img.width,
             img.height, (unsigned long long)img.bytes, img.key);
    j = image_json(a, &img);
    json_object_set_new(j, "delete_token", json_string(token));
    char location[64];
    snprintf(location, sizeof(location), "/api/v1/images/%s", img.id);
    http_set_header(req, "Location", location);
    http_reply_json(req, 201, j);
out:
    if (out_path[0] != '\0')
        unlink(out_path);
}

/* --- metadata and listing --- */

/* lookup reads a live image by the id in s; answers 404 itself and returns false if none. */
static bool lookup(struct api *a, struct http_req *req, struct str s, struct image_rec *img)
{
    char id[IMAGE_ID_MAX + 1];
    int rc;

    if (!image_id_valid(s.p, s.len)) {
        http_reply_error(req, E_NOTFOUND, "no such image");
        return false;
    }
    memcpy(id, s.p, s.len);
    id[s.len] = '\0';
    rc = cache_image_get(a->cache, a->meta, id, img);
    if (rc == E_NOTFOUND) {
        http_reply_error(req, E_NOTFOUND, "no such image");
        return false;
    }
    if (rc != OK) {
        http_reply_error(req, E_UNAVAILABLE, "metadata store: %s", err_str(rc));
        return false;
    }
    return true;
}

static void h_image_get(struct http_req *req)
{
    struct api *a = http_app(req);
    struct image_rec img;

    if (lookup(a, req, http_param(req, 0), &img))
        http_reply_json(req, 200, image_json(a, &img));
}

static void h_list(struct http_req *req)
{
    struct api *a = http_app(req);
    const char *ls = http_query(req, "limit");
    const char *cs = http_query(req, "cursor");
    int64_t limit = 50, before = 0;
    struct image_rec *items = NULL;
    size_t n = 0;
    json_t *arr, *next;
    int rc;

    if (ls != NULL) {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(ls, &end, 10);
        if (ls[0] < '0' || ls[0] > '9' || errno != 0 || end == ls || *end != '\0' || v < 1 ||
            v > a->cfg->limits.max_list) {
            http_reply_error(req, E_INVALID, "limit must be an integer from 1 to %lld",
                             (long long)a->cfg->limits.max_list);
            return;
        }
        limit = v;
    }
    if (cs != NULL && cursor_decode(cs, strlen(cs), &before) != OK) {
        http_reply_error(req, E_INVALID, "bad cursor");
        return;
    }
    items = xcalloc((size_t)limit + 1, sizeof(*items));
    rc = meta_image_list(a->meta, before, (size_t)limit + 1, items, &n);
    if (rc != OK) {
        http_reply_error(req, E_UNAVAILABLE, "metadata store: %s", err_str(rc));
        goto out;
    }
    arr = json_array();
    for (size_t i = 0; i < n && i < (size_t)limit; i++)
        json_array_append_new(arr, image_json(a, &items[i]));
    if (n > (size_t)limit) {
        char cur[CURSOR_LEN];
        cursor_encode(items[limit - 1].seq, cur);
        next = json_string(cur);
    } else {
        next = json_null();
    }
    http_reply_json(req, 200, json_pack("{s:o,s:o}", "items", arr, "next_cursor", next));
out:
    free(items);
}

/* --- delete --- */

static void h_delete(struct http_req *req)
{
    struct api *a = http_app(req);
    const char *token = http_header(req, "X-Delete-Token");
    struct meta_released rel = {0};
    struct image_rec img;
    int rc;

    if (!lookup(a, req, http_param(req, 0), &img))
        return;
    if (!is_admin(a, req)) {
        char h[SHA256_HEX];
        if (token == NULL) {
            const char *k = bearer(req);
            bool known = k != NULL && key_in(k, a->cfg->upload_key, a->cfg->n_upload_keys);
            /* a valid key that may not delete: 403; no key or an invalid one: 401 */
            http_reply_error(req, known ? E_FORBIDDEN : E_UNAUTHORIZED,
                             "deleting needs the image's X-Delete-Token or an admin key");
            return;
        }
        delete_token_hash(token, strlen(token), h);
        if (!ct_equal(h, img.token_hash, SHA256_HEX - 1)) {
            http_reply_error(req, E_FORBIDDEN, "wrong delete token");
            return;
        }
    }
    rc = meta_image_delete(a->meta, img.id, &rel);
    if (rc == E_NOTFOUND) {
        http_reply_error(req, E_NOTFOUND, "no such image");
        return;
    }
    if (rc != OK) {
        http_reply_error(req, E_UNAVAILABLE, "metadata store: %s", err_str(rc));
        return;
    }
    /* row first, then the caches: a reader can no longer re-fill them from the store */
    cache_image_deleted(a->cache, img.id);
    /* the bytes go in the release jobs queued by the delete's transaction */
    log_info("api", "deleted %s (%zu blobs to release)", img.id, rel.n);
    http_reply_empty(req, 204);
}

/* --- bytes --- */

static void send_blob(struct api *a, struct http_req *req, const char *id, const char *key,
                      const char *mime, int64_t created_at)
{
    char etag[SHA256_HEX + 2], date[30], tag[48];
    const char *inm = http_header(req, "If-None-Match");
    const char *range = http_header(req, "Range");
    const char *if_range = http_header(req, "If-Range");
    uint64_t size = 0, first = 0, last = 0;
    int fd = -1;
    int rc;

    snprintf(etag, sizeof(etag), "\"%s\"", key);
    snprintf(tag, sizeof(tag), "img-%s", id);
    time_http(created_at, date);
    http_set_header(req, "ETag", etag);
    http_set_header(req, "Last-Modified", date);
    http_set_header(req, "Cache-Control", "public, max-age=31536000, immutable");
    http_set_header(req, "Surrogate-Key", tag);
    http_set_header(req, "Cache-Tag", tag);
    http_set_header(req, "X-Content-Type-Options", "nosniff");
    if (inm != NULL && http_etag_match(inm, key)) {
        http_reply_empty(req, 304);
        return;
    }
    rc = blob_open(a->blobs, key, &fd, &size);
    if (rc != OK) {
        log_error("api", "image %s: blob %.16s unreadable: %s", id, key, err_str(rc));
        http_reply_error(req, E_UNAVAILABLE, "the image bytes are unavailable right now");
        return;
    }
    http_set_header(req, "Accept-Ranges", "bytes");
    http_set_header(req, "Content-Security-Policy", API_CSP);
    if (range != NULL && (if_range == NULL || strcmp(if_range, etag) == 0)) {
        rc = http_range_parse(range, size, &first, &last);
        if (rc == E_RANGE) {
            char cr[48];
            close(fd);
            snprintf(cr, sizeof(cr), "bytes */%llu", (unsigned long long)size);
            http_set_header(req, "Content-Range", cr);
            http_reply_error(req, E_RANGE, "range not satisfiable for %llu bytes",
                             (unsigned long long)size);
            return;
        }
        if (rc == OK) {
            char cr[80];
            snprintf(cr, sizeof(cr), "bytes %llu-%llu/%llu", (unsigned long long)first,
                     (unsigned long long)last, (unsigned long long)size);
            http_set_header(req, "Content-Range", cr);
            http_set_header(req, "Content-Type", mime);
            http_reply_fd(req, 206, fd, first, last - first + 1);
            return;
        }
    }
    http_set_header(req, "Content-Type", mime);
    http_reply_fd(req, 200, fd, 0, size);
}

void api_split_ext(struct str s, struct str *name, struct str *ext)
{
    const char *dot = memrchr(s.p, '.', s.len);

    if (dot == NULL) {
        *name = s;
        *ext = (struct str){"", 0};
        return;
    }
    *name = (struct str){s.p, (size_t)(dot - s.p)};
    *ext = (struct str){dot + 1, s.len - (size_t)(dot - s.p) - 1};
}

static void h_bytes(struct http_req *req)
{
    struct api *a = http_app(req);
    struct str id, ext;
    struct image_rec img;

    api_split_ext(http_param(req, 0), &id, &ext);
    if (!lookup(a, req, id, &img))
        return;
    enum img_format f = img_format_from_name(str_from(img.format));
    if (ext.len > 0 && img_format_from_ext(ext) != f) {
        http_reply_error(req, E_NOTFOUND, "image %s is %s, not .%.*s", img.id, img.format,
                         (int)ext.len, ext.p);
        return;
    }
    send_blob(a, req, img.id, img.key, img_format_mime(f), img.created_at);
}

/* --- variants --- */

/* flight_join returns true when this thread must make the variant, false after another made it. */
static bool flight_join(struct api *a, const char *id, const char *name, struct api_flight **out)
{
    struct api_flight *free_slot = NULL;
    bool lead = true;

    pthread_mutex_lock(&a->lock);
    for (;;) {
        struct api_flight *mine = NULL;
        free_slot = NULL;
        for (size_t i = 0; i < API_VARIANT_FLIGHTS; i++) {
            struct api_flight *f = &a->flights[i];
            if (f->busy && strcmp(f->image_id, id) == 0 && strcmp(f->name, name) == 0)
                mine = f;
            else if (!f->busy && f->waiters == 0 && free_slot == NULL)
                free_slot = f;
        }
        if (mine == NULL)
            break;
        mine->waiters++;
        pthread_cond_wait(&a->flight_done, &a->lock);
        mine->waiters--;
        lead = false;
        if (!mine->busy)
            goto out;
    }
    lead = true;
    if (free_slot != NULL) {
        snprintf(free_slot->image_id, sizeof(free_slot->image_id), "%s", id);
        snprintf(free_slot->name, sizeof(free_slot->name), "%s", name);
        free_slot->busy = true;
    }
out:
    pthread_mutex_unlock(&a->lock);
    *out = lead ? free_slot : NULL;
    return lead;
}

static void flight_land(struct api *a, struct api_flight *f)
{
    if (f == NULL)
        return;
    pthread_mutex_lock(&a->lock);
    f->busy = false;
    pthread_cond_broadcast(&a->flight_done);
    pthread_mutex_unlock(&a->lock);
}

/* variant_make makes, stores and records one variant; fills *v. */
static int variant_make(struct api *a, const struct image_rec *img, const struct variant_preset *vp,
                        struct variant_rec *v)
{
    struct img_variant_spec spec = {vp->width, vp->height,
                                    img_format_from_name(str_from(vp->format)), vp->quality};
    struct img_info info;
    struct img_error ierr = {""};
    char src[64], out_path[512] = "";
    uint8_t digest[SHA256_LEN];
    uint64_t size = 0;
    int fd = -1, ofd = -1;
    int rc;

    rc = blob_open(a->blobs, img->key, &fd, &size);
    if (rc == E_NOTFOUND) {
        /* a live image whose bytes no shard has: not "gone", a fault to retry and repair */
        log_error("api", "image %s: blob %.16s not found on any shard", img->id, img->key);
        rc = E_UNAVAILABLE;
    }
    if (rc != OK)
        goto out;
    rc = blob_tmp_path(a->blobs, out_path, sizeof(out_path));
    if (rc != OK)
        goto out;
    snprintf(src, sizeof(src), "/proc/self/fd/%d", fd);
    work_enter(a);
    rc = img_variant(src, &spec, out_path, &info, &ierr);
    work_leave(a);
    if (rc != OK) {
        log_error("api", "variant %s of %s: %s", vp->name, img->id, ierr.msg);
        goto out;
    }
    ofd = open(out_path, O_RDONLY | O_CLOEXEC);
    if (ofd < 0 || sha256_fd(ofd, digest) != OK) {
        rc = E_IO;
        goto out;
    }
    struct stat st;
    fstat(ofd, &st);
    memset(v, 0, sizeof(*v));
    snprintf(v->image_id, sizeof(v->image_id), "%s", img->id);
    snprintf(v->name, sizeof(v->name), "%s", vp->name);
    hex_encode(digest, SHA256_LEN, v->key);
    snprintf(v->format, sizeof(v->format), "%s", vp->format);
    v->width = info.width;
    v->height = info.height;
    v->bytes = (uint64_t)st.st_size;
    rc = meta_blob_pin(a->meta, v->key, v->bytes);
    if (rc != OK)
        goto out;
    rc = blob_put_path(a->blobs, v->key, out_path);
    if (rc == OK)
        rc = meta_variant_put(a->meta, v);
    /* the image deleted meanwhile: the unpin queues the release of the unused bytes */
    if (meta_blob_unpin(a->meta, v->key) != OK)
        log_warn("api", "blob %.16s stays pinned (gc clears stale pins)", v->key);
out:
    if (fd >= 0)
        close(fd);
    if (ofd >= 0)
        close(ofd);
    if (out_path[0] != '\0')
        unlink(out_path);
    return rc;
}

static void h_variant(struct http_req *req)
{
    struct api *a = http_app(req);
    struct str name, ext;
    struct image_rec img;
    struct variant_rec v;
    const struct variant_preset *vp;
    struct api_flight *flight = NULL;
    int rc;

    if (!lookup(a, req, http_param(req, 0), &img))
        return;
    api_split_ext(http_param(req, 1), &name, &ext);
    vp = config_variant(a->cfg, name.p, name.len);
    if (vp == NULL || img_format_from_ext(ext) != img_format_from_name(str_from(vp->format))) {
        http_reply_error(req, E_NOTFOUND, "no such variant");
        return;
    }
    rc = meta_variant_get(a->meta, img.id, vp->name, &v);
    /* the first request makes it; concurrent ones wait for it (and retry if it failed) */
    for (int attempt = 0; rc == E_NOTFOUND && attempt < 3; attempt++) {
        if (flight_join(a, img.id, vp->name, &flight)) {
            rc = meta_variant_get(a->meta, img.id, vp->name, &v);
            if (rc == E_NOTFOUND)
                rc = variant_make(a, &img, vp, &v);
            flight_land(a, flight);
            break;
        }
        rc = meta_variant_get(a->meta, img.id, vp->name, &v);
    }
    if (rc == E_NOTFOUND) {
        http_reply_error(req, E_NOTFOUND, "no such image");
        return;
    }
    if (rc != OK) {
        http_reply_error(req, rc == E_BADIMAGE ? E_INTERNAL : E_UNAVAILABLE,
                         "the variant could not be made: %s", err_str(rc));
        return;
    }
    send_blob(a, req, img.id, v.key, img_format_mime(img_format_from_name(str_from(v.format))),
              img.created_at);
}

const struct route api_routes[] = {
    /* decoding, fsyncs and page building block: they run on the worker threads */
    {HTTP_POST, "/api/v1/images", "upload", h_upload, ROUTE_BODY_UPLOAD | ROUTE_BLOCKING},
    {HTTP_GET, "/api/v1/images", "list", h_list, ROUTE_BLOCKING},
    {HTTP_GET, "/api/v1/images/*", "image", h_image_get, 0},
    {HTTP_DELETE, "/api/v1/images/*", "delete", h_delete, ROUTE_BLOCKING},
    {HTTP_GET, "/i/*", "bytes", h_bytes, 0},
    {HTTP_GET, "/i/*/*", "variant", h_variant, ROUTE_BLOCKING},
};
const size_t api_nroutes = sizeof(api_routes) / sizeof(api_routes[0]);

size_t api_routes_build(const struct api *a, unsigned methods, struct route *out, size_t cap)
{
    bool remote =
        meta_may_block(a->meta) || blob_store_may_block(a->blobs) || a->cfg->cache.redis[0] != '\0';
    size_t n = 0;

    for (size_t i = 0; i < api_nroutes && n < cap; i++) {
        if (!(api_routes[i].methods & methods))
            continue;
        out[n] = api_routes[i];
        if (remote)
            out[n].flags |= ROUTE_BLOCKING;
        n++;
    }
    return n;
}

/* --- jobs --- */

static int api_release_fn(void *arg, const char *key)
{
    struct api *a = arg;

    return blob_delete(a->blobs, key);
}

/* api_job_variants makes every preset variant of an image not made yet (idempotent). */
static int api_job_variants(struct api *a, const char *id, char *err, size_t cap)
{
    struct image_rec img;
    struct variant_rec v;
    int rc = meta_image_get(a->meta, id, &img);

    if (rc == E_NOTFOUND)
        return OK; /* deleted meanwhile: nothing to make */
    if (rc != OK) {
        snprintf(err, cap, "image %s: %s", id, err_str(rc));
        return rc;
    }
    for (size_t i = 0; i < a->cfg->n_variants && rc == OK; i++) {
        const struct variant_preset *vp = &a->cfg->variant[i];
        rc = meta_variant_get(a->meta, img.id, vp->name, &v);
        if (rc == E_NOTFOUND)
            rc = variant_make(a, &img, vp, &v);
        if (rc == E_NOTFOUND)
            rc = OK; /* the image went away */
        if (rc != OK)
            snprintf(err, cap, "variant %s of %s: %s", vp->name, img.id, err_str(rc));
    }
    return rc;
}

int api_job_run(void *app, const struct meta_job *job, char *err, size_t cap)
{
    struct api *a = app;
    int rc;

    if (strcmp(job->kind, META_JOB_VARIANTS) == 0)
        return api_job_variants(a, job->payload, err, cap);
    if (strcmp(job->kind, META_JOB_RELEASE) == 0) {
        rc = meta_blob_release(a->meta, job->payload, api_release_fn, a);
        if (rc == E_EXISTS)
            rc = OK; /* referenced or pinned again: the bytes stay */
        if (rc != OK)
            snprintf(err, cap, "release %.16s: %s", job->payload, err_str(rc));
        return rc;
    }
    if (strcmp(job->kind, META_JOB_PURGE) == 0)
        return cdn_purge(a->cdn, job->payload, err, cap); /* idempotent; OK without a purger */
    snprintf(err, cap, "unknown job kind \"%s\"", job->kind);
    return E_INVALID;
}
