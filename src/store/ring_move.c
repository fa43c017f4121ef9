/*
 * ring_move.c - plan, copy and prune between two rings over their union.
 *
 * Invariant: a copy is removed only when every new home of its key holds a
 * copy, so each blob stays readable under the old ring until the switch and
 * under the new one after it.
 */
#include "store/ring_move.h"

#include "core/codec.h"
#include "core/err.h"
#include "core/progress.h"
#include "core/xalloc.h"
#include "store/blob.h"
#include "store/blob_ring.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int ring_union(const struct ring *old, const struct ring *nw, struct ring **out, char *err,
               size_t cap)
{
    size_t tcap = 2, len = 0;
    char *text = NULL;
    int rc = OK;

    *out = NULL;
    for (size_t i = 0; i < old->n; i++)
        tcap += strlen(old->shards[i].id) + strlen(old->shards[i].url) + 2;
    for (size_t i = 0; i < nw->n; i++)
        tcap += strlen(nw->shards[i].id) + strlen(nw->shards[i].url) + 2;
    text = xmalloc(tcap);
    text[0] = '\0';
    for (int pass = 0; pass < 2; pass++) {
        const struct ring *r = pass == 0 ? old : nw;
        for (size_t i = 0; i < r->n; i++) {
            int j = pass == 1 ? ring_find(old, r->shards[i].id) : -1;
            if (j >= 0 && strcmp(old->shards[j].url, r->shards[i].url) != 0) {
                snprintf(err, cap,
                         "shard %s changes URL (%s -> %s): give the new location a new id",
                         r->shards[i].id, old->shards[j].url, r->shards[i].url);
                rc = E_INVALID;
                goto out;
            }
            if (j < 0)
                len += (size_t)snprintf(text + len, tcap - len, "%s=%s\n", r->shards[i].id,
                                        r->shards[i].url);
        }
    }
    rc = ring_parse(text, 1, 1, out, err, cap);
out:
    free(text);
    return rc;
}

void ring_key_plan(const struct ring *uni, const struct ring *nw, const struct ring_copy *copies,
                   size_t n, struct ring_key_plan *kp)
{
    unsigned home[RING_MAX_REPLICAS];
    size_t nh = ring_lookup(nw, copies[0].key, home, nw->replicas);

    memset(kp, 0, sizeof(*kp));
    for (size_t h = 0; h < nh; h++) {
        unsigned u = (unsigned)ring_find(uni, nw->shards[home[h]].id);
        bool held = false;
        kp->home[kp->nhome++] = u;
        for (size_t q = 0; q < n && !held; q++)
            held = copies[q].shard == u;
        if (!held)
            kp->add[kp->nadd++] = u;
    }
    for (size_t q = 0; q < n; q++) {
        if (!ring_key_plan_is_home(kp, copies[q].shard)) {
            kp->nremove++;
            kp->remove_bytes += copies[q].size;
        }
    }
}

bool ring_key_plan_is_home(const struct ring_key_plan *kp, unsigned s)
{
    for (size_t h = 0; h < kp->nhome; h++) {
        if (kp->home[h] == s)
            return true;
    }
    return false;
}

void ring_plan(const struct ring *uni, const struct ring *nw, const struct ring_listing *l,
               struct ring_plan *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0, j; i < l->n; i = j) {
        struct ring_key_plan kp;
        j = ring_walk_group(l, i);
        ring_key_plan(uni, nw, &l->v[i], j - i, &kp);
        out->keys++;
        out->moving += kp.nadd > 0;
        out->add += kp.nadd;
        out->add_bytes += kp.nadd * l->v[i].size;
        out->remove += kp.nremove;
        out->remove_bytes += kp.remove_bytes;
    }
}

/* move_one copies key to union shard u from the first of copies[0..n) that verifies. */
static int move_one(struct blob_store *store, const struct ring_copy *copies, size_t n, unsigned u)
{
    const char *key = copies[0].key;
    int fd = -1;
    int rc = E_NOTFOUND;

    for (size_t q = 0; q < n && rc != OK; q++)
        rc = ring_walk_verify(blob_ring_shard(store, copies[q].shard), key, &fd);
    if (rc == OK)
        rc = ring_walk_copy(blob_ring_shard(store, u), key, fd);
    if (rc == OK)
        rc = ring_walk_verify(blob_ring_shard(store, u), key, NULL);
    if (fd >= 0)
        close(fd);
    return rc;
}

/* The shared state of the copying threads: each takes the next key's copies in turn. */
struct mv_copy {
    struct blob_store *store;
    const struct ring *uni, *nw;
    const struct ring_listing *l;
    struct progress *p;
    long rate;
    int64_t t0;
    pthread_mutex_t lock; /* guards what follows */
    size_t next;          /* the first copy of the next key to take */
    size_t walked;        /* keys taken */
    size_t copied, errors;
};

/* mv_take hands out the next key's copies [*i, *j) and how many keys were taken; false at the end.
 */
static bool mv_take(struct mv_copy *m, size_t *i, size_t *j, size_t *walked)
{
    bool more;

    pthread_mutex_lock(&m->lock);
    more = m->next < m->l->n;
    if (more) {
        *i = m->next;
        *j = ring_walk_group(m->l, *i);
        m->next = *j;
        *walked = ++m->walked;
    }
    pthread_mutex_unlock(&m->lock);
    return more;
}

static void *mv_copy_keys(void *arg)
{
    struct mv_copy *m = arg;
    size_t i, j, walked;

    while (mv_take(m, &i, &j, &walked)) {
        struct ring_key_plan kp;
        size_t ok = 0, bad = 0;
        if (m->rate > 0) {
            /* throttle: at most rate keys a second, over every thread */
            int64_t due = m->t0 + (int64_t)(1000000.0 * (double)(walked - 1) / (double)m->rate);
            int64_t wait = due - time_mono_us();
            if (wait > 0)
                usleep((useconds_t)wait);
        }
        ring_key_plan(m->uni, m->nw, &m->l->v[i], j - i, &kp);
        for (size_t a = 0; a < kp.nadd; a++) {
            int rc = move_one(m->store, &m->l->v[i], j - i, kp.add[a]);
            if (rc != OK) {
                progress_note(m->p, "%s -> %s: %s", m->l->v[i].key, m->uni->shards[kp.add[a]].id,
                              err_str(rc));
                bad++;
            } else {
                ok++;
            }
            progress_add(m->p, 1, m->l->v[i].size);
        }
        pthread_mutex_lock(&m->lock);
        m->copied += ok;
        m->errors += bad;
        pthread_mutex_unlock(&m->lock);
    }
    return NULL;
}

void ring_move_copy(struct blob_store *store, const struct ring *nw, const struct ring_listing *l,
                    long rate, unsigned jobs, struct progress *p, struct ring_move_result *res)
{
    struct mv_copy m = {.store = store,
                        .uni = blob_ring_ring(store),
                        .nw = nw,
                        .l = l,
                        .p = p,
                        .rate = rate,
                        .t0 = time_mono_us()};
    pthread_t tid[RING_MOVE_MAX_JOBS];
    unsigned started = 0;
    struct ring_plan plan;

    if (jobs > RING_MOVE_MAX_JOBS)
        jobs = RING_MOVE_MAX_JOBS;
    pthread_mutex_init(&m.lock, NULL);
    ring_plan(m.uni, nw, l, &plan);
    progress_phase(p, "copying", plan.add, plan.add_bytes);
    /* this thread copies too: jobs - 1 more (fewer if threads cannot be made) */
    while (started + 1 < jobs && pthread_create(&tid[started], NULL, mv_copy_keys, &m) == 0)
        started++;
    mv_copy_keys(&m);
    for (unsigned t = 0; t < started; t++)
        pthread_join(tid[t], NULL);
    pthread_mutex_destroy(&m.lock);
    res->copied += m.copied;
    res->errors += m.errors;
    progress_flush(p);
}

void ring_move_prune(struct blob_store *store, const struct ring *nw, const struct ring_listing *l,
                     struct progress *p, struct ring_move_result *res)
{
    const struct ring *uni = blob_ring_ring(store);

    progress_phase(p, "pruning", l->nkeys, 0);
    for (size_t i = 0, j; i < l->n; i = j) {
        struct ring_key_plan kp;
        bool complete = true;
        j = ring_walk_group(l, i);
        ring_key_plan(uni, nw, &l->v[i], j - i, &kp);
        /* the listing predates the copy: ask each home that listed nothing */
        for (size_t a = 0; a < kp.nadd && complete; a++) {
            bool there = false;
            if (blob_exists(blob_ring_shard(store, kp.add[a]), l->v[i].key, &there) != OK || !there)
                complete = false;
        }
        if (!complete) {
            res->skipped++;
        } else {
            for (size_t q = i; q < j; q++) {
                if (ring_key_plan_is_home(&kp, l->v[q].shard))
                    continue;
                if (blob_delete(blob_ring_shard(store, l->v[q].shard), l->v[q].key) != OK)
                    res->errors++;
                else
                    res->removed++;
            }
        }
        progress_add(p, 1, 0);
    }
    progress_flush(p);
}
