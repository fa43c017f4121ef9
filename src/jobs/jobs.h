/*
 * jobs.h - the job runner: threads that claim jobs from the metadata store's
 * queue and run them through a handler.
 *
 * At least once: a job is removed only after its handler returned OK. The
 * lease is renewed while the handler runs, so a worker that dies leaves its
 * job leased for at most one lease, then another runs it again. Handlers must
 * therefore be idempotent. A failure is retried with exponential back-off;
 * after max_attempts claims (expired leases included) the job is dead.
 */
#ifndef JOBS_JOBS_H
#define JOBS_JOBS_H

#include "meta/meta.h"

#include <stddef.h>
#include <stdint.h>

struct jobs;

struct jobs_opts {
    int workers;        /* threads */
    int64_t lease_ms;   /* a claimed job is ours this long, renewed every third while it runs */
    int max_attempts;   /* claims before the job is dead */
    int64_t backoff_ms; /* first retry delay, doubled per attempt, capped at one hour */
    int64_t poll_ms;    /* idle threads look for due jobs this often */
};

/*
 * jobs_handler_fn runs one job; OK when done (also when there was nothing to
 * do), else an error with a sentence in err (cap bytes). May block.
 */
typedef int jobs_handler_fn(void *arg, const struct meta_job *job, char *err, size_t cap);

/* jobs_run_one claims one due job and runs it: OK ran one, E_NOTFOUND none was due. */
int jobs_run_one(struct meta_store *ms, const struct jobs_opts *o, jobs_handler_fn *fn, void *arg);

/* jobs_start starts o->workers threads (none when 0; *out is then NULL). */
int jobs_start(struct meta_store *ms, const struct jobs_opts *o, jobs_handler_fn *fn, void *arg,
               struct jobs **out);

/* jobs_stop asks the threads to stop, waits for the jobs they run, frees j. NULL is fine. */
void jobs_stop(struct jobs *j);

/* jobs_metrics_update refreshes the queue gauges of /metrics from the store (primary). */
void jobs_metrics_update(struct meta_store *ms);

#endif
