/*
 * migrate.h - `tessera migrate`.
 */
#ifndef CLI_MIGRATE_H
#define CLI_MIGRATE_H

#include "config/config.h"

/*
 * migrate_cmd is `tessera migrate`: applies the embedded schema migrations to
 * the PostgreSQL primary of db.url, or to the SQLite database. Returns the
 * exit code.
 */
int migrate_cmd(const struct config *cfg, int argc, char **argv);

#endif
