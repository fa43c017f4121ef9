/*
 * keeper.c - the renditions' disk budget (see keeper.h): touches batched off
 * the request path, least-recently-used eviction under transforms.cache_bytes.
 */
#include "app/keeper.h"

#include "app/app.h"
#include "config/config.h"
#include "core/codec.h"
#include "core/err.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/xalloc.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define KEEPER_TOUCH_MAX 256  /* queued touches; more are dropped until the next write */
#define KEEPER_BATCH_MS  1000 /* touches are written about this often */
#define KEEPER_SOON_MS   200  /* after a rendition was recorded, the budget is checked this soon */

static struct metric m_evicted = {"tessera_renditions_evicted_total",
                                  "Renditions evicted to keep transforms.cache_bytes.", "counter",
                                  0};
static struct metric m_evicted_bytes = {"tessera_renditions_evicted_bytes_total",
                                        "Bytes of the renditions evicted.", "counter", 0};
static struct metric m_bytes = {"tessera_renditions_bytes",
                                "Bytes of every rendition at the last budget check (all services).",
                                "gauge", 0};
static struct metric m_touches = {"tessera_renditions_touches_total",
                                  "Rendition uses written (batched) for the eviction order.",
                                  "counter", 0};
static struct metric m_touches_dropped = {
    "tessera_renditions_touches_dropped_total",
    "Rendition uses not written: queue full or the database took no writes.", "counter", 0};

struct keeper {
    struct app *a;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake; /* CLOCK_MONOTONIC */
    bool stop;
    bool recorded;
    size_t n;
    struct meta_variant_ref touch[KEEPER_TOUCH_MAX];
};

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int keeper_evict(struct app *a, uint64_t budget, size_t *n, uint64_t *bytes)
{
    struct meta_evicted e;
    int rc;

    *n = 0;
    *bytes = 0;
    do {
        rc = meta_renditions_evict(a->meta, budget, &e);
        if (rc != OK)
            break;
        atomic_store(&m_bytes.value, (int64_t)(e.total - e.bytes));
        *n += e.n;
        *bytes += e.bytes;
        for (size_t i = 0; i < e.n; i++)
            log_debug("keeper", "evicted rendition %s/t/%s", e.ref[i].image_id, e.ref[i].name);
        /* a full batch: more may be over budget */
    } while (e.n == META_EVICT_MAX);
    metric_add(&m_evicted, (int64_t)*n);
    metric_add(&m_evicted_bytes, (int64_t)*bytes);
    if (*n > 0)
        log_info("keeper", "evicted %zu renditions (%llu bytes) to stay within %llu bytes", *n,
                 (unsigned long long)*bytes, (unsigned long long)budget);
    return rc;
}

/* flush writes the touches taken from the queue; on failure they are dropped. */
static void flush(struct keeper *k, const struct meta_variant_ref *t, size_t n)
{
    int rc;

    if (n == 0)
        return;
    rc = meta_variants_touch(k->a->meta, t, n, (int64_t)time(NULL));
    metric_add(rc == OK ? &m_touches : &m_touches_dropped, (int64_t)n);
    if (rc != OK)
        log_debug("keeper", "%zu rendition uses not recorded: %s", n, err_str(rc));
}

static void *keeper_main(void *arg)
{
    struct keeper *k = arg;
    const struct config *cfg = k->a->cfg;
    struct meta_variant_ref *batch = xmalloc(sizeof(k->touch));
    int64_t next_sweep = mono_ms();
    bool stop = false;

    while (!stop) {
        struct timespec until;
        int64_t now = mono_ms();
        int64_t wait = next_sweep - now;
        size_t n;
        bool sweep;

        if (wait > KEEPER_BATCH_MS)
            wait = KEEPER_BATCH_MS;
        time_deadline(&until, CLOCK_MONOTONIC, wait > 0 ? wait : 0);
        pthread_mutex_lock(&k->lock);
        if (!k->stop && k->n == 0 && !k->recorded && wait > 0)
            pthread_cond_timedwait(&k->wake, &k->lock, &until);
        stop = k->stop;
        n = k->n;
        memcpy(batch, k->touch, n * sizeof(*batch));
        k->n = 0;
        if (k->recorded && next_sweep > mono_ms() + KEEPER_SOON_MS)
            next_sweep = mono_ms() + KEEPER_SOON_MS;
        k->recorded = false;
        pthread_mutex_unlock(&k->lock);

        flush(k, batch, n);
        sweep = mono_ms() >= next_sweep;
        if (sweep && !stop) {
            size_t gone;
            uint64_t bytes;
            int rc = keeper_evict(k->a, (uint64_t)cfg->transforms.cache_bytes, &gone, &bytes);
            if (rc != OK)
                log_warn("keeper", "renditions' budget not checked: %s", err_str(rc));
            next_sweep = mono_ms() + cfg->transforms.evict_interval_ms;
        }
    }
    free(batch);
    return NULL;
}

int keeper_start(struct app *a, struct keeper **out)
{
    pthread_condattr_t mono;
    struct keeper *k;

    *out = NULL;
    if (a->cfg->transforms.cache_bytes == 0)
        return OK;
    metric_register(&m_evicted);
    metric_register(&m_evicted_bytes);
    metric_register(&m_bytes);
    metric_register(&m_touches);
    metric_register(&m_touches_dropped);
    k = xcalloc(1, sizeof(*k));
    k->a = a;
    pthread_mutex_init(&k->lock, NULL);
    pthread_condattr_init(&mono);
    pthread_condattr_setclock(&mono, CLOCK_MONOTONIC);
    pthread_cond_init(&k->wake, &mono);
    pthread_condattr_destroy(&mono);
    if (pthread_create(&k->thread, NULL, keeper_main, k) != 0) {
        pthread_mutex_destroy(&k->lock);
        pthread_cond_destroy(&k->wake);
        free(k);
        return E_INTERNAL;
    }
    *out = k;
    return OK;
}

void keeper_stop(struct keeper *k)
{
    if (k == NULL)
        return;
    pthread_mutex_lock(&k->lock);
    k->stop = true;
    pthread_cond_signal(&k->wake);
    pthread_mutex_unlock(&k->lock);
    pthread_join(k->thread, NULL);
    pthread_mutex_destroy(&k->lock);
    pthread_cond_destroy(&k->wake);
    free(k);
}

void keeper_used(struct keeper *k, const struct variant_rec *v)
{
    bool queued = false;

    /* whole seconds: over the interval by a whole second, so at least the interval passed */
    if (k == NULL ||
        (int64_t)time(NULL) - v->used_at <= k->a->cfg->transforms.touch_interval_ms / 1000)
        return;
    pthread_mutex_lock(&k->lock);
    for (size_t i = 0; i < k->n && !queued; i++)
        queued = strcmp(k->touch[i].image_id, v->image_id) == 0 &&
                 strcmp(k->touch[i].name, v->name) == 0;
    if (!queued && k->n < KEEPER_TOUCH_MAX) {
        snprintf(k->touch[k->n].image_id, sizeof(k->touch[k->n].image_id), "%s", v->image_id);
        snprintf(k->touch[k->n].name, sizeof(k->touch[k->n].name), "%s", v->name);
        k->n++;
        queued = true;
    }
    pthread_mutex_unlock(&k->lock);
    if (!queued)
        metric_add(&m_touches_dropped, 1);
}

void keeper_recorded(struct keeper *k)
{
    if (k == NULL)
        return;
    pthread_mutex_lock(&k->lock);
    k->recorded = true;
    pthread_cond_signal(&k->wake);
    pthread_mutex_unlock(&k->lock);
}
