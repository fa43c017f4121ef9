/*
 * ring_sim.h - placement properties measured, not assumed.
 *
 * Places K pseudo-random keys on a ring of N shards and on the same ring with
 * M shards added (or removed), and measures how many keys moved, whether every
 * move touched only the changed shards, the load spread and the cost of a
 * lookup. Touches no store.
 */
#ifndef STORE_RING_SIM_H
#define STORE_RING_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ring_sim_opts {
    unsigned shards;    /* N: 1 .. RING_MAX_SHARDS / 2 */
    unsigned add;       /* M: shards added (or removed): 0 .. RING_MAX_SHARDS / 2, < N to remove */
    bool remove;        /* remove the last M shards instead of adding M */
    unsigned long keys; /* K: 1 .. RING_SIM_MAX_KEYS */
    unsigned replicas;  /* R: 1 .. min(RING_MAX_REPLICAS, shards left) */
    unsigned zones;     /* 0: none; else shard i is in zone i % zones */
    bool weighted;      /* weights 1..4 cycling instead of all 1 */
    uint64_t seed;      /* of the keys */
};

#define RING_SIM_MAX_KEYS 100000000UL

struct ring_sim_result {
    unsigned long moved;           /* keys whose primary changed */
    unsigned long moved_bad;       /* ... not onto an added shard / not off a removed one */
    unsigned long slots_moved;     /* (key, replica) memberships that changed */
    unsigned long slots_bad;       /* ... not involving a changed shard */
    unsigned long zone_violations; /* replica sets sharing a zone while zones remained */
    double moved_fraction;         /* moved / keys */
    double ideal_fraction;         /* the changed shards' share of the weight */
    double slot_moved_fraction;    /* slots_moved / (keys * replicas) */
    double max_over_mean;          /* primaries, on the ring after the change */
    double slot_max_over_mean;     /* replica memberships, same ring */
    double weight_error;           /* largest |load / weight share - 1| */
    double ns_per_lookup;
};

/* ring_sim_opts_init sets the defaults: 4 shards, add 1, 1,000,000 keys, R=3, seed 1. */
void ring_sim_opts_init(struct ring_sim_opts *o);

/* ring_sim_opts_valid tells whether o is within the bounds above. */
bool ring_sim_opts_valid(const struct ring_sim_opts *o);

/*
 * ring_sim_run measures o (valid) into *res. E_INVALID with a sentence in err
 * (capacity cap) if a ring cannot be built. Allocates keys * replicas * 2
 * bytes; blocks for the computation (about a second per million keys).
 */
int ring_sim_run(const struct ring_sim_opts *o, struct ring_sim_result *res, char *err, size_t cap);

#endif
