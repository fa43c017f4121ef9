/*
 * serve.c - tessera serve: every role in one process on the embedded stores.
 */
#include "services/serve.h"

#include "core/err.h"
#include "core/log.h"
#include "http/http.h"
#include "services/signals.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

struct serve_app {
    const struct config *cfg;
};

static int serve_ready(void *app, char *why, size_t cap)
{
    (void)app;
    (void)why;
    (void)cap;
    return OK;
}

static int serve_mkdir(const char *path)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        log_error("serve", "cannot create \"%s\": %s", path, strerror(errno));
        return E_IO;
    }
    return OK;
}

int serve_run(const struct config *cfg)
{
    struct serve_app app = {cfg};
    struct http_server *srv = NULL;
    char tmp_dir[4096];
    int rc;

    rc = serve_mkdir(cfg->storage.data_dir);
    if (rc != OK)
        goto out;
    snprintf(tmp_dir, sizeof(tmp_dir), "%s/tmp", cfg->storage.data_dir);
    rc = serve_mkdir(tmp_dir);
    if (rc != OK)
        goto out;

    signals_block();
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
        .routes = NULL,
        .nroutes = 0,
        .app = &app,
        .ready = serve_ready,
    };
    rc = http_server_start(&opts, &srv);
    if (rc != OK)
        goto out;
    log_info("serve", "listening on %s (port %u), data in %s", cfg->server.listen,
             http_server_port(srv), cfg->storage.data_dir);
    int sig = signals_wait();
    log_info("serve", "%s: stopping (up to %lld ms for requests in flight)", strsignal(sig),
             (long long)cfg->server.shutdown_timeout_ms);
    http_server_stop(srv, cfg->server.shutdown_timeout_ms);
    log_info("serve", "stopped");
out:
    return rc;
}
