/*
 * lru.c - striped LRU: per stripe a chained hash table and an intrusive
 * doubly linked recency list over a preallocated entry array.
 *
 * Invariant: a stripe's entries are exactly those on its recency list and in
 * its table; free entries are on its free list; all under the stripe lock.
 */
#include "core/lru.h"

#include "core/hash.h"
#include "core/xalloc.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LRU_STRIPES_MAX 16

struct lru_entry {
    struct lru_entry *hnext;       /* hash chain */
    struct lru_entry *prev, *next; /* recency list (head: most recent) or free list */
    int64_t expires_us;
    bool gone;
    char key[LRU_KEY_MAX];
    unsigned char value[]; /* value_size bytes */
};

struct lru_stripe {
    pthread_mutex_t lock;
    struct lru_entry **table;
    size_t nbuckets; /* a power of two */
    struct lru_entry *head, *tail;
    struct lru_entry *free;
    size_t count;
    unsigned char *slab;
};

struct lru {
    size_t value_size;
    size_t entry_size;
    size_t nstripes;
    struct lru_stripe stripe[LRU_STRIPES_MAX];
};

/* keys are short ids; the low bits pick the bucket, the high bits the stripe */
static uint64_t lru_hash(const char *key)
{
    return fnv1a64_str(key);
}

struct lru *lru_new(size_t max_entries, size_t value_size)
{
    struct lru *l = xcalloc(1, sizeof(*l));

    if (max_entries < 1)
        max_entries = 1;
    l->value_size = value_size;
    l->entry_size = (sizeof(struct lru_entry) + value_size + 15) & ~(size_t)15;
    l->nstripes = max_entries >= 1024 ? LRU_STRIPES_MAX : 1;
    for (size_t s = 0; s < l->nstripes; s++) {
        struct lru_stripe *st = &l->stripe[s];
        size_t n = max_entries / l->nstripes + (s < max_entries % l->nstripes ? 1 : 0);
        st->nbuckets = 8;
        while (st->nbuckets < n)
            st->nbuckets <<= 1;
        st->table = xcalloc(st->nbuckets, sizeof(*st->table));
        st->slab = xcalloc(n, l->entry_size);
        for (size_t i = 0; i < n; i++) {
            struct lru_entry *e = (struct lru_entry *)(st->slab + i * l->entry_size);
            e->next = st->free;
            st->free = e;
        }
        pthread_mutex_init(&st->lock, NULL);
    }
    return l;
}

void lru_free(struct lru *l)
{
    if (l == NULL)
        return;
    for (size_t s = 0; s < l->nstripes; s++) {
        pthread_mutex_destroy(&l->stripe[s].lock);
        free(l->stripe[s].table);
        free(l->stripe[s].slab);
    }
    free(l);
}

static struct lru_stripe *lru_stripe_of(struct lru *l, uint64_t h)
{
    return &l->stripe[(h >> 56) % l->nstripes];
}

static struct lru_entry **lru_slot(struct lru_stripe *st, const char *key, uint64_t h)
{
    struct lru_entry **pp = &st->table[h & (st->nbuckets - 1)];

    while (*pp != NULL && strcmp((*pp)->key, key) != 0)
        pp = &(*pp)->hnext;
    return pp;
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

/* lru_remove takes e (found at *pp) out of the table and the list onto the free list. */
static void lru_remove(struct lru_stripe *st, struct lru_entry **pp)
{
    struct lru_entry *e = *pp;

    *pp = e->hnext;
    e->hnext = NULL;
    lru_unlink(st, e);
    e->next = st->free;
    st->free = e;
    st->count--;
}

enum lru_state lru_get(struct lru *l, const char *key, int64_t now_us, void *out)
{
    uint64_t h = lru_hash(key);
    struct lru_stripe *st = lru_stripe_of(l, h);
    enum lru_state rc = LRU_MISS;
    struct lru_entry **pp;

    pthread_mutex_lock(&st->lock);
    pp = lru_slot(st, key, h);
    if (*pp == NULL)
        goto out;
    if ((*pp)->expires_us <= now_us) {
        lru_remove(st, pp);
        goto out;
    }
    lru_unlink(st, *pp);
    lru_push_front(st, *pp);
    if ((*pp)->gone) {
        rc = LRU_GONE;
    } else {
        memcpy(out, (*pp)->value, l->value_size);
        rc = LRU_VALUE;
    }
out:
    pthread_mutex_unlock(&st->lock);
    return rc;
}

bool lru_put(struct lru *l, const char *key, const void *value, int64_t expires_us, int64_t now_us,
             bool force)
{
    uint64_t h = lru_hash(key);
    struct lru_stripe *st = lru_stripe_of(l, h);
    struct lru_entry **pp, *e;
    bool done = false;

    if (strlen(key) >= LRU_KEY_MAX)
        return false;
    pthread_mutex_lock(&st->lock);
    pp = lru_slot(st, key, h);
    e = *pp;
    if (e != NULL) {
        if (e->gone && e->expires_us > now_us && !force)
            goto out;
        lru_unlink(st, e);
    } else {
        if (st->free == NULL) {
            /* evict the least recently used entry of this stripe */
            struct lru_entry *victim = st->tail;
            lru_remove(st, lru_slot(st, victim->key, lru_hash(victim->key)));
            pp = lru_slot(st, key, h); /* the chain may have changed */
        }
        e = st->free;
        st->free = e->next;
        e->next = NULL;
        snprintf(e->key, sizeof(e->key), "%s", key);
        e->hnext = NULL;
        *pp = e;
        st->count++;
    }
    e->expires_us = expires_us;
    e->gone = value == NULL;
    if (value != NULL)
        memcpy(e->value, value, l->value_size);
    lru_push_front(st, e);
    done = true;
out:
    pthread_mutex_unlock(&st->lock);
    return done;
}

void lru_del(struct lru *l, const char *key)
{
    uint64_t h = lru_hash(key);
    struct lru_stripe *st = lru_stripe_of(l, h);
    struct lru_entry **pp;

    pthread_mutex_lock(&st->lock);
    pp = lru_slot(st, key, h);
    if (*pp != NULL)
        lru_remove(st, pp);
    pthread_mutex_unlock(&st->lock);
}

void lru_clear(struct lru *l)
{
    for (size_t s = 0; s < l->nstripes; s++) {
        struct lru_stripe *st = &l->stripe[s];
        pthread_mutex_lock(&st->lock);
        while (st->head != NULL)
            lru_remove(st, lru_slot(st, st->head->key, lru_hash(st->head->key)));
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
