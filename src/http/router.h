/*
 * router.h - method + path pattern to handler, with 404 and 405 + Allow.
 *
 * Patterns are '/'-separated; a segment "*" matches one non-empty segment and
 * captures it. The table is static and read-only: matching is thread-safe.
 */
#ifndef HTTP_ROUTER_H
#define HTTP_ROUTER_H

#include "core/str.h"

#include <stddef.h>

enum http_method {
    HTTP_GET = 1 << 0,
    HTTP_HEAD = 1 << 1,
    HTTP_POST = 1 << 2,
    HTTP_PUT = 1 << 3,
    HTTP_DELETE = 1 << 4,
    HTTP_OPTIONS = 1 << 5,
    HTTP_OTHER = 1 << 6,
};

#define ROUTER_MAX_PARAMS 4

struct http_req;
typedef void http_handler_fn(struct http_req *req);

struct route {
    unsigned methods; /* HTTP_GET also admits HEAD */
    const char *pattern;
    const char *name; /* label for metrics and logs */
    http_handler_fn *handler;
    unsigned flags; /* ROUTE_* */
};

#define ROUTE_BODY_UPLOAD (1u << 0) /* stream the body (raw or multipart part "file") to a file */
#define ROUTE_BLOCKING    (1u << 1) /* the handler may block: run it off the epoll threads */
/* with ROUTE_BLOCKING: try it on the epoll thread first; the handler calls http_defer to move */
#define ROUTE_TRY_INLINE (1u << 2)

struct route_match {
    const struct route *route; /* NULL: no route for this method (see status) */
    int status;                /* OK, E_NOTFOUND or E_METHOD */
    unsigned allow;            /* methods the path admits, for Allow */
    size_t nparams;
    struct str params[ROUTER_MAX_PARAMS];
};

/* http_method_parse maps a method name to its bit; HTTP_OTHER if unknown. */
unsigned http_method_parse(const char *name);

/* http_allow_format writes the Allow header value of a method mask into buf. */
void http_allow_format(unsigned methods, char *buf, size_t cap);

/*
 * router_match finds the route of n entries for method and path (no query).
 * A path matched by some pattern but not for this method gives E_METHOD with
 * allow set; no pattern at all gives E_NOTFOUND.
 */
void router_match(const struct route *routes, size_t n, unsigned method, struct str path,
                  struct route_match *m);

#endif
