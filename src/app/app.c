/*
 * app.c - the use cases on the metadata store, blob store, cache and CDN.
 *
 * Invariant (nothing lost): an upload's blob is durably stored before its row
 * is committed, under a pin on its key (meta_blob_pin) taken before the bytes
 * are written; a delete drops rows first and queues a release job, which
 * removes the bytes only under the blob row's lock while no reference and no
 * pin is left (meta_blob_release), in whichever process runs it.
 */
#include "app/app.h"

#include "app/cursor.h"
#include "app/keeper.h"
#include "app/runtime.h"
#include "cache/cache.h"
#include "cdn/cdn.h"
#include "config/config.h"
#include "core/codec.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/log.h"
#include "core/metrics.h"
#include "image/image.h"
#include "image/ops.h"
#include "store/blob.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static struct metric m_uploads = {"tessera_uploads_total", "Images stored by uploads here.",
                                  "counter", 0};
static struct metric m_upload_bytes = {"tessera_upload_bytes_total",
                                       "Bytes of the images stored by uploads here.", "counter", 0};
static struct metric m_made = {"tessera_renditions_made_total",
                               "Renditions (/i/{id}/t/) this process encoded.", "counter", 0};
static struct metric m_refused = {"tessera_renditions_refused_total",
                                  "Renditions answered 503: no room in the memory budget in time.",
                                  "counter", 0};
static struct metric m_budget = {"tessera_renditions_memory_bytes",
                                 "Predicted memory of the renditions being made now.", "gauge", 0};
static struct metric m_lease_waits = {
    "tessera_renditions_lease_waits_total",
    "First requests for a rendition answered with the one another service made (its lease).",
    "counter", 0};
static struct metric m_lease_timeouts = {
    "tessera_renditions_lease_timeouts_total",
    "Renditions made here after waiting transforms.lease_timeout for another service's make.",
    "counter", 0};
static struct metric m_standins = {"tessera_renditions_standins_total",
                                   "auto answered with a WebP stand-in while the AVIF is made.",
                                   "counter", 0};

/* app_budget is transforms.memory_budget, or a quarter of physical memory up to 2 GiB. */
static uint64_t app_budget(const struct config *cfg)
{
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    uint64_t ram = pages > 0 && size > 0 ? (uint64_t)pages * (uint64_t)size : (uint64_t)1 << 32;
    uint64_t quarter = ram / 4;

    if (cfg->transforms.memory_budget > 0)
        return (uint64_t)cfg->transforms.memory_budget;
    return quarter < ((uint64_t)2 << 30) ? quarter : (uint64_t)2 << 30;
}

void app_init(struct app *a, const struct runtime *rt)
{
    pthread_condattr_t mono;

    memset(a, 0, sizeof(*a));
    a->cfg = rt->cfg;
    a->meta = rt->meta;
    a->blobs = rt->blobs;
    a->cache = rt->cache;
    a->cdn = rt->cdn;
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->flight_done, NULL);
    pthread_mutex_init(&a->work_lock, NULL);
    /* renditions wait for room with a deadline that wall-clock steps must not move */
    pthread_condattr_init(&mono);
    pthread_condattr_setclock(&mono, CLOCK_MONOTONIC);
    pthread_cond_init(&a->work_free, &mono);
    pthread_condattr_destroy(&mono);
    pthread_mutex_init(&a->key_lock, NULL);
    a->budget = app_budget(a->cfg);
    while (a->lease_holder == 0) {
        random_bytes(&a->lease_holder, sizeof(a->lease_holder));
        a->lease_holder &= INT64_MAX;
    }
    metric_register(&m_lease_waits);
    metric_register(&m_lease_timeouts);
    metric_register(&m_standins);
    metric_register(&m_uploads);
    metric_register(&m_upload_bytes);
    metric_register(&m_made);
    metric_register(&m_refused);
    metric_register(&m_budget);
}

int app_renditions_start(struct app *a)
{
    return keeper_start(a, &a->keeper);
}

void app_release(struct app *a)
{
    keeper_stop(a->keeper);
    a->keeper = NULL;
    pthread_mutex_destroy(&a->lock);
    pthread_cond_destroy(&a->flight_done);
    pthread_mutex_destroy(&a->work_lock);
    pthread_cond_destroy(&a->work_free);
    pthread_mutex_destroy(&a->key_lock);
    memset(a->cursor_key, 0, sizeof(a->cursor_key));
}

/* --- bounded image work --- */

static void work_enter(struct app *a)
{
    pthread_mutex_lock(&a->work_lock);
    while (a->work_running >= a->cfg->image.max_parallel)
        pthread_cond_wait(&a->work_free, &a->work_lock);
    a->work_running++;
    pthread_mutex_unlock(&a->work_lock);
}

static void work_leave(struct app *a)
{
    /*
     * Connection threads come and go (thread per connection) and libmicrohttpd
     * gives no hook on the exiting thread, so libvips' per-thread buffers are
     * freed after each operation rather than at thread exit.
     */
    img_thread_exit();
    pthread_mutex_lock(&a->work_lock);
    a->work_running--;
    /* waiters want different room (a slot, or bytes of the budget): wake them all */
    pthread_cond_broadcast(&a->work_free);
    pthread_mutex_unlock(&a->work_lock);
}

/*
 * budget_enter waits for a decode slot and for need bytes of the memory
 * budget, at most transforms.queue_timeout: E_UNAVAILABLE then. A rendition
 * predicted larger than the whole budget runs only alone, so it is still made.
 */
static int budget_enter(struct app *a, uint64_t need)
{
    struct timespec deadline;
    int rc = OK;

    time_deadline(&deadline, CLOCK_MONOTONIC, a->cfg->transforms.queue_timeout_ms);
    pthread_mutex_lock(&a->work_lock);
    while (a->work_running >= a->cfg->image.max_parallel ||
           (a->budget_used > 0 && a->budget_used + need > a->budget)) {
        if (pthread_cond_timedwait(&a->work_free, &a->work_lock, &deadline) == ETIMEDOUT) {
            rc = E_UNAVAILABLE;
            break;
        }
    }
    if (rc == OK) {
        a->work_running++;
        a->budget_used += need;
        metric_add(&m_budget, (int64_t)need);
    }
    pthread_mutex_unlock(&a->work_lock);
    if (rc != OK)
        metric_add(&m_refused, 1);
    return rc;
}

static void budget_leave(struct app *a, uint64_t need)
{
    pthread_mutex_lock(&a->work_lock);
    a->budget_used -= need;
    metric_add(&m_budget, -(int64_t)need);
    pthread_mutex_unlock(&a->work_lock);
    work_leave(a);
}

/* --- upload --- */

/* upload_store hashes the file at path, stores it under a pin and records img. */
static int upload_store(struct app *a, const char *path, struct image_rec *img)
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
        log_warn("app", "blob %.16s stays pinned (gc clears stale pins)", img->key);
    return rc;
}

int app_upload(struct app *a, const char *body_path, const char *owner, struct app_upload *out)
{
    const struct config *cfg = a->cfg;
    struct img_limits lim = {(uint64_t)cfg->limits.max_pixels, (uint64_t)cfg->limits.max_frames,
                             (uint64_t)cfg->limits.max_animation_pixels};
    struct image_rec *img = &out->img;
    struct img_info info;
    struct img_error ierr = {""};
    char out_path[512] = "";
    bool unchanged = false;
    struct stat st;
    int rc;

    memset(out, 0, sizeof(*out));
    snprintf(img->owner, sizeof(img->owner), "%s", owner);
    if (stat(body_path, &st) != 0) {
        snprintf(out->message, sizeof(out->message), "the upload body is unreadable");
        return E_IO;
    }
    if (st.st_size == 0) {
        snprintf(out->message, sizeof(out->message), "the upload is empty");
        return E_UNSUPPORTED;
    }
    rc = blob_tmp_path(a->blobs, out_path, sizeof(out_path));
    if (rc != OK) {
        snprintf(out->message, sizeof(out->message), "no temporary path");
        return E_INTERNAL;
    }
    work_enter(a);
    rc = img_ingest(body_path, &lim, out_path, &unchanged, &info, &ierr);
    work_leave(a);
    if (rc != OK) {
        snprintf(out->message, sizeof(out->message), "%s", ierr.msg[0] ? ierr.msg : err_str(rc));
        goto out;
    }
    snprintf(img->format, sizeof(img->format), "%s", img_format_name(info.format));
    img->width = info.width;
    img->height = info.height;
    img->frames = info.frames;
    img->created_at = time_now_us() / 1000000;
    delete_token_new(out->token);
    delete_token_hash(out->token, strlen(out->token), img->token_hash);
    rc = upload_store(a, unchanged ? body_path : out_path, img);
    if (rc != OK) {
        log_error("app", "upload not stored: %s", err_str(rc));
        snprintf(out->message, sizeof(out->message), "the image could not be stored: %s",
                 err_str(rc));
        memset(out->token, 0, sizeof(out->token));
        goto out;
    }
    metric_add(&m_uploads, 1);
    metric_add(&m_upload_bytes, (int64_t)img->bytes);
    log_info("app", "uploaded %s %s %ux%u %llu bytes key %.16s", img->id, img->format, img->width,
             img->height, (unsigned long long)img->bytes, img->key);
out:
    unlink(out_path);
    return rc;
}

/* --- metadata, listing, delete --- */

int app_image_get(struct app *a, const char *id, size_t len, struct image_rec *out)
{
    char buf[IMAGE_ID_MAX + 1];

    if (!image_id_valid(id, len))
        return E_NOTFOUND;
    memcpy(buf, id, len);
    buf[len] = '\0';
    int rc = cache_image_get(a->cache, a->meta, buf, out);
    return rc == OK || rc == E_NOTFOUND ? rc : E_UNAVAILABLE;
}

int app_image_peek(struct app *a, const char *id, size_t len, struct image_rec *out)
{
    char buf[IMAGE_ID_MAX + 1];
    int rc;

    if (!image_id_valid(id, len))
        return E_NOTFOUND;
    memcpy(buf, id, len);
    buf[len] = '\0';
    rc = cache_image_peek(a->cache, buf, out);
    /* a local store without Redis answers without blocking (tessera serve on SQLite) */
    if (rc == E_AGAIN && !meta_may_block(a->meta) && a->cfg->cache.redis[0] == '\0')
        rc = app_image_get(a, id, len, out);
    return rc;
}

int app_list(struct app *a, int64_t before, size_t limit, struct image_rec *out, size_t *n,
             bool *more)
{
    size_t got = 0;

    *n = 0;
    *more = false;
    if (limit == 0 || limit > (size_t)a->cfg->limits.max_list || before < 0)
        return E_INVALID;
    /* one row past the page says whether a next page exists */
    if (meta_image_list(a->meta, before, limit + 1, out, &got) != OK)
        return E_UNAVAILABLE;
    *more = got > limit;
    *n = got > limit ? limit : got;
    return OK;
}

/* cursor_key loads the deployment's cursor secret once (64 hex digits in the settings). */
static int cursor_key(struct app *a, const uint8_t **key)
{
    char hex[2 * CURSOR_KEY_LEN + 2];
    int rc = OK;

    pthread_mutex_lock(&a->key_lock);
    if (!a->cursor_key_loaded) {
        rc = meta_setting_get(a->meta, APP_CURSOR_SECRET, hex, sizeof(hex));
        if (rc == OK &&
            hex_decode(hex, strlen(hex), a->cursor_key, CURSOR_KEY_LEN) != (long)CURSOR_KEY_LEN)
            rc = E_INVALID;
        if (rc != OK)
            log_error("app",
                      "the cursor secret (setting %s) cannot be read: %s; run `tessera "
                      "migrate`",
                      APP_CURSOR_SECRET, err_str(rc));
        a->cursor_key_loaded = rc == OK;
        memset(hex, 0, sizeof(hex));
    }
    pthread_mutex_unlock(&a->key_lock);
    *key = a->cursor_key;
    return rc == OK ? OK : E_UNAVAILABLE;
}

int app_cursor_encode(struct app *a, int64_t seq, char *out, size_t cap)
{
    const uint8_t *key;
    int rc = cap >= CURSOR_LEN ? cursor_key(a, &key) : E_INVALID;

    if (rc == OK)
        cursor_encode(key, seq, out);
    return rc;
}

int app_cursor_decode(struct app *a, const char *s, size_t len, int64_t *seq)
{
    const uint8_t *key;
    int rc = cursor_key(a, &key);

    return rc == OK ? cursor_decode(key, s, len, seq) : rc;
}

int app_delete(struct app *a, const char *id, size_t len, const char *token, bool admin)
{
    struct meta_released rel = {0};
    struct image_rec img;
    char buf[IMAGE_ID_MAX + 1];
    int rc;

    if (!image_id_valid(id, len))
        return E_NOTFOUND;
    memcpy(buf, id, len);
    buf[len] = '\0';
    /* authorization reads the database, never a cache: a cached token hash could be forged */
    rc = meta_image_get(a->meta, buf, &img);
    if (rc != OK)
        return rc == E_NOTFOUND ? rc : E_UNAVAILABLE;
    if (!admin) {
        char h[SHA256_HEX];
        if (token == NULL)
            return E_UNAUTHORIZED;
        delete_token_hash(token, strlen(token), h);
        if (!ct_equal(h, img.token_hash, SHA256_HEX - 1))
            return E_FORBIDDEN;
    }
    rc = meta_image_delete(a->meta, img.id, &rel);
    if (rc != OK)
        return rc == E_NOTFOUND ? rc : E_UNAVAILABLE;
    /* row first, then the caches: a reader can no longer re-fill them from the store */
    cache_image_deleted(a->cache, img.id);
    /* the bytes go in the release jobs queued by the delete's transaction */
    log_info("app", "deleted %s (%zu blobs to release)", img.id, rel.n);
    return OK;
}

/* --- variants --- */

/*
 * flight_join returns true when this thread must make the variant, false
 * after another made it (or failed: its result is then in *made_rc).
 */
static bool flight_join(struct app *a, const char *id, const char *name, struct app_flight **out,
                        int *made_rc)
{
    struct app_flight *free_slot = NULL;
    bool lead = true;

    pthread_mutex_lock(&a->lock);
    for (;;) {
        struct app_flight *mine = NULL;
        free_slot = NULL;
        for (size_t i = 0; i < APP_VARIANT_FLIGHTS; i++) {
            struct app_flight *f = &a->flights[i];
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
        if (!mine->busy) {
            *made_rc = mine->rc; /* the slot is not reused while we wait on it */
            goto out;
        }
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

static void flight_land(struct app *a, struct app_flight *f, int rc)
{
    if (f == NULL)
        return;
    pthread_mutex_lock(&a->lock);
    f->rc = rc;
    f->busy = false;
    pthread_cond_broadcast(&a->flight_done);
    pthread_mutex_unlock(&a->lock);
}

/* What a variant is made from: a preset, or a rendition's options and plan. */
struct make {
    const char *name; /* the variants row */
    const struct variant_preset *vp;
    const struct img_ops *ops;
    const struct img_plan *plan;
};

/* make_pixels runs libvips for m on the blob at src, into out_path; info says what came out. */
static int make_pixels(struct app *a, const struct make *m, const char *src, const char *out_path,
                       struct img_info *info, struct img_error *ierr)
{
    int rc;

    if (m->vp != NULL) {
        struct img_variant_spec spec = {m->vp->width, m->vp->height,
                                        img_format_from_name(str_from(m->vp->format)),
                                        m->vp->quality};
        work_enter(a);
        rc = img_variant(src, &spec, out_path, info, ierr);
        work_leave(a);
        return rc;
    }
    rc = budget_enter(a, m->plan->memory);
    if (rc != OK) {
        snprintf(ierr->msg, sizeof(ierr->msg), "no room in the memory budget");
        return rc;
    }
    rc = img_transform(src, m->ops, m->plan, out_path, info, ierr);
    budget_leave(a, m->plan->memory);
    if (rc == OK)
        metric_add(&m_made, 1);
    return rc;
}

/*
 * variant_make makes, stores and records one variant; fills *v. When the
 * database cannot take the record now (its primary is down) and made_fd is
 * given, *made_fd gets the made bytes to serve unrecorded: made again later.
 */
static int variant_make(struct app *a, const struct image_rec *img, const struct make *m,
                        struct variant_rec *v, int *made_fd)
{
    struct img_info info;
    struct img_error ierr = {""};
    char src[64], out_path[512] = "";
    uint8_t digest[SHA256_LEN];
    uint64_t size = 0;
    struct stat st;
    int fd = -1, ofd = -1;
    int rc;

    rc = blob_open(a->blobs, img->key, &fd, &size);
    if (rc == E_NOTFOUND) {
        /* a live image whose bytes no shard has: not "gone", a fault to retry and repair */
        log_error("app", "image %s: blob %.16s not found on any shard", img->id, img->key);
        rc = E_UNAVAILABLE;
    }
    if (rc != OK)
        goto out;
    rc = blob_tmp_path(a->blobs, out_path, sizeof(out_path));
    if (rc != OK)
        goto out;
    snprintf(src, sizeof(src), "/proc/self/fd/%d", fd);
    rc = make_pixels(a, m, src, out_path, &info, &ierr);
    if (rc != OK) {
        log_error("app", "variant %s of %s: %s", m->name, img->id, ierr.msg);
        goto out;
    }
    ofd = open(out_path, O_RDONLY | O_CLOEXEC);
    if (ofd < 0 || sha256_fd(ofd, digest) != OK || fstat(ofd, &st) != 0) {
        rc = E_IO;
        goto out;
    }
    memset(v, 0, sizeof(*v));
    snprintf(v->image_id, sizeof(v->image_id), "%s", img->id);
    snprintf(v->name, sizeof(v->name), "%s", m->name);
    hex_encode(digest, SHA256_LEN, v->key);
    snprintf(v->format, sizeof(v->format), "%s", img_format_name(info.format));
    v->width = info.width;
    v->height = info.height;
    v->bytes = (uint64_t)st.st_size;
    v->used_at = (int64_t)time(NULL);
    rc = meta_blob_pin(a->meta, v->key, v->bytes);
    if (rc == OK) {
        rc = blob_put_path(a->blobs, v->key, out_path);
        if (rc == OK)
            rc = meta_variant_put(a->meta, v);
        if (rc == OK && META_IS_RENDITION(v->name))
            keeper_recorded(a->keeper); /* over the disk budget now? */
        /* the image deleted meanwhile: the unpin queues the release of the unused bytes */
        if (meta_blob_unpin(a->meta, v->key) != OK)
            log_warn("app", "blob %.16s stays pinned (gc clears stale pins)", v->key);
    }
    if (rc == E_UNAVAILABLE && made_fd != NULL && lseek(ofd, 0, SEEK_SET) == 0) {
        log_warn("app", "variant %s of %s served unrecorded: the database takes no writes now",
                 m->name, img->id);
        *made_fd = ofd;
        ofd = -1;
        rc = OK;
    }
out:
    if (fd >= 0)
        close(fd);
    if (ofd >= 0)
        close(ofd);
    if (out_path[0] != '\0')
        unlink(out_path);
    return rc;
}

/*
 * lease_make makes a rendition once across services: the one that takes the
 * lease in the database makes it; the others poll for its row until
 * transforms.lease_timeout, then take the (expired) lease and make their own.
 * Without a primary (no lease can be written) each makes its own.
 */
static int lease_make(struct app *a, const struct image_rec *img, const struct make *m,
                      struct variant_rec *out, int *made_fd)
{
    int64_t timeout = a->cfg->transforms.lease_timeout_ms;
    int64_t deadline = time_mono_us() / 1000 + timeout;
    useconds_t pause = 10000;
    bool got = false;
    int rc = OK;

    if (timeout == 0 || m->ops == NULL)
        return variant_make(a, img, m, out, made_fd);
    if (meta_lease_take(a->meta, img->id, m->name, a->lease_holder, time_now_us() / 1000 + timeout,
                        &got) == OK &&
        !got) {
        rc = E_NOTFOUND;
        while (rc == E_NOTFOUND && time_mono_us() / 1000 < deadline) {
            usleep(pause);
            pause = pause < 160000 ? pause * 2 : pause;
            rc = meta_variant_get(a->meta, img->id, m->name, out);
        }
        if (rc == OK) {
            metric_add(&m_lease_waits, 1);
            return OK;
        }
        if (rc == E_NOTFOUND) {
            /* the maker is slow or gone: its lease has run out, take it over */
            metric_add(&m_lease_timeouts, 1);
            meta_lease_take(a->meta, img->id, m->name, a->lease_holder,
                            time_now_us() / 1000 + timeout, &got);
        }
    }
    rc = variant_make(a, img, m, out, made_fd);
    if (got && meta_lease_drop(a->meta, img->id, m->name, a->lease_holder) != OK)
        log_debug("app", "lease of %s/t/%s left to run out", img->id, m->name);
    return rc;
}

/* variant_get_or_make is app_variant for any recipe m (single flight per name). */
static int variant_get_or_make(struct app *a, const struct image_rec *img, const struct make *m,
                               struct variant_rec *out, int *made_fd)
{
    struct app_flight *flight = NULL;
    int rc = meta_variant_get(a->meta, img->id, m->name, out);

    if (made_fd != NULL)
        *made_fd = -1;

    /*
     * The first request makes it; concurrent ones wait for it and take its
     * result: the variant it recorded, or its error (not "the image went
     * away"). With every flight slot busy, a thread makes it unshared.
     */
    for (int attempt = 0; rc == E_NOTFOUND && attempt < 3; attempt++) {
        int made_rc = OK;
        if (flight_join(a, img->id, m->name, &flight, &made_rc)) {
            rc = meta_variant_get(a->meta, img->id, m->name, out);
            if (rc == E_NOTFOUND)
                rc = lease_make(a, img, m, out, made_fd);
            flight_land(a, flight, rc);
            break;
        }
        rc = meta_variant_get(a->meta, img->id, m->name, out);
        if (rc == E_NOTFOUND && made_rc != OK) {
            rc = made_rc;
            break;
        }
    }
    return rc;
}

int app_variant(struct app *a, const struct image_rec *img, const struct variant_preset *vp,
                struct variant_rec *out, int *made_fd)
{
    struct make m = {vp->name, vp, NULL, NULL};

    return variant_get_or_make(a, img, &m, out, made_fd);
}

/*
 * rendition_plan plans ops on img (limits checked: E_INVALID with err) and
 * names the rendition (its canonical form, name of OPS_CANON_MAX bytes).
 */
static int rendition_plan(struct app *a, const struct image_rec *img, const struct img_ops *ops,
                          struct img_plan *plan, char *name, char *err, size_t cap)
{
    const struct ops_limits lim = {(uint32_t)a->cfg->transforms.max_dimension,
                                   (uint64_t)a->cfg->limits.max_pixels};
    struct img_source src = {img_format_from_name(str_from(img->format)), img->width, img->height,
                             img->frames, img->bytes};
    struct img_ops o = *ops;
    int rc;

    /* the plan needs a format: "auto" for the rest resolves to JPEG or PNG while encoding */
    o.format = ops->format == IMG_UNKNOWN ? IMG_JPEG : ops->format;
    rc = img_ops_plan(&o, &src, &lim, plan, err, cap);
    if (rc == OK)
        img_ops_canonical(ops, name, OPS_CANON_MAX);
    return rc;
}

int app_rendition_peek(struct app *a, const struct image_rec *img, const struct img_ops *ops,
                       struct variant_rec *out)
{
    struct img_plan plan;
    char name[OPS_CANON_MAX], err[160];

    if (meta_may_block(a->meta) ||
        rendition_plan(a, img, ops, &plan, name, err, sizeof(err)) != OK ||
        meta_variant_get(a->meta, img->id, name, out) != OK)
        return E_AGAIN;
    keeper_used(a->keeper, out);
    return OK;
}

int app_rendition(struct app *a, const struct image_rec *img, const struct img_ops *ops,
                  struct variant_rec *out, int *made_fd, char *err, size_t cap)
{
    struct img_ops o = *ops;
    struct img_plan plan;
    char name[OPS_CANON_MAX];
    struct make m = {name, NULL, &o, &plan};
    int rc;

    if (made_fd != NULL)
        *made_fd = -1;
    rc = rendition_plan(a, img, ops, &plan, name, err, cap);
    if (rc != OK)
        return rc;
    rc = variant_get_or_make(a, img, &m, out, made_fd);
    if (rc == OK && (made_fd == NULL || *made_fd < 0))
        keeper_used(a->keeper, out);
    return rc;
}

/* standin_queue queues the background making of rendition name, once per process a while. */
static void standin_queue(struct app *a, const char *id, const char *name)
{
    char payload[META_JOB_PAYLOAD_MAX];
    int64_t now = time_mono_us() / 1000;
    bool recent = false;

    snprintf(payload, sizeof(payload), "%s/t/%s", id, name);
    pthread_mutex_lock(&a->lock);
    for (size_t i = 0; i < APP_STANDIN_RECENT && !recent; i++)
        recent = strcmp(a->standin_queued[i].payload, payload) == 0 &&
                 now - a->standin_queued[i].at < a->cfg->transforms.lease_timeout_ms + 60000;
    if (!recent) {
        size_t i = a->standin_next++ % APP_STANDIN_RECENT;
        snprintf(a->standin_queued[i].payload, sizeof(a->standin_queued[i].payload), "%s", payload);
        a->standin_queued[i].at = now;
    }
    pthread_mutex_unlock(&a->lock);
    /* without a primary nothing is queued: a later request queues it again */
    if (!recent && meta_job_enqueue(a->meta, META_JOB_RENDITION, payload, 0) != OK)
        log_warn("app", "rendition %s not queued: the database takes no writes now", payload);
}

int app_rendition_standin(struct app *a, const struct image_rec *img, const struct img_ops *ops,
                          struct variant_rec *out, int *made_fd, bool *standin, char *err,
                          size_t cap)
{
    struct img_ops webp = *ops;
    char name[OPS_CANON_MAX];
    int rc;

    *standin = false;
    if (made_fd != NULL)
        *made_fd = -1;
    img_ops_canonical(ops, name, sizeof(name));
    rc = meta_variant_get(a->meta, img->id, name, out);
    if (rc == OK) {
        keeper_used(a->keeper, out);
        return OK;
    }
    if (rc != E_NOTFOUND)
        return E_UNAVAILABLE;
    webp.format = IMG_WEBP;
    rc = app_rendition(a, img, &webp, out, made_fd, err, cap);
    if (rc == OK) {
        standin_queue(a, img->id, name);
        metric_add(&m_standins, 1);
        *standin = true;
    }
    return rc;
}

/* --- jobs --- */

static int release_fn(void *arg, const char *key)
{
    struct app *a = arg;

    return blob_delete(a->blobs, key);
}

/* job_variants makes every preset variant of an image not made yet (idempotent). */
static int job_variants(struct app *a, const char *id, char *err, size_t cap)
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
        rc = app_variant(a, &img, &a->cfg->variant[i], &v, NULL);
        if (rc == E_NOTFOUND)
            rc = OK; /* the image went away */
        if (rc != OK)
            snprintf(err, cap, "variant %s of %s: %s", a->cfg->variant[i].name, img.id,
                     err_str(rc));
    }
    return rc;
}

/* job_rendition makes the rendition "id/t/ops.ext" if not made yet (idempotent). */
static int job_rendition(struct app *a, const char *payload, char *err, size_t cap)
{
    const struct ops_limits lim = {(uint32_t)a->cfg->transforms.max_dimension,
                                   (uint64_t)a->cfg->limits.max_pixels};
    const char *sep = strstr(payload, "/t/");
    struct str ops, ext;
    struct img_ops o;
    struct image_rec img;
    struct variant_rec v;
    const char *dot;
    int rc;

    dot = sep != NULL ? strrchr(sep, '.') : NULL;
    if (dot == NULL) {
        snprintf(err, cap, "rendition: malformed payload \"%.64s\"", payload);
        return E_INVALID;
    }
    ops = (struct str){sep + 3, (size_t)(dot - sep - 3)};
    ext = str_from(dot + 1);
    rc = img_ops_parse(ops, ext, &lim, &o, err, cap);
    if (rc == OK)
        rc = app_image_get(a, payload, (size_t)(sep - payload), &img);
    if (rc == E_NOTFOUND)
        return OK; /* the image went away: nothing to make */
    if (rc == OK)
        rc = app_rendition(a, &img, &o, &v, NULL, err, cap);
    if (rc == E_NOTFOUND)
        rc = OK;
    if (rc != OK && err[0] == '\0')
        snprintf(err, cap, "rendition %.100s: %s", payload, err_str(rc));
    return rc;
}

int app_job_run(void *arg, const struct meta_job *job, char *err, size_t cap)
{
    struct app *a = arg;
    int rc;

    if (strcmp(job->kind, META_JOB_VARIANTS) == 0)
        return job_variants(a, job->payload, err, cap);
    if (strcmp(job->kind, META_JOB_RELEASE) == 0) {
        rc = meta_blob_release(a->meta, job->payload, release_fn, a);
        if (rc == E_EXISTS)
            rc = OK; /* referenced or pinned again: the bytes stay */
        if (rc != OK)
            snprintf(err, cap, "release %.16s: %s", job->payload, err_str(rc));
        return rc;
    }
    if (strcmp(job->kind, META_JOB_PURGE) == 0 || strcmp(job->kind, META_JOB_PURGE_RENDITION) == 0)
        return cdn_purge(a->cdn, job->payload, err, cap); /* idempotent; OK without a purger */
    if (strcmp(job->kind, META_JOB_RENDITION) == 0)
        return job_rendition(a, job->payload, err, cap);
    snprintf(err, cap, "unknown job kind \"%s\"", job->kind);
    return E_INVALID;
}
