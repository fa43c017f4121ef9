/*
 * admin.c - the operators' status page: GET /admin (the page, no data) and
 * GET /admin/status (the cluster as JSON, for an admin key only).
 *
 * What this process knows itself (database nodes, the ring's shards and the
 * last repair walk, Redis nodes, the job queue) comes from its own stores; what no single process
 * knows (every instance's health, shard usage, request and error rates over
 * the last minutes) comes from the Prometheus of admin.prometheus_url.
 */
#include "services/admin.h"

#include "app/repair.h"
#include "cache/cache.h"
#include "cache/rcluster.h"
#include "core/err.h"
#include "core/xalloc.h"
#include "http/http.h"
#include "meta/meta.h"
#include "prom/prom.h"
#include "services/api.h"
#include "services/web.h"
#include "store/blob.h"
#include "store/ring.h"

#include <stdlib.h>
#include <string.h>

/* The page loads its own script and style only, and talks only to this service. */
#define ADMIN_CSP                                                                                  \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src "        \
    "'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
#define ADMIN_PROM_TIMEOUT_MS 1500
#define ADMIN_CHART_S         900 /* the charts' span: the last 15 minutes */
#define ADMIN_CHART_STEP_S    15
/* the API's traffic: the services' requests but the probes, scrapes and this page */
#define ADMIN_TRAFFIC "job=~\"tessera-(read|write)\",route!~\"healthz|readyz|metrics|admin.*\""

static void h_admin_page(struct http_req *req)
{
    const struct web_asset *a = web_asset_find("admin.html", 10);

    if (a == NULL) {
        http_reply_error(req, E_NOTFOUND, "this build has no status page");
        return;
    }
    web_asset_send(req, a, ADMIN_CSP);
}

/* h_admin_file serves the page's own files (web/admin.*) and nothing else of web/. */
static void h_admin_file(struct http_req *req)
{
    struct str name = http_param(req, 0);
    const struct web_asset *a = NULL;

    if (name.len > 6 && memcmp(name.p, "admin.", 6) == 0)
        a = web_asset_find(name.p, name.len);
    if (a == NULL) {
        http_reply_error(req, E_NOTFOUND, "no such file");
        return;
    }
    web_asset_send(req, a, ADMIN_CSP);
}

static json_t *admin_db(struct api *a)
{
    struct meta_node nodes[META_NODES_MAX];
    json_t *arr = json_array();
    size_t n = 0;

    meta_nodes(a->meta, nodes, META_NODES_MAX, &n);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(
            arr, json_pack("{s:s,s:s,s:s,s:b,s:b,s:I}", "name", nodes[i].name, "addr",
                           nodes[i].addr, "role", nodes[i].role, "reachable", nodes[i].reachable,
                           "usable", nodes[i].usable, "lag_ms", (json_int_t)nodes[i].lag_ms));
    return arr;
}

static json_t *admin_ring(struct api *a)
{
    struct blob_shard_state *sh = xcalloc(RING_MAX_SHARDS, sizeof(*sh));
    char epoch[BLOB_EPOCH_MAX + 1];
    json_t *arr = json_array();
    struct repair_last rl;
    size_t n;

    blob_store_check(a->blobs); /* probes the shards again when the last probe is stale */
    n = blob_store_shards(a->blobs, sh, RING_MAX_SHARDS, epoch);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(
            arr, json_pack("{s:s,s:s,s:b}", "id", sh[i].id, "addr", sh[i].addr, "up", sh[i].up));
    free(sh);
    json_t *ring = json_pack("{s:s,s:o}", "epoch", epoch, "shards", arr);
    if (n > 0 && repair_last_get(a->meta, &rl) == OK)
        json_object_set_new(ring, "last_repair",
                            json_pack("{s:I,s:I,s:I,s:I}", "at", (json_int_t)rl.at, "away",
                                      (json_int_t)rl.away, "missing", (json_int_t)rl.missing,
                                      "lost", (json_int_t)rl.lost));
    return ring;
}

static json_t *admin_redis(struct api *a)
{
    struct rcluster_node_info nodes[RCLUSTER_NODES_MAX];
    size_t n = cache_redis_nodes(a->cache, nodes, RCLUSTER_NODES_MAX);
    json_t *arr = json_array();

    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr,
                              json_pack("{s:s,s:b}", "addr", nodes[i].addr, "up", nodes[i].up));
    return arr;
}

static json_t *admin_jobs(struct api *a)
{
    struct meta_job_stats st;
    json_t *kinds = json_array();

    if (meta_job_stats(a->meta, &st) != OK)
        return json_null(); /* the primary is unreachable */
    for (size_t i = 0; i < st.nkinds; i++) {
        const struct meta_job_kind_stats *k = &st.kind[i];
        json_array_append_new(kinds,
                              json_pack("{s:s,s:I,s:I,s:I,s:I,s:I}", "kind", k->kind, "queued",
                                        (json_int_t)k->queued, "due", (json_int_t)k->due, "running",
                                        (json_int_t)k->running, "dead", (json_int_t)k->dead,
                                        "oldest_due_age_s", (json_int_t)k->oldest_due_age));
    }
    return json_pack("{s:I,s:I,s:I,s:o}", "queued", (json_int_t)st.queued, "running",
                     (json_int_t)st.running, "dead", (json_int_t)st.dead, "kinds", kinds);
}

/* prom_value is the number of an instant vector element ([time, "value"]). */
static double prom_value(json_t *el)
{
    const char *v = json_string_value(json_array_get(json_object_get(el, "value"), 1));
    return v != NULL ? strtod(v, NULL) : 0;
}

static const char *prom_label(json_t *el, const char *name)
{
    const char *v = json_string_value(json_object_get(json_object_get(el, "metric"), name));
    return v != NULL ? v : "";
}

/* admin_instances: every scraped Tessera process, with up and ready, from Prometheus. */
static json_t *admin_instances(const char *url)
{
    json_t *up = prom_query(url, "up{job=~\"tessera-.*\"}", 0, 0, ADMIN_PROM_TIMEOUT_MS);
    json_t *ready = NULL, *arr = json_array();
    size_t i, k;
    json_t *el, *r;

    if (up == NULL) {
        json_decref(arr);
        return NULL;
    }
    ready = prom_query(url, "tessera_ready", 0, 0, ADMIN_PROM_TIMEOUT_MS);
    json_array_foreach(up, i, el)
    {
        const char *inst = prom_label(el, "instance");
        json_t *rd = json_null();
        json_array_foreach(ready, k, r)
        {
            if (strcmp(prom_label(r, "instance"), inst) == 0)
                rd = json_boolean(prom_value(r) == 1);
        }
        json_array_append_new(arr,
                              json_pack("{s:s,s:s,s:s,s:b,s:o}", "job", prom_label(el, "job"),
                                        "instance", inst, "name", prom_label(el, "instance_name"),
                                        "up", prom_value(el) == 1, "ready", rd));
    }
    json_decref(up);
    json_decref(ready);
    return arr;
}

/* admin_usage: the storage nodes' bytes, free and size, by shard label, from Prometheus. */
static json_t *admin_usage(const char *url)
{
    json_t *res = prom_query(url, "{__name__=~\"tessera_storage_(bytes|free_bytes|size_bytes)\"}",
                             0, 0, ADMIN_PROM_TIMEOUT_MS);
    json_t *usage = json_object(), *el;
    size_t i;

    json_array_foreach(res, i, el)
    {
        const char *shard = prom_label(el, "shard");
        json_t *u = json_object_get(usage, shard);
        if (shard[0] == '\0')
            continue;
        if (u == NULL) {
            u = json_object();
            json_object_set_new(usage, shard, u);
        }
        json_object_set_new(u, prom_label(el, "__name__") + strlen("tessera_storage_"),
                            json_real(prom_value(el)));
    }
    json_decref(res);
    return usage;
}

/* admin_series: one range query summed into a single line of [unix time, value] points. */
static json_t *admin_series(const char *url, const char *expr)
{
    json_t *res = prom_query(url, expr, ADMIN_CHART_S, ADMIN_CHART_STEP_S, ADMIN_PROM_TIMEOUT_MS);
    json_t *points = json_array(), *v;
    size_t i;

    json_array_foreach(json_object_get(json_array_get(res, 0), "values"), i, v)
    {
        const char *s = json_string_value(json_array_get(v, 1));
        json_array_append_new(points, json_pack("[f,f]", json_number_value(json_array_get(v, 0)),
                                                s != NULL ? strtod(s, NULL) : 0.0));
    }
    json_decref(res);
    return points;
}

static void h_admin_status(struct http_req *req)
{
    struct api *a = http_app(req);
    const char *url = a->cfg->admin.prometheus_url;
    json_t *j, *instances = NULL;

    if (a->cfg->n_admin_keys == 0) {
        http_reply_error(req, E_NOTFOUND, "the status page needs auth.admin_keys");
        return;
    }
    if (!api_is_admin(a, req)) {
        http_set_header(req, "WWW-Authenticate", "Bearer realm=\"admin\"");
        http_reply_error(req, E_UNAUTHORIZED, "the status page needs an admin key");
        return;
    }
    j = json_pack("{s:s,s:s,s:o,s:o,s:o,s:o}", "role", a->role, "listen", a->cfg->server.listen,
                  "db", admin_db(a), "ring", admin_ring(a), "redis", admin_redis(a), "jobs",
                  admin_jobs(a));
    if (url[0] != '\0')
        instances = admin_instances(url);
    json_object_set_new(j, "prometheus",
                        json_string(url[0] == '\0'      ? "not configured"
                                    : instances == NULL ? "unreachable"
                                                        : "ok"));
    if (instances != NULL) {
        json_object_set_new(j, "instances", instances);
        json_object_set_new(j, "usage", admin_usage(url));
        json_object_set_new(
            j, "charts",
            json_pack("{s:o,s:o,s:o}", "requests",
                      admin_series(url, "sum(rate(tessera_http_requests_total{" ADMIN_TRAFFIC
                                        "}[1m])) or vector(0)"),
                      "errors",
                      admin_series(url, "sum(rate(tessera_http_requests_total{" ADMIN_TRAFFIC
                                        ",status=~\"5..\"}[1m])) or vector(0)"),
                      "queue",
                      admin_series(url, "max(sum by (instance) (tessera_jobs_queued)) "
                                        "or vector(0)")));
    }
    http_reply_json(req, 200, j);
}

static const struct route admin_routes[] = {
    {HTTP_GET, "/admin", "admin", h_admin_page, 0},
    /* reads the primary, probes shards and asks Prometheus: it may block */
    {HTTP_GET, "/admin/status", "admin_status", h_admin_status, ROUTE_BLOCKING},
    {HTTP_GET, "/admin/*", "admin_file", h_admin_file, 0},
};

size_t admin_routes_with(const struct route *base, size_t n, struct route *out, size_t cap)
{
    size_t k = 0;

    for (size_t i = 0; i < n && k < cap; i++)
        out[k++] = base[i];
    for (size_t i = 0; i < sizeof(admin_routes) / sizeof(admin_routes[0]) && k < cap; i++)
        out[k++] = admin_routes[i];
    return k;
}
