/*
 * rebalance.c - the ring in force, a store over it and the new ring, the move.
 *
 * Moving needs every shard listed: a copy missing from the listing could be
 * a new home's only copy, and pruning would then remove the last one.
 */
#include "app/rebalance.h"

#include "app/ring_state.h"
#include "app/runtime.h"
#include "core/err.h"
#include "core/progress.h"
#include "store/blob.h"
#include "store/blob_ring.h"
#include "store/ring.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int rebalance_open(const struct runtime *rt, const struct ring *nw, struct rebalance *rb,
                   struct progress *p, char *err, size_t cap)
{
    struct ring *uni = NULL;
    char *text = NULL;
    int rc;

    memset(rb, 0, sizeof(*rb));
    rb->rt = rt;
    rb->nw = nw;
    rc = ring_state_previous(rt->meta, &text);
    if (rc == OK && text[0] != '\0') {
        rb->resumed = true; /* an unfinished rebalance: move from where it started */
    } else if (rc == OK) {
        free(text);
        text = NULL;
        rc = ring_state_config(rt->meta, &text);
    }
    if (rc == E_NOTFOUND)
        snprintf(err, cap, "no ring recorded yet: `tessera ring apply` records the configured one");
    else if (rc != OK)
        snprintf(err, cap, "cannot read the ring in force: %s", err_str(rc));
    if (rc != OK)
        goto out;
    rc = ring_parse_described(text, &rb->old, err, cap);
    if (rc != OK)
        goto out;
    if (strcmp(rb->old->epoch, nw->epoch) == 0) {
        /* moving to itself: only an interrupted `ring apply` or rebalance leaves this */
        if (rb->resumed)
            rc = ring_state_set_previous(rt->meta, NULL);
        goto out;
    }
    rc = ring_union(rb->old, nw, &uni, err, cap);
    if (rc != OK)
        goto out;
    struct blob_ring_opts o;
    runtime_ring_opts(rt, &o);
    rc = blob_ring_open(uni, &o, &rb->store);
    if (rc != OK) {
        snprintf(err, cap, "cannot open the shards of both rings: %s", err_str(rc));
        ring_free(uni);
        goto out;
    }
    progress_note(p, "epoch %s -> %s; listing %zu shards", rb->old->epoch, nw->epoch,
                  blob_ring_ring(rb->store)->n);
    rc = ring_walk_list(rb->store, &rb->listing, p);
    if (rc != OK) {
        snprintf(err, cap, "every shard must be listed to move blobs safely");
        goto out;
    }
    ring_plan(blob_ring_ring(rb->store), nw, &rb->listing, &rb->plan);
out:
    free(text);
    return rc;
}

void rebalance_copy(struct rebalance *rb, long rate, unsigned jobs, struct progress *p)
{
    if (rb->store != NULL)
        ring_move_copy(rb->store, rb->nw, &rb->listing, rate, jobs, p, &rb->res);
}

int rebalance_begin(struct rebalance *rb)
{
    /* previous first: a service that sees the new epoch finds the fallback already there */
    int rc = ring_state_set_previous(rb->rt->meta, rb->old);

    if (rc == OK)
        rc = ring_state_record(rb->rt->meta, rb->nw);
    return rc;
}

int rebalance_relist(struct rebalance *rb, struct progress *p)
{
    int rc;

    ring_walk_release(&rb->listing);
    rc = ring_walk_list(rb->store, &rb->listing, p);
    if (rc == OK)
        ring_plan(blob_ring_ring(rb->store), rb->nw, &rb->listing, &rb->plan);
    return rc;
}

int rebalance_finish(struct rebalance *rb)
{
    if (rb->res.errors > 0)
        return E_IO;
    return ring_state_set_previous(rb->rt->meta, NULL);
}

long rebalance_follow_ms(const struct rebalance *rb)
{
    return (long)(2 * rb->rt->cfg->storage.ring_poll_ms + 1000);
}

void rebalance_prune(struct rebalance *rb, struct progress *p)
{
    if (rb->store != NULL)
        ring_move_prune(rb->store, rb->nw, &rb->listing, p, &rb->res);
}

void rebalance_release(struct rebalance *rb)
{
    ring_walk_release(&rb->listing);
    blob_store_free(rb->store);
    ring_free(rb->old);
    memset(rb, 0, sizeof(*rb));
}
