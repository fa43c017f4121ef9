/*
 * worker.c - `tessera worker` (job threads on the shared stores) and
 * `tessera migrate`.
 *
 * A worker holds no state of its own: every job it runs lives in the
 * metadata store, so any number of workers may run, stop or die at any time.
 */
#include "jobs/worker.h"

#include "core/err.h"
#include "core/log.h"
#include "image/image.h"
#include "meta/meta.h"
#include "services/api.h"
#include "services/ring_admin.h"
#include "services/signals.h"
#include "store/blob.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int db_open(const struct config *cfg, const char *sqlite_path, bool migrate,
            struct meta_store **out)
{
    struct meta_options o = {
        .url = cfg->db.url,
        .replicas = cfg->db.replicas,
        .sqlite_path = sqlite_path,
        .max_replica_lag_ms = cfg->db.max_replica_lag_ms,
        .statement_timeout_ms = cfg->db.statement_timeout_ms,
        .connect_timeout_ms = cfg->db.connect_timeout_ms,
        .pool = (int)cfg->db.pool,
        .migrate = migrate,
    };

    return meta_open(&o, out);
}

void jobs_opts_from(const struct config *cfg, struct jobs_opts *o)
{
    o->workers = (int)cfg->jobs.workers;
    o->lease_ms = cfg->jobs.lease_ms;
    o->max_attempts = (int)cfg->jobs.max_attempts;
    o->backoff_ms = cfg->jobs.backoff_ms;
    o->poll_ms = cfg->jobs.poll_ms;
}

static void sqlite_path_of(const struct config *cfg, char *buf, size_t cap)
{
    if (cfg->storage.db[0] != '\0')
        snprintf(buf, cap, "%s", cfg->storage.db);
    else
        snprintf(buf, cap, "%s/meta.db", cfg->storage.data_dir);
}

int migrate_cmd(const struct config *cfg, int argc, char **argv)
{
    struct meta_store *ms = NULL;
    char path[4096];
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
    sqlite_path_of(cfg, path, sizeof(path));
    rc = meta_open_sqlite(path, &ms); /* opening migrates */
    meta_close(ms);
    if (rc == OK)
        printf("sqlite database %s is current\n", path);
    return rc == OK ? 0 : 1;
}

int worker_cmd(const struct config *cfg, int argc, char **argv)
{
    struct api app;
    struct meta_store *meta = NULL;
    struct blob_store *blobs = NULL;
    struct jobs *jobs = NULL;
    struct jobs_opts jo;
    char path[4096], blob_url[4200], tmp[4200], tmp_abs[4096];
    bool once = argc > 1 && strcmp(argv[1], "--once") == 0;
    bool api_ok = false, img_ok = false;
    int rc;

    if (argc > (once ? 2 : 1)) {
        fprintf(stderr, "usage: tessera worker [--once]\n");
        return 2;
    }
    jobs_opts_from(cfg, &jo);
    if (jo.workers < 1)
        jo.workers = 1;
    if (cfg->storage.blobs[0] != '\0') {
        snprintf(blob_url, sizeof(blob_url), "%s", cfg->storage.blobs);
    } else {
        char abs[4096];
        if (realpath(cfg->storage.data_dir, abs) == NULL) {
            log_error("worker", "cannot resolve \"%s\": %s", cfg->storage.data_dir,
                      strerror(errno));
            return 1;
        }
        snprintf(blob_url, sizeof(blob_url), "file://%s/blobs", abs);
    }
    snprintf(tmp, sizeof(tmp), "%s/tmp", cfg->storage.data_dir);
    mkdir(tmp, 0755);
    rc = img_init("tessera", (int)cfg->image.concurrency, (size_t)cfg->image.cache_bytes);
    if (rc != OK)
        goto out;
    img_ok = true;
    sqlite_path_of(cfg, path, sizeof(path));
    rc = db_open(cfg, path, false, &meta);
    if (rc != OK) {
        log_error("worker", "cannot open the metadata store: %s", err_str(rc));
        goto out;
    }
    if (realpath(tmp, tmp_abs) == NULL) {
        log_error("worker", "cannot resolve \"%s\": %s", tmp, strerror(errno));
        rc = E_IO;
        goto out;
    }
    /* the same store the services use: the ring when storage.shards is set */
    rc = ring_admin_open_store(cfg, meta, blob_url, tmp_abs, &blobs);
    if (rc != OK) {
        log_error("worker", "cannot open the blob store \"%s\": %s", blob_url, err_str(rc));
        goto out;
    }
    api_init(&app, cfg, meta, blobs);
    api_ok = true;
    if (once) {
        int n = 0;
        while ((rc = jobs_run_one(meta, &jo, api_job_run, &app)) == OK)
            n++;
        printf("%d job(s) run\n", n);
        rc = rc == E_NOTFOUND ? OK : rc;
        goto out;
    }
    signals_block();
    rc = jobs_start(meta, &jo, api_job_run, &app, &jobs);
    if (rc != OK)
        goto out;
    log_info("worker", "running jobs (%s metadata store)", meta_backend(meta));
    int sig = signals_wait();
    log_info("worker", "%s: stopping after the jobs in progress", strsignal(sig));
    jobs_stop(jobs);
out:
    if (api_ok)
        api_release(&app);
    blob_store_free(blobs);
    meta_close(meta);
    if (img_ok)
        img_shutdown();
    return rc == OK ? 0 : 1;
}
