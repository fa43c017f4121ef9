/*
 * backup.h - `tessera backup` and `tessera restore`: the blobs of a cluster to a backup
 * target, and from it into a new cluster (app/backup.h).
 */
#ifndef CLI_BACKUP_H
#define CLI_BACKUP_H

#include "config/config.h"

/*
 * backup_cmd is `tessera backup --to URL [--metrics-file FILE] [--json]`: copies the blobs the
 * target lacks, progress on stderr (JSON lines on stdout with --json), the summary last on
 * stdout; with --metrics-file also the result as Prometheus text (node_exporter's textfile
 * collector). Exit code 0, 1 (the target unreachable or full, a copy failed, a shard not
 * listed: the failure named on stderr), 2 (usage).
 */
int backup_cmd(const struct config *cfg, int argc, char **argv);

/*
 * restore_cmd is `tessera restore --from URL [--live SHARDS] [--json]`, run with the new
 * cluster's configuration once its metadata was restored: fills its empty storage nodes from
 * the backup and records its ring. Exit code 0, 1 (refused, or blobs missing), 2 (usage).
 */
int restore_cmd(const struct config *cfg, int argc, char **argv);

#endif
