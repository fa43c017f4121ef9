/*
 * serve.c - tessera serve: every role in one process on the embedded stores.
 *
 * SQLite (WAL) for metadata and a file:// directory for blobs, both under
 * storage.data_dir, so one machine needs no server at all.
 */
#include "services/serve.h"

#include "app/app.h"
#include "app/runtime.h"
#include "core/err.h"
#include "core/log.h"
#include "http/http.h"
#include "image/image.h"
#include "jobs/jobs.h"
#include "services/admin.h"
#include "services/api.h"
#include "services/signals.h"
#include "services/web.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* serve_clean_tmp removes upload bodies a crash left behind (never acknowledged). */
static void serve_clean_tmp(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "upload-", 7) == 0 && unlinkat(dirfd(d), e->d_name, 0) == 0)
            n++;
    }
    closedir(d);
    if (n > 0)
        log_info("serve", "removed %d unfinished upload bodies from %s", n, dir);
}

/* listens_beyond_loopback: the listen address is not 127.0.0.0/8, ::1 or localhost */
static bool listens_beyond_loopback(const char *listen)
{
    return strncmp(listen, "127.", 4) != 0 && strncmp(listen, "[::1]:", 6) != 0 &&
           strncmp(listen, "localhost:", 10) != 0;
}

int serve_run(const struct config *cfg)
{
    return service_run(cfg, SERVICE_ALL, "serve");
}

int service_run(const struct config *cfg, unsigned parts, const char *role)
{
    struct runtime rt;
    struct app app;
    struct api api;
    struct http_server *srv = NULL;
    struct jobs *jobs = NULL;
    struct jobs_opts jo;
    /* serve migrates its own database; a cluster's roles leave that to `tessera migrate` */
    unsigned rt_parts = RT_IMAGE | RT_META | RT_BLOBS | RT_RING_FOLLOW | RT_BLOB_CACHE | RT_CACHE |
                        RT_CDN | (parts == SERVICE_ALL ? RT_MIGRATE : 0u);
    bool up = false;
    int rc;

    /* without Redis the LRU is safe only where every delete happens: one process on SQLite */
    if ((parts & SERVICE_WRITE) && cfg->db.url[0] == '\0')
        rt_parts |= RT_LOCAL_DELETES;
    if ((parts & SERVICE_WRITE) && cfg->n_upload_keys == 0 && cfg->limits.upload_rate == 0 &&
        listens_beyond_loopback(cfg->server.listen))
        log_warn(role,
                 "anyone who reaches %s may upload, without limit: set auth.upload_keys or "
                 "limits.upload_rate",
                 cfg->server.listen);
    rc = runtime_open(cfg, rt_parts, &rt);
    if (rc != OK)
        return rc;
    serve_clean_tmp(rt.tmp_dir);
    app_init(&app, &rt);
    api_init(&api, &rt, &app);
    api.role = role;
    up = true;
    /* renditions are recorded where they are served: their disk budget is kept there too */
    if ((parts & SERVICE_READ) && (rc = app_renditions_start(&app)) != OK)
        goto out;

    signals_block();
    struct route routes[WEB_MAX_ROUTES], api_r[WEB_MAX_ROUTES], base[WEB_MAX_ROUTES];
    unsigned methods = ((parts & SERVICE_READ) ? HTTP_GET : 0u) |
                       ((parts & SERVICE_WRITE) ? (HTTP_POST | HTTP_DELETE) : 0u);
    size_t n_api = api_routes_build(&api, methods, api_r, WEB_MAX_ROUTES);
    /* every service has the status page: an operator reaches any one of them */
    size_t n_base = admin_routes_with(api_r, n_api, base, WEB_MAX_ROUTES);
    size_t n_routes = n_base;
    if (parts & SERVICE_WEB) {
        web_init(cfg);
        n_routes = web_routes_with(base, n_base, routes, WEB_MAX_ROUTES);
    } else {
        memcpy(routes, base, n_base * sizeof(routes[0]));
    }
    struct http_server_opts opts = {
        .listen = cfg->server.listen,
        .thread_pool = (int)cfg->server.thread_pool,
        .max_connections = (unsigned)cfg->server.max_connections,
        .idle_timeout_s = (unsigned)((cfg->server.idle_timeout_ms + 999) / 1000),
        .max_header_bytes = (size_t)cfg->server.max_header_bytes,
        .max_url_bytes = (size_t)cfg->server.max_url_bytes,
        .max_body_bytes = (uint64_t)cfg->limits.max_upload_bytes,
        .tmp_dir = rt.tmp_dir,
        .access_log = cfg->log.access,
        .routes = routes,
        .nroutes = n_routes,
        .app = &api,
        .ready = api_ready,
        .ready_detail = api_ready_detail,
        .gate = api_gate,
        .trusted_proxies = cfg->server.trusted_proxies,
        .metrics_token = &cfg->metrics_token,
        .workers = (unsigned)cfg->server.workers,
        .thread_exit = img_thread_exit,
    };
    rc = http_server_start(&opts, &srv);
    if (rc != OK)
        goto out;
    if (parts & SERVICE_JOBS) {
        runtime_jobs_opts(cfg, &jo);
        rc = jobs_start(rt.meta, &jo, app_job_run, &app, &jobs);
        if (rc != OK)
            goto out;
    }
    log_info(role, "listening on %s (port %u); public URL %s; data in %s", cfg->server.listen,
             http_server_port(srv), rt.base_url, rt.data_dir);
    int sig = signals_wait();
    log_info(role, "%s: stopping (up to %lld ms for requests in flight)", strsignal(sig),
             (long long)cfg->server.shutdown_timeout_ms);
    http_server_stop(srv, cfg->server.shutdown_timeout_ms);
    srv = NULL;
    log_info(role, "stopped");
out:
    jobs_stop(jobs);
    http_server_stop(srv, 0);
    if (up) {
        api_release(&api);
        app_release(&app);
    }
    runtime_close(&rt);
    return rc;
}
