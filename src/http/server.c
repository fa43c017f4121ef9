/*
 * server.c - libmicrohttpd underneath the router, the limits and the JSON errors.
 *
 * A request's life: the URI log callback allocates its struct http_req (so the
 * full request-target length is known), the access handler routes it on the
 * first call, streams any body on the next calls, runs the handler once the
 * body is complete and queues its answer; the completion callback counts,
 * logs and frees. Invariant: every answer that leaves here was made by one of
 * the http_reply_ calls, so every error is JSON.
 */
#include "core/codec.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/strbuf.h"
#include "core/xalloc.h"
#include "http/http.h"
#include "http/ratelimit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HTTP_MAX_RESP_HEADERS 16
#define HTTP_HDR_ARENA        1536
#define HTTP_NOBODY_MAX       (64 * 1024)       /* bodies of routes that take none are capped */
#define HTTP_SMALL_BODY       (16 * 1024)       /* file answers up to this go out from memory */
#define HTTP_MULTIPART_SLACK  (64 * 1024)       /* multipart framing around the file part */
#define HTTP_DISCARD_MAX      (4 * 1024 * 1024) /* body bytes read and dropped after an answer */
#define HTTP_RID_MAX          64

/* The workers that run ROUTE_BLOCKING handlers off the epoll threads (thread_pool > 0). */
struct http_workers {
    pthread_t *threads;
    size_t nthreads;
    pthread_mutex_t lock;
    pthread_cond_t ready;
    struct http_req **queue; /* ring buffer of suspended requests */
    size_t cap, head, len;
    bool stopping;
    void (*thread_exit)(void);
};

struct http_server {
    struct MHD_Daemon *mhd;
    pthread_t gate_thread;
    bool gate_running;
    atomic_bool gate_stop;
    atomic_int gate_rc; /* OK while the gate passes */
    char gate_why[256]; /* guarded by gate_lock */
    pthread_mutex_t gate_lock;
    struct http_workers workers;
    struct http_server_opts opts;
    unsigned port;
    int route_ids[METRICS_MAX_ROUTES];
    atomic_int inflight;
};

/*
 * REQ_ANSWERED: the answer is made, the rest of the body is read and dropped, then it is queued.
 * REQ_RUNNING: a blocking handler runs on a worker thread, the connection suspended;
 * REQ_HANDLED: it finished and resumed the connection, its answer waits to be queued.
 */
enum req_state { REQ_NEW = 0, REQ_BODY, REQ_ANSWERED, REQ_RUNNING, REQ_HANDLED, REQ_DONE };

struct http_req {
    struct http_server *srv;
    struct MHD_Connection *conn;
    enum req_state state;
    int64_t start_us;
    size_t uri_len;
    char *target; /* the request target as sent */
    bool uri_nul; /* the request target holds %00: MHD's decoded C strings would cut it short */
    unsigned method;
    const char *method_name;
    struct str path;
    struct route_match match;
    int metric_id;
    char rid[HTTP_RID_MAX + 1];

    /* body */
    int body_fd;
    char body_path[256];
    uint64_t body_len; /* bytes of the payload written */
    uint64_t wire_len; /* bytes of the request body received */
    int body_rc;       /* first error while receiving: E_TOOBIG, E_INVALID, E_IO */
    struct MHD_PostProcessor *pp;
    bool multipart;
    bool saw_file;

    /* ROUTE_TRY_INLINE: the handler runs on the epoll thread; it asked for a worker */
    bool inline_try;
    bool deferred;

    /* answer */
    struct MHD_Response *resp;
    int status;
    uint64_t resp_bytes;
    size_t nhdr;
    const char *hdr_name[HTTP_MAX_RESP_HEADERS];
    const char *hdr_value[HTTP_MAX_RESP_HEADERS];
    size_t arena_used;
    char arena[HTTP_HDR_ARENA];
};

static struct metric m_inline = {
    "tessera_http_inline_answers_total",
    "Requests of routes that may block answered on an event thread from memory and local disk.",
    "counter", 0};
static struct metric m_deferred = {
    "tessera_http_deferred_total",
    "Requests of such routes that needed a blocking call and moved to a worker thread.", "counter",
    0};

/* --- built-in operational routes --- */

static void ops_healthz(struct http_req *req);
static void ops_readyz(struct http_req *req);
static void ops_metrics(struct http_req *req);

static const struct route ops_routes[] = {
    {HTTP_GET, "/healthz", "healthz", ops_healthz, 0},
    {HTTP_GET, "/readyz", "readyz", ops_readyz, 0},
    {HTTP_GET, "/metrics", "metrics", ops_metrics, 0},
};
#define OPS_N (sizeof(ops_routes) / sizeof(ops_routes[0]))

static void ops_healthz(struct http_req *req)
{
    http_reply_json(req, 200, json_pack("{s:s}", "status", "ok"));
}

static void ops_readyz(struct http_req *req)
{
    char why[256] = "";
    int rc = OK;

    if (req->srv->opts.ready != NULL)
        rc = req->srv->opts.ready(req->srv->opts.app, why, sizeof(why));
    if (rc == OK) {
        json_t *j = json_pack("{s:s}", "status", "ready");
        if (req->srv->opts.ready_detail != NULL)
            json_object_set_new(j, "db", req->srv->opts.ready_detail(req->srv->opts.app));
        http_reply_json(req, 200, j);
    } else {
        http_reply_error(req, E_UNAVAILABLE, "not ready: %s", why[0] ? why : err_str(rc));
    }
}

static void ops_metrics(struct http_req *req)
{
    struct strbuf sb;

    char why[256];
    bool ready = req->srv->opts.ready == NULL ||
                 req->srv->opts.ready(req->srv->opts.app, why, sizeof(why)) == OK;

    strbuf_init(&sb, 4 * 1024 * 1024);
    strbuf_addf(&sb,
                "# HELP tessera_ready 1 when this process would answer /readyz with 200 now.\n"
                "# TYPE tessera_ready gauge\ntessera_ready %d\n",
                ready ? 1 : 0);
    metrics_render(&sb);
    http_reply_buf(req, 200, "text/plain; version=0.0.4; charset=utf-8", sb.buf ? sb.buf : "",
                   sb.len);
    strbuf_release(&sb);
}

/* --- request accessors --- */

void *http_app(const struct http_req *req)
{
    return req->srv->opts.app;
}

bool http_inline(const struct http_req *req)
{
    return req->inline_try;
}

void http_defer(struct http_req *req)
{
    if (!req->inline_try || req->resp != NULL) {
        log_error("http", "http_defer outside an inline try of %s: ignored",
                  req->match.route->name);
        return;
    }
    req->deferred = true;
    req->nhdr = 0;
    req->arena_used = 0;
}

unsigned http_method(const struct http_req *req)
{
    return req->method;
}

struct str http_path(const struct http_req *req)
{
    return req->path;
}

const char *http_target(const struct http_req *req)
{
    return req->target != NULL ? req->target : "";
}

const char *http_method_name(const struct http_req *req)
{
    return req->method_name != NULL ? req->method_name : "";
}

struct str http_param(const struct http_req *req, size_t i)
{
    if (i >= req->match.nparams)
        return (struct str){"", 0};
    return req->match.params[i];
}

const char *http_header(const struct http_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *http_query(const struct http_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

void http_client_addr(const struct http_req *req, char *out, size_t cap)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);

    snprintf(out, cap, "?");
    if (ci == NULL || ci->client_addr == NULL)
        return;
    if (ci->client_addr->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ci->client_addr)->sin_addr, out,
                  (socklen_t)cap);
    else if (ci->client_addr->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ci->client_addr)->sin6_addr, out,
                  (socklen_t)cap);
}

const char *http_request_id(const struct http_req *req)
{
    return req->rid;
}

const char *http_body_path(const struct http_req *req)
{
    return req->body_path;
}

uint64_t http_body_len(const struct http_req *req)
{
    return req->body_len;
}

/* --- answers --- */

static const char *arena_dup(struct http_req *req, const char *s)
{
    size_t n = strlen(s) + 1;

    if (n > sizeof(req->arena) - req->arena_used)
        return NULL;
    char *p = memcpy(req->arena + req->arena_used, s, n);
    req->arena_used += n;
    return p;
}

void http_set_header(struct http_req *req, const char *name, const char *value)
{
    const char *n, *v;

    if (req->nhdr == HTTP_MAX_RESP_HEADERS) {
        log_error("http", "too many response headers, dropped %s", name);
        return;
    }
    n = arena_dup(req, name);
    v = arena_dup(req, value);
    if (n == NULL || v == NULL) {
        log_error("http", "response header arena full, dropped %s", name);
        return;
    }
    req->hdr_name[req->nhdr] = n;
    req->hdr_value[req->nhdr] = v;
    req->nhdr++;
}

/* http_answer installs resp as the answer; a second answer is a bug and is dropped. */
static void http_answer(struct http_req *req, int status, struct MHD_Response *resp, uint64_t bytes)
{
    if (resp == NULL) {
        log_error("http", "cannot create a response");
        return;
    }
    if (req->resp != NULL) {
        log_error("http", "second answer to one request dropped (status %d)", status);
        MHD_destroy_response(resp);
        return;
    }
    for (size_t i = 0; i < req->nhdr; i++)
        MHD_add_response_header(resp, req->hdr_name[i], req->hdr_value[i]);
    MHD_add_response_header(resp, "X-Request-Id", req->rid);
    req->resp = resp;
    req->status = status;
    req->resp_bytes = bytes;
}

void http_reply_json(struct http_req *req, int status, json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);
    size_t len;

    json_decref(j);
    if (text == NULL) {
        http_reply_error(req, E_INTERNAL, "cannot encode the answer");
        return;
    }
    len = strlen(text);
    text = xrealloc(text, len + 2);
    text[len++] = '\n';
    text[len] = '\0';
    http_set_header(req, "Content-Type", "application/json");
    http_set_header(req, "Cache-Control", "no-store");
    http_answer(req, status, MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE),
                len);
}

/*
 * utf8_scrub replaces, in place, every byte of s that is not part of a valid
 * UTF-8 sequence (and every control character) with '?': error messages quote
 * request bytes, and JSON (jansson) refuses invalid UTF-8.
 */
static void utf8_scrub(char *s)
{
    unsigned char *p = (unsigned char *)s;

    while (*p != '\0') {
        size_t n = 0;
        if (*p < 0x20 || *p == 0x7f) {
            *p++ = '?';
            continue;
        }
        if (*p < 0x80) {
            p++;
            continue;
        }
        if (*p >= 0xc2 && *p <= 0xdf)
            n = 1;
        else if (*p >= 0xe0 && *p <= 0xef)
            n = 2;
        else if (*p >= 0xf0 && *p <= 0xf4)
            n = 3;
        bool ok = n > 0;
        for (size_t i = 1; ok && i <= n; i++)
            ok = (p[i] & 0xc0) == 0x80;
        /* overlong forms, surrogates and code points past U+10FFFF */
        if (ok && ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] > 0x9f) ||
                   (p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] > 0x8f)))
            ok = false;
        if (!ok) {
            *p++ = '?';
            continue;
        }
        p += n + 1;
    }
}

void http_reply_error(struct http_req *req, int rc, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    int status = err_http_status(rc);

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    utf8_scrub(msg);
    if (status == 503 || status == 429) {
        bool has = false;
        for (size_t i = 0; i < req->nhdr; i++)
            has |= strcasecmp(req->hdr_name[i], "Retry-After") == 0;
        if (!has)
            http_set_header(req, "Retry-After", "1");
    }
    if (rc == E_METHOD) {
        char allow[128];
        http_allow_format(req->match.allow, allow, sizeof(allow));
        http_set_header(req, "Allow", allow);
    }
    http_reply_json(req, status,
                    json_pack("{s:{s:s,s:s}}", "error", "code", err_code(rc), "message", msg));
}

void http_reply_fd(struct http_req *req, int status, int fd, uint64_t off, uint64_t len)
{
    /*
     * A small body goes out with its headers in one send from memory; sendfile
     * would send them apart, two packets (measured: the small rendition's GET
     * rate rose by half). Larger bodies are never copied.
     */
    if (len > 0 && len <= HTTP_SMALL_BODY) {
        char *buf = xmalloc((size_t)len);
        ssize_t n = pread(fd, buf, (size_t)len, (off_t)off);
        if (n == (ssize_t)len) {
            close(fd);
            http_answer(req, status,
                        MHD_create_response_from_buffer((size_t)len, buf, MHD_RESPMEM_MUST_FREE),
                        len);
            return;
        }
        free(buf); /* a short read: let sendfile try (and fail) as for any file */
    }
    http_answer(req, status, MHD_create_response_from_fd_at_offset64(len, fd, off), len);
}

void http_reply_buf(struct http_req *req, int status, const char *content_type, const void *p,
                    size_t len)
{
    http_set_header(req, "Content-Type", content_type);
    http_answer(req, status, MHD_create_response_from_buffer(len, (void *)p, MHD_RESPMEM_MUST_COPY),
                len);
}

void http_reply_empty(struct http_req *req, int status)
{
    http_answer(req, status, MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT), 0);
}

/* --- body --- */

bool http_rid_valid(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > HTTP_RID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

static void body_write(struct http_req *req, const char *data, size_t size)
{
    if (req->body_rc != OK)
        return;
    if (req->body_len + size > req->srv->opts.max_body_bytes) {
        req->body_rc = E_TOOBIG;
        return;
    }
    while (size > 0) {
        ssize_t w = pwrite(req->body_fd, data, size, (off_t)req->body_len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            log_error("http", "upload temp file write: %s", strerror(errno));
            req->body_rc = errno == ENOSPC ? E_NOSPACE : E_IO;
            return;
        }
        data += w;
        size -= (size_t)w;
        req->body_len += (uint64_t)w;
    }
}

static enum MHD_Result post_iterator(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *filename, const char *content_type,
                                     const char *transfer_encoding, const char *data, uint64_t off,
                                     size_t size)
{
    struct http_req *req = cls;

    (void)kind;
    (void)filename;
    (void)content_type;
    (void)transfer_encoding;
    if (key == NULL || strcmp(key, "file") != 0)
        return MHD_YES; /* other fields are ignored; their size counts against the wire cap */
    if (off == 0 && req->saw_file && size > 0 && req->body_len > 0) {
        req->body_rc = E_INVALID; /* a second "file" part */
        return MHD_NO;
    }
    req->saw_file = true;
    body_write(req, data, size);
    return req->body_rc == OK ? MHD_YES : MHD_NO;
}

static int body_open(struct http_req *req)
{
    const char *ct = http_header(req, "Content-Type");

    snprintf(req->body_path, sizeof(req->body_path), "%s/upload-XXXXXX", req->srv->opts.tmp_dir);
    req->body_fd = mkostemp(req->body_path, O_CLOEXEC);
    if (req->body_fd < 0) {
        log_error("http", "cannot create upload temp file in %s: %s", req->srv->opts.tmp_dir,
                  strerror(errno));
        req->body_path[0] = '\0';
        return errno == ENOSPC ? E_NOSPACE : E_IO;
    }
    if (ct != NULL && strncasecmp(ct, "multipart/form-data", 19) == 0) {
        req->multipart = true;
        req->pp = MHD_create_post_processor(req->conn, 64 * 1024, post_iterator, req);
        if (req->pp == NULL)
            return E_INVALID;
    }
    return OK;
}

static uint64_t req_body_cap(const struct http_req *req);

static void body_receive(struct http_req *req, const char *data, size_t size)
{
    req->wire_len += size;
    if (req->wire_len > req_body_cap(req)) {
        if (req->body_rc == OK)
            req->body_rc = E_TOOBIG;
        return;
    }
    if (req->body_fd < 0 || req->body_rc != OK)
        return;
    if (req->pp != NULL) {
        if (MHD_post_process(req->pp, data, size) != MHD_YES && req->body_rc == OK)
            req->body_rc = E_INVALID;
    } else {
        body_write(req, data, size);
    }
}

static void body_finish(struct http_req *req)
{
    if (req->pp != NULL) {
        if (MHD_destroy_post_processor(req->pp) != MHD_YES && req->body_rc == OK)
            req->body_rc = E_INVALID;
        req->pp = NULL;
        if (req->body_rc == OK && !req->saw_file)
            req->body_rc = E_INVALID;
    }
}

/* --- the readiness gate --- */

#define HTTP_GATE_PERIOD_US 500000

static void *gate_main(void *arg)
{
    struct http_server *srv = arg;

    while (!atomic_load(&srv->gate_stop)) {
        char why[256] = "";
        int rc = srv->opts.gate(srv->opts.app, why, sizeof(why));
        if (rc != atomic_load(&srv->gate_rc))
            log_warn("http", "%s%s%s",
                     rc == OK ? "ready again" : "not ready: ", rc == OK ? "" : why,
                     rc == OK ? "" : " (answering 503)");
        pthread_mutex_lock(&srv->gate_lock);
        snprintf(srv->gate_why, sizeof(srv->gate_why), "%s", why);
        pthread_mutex_unlock(&srv->gate_lock);
        atomic_store(&srv->gate_rc, rc);
        for (int i = 0; i < 10 && !atomic_load(&srv->gate_stop); i++) {
            struct timespec ts = {0, HTTP_GATE_PERIOD_US / 10 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

static void gate_stop(struct http_server *srv)
{
    if (!srv->gate_running)
        return;
    atomic_store(&srv->gate_stop, true);
    pthread_join(srv->gate_thread, NULL);
    srv->gate_running = false;
}

/* --- workers for blocking handlers --- */

static void workers_push(struct http_workers *w, struct http_req *req)
{
    pthread_mutex_lock(&w->lock);
    if (w->len == w->cap) {
        size_t ncap = w->cap ? w->cap * 2 : 64;
        struct http_req **q = xcalloc(ncap, sizeof(*q));
        for (size_t i = 0; i < w->len; i++)
            q[i] = w->queue[(w->head + i) % w->cap];
        free(w->queue);
        w->queue = q;
        w->cap = ncap;
        w->head = 0;
    }
    w->queue[(w->head + w->len) % w->cap] = req;
    w->len++;
    pthread_cond_signal(&w->ready);
    pthread_mutex_unlock(&w->lock);
}

static void *workers_main(void *arg)
{
    struct http_workers *w = arg;

    for (;;) {
        struct http_req *req;
        pthread_mutex_lock(&w->lock);
        while (w->len == 0 && !w->stopping)
            pthread_cond_wait(&w->ready, &w->lock);
        if (w->len == 0) {
            pthread_mutex_unlock(&w->lock);
            break;
        }
        req = w->queue[w->head];
        w->head = (w->head + 1) % w->cap;
        w->len--;
        pthread_mutex_unlock(&w->lock);

        log_set_request_id(req->rid);
        req->match.route->handler(req);
        log_set_request_id(NULL);
        req->state = REQ_HANDLED;
        MHD_resume_connection(req->conn);
    }
    if (w->thread_exit != NULL)
        w->thread_exit();
    return NULL;
}

static int workers_start(struct http_workers *w, size_t n, void (*thread_exit)(void))
{
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->ready, NULL);
    w->thread_exit = thread_exit;
    w->threads = xcalloc(n, sizeof(*w->threads));
    for (size_t i = 0; i < n; i++) {
        if (pthread_create(&w->threads[i], NULL, workers_main, w) != 0) {
            log_error("http", "cannot start worker thread %zu", i);
            return E_INTERNAL;
        }
        w->nthreads++;
    }
    return OK;
}

/* workers_stop lets queued requests finish, then joins every worker. */
static void workers_stop(struct http_workers *w)
{
    if (w->threads == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    pthread_cond_broadcast(&w->ready);
    pthread_mutex_unlock(&w->lock);
    for (size_t i = 0; i < w->nthreads; i++)
        pthread_join(w->threads[i], NULL);
    free(w->threads);
    free(w->queue);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->ready);
    memset(w, 0, sizeof(*w));
}

/* --- the MHD callbacks --- */

static void *uri_logger(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct http_server *srv = cls;
    struct http_req *req = xcalloc(1, sizeof(*req));

    req->srv = srv;
    req->conn = conn;
    req->start_us = time_mono_us();
    req->uri_len = strlen(uri);
    req->target = xstrdup(uri);
    req->uri_nul = strstr(uri, "%00") != NULL;
    req->body_fd = -1;
    req->metric_id = -1;
    atomic_fetch_add(&srv->inflight, 1);
    metrics_inflight(1);
    return req;
}

static void req_route(struct http_req *req, const char *url, const char *method)
{
    struct http_server *srv = req->srv;
    const char *rid = http_header(req, "X-Request-Id");

    if (rid != NULL && http_rid_valid(rid)) {
        snprintf(req->rid, sizeof(req->rid), "%s", rid);
    } else {
        uint8_t raw[8];
        random_bytes(raw, sizeof(raw));
        hex_encode(raw, sizeof(raw), req->rid);
    }
    req->method_name = method;
    req->method = http_method_parse(method);
    req->path = str_from(url);
    router_match(ops_routes, OPS_N, req->method, req->path, &req->match);
    if (req->match.status == E_NOTFOUND)
        router_match(srv->opts.routes, srv->opts.nroutes, req->method, req->path, &req->match);
    if (req->match.route != NULL) {
        const struct route *r = req->match.route;
        if (r >= srv->opts.routes && r < srv->opts.routes + srv->opts.nroutes)
            req->metric_id = srv->route_ids[r - srv->opts.routes];
        else
            req->metric_id = srv->route_ids[METRICS_MAX_ROUTES - OPS_N + (size_t)(r - ops_routes)];
    }
}

static enum MHD_Result header_size_add(void *cls, enum MHD_ValueKind kind, const char *key,
                                       const char *value)
{
    size_t *total = cls;

    (void)kind;
    *total += strlen(key) + (value ? strlen(value) : 0) + 4;
    return MHD_YES;
}

/* What the framing headers say: a message body has one length, told one way. */
struct framing {
    int content_length;    /* Content-Length headers */
    int transfer_encoding; /* Transfer-Encoding headers */
    bool bad_length;       /* a Content-Length that is not only digits */
};

static enum MHD_Result framing_add(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    struct framing *f = cls;

    (void)kind;
    if (strcasecmp(key, "Content-Length") == 0) {
        f->content_length++;
        if (value == NULL || value[0] == '\0' || strspn(value, "0123456789") != strlen(value))
            f->bad_length = true;
    } else if (strcasecmp(key, "Transfer-Encoding") == 0) {
        f->transfer_encoding++;
    }
    return MHD_YES;
}

/*
 * req_ambiguous tells whether the message's length is ambiguous (RFC 9112
 * 6.3: several or malformed Content-Length, or Content-Length with
 * Transfer-Encoding): the shapes of request smuggling, refused with 400 and
 * the connection closed, since where the next request starts is unknown.
 */
static bool req_ambiguous(struct http_req *req)
{
    struct framing f = {0, 0, false};

    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, framing_add, &f);
    return f.content_length > 1 || f.bad_length || f.transfer_encoding > 1 ||
           (f.content_length > 0 && f.transfer_encoding > 0);
}

static bool req_is_ops(const struct http_req *req)
{
    return req->match.route >= ops_routes && req->match.route < ops_routes + OPS_N;
}

/* req_body_cap is the most body bytes the request may send before it is refused. */
static uint64_t req_body_cap(const struct http_req *req)
{
    if (req->match.route != NULL && (req->match.route->flags & ROUTE_BODY_UPLOAD))
        return req->srv->opts.max_body_bytes + (req->multipart ? HTTP_MULTIPART_SLACK : 0);
    return HTTP_NOBODY_MAX;
}

/*
 * metrics_authorized tells whether a /metrics request may be answered: no
 * token configured, or "Bearer <token>" given. The digests are compared, in
 * constant time, so neither content nor length leaks through timing.
 */
static bool metrics_authorized(const struct http_req *req)
{
    const struct secret *tok = req->srv->opts.metrics_token;
    const char *auth = http_header(req, "Authorization");
    uint8_t want[SHA256_LEN], got[SHA256_LEN];

    if (tok == NULL || tok->len == 0)
        return true;
    if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0)
        return false;
    sha256_buf(tok->b, tok->len, want);
    sha256_buf(auth + 7, strlen(auth + 7), got);
    return ct_equal(want, got, SHA256_LEN);
}

/*
 * req_precheck answers what can be decided from the request line and headers
 * alone; returns true when it answered. *declared is the Content-Length (or
 * UINT64_MAX when absent).
 */
static bool req_precheck(struct http_req *req, uint64_t *declared)
{
    const struct http_server_opts *o = &req->srv->opts;
    const char *cl = http_header(req, "Content-Length");
    size_t header_bytes = 0;

    *declared = UINT64_MAX;
    if (cl != NULL) {
        char *end = NULL;
        unsigned long long n = strtoull(cl, &end, 10);
        if (end != cl && *end == '\0')
            *declared = n;
    }
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, header_size_add, &header_bytes);
    if (req->uri_len > o->max_url_bytes) {
        http_reply_error(req, E_URITOOLONG, "request target is longer than %zu bytes",
                         o->max_url_bytes);
        return true;
    }
    if (req->uri_nul) {
        http_reply_error(req, E_INVALID, "NUL byte in the request target");
        return true;
    }
    if (header_bytes > o->max_header_bytes) {
        http_reply_error(req, E_HEADERS, "request headers are larger than %zu bytes",
                         o->max_header_bytes);
        return true;
    }
    if (req->match.route != NULL && !req_is_ops(req) && atomic_load(&req->srv->gate_rc) != OK) {
        char why[256];
        pthread_mutex_lock(&req->srv->gate_lock);
        snprintf(why, sizeof(why), "%s", req->srv->gate_why);
        pthread_mutex_unlock(&req->srv->gate_lock);
        http_reply_error(req, E_UNAVAILABLE, "not ready: %s", why[0] ? why : "dependencies down");
        return true;
    }
    if (req->match.route != NULL && req->match.route->handler == ops_metrics &&
        !metrics_authorized(req)) {
        http_set_header(req, "WWW-Authenticate", "Bearer realm=\"metrics\"");
        http_reply_error(req, E_UNAUTHORIZED, "/metrics needs Authorization: Bearer <token>");
        return true;
    }
    if (req->match.route != NULL && !req_is_ops(req) && o->authorize != NULL) {
        const char *why = "unauthorized";
        if (o->authorize(o->app, req, &why) != OK) {
            http_reply_error(req, E_UNAUTHORIZED, "%s", why);
            return true;
        }
    }
    if (req->match.route == NULL) {
        if (req->match.status == E_METHOD)
            http_reply_error(req, E_METHOD, "%s is not allowed here", req->method_name);
        else
            http_reply_error(req, E_NOTFOUND, "no such resource");
        return true;
    }
    if (*declared != UINT64_MAX && *declared > req_body_cap(req) + HTTP_MULTIPART_SLACK) {
        http_reply_error(req, E_TOOBIG, "body is larger than %llu bytes",
                         (unsigned long long)(req->match.route->flags & ROUTE_BODY_UPLOAD
                                                  ? o->max_body_bytes
                                                  : HTTP_NOBODY_MAX));
        return true;
    }
    return false;
}

static enum MHD_Result req_queue(struct http_req *req)
{
    enum MHD_Result r;

    if (req->resp == NULL)
        http_reply_error(req, E_INTERNAL, "the handler gave no answer");
    if (req->resp == NULL)
        return MHD_NO;
    r = MHD_queue_response(req->conn, (unsigned)req->status, req->resp);
    req->state = REQ_DONE;
    return r;
}

static enum MHD_Result access_handler(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **con_cls)
{
    struct http_req *req = *con_cls;
    uint64_t declared;
    int rc;

    (void)cls;
    (void)conn;
    (void)version;
    if (req == NULL)
        return MHD_NO;
    log_set_request_id(req->rid[0] ? req->rid : NULL);
    if (req->state == REQ_NEW) {
        req_route(req, url, method);
        log_set_request_id(req->rid);
        req->state = REQ_BODY;
        if (req_ambiguous(req)) {
            http_reply_error(req, E_INVALID,
                             "ambiguous message length (Content-Length and "
                             "Transfer-Encoding headers disagree)");
            return req_queue(req); /* at once, and the connection closes */
        }
        if (req_precheck(req, &declared)) {
            /*
             * Answered from the headers. The answer waits for the end of the
             * request, the body read and dropped, so the connection stays alive
             * (0.9.75 closes a connection whose answer is queued this early) and
             * the client, still sending, reads the answer instead of a reset. A
             * body declared larger than HTTP_DISCARD_MAX is answered at once and
             * the connection closed unread.
             */
            if (declared != UINT64_MAX && declared > HTTP_DISCARD_MAX)
                return req_queue(req);
            req->state = REQ_ANSWERED;
            return MHD_YES;
        }
        if (req->match.route->flags & ROUTE_BODY_UPLOAD) {
            rc = body_open(req);
            if (rc != OK)
                req->body_rc = rc;
        }
        return MHD_YES;
    }
    if (req->state == REQ_DONE || req->state == REQ_RUNNING) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (req->state == REQ_HANDLED)
        return req_queue(req);
    if (req->state == REQ_ANSWERED) {
        if (*upload_data_size == 0)
            return req_queue(req);
        req->wire_len += *upload_data_size;
        *upload_data_size = 0;
        return req->wire_len > HTTP_DISCARD_MAX ? MHD_NO : MHD_YES;
    }
    if (*upload_data_size != 0) {
        body_receive(req, upload_data, *upload_data_size);
        *upload_data_size = 0;
        /*
         * Past the limit (a body without Content-Length): libmicrohttpd cannot
         * answer before the body ends, so the rest is read and dropped, up to a
         * cap past which the connection is closed without an answer.
         */
        if (req->body_rc == E_TOOBIG && req->wire_len > req_body_cap(req) + HTTP_DISCARD_MAX)
            return MHD_NO;
        return MHD_YES;
    }
    body_finish(req);
    if (req->body_rc != OK) {
        if (req->body_rc == E_TOOBIG)
            http_reply_error(req, E_TOOBIG, "body is larger than %llu bytes",
                             (unsigned long long)req->srv->opts.max_body_bytes);
        else if (req->body_rc == E_INVALID)
            http_reply_error(req, E_INVALID,
                             "malformed multipart body (expected one part named \"file\")");
        else
            http_reply_error(req, E_UNAVAILABLE, "cannot store the upload: %s",
                             err_str(req->body_rc));
    } else if ((req->match.route->flags & ROUTE_BLOCKING) && req->srv->workers.nthreads > 0) {
        if (req->match.route->flags & ROUTE_TRY_INLINE) {
            req->inline_try = true;
            req->match.route->handler(req);
            req->inline_try = false;
            metric_add(req->deferred ? &m_deferred : &m_inline, 1);
            if (!req->deferred)
                return req_queue(req);
        }
        /* off the epoll thread: suspend, run on a worker, resume to queue the answer */
        req->state = REQ_RUNNING;
        MHD_suspend_connection(req->conn);
        workers_push(&req->srv->workers, req);
        return MHD_YES;
    } else {
        req->match.route->handler(req);
    }
    return req_queue(req);
}

static void request_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                              enum MHD_RequestTerminationCode toe)
{
    struct http_server *srv = cls;
    struct http_req *req = *con_cls;
    int64_t dur;

    (void)conn;
    if (req == NULL)
        return;
    *con_cls = NULL;
    dur = time_mono_us() - req->start_us;
    metrics_request(req->metric_id, req->status ? req->status : 499, dur);
    if (srv->opts.access_log && req->method_name != NULL) {
        /* the client: the connecting address, or X-Forwarded-For from a trusted proxy */
        char peer[64], client[64];
        http_client_addr(req, peer, sizeof(peer));
        ratelimit_client_addr(peer, http_header(req, "X-Forwarded-For"),
                              srv->opts.trusted_proxies ? srv->opts.trusted_proxies : "", client,
                              sizeof(client));
        log_write(LOG_INFO, "access", "%s %s %.*s %d %llu %.3fms%s", client, req->method_name,
                  (int)(req->path.len > 512 ? 512 : req->path.len), req->path.p,
                  req->status ? req->status : 499, (unsigned long long)req->resp_bytes,
                  (double)dur / 1000.0,
                  toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " aborted");
    }
    free(req->target);
    if (req->pp != NULL)
        MHD_destroy_post_processor(req->pp);
    if (req->body_fd >= 0)
        close(req->body_fd);
    if (req->body_path[0] != '\0')
        unlink(req->body_path);
    if (req->resp != NULL)
        MHD_destroy_response(req->resp);
    log_set_request_id(NULL);
    free(req);
    atomic_fetch_sub(&srv->inflight, 1);
    metrics_inflight(-1);
}

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    char msg[512];

    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    log_warn("mhd", "%s", msg);
}

static int parse_listen(const char *listen, struct sockaddr_in *sa)
{
    const char *colon = strrchr(listen, ':');
    char host[64];
    char *end = NULL;
    unsigned long port;

    if (colon == NULL || (size_t)(colon - listen) >= sizeof(host))
        return E_INVALID;
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    port = strtoul(colon + 1, &end, 10);
    if (end == colon + 1 || *end != '\0' || port > 65535)
        return E_INVALID;
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (strcmp(host, "") == 0 || strcmp(host, "*") == 0)
        sa->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (strcmp(host, "localhost") == 0)
        sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
        return E_INVALID;
    return OK;
}

int http_server_start(const struct http_server_opts *opts, struct http_server **out)
{
    struct http_server *srv = xcalloc(1, sizeof(*srv));
    struct sockaddr_in sa;
    unsigned flags = MHD_USE_ERROR_LOG | MHD_USE_ITC;
    const union MHD_DaemonInfo *info;
    int rc = OK;

    metric_register(&m_inline);
    metric_register(&m_deferred);
    srv->opts = *opts;
    pthread_mutex_init(&srv->gate_lock, NULL);
    rc = parse_listen(opts->listen, &sa);
    if (rc != OK) {
        log_error("http", "bad listen address \"%s\" (expected IPv4:port)", opts->listen);
        goto out;
    }
    for (size_t i = 0; i < opts->nroutes && i < METRICS_MAX_ROUTES - OPS_N; i++)
        srv->route_ids[i] = metrics_route_id(opts->routes[i].name);
    for (size_t i = 0; i < OPS_N; i++)
        srv->route_ids[METRICS_MAX_ROUTES - OPS_N + i] = metrics_route_id(ops_routes[i].name);
    if (opts->thread_pool > 0) {
        flags |= MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME;
        rc = workers_start(&srv->workers, opts->workers > 0 ? opts->workers : 8, opts->thread_exit);
        if (rc != OK)
            goto out;
    } else
        flags |= MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD;
    srv->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, access_handler, srv, MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_LISTENING_ADDRESS_REUSE,
        (unsigned)1, MHD_OPTION_CONNECTION_LIMIT, opts->max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, opts->idle_timeout_s,
        /* twice our own limit: a head up to that size still gets our JSON 414/431 */
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, opts->max_header_bytes * 2, MHD_OPTION_URI_LOG_CALLBACK,
        uri_logger, srv, MHD_OPTION_NOTIFY_COMPLETED, request_completed, srv,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024,
        opts->thread_pool > 0 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END,
        (unsigned)opts->thread_pool, MHD_OPTION_END);
    if (srv->mhd == NULL) {
        log_error("http", "cannot listen on %s", opts->listen);
        rc = E_IO;
        goto out;
    }
    if (opts->gate != NULL) {
        char why[256] = "";
        atomic_store(&srv->gate_rc, opts->gate(opts->app, why, sizeof(why)));
        snprintf(srv->gate_why, sizeof(srv->gate_why), "%s", why);
        if (pthread_create(&srv->gate_thread, NULL, gate_main, srv) != 0) {
            log_error("http", "cannot start the readiness thread");
            rc = E_INTERNAL;
            goto out;
        }
        srv->gate_running = true;
    }
    info = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? info->port : ntohs(sa.sin_port);
out:
    if (rc != OK) {
        gate_stop(srv);
        workers_stop(&srv->workers);
        if (srv->mhd != NULL)
            MHD_stop_daemon(srv->mhd);
        pthread_mutex_destroy(&srv->gate_lock);
        free(srv);
        srv = NULL;
    }
    *out = srv;
    return rc;
}

unsigned http_server_port(const struct http_server *srv)
{
    return srv->port;
}

void http_server_stop(struct http_server *srv, int64_t grace_ms)
{
    int64_t deadline;
    MHD_socket fd;

    if (srv == NULL)
        return;
    fd = MHD_quiesce_daemon(srv->mhd);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    deadline = time_mono_us() + grace_ms * 1000;
    while (atomic_load(&srv->inflight) > 0 && time_mono_us() < deadline) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (atomic_load(&srv->inflight) > 0)
        log_warn("http", "%d requests still in flight after %lld ms: closing them",
                 atomic_load(&srv->inflight), (long long)grace_ms);
    gate_stop(srv);
    workers_stop(&srv->workers);
    MHD_stop_daemon(srv->mhd);
    pthread_mutex_destroy(&srv->gate_lock);
    free(srv);
}
