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

void ring_move_copy(struct blob_store *store, const struct ring *nw, const struct ring_listing *l,
                    long rate, struct progress *p, struct ring_move_result *res)
{
    const struct ring *uni = blob_ring_ring(store);
    struct ring_plan plan;
    int64_t t0 = time_mono_us();
    size_t walked = 0;

    ring_plan(uni, nw, l, &plan);
    progress_phase(p, "copying", plan.add, plan.add_bytes);
    for (size_t i = 0, j; i < l->n; i = j) {
        struct ring_key_plan kp;
        j = ring_walk_group(l, i);
        ring_key_plan(uni, nw, &l->v[i], j - i, &kp);
        for (size_t a = 0; a < kp.nadd; a++) {
            int rc = move_one(store, &l->v[i], j - i, kp.add[a]);
            if (rc != OK) {
                progress_note(p, "%s -> %s: %s", l->v[i].key, uni->shards[kp.add[a]].id,
                              err_str(rc));
                res->errors++;
            } else {
                res->copied++;
            }
            progress_add(p, 1, l->v[i].size);
        }
        walked++;
        if (rate > 0) {
            /* throttle: at most rate keys a second */
            int64_t due = t0 + (int64_t)(1000000.0 * (double)walked / (double)rate);
            int64_t wait = due - time_mono_us();
            if (wait > 0)
                usleep((useconds_t)wait);
        }
    }
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
