/*
 * ring_admin.h - the ring as the services use it and as operators change it.
 *
 * Opens the blob store a service should use (the ring of storage.shards, or
 * the single file:// store), guarding the ring epoch recorded in the metadata
 * store; and the `tessera ring` and `tessera repair` commands.
 */
#ifndef SERVICES_RING_ADMIN_H
#define SERVICES_RING_ADMIN_H

#include "config/config.h"

struct meta_store;
struct blob_store;

#define RING_ADMIN_EPOCH_SETTING "ring.epoch"

/*
 * ring_admin_open_store opens the blob store of cfg: with storage.shards
 * empty, the file:// store at fallback_url; otherwise the ring, after
 * checking that its epoch is the one recorded in meta (recording it when
 * none is). A different epoch is E_INVALID with the fix logged (`tessera
 * ring apply`). tmp_dir holds temporaries (uploads, downloads): local, and on
 * the same filesystem as anything that renames them. *out is freed with
 * blob_store_free. May block (opens stores, asks the database).
 */
int ring_admin_open_store(const struct config *cfg, struct meta_store *meta,
                          const char *fallback_url, const char *tmp_dir, struct blob_store **out);

/* ring_admin_cmd runs `tessera ring SUBCOMMAND ...` (argv[0] is "ring"); returns the exit code. */
int ring_admin_cmd(const struct config *cfg, int argc, char **argv);

/* ring_admin_repair_cmd runs `tessera repair [--dry-run] ...`; returns the exit code. */
int ring_admin_repair_cmd(const struct config *cfg, int argc, char **argv);

#endif
