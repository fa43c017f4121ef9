/*
 * storage.c - tessera storage: one shard of the ring, blobs by key on local disk.
 *
 * The protocol is docs/internals/storage.md. Invariant: a blob is visible
 * under its key only once its bytes hash to the key and are durable (the
 * file:// backend renames an fsynced temporary and fsyncs the directory);
 * a failed or mismatched PUT leaves nothing behind (the HTTP core removes the
 * streamed body). Thread per connection: every handler blocks on the disk.
 */
#include "services/storage.h"

#include "core/codec.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/ident.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/xalloc.h"
#include "http/http.h"
#include "services/signals.h"
#include "store/blob.h"
#include "store/node_auth.h"
#include "store/scrub.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define STORAGE_LIST_DEFAULT 1000
#define STORAGE_LIST_MAX     10000

struct storage {
    const struct config *cfg;
    struct blob_store *blobs;
    char root[PATH_MAX];                    /* data_dir/blobs, absolute */
    char quarantine[PATH_MAX];              /* data_dir/quarantine: copies the scrubber set aside */
    struct secret keys[NODE_AUTH_KEYS_MAX]; /* accepted signing secrets; none: unsigned */
    size_t nkeys;
};

static struct metric m_blobs = {"tessera_storage_blobs", "Blobs stored on this node.", "gauge", 0};
static struct metric m_bytes = {"tessera_storage_bytes", "Bytes of blobs stored on this node.",
                                "gauge", 0};
static struct metric m_free = {"tessera_storage_free_bytes",
                               "Free space of the node's disk (at the last write or check).",
                               "gauge", 0};
static struct metric m_size = {"tessera_storage_size_bytes",
                               "Size of the node's disk (the file system of its blobs).", "gauge",
                               0};
static struct metric m_errors = {"tessera_storage_errors_total",
                                 "Requests that failed on the node's side (disk, full, I/O).",
                                 "counter", 0};
static struct metric m_mismatch = {"tessera_storage_checksum_rejects_total",
                                   "PUT bodies refused because they did not hash to their key.",
                                   "counter", 0};

static struct metric m_quarantined = {
    "tessera_storage_quarantined",
    "Copies in the quarantine (failed the scrubber's check; kept, never served).", "gauge", 0};

static struct metric m_unauthorized = {
    "tessera_storage_unauthorized_total",
    "Requests refused with 401: unsigned, wrongly signed or stale (storage.secret_file).",
    "counter", 0};

/*
 * storage_authorize lets a request through only with a valid signature
 * (node_auth.h) under one of the node's secrets, checked from the headers
 * before a PUT's body is received. A request without a body signs the empty
 * body's hash, a PUT its key (the handler then checks the body hashes to it).
 */
static int storage_authorize(void *app, const struct http_req *req, const char **why)
{
    struct storage *s = app;
    const char *sha = http_header(req, NODE_AUTH_SHA);
    struct str path = http_path(req);
    char client[64];
    int rc;

    if (s->nkeys == 0)
        return OK;
    rc = node_auth_check(s->keys, s->nkeys, http_method_name(req), http_target(req),
                         http_header(req, NODE_AUTH_DATE), sha, http_header(req, "Authorization"),
                         (int64_t)time(NULL), why);
    if (rc == OK && http_method(req) == HTTP_PUT) {
        struct str key = http_param(req, 0);
        if (key.len != strlen(sha) || memcmp(key.p, sha, key.len) != 0) {
            *why = "a PUT signs its key as the body's hash";
            rc = E_UNAUTHORIZED;
        }
    } else if (rc == OK && strcmp(sha, NODE_AUTH_EMPTY) != 0) {
        *why = "a request without a body signs the empty body's hash";
        rc = E_UNAUTHORIZED;
    }
    if (rc != OK) {
        metric_add(&m_unauthorized, 1);
        http_client_addr(req, client, sizeof(client));
        log_warn("storage", "refused %s %.*s from %s: %s", http_method_name(req),
                 (int)(path.len > 200 ? 200 : path.len), path.p, client, *why);
    }
    return rc;
}

/* listen_loopback tells whether a listen address ("host:port") is on the loopback interface. */
static bool listen_loopback(const char *listen)
{
    return strncmp(listen, "127.", 4) == 0 || strncmp(listen, "localhost:", 10) == 0;
}

/* storage_free_bytes returns the space left to unprivileged writers, and updates the gauge. */
static int64_t storage_free_bytes(const struct storage *s)
{
    struct statvfs sv;
    int64_t free_b;

    if (statvfs(s->root, &sv) != 0)
        return -1;
    free_b = (int64_t)sv.f_bavail * (int64_t)sv.f_frsize;
    atomic_store_explicit(&m_free.value, free_b, memory_order_relaxed);
    atomic_store_explicit(&m_size.value, (int64_t)sv.f_blocks * (int64_t)sv.f_frsize,
                          memory_order_relaxed);
    return free_b;
}

/* storage_key checks the {key} segment: 64 lowercase hex, or it answers 400 and returns false. */
static bool storage_key(struct http_req *req, char key[BLOB_KEY_LEN + 1])
{
    struct str k = http_param(req, 0);

    if (!blob_key_valid(k.p, k.len)) {
        http_reply_error(req, E_INVALID, "a blob key is 64 lowercase hex digits");
        return false;
    }
    memcpy(key, k.p, BLOB_KEY_LEN);
    key[BLOB_KEY_LEN] = '\0';
    return true;
}

static void h_put(struct http_req *req)
{
    struct storage *s = http_app(req);
    const char *body = http_body_path(req);
    uint8_t digest[SHA256_LEN];
    char key[BLOB_KEY_LEN + 1], hex[SHA256_HEX];
    bool existed = false;
    int fd = -1;
    int rc;

    if (!storage_key(req, key))
        goto out;
    fd = open(body, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || sha256_fd(fd, digest) != OK) {
        metric_add(&m_errors, 1);
        http_reply_error(req, E_IO, "cannot read the body back");
        goto out;
    }
    hex_encode(digest, SHA256_LEN, hex);
    if (strcmp(hex, key) != 0) {
        metric_add(&m_mismatch, 1);
        http_reply_error(req, E_INVALID, "the body hashes to %s, not to the key", hex);
        goto out;
    }
    blob_exists(s->blobs, key, &existed);
    rc = blob_put_path(s->blobs, key, body);
    if (rc != OK) {
        metric_add(&m_errors, 1);
        storage_free_bytes(s);
        http_reply_error(req, rc == E_NOSPACE ? E_FULL : rc, "cannot store %.16s: %s", key,
                         err_str(rc));
        goto out;
    }
    if (!existed) {
        metric_add(&m_blobs, 1);
        metric_add(&m_bytes, (int64_t)http_body_len(req));
    }
    storage_free_bytes(s);
    http_reply_json(req, existed ? 200 : 201,
                    json_pack("{s:s,s:I}", "key", key, "size", (json_int_t)http_body_len(req)));
out:
    if (fd >= 0)
        close(fd);
}

static void h_get(struct http_req *req)
{
    struct storage *s = http_app(req);
    char key[BLOB_KEY_LEN + 1], etag[BLOB_KEY_LEN + 3];
    uint64_t size = 0;
    int fd = -1;
    int rc;

    if (!storage_key(req, key))
        return;
    rc = blob_open(s->blobs, key, &fd, &size);
    if (rc != OK) {
        if (rc != E_NOTFOUND)
            metric_add(&m_errors, 1);
        http_reply_error(req, rc, "blob %.16s: %s", key, err_str(rc));
        return;
    }
    snprintf(etag, sizeof(etag), "\"%s\"", key);
    http_set_header(req, "Content-Type", "application/octet-stream");
    http_set_header(req, "ETag", etag);
    http_reply_fd(req, 200, fd, 0, size);
}

static void h_delete(struct http_req *req)
{
    struct storage *s = http_app(req);
    char key[BLOB_KEY_LEN + 1];
    uint64_t size = 0;
    int fd = -1;
    int rc;

    if (!storage_key(req, key))
        return;
    if (blob_open(s->blobs, key, &fd, &size) == OK)
        close(fd);
    else
        fd = -1;
    rc = blob_delete(s->blobs, key);
    if (rc != OK) {
        metric_add(&m_errors, 1);
        http_reply_error(req, rc, "cannot delete %.16s: %s", key, err_str(rc));
        return;
    }
    if (fd >= 0) {
        metric_add(&m_blobs, -1);
        metric_add(&m_bytes, -(int64_t)size);
    }
    storage_free_bytes(s);
    http_reply_empty(req, 204);
}

int storage_list_args(const char *after, const char *limit, size_t *out, const char **why)
{
    if (after != NULL && after[0] != '\0' && !blob_key_valid(after, strlen(after))) {
        *why = "after must be a blob key";
        return E_INVALID;
    }
    *out = STORAGE_LIST_DEFAULT;
    if (limit != NULL) {
        char *end = NULL;
        unsigned long v;
        if (limit[0] < '0' || limit[0] > '9') {
            *why = "limit must be 1 to 10000";
            return E_INVALID;
        }
        v = strtoul(limit, &end, 10);
        if (end == limit || *end != '\0' || v < 1 || v > STORAGE_LIST_MAX) {
            *why = "limit must be 1 to 10000";
            return E_INVALID;
        }
        *out = v;
    }
    return OK;
}

static void h_list(struct http_req *req)
{
    struct storage *s = http_app(req);
    const char *after = http_query(req, "after");
    const char *lim = http_query(req, "limit");
    struct blob_entry *ents = NULL;
    size_t limit = STORAGE_LIST_DEFAULT, n = 0;
    const char *why = "";
    json_t *arr;
    int rc;

    rc = storage_list_args(after, lim, &limit, &why);
    if (rc != OK) {
        http_reply_error(req, rc, "%s", why);
        return;
    }
    ents = xmalloc(limit * sizeof(*ents));
    rc = blob_list(s->blobs, after != NULL ? after : "", ents, limit, &n);
    if (rc != OK) {
        metric_add(&m_errors, 1);
        http_reply_error(req, rc, "cannot list: %s", err_str(rc));
        goto out;
    }
    arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_pack("{s:s,s:I,s:I}", "key", ents[i].key, "size",
                                             (json_int_t)ents[i].size, "mtime",
                                             (json_int_t)ents[i].mtime));
    http_reply_json(req, 200,
                    json_pack("{s:o,s:o}", "blobs", arr, "next",
                              n == limit ? json_string(ents[n - 1].key) : json_null()));
out:
    free(ents);
}

/* h_quarantine lists the copies the scrubber set aside (at most 10000), for `tessera repair`. */
static void h_quarantine(struct http_req *req)
{
    struct storage *s = http_app(req);
    struct blob_entry *ents = xmalloc(STORAGE_LIST_MAX * sizeof(*ents));
    size_t n = 0;
    json_t *arr;
    int rc = scrub_quarantine_list(s->quarantine, ents, STORAGE_LIST_MAX, &n);

    if (rc != OK) {
        metric_add(&m_errors, 1);
        http_reply_error(req, rc, "cannot list the quarantine: %s", err_str(rc));
        goto out;
    }
    arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_pack("{s:s,s:I,s:I}", "key", ents[i].key, "size",
                                             (json_int_t)ents[i].size, "mtime",
                                             (json_int_t)ents[i].mtime));
    http_reply_json(req, 200, json_pack("{s:o}", "blobs", arr));
out:
    free(ents);
}

/* storage_quarantined keeps the gauges right when the scrubber moves a copy aside. */
static void storage_quarantined(void *arg, uint64_t size)
{
    (void)arg;
    metric_add(&m_blobs, -1);
    metric_add(&m_bytes, -(int64_t)size);
    metric_add(&m_quarantined, 1);
}

static int storage_ready(void *app, char *why, size_t cap)
{
    struct storage *s = app;
    int64_t free_b;

    if (blob_store_check(s->blobs) != OK) {
        snprintf(why, cap, "the blob directory is not writable");
        return E_UNAVAILABLE;
    }
    free_b = storage_free_bytes(s);
    if (free_b < s->cfg->storage.min_free) {
        snprintf(why, cap, "%lld bytes free, under storage.min_free", (long long)free_b);
        return E_UNAVAILABLE;
    }
    return OK;
}

static const struct route storage_routes[] = {
    {HTTP_GET, "/blobs", "blob_list", h_list, 0},
    {HTTP_GET, "/blobs/*", "blob_get", h_get, 0},
    {HTTP_PUT, "/blobs/*", "blob_put", h_put, ROUTE_BODY_UPLOAD},
    {HTTP_DELETE, "/blobs/*", "blob_delete", h_delete, 0},
    {HTTP_GET, "/quarantine", "quarantine_list", h_quarantine, 0},
};

/* storage_count sets the gauges from a walk of the store (once, at start). */
struct storage_tally {
    int64_t blobs, bytes;
};

static int storage_tally_add(void *arg, const struct blob_entry *e)
{
    struct storage_tally *t = arg;

    t->blobs++;
    t->bytes += (int64_t)e->size;
    return OK;
}

static int storage_count(struct storage *s)
{
    struct storage_tally t = {0, 0};
    int rc = blob_each(s->blobs, storage_tally_add, &t);

    metric_add(&m_blobs, t.blobs);
    metric_add(&m_bytes, t.bytes);
    log_info("storage", "%lld blobs, %lld bytes", (long long)t.blobs, (long long)t.bytes);
    return rc;
}

int storage_run(const struct config *cfg)
{
    struct storage s;
    struct http_server *srv = NULL;
    struct scrubber *scrub = NULL;
    struct blob_entry *q = NULL;
    size_t nq = 0;
    char url[PATH_MAX + 16], tmp[PATH_MAX + 8];
    int rc;

    memset(&s, 0, sizeof(s));
    s.cfg = cfg;
    if (cfg->storage_secret.len > 0)
        s.keys[s.nkeys++] = cfg->storage_secret;
    if (cfg->storage_secret_previous.len > 0)
        s.keys[s.nkeys++] = cfg->storage_secret_previous;
    if (s.nkeys == 0 && !listen_loopback(cfg->server.listen)) {
        log_error("storage",
                  "refusing to listen on %s without storage.secret_file: anyone who reaches "
                  "it could read, write and delete blobs (make one: openssl rand -hex 32)",
                  cfg->server.listen);
        return E_INVALID;
    }
    if (s.nkeys == 0)
        log_warn("storage", "no storage.secret_file: requests are not authenticated (loopback "
                            "only)");
    if (mkdir(cfg->storage.data_dir, 0755) != 0 && errno != EEXIST) {
        log_error("storage", "cannot create \"%s\": %s", cfg->storage.data_dir, strerror(errno));
        return E_IO;
    }
    if (realpath(cfg->storage.data_dir, tmp) == NULL ||
        strlen(tmp) + sizeof("/quarantine") > sizeof(s.root)) {
        log_error("storage", "cannot use \"%s\"", cfg->storage.data_dir);
        return E_IO;
    }
    memcpy(s.root, tmp, strlen(tmp)); /* fits: checked above */
    memcpy(s.root + strlen(tmp), "/blobs", sizeof("/blobs"));
    memcpy(s.quarantine, tmp, strlen(tmp)); /* fits too: "/quarantine" is the longest */
    memcpy(s.quarantine + strlen(tmp), "/quarantine", sizeof("/quarantine"));
    snprintf(url, sizeof(url), "file://%s", s.root);
    rc = blob_store_open(url, &s.blobs);
    if (rc != OK)
        goto out;
    rc = storage_count(&s);
    if (rc != OK)
        goto out;
    storage_free_bytes(&s);
    q = xmalloc(STORAGE_LIST_MAX * sizeof(*q));
    if (scrub_quarantine_list(s.quarantine, q, STORAGE_LIST_MAX, &nq) == OK && nq > 0)
        log_warn("storage",
                 "%zu%s copies in %s (failed the scrubber's check; `tessera repair` "
                 "lists them)",
                 nq, nq == STORAGE_LIST_MAX ? " or more" : "", s.quarantine);
    metric_add(&m_quarantined, (int64_t)nq);
    free(q);
    metric_register(&m_quarantined);
    metric_register(&m_blobs);
    metric_register(&m_bytes);
    metric_register(&m_free);
    metric_register(&m_size);
    metric_register(&m_errors);
    metric_register(&m_mismatch);
    metric_register(&m_unauthorized);
    /* Upload bodies are streamed next to the blobs: the same filesystem as their final place. */
    snprintf(tmp, sizeof(tmp), "%s/tmp", s.root);
    signals_block();
    struct http_server_opts opts = {
        .listen = cfg->server.listen,
        .thread_pool = 0, /* thread per connection: every handler blocks on the disk */
        .max_connections = (unsigned)cfg->server.max_connections,
        .idle_timeout_s = (unsigned)((cfg->server.idle_timeout_ms + 999) / 1000),
        .max_header_bytes = (size_t)cfg->server.max_header_bytes,
        .max_url_bytes = (size_t)cfg->server.max_url_bytes,
        /* stored images can outgrow their upload a little (re-encoded orientation) */
        .max_body_bytes = 2 * (uint64_t)cfg->limits.max_upload_bytes,
        .tmp_dir = tmp,
        .access_log = cfg->log.access,
        .routes = storage_routes,
        .nroutes = sizeof(storage_routes) / sizeof(storage_routes[0]),
        .app = &s,
        .ready = storage_ready,
        .authorize = storage_authorize,
        .metrics_token = &cfg->metrics_token,
    };
    rc = http_server_start(&opts, &srv);
    if (rc != OK)
        goto out;
    log_info("storage", "listening on %s (port %u); blobs in %s", cfg->server.listen,
             http_server_port(srv), s.root);
    if (cfg->storage.scrub_bytes_per_s > 0) {
        struct scrub_opts so = {s.blobs,
                                s.quarantine,
                                cfg->storage.scrub_bytes_per_s,
                                cfg->storage.scrub_interval_ms,
                                storage_quarantined,
                                NULL};
        if (scrub_start(&so, &scrub) != OK)
            log_error("storage", "cannot start the scrubber: blobs are checked only when read");
        else
            log_info("storage", "scrubbing at %lld bytes/s, a pass at most every %lld s",
                     (long long)cfg->storage.scrub_bytes_per_s,
                     (long long)(cfg->storage.scrub_interval_ms / 1000));
    }
    int sig = signals_wait();
    log_info("storage", "%s: stopping", strsignal(sig));
    scrub_stop(scrub);
    http_server_stop(srv, cfg->server.shutdown_timeout_ms);
out:
    blob_store_free(s.blobs);
    return rc;
}

int storage_cmd(const struct config *cfg, int argc, char **argv)
{
    if (argc > 1) {
        fprintf(stderr, "tessera storage: unexpected argument \"%s\"\n", argv[1]);
        return 2;
    }
    return storage_run(cfg) == OK ? 0 : 1;
}
