/*
 * ring_sim.c - `tessera ring simulate`: placement properties measured, not assumed.
 *
 * Places K random keys on a ring of N shards and on the same ring with M shards
 * added (or removed), and reports how many keys moved, whether every move
 * touched only the changed shards, the load spread and the cost of a lookup.
 */
#include "services/ring_sim.h"

#include "core/codec.h"
#include "core/err.h"
#include "core/xalloc.h"
#include "store/ring.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sim_opts {
    unsigned shards;
    unsigned add;
    bool remove;
    unsigned long keys;
    unsigned replicas;
    unsigned zones;
    bool weighted;
    bool json;
    uint64_t seed;
};

/* sim_weight gives shard i its weight: 1, or 1..4 cycling with --weighted. */
static double sim_weight(const struct sim_opts *o, unsigned i)
{
    return o->weighted ? (double)(i % 4 + 1) : 1.0;
}

/* sim_ring builds a ring of shards s1..sN (ids fixed, so shards keep their seeds across rings). */
static int sim_ring(const struct sim_opts *o, unsigned n, struct ring **out)
{
    size_t cap = (size_t)n * 96 + 1;
    char *text = xmalloc(cap);
    char err[256];
    size_t len = 0;
    int rc;

    text[0] = '\0';
    for (unsigned i = 0; i < n; i++) {
        len += (size_t)snprintf(text + len, cap - len, "s%u=file:///sim/s%u;weight=%g", i + 1,
                                i + 1, sim_weight(o, i));
        if (o->zones > 0)
            len += (size_t)snprintf(text + len, cap - len, ";zone=z%u", i % o->zones);
        len += (size_t)snprintf(text + len, cap - len, ",");
    }
    rc = ring_parse(text, o->replicas, 1, out, err, sizeof(err));
    if (rc != OK)
        fprintf(stderr, "tessera ring simulate: %s\n", err);
    free(text);
    return rc;
}

static uint64_t sim_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int sim_parse(int argc, char **argv, struct sim_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->shards = 4;
    o->add = 1;
    o->keys = 1000000;
    o->replicas = 3;
    o->seed = 1;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        unsigned long v = 0;
        if (strcmp(a, "--json") == 0) {
            o->json = true;
            continue;
        }
        if (strcmp(a, "--remove") == 0) {
            o->remove = true;
            continue;
        }
        if (strcmp(a, "--weighted") == 0) {
            o->weighted = true;
            continue;
        }
        const char *val = strchr(a, '=') ? strchr(a, '=') + 1 : (i + 1 < argc ? argv[++i] : NULL);
        char *end = NULL;
        if (val == NULL || (v = strtoul(val, &end, 10), end == val || *end != '\0')) {
            fprintf(stderr, "tessera ring simulate: %s needs a number\n", a);
            return E_INVALID;
        }
        if (strncmp(a, "--shards", 8) == 0)
            o->shards = (unsigned)v;
        else if (strncmp(a, "--add", 5) == 0)
            o->add = (unsigned)v;
        else if (strncmp(a, "--keys", 6) == 0)
            o->keys = v;
        else if (strncmp(a, "--replicas", 10) == 0)
            o->replicas = (unsigned)v;
        else if (strncmp(a, "--zones", 7) == 0)
            o->zones = (unsigned)v;
        else if (strncmp(a, "--seed", 6) == 0)
            o->seed = v;
        else {
            fprintf(stderr, "tessera ring simulate: unknown option %s\n", a);
            return E_INVALID;
        }
    }
    if (o->shards < 1 || o->shards > RING_MAX_SHARDS / 2 || o->add > RING_MAX_SHARDS / 2 ||
        o->keys < 1 || o->keys > 100000000UL || o->replicas < 1 ||
        o->replicas > RING_MAX_REPLICAS || (o->remove && o->add >= o->shards) ||
        o->replicas > (o->remove ? o->shards - o->add : o->shards)) {
        fprintf(stderr, "usage: tessera ring simulate --shards N [--add M | --add M --remove] "
                        "--keys K [--replicas R] [--zones Z] [--weighted] [--seed S] [--json]\n"
                        "(1 <= R <= shards left, K <= 100000000)\n");
        return E_INVALID;
    }
    return OK;
}

struct sim_result {
    unsigned long moved;           /* keys whose primary changed */
    unsigned long moved_bad;       /* ... not onto an added shard / not off a removed one */
    unsigned long slots_moved;     /* (key, replica) memberships that changed */
    unsigned long slots_bad;       /* ... not involving a changed shard */
    unsigned long zone_violations; /* replica sets sharing a zone while zones remained */
    double max_over_mean;          /* primaries, on the ring after the change */
    double slot_max_over_mean;     /* replica memberships, same ring */
    double weight_error;           /* largest |load / weight share - 1| */
    double ns_per_lookup;
};

int ring_sim_cmd(int argc, char **argv)
{
    struct sim_opts o;
    struct ring *before = NULL, *after = NULL;
    uint16_t *place = NULL;
    unsigned long *load = NULL, *slots = NULL;
    unsigned *map = NULL; /* index in before -> index in after, or UINT32_MAX */
    struct sim_result res;
    unsigned n_after;
    uint64_t st;
    int rc;

    memset(&res, 0, sizeof(res));
    if (sim_parse(argc, argv, &o) != OK)
        return 2;
    n_after = o.remove ? o.shards - o.add : o.shards + o.add;
    /* Removing M: the ring after is the first N-M shards; adding: the first N+M. */
    rc = sim_ring(&o, o.shards, &before);
    if (rc == OK)
        rc = sim_ring(&o, n_after, &after);
    if (rc != OK)
        goto out;
    place = xmalloc(o.keys * o.replicas * sizeof(*place));
    load = xcalloc(n_after, sizeof(*load));
    slots = xcalloc(n_after, sizeof(*slots));
    map = xmalloc(o.shards * sizeof(*map));
    for (unsigned i = 0; i < o.shards; i++) {
        int j = ring_find(after, before->shards[i].id);
        map[i] = j < 0 ? UINT32_MAX : (unsigned)j;
    }
    st = o.seed;
    for (unsigned long k = 0; k < o.keys; k++) {
        unsigned rep[RING_MAX_REPLICAS];
        ring_lookup_hash(before, sim_next(&st), rep, o.replicas);
        for (unsigned r = 0; r < o.replicas; r++)
            place[k * o.replicas + r] = (uint16_t)rep[r];
    }
    st = o.seed;
    for (unsigned long k = 0; k < o.keys; k++) {
        unsigned rep[RING_MAX_REPLICAS];
        ring_lookup_hash(after, sim_next(&st), rep, o.replicas);
        uint16_t *old = &place[k * o.replicas];
        unsigned old0 = map[old[0]];
        if (rep[0] != old0) {
            res.moved++;
            /* a move is legitimate if it lands on an added shard or leaves a removed one */
            bool ok = o.remove ? old0 == UINT32_MAX : rep[0] >= o.shards;
            if (!ok)
                res.moved_bad++;
        }
        load[rep[0]]++;
        for (unsigned r = 0; r < o.replicas; r++) {
            bool found = false;
            slots[rep[r]]++;
            for (unsigned q = 0; q < o.replicas && !found; q++)
                found = map[old[q]] == rep[r];
            if (!found) {
                res.slots_moved++;
                if (!(o.remove || rep[r] >= o.shards))
                    res.slots_bad++;
            }
        }
        if (o.zones > 1) {
            unsigned distinct = 0;
            for (unsigned r = 0; r < o.replicas; r++) {
                bool seen = false;
                for (unsigned q = 0; q < r; q++)
                    seen = seen || after->shards[rep[q]].zone_idx == after->shards[rep[r]].zone_idx;
                distinct += !seen;
            }
            unsigned want = o.replicas < after->nzones ? o.replicas : after->nzones;
            if (distinct < want)
                res.zone_violations++;
        }
    }
    /* Lookup cost alone: the same loop without the bookkeeping. */
    st = o.seed;
    unsigned sink = 0;
    int64_t t2 = time_mono_us();
    for (unsigned long k = 0; k < o.keys; k++) {
        unsigned rep[RING_MAX_REPLICAS];
        ring_lookup_hash(after, sim_next(&st), rep, o.replicas);
        sink += rep[0];
    }
    int64_t t3 = time_mono_us();
    res.ns_per_lookup = (double)(t3 - t2) * 1000.0 / (double)o.keys;
    if (sink == UINT32_MAX)
        fputs("", stdout); /* keeps the timed loop from being optimised away */
    double wsum = 0, mean = (double)o.keys / n_after;
    for (unsigned i = 0; i < n_after; i++)
        wsum += after->shards[i].weight;
    for (unsigned i = 0; i < n_after; i++) {
        double share = after->shards[i].weight / wsum * (double)o.keys;
        double err = (double)load[i] / share - 1.0;
        if (err < 0)
            err = -err;
        if (err > res.weight_error)
            res.weight_error = err;
        if ((double)load[i] / mean > res.max_over_mean)
            res.max_over_mean = (double)load[i] / mean;
        if ((double)slots[i] / (mean * o.replicas) > res.slot_max_over_mean)
            res.slot_max_over_mean = (double)slots[i] / (mean * o.replicas);
    }
    /* Ideal: the changed shards' share of the weight (1/(N+1) for one of N+1 equal shards). */
    double wchanged = 0, wtotal = 0;
    const struct ring *big = o.remove ? before : after;
    for (size_t i = 0; i < big->n; i++) {
        wtotal += big->shards[i].weight;
        if (i >= (o.remove ? n_after : o.shards))
            wchanged += big->shards[i].weight;
    }
    double ideal = wchanged / wtotal;
    double moved = (double)res.moved / (double)o.keys;
    double slot_moved = (double)res.slots_moved / (double)(o.keys * o.replicas);
    if (o.json) {
        printf("{\"shards\":%u,\"%s\":%u,\"keys\":%lu,\"replicas\":%u,\"zones\":%u,"
               "\"weighted\":%s,\"moved_fraction\":%.6f,\"ideal_fraction\":%.6f,"
               "\"moved_over_ideal\":%.4f,\"moved_elsewhere\":%lu,"
               "\"replica_moved_fraction\":%.6f,\"replica_moved_elsewhere\":%lu,"
               "\"max_over_mean\":%.4f,\"replica_max_over_mean\":%.4f,\"weight_error\":%.4f,"
               "\"zone_violations\":%lu,\"ns_per_lookup\":%.1f}\n",
               o.shards, o.remove ? "removed" : "added", o.add, o.keys, o.replicas, o.zones,
               o.weighted ? "true" : "false", moved, ideal, moved / ideal, res.moved_bad,
               slot_moved, res.slots_bad, res.max_over_mean, res.slot_max_over_mean,
               res.weight_error, res.zone_violations, res.ns_per_lookup);
    } else {
        printf("ring simulate: %u shards %s %u, %lu keys, R=%u%s%s\n", o.shards,
               o.remove ? "minus" : "plus", o.add, o.keys, o.replicas, o.zones ? ", zones" : "",
               o.weighted ? ", weights 1..4" : "");
        printf("  %-34s %10.4f%%  (ideal %.4f%%, ratio %.3f)\n", "primaries moved", moved * 100,
               ideal * 100, moved / ideal);
        printf("  %-34s %10lu\n",
               o.remove ? "moves not off a removed shard" : "moves not onto an added shard",
               res.moved_bad);
        printf("  %-34s %10.4f%%\n", "replica slots moved", slot_moved * 100);
        printf("  %-34s %10lu\n", "replica moves elsewhere", res.slots_bad);
        printf("  %-34s %10.4f\n", "max/mean load (primaries)", res.max_over_mean);
        printf("  %-34s %10.4f\n", "max/mean load (all replicas)", res.slot_max_over_mean);
        printf("  %-34s %10.4f\n", "worst |load/weight share - 1|", res.weight_error);
        if (o.zones > 1)
            printf("  %-34s %10lu\n", "replica sets short of zones", res.zone_violations);
        printf("  %-34s %10.1f\n", "ns per lookup (R replicas)", res.ns_per_lookup);
    }
out:
    ring_free(before);
    ring_free(after);
    free(place);
    free(load);
    free(slots);
    free(map);
    return rc == OK ? 0 : 1;
}
