/*
 * ring_sim.h - `tessera ring simulate`: measured placement properties of the ring.
 */
#ifndef SERVICES_RING_SIM_H
#define SERVICES_RING_SIM_H

/*
 * ring_sim_cmd runs `tessera ring simulate --shards N --add M --keys K
 * [--replicas R] [--zones Z] [--weighted] [--remove] [--json]` (argv[0] is
 * "ring", argv[1] "simulate"); prints a table or one JSON object; returns the
 * exit code. Needs no configuration and touches no store.
 */
int ring_sim_cmd(int argc, char **argv);

#endif
