/*
 * meta.c - the backend-independent half of the metadata store.
 *
 * Checks every argument once (ids, keys, names, formats, string termination)
 * and dispatches to the backend's ops table, so no backend sees a malformed
 * record and every backend answers bad input the same way.
 */
#include "core/err.h"
#include "core/xalloc.h"
#include "meta/meta_int.h"

#include <stdlib.h>
#include <string.h>

struct meta_store *meta_store_new(const struct meta_ops *ops, void *be)
{
    struct meta_store *ms = xmalloc(sizeof(*ms));

    ms->ops = ops;
    ms->be = be;
    return ms;
}

void meta_close(struct meta_store *ms)
{
    if (ms == NULL)
        return;
    ms->ops->close(ms->be);
    free(ms);
}

static bool id_ok(const char *id)
{
    return id != NULL && image_id_valid(id, strnlen(id, IMAGE_ID_MAX + 1));
}

static bool key_ok(const char *key)
{
    return key != NULL && blob_key_valid(key, strnlen(key, SHA256_HEX));
}

/* A NUL-terminated string of 1..cap-1 characters from [a-z0-9] plus extra. */
static bool word_ok(const char *s, size_t cap, const char *extra)
{
    size_t len = strnlen(s, cap);

    if (len == 0 || len == cap)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr(extra, c) != NULL))
            return false;
    }
    return true;
}

static bool image_ok(const struct image_rec *img)
{
    return id_ok(img->id) && key_ok(img->key) && word_ok(img->format, META_FORMAT_MAX, "") &&
           strnlen(img->owner, META_OWNER_MAX) < META_OWNER_MAX && key_ok(img->token_hash) &&
           img->bytes <= INT64_MAX;
}

static bool variant_ok(const struct variant_rec *v)
{
    return id_ok(v->image_id) && word_ok(v->name, META_VARIANT_MAX, "_-") && key_ok(v->key) &&
           word_ok(v->format, META_FORMAT_MAX, "") && v->bytes <= INT64_MAX;
}

int meta_ping(struct meta_store *ms)
{
    return ms->ops->ping(ms->be);
}

int meta_image_insert(struct meta_store *ms, struct image_rec *img)
{
    if (img == NULL || !image_ok(img))
        return E_INVALID;
    return ms->ops->image_insert(ms->be, img);
}

int meta_image_get(struct meta_store *ms, const char *id, struct image_rec *out)
{
    if (!id_ok(id))
        return E_NOTFOUND; /* no such id can exist */
    return ms->ops->image_get(ms->be, id, out);
}

int meta_image_list(struct meta_store *ms, int64_t before, size_t limit, struct image_rec *out,
                    size_t *n)
{
    *n = 0;
    if (limit == 0)
        return OK;
    if (out == NULL)
        return E_INVALID;
    return ms->ops->image_list(ms->be, before <= 0 ? INT64_MAX : before, limit, out, n);
}

int meta_image_delete(struct meta_store *ms, const char *id, struct meta_released *rel)
{
    struct meta_released ignored;

    if (rel == NULL)
        rel = &ignored;
    rel->n = 0;
    if (!id_ok(id))
        return E_NOTFOUND;
    return ms->ops->image_delete(ms->be, id, rel);
}

int meta_variant_get(struct meta_store *ms, const char *image_id, const char *name,
                     struct variant_rec *out)
{
    if (!id_ok(image_id) || name == NULL || !word_ok(name, META_VARIANT_MAX, "_-"))
        return E_NOTFOUND;
    return ms->ops->variant_get(ms->be, image_id, name, out);
}

int meta_variant_put(struct meta_store *ms, const struct variant_rec *v)
{
    if (v == NULL || !variant_ok(v))
        return E_INVALID;
    return ms->ops->variant_put(ms->be, v);
}

int meta_blob_refs(struct meta_store *ms, const char *key, int64_t *refs)
{
    *refs = 0;
    if (!key_ok(key))
        return E_INVALID;
    return ms->ops->blob_refs(ms->be, key, refs);
}

int meta_image_count(struct meta_store *ms, int64_t *n)
{
    *n = 0;
    return ms->ops->image_count(ms->be, n);
}

int meta_setting_get(struct meta_store *ms, const char *name, char *value, size_t cap)
{
    if (name == NULL || !word_ok(name, 64, "_.-") || value == NULL || cap == 0)
        return E_INVALID;
    value[0] = '\0';
    return ms->ops->setting_get(ms->be, name, value, cap);
}

int meta_setting_set(struct meta_store *ms, const char *name, const char *value)
{
    if (name == NULL || !word_ok(name, 64, "_.-") || value == NULL)
        return E_INVALID;
    return ms->ops->setting_set(ms->be, name, value);
}
