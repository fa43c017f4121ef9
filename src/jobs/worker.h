/*
 * worker.h - the `tessera worker` and `tessera migrate` roles, and the one
 * place the metadata store is opened from the configuration.
 */
#ifndef JOBS_WORKER_H
#define JOBS_WORKER_H

#include "config/config.h"
#include "jobs/jobs.h"

#include <stdbool.h>

struct meta_store;

/*
 * db_open opens the metadata store cfg names: PostgreSQL when db.url is set
 * (with db.replicas), else SQLite at sqlite_path. migrate: apply missing
 * migrations first (on PostgreSQL only when the primary is reachable).
 */
int db_open(const struct config *cfg, const char *sqlite_path, bool migrate,
            struct meta_store **out);

/* jobs_opts_from fills o from the [jobs] settings. */
void jobs_opts_from(const struct config *cfg, struct jobs_opts *o);

/* migrate_cmd: `tessera migrate`: applies the embedded migrations (PostgreSQL primary or SQLite).
 */
int migrate_cmd(const struct config *cfg, int argc, char **argv);

/* worker_cmd: `tessera worker [--once]`: runs queued jobs until SIGTERM (or the queue is empty). */
int worker_cmd(const struct config *cfg, int argc, char **argv);

#endif
