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

/*
 * storage_list_args checks the query of GET /blobs: after (NULL or "": from
 * the start, else a blob key) and limit (NULL: 1000, else 1 to 10000 in
 * decimal digits). OK with *limit set, or E_INVALID with *why a static sentence.
 */
int storage_list_args(const char *after, const char *limit, size_t *out, const char **why);

#endif
