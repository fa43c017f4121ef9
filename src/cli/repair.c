/*
 * repair.c - `tessera repair`: arguments, the runtime, app/repair, the summary.
 *
 * The last line on stdout is the summary (a sentence, or one JSON object with
 * --json): scripts and drills read it.
 */
#include "cli/repair.h"

#include "app/repair.h"
#include "app/runtime.h"
#include "core/err.h"
#include "core/progress.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static void repair_print(const struct repair_result *r, bool dry, bool json)
{
    const struct ring_repair_counts *k = &r->k;

    if (json) {
        printf("{\"op\":\"repair\",\"event\":\"summary\",\"dry_run\":%s,\"keys\":%zu,"
               "\"seconds\":%.1f,\"restored\":%zu,\"moved_home\":%zu,\"corrupt\":%zu,"
               "\"orphans_removed\":%zu,\"orphans_young\":%zu,\"lost\":%zu,\"errors\":%zu,"
               "\"images_checked\":%zu,\"shards_unlisted\":%zu,\"quarantined\":%zu}\n",
               dry ? "true" : "false", k->keys, r->seconds, k->restored, k->moved_home, k->corrupt,
               k->orphans_removed, k->orphans_young, k->lost, k->errors, r->images_checked,
               r->shards_unlisted, r->quarantined);
        return;
    }
    printf("repair%s: %zu keys in %.1f s: %zu copies restored, %zu moved home (extra copies "
           "removed), %zu corrupt rewritten, %zu orphan copies removed, %zu young orphans kept, "
           "%zu lost, %zu errors, %zu quarantined by the scrubbers\n",
           dry ? " (dry run)" : "", k->keys, r->seconds, k->restored, k->moved_home, k->corrupt,
           k->orphans_removed, k->orphans_young, k->lost, k->errors, r->quarantined);
}

int repair_cmd(const struct config *cfg, int argc, char **argv)
{
    struct runtime rt = {0};
    struct repair_opts o = {false, ""};
    struct repair_result res;
    struct progress *p = NULL;
    bool json = false;
    int rc;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--dry-run") == 0) {
            o.dry_run = true;
        } else if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--after") == 0 && i + 1 < argc) {
            o.after = argv[++i];
        } else {
            fprintf(stderr, "usage: tessera repair [--dry-run] [--after KEY] [--json]\n");
            return 2;
        }
    }
    rc = runtime_open(cfg, RT_META | RT_BLOBS | RT_RING, &rt);
    if (rc != OK)
        goto out;
    p = progress_new("repair", json, json ? stdout : stderr);
    rc = repair_run(&rt, &o, p, &res);
    progress_free(p);
    repair_print(&res, o.dry_run, json);
out:
    runtime_close(&rt);
    return rc == OK ? 0 : 1;
}
