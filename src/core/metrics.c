/*
 * metrics.c - the metric registry and the per-route request statistics.
 *
 * Per route: a counter per HTTP status (100..599) and a latency histogram per
 * status class (1xx..5xx). Memory is fixed at start: METRICS_MAX_ROUTES x 500
 * counters and 5 histograms.
 */
#include "core/metrics.h"

#include "core/strbuf.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define METRICS_MAX        64
#define METRICS_STATUS_MIN 100
#define METRICS_STATUS_N   500

#define METRICS_CLASSES 5 /* 1xx .. 5xx */

static const double latency_bounds[HISTOGRAM_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10};
#define LATENCY_N HISTOGRAM_BUCKETS

struct route_stats {
    const char *name;
    _Atomic int64_t status[METRICS_STATUS_N];
    struct histogram latency[METRICS_CLASSES];
};

static struct metric *registry[METRICS_MAX];
static size_t n_registry;
static struct route_stats routes[METRICS_MAX_ROUTES + 1]; /* last: unmatched */
static size_t n_routes;
static pthread_mutex_t routes_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int64_t inflight;
static struct {
    metrics_renderer_fn *fn;
    void *arg;
} renderers[8];
static pthread_mutex_t renderers_lock = PTHREAD_MUTEX_INITIALIZER;

void metrics_add_renderer(metrics_renderer_fn *fn, void *arg)
{
    pthread_mutex_lock(&renderers_lock);
    for (size_t i = 0; i < sizeof(renderers) / sizeof(renderers[0]); i++) {
        if (renderers[i].fn == NULL) {
            renderers[i].fn = fn;
            renderers[i].arg = arg;
            break;
        }
    }
    pthread_mutex_unlock(&renderers_lock);
}

void metrics_remove_renderer(metrics_renderer_fn *fn, void *arg)
{
    pthread_mutex_lock(&renderers_lock);
    for (size_t i = 0; i < sizeof(renderers) / sizeof(renderers[0]); i++) {
        if (renderers[i].fn == fn && renderers[i].arg == arg)
            renderers[i].fn = NULL;
    }
    pthread_mutex_unlock(&renderers_lock);
}

void metric_register(struct metric *m)
{
    for (size_t i = 0; i < n_registry; i++) {
        if (registry[i] == m)
            return;
    }
    if (n_registry < METRICS_MAX)
        registry[n_registry++] = m;
}

int metrics_route_id(const char *name)
{
    int id = -1;

    pthread_mutex_lock(&routes_lock);
    for (size_t i = 0; i < n_routes; i++) {
        if (strcmp(routes[i].name, name) == 0) {
            id = (int)i;
            goto out;
        }
    }
    if (n_routes < METRICS_MAX_ROUTES) {
        routes[n_routes].name = name;
        id = (int)n_routes++;
    }
out:
    pthread_mutex_unlock(&routes_lock);
    return id;
}

void histogram_observe(struct histogram *h, int64_t duration_us)
{
    double secs = (double)duration_us / 1e6;
    size_t b = 0;

    while (b < LATENCY_N && secs > latency_bounds[b])
        b++;
    atomic_fetch_add_explicit(&h->bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, duration_us, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

void histogram_render(struct strbuf *sb, const char *name, const char *labels,
                      const struct histogram *h)
{
    const char *sep = labels[0] != '\0' ? "," : "";
    int64_t cum = 0;

    for (size_t b = 0; b <= LATENCY_N; b++) {
        cum += atomic_load_explicit(&h->bucket[b], memory_order_relaxed);
        if (b < LATENCY_N)
            strbuf_addf(sb, "%s_bucket{%s%sle=\"%g\"} %lld\n", name, labels, sep, latency_bounds[b],
                        (long long)cum);
        else
            strbuf_addf(sb, "%s_bucket{%s%sle=\"+Inf\"} %lld\n", name, labels, sep, (long long)cum);
    }
    strbuf_addf(sb, "%s_sum%s%s%s %.6f\n", name, sep[0] ? "{" : "", labels, sep[0] ? "}" : "",
                (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) / 1e6);
    strbuf_addf(sb, "%s_count%s%s%s %lld\n", name, sep[0] ? "{" : "", labels, sep[0] ? "}" : "",
                (long long)atomic_load_explicit(&h->count, memory_order_relaxed));
}

void metrics_request(int rid, int status, int64_t duration_us)
{
    struct route_stats *rs = &routes[rid >= 0 ? (size_t)rid : METRICS_MAX_ROUTES];

    if (status >= METRICS_STATUS_MIN && status < METRICS_STATUS_MIN + METRICS_STATUS_N) {
        atomic_fetch_add_explicit(&rs->status[status - METRICS_STATUS_MIN], 1,
                                  memory_order_relaxed);
        histogram_observe(&rs->latency[status / 100 - 1], duration_us);
    }
}

void metrics_inflight(int delta)
{
    atomic_fetch_add_explicit(&inflight, delta, memory_order_relaxed);
}

static void metrics_render_counts(struct strbuf *sb, const struct route_stats *rs, const char *name)
{
    for (size_t s = 0; s < METRICS_STATUS_N; s++) {
        int64_t v = atomic_load_explicit(&rs->status[s], memory_order_relaxed);
        if (v != 0)
            strbuf_addf(sb, "tessera_http_requests_total{route=\"%s\",status=\"%zu\"} %lld\n", name,
                        s + METRICS_STATUS_MIN, (long long)v);
    }
}

/* metrics_render_latency: one histogram per status class that answered at least once */
static void metrics_render_latency(struct strbuf *sb, const struct route_stats *rs,
                                   const char *name)
{
    char labels[128];

    for (size_t c = 0; c < METRICS_CLASSES; c++) {
        if (atomic_load_explicit(&rs->latency[c].count, memory_order_relaxed) == 0)
            continue;
        snprintf(labels, sizeof(labels), "route=\"%s\",class=\"%zuxx\"", name, c + 1);
        histogram_render(sb, "tessera_http_request_seconds", labels, &rs->latency[c]);
    }
}

void metrics_render(struct strbuf *sb)
{
    strbuf_addf(sb, "# HELP tessera_http_requests_total Requests answered, by route and status.\n"
                    "# TYPE tessera_http_requests_total counter\n");
    for (size_t i = 0; i < n_routes; i++)
        metrics_render_counts(sb, &routes[i], routes[i].name);
    metrics_render_counts(sb, &routes[METRICS_MAX_ROUTES], "unmatched");
    strbuf_addf(sb,
                "# HELP tessera_http_request_seconds Time to answer a request, by route and status "
                "class.\n"
                "# TYPE tessera_http_request_seconds histogram\n");
    for (size_t i = 0; i < n_routes; i++)
        metrics_render_latency(sb, &routes[i], routes[i].name);
    metrics_render_latency(sb, &routes[METRICS_MAX_ROUTES], "unmatched");
    strbuf_addf(sb,
                "# HELP tessera_http_inflight Requests being processed now.\n"
                "# TYPE tessera_http_inflight gauge\ntessera_http_inflight %lld\n",
                (long long)atomic_load_explicit(&inflight, memory_order_relaxed));
    for (size_t i = 0; i < n_registry; i++) {
        const struct metric *m = registry[i];
        strbuf_addf(sb, "# HELP %s %s\n# TYPE %s %s\n%s %lld\n", m->name, m->help, m->name, m->type,
                    m->name, (long long)atomic_load_explicit(&m->value, memory_order_relaxed));
    }
    pthread_mutex_lock(&renderers_lock);
    for (size_t i = 0; i < sizeof(renderers) / sizeof(renderers[0]); i++) {
        if (renderers[i].fn != NULL)
            renderers[i].fn(sb, renderers[i].arg);
    }
    pthread_mutex_unlock(&renderers_lock);
}
