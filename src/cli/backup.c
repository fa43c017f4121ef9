/*
 * backup.c - `tessera backup` and `tessera restore`: arguments, the runtime, app/backup, the
 * summary (the last line on stdout: a sentence, or one JSON object with --json).
 */
#include "cli/backup.h"

#include "app/backup.h"
#include "app/runtime.h"
#include "core/err.h"
#include "core/log.h"
#include "core/progress.h"
#include "store/blob.h"
#include "store/blob_ring.h"
#include "store/ring.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/*
 * backup_metrics writes the result where node_exporter's textfile collector reads it: a
 * temporary renamed into place, so a scrape never sees half a file. Logs a failure.
 */
static int backup_metrics(const char *path, const struct backup_result *r, bool ok)
{
    char tmp[4096];
    FILE *f;
    int rc = OK;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return E_INVALID;
    f = fopen(tmp, "w");
    if (f == NULL) {
        log_error("backup", "cannot write \"%s\": %s", tmp, strerror(errno));
        return E_IO;
    }
    fprintf(f,
            "# HELP tessera_backup_success 1 when the last tessera backup copied every blob.\n"
            "# TYPE tessera_backup_success gauge\ntessera_backup_success %d\n"
            "# HELP tessera_backup_last_run_timestamp_seconds When the last tessera backup "
            "ended.\n# TYPE tessera_backup_last_run_timestamp_seconds gauge\n"
            "tessera_backup_last_run_timestamp_seconds %lld\n"
            "# HELP tessera_backup_blobs_copied Blobs the last tessera backup copied.\n"
            "# TYPE tessera_backup_blobs_copied gauge\ntessera_backup_blobs_copied %zu\n"
            "# HELP tessera_backup_bytes_copied Bytes the last tessera backup copied.\n"
            "# TYPE tessera_backup_bytes_copied gauge\ntessera_backup_bytes_copied %llu\n"
            "# HELP tessera_backup_errors Blobs the last tessera backup failed to copy.\n"
            "# TYPE tessera_backup_errors gauge\ntessera_backup_errors %zu\n",
            ok ? 1 : 0, (long long)time(NULL), r->copied, (unsigned long long)r->bytes, r->errors);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        log_error("backup", "cannot write \"%s\": %s", path, strerror(errno));
        remove(tmp);
        rc = E_IO;
    }
    return rc;
}

static void backup_print(const char *to, const struct backup_result *r, int rc, bool json)
{
    double mbs = r->seconds > 0 ? (double)r->bytes / r->seconds / 1e6 : 0;

    if (json) {
        printf("{\"op\":\"backup\",\"event\":\"summary\",\"ok\":%s,\"keys\":%zu,\"present\":%zu,"
               "\"copied\":%zu,\"bytes\":%llu,\"errors\":%zu,\"unlisted\":%zu,"
               "\"target_full\":%s,\"seconds\":%.1f}\n",
               rc == OK ? "true" : "false", r->keys, r->present, r->copied,
               (unsigned long long)r->bytes, r->errors, r->unlisted,
               r->target_full ? "true" : "false", r->seconds);
        return;
    }
    printf("backup to %s: %zu blobs, %zu already there, %zu copied (%llu bytes, %.1f blobs/s, "
           "%.2f MB/s) in %.1f s, %zu errors, %zu shards not listed%s\n",
           to, r->keys, r->present, r->copied, (unsigned long long)r->bytes,
           r->seconds > 0 ? (double)r->copied / r->seconds : 0.0, mbs, r->seconds, r->errors,
           r->unlisted, r->target_full ? "; STOPPED: the target is full" : "");
}

int backup_cmd(const struct config *cfg, int argc, char **argv)
{
    struct runtime rt = {0};
    struct blob_store *target = NULL;
    struct backup_result res = {0};
    struct progress *p = NULL;
    const char *to = NULL, *metrics = NULL;
    char err[1024];
    bool json = false;
    int rc;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--to") == 0 && i + 1 < argc)
            to = argv[++i];
        else if (strcmp(argv[i], "--metrics-file") == 0 && i + 1 < argc)
            metrics = argv[++i];
        else if (strcmp(argv[i], "--json") == 0)
            json = true;
        else
            to = NULL, i = argc;
    }
    if (to == NULL) {
        fprintf(stderr, "usage: tessera backup --to URL [--metrics-file FILE] [--json]\n"
                        "  URL: file:///mnt/backup/blobs (an existing directory) or "
                        "s3+https://HOST/BUCKET[/PREFIX]; copies only what it lacks, deletes "
                        "nothing\n");
        return 2;
    }
    rc = runtime_open(cfg, RT_META | RT_BLOBS | RT_RING, &rt);
    if (rc != OK)
        goto out;
    rc = backup_target_open(&rt, to, &target, err, sizeof(err));
    if (rc != OK) {
        fprintf(stderr, "tessera backup: FAILED: %s\n", err);
        log_error("backup", "%s", err);
        goto out;
    }
    p = progress_new("backup", json, json ? stdout : stderr);
    rc = backup_run(&rt, target, p, &res);
    progress_free(p);
    backup_print(to, &res, rc, json);
    if (rc != OK) {
        const char *why = rc == E_NOSPACE       ? "the target is full"
                          : rc == E_UNAVAILABLE ? "a shard or the target could not be listed"
                                                : "copies failed (listed above)";
        fprintf(stderr, "tessera backup: FAILED: %s; nothing in the target was removed\n", why);
        log_error("backup", "backup to %s failed: %s", to, why);
    }
out:
    if (metrics != NULL && backup_metrics(metrics, &res, rc == OK) != OK && rc == OK)
        rc = E_IO;
    blob_store_free(target);
    runtime_close(&rt);
    return rc == OK ? 0 : 1;
}

int restore_cmd(const struct config *cfg, int argc, char **argv)
{
    struct runtime rt = {0};
    struct blob_store *backup = NULL, *live = NULL;
    struct ring *nw = NULL, *live_ring = NULL;
    struct restore_result res = {0};
    struct progress *p = NULL;
    const char *from = NULL, *live_spec = NULL;
    char err[1024] = "";
    bool json = false;
    int rc;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--from") == 0 && i + 1 < argc)
            from = argv[++i];
        else if (strcmp(argv[i], "--live") == 0 && i + 1 < argc)
            live_spec = argv[++i];
        else if (strcmp(argv[i], "--json") == 0)
            json = true;
        else
            from = NULL, i = argc;
    }
    if (from == NULL) {
        fprintf(stderr, "usage: tessera restore --from URL [--live SHARDS] [--json]\n"
                        "  with the new cluster's configuration, its metadata restored first; "
                        "SHARDS (storage.shards syntax): the old cluster's store, read for blobs "
                        "the backup lacks\n");
        return 2;
    }
    rc = ring_parse_spec(cfg->storage.shards, (unsigned)cfg->storage.replicas,
                         (unsigned)cfg->storage.write_quorum, &nw, err, sizeof(err));
    if (rc == OK)
        rc = runtime_open(cfg, RT_META, &rt);
    if (rc == OK)
        rc = backup_target_open(&rt, from, &backup, err, sizeof(err));
    if (rc == OK && live_spec != NULL) {
        struct blob_ring_opts o;
        runtime_ring_opts(&rt, &o);
        rc = ring_parse_spec(live_spec, 1, 1, &live_ring, err, sizeof(err));
        if (rc == OK && blob_ring_open(live_ring, &o, &live) != OK) {
            snprintf(err, sizeof(err), "--live: its shards cannot be opened");
            rc = E_INVALID;
        }
        if (rc == OK)
            live_ring = NULL; /* the store has it */
    }
    if (rc != OK) {
        fprintf(stderr, "tessera restore: %s\n", err[0] ? err : err_str(rc));
        goto out;
    }
    p = progress_new("restore", json, json ? stdout : stderr);
    rc = restore_run(&rt, nw, backup, live, p, err, sizeof(err), &res);
    progress_free(p);
    if (rc == E_EXISTS || (rc != OK && err[0] != '\0')) {
        fprintf(stderr, "tessera restore: refused: %s\n", err);
        goto out;
    }
    if (json)
        printf("{\"op\":\"restore\",\"event\":\"summary\",\"ok\":%s,\"epoch\":\"%s\","
               "\"listed\":%zu,\"unreferenced\":%zu,\"copied\":%zu,\"from_live\":%zu,"
               "\"bytes\":%llu,\"images\":%zu,\"missing\":%zu,\"errors\":%zu,\"seconds\":%.1f}\n",
               rc == OK ? "true" : "false", nw->epoch, res.listed, res.unreferenced, res.copied,
               res.from_live, (unsigned long long)res.bytes, res.images, res.missing, res.errors,
               res.seconds);
    else
        printf("restore from %s: %zu blobs in the backup, %zu not referenced (left out), %zu "
               "copied, %zu from the live store (%llu bytes, %.2f MB/s); %zu images checked, "
               "%zu blobs missing, %zu errors in %.1f s; epoch %s in force\n",
               from, res.listed, res.unreferenced, res.copied, res.from_live,
               (unsigned long long)res.bytes,
               res.seconds > 0 ? (double)res.bytes / res.seconds / 1e6 : 0.0, res.images,
               res.missing, res.errors, res.seconds, nw->epoch);
out:
    blob_store_free(backup);
    blob_store_free(live);
    ring_free(live_ring);
    ring_free(nw);
    runtime_close(&rt);
    return rc == OK ? 0 : 1;
}
