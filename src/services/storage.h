/*
 * storage.h - the storage node role: `tessera storage`, one shard of the ring.
 */
#ifndef SERVICES_STORAGE_H
#define SERVICES_STORAGE_H

#include "config/config.h"

/*
 * storage_run serves the blobs under storage.data_dir/blobs on server.listen
 * with the protocol of docs/internals/storage.md until SIGTERM or SIGINT, then
 * drains requests in flight and returns OK; an error if it cannot start.
 */
int storage_run(const struct config *cfg);

/* storage_cmd is `tessera storage` (no arguments but settings); returns the exit code. */
int storage_cmd(const struct config *cfg, int argc, char **argv);

#endif
