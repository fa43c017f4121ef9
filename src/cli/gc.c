/*
 * gc.c - `tessera gc [--apply] [--json]`: prints the plan (or what was done)
 * per category; progress on stderr, the summary on stdout.
 */
#include "cli/gc.h"

#include "app/gc.h"
#include "app/runtime.h"
#include "config/config.h"
#include "core/err.h"
#include "core/progress.h"

#include <stdio.h>
#include <string.h>

static void gc_print_row(const char *what, const struct gc_tally *t, bool with_bytes)
{
    if (with_bytes)
        printf("  %-34s %10lld  %14llu bytes\n", what, (long long)t->n,
               (unsigned long long)t->bytes);
    else
        printf("  %-34s %10lld\n", what, (long long)t->n);
}

static void gc_print(const struct gc_report *r, bool apply)
{
    printf("gc %s\n", apply ? "done" : "plan (dry run: nothing changed; --apply acts)");
    gc_print_row("stale pins cleared", &r->stale_pins, true);
    gc_print_row("unreferenced blobs", &r->unused, true);
    gc_print_row("orphan bytes (no row, past grace)", &r->orphans, true);
    gc_print_row("variants of deleted images", &r->variants, true);
    gc_print_row("dead jobs", &r->jobs, false);
    gc_print_row("kept: orphans within the grace", &r->young, true);
    printf("  %-34s %10lld\n", "kept: in use again", (long long)r->in_use);
    printf("  %-34s %10lld\n", "errors (left for the next run)", (long long)r->errors);
}

static void gc_print_json(const struct gc_report *r, bool apply)
{
    const struct {
        const char *name;
        const struct gc_tally *t;
    } rows[] = {{"stale_pins", &r->stale_pins}, {"unused", &r->unused}, {"orphans", &r->orphans},
                {"variants", &r->variants},     {"jobs", &r->jobs},     {"young", &r->young}};

    printf("{\"op\":\"gc\",\"apply\":%s", apply ? "true" : "false");
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        printf(",\"%s\":{\"count\":%lld,\"bytes\":%llu}", rows[i].name, (long long)rows[i].t->n,
               (unsigned long long)rows[i].t->bytes);
    printf(",\"in_use\":%lld,\"errors\":%lld}\n", (long long)r->in_use, (long long)r->errors);
}

int gc_cmd(const struct config *cfg, int argc, char **argv)
{
    struct runtime rt;
    struct gc_opts o;
    struct gc_report r;
    struct progress *p = NULL;
    bool apply = false, json = false;
    int rc;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--apply") == 0) {
            apply = true;
        } else if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else {
            fprintf(stderr, "usage: tessera gc [--apply] [--json]\n");
            return 2;
        }
    }
    rc = runtime_open(cfg, RT_META | RT_BLOBS, &rt);
    if (rc != OK) {
        fprintf(stderr, "tessera gc: cannot open the stores: %s\n", err_str(rc));
        return 1;
    }
    gc_opts_from_config(cfg, apply, &o);
    p = progress_new("gc", json, stderr);
    rc = gc_run(rt.meta, rt.blobs, &o, p, &r);
    progress_free(p);
    runtime_close(&rt);
    if (json)
        gc_print_json(&r, apply);
    else
        gc_print(&r, apply);
    fflush(stdout);
    if (rc != OK)
        fprintf(stderr, "tessera gc: stopped: %s; run it again (it is idempotent)\n", err_str(rc));
    return rc == OK && r.errors == 0 ? 0 : 1;
}
