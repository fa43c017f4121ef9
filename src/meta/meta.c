/*
 * meta.c - the backend-independent half of the metadata store.
 *
 * Checks every argument once (ids, keys, names, formats, string termination)
 * and dispatches to the backend's ops table, so no backend sees a malformed
 * record and every backend answers bad input the same way.
 */
#include "core/crypto.h"
#include "core/err.h"
#include "core/xalloc.h"
#include "meta/meta_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct meta_store *meta_store_new(const struct meta_ops *ops, void *be)
{
    struct meta_store *ms = xmalloc(sizeof(*ms));

    ms->ops = ops;
    ms->tx = ops->tx;
    ms->be = be;
    return ms;
}

int64_t meta_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t meta_lease_new(void)
{
    int64_t v = 0;

    while (v == 0) {
        uint8_t b[8];
        random_bytes(b, sizeof(b));
        memcpy(&v, b, sizeof(v));
        v &= INT64_MAX;
    }
    return v;
}

int meta_open(const struct meta_options *o, struct meta_store **out)
{
    *out = NULL;
    if (o->url == NULL || o->url[0] == '\0')
        return meta_open_sqlite(o->sqlite_path, out);
    return meta_open_pg(o, out);
}

const char *meta_backend(const struct meta_store *ms)
{
    return ms->ops->name;
}

void meta_nodes(struct meta_store *ms, struct meta_node *out, size_t cap, size_t *n)
{
    *n = 0;
    if (cap > 0)
        ms->ops->nodes(ms->be, out, cap, n);
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
/* a variant name: a preset's, or a rendition's canonical "w:300,h:200,fit:cover.webp" */
#define VARIANT_EXTRA "_-:,."

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
    return id_ok(v->image_id) && word_ok(v->name, META_VARIANT_MAX, VARIANT_EXTRA) &&
           key_ok(v->key) && word_ok(v->format, META_FORMAT_MAX, "") && v->bytes <= INT64_MAX;
}

int meta_ping(struct meta_store *ms)
{
    return ms->ops->ping(ms->be);
}

int meta_image_insert(struct meta_store *ms, struct image_rec *img)
{
    if (img == NULL || !image_ok(img))
        return E_INVALID;
    return meta_refs_image_insert(ms, img);
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
    return meta_refs_image_delete(ms, id, rel);
}

int meta_variant_get(struct meta_store *ms, const char *image_id, const char *name,
                     struct variant_rec *out)
{
    if (!id_ok(image_id) || name == NULL || !word_ok(name, META_VARIANT_MAX, VARIANT_EXTRA))
        return E_NOTFOUND;
    return ms->ops->variant_get(ms->be, image_id, name, out);
}

int meta_variant_put(struct meta_store *ms, const struct variant_rec *v)
{
    if (v == NULL || !variant_ok(v))
        return E_INVALID;
    return meta_refs_variant_put(ms, v);
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

int meta_blob_pin(struct meta_store *ms, const char *key, uint64_t bytes)
{
    if (!key_ok(key) || bytes > INT64_MAX)
        return E_INVALID;
    return meta_refs_blob_pin(ms, key, bytes);
}

int meta_blob_unpin(struct meta_store *ms, const char *key)
{
    if (!key_ok(key))
        return E_INVALID;
    return meta_refs_blob_unpin(ms, key);
}

int meta_blob_release(struct meta_store *ms, const char *key, meta_release_fn *fn, void *arg)
{
    if (!key_ok(key) || fn == NULL)
        return E_INVALID;
    return meta_refs_blob_release(ms, key, fn, arg);
}

int meta_blob_get(struct meta_store *ms, const char *key, struct meta_blob *out)
{
    memset(out, 0, sizeof(*out));
    if (!key_ok(key))
        return E_INVALID;
    return ms->ops->blob_get(ms->be, key, out);
}

int meta_gc_count(struct meta_store *ms, const struct meta_gc_cutoffs *c,
                  struct meta_gc_counts *out)
{
    memset(out, 0, sizeof(*out));
    if (c == NULL)
        return E_INVALID;
    return ms->ops->gc_count(ms->be, c, out);
}

int meta_blob_list_unused(struct meta_store *ms, const char *after, int64_t created_before,
                          struct meta_blob *out, size_t cap, size_t *n)
{
    *n = 0;
    if (after == NULL)
        after = "";
    if ((after[0] != '\0' && !key_ok(after)) || out == NULL)
        return E_INVALID;
    if (cap == 0)
        return OK;
    return ms->ops->blob_list_unused(ms->be, after, created_before, out, cap, n);
}

int meta_blob_unpin_stale(struct meta_store *ms, int64_t pinned_before, int64_t *n)
{
    *n = 0;
    return meta_refs_blob_unpin_stale(ms, pinned_before, n);
}

int meta_blob_collect_orphan(struct meta_store *ms, const char *key, meta_release_fn *fn, void *arg)
{
    if (!key_ok(key) || fn == NULL)
        return E_INVALID;
    return meta_refs_blob_collect_orphan(ms, key, fn, arg);
}

int meta_variants_drop_dead(struct meta_store *ms, size_t limit, int64_t *n, uint64_t *bytes)
{
    *n = 0;
    *bytes = 0;
    if (limit == 0)
        return OK;
    return meta_refs_variants_drop_dead(ms, limit, n, bytes);
}

int meta_job_purge_dead(struct meta_store *ms, int64_t before_ms, int64_t *n)
{
    *n = 0;
    return ms->ops->job_purge_dead(ms->be, before_ms, n);
}

static bool payload_ok(const char *payload)
{
    size_t len = payload ? strnlen(payload, META_JOB_PAYLOAD_MAX) : META_JOB_PAYLOAD_MAX;

    if (len == META_JOB_PAYLOAD_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)payload[i] < 0x20 || (unsigned char)payload[i] >= 0x7f)
            return false;
    }
    return true;
}

int meta_job_enqueue(struct meta_store *ms, const char *kind, const char *payload, int64_t delay_ms)
{
    if (kind == NULL || !word_ok(kind, META_JOB_KIND_MAX, "") || !payload_ok(payload) ||
        delay_ms < 0)
        return E_INVALID;
    return ms->ops->job_enqueue(ms->be, kind, payload, delay_ms);
}

int meta_job_claim(struct meta_store *ms, int64_t lease_ms, struct meta_job *out)
{
    if (lease_ms <= 0 || out == NULL)
        return E_INVALID;
    memset(out, 0, sizeof(*out));
    return ms->ops->job_claim(ms->be, lease_ms, out);
}

int meta_job_done(struct meta_store *ms, const struct meta_job *job)
{
    if (job == NULL || job->id <= 0)
        return E_INVALID;
    return ms->ops->job_done(ms->be, job);
}

int meta_job_fail(struct meta_store *ms, const struct meta_job *job, const char *error,
                  int max_attempts, int64_t retry_ms)
{
    char msg[META_JOB_ERROR_MAX];

    if (job == NULL || job->id <= 0 || max_attempts < 1 || retry_ms < 0)
        return E_INVALID;
    snprintf(msg, sizeof(msg), "%s", error ? error : "");
    return ms->ops->job_fail(ms->be, job, msg, max_attempts, retry_ms);
}

int meta_job_extend(struct meta_store *ms, const struct meta_job *job, int64_t lease_ms)
{
    if (job == NULL || job->id <= 0 || lease_ms <= 0)
        return E_INVALID;
    return ms->ops->job_extend(ms->be, job, lease_ms);
}

void meta_job_stats_add(struct meta_job_stats *st, const char *kind, const int64_t v[6],
                        int64_t now)
{
    int64_t age = v[3] > 0 ? (now - v[3]) / 1000 : 0;

    st->queued += v[0];
    st->running += v[1];
    st->dead += v[2];
    if (age > st->oldest_age)
        st->oldest_age = age;
    if (st->nkinds == META_JOB_KINDS_MAX)
        return;
    struct meta_job_kind_stats *k = &st->kind[st->nkinds++];
    snprintf(k->kind, sizeof(k->kind), "%s", kind);
    k->queued = v[0];
    k->running = v[1];
    k->dead = v[2];
    k->due = v[4];
    k->oldest_due_age = v[5] > 0 && now > v[5] ? (now - v[5]) / 1000 : 0;
}

int meta_job_stats(struct meta_store *ms, struct meta_job_stats *st)
{
    memset(st, 0, sizeof(*st));
    return ms->ops->job_stats(ms->be, st);
}

bool meta_may_block(const struct meta_store *ms)
{
    return strcmp(ms->ops->name, "sqlite") != 0;
}

static bool ref_ok(const struct meta_variant_ref *v)
{
    return v != NULL && id_ok(v->image_id) && word_ok(v->name, META_VARIANT_MAX, VARIANT_EXTRA);
}

int meta_variants_touch(struct meta_store *ms, const struct meta_variant_ref *refs, size_t n,
                        int64_t now)
{
    if (n == 0)
        return OK;
    for (size_t i = 0; i < n; i++)
        if (!ref_ok(&refs[i]))
            return E_INVALID;
    return meta_refs_variants_touch(ms, refs, n, now);
}

int meta_renditions_evict(struct meta_store *ms, uint64_t budget, struct meta_evicted *out)
{
    if (budget > INT64_MAX)
        budget = INT64_MAX;
    return meta_refs_renditions_evict(ms, budget, out);
}

/* lease_ref checks a lease's variant and copies it into a ref. */
static bool lease_ref(const char *image_id, const char *name, int64_t holder,
                      struct meta_variant_ref *v)
{
    if (image_id == NULL || name == NULL || holder == 0)
        return false;
    snprintf(v->image_id, sizeof(v->image_id), "%.*s", (int)(sizeof(v->image_id) - 1), image_id);
    snprintf(v->name, sizeof(v->name), "%.*s", (int)(sizeof(v->name) - 1), name);
    return strcmp(v->image_id, image_id) == 0 && strcmp(v->name, name) == 0 && ref_ok(v);
}

int meta_lease_take(struct meta_store *ms, const char *image_id, const char *name, int64_t holder,
                    int64_t until_ms, bool *got)
{
    struct meta_variant_ref v;

    *got = false;
    if (!lease_ref(image_id, name, holder, &v))
        return E_INVALID;
    return meta_refs_lease_take(ms, &v, holder, until_ms, got);
}

int meta_lease_drop(struct meta_store *ms, const char *image_id, const char *name, int64_t holder)
{
    struct meta_variant_ref v;

    if (!lease_ref(image_id, name, holder, &v))
        return E_INVALID;
    return meta_refs_lease_drop(ms, &v, holder);
}
