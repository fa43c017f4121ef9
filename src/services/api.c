/*
 * api.c - the HTTP adapter of API.md: parse and authenticate a request, call
 * a use case of app/, write the JSON and headers of its answer.
 *
 * No use case lives here: what an upload, a delete or a variant does is in
 * app/app.c; this file only decides how it looks on the wire.
 */
#include "services/api.h"

#include "app/app.h"
#include "app/runtime.h"
#include "app/sign.h"
#include "cache/cache.h"
#include "cdn/cdn.h"
#include "config/config.h"
#include "core/codec.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/ident.h"
#include "core/log.h"
#include "core/strbuf.h"
#include "core/xalloc.h"
#include "http/http.h"
#include "http/range.h"
#include "http/ratelimit.h"
#include "image/image.h"
#include "image/ops.h"
#include "meta/meta.h"
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

void api_init(struct api *a, const struct runtime *rt, struct app *app)
{
    memset(a, 0, sizeof(*a));
    a->cfg = rt->cfg;
    a->app = app;
    a->meta = rt->meta;
    a->blobs = rt->blobs;
    a->cache = rt->cache;
    snprintf(a->base_url, sizeof(a->base_url), "%s", rt->base_url);
    a->upload_rl =
        ratelimit_new((uint64_t)a->cfg->limits.upload_rate, (uint64_t)a->cfg->limits.upload_burst);
}

void api_release(struct api *a)
{
    ratelimit_free(a->upload_rl);
}

int api_ready(void *app, char *why, size_t cap)
{
    struct api *a = app;

    if (meta_ping(a->meta) != OK) {
        snprintf(why, cap, "metadata store unreachable");
        return E_UNAVAILABLE;
    }
    if (blob_store_check(a->blobs) != OK) {
        char detail[200];
        blob_store_why(a->blobs, detail, sizeof(detail));
        snprintf(why, cap, "blob store not writable%s%s", detail[0] ? ": " : "", detail);
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
        json_array_append_new(
            arr, json_pack("{s:s,s:s,s:s,s:b,s:b,s:I}", "name", nodes[i].name, "addr",
                           nodes[i].addr, "role", nodes[i].role, "reachable", nodes[i].reachable,
                           "usable", nodes[i].usable, "lag_ms", (json_int_t)nodes[i].lag_ms));
    return json_pack("{s:s,s:o}", "backend", meta_backend(a->meta), "nodes", arr);
}

/* --- JSON --- */

/*
 * image_srcset adds "srcset" to j while a transform key is configured: signed
 * w:{width}.auto URLs for the configured widths up to the image's own.
 */
static void image_srcset(const struct api *a, const struct image_rec *img, json_t *j)
{
    struct strbuf sb;
    char path[64], signed_path[SIGN_PATH_MAX], err[160];

    if (a->cfg->n_transform_keys == 0)
        return;
    /* every entry is under 700 bytes (base URL, signed path, width): no cap is hit */
    strbuf_init(&sb, (size_t)CONFIG_MAX_SRCSET * 1024);
    for (size_t i = 0; i < a->cfg->n_srcset_widths && a->cfg->srcset_width[i] <= img->width; i++) {
        snprintf(path, sizeof(path), "/i/%s/t/w:%u.auto", img->id, a->cfg->srcset_width[i]);
        if (sign_path(a->cfg, str_from(path), signed_path, sizeof(signed_path), err, sizeof(err)) !=
            OK)
            continue;
        strbuf_addf(&sb, "%s%s%s %uw", sb.len ? ", " : "", a->base_url, signed_path,
                    a->cfg->srcset_width[i]);
    }
    if (sb.len > 0)
        json_object_set_new(j, "srcset", json_string(sb.buf));
    strbuf_release(&sb);
}

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
    image_srcset(a, img, j);
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

bool api_is_admin(const struct api *a, const struct http_req *req)
{
    const char *k = bearer(req);

    return k != NULL && key_in(k, a->cfg->admin_key, a->cfg->n_admin_keys);
}

/* --- upload --- */

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
    struct app_upload up;
    char owner[META_OWNER_MAX] = "";
    const char *key = bearer(req);
    json_t *j;
    int rc;

    if (cfg->n_upload_keys > 0) {
        if (key == NULL) {
            http_reply_error(req, E_UNAUTHORIZED,
                             "uploads need an API key (Authorization: Bearer)");
            return;
        }
        if (!key_in(key, cfg->upload_key, cfg->n_upload_keys) && !api_is_admin(a, req)) {
            http_reply_error(req, E_UNAUTHORIZED, "the API key is not valid");
            return;
        }
    }
    if (key != NULL && (cfg->n_upload_keys > 0 || api_is_admin(a, req))) {
        uint8_t d[SHA256_LEN];
        sha256_buf(key, strlen(key), d);
        hex_encode(d, 8, owner);
    }
    if (!upload_admitted(a, req, owner))
        return;
    if (http_body_len(req) == 0) {
        http_reply_error(req, E_UNSUPPORTED, "the upload is empty");
        return;
    }
    rc = app_upload(a->app, http_body_path(req), owner, &up);
    if (rc != OK) {
        /* a store that failed (disk full, shards down) is a 503: retry later */
        http_reply_error(req, rc == E_NOSPACE || rc == E_IO ? E_UNAVAILABLE : rc, "%s", up.message);
        return;
    }
    j = image_json(a, &up.img);
    json_object_set_new(j, "delete_token", json_string(up.token));
    char location[64];
    snprintf(location, sizeof(location), "/api/v1/images/%s", up.img.id);
    http_set_header(req, "Location", location);
    http_reply_json(req, 201, j);
}

/* --- metadata and listing --- */

/* lookup reads a live image by the id in s; answers 404 itself and returns false if none. */
static bool lookup(struct api *a, struct http_req *req, struct str s, struct image_rec *img)
{
    int rc = app_image_get(a->app, s.p, s.len, img);

    if (rc == E_NOTFOUND)
        http_reply_error(req, E_NOTFOUND, "no such image");
    else if (rc != OK)
        http_reply_error(req, E_UNAVAILABLE, "metadata store: %s", err_str(rc));
    return rc == OK;
}

/*
 * peek is lookup on an epoll thread (http_inline): the image from this
 * process's cache and, when fd is not NULL, its bytes opened from local disk
 * (*fd). Anything else needs a blocking call: the request is deferred to a
 * worker thread and peek returns false, as it does after answering 404.
 */
static bool peek(struct api *a, struct http_req *req, struct str s, struct image_rec *img, int *fd)
{
    uint64_t size;
    int rc = app_image_peek(a->app, s.p, s.len, img);

    if (rc == E_NOTFOUND) {
        http_reply_error(req, E_NOTFOUND, "no such image");
        return false;
    }
    if (rc == OK && (fd == NULL || blob_peek(a->blobs, img->key, fd, &size) == OK))
        return true;
    http_defer(req);
    return false;
}

static void h_image_get(struct http_req *req)
{
    struct api *a = http_app(req);
    struct image_rec img;

    if (http_inline(req) ? peek(a, req, http_param(req, 0), &img, NULL)
                         : lookup(a, req, http_param(req, 0), &img))
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
    bool more = false;
    json_t *arr, *next;
    int rc;

    if (a->cfg->auth.list_requires_key) {
        const char *k = bearer(req);
        if (k == NULL) {
            http_reply_error(req, E_UNAUTHORIZED,
                             "listings need an API key (Authorization: "
                             "Bearer)");
            return;
        }
        if (!key_in(k, a->cfg->upload_key, a->cfg->n_upload_keys) && !api_is_admin(a, req)) {
            http_reply_error(req, E_UNAUTHORIZED, "the API key is not valid");
            return;
        }
    }
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
    if (cs != NULL) {
        rc = app_cursor_decode(a->app, cs, strlen(cs), &before);
        if (rc != OK) {
            http_reply_error(req, rc,
                             rc == E_INVALID ? "bad cursor"
                                             : "the cursor secret is "
                                               "unavailable");
            return;
        }
    }
    items = xcalloc((size_t)limit + 1, sizeof(*items));
    rc = app_list(a->app, before, (size_t)limit, items, &n, &more);
    if (rc != OK) {
        http_reply_error(req, E_UNAVAILABLE, "metadata store: %s", err_str(rc));
        goto out;
    }
    arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, image_json(a, &items[i]));
    if (more) {
        char cur[64];
        if (app_cursor_encode(a->app, items[limit - 1].seq, cur, sizeof(cur)) != OK) {
            json_decref(arr);
            http_reply_error(req, E_UNAVAILABLE, "the cursor secret is unavailable");
            goto out;
        }
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
    struct str id = http_param(req, 0);
    const char *token = http_header(req, "X-Delete-Token");
    bool admin = api_is_admin(a, req);
    int rc;

    if (!admin && token == NULL) {
        const char *k = bearer(req);
        bool known = k != NULL && key_in(k, a->cfg->upload_key, a->cfg->n_upload_keys);
        struct image_rec img;
        /* an unknown image is a 404 whoever asks; else a valid key that may not delete: 403 */
        if (!lookup(a, req, id, &img))
            return;
        http_reply_error(req, known ? E_FORBIDDEN : E_UNAUTHORIZED,
                         "deleting needs the image's X-Delete-Token or an admin key");
        return;
    }
    rc = app_delete(a->app, id.p, id.len, token, admin);
    if (rc == OK) {
        http_reply_empty(req, 204);
        return;
    }
    if (rc == E_NOTFOUND)
        http_reply_error(req, E_NOTFOUND, "no such image");
    else if (rc == E_FORBIDDEN)
        http_reply_error(req, E_FORBIDDEN, "wrong delete token");
    else
        http_reply_error(req, E_UNAVAILABLE, "metadata store: %s", err_str(rc));
}

/* --- bytes --- */

/*
 * send_blob answers with the bytes of blob key: from fd when it is open (the
 * blob opened already, or a variant made but not stored; send_blob closes it),
 * else from the store.
 */
static void send_blob_cc(struct api *a, struct http_req *req, const char *id, const char *key,
                         const char *mime, int64_t created_at, int made_fd,
                         const char *cache_control)
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
    http_set_header(req, "Cache-Control", cache_control);
    http_set_header(req, "Surrogate-Key", tag);
    http_set_header(req, "Cache-Tag", tag);
    http_set_header(req, "X-Content-Type-Options", "nosniff");
    if (inm != NULL && http_etag_match(inm, key)) {
        if (made_fd >= 0)
            close(made_fd);
        http_reply_empty(req, 304);
        return;
    }
    if (made_fd >= 0) {
        struct stat st;
        fd = made_fd;
        rc = fstat(fd, &st) == 0 ? OK : E_IO;
        size = rc == OK ? (uint64_t)st.st_size : 0;
        if (rc != OK)
            close(fd);
    } else {
        rc = blob_open(a->blobs, key, &fd, &size);
    }
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

static void send_blob(struct api *a, struct http_req *req, const char *id, const char *key,
                      const char *mime, int64_t created_at, int made_fd)
{
    send_blob_cc(a, req, id, key, mime, created_at, made_fd, "public, max-age=31536000, immutable");
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
    int fd = -1;

    api_split_ext(http_param(req, 0), &id, &ext);
    if (!(http_inline(req) ? peek(a, req, id, &img, &fd) : lookup(a, req, id, &img)))
        return;
    enum img_format f = img_format_from_name(str_from(img.format));
    if (ext.len > 0 && img_format_from_ext(ext) != f) {
        if (fd >= 0)
            close(fd);
        http_reply_error(req, E_NOTFOUND, "image %s is %s, not .%.*s", img.id, img.format,
                         (int)ext.len, ext.p);
        return;
    }
    send_blob(a, req, img.id, img.key, img_format_mime(f), img.created_at, fd);
}

/* --- variants --- */

static void h_variant(struct http_req *req)
{
    struct api *a = http_app(req);
    struct str name, ext;
    struct image_rec img;
    struct variant_rec v;
    const struct variant_preset *vp;
    int made_fd = -1;
    int rc;

    if (!lookup(a, req, http_param(req, 0), &img))
        return;
    api_split_ext(http_param(req, 1), &name, &ext);
    vp = config_variant(a->cfg, name.p, name.len);
    if (vp == NULL || img_format_from_ext(ext) != img_format_from_name(str_from(vp->format))) {
        http_reply_error(req, E_NOTFOUND, "no such variant");
        return;
    }
    rc = app_variant(a->app, &img, vp, &v, &made_fd);
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
              img.created_at, made_fd);
}

/* --- transforms --- */

/*
 * accepts tells whether the Accept header lists the media type with a q
 * above 0. Wildcards do not count: browsers send a star for everything, and
 * only an explicit image/avif or image/webp says the client decodes them.
 */
static bool accepts(const char *accept, const char *type)
{
    size_t tlen = strlen(type);
    const char *p = accept;

    while (p != NULL && *p != '\0') {
        const char *end;
        size_t len;
        char item[128];
        char *semi, *q;

        p += strspn(p, " \t");
        end = strchr(p, ',');
        len = end ? (size_t)(end - p) : strlen(p);
        if (len < sizeof(item)) {
            memcpy(item, p, len);
            item[len] = '\0';
            semi = strchr(item, ';');
            if (semi != NULL)
                *semi = '\0';
            item[strcspn(item, " \t")] = '\0';
            q = semi != NULL ? strstr(semi + 1, "q=") : NULL;
            if (strlen(item) == tlen && strcasecmp(item, type) == 0 &&
                (q == NULL || strtod(q + 2, NULL) > 0))
                return true;
        }
        p = end ? end + 1 : NULL;
    }
    return false;
}

/*
 * h_transform answers /i/{id}/t/{ops}.{ext} in the order of API.md: bad ops
 * or ext (400), signature (403), image (404), room to make it (503).
 */
static void h_transform(struct http_req *req)
{
    struct api *a = http_app(req);
    const struct config *cfg = a->cfg;
    const struct ops_limits lim = {(uint32_t)cfg->transforms.max_dimension,
                                   (uint64_t)cfg->limits.max_pixels};
    struct str id = http_param(req, 0), ops, ext;
    char idbuf[IMAGE_ID_MAX + 1], canon[OPS_CANON_MAX], err[160];
    struct img_ops o;
    struct image_rec img;
    struct variant_rec v;
    char standin_cc[64];
    bool is_auto, standin = false;
    int made_fd = -1;
    int rc;

    if (cfg->n_transform_keys == 0 && !cfg->transforms.allow_unsigned) {
        http_reply_error(req, E_NOTFOUND, "transforms are not enabled here");
        return;
    }
    api_split_ext(http_param(req, 1), &ops, &ext);
    if (img_ops_parse(ops, ext, &lim, &o, err, sizeof(err)) != OK) {
        http_reply_error(req, E_INVALID, "%s", err);
        return;
    }
    if (!cfg->transforms.allow_unsigned) {
        /* an id too long to exist cannot have been signed either */
        snprintf(idbuf, sizeof(idbuf), "%.*s", (int)id.len, id.p);
        img_ops_canonical(&o, canon, sizeof(canon));
        if (id.len > IMAGE_ID_MAX || !img_ops_sig_ok(cfg->transform_key, cfg->n_transform_keys,
                                                     idbuf, canon, http_query(req, "s"))) {
            http_reply_error(req, E_FORBIDDEN, "s: missing or wrong signature");
            return;
        }
    }
    if (!(http_inline(req) ? peek(a, req, id, &img, NULL) : lookup(a, req, id, &img)))
        return;
    is_auto = o.format == IMG_UNKNOWN;
    if (is_auto) {
        const char *accept = http_header(req, "Accept");
        /* edges cache one copy per class of Accept: avif, webp, other */
        http_set_header(req, "Vary", "Accept");
        if (accept != NULL && accepts(accept, "image/avif"))
            o.format = IMG_AVIF;
        else if (accept != NULL && accepts(accept, "image/webp"))
            o.format = IMG_WEBP;
    }
    if (http_inline(req)) {
        /* a second request: the rendition recorded and its bytes on local disk, else a worker */
        uint64_t size;
        if (app_rendition_peek(a->app, &img, &o, &v) != OK ||
            blob_peek(a->blobs, v.key, &made_fd, &size) != OK) {
            http_defer(req);
            return;
        }
        rc = OK;
    } else if (o.format == IMG_AVIF && is_auto && cfg->transforms.auto_standin)
        rc = app_rendition_standin(a->app, &img, &o, &v, &made_fd, &standin, err, sizeof(err));
    else
        rc = app_rendition(a->app, &img, &o, &v, &made_fd, err, sizeof(err));
    if (rc == E_INVALID) {
        http_reply_error(req, E_INVALID, "%s", err);
        return;
    }
    if (rc == E_NOTFOUND) {
        http_reply_error(req, E_NOTFOUND, "no such image");
        return;
    }
    if (rc != OK) {
        http_reply_error(req, rc == E_BADIMAGE ? E_INTERNAL : E_UNAVAILABLE,
                         "the rendition could not be made: %s",
                         rc == E_UNAVAILABLE ? "too many renditions being made, or storage down"
                                             : err_str(rc));
        return;
    }
    /* a stand-in is replaced by the AVIF soon: caches keep it briefly, never as immutable */
    snprintf(standin_cc, sizeof(standin_cc), "public, max-age=%lld",
             (long long)(cfg->transforms.standin_max_age_ms / 1000));
    send_blob_cc(a, req, img.id, v.key, img_format_mime(img_format_from_name(str_from(v.format))),
                 img.created_at, made_fd,
                 standin ? standin_cc : "public, max-age=31536000, immutable");
}

const struct route api_routes[] = {
    /* decoding, fsyncs and page building block: they run on the worker threads */
    {HTTP_POST, "/api/v1/images", "upload", h_upload, ROUTE_BODY_UPLOAD | ROUTE_BLOCKING},
    {HTTP_GET, "/api/v1/images", "list", h_list, ROUTE_BLOCKING},
    /* answered on the epoll threads when this process holds the record(s) and the bytes */
    {HTTP_GET, "/api/v1/images/*", "image", h_image_get, ROUTE_TRY_INLINE},
    {HTTP_DELETE, "/api/v1/images/*", "delete", h_delete, ROUTE_BLOCKING},
    {HTTP_GET, "/i/*", "bytes", h_bytes, ROUTE_TRY_INLINE},
    {HTTP_GET, "/i/*/*", "variant", h_variant, ROUTE_BLOCKING},
    {HTTP_GET, "/i/*/t/*", "transform", h_transform, ROUTE_BLOCKING | ROUTE_TRY_INLINE},
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
