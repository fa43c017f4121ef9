/*
 * jobs.c - job threads: claim, run, then done or fail with back-off.
 *
 * Invariant: a job leaves the queue only through meta_job_done after its
 * handler succeeded, fenced by the lease token: a worker whose lease ran out
 * (and whose job another worker took) can neither finish nor fail it. While a
 * handler runs, a keeper thread renews the lease every third of it, so a lease
 * runs out only when its worker died or hung, however long the job takes.
 */
#include "jobs/jobs.h"

#include "core/codec.h"
#include "core/err.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/xalloc.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define JOBS_MAX_THREADS 64
#define JOBS_BACKOFF_CAP (3600 * 1000LL)

static struct metric m_queued = {"tessera_jobs_queued", "Jobs waiting (due or backing off).",
                                 "gauge", 0};
static struct metric m_running = {"tessera_jobs_running", "Jobs leased by a worker.", "gauge", 0};
static struct metric m_dead = {"tessera_jobs_dead", "Jobs given up after max attempts.", "gauge",
                               0};
static struct metric m_oldest = {"tessera_jobs_oldest_age_seconds",
                                 "Age of the oldest queued or running job.", "gauge", 0};
static struct metric m_done = {"tessera_jobs_done_total", "Jobs this process completed.", "counter",
                               0};
static struct metric m_failed = {"tessera_jobs_failed_total", "Job runs that failed here.",
                                 "counter", 0};

struct jobs {
    struct meta_store *ms;
    struct jobs_opts o;
    jobs_handler_fn *fn;
    void *arg;
    pthread_t th[JOBS_MAX_THREADS];
    int n;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stopping; /* guarded by lock */
};

static void jobs_metrics_register(void)
{
    metric_register(&m_queued);
    metric_register(&m_running);
    metric_register(&m_dead);
    metric_register(&m_oldest);
    metric_register(&m_done);
    metric_register(&m_failed);
}

void jobs_metrics_update(struct meta_store *ms)
{
    struct meta_job_stats st;

    jobs_metrics_register();
    if (meta_job_stats(ms, &st) != OK)
        return;
    atomic_store(&m_queued.value, st.queued);
    atomic_store(&m_running.value, st.running);
    atomic_store(&m_dead.value, st.dead);
    atomic_store(&m_oldest.value, st.oldest_age);
}

/* The lease keeper of one running job: renews its lease until the handler returns. */
struct keeper {
    struct meta_store *ms;
    const struct meta_job *job;
    int64_t lease_ms;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool done; /* guarded by lock */
};

static void *keeper_thread(void *arg)
{
    struct keeper *k = arg;
    int64_t every = k->lease_ms / 3;
    struct timespec ts;

    pthread_mutex_lock(&k->lock);
    while (!k->done) {
        time_deadline(&ts, CLOCK_MONOTONIC, every);
        if (pthread_cond_timedwait(&k->wake, &k->lock, &ts) == 0 || k->done)
            continue;
        pthread_mutex_unlock(&k->lock);
        int rc = meta_job_extend(k->ms, k->job, k->lease_ms);
        pthread_mutex_lock(&k->lock);
        if (rc == E_NOTFOUND) {
            /* another worker took it: our result will be fenced off */
            log_warn("jobs", "job %lld (%s %s): lease lost while running", (long long)k->job->id,
                     k->job->kind, k->job->payload);
            break;
        }
        if (rc != OK)
            log_warn("jobs", "job %lld: lease not renewed (%s); retrying", (long long)k->job->id,
                     err_str(rc));
    }
    pthread_mutex_unlock(&k->lock);
    return NULL;
}

/* run_kept runs the handler with its lease renewed in the background. */
static int run_kept(struct meta_store *ms, const struct jobs_opts *o, jobs_handler_fn *fn,
                    void *arg, const struct meta_job *job, char *err, size_t cap)
{
    struct keeper k = {.ms = ms, .job = job, .lease_ms = o->lease_ms};
    pthread_condattr_t ca;
    pthread_t th;
    bool kept;
    int rc;

    pthread_mutex_init(&k.lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&k.wake, &ca);
    pthread_condattr_destroy(&ca);
    kept = pthread_create(&th, NULL, keeper_thread, &k) == 0;
    if (!kept)
        log_warn("jobs", "job %lld: no lease keeper (thread); it must end within its lease",
                 (long long)job->id);
    rc = fn(arg, job, err, cap);
    if (kept) {
        pthread_mutex_lock(&k.lock);
        k.done = true;
        pthread_cond_signal(&k.wake);
        pthread_mutex_unlock(&k.lock);
        pthread_join(th, NULL);
    }
    pthread_mutex_destroy(&k.lock);
    pthread_cond_destroy(&k.wake);
    return rc;
}

int jobs_run_one(struct meta_store *ms, const struct jobs_opts *o, jobs_handler_fn *fn, void *arg)
{
    struct meta_job job;
    char err[META_JOB_ERROR_MAX] = "";
    int rc = meta_job_claim(ms, o->lease_ms, &job);

    if (rc != OK)
        return rc;
    if (job.attempts > o->max_attempts) {
        /* its workers kept dying (leases ran out): run no more */
        snprintf(err, sizeof(err), "lease expired %d times", job.attempts - 1);
        rc = E_INTERNAL;
    } else {
        rc = run_kept(ms, o, fn, arg, &job, err, sizeof(err));
    }
    if (rc == OK) {
        rc = meta_job_done(ms, &job);
        if (rc == OK)
            metric_add(&m_done, 1);
        else if (rc == E_NOTFOUND)
            log_warn("jobs", "job %lld (%s %s) outlived its lease: another worker owns it",
                     (long long)job.id, job.kind, job.payload);
        return rc == E_NOTFOUND ? OK : rc;
    }
    metric_add(&m_failed, 1);
    int64_t delay = o->backoff_ms;
    for (int i = 1; i < job.attempts && delay < JOBS_BACKOFF_CAP; i++)
        delay *= 2;
    if (delay > JOBS_BACKOFF_CAP)
        delay = JOBS_BACKOFF_CAP;
    if (err[0] == '\0')
        snprintf(err, sizeof(err), "%s", err_str(rc));
    log_warn("jobs", "job %lld (%s %s) attempt %d failed: %s%s", (long long)job.id, job.kind,
             job.payload, job.attempts, err,
             job.attempts >= o->max_attempts ? " (dead: no more attempts)" : "");
    if (meta_job_fail(ms, &job, err, o->max_attempts, delay) != OK)
        log_warn("jobs", "job %lld: failure not recorded; it comes back after its lease",
                 (long long)job.id);
    return OK; /* a job ran */
}

static void *jobs_thread(void *arg)
{
    struct jobs *j = arg;
    int64_t last_stats = 0;

    pthread_mutex_lock(&j->lock);
    while (!j->stopping) {
        pthread_mutex_unlock(&j->lock);
        int rc = jobs_run_one(j->ms, &j->o, j->fn, j->arg);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
        if (j->th[0] == pthread_self() && now - last_stats >= 1000) {
            jobs_metrics_update(j->ms);
            last_stats = now;
        }
        pthread_mutex_lock(&j->lock);
        if (rc == OK || j->stopping)
            continue; /* more may be due */
        time_deadline(&ts, CLOCK_MONOTONIC, j->o.poll_ms);
        pthread_cond_timedwait(&j->wake, &j->lock, &ts);
    }
    pthread_mutex_unlock(&j->lock);
    return NULL;
}

int jobs_start(struct meta_store *ms, const struct jobs_opts *o, jobs_handler_fn *fn, void *arg,
               struct jobs **out)
{
    struct jobs *j;
    pthread_condattr_t ca;

    *out = NULL;
    jobs_metrics_register();
    if (o->workers <= 0)
        return OK;
    j = xcalloc(1, sizeof(*j));
    j->ms = ms;
    j->o = *o;
    j->fn = fn;
    j->arg = arg;
    pthread_mutex_init(&j->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&j->wake, &ca);
    pthread_condattr_destroy(&ca);
    /* hold the lock so th[0] is set before any thread compares against it */
    pthread_mutex_lock(&j->lock);
    for (int i = 0; i < o->workers && i < JOBS_MAX_THREADS; i++) {
        if (pthread_create(&j->th[i], NULL, jobs_thread, j) != 0)
            break;
        j->n++;
    }
    pthread_mutex_unlock(&j->lock);
    if (j->n == 0) {
        jobs_stop(j);
        return E_INTERNAL;
    }
    log_info("jobs", "%d job thread(s): lease %lld ms, %d attempts", j->n, (long long)o->lease_ms,
             o->max_attempts);
    *out = j;
    return OK;
}

void jobs_stop(struct jobs *j)
{
    if (j == NULL)
        return;
    pthread_mutex_lock(&j->lock);
    j->stopping = true;
    pthread_cond_broadcast(&j->wake);
    pthread_mutex_unlock(&j->lock);
    for (int i = 0; i < j->n; i++)
        pthread_join(j->th[i], NULL);
    pthread_mutex_destroy(&j->lock);
    pthread_cond_destroy(&j->wake);
    free(j);
}
