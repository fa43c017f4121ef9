/*
 * ring_sim.c - the placement of many keys before and after a change of shards.
 *
 * Shard ids are fixed (s1..sN), so a shard keeps its seed across the two rings
 * and the only difference between them is the shards added or removed.
 */
#include "store/ring_sim.h"

#include "core/codec.h"
#include "core/err.h"
#include "core/xalloc.h"
#include "store/ring.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ring_sim_opts_init(struct ring_sim_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->shards = 4;
    o->add = 1;
    o->keys = 1000000;
    o->replicas = 3;
    o->seed = 1;
}

bool ring_sim_opts_valid(const struct ring_sim_opts *o)
{
    return !(o->shards < 1 || o->shards > RING_MAX_SHARDS / 2 || o->add > RING_MAX_SHARDS / 2 ||
             o->keys < 1 || o->keys > RING_SIM_MAX_KEYS || o->replicas < 1 ||
             o->replicas > RING_MAX_REPLICAS || (o->remove && o->add >= o->shards) ||
             o->replicas > (o->remove ? o->shards - o->add : o->shards));
}

/* sim_weight gives shard i its weight: 1, or 1..4 cycling when weighted. */
static double sim_weight(const struct ring_sim_opts *o, unsigned i)
{
    return o->weighted ? (double)(i % 4 + 1) : 1.0;
}

/* sim_ring builds a ring of shards s1..sn. */
static int sim_ring(const struct ring_sim_opts *o, unsigned n, struct ring **out, char *err,
                    size_t cap)
{
    size_t tcap = (size_t)n * 96 + 1;
    char *text = xmalloc(tcap);
    size_t len = 0;
    int rc;

    text[0] = '\0';
    for (unsigned i = 0; i < n; i++) {
        len += (size_t)snprintf(text + len, tcap - len, "s%u=file:///sim/s%u;weight=%g", i + 1,
                                i + 1, sim_weight(o, i));
        if (o->zones > 0)
            len += (size_t)snprintf(text + len, tcap - len, ";zone=z%u", i % o->zones);
        len += (size_t)snprintf(text + len, tcap - len, ",");
    }
    rc = ring_parse(text, o->replicas, 1, out, err, cap);
    free(text);
    return rc;
}

static volatile unsigned sim_sink;

static uint64_t sim_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* sim_zones_short tells whether the replica set rep spans fewer zones than it could. */
static bool sim_zones_short(const struct ring *after, const unsigned *rep, unsigned r_n)
{
    unsigned distinct = 0;

    for (unsigned r = 0; r < r_n; r++) {
        bool seen = false;
        for (unsigned q = 0; q < r; q++)
            seen = seen || after->shards[rep[q]].zone_idx == after->shards[rep[r]].zone_idx;
        distinct += !seen;
    }
    return distinct < (r_n < after->nzones ? r_n : after->nzones);
}

/* sim_loads fills the load and weight figures of res from the per-shard counts. */
static void sim_loads(const struct ring_sim_opts *o, const struct ring *after,
                      const unsigned long *load, const unsigned long *slots,
                      struct ring_sim_result *res)
{
    double wsum = 0, mean = (double)o->keys / (double)after->n;

    for (size_t i = 0; i < after->n; i++)
        wsum += after->shards[i].weight;
    for (size_t i = 0; i < after->n; i++) {
        double share = after->shards[i].weight / wsum * (double)o->keys;
        double err = (double)load[i] / share - 1.0;
        if (err < 0)
            err = -err;
        if (err > res->weight_error)
            res->weight_error = err;
        if ((double)load[i] / mean > res->max_over_mean)
            res->max_over_mean = (double)load[i] / mean;
        if ((double)slots[i] / (mean * o->replicas) > res->slot_max_over_mean)
            res->slot_max_over_mean = (double)slots[i] / (mean * o->replicas);
    }
}

int ring_sim_run(const struct ring_sim_opts *o, struct ring_sim_result *res, char *err, size_t cap)
{
    struct ring *before = NULL, *after = NULL;
    uint16_t *place = NULL;
    unsigned long *load = NULL, *slots = NULL;
    unsigned *map = NULL; /* index in before -> index in after, or UINT32_MAX */
    unsigned n_after = o->remove ? o->shards - o->add : o->shards + o->add;
    uint64_t st;
    int rc;

    memset(res, 0, sizeof(*res));
    /* Removing M: the ring after is the first N-M shards; adding: the first N+M. */
    rc = sim_ring(o, o->shards, &before, err, cap);
    if (rc == OK)
        rc = sim_ring(o, n_after, &after, err, cap);
    if (rc != OK)
        goto out;
    place = xmalloc(o->keys * o->replicas * sizeof(*place));
    load = xcalloc(n_after, sizeof(*load));
    slots = xcalloc(n_after, sizeof(*slots));
    map = xmalloc(o->shards * sizeof(*map));
    for (unsigned i = 0; i < o->shards; i++) {
        int j = ring_find(after, before->shards[i].id);
        map[i] = j < 0 ? UINT32_MAX : (unsigned)j;
    }
    st = o->seed;
    for (unsigned long k = 0; k < o->keys; k++) {
        unsigned rep[RING_MAX_REPLICAS];
        ring_lookup_hash(before, sim_next(&st), rep, o->replicas);
        for (unsigned r = 0; r < o->replicas; r++)
            place[k * o->replicas + r] = (uint16_t)rep[r];
    }
    st = o->seed;
    for (unsigned long k = 0; k < o->keys; k++) {
        unsigned rep[RING_MAX_REPLICAS];
        ring_lookup_hash(after, sim_next(&st), rep, o->replicas);
        uint16_t *old = &place[k * o->replicas];
        unsigned old0 = map[old[0]];
        if (rep[0] != old0) {
            res->moved++;
            /* a move is legitimate if it lands on an added shard or leaves a removed one */
            bool ok = o->remove ? old0 == UINT32_MAX : rep[0] >= o->shards;
            if (!ok)
                res->moved_bad++;
        }
        load[rep[0]]++;
        for (unsigned r = 0; r < o->replicas; r++) {
            bool found = false;
            slots[rep[r]]++;
            for (unsigned q = 0; q < o->replicas && !found; q++)
                found = map[old[q]] == rep[r];
            if (!found) {
                res->slots_moved++;
                if (!(o->remove || rep[r] >= o->shards))
                    res->slots_bad++;
            }
        }
        if (o->zones > 1 && sim_zones_short(after, rep, o->replicas))
            res->zone_violations++;
    }
    /* Lookup cost alone: the same loop without the bookkeeping. */
    st = o->seed;
    unsigned sink = 0;
    int64_t t2 = time_mono_us();
    for (unsigned long k = 0; k < o->keys; k++) {
        unsigned rep[RING_MAX_REPLICAS];
        ring_lookup_hash(after, sim_next(&st), rep, o->replicas);
        sink += rep[0];
    }
    res->ns_per_lookup = (double)(time_mono_us() - t2) * 1000.0 / (double)o->keys;
    sim_sink = sink; /* keeps the timed loop from being optimised away */
    sim_loads(o, after, load, slots, res);
    /* Ideal: the changed shards' share of the weight (1/(N+1) for one of N+1 equal shards). */
    double wchanged = 0, wtotal = 0;
    const struct ring *big = o->remove ? before : after;
    for (size_t i = 0; i < big->n; i++) {
        wtotal += big->shards[i].weight;
        if (i >= (o->remove ? n_after : o->shards))
            wchanged += big->shards[i].weight;
    }
    res->ideal_fraction = wchanged / wtotal;
    res->moved_fraction = (double)res->moved / (double)o->keys;
    res->slot_moved_fraction = (double)res->slots_moved / (double)(o->keys * o->replicas);
out:
    ring_free(before);
    ring_free(after);
    free(place);
    free(load);
    free(slots);
    free(map);
    return rc;
}
