/*
 * worker.h - `tessera worker`: job threads on the shared stores.
 */
#ifndef SERVICES_WORKER_H
#define SERVICES_WORKER_H

#include "config/config.h"

/*
 * worker_cmd is `tessera worker [--once]`: runs queued jobs until SIGTERM,
 * or with --once until none is due. Returns the exit code.
 */
int worker_cmd(const struct config *cfg, int argc, char **argv);

#endif
