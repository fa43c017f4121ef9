/*
 * worker.c - `tessera worker`: job threads (variants, blob release, CDN
 * purges) on the shared stores.
 *
 * A worker holds no state of its own: every job it runs lives in the
 * metadata store, so any number of workers may run, stop or die at any time.
 */
#include "services/worker.h"

#include "app/app.h"
#include "app/runtime.h"
#include "core/err.h"
#include "core/log.h"
#include "http/http.h"
#include "jobs/jobs.h"
#include "meta/meta.h"
#include "services/signals.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* worker_ready: a worker can work while the metadata store (its queue) answers */
static int worker_ready(void *arg, char *why, size_t cap)
{
    struct runtime *rt = arg;

    if (meta_ping(rt->meta) != OK) {
        snprintf(why, cap, "metadata store unreachable");
        return E_UNAVAILABLE;
    }
    return OK;
}

/* worker_listen starts the operational listener of jobs.listen (none when it is empty). */
static int worker_listen(const struct config *cfg, struct runtime *rt, struct http_server **srv)
{
    struct http_server_opts opts = {
        .listen = cfg->jobs.listen,
        .thread_pool = 0, /* a scrape reads the queue from the database: it may block */
        .max_connections = 64,
        .idle_timeout_s = (unsigned)((cfg->server.idle_timeout_ms + 999) / 1000),
        .max_header_bytes = (size_t)cfg->server.max_header_bytes,
        .max_url_bytes = (size_t)cfg->server.max_url_bytes,
        .tmp_dir = rt->tmp_dir,
        .app = rt,
        .ready = worker_ready,
        .metrics_token = &cfg->metrics_token,
    };
    int rc;

    *srv = NULL;
    if (cfg->jobs.listen[0] == '\0')
        return OK;
    rc = http_server_start(&opts, srv);
    if (rc == OK)
        log_info("worker", "metrics and health on %s (port %u)", cfg->jobs.listen,
                 http_server_port(*srv));
    return rc;
}

int worker_cmd(const struct config *cfg, int argc, char **argv)
{
    struct runtime rt;
    struct app app;
    struct jobs *jobs = NULL;
    struct http_server *srv = NULL;
    struct jobs_opts jo;
    bool once = argc > 1 && strcmp(argv[1], "--once") == 0;
    int rc;

    if (argc > (once ? 2 : 1)) {
        fprintf(stderr, "usage: tessera worker [--once]\n");
        return 2;
    }
    runtime_jobs_opts(cfg, &jo);
    if (jo.workers < 1)
        jo.workers = 1;
    rc = runtime_open(cfg, RT_IMAGE | RT_META | RT_BLOBS | RT_RING_FOLLOW | RT_CDN, &rt);
    if (rc != OK)
        return 1;
    app_init(&app, &rt);
    if (once) {
        int n = 0;
        while ((rc = jobs_run_one(rt.meta, &jo, app_job_run, &app)) == OK)
            n++;
        printf("%d job(s) run\n", n);
        rc = rc == E_NOTFOUND ? OK : rc;
        goto out;
    }
    signals_block();
    rc = worker_listen(cfg, &rt, &srv);
    if (rc != OK)
        goto out;
    rc = jobs_start(rt.meta, &jo, app_job_run, &app, &jobs);
    if (rc != OK)
        goto out;
    log_info("worker", "running jobs (%s metadata store)", meta_backend(rt.meta));
    int sig = signals_wait();
    log_info("worker", "%s: stopping after the jobs in progress", strsignal(sig));
    jobs_stop(jobs);
out:
    http_server_stop(srv, 0);
    app_release(&app);
    runtime_close(&rt);
    return rc == OK ? 0 : 1;
}
