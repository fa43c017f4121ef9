/*
 * migrate.c - `tessera migrate`: the embedded schema migrations, applied once
 * by an operator (cluster roles never migrate; `serve` migrates its own).
 */
#include "cli/migrate.h"

#include "app/runtime.h"
#include "core/err.h"
#include "meta/meta.h"

#include <stdio.h>

int migrate_cmd(const struct config *cfg, int argc, char **argv)
{
    struct runtime rt;
    int from = 0, to = 0;
    int rc;

    if (argc > 1) {
        fprintf(stderr, "tessera migrate: unexpected argument \"%s\"\n", argv[1]);
        return 2;
    }
    if (cfg->db.url[0] != '\0') {
        rc = meta_migrate_pg(cfg->db.url, &from, &to);
        if (rc == OK)
            printf("postgres schema version %d%s\n", to, from == to ? " (already current)" : "");
        else
            fprintf(stderr, "tessera migrate: %s\n",
                    rc == E_INVALID       ? "refused: db.url reaches a replica, not the primary"
                    : rc == E_UNAVAILABLE ? "the primary is unreachable"
                                          : "failed (see the log)");
        return rc == OK ? 0 : 1;
    }
    rc = runtime_open(cfg, RT_META | RT_MIGRATE, &rt); /* opening SQLite migrates */
    if (rc == OK)
        printf("sqlite database %s is current\n", rt.db_path);
    runtime_close(&rt);
    return rc == OK ? 0 : 1;
}
