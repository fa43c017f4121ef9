/*
 * ring_follow.c - the follower thread: poll the ring in force, swap stores.
 *
 * It compares what it saw last (the epoch in force and the text of the
 * previous ring) with the database; on a change it opens the new stores
 * before swapping, so a ring it cannot open (a bad URL) leaves the service on
 * the stores it has, and it tries again at the next poll.
 */
#include "app/ring_follow.h"

#include "app/ring_state.h"
#include "core/codec.h"
#include "core/err.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/xalloc.h"
#include "store/blob_switch.h"
#include "store/ring.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct ring_follow {
    struct meta_store *meta;
    struct blob_store *sw;
    struct blob_ring_opts o;
    char *tmp_dir;
    int64_t poll_ms;
    char epoch[64];  /* the ring sw serves now */
    char *prev_text; /* the previous ring sw reads as a fallback; "" none */
    pthread_t th;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stopping; /* guarded by lock */
};

static struct metric m_changes = {"tessera_ring_changes_total",
                                  "Ring changes this process followed without a restart.",
                                  "counter", 0};
static pthread_once_t rf_once = PTHREAD_ONCE_INIT;

static void rf_metrics(void)
{
    metric_register(&m_changes);
}

/* rf_open opens a ring store for a recorded description; NULL on failure (logged). */
static struct blob_store *rf_open(struct ring_follow *f, const char *text)
{
    struct ring *ring = NULL;
    struct blob_store *bs = NULL;
    char err[512];

    if (ring_parse_described(text, &ring, err, sizeof(err)) != OK) {
        log_error("ring", "the recorded ring cannot be read: %s", err);
        return NULL;
    }
    if (blob_ring_open(ring, &f->o, &bs) != OK) {
        log_error("ring", "cannot open the stores of ring epoch %s", ring->epoch);
        ring_free(ring);
        return NULL;
    }
    return bs;
}

/* rf_poll looks once; swaps the stores when the ring in force or the previous ring changed. */
static void rf_poll(struct ring_follow *f)
{
    char epoch[64];
    char *text = NULL, *prev = NULL;
    struct blob_store *cur = NULL, *old = NULL;

    if (ring_state_epoch(f->meta, epoch, sizeof(epoch)) != OK ||
        ring_state_previous(f->meta, &prev) != OK)
        goto out; /* the database is away: stay on what we have */
    if (strcmp(epoch, f->epoch) == 0 && strcmp(prev, f->prev_text) == 0)
        goto out;
    if (ring_state_config(f->meta, &text) != OK)
        goto out;
    cur = rf_open(f, text);
    if (cur == NULL)
        goto out;
    if (prev[0] != '\0') {
        old = rf_open(f, prev);
        if (old == NULL) {
            blob_store_free(cur);
            goto out;
        }
    }
    if (blob_switch_set(f->sw, cur, old) != OK)
        goto out;
    log_info("ring", "following ring epoch %s%s (was %s)", epoch,
             prev[0] != '\0' ? ", reading the previous ring as a fallback" : "", f->epoch);
    metric_add(&m_changes, 1);
    snprintf(f->epoch, sizeof(f->epoch), "%s", epoch);
    free(f->prev_text);
    f->prev_text = prev;
    prev = NULL;
out:
    free(text);
    free(prev);
}

static void *rf_thread(void *arg)
{
    struct ring_follow *f = arg;
    struct timespec ts;

    pthread_mutex_lock(&f->lock);
    while (!f->stopping) {
        pthread_mutex_unlock(&f->lock);
        rf_poll(f);
        pthread_mutex_lock(&f->lock);
        if (f->stopping)
            break;
        time_deadline(&ts, CLOCK_MONOTONIC, f->poll_ms);
        pthread_cond_timedwait(&f->wake, &f->lock, &ts);
    }
    pthread_mutex_unlock(&f->lock);
    return NULL;
}

int ring_follow_start(struct meta_store *meta, struct blob_store *sw,
                      const struct blob_ring_opts *o, int64_t poll_ms, const char *epoch,
                      struct ring_follow **out)
{
    struct ring_follow *f = xcalloc(1, sizeof(*f));
    pthread_condattr_t ca;

    *out = NULL;
    pthread_once(&rf_once, rf_metrics);
    f->meta = meta;
    f->sw = sw;
    f->o = *o;
    f->tmp_dir = xstrdup(o->tmp_dir);
    f->o.tmp_dir = f->tmp_dir;
    f->poll_ms = poll_ms > 0 ? poll_ms : 1000;
    snprintf(f->epoch, sizeof(f->epoch), "%s", epoch);
    f->prev_text = xstrdup("");
    pthread_mutex_init(&f->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&f->wake, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&f->th, NULL, rf_thread, f) != 0) {
        pthread_mutex_destroy(&f->lock);
        pthread_cond_destroy(&f->wake);
        free(f->prev_text);
        free(f->tmp_dir);
        free(f);
        return E_INTERNAL;
    }
    *out = f;
    return OK;
}

void ring_follow_stop(struct ring_follow *f)
{
    if (f == NULL)
        return;
    pthread_mutex_lock(&f->lock);
    f->stopping = true;
    pthread_cond_signal(&f->wake);
    pthread_mutex_unlock(&f->lock);
    pthread_join(f->th, NULL);
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->wake);
    free(f->prev_text);
    free(f->tmp_dir);
    free(f);
}
