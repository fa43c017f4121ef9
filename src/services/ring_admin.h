/*
 * ring_admin.h - the ring as operators change it: the `tessera ring` and
 * `tessera repair` commands.
 */
#ifndef SERVICES_RING_ADMIN_H
#define SERVICES_RING_ADMIN_H

#include "config/config.h"

/* ring_admin_cmd runs `tessera ring SUBCOMMAND ...` (argv[0] is "ring"); returns the exit code. */
int ring_admin_cmd(const struct config *cfg, int argc, char **argv);

/* ring_admin_repair_cmd runs `tessera repair [--dry-run] ...`; returns the exit code. */
int ring_admin_repair_cmd(const struct config *cfg, int argc, char **argv);

#endif
