/*
 * lru.c - striped LRU: per stripe a chained hash table and an intrusive
 * doubly linked recency list over entries allocated one by one.
 *
 * Invariant: a stripe's entries are exactly those on its recency list and in
 * its table, count and weight are their number and summed weight, and after
 * every put both are within the stripe's bounds; all under the stripe lock.
 * Evicted entries leave the stripe under the lock and are handed to the evict
 * function and freed after it.
 */
#include "core/lru.h"

#include "core/hash.h"
#include "core/xalloc.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define LRU_BUCKETS_START_MAX 65536 /* a table starts at most this large, then doubles */

struct lru_entry {
    struct lru_entry *hnext;       /* hash chain */
    struct lru_entry *prev, *next; /* recency list, head: most recent */
    uint64_t hash;
    uint64_t weight;
    int64_t expires_us;
    bool gone;
    _Alignas(16) unsigned char data[]; /* value_size bytes of value, then the key and its NUL */
};

struct lru_stripe {
    pthread_mutex_t lock;
    struct lru_entry **table;
    size_t nbuckets; /* a power of two, doubled when count exceeds it */
    struct lru_entry *head, *tail;
    size_t count, max_entries;
    uint64_t weight, max_weight;
};

struct lru {
    size_t value_size;
    size_t key_max;
    lru_evict_fn *evict;
    void *evict_arg;
    size_t nstripes;
    struct lru_stripe stripe[LRU_STRIPES_MAX];
};

/* keys are short ids or digests; the low bits pick the bucket, the high bits the stripe */
static uint64_t lru_hash(const char *key)
{
    return fnv1a64_str(key);
}

static char *lru_key(const struct lru *l, struct lru_entry *e)
{
    return (char *)e->data + l->value_size;
}

/* lru_share is stripe s's part of a bound split over n stripes; 0 (none) stays none. */
static uint64_t lru_share(uint64_t bound, size_t n, size_t s, uint64_t none)
{
    if (bound == 0)
        return none;
    return bound / n + (s < bound % n ? 1 : 0);
}

struct lru *lru_new(const struct lru_opts *o)
{
    struct lru *l = xcalloc(1, sizeof(*l));
    size_t max_entries = o->max_entries;
    size_t n = o->stripes;

    if (max_entries == 0 && o->max_weight == 0)
        max_entries = 1;
    if (n == 0)
        n = max_entries >= 1024 ? LRU_STRIPES_MAX : 1;
    if (n > LRU_STRIPES_MAX)
        n = LRU_STRIPES_MAX;
    /* every stripe's share of a bound must hold at least one entry */
    if (max_entries != 0 && n > max_entries)
        n = max_entries;
    if (o->max_weight != 0 && n > o->max_weight)
        n = (size_t)o->max_weight;
    l->value_size = o->value_size;
    l->key_max = o->key_max != 0 ? o->key_max : LRU_KEY_MAX;
    l->evict = o->evict;
    l->evict_arg = o->evict_arg;
    l->nstripes = n;
    for (size_t s = 0; s < n; s++) {
        struct lru_stripe *st = &l->stripe[s];
        st->max_entries = (size_t)lru_share(max_entries, n, s, SIZE_MAX);
        st->max_weight = lru_share(o->max_weight, n, s, UINT64_MAX);
        st->nbuckets = 8;
        while (st->nbuckets < st->max_entries && st->nbuckets < LRU_BUCKETS_START_MAX)
            st->nbuckets <<= 1;
        st->table = xcalloc(st->nbuckets, sizeof(*st->table));
        pthread_mutex_init(&st->lock, NULL);
    }
    return l;
}

/* lru_free_chain frees a list of entries linked by next. */
static void lru_free_chain(struct lru_entry *e)
{
    while (e != NULL) {
        struct lru_entry *next = e->next;
        free(e);
        e = next;
    }
}

void lru_free(struct lru *l)
{
    if (l == NULL)
        return;
    for (size_t s = 0; s < l->nstripes; s++) {
        pthread_mutex_destroy(&l->stripe[s].lock);
        lru_free_chain(l->stripe[s].head);
        free(l->stripe[s].table);
    }
    free(l);
}

static struct lru_stripe *lru_stripe_of(struct lru *l, uint64_t h)
{
    return &l->stripe[(h >> 56) % l->nstripes];
}

/* lru_slot returns the link that points (or would point) at key's entry. */
static struct lru_entry **lru_slot(struct lru *l, struct lru_stripe *st, const char *key,
                                   uint64_t h)
{
    struct lru_entry **pp = &st->table[h & (st->nbuckets - 1)];

    while (*pp != NULL && ((*pp)->hash != h || strcmp(lru_key(l, *pp), key) != 0))
        pp = &(*pp)->hnext;
    return pp;
}

/* lru_slot_of returns the link that points at e, which is in st's table. */
static struct lru_entry **lru_slot_of(struct lru_stripe *st, struct lru_entry *e)
{
    struct lru_entry **pp = &st->table[e->hash & (st->nbuckets - 1)];

    while (*pp != e)
        pp = &(*pp)->hnext;
    return pp;
}

/* lru_grow doubles st's table, keeping chains short as entries are added without a count bound. */
static void lru_grow(struct lru_stripe *st)
{
    size_t nb = st->nbuckets * 2;
    struct lru_entry **table = xcalloc(nb, sizeof(*table));

    for (size_t i = 0; i < st->nbuckets; i++) {
        struct lru_entry *e = st->table[i];
        while (e != NULL) {
            struct lru_entry *next = e->hnext;
            e->hnext = table[e->hash & (nb - 1)];
            table[e->hash & (nb - 1)] = e;
            e = next;
        }
    }
    free(st->table);
    st->table = table;
    st->nbuckets = nb;
}

static void lru_unlink(struct lru_stripe *st, struct lru_entry *e)
{
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        st->head = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        st->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_front(struct lru_stripe *st, struct lru_entry *e)
{
    e->prev = NULL;
    e->next = st->head;
    if (st->head != NULL)
        st->head->prev = e;
    st->head = e;
    if (st->tail == NULL)
        st->tail = e;
}

/* lru_detach takes e (found at *pp) out of the table, the list and the totals; the caller frees it.
 */
static struct lru_entry *lru_detach(struct lru_stripe *st, struct lru_entry **pp)
{
    struct lru_entry *e = *pp;

    *pp = e->hnext;
    e->hnext = NULL;
    lru_unlink(st, e);
    st->count--;
    st->weight -= e->weight;
    return e;
}

enum lru_state lru_get(struct lru *l, const char *key, int64_t now_us, void *out)
{
    uint64_t h = lru_hash(key);
    struct lru_stripe *st = lru_stripe_of(l, h);
    enum lru_state rc = LRU_MISS;
    struct lru_entry **pp, *e;

    pthread_mutex_lock(&st->lock);
    pp = lru_slot(l, st, key, h);
    e = *pp;
    if (e == NULL)
        goto out;
    if (e->expires_us <= now_us) {
        free(lru_detach(st, pp));
        goto out;
    }
    lru_unlink(st, e);
    lru_push_front(st, e);
    if (e->gone) {
        rc = LRU_GONE;
    } else {
        if (l->value_size > 0)
            memcpy(out, e->data, l->value_size);
        rc = LRU_VALUE;
    }
out:
    pthread_mutex_unlock(&st->lock);
    return rc;
}

bool lru_put_weighted(struct lru *l, const char *key, const void *value, uint64_t weight,
                      int64_t expires_us, int64_t now_us, bool force)
{
    uint64_t h = lru_hash(key);
    struct lru_stripe *st = lru_stripe_of(l, h);
    size_t klen = strlen(key);
    struct lru_entry **pp, *e, *victims = NULL, **vtail = &victims;
    bool done = false;

    if (klen >= l->key_max || weight > st->max_weight)
        return false;
    pthread_mutex_lock(&st->lock);
    pp = lru_slot(l, st, key, h);
    e = *pp;
    if (e != NULL) {
        if (e->gone && e->expires_us > now_us && !force)
            goto out;
        lru_unlink(st, e);
        st->weight -= e->weight;
    } else {
        e = xmalloc(sizeof(*e) + l->value_size + klen + 1);
        e->hash = h;
        e->hnext = NULL;
        memcpy(lru_key(l, e), key, klen + 1);
        *pp = e;
        st->count++;
        if (st->count > st->nbuckets)
            lru_grow(st);
    }
    e->expires_us = expires_us;
    e->gone = value == NULL;
    e->weight = weight;
    st->weight += weight;
    if (l->value_size > 0) {
        if (value != NULL)
            memcpy(e->data, value, l->value_size);
        else
            memset(e->data, 0, l->value_size);
    }
    lru_push_front(st, e);
    /* e alone is within both bounds (weight checked above, max_entries >= 1) */
    while ((st->count > st->max_entries || st->weight > st->max_weight) && st->tail != e) {
        struct lru_entry *victim = lru_detach(st, lru_slot_of(st, st->tail));
        *vtail = victim;
        vtail = &victim->next;
    }
    done = true;
out:
    pthread_mutex_unlock(&st->lock);
    /* outside the lock: the evict function may do I/O */
    for (struct lru_entry *v = victims; v != NULL; v = v->next) {
        if (l->evict != NULL)
            l->evict(l->evict_arg, lru_key(l, v), v->data, v->weight);
    }
    lru_free_chain(victims);
    return done;
}

bool lru_put(struct lru *l, const char *key, const void *value, int64_t expires_us, int64_t now_us,
             bool force)
{
    return lru_put_weighted(l, key, value, 0, expires_us, now_us, force);
}

bool lru_del(struct lru *l, const char *key)
{
    uint64_t h = lru_hash(key);
    struct lru_stripe *st = lru_stripe_of(l, h);
    struct lru_entry **pp;
    bool found;

    pthread_mutex_lock(&st->lock);
    pp = lru_slot(l, st, key, h);
    found = *pp != NULL;
    if (found)
        free(lru_detach(st, pp));
    pthread_mutex_unlock(&st->lock);
    return found;
}

void lru_clear(struct lru *l)
{
    for (size_t s = 0; s < l->nstripes; s++) {
        struct lru_stripe *st = &l->stripe[s];
        pthread_mutex_lock(&st->lock);
        lru_free_chain(st->head);
        memset(st->table, 0, st->nbuckets * sizeof(*st->table));
        st->head = st->tail = NULL;
        st->count = 0;
        st->weight = 0;
        pthread_mutex_unlock(&st->lock);
    }
}

size_t lru_count(struct lru *l)
{
    size_t n = 0;

    for (size_t s = 0; s < l->nstripes; s++) {
        pthread_mutex_lock(&l->stripe[s].lock);
        n += l->stripe[s].count;
        pthread_mutex_unlock(&l->stripe[s].lock);
    }
    return n;
}

uint64_t lru_weight(struct lru *l)
{
    uint64_t w = 0;

    for (size_t s = 0; s < l->nstripes; s++) {
        pthread_mutex_lock(&l->stripe[s].lock);
        w += l->stripe[s].weight;
        pthread_mutex_unlock(&l->stripe[s].lock);
    }
    return w;
}
