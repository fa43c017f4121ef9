/*
 * http.h - the HTTP server core: what a role's handlers see of a request.
 *
 * The server (libmicrohttpd underneath; its types never leave http/) routes a
 * request, streams an upload body to a temporary file, calls the handler once
 * the request is complete, and answers every error with the JSON body of
 * API.md. /healthz, /readyz and /metrics are built in for every role.
 * Handlers answer exactly once with one of the http_reply_ calls. With one
 * thread per connection they run on the connection's thread and may block;
 * with an epoll pool, handlers of routes flagged ROUTE_BLOCKING run on worker
 * threads (the connection suspended meanwhile) and all others on the epoll
 * threads, which they must not block for long.
 */
#ifndef HTTP_HTTP_H
#define HTTP_HTTP_H

#include "core/crypto.h"
#include "core/str.h"
#include "http/router.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct http_server;

/*
 * A role's check of a request's credentials, made from the request line and
 * headers before any body is received (operational endpoints are never
 * checked): OK, or E_UNAUTHORIZED with a static reason in *why, which the
 * server answers as 401 (the body, if any, read and dropped unstored).
 */
typedef int http_authorize_fn(void *app, const struct http_req *req, const char **why);

/* A role's readiness: OK, or an error with the reason written to why. */
typedef int http_ready_fn(void *app, char *why, size_t cap);

/* Details added to the /readyz answer (a JSON value, stolen), e.g. each database server. */
typedef json_t *http_ready_detail_fn(void *app);

struct http_server_opts {
    const char *listen; /* "host:port"; port 0 picks a free port */
    int thread_pool;    /* 0: thread per connection; N: epoll pool of N threads */
    unsigned max_connections;
    unsigned idle_timeout_s;
    size_t max_header_bytes;
    size_t max_url_bytes;
    uint64_t max_body_bytes; /* for ROUTE_BODY_UPLOAD routes; others take none */
    const char *tmp_dir;     /* where upload bodies are streamed */
    bool access_log;
    const struct route *routes;
    size_t nroutes;
    void *app;
    http_ready_fn *ready;
    http_ready_detail_fn *ready_detail; /* may be NULL */
    /*
     * gate, when set, is polled every 500 ms on a thread of its own; while it
     * fails, every request but the operational endpoints answers 503 (so a
     * balancer with passive health checks takes this instance out).
     */
    http_ready_fn *gate;
    /* proxies whose X-Forwarded-For names the client in the access log ("" or NULL: none) */
    const char *trusted_proxies;
    http_authorize_fn *authorize; /* may be NULL: every request is let through */
    /* when len > 0, GET /metrics needs "Authorization: Bearer <token>" (else 401) */
    const struct secret *metrics_token;
    unsigned workers;          /* threads for ROUTE_BLOCKING handlers when thread_pool > 0 */
    void (*thread_exit)(void); /* run by each worker thread as it exits (library cleanup) */
};

/*
 * http_server_start binds and starts serving. E_INVALID for a bad listen
 * address, E_IO if it cannot bind. Blocked signals are inherited by the
 * server's threads: block SIGTERM/SIGINT/SIGPIPE before calling.
 */
int http_server_start(const struct http_server_opts *opts, struct http_server **out);

/* http_server_port is the bound port (useful with port 0). */
unsigned http_server_port(const struct http_server *srv);

/*
 * http_server_stop stops accepting, gives requests in flight up to grace_ms
 * to finish, then closes every connection and frees srv. NULL is fine.
 */
void http_server_stop(struct http_server *srv, int64_t grace_ms);

/* http_rid_valid tells whether a client's X-Request-Id may be reused: [A-Za-z0-9._-]{1,64}. */
bool http_rid_valid(const char *s);

/* --- the request, for handlers --- */

void *http_app(const struct http_req *req);
unsigned http_method(const struct http_req *req);
struct str http_path(const struct http_req *req);
/* http_target is the request target as the client sent it (path and query, not decoded). */
const char *http_target(const struct http_req *req);
/* http_method_name is the request's method as sent ("GET", "PUT", ...). */
const char *http_method_name(const struct http_req *req);
/* http_param is the i-th "*" segment captured by the route pattern. */
struct str http_param(const struct http_req *req, size_t i);
/* http_header returns a request header (case-insensitive name) or NULL. */
const char *http_header(const struct http_req *req, const char *name);
/* http_query returns a decoded query argument or NULL. */
const char *http_query(const struct http_req *req, const char *name);
const char *http_request_id(const struct http_req *req);
/* http_client_addr writes the connecting peer's address as text ("?" if unknown). */
void http_client_addr(const struct http_req *req, char *out, size_t cap);
/*
 * http_inline tells a handler of a ROUTE_TRY_INLINE route that it runs on an
 * epoll thread, which it must not block: it answers from what it holds in
 * memory or on local disk, or calls http_defer and returns without an answer.
 * The request then goes to a worker thread, where the handler is called again
 * with http_inline false (headers set before http_defer are dropped).
 */
bool http_inline(const struct http_req *req);
void http_defer(struct http_req *req);
/* http_body_path is the file holding the upload body (ROUTE_BODY_UPLOAD), its length in bytes. */
const char *http_body_path(const struct http_req *req);
uint64_t http_body_len(const struct http_req *req);

/* --- the answer --- */

/* http_set_header adds a response header (both strings copied). */
void http_set_header(struct http_req *req, const char *name, const char *value);

/* http_reply_json answers status with the JSON of j (stolen) and Cache-Control: no-store. */
void http_reply_json(struct http_req *req, int status, json_t *j);

/* http_reply_error answers the JSON error of API.md for rc with a formatted message. */
void http_reply_error(struct http_req *req, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* http_reply_fd answers len bytes of fd from off (sendfile; up to 16 KiB read and sent with the
 * headers in one go); takes fd. */
void http_reply_fd(struct http_req *req, int status, int fd, uint64_t off, uint64_t len);

/* http_reply_buf answers a copy of len bytes with the content type. */
void http_reply_buf(struct http_req *req, int status, const char *content_type, const void *p,
                    size_t len);

/* http_reply_empty answers status with no body (204, 304). */
void http_reply_empty(struct http_req *req, int status);

#endif
