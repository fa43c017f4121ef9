/*
 * repair.h - `tessera repair`.
 */
#ifndef CLI_REPAIR_H
#define CLI_REPAIR_H

#include "config/config.h"

/*
 * repair_cmd is `tessera repair [--dry-run] [--after KEY] [--json]`: brings
 * every blob of the configured ring to exactly its home copies (app/repair.h),
 * progress on stderr (or JSON lines on stdout with --json), the summary on
 * stdout. Returns the exit code: 0, 1 (something lost, failed or unlisted), 2 (usage).
 */
int repair_cmd(const struct config *cfg, int argc, char **argv);

#endif
