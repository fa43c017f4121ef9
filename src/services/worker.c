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
#include "jobs/jobs.h"
#include "meta/meta.h"
#include "services/signals.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

int worker_cmd(const struct config *cfg, int argc, char **argv)
{
    struct runtime rt;
    struct app app;
    struct jobs *jobs = NULL;
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
    rc = jobs_start(rt.meta, &jo, app_job_run, &app, &jobs);
    if (rc != OK)
        goto out;
    log_info("worker", "running jobs (%s metadata store)", meta_backend(rt.meta));
    int sig = signals_wait();
    log_info("worker", "%s: stopping after the jobs in progress", strsignal(sig));
    jobs_stop(jobs);
out:
    app_release(&app);
    runtime_close(&rt);
    return rc == OK ? 0 : 1;
}
