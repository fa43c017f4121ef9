/*
 * gc.h - `tessera gc`: the command over app/gc (dry run by default, --apply acts).
 */
#ifndef CLI_GC_H
#define CLI_GC_H

struct config;

/* gc_cmd runs `tessera gc [--apply] [--json]`; exit code 0 done, 1 failures, 2 usage. */
int gc_cmd(const struct config *cfg, int argc, char **argv);

#endif
