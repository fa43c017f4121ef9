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
#include "core/strbuf.h"
#include "core/xalloc.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define JOBS_MAX_THREADS 64
#define JOBS_BACKOFF_CAP (3600 * 1000LL)

static struct metric m_oldest = {"tessera_jobs_oldest_age_seconds",
                                 "Age of the oldest queued or running job, any kind.", "gauge", 0};

enum { OUTCOME_DONE, OUTCOME_FAILED, OUTCOME_DEAD, OUTCOME_N };
static const char *const outcome_name[OUTCOME_N] = {"done", "failed", "dead"};

/*
 * Per job kind: what this process ran (outcomes, durations) and the queue as
 * last read from the store. A kind once seen stays (its gauges fall to 0), so
 * a series does not vanish when its queue empties. Guarded by kinds_lock.
 */
static struct kind_stats {
    char kind[META_JOB_KIND_MAX];
    int64_t runs[OUTCOME_N];
    struct histogram seconds;
    struct meta_job_kind_stats queue;
} kinds[META_JOB_KINDS_MAX];
static size_t n_kinds;
static pthread_mutex_t kinds_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;

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

/* kind_get returns the stats of kind (adding it), NULL when the table is full. Under kinds_lock. */
static struct kind_stats *kind_get(const char *kind)
{
    for (size_t i = 0; i < n_kinds; i++) {
        if (strcmp(kinds[i].kind, kind) == 0)
            return &kinds[i];
    }
    if (n_kinds == META_JOB_KINDS_MAX)
        return NULL;
    snprintf(kinds[n_kinds].kind, sizeof(kinds[n_kinds].kind), "%s", kind);
    return &kinds[n_kinds++];
}

static void kind_ran(const char *kind, int outcome, int64_t us)
{
    pthread_mutex_lock(&kinds_lock);
    struct kind_stats *k = kind_get(kind);
    if (k != NULL) {
        k->runs[outcome]++;
        histogram_observe(&k->seconds, us);
    }
    pthread_mutex_unlock(&kinds_lock);
}

static void jobs_metrics_render(struct strbuf *sb, void *arg)
{
    /* in the order of the values below */
    static const char *const gauge[][2] = {
        {"tessera_jobs_queued", "Jobs waiting (due or backing off), by kind."},
        {"tessera_jobs_due", "Jobs waiting and due now, by kind."},
        {"tessera_jobs_running", "Jobs leased by a worker, by kind."},
        {"tessera_jobs_dead", "Jobs given up after max attempts, by kind."},
        {"tessera_jobs_oldest_due_age_seconds",
         "How long the longest-waiting due job has waited since it became due, by kind."},
    };
    char labels[64];

    (void)arg;
    pthread_mutex_lock(&kinds_lock);
    for (size_t g = 0; g < sizeof(gauge) / sizeof(gauge[0]); g++) {
        strbuf_addf(sb, "# HELP %s %s\n# TYPE %s gauge\n", gauge[g][0], gauge[g][1], gauge[g][0]);
        for (size_t i = 0; i < n_kinds; i++) {
            const struct meta_job_kind_stats *q = &kinds[i].queue;
            const int64_t v[] = {q->queued, q->due, q->running, q->dead, q->oldest_due_age};
            strbuf_addf(sb, "%s{kind=\"%s\"} %lld\n", gauge[g][0], kinds[i].kind, (long long)v[g]);
        }
    }
    strbuf_addf(sb, "# HELP tessera_job_runs_total Job runs by this process, by kind and outcome "
                    "(done; failed: retried later; dead: no attempts left).\n"
                    "# TYPE tessera_job_runs_total counter\n");
    for (size_t i = 0; i < n_kinds; i++) {
        for (size_t o = 0; o < OUTCOME_N; o++)
            strbuf_addf(sb, "tessera_job_runs_total{kind=\"%s\",outcome=\"%s\"} %lld\n",
                        kinds[i].kind, outcome_name[o], (long long)kinds[i].runs[o]);
    }
    strbuf_addf(sb, "# HELP tessera_job_run_seconds Time to run a job (its handler), by kind.\n"
                    "# TYPE tessera_job_run_seconds histogram\n");
    for (size_t i = 0; i < n_kinds; i++) {
        snprintf(labels, sizeof(labels), "kind=\"%.*s\"", META_JOB_KIND_MAX - 1, kinds[i].kind);
        histogram_render(sb, "tessera_job_run_seconds", labels, &kinds[i].seconds);
    }
    pthread_mutex_unlock(&kinds_lock);
}

static void jobs_metrics_register(void)
{
    metric_register(&m_oldest);
    metrics_add_renderer(jobs_metrics_render, NULL);
}

void jobs_metrics_update(struct meta_store *ms)
{
    struct meta_job_stats st;

    pthread_once(&metrics_once, jobs_metrics_register);
    if (meta_job_stats(ms, &st) != OK)
        return;
    atomic_store(&m_oldest.value, st.oldest_age);
    pthread_mutex_lock(&kinds_lock);
    for (size_t i = 0; i < n_kinds; i++)
        memset(&kinds[i].queue, 0, sizeof(kinds[i].queue));
    for (size_t i = 0; i < st.nkinds; i++) {
        struct kind_stats *k = kind_get(st.kind[i].kind);
        if (k != NULL)
            k->queue = st.kind[i];
    }
    pthread_mutex_unlock(&kinds_lock);
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
    int64_t t0 = time_mono_us();

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
        kind_ran(job.kind, OUTCOME_DONE, time_mono_us() - t0);
        rc = meta_job_done(ms, &job);
        if (rc == E_NOTFOUND)
            log_warn("jobs", "job %lld (%s %s) outlived its lease: another worker owns it",
                     (long long)job.id, job.kind, job.payload);
        return rc == E_NOTFOUND ? OK : rc;
    }
    kind_ran(job.kind, job.attempts >= o->max_attempts ? OUTCOME_DEAD : OUTCOME_FAILED,
             time_mono_us() - t0);
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
    pthread_once(&metrics_once, jobs_metrics_register);
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
