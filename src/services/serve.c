/*
 * serve.c - tessera serve: every role in one process on the embedded stores.
 *
 * SQLite (WAL) for metadata and a file:// directory for blobs, both under
 * storage.data_dir, so one machine needs no server at all.
 */
#include "services/serve.h"

#include "cache/cache.h"
#include "core/err.h"
#include "core/log.h"
#include "http/http.h"
#include "image/image.h"
#include "jobs/worker.h"
#include "meta/meta.h"
#include "services/api.h"
#include "services/ring_admin.h"
#include "services/signals.h"
#include "services/web.h"
#include "store/blob.h"
#include "store/blob_cache.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int serve_mkdir(const char *path)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        log_error("serve", "cannot create \"%s\": %s", path, strerror(errno));
        return E_IO;
    }
    return OK;
}

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

int serve_run(const struct config *cfg)
{
    return service_run(cfg, SERVICE_ALL, "serve");
}

int service_run(const struct config *cfg, unsigned parts, const char *role)
{
    struct api app;
    struct meta_store *meta = NULL;
    struct blob_store *blobs = NULL;
    struct http_server *srv = NULL;
    struct jobs *jobs = NULL;
    struct cache *cache = NULL;
    struct jobs_opts jo;
    char tmp_dir[4096], db_path[4096], blob_url[4200];
    bool api_ok = false, img_ok = false;
    int rc;

    rc = serve_mkdir(cfg->storage.data_dir);
    if (rc != OK)
        goto out;
    snprintf(tmp_dir, sizeof(tmp_dir), "%s/tmp", cfg->storage.data_dir);
    rc = serve_mkdir(tmp_dir);
    if (rc != OK)
        goto out;
    serve_clean_tmp(tmp_dir);
    if (cfg->storage.db[0] != '\0')
        snprintf(db_path, sizeof(db_path), "%s", cfg->storage.db);
    else
        snprintf(db_path, sizeof(db_path), "%s/meta.db", cfg->storage.data_dir);
    if (cfg->storage.blobs[0] != '\0') {
        snprintf(blob_url, sizeof(blob_url), "%s", cfg->storage.blobs);
    } else {
        char abs[4096];
        if (realpath(cfg->storage.data_dir, abs) == NULL) {
            log_error("serve", "cannot resolve \"%s\": %s", cfg->storage.data_dir, strerror(errno));
            rc = E_IO;
            goto out;
        }
        snprintf(blob_url, sizeof(blob_url), "file://%s/blobs", abs);
    }

    rc = img_init("tessera", (int)cfg->image.concurrency, (size_t)cfg->image.cache_bytes);
    if (rc != OK) {
        log_error("serve", "cannot start libvips");
        goto out;
    }
    img_ok = true;
    /* serve migrates its own database; a cluster's roles leave that to `tessera migrate` */
    rc = db_open(cfg, db_path, parts == SERVICE_ALL, &meta);
    if (rc != OK) {
        log_error("serve", "cannot open the database \"%s\": %s",
                  cfg->db.url[0] ? "db.url" : db_path, err_str(rc));
        goto out;
    }
    rc = ring_admin_open_store(cfg, meta, blob_url, tmp_dir, &blobs);
    if (rc != OK) {
        log_error("serve", "cannot open the blob store \"%s\": %s", blob_url, err_str(rc));
        goto out;
    }
    if (cfg->storage.cache_bytes > 0 && blob_store_may_block(blobs)) {
        /* remote shards: keep local copies of what this service reads */
        char dir[4200];
        struct blob_store *cached = NULL;
        if (realpath(cfg->storage.data_dir, dir) != NULL &&
            strlen(dir) + sizeof("/blobcache") <= sizeof(dir)) {
            strcat(dir, "/blobcache");
            if (blob_cache_open(blobs, dir, (uint64_t)cfg->storage.cache_bytes, &cached) == OK)
                blobs = cached;
        }
    }
    api_init(&app, cfg, meta, blobs);
    api_ok = true;
    /* without Redis the LRU is safe only where every delete happens: one process on SQLite */
    rc = cache_new(cfg, (parts & SERVICE_WRITE) && cfg->db.url[0] == '\0', &cache);
    if (rc != OK)
        goto out;
    app.cache = cache;

    signals_block();
    struct route routes[WEB_MAX_ROUTES], api_r[WEB_MAX_ROUTES];
    unsigned methods = ((parts & SERVICE_READ) ? HTTP_GET : 0u) |
                       ((parts & SERVICE_WRITE) ? (HTTP_POST | HTTP_DELETE) : 0u);
    size_t n_api = api_routes_build(&app, methods, api_r, WEB_MAX_ROUTES);
    size_t n_routes = n_api;
    if (parts & SERVICE_WEB) {
        web_init(cfg);
        n_routes = web_routes_with(api_r, n_api, routes, WEB_MAX_ROUTES);
    } else {
        memcpy(routes, api_r, n_api * sizeof(routes[0]));
    }
    struct http_server_opts opts = {
        .listen = cfg->server.listen,
        .thread_pool = (int)cfg->server.thread_pool,
        .max_connections = (unsigned)cfg->server.max_connections,
        .idle_timeout_s = (unsigned)((cfg->server.idle_timeout_ms + 999) / 1000),
        .max_header_bytes = (size_t)cfg->server.max_header_bytes,
        .max_url_bytes = (size_t)cfg->server.max_url_bytes,
        .max_body_bytes = (uint64_t)cfg->limits.max_upload_bytes,
        .tmp_dir = tmp_dir,
        .access_log = cfg->log.access,
        .routes = routes,
        .nroutes = n_routes,
        .app = &app,
        .ready = api_ready,
        .ready_detail = api_ready_detail,
        .gate = api_gate,
        .trusted_proxies = cfg->server.trusted_proxies,
        .workers = (unsigned)cfg->server.workers,
        .thread_exit = img_thread_exit,
    };
    rc = http_server_start(&opts, &srv);
    if (rc != OK)
        goto out;
    if (parts & SERVICE_JOBS) {
        jobs_opts_from(cfg, &jo);
        rc = jobs_start(meta, &jo, api_job_run, &app, &jobs);
        if (rc != OK)
            goto out;
    }
    log_info(role, "listening on %s (port %u); public URL %s; data in %s", cfg->server.listen,
             http_server_port(srv), app.base_url, cfg->storage.data_dir);
    int sig = signals_wait();
    log_info(role, "%s: stopping (up to %lld ms for requests in flight)", strsignal(sig),
             (long long)cfg->server.shutdown_timeout_ms);
    http_server_stop(srv, cfg->server.shutdown_timeout_ms);
    srv = NULL;
    log_info(role, "stopped");
out:
    jobs_stop(jobs);
    http_server_stop(srv, 0);
    if (api_ok)
        api_release(&app);
    cache_free(cache);
    blob_store_free(blobs);
    meta_close(meta);
    if (img_ok)
        img_shutdown();
    return rc;
}
