/*
 * app.h - the use cases of an image host, with no HTTP and no JSON.
 *
 * Upload, look up, list, delete, get-or-make a variant, and the job handlers
 * (variants, blob release, CDN purge). Each takes the stores through one
 * struct app and returns a status code of core/err.h plus a record; the
 * adapters in services/ turn those into answers. The invariant every use
 * case keeps (nothing lost): an upload's bytes are durably stored, under a pin
 * on their key, before the row that names them is committed; a delete drops
 * rows first and queues a release job, which removes bytes only while no
 * reference and no pin is left (meta_blob_release).
 */
#ifndef APP_APP_H
#define APP_APP_H

#include "core/ident.h"
#include "meta/meta.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

struct config;
struct runtime;
struct variant_preset;
struct blob_store;
struct cache;
struct cdn;
struct img_ops;
struct keeper;

#define APP_VARIANT_FLIGHTS 64
#define APP_MESSAGE_MAX     256
#define APP_CURSOR_SECRET   "cursor.secret" /* settings row made by the first migration */
#define APP_STANDIN_RECENT  64 /* background AVIF makes remembered, so each is queued once */

/* One variant being made; others asking for it wait instead of making it again. */
struct app_flight {
    char image_id[IMAGE_ID_MAX + 1];
    char name[META_VARIANT_MAX];
    int waiters;
    bool busy;
    int rc; /* the maker's result, once it landed */
};

struct app {
    const struct config *cfg;
    struct meta_store *meta;
    struct blob_store *blobs;
    struct cache *cache; /* NULL: none */
    struct cdn *cdn;     /* NULL: none (purge jobs do nothing) */
    pthread_mutex_t lock;
    pthread_cond_t flight_done;
    struct app_flight flights[APP_VARIANT_FLIGHTS];
    pthread_mutex_t work_lock; /* bounds concurrent decodes: memory stays bounded */
    pthread_cond_t work_free;  /* CLOCK_MONOTONIC: renditions wait on it with a deadline */
    int work_running;
    uint64_t budget;      /* transforms.memory_budget in force */
    uint64_t budget_used; /* predicted bytes of the renditions being made (work_lock) */
    pthread_mutex_t key_lock;
    bool cursor_key_loaded; /* guarded by key_lock; then read-only */
    uint8_t cursor_key[32]; /* the deployment's cursor secret (settings "cursor.secret") */
    struct keeper *keeper;  /* the renditions' disk budget (app_renditions_start); NULL: none */
    int64_t lease_holder;   /* this process, in rendition leases */
    struct {
        char payload[META_JOB_PAYLOAD_MAX];
        int64_t at;                       /* monotonic ms it was queued */
    } standin_queued[APP_STANDIN_RECENT]; /* guarded by lock */
    size_t standin_next;
};

/* app_init prepares a on the parts of rt (borrowed: rt must outlive a). */
void app_init(struct app *a, const struct runtime *rt);

/*
 * app_renditions_start starts the renditions' disk budget keeper (touches,
 * eviction: app/keeper.h) in a process that serves renditions, when
 * transforms.cache_bytes is set; app_release stops it. E_INTERNAL when its
 * thread cannot start.
 */
int app_renditions_start(struct app *a);

/* app_release frees what app_init made (not the stores). */
void app_release(struct app *a);

/* What an upload made: the record, its one-time delete token, and whether it was a duplicate. */
struct app_upload {
    struct image_rec img;
    char token[DELETE_TOKEN_LEN + 1];
    char message[APP_MESSAGE_MAX]; /* why, on an error */
};

/*
 * app_upload validates the image in the file at body_path (the request body,
 * left in place), normalises it, stores its bytes and records a new image
 * owned by owner ("" for none). OK: out->img and out->token are set.
 * Errors, each with out->message: E_UNSUPPORTED (empty or not an accepted
 * format), E_BADIMAGE (corrupt, too many pixels or frames), E_TOOBIG, and
 * from the stores E_UNAVAILABLE, E_NOSPACE, E_IO (nothing recorded).
 * Blocks; thread-safe.
 */
int app_upload(struct app *a, const char *body_path, const char *owner, struct app_upload *out);

/*
 * app_image_get reads the live image with the id of len bytes at id (cache,
 * then the store). E_NOTFOUND for a malformed, unknown or deleted id,
 * E_UNAVAILABLE when the store cannot answer. Blocks; thread-safe.
 */
int app_image_get(struct app *a, const char *id, size_t len, struct image_rec *out);

/*
 * app_image_peek is app_image_get for a thread that must not block: from this
 * process's cache, or from a local store when no Redis is in the way (tessera
 * serve); E_AGAIN when only app_image_get can tell.
 */
int app_image_peek(struct app *a, const char *id, size_t len, struct image_rec *out);

/*
 * app_list fills out (capacity limit + 1) with the live images older than seq
 * before (0: from the newest), newest first; *n how many, *more whether
 * older ones remain. E_INVALID for a limit of 0 or over limits.max_list,
 * E_UNAVAILABLE. Blocks; thread-safe.
 */
int app_list(struct app *a, int64_t before, size_t limit, struct image_rec *out, size_t *n,
             bool *more);

/*
 * app_cursor_encode writes the opaque cursor of the position after seq into
 * out (capacity cap >= CURSOR_LEN of app/cursor.h); app_cursor_decode reads
 * one back (E_INVALID for a cursor not made with this deployment's secret).
 * The secret is made by the first migration and read once from the store:
 * E_UNAVAILABLE while it cannot be read. Blocks the first time; thread-safe.
 */
int app_cursor_encode(struct app *a, int64_t seq, char *out, size_t cap);
int app_cursor_decode(struct app *a, const char *s, size_t len, int64_t *seq);

/*
 * app_delete deletes the live image id: allowed with admin, or with token
 * (its delete token; compared in constant time with the hash read from the
 * metadata store, never from a cache). OK when deleted: its rows
 * are gone, caches invalidated, and release and purge jobs queued.
 * E_UNAUTHORIZED (no token and not admin), E_FORBIDDEN (wrong token),
 * E_NOTFOUND (unknown or already deleted), E_UNAVAILABLE. Blocks; thread-safe.
 */
int app_delete(struct app *a, const char *id, size_t len, const char *token, bool admin);

/*
 * app_variant returns the variant vp of img, making it on first request:
 * concurrent requests for one variant in this process wait for one maker
 * (single flight). E_NOTFOUND when the image went away, E_BADIMAGE when the
 * source cannot be decoded, E_UNAVAILABLE, E_IO. When made_fd is given and
 * the variant was made but cannot be recorded (the database takes no writes
 * now), answers OK with *made_fd open on its bytes (the caller serves and
 * closes it; out has its key) instead of E_UNAVAILABLE; else *made_fd is -1.
 * Blocks; thread-safe.
 */
int app_variant(struct app *a, const struct image_rec *img, const struct variant_preset *vp,
                struct variant_rec *out, int *made_fd);

/*
 * app_rendition returns the rendition ops (parsed by img_ops_parse; format
 * IMG_UNKNOWN: "auto" for a client that takes neither AVIF nor WebP, made as
 * JPEG, or PNG for an image with alpha) of img, making it on first request
 * like app_variant (single flight; made_fd as there). It is recorded as the
 * variant named by its canonical form. Making waits for room in the memory
 * budget (transforms.memory_budget, predicted from the record before any
 * decode) at most transforms.queue_timeout: E_UNAVAILABLE then. E_INVALID
 * with err (capacity cap) naming the key when the output would exceed
 * limits.max_pixels; E_NOTFOUND, E_BADIMAGE, E_UNAVAILABLE, E_IO as
 * app_variant. Blocks; thread-safe.
 */
int app_rendition(struct app *a, const struct image_rec *img, const struct img_ops *ops,
                  struct variant_rec *out, int *made_fd, char *err, size_t cap);

/*
 * app_rendition_peek is app_rendition for a thread that must not block: OK
 * with out when the rendition is recorded already and the metadata store is
 * local (SQLite), else E_AGAIN (app_rendition decides, errors included).
 */
int app_rendition_peek(struct app *a, const struct image_rec *img, const struct img_ops *ops,
                       struct variant_rec *out);

/*
 * app_rendition_standin is app_rendition for "auto" answered in AVIF (ops
 * with format IMG_AVIF) under transforms.auto_standin: when the AVIF
 * rendition exists it is out (*standin false); else its making is queued as
 * a background job (once per process for a while) and out is the WebP
 * rendition, made now if need be, with *standin true: the caller answers it
 * as a stand-in (short max-age, never immutable). Errors as app_rendition.
 */
int app_rendition_standin(struct app *a, const struct image_rec *img, const struct img_ops *ops,
                          struct variant_rec *out, int *made_fd, bool *standin, char *err,
                          size_t cap);

/*
 * app_job_run is the job handler (jobs_handler_fn, arg a struct app) of every
 * role that runs jobs: "variants" makes an image's missing preset variants,
 * "release" removes a blob nothing references, "purge" purges the CDN,
 * "purge_rendition" purges one evicted rendition's URLs, "rendition" makes
 * one rendition (a stand-in's AVIF).
 * Idempotent; may block.
 */
int app_job_run(void *arg, const struct meta_job *job, char *err, size_t cap);

#endif
