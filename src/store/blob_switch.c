/*
 * blob_switch.c - the current and previous ring stores, replaceable live.
 *
 * Each store is held through a reference-counted holder: a call takes a
 * reference under the mutex (a few instructions), works without it, and
 * drops the reference; a replaced store is freed by whoever drops its last
 * reference. So a swap never waits for a slow upload, and no call ever sees
 * a freed store.
 */
#include "store/blob_switch.h"

#include "core/err.h"
#include "core/xalloc.h"
#include "store/blob_int.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

struct sw_ref {
    struct blob_store *bs;
    atomic_int refs;
};

struct sw {
    pthread_mutex_t lock;
    struct sw_ref *cur;  /* never NULL */
    struct sw_ref *prev; /* NULL: no rebalance in progress */
};

static struct sw_ref *sw_ref_new(struct blob_store *bs)
{
    struct sw_ref *r;

    if (bs == NULL)
        return NULL;
    r = xcalloc(1, sizeof(*r));
    r->bs = bs;
    atomic_init(&r->refs, 1);
    return r;
}

static void sw_ref_drop(struct sw_ref *r)
{
    if (r != NULL && atomic_fetch_sub(&r->refs, 1) == 1) {
        blob_store_free(r->bs);
        free(r);
    }
}

/* sw_take returns referenced holders of the current store and (if prev) of the previous one. */
static struct sw_ref *sw_take(struct sw *s, struct sw_ref **prev)
{
    struct sw_ref *c;

    pthread_mutex_lock(&s->lock);
    c = s->cur;
    atomic_fetch_add(&c->refs, 1);
    if (prev != NULL) {
        *prev = s->prev;
        if (*prev != NULL)
            atomic_fetch_add(&(*prev)->refs, 1);
    }
    pthread_mutex_unlock(&s->lock);
    return c;
}

static int sw_put_path(void *be, const char *key, const char *src_path)
{
    struct sw_ref *c = sw_take(be, NULL);
    int rc = blob_put_path(c->bs, key, src_path);

    sw_ref_drop(c);
    return rc;
}

static int sw_open(void *be, const char *key, int *fd, uint64_t *size)
{
    struct sw_ref *p = NULL;
    struct sw_ref *c = sw_take(be, &p);
    int rc = blob_open(c->bs, key, fd, size);

    /* not moved yet (or not reachable at its new home): the old placement has it */
    if (rc != OK && p != NULL) {
        int prc = blob_open(p->bs, key, fd, size);
        if (prc == OK || rc == E_NOTFOUND)
            rc = prc;
    }
    sw_ref_drop(c);
    sw_ref_drop(p);
    return rc;
}

static int sw_exists(void *be, const char *key, bool *exists)
{
    struct sw_ref *p = NULL;
    struct sw_ref *c = sw_take(be, &p);
    int rc = blob_exists(c->bs, key, exists);

    if (p != NULL && !(rc == OK && *exists)) {
        bool there = false;
        int prc = blob_exists(p->bs, key, &there);
        if (prc == OK && there) {
            *exists = true;
            rc = OK;
        }
    }
    sw_ref_drop(c);
    sw_ref_drop(p);
    return rc;
}

static int sw_del(void *be, const char *key)
{
    struct sw_ref *p = NULL;
    struct sw_ref *c = sw_take(be, &p);
    int rc = blob_delete(c->bs, key);

    if (p != NULL) {
        int prc = blob_delete(p->bs, key);
        if (rc == OK)
            rc = prc;
    }
    sw_ref_drop(c);
    sw_ref_drop(p);
    return rc;
}

static int sw_tmp_path(void *be, char *buf, size_t cap)
{
    struct sw_ref *c = sw_take(be, NULL);
    int rc = blob_tmp_path(c->bs, buf, cap);

    sw_ref_drop(c);
    return rc;
}

static int sw_check(void *be)
{
    struct sw_ref *c = sw_take(be, NULL);
    int rc = blob_store_check(c->bs);

    sw_ref_drop(c);
    return rc;
}

static void sw_why(void *be, char *buf, size_t cap)
{
    struct sw_ref *c = sw_take(be, NULL);

    blob_store_why(c->bs, buf, cap);
    sw_ref_drop(c);
}

static size_t sw_shards(void *be, struct blob_shard_state *out, size_t cap, char *epoch)
{
    struct sw_ref *c = sw_take(be, NULL);
    size_t n = blob_store_shards(c->bs, out, cap, epoch);

    sw_ref_drop(c);
    return n;
}

static bool sw_may_block(void *be)
{
    struct sw_ref *p = NULL;
    struct sw_ref *c = sw_take(be, &p);
    bool b = blob_store_may_block(c->bs) || (p != NULL && blob_store_may_block(p->bs));

    sw_ref_drop(c);
    sw_ref_drop(p);
    return b;
}

static void sw_free(void *be)
{
    struct sw *s = be;

    if (s == NULL)
        return;
    sw_ref_drop(s->cur);
    sw_ref_drop(s->prev);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static const struct blob_ops sw_ops = {
    .name = "switch",
    .may_block = sw_may_block,
    .free = sw_free,
    .put_path = sw_put_path,
    .open = sw_open,
    .exists = sw_exists,
    .del = sw_del,
    .tmp_path = sw_tmp_path,
    .check = sw_check,
    .why = sw_why,
    .list = NULL, /* list the shards of a ring one by one */
    .shards = sw_shards,
};

int blob_switch_open(struct blob_store *cur, struct blob_store **out)
{
    struct sw *s;

    *out = NULL;
    if (cur == NULL)
        return E_INVALID;
    s = xcalloc(1, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    s->cur = sw_ref_new(cur);
    *out = blob_store_new(&sw_ops, s);
    return OK;
}

int blob_switch_set(struct blob_store *sw, struct blob_store *cur, struct blob_store *prev)
{
    struct sw *s;
    struct sw_ref *old_cur, *old_prev;

    if (sw == NULL || sw->ops != &sw_ops || cur == NULL) {
        blob_store_free(cur);
        blob_store_free(prev);
        return E_INVALID;
    }
    s = sw->be;
    pthread_mutex_lock(&s->lock);
    old_cur = s->cur;
    old_prev = s->prev;
    s->cur = sw_ref_new(cur);
    s->prev = sw_ref_new(prev);
    pthread_mutex_unlock(&s->lock);
    sw_ref_drop(old_cur);
    sw_ref_drop(old_prev);
    return OK;
}

struct blob_store *blob_switch_current(struct blob_store *bs)
{
    if (bs == NULL || bs->ops != &sw_ops)
        return bs;
    return ((struct sw *)bs->be)->cur->bs;
}
