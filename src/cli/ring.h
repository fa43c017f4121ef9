/*
 * ring.h - `tessera ring show | apply | plan | rebalance | simulate`.
 */
#ifndef CLI_RING_H
#define CLI_RING_H

#include "config/config.h"

/*
 * ring_cmd runs `tessera ring SUBCOMMAND ...` (argv[0] is "ring"): show and
 * apply the configured ring, plan and rebalance the move from the ring in
 * force to it (app/rebalance.h; --json: progress and results as JSON lines on
 * stdout), simulate placement (store/ring_sim.h; needs no store). Returns the
 * exit code: 0, 1 (failed), 2 (usage).
 */
int ring_cmd(const struct config *cfg, int argc, char **argv);

#endif
