/*
 * meta.h - the metadata store interface: images, variants, blob reference counts.
 *
 * The source of truth for what exists. SQLite (WAL) is the embedded backend;
 * PostgreSQL implements the same calls. Invariant: a row never names a blob
 * that was not durably stored first (callers put blobs before rows), and a
 * blob's reference count equals the live images and variants that name it.
 * Every function is thread-safe and may block.
 */
#ifndef META_META_H
#define META_META_H

#include "core/crypto.h"
#include "core/ident.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define META_FORMAT_MAX         8  /* "jpeg", "webp", ... and a NUL */
#define META_VARIANT_MAX        32 /* variant names: [a-z0-9_-]{1,31} */
#define META_OWNER_MAX          64
#define META_VARIANTS_PER_IMAGE 32
#define META_RELEASE_MAX        (1 + META_VARIANTS_PER_IMAGE) /* the image blob and its variants */

struct image_rec {
    char id[IMAGE_ID_MAX + 1];
    int64_t seq;          /* listing order, assigned by the store on insert, grows */
    char key[SHA256_HEX]; /* blob key: sha256 of the stored bytes */
    char format[META_FORMAT_MAX];
    uint32_t width;
    uint32_t height;
    uint32_t frames;
    uint64_t bytes;
    int64_t created_at;          /* seconds since the epoch, UTC */
    char owner[META_OWNER_MAX];  /* API key id, "" for none */
    char token_hash[SHA256_HEX]; /* hex SHA-256 of the delete token */
};

struct variant_rec {
    char image_id[IMAGE_ID_MAX + 1];
    char name[META_VARIANT_MAX];
    char key[SHA256_HEX];
    char format[META_FORMAT_MAX];
    uint32_t width;
    uint32_t height;
    uint64_t bytes;
};

/* Blob keys whose reference count reached zero: the caller removes those blobs. */
struct meta_released {
    size_t n;
    char keys[META_RELEASE_MAX][SHA256_HEX];
};

struct meta_store;

/*
 * meta_open_sqlite opens (creating if needed) the SQLite database at path in
 * WAL mode and applies the embedded migrations. E_IO if it cannot.
 */
int meta_open_sqlite(const char *path, struct meta_store **out);

/* meta_close closes the store; NULL is fine. */
void meta_close(struct meta_store *ms);

/* meta_ping: OK when the store answers queries now, else E_UNAVAILABLE (readiness). */
int meta_ping(struct meta_store *ms);

/*
 * meta_image_insert records a new image and takes one reference on its blob
 * (creating the blob's row with one reference if new), in one transaction.
 * Sets img->seq. E_EXISTS if the id is taken (live or deleted: ids are never
 * reused), E_INVALID for a malformed record (id, key, format, token_hash),
 * E_UNAVAILABLE when the database stays locked, E_NOSPACE on a full disk.
 */
int meta_image_insert(struct meta_store *ms, struct image_rec *img);

/*
 * meta_image_get fills *out for a live image; E_NOTFOUND if unknown or deleted
 * (also for an id that is not well-formed: it cannot exist).
 */
int meta_image_get(struct meta_store *ms, const char *id, struct image_rec *out);

/*
 * meta_image_list fills out[0..*n) with live images, newest first (seq
 * descending), those with seq < before (before <= 0: from the newest), at most
 * limit of them. Cost does not grow with the number of images (keyset on seq).
 */
int meta_image_list(struct meta_store *ms, int64_t before, size_t limit, struct image_rec *out,
                    size_t *n);

/*
 * meta_image_delete marks a live image deleted and, in the same transaction,
 * drops its variants and one reference from each blob it and its variants
 * named; keys whose count reached zero (and whose blob rows were removed) are
 * reported in *rel (rel may be NULL; rel->n is 0 on failure). E_NOTFOUND if
 * unknown or already deleted.
 */
int meta_image_delete(struct meta_store *ms, const char *id, struct meta_released *rel);

/* meta_variant_get fills *out; E_NOTFOUND when the variant was not made yet (or the image is gone).
 */
int meta_variant_get(struct meta_store *ms, const char *image_id, const char *name,
                     struct variant_rec *out);

/*
 * meta_variant_put records a made variant and takes one reference on its blob.
 * Idempotent: if the variant is already recorded, nothing changes
 * and OK is returned. E_NOTFOUND if the image is unknown or deleted,
 * E_INVALID for a malformed record (name: [a-z0-9_-]{1,31}), E_TOOBIG if the
 * image already has META_VARIANTS_PER_IMAGE variants (so a delete can always
 * report every blob it releases in struct meta_released).
 */
int meta_variant_put(struct meta_store *ms, const struct variant_rec *v);

/* meta_blob_refs sets *refs to the blob's reference count (0 when it has no row); E_INVALID bad
 * key. */
int meta_blob_refs(struct meta_store *ms, const char *key, int64_t *refs);

/*
 * meta_setting_get copies the value of a named setting that every service
 * must agree on (e.g. "ring.epoch") into value (capacity cap). E_NOTFOUND if
 * never set, E_TOOBIG if it does not fit. Names: [a-z0-9_.-]{1,63}.
 */
int meta_setting_get(struct meta_store *ms, const char *name, char *value, size_t cap);

/* meta_setting_set stores a named setting (insert or replace); E_INVALID bad name. */
int meta_setting_set(struct meta_store *ms, const char *name, const char *value);

/* meta_image_count sets *n to the number of live images (for metrics and tests). */
int meta_image_count(struct meta_store *ms, int64_t *n);

#endif
