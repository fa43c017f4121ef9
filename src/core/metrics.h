/*
 * metrics.h - Prometheus counters, gauges and the request histogram.
 *
 * Counters are registered once at start-up (not thread-safe) and updated with
 * relaxed atomics from any thread afterwards. metrics_render writes the text
 * exposition format.
 */
#ifndef CORE_METRICS_H
#define CORE_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct strbuf;

#define METRICS_MAX_ROUTES 32
#define HISTOGRAM_BUCKETS  13 /* 0.5 ms .. 10 s, then +Inf */

/* A latency histogram over the fixed bounds 0.5 ms .. 10 s (zero-initialised storage). */
struct histogram {
    _Atomic int64_t bucket[HISTOGRAM_BUCKETS + 1];
    _Atomic int64_t sum_us;
    _Atomic int64_t count;
};

/* histogram_observe counts one duration; thread-safe (relaxed atomics). */
void histogram_observe(struct histogram *h, int64_t duration_us);

/*
 * histogram_render appends the _bucket, _sum and _count lines of h under name
 * with the label list labels ("" or e.g. "kind=\"variants\""); no HELP/TYPE.
 */
void histogram_render(struct strbuf *sb, const char *name, const char *labels,
                      const struct histogram *h);

struct metric {
    const char *name;
    const char *help;
    const char *type; /* "counter" or "gauge" */
    _Atomic int64_t value;
};

/* metric_register adds m to the registry (static storage, before serving). */
void metric_register(struct metric *m);

static inline void metric_add(struct metric *m, int64_t d)
{
    atomic_fetch_add_explicit(&m->value, d, memory_order_relaxed);
}

/* metrics_route_id returns the slot of a route name (registering it); -1 when full. */
int metrics_route_id(const char *name);

/* metrics_request records one finished request of route slot rid (may be -1: unmatched). */
void metrics_request(int rid, int status, int64_t duration_us);

/* metrics_inflight adjusts the in-flight gauge. */
void metrics_inflight(int delta);

/* metrics_renderer_fn appends a module's own (labelled) metrics to sb at each scrape. */
typedef void metrics_renderer_fn(struct strbuf *sb, void *arg);

/* metrics_add_renderer adds fn(arg) to every scrape (at most 8); metrics_remove_renderer drops it.
 */
void metrics_add_renderer(metrics_renderer_fn *fn, void *arg);
void metrics_remove_renderer(metrics_renderer_fn *fn, void *arg);

/* metrics_render appends the exposition text of every metric to sb. */
void metrics_render(struct strbuf *sb);

#endif
