/*
 * web.h - the upload and gallery page (web/), embedded in the binary.
 *
 * The files of web/ are compiled in at build time (cmake/embed_web.cmake) and
 * served read-only at "/" (index.html) and "/web/NAME" with a strict
 * Content-Security-Policy, nosniff and ETag revalidation. The cluster's nginx
 * serves the same files from web/ on disk.
 */
#ifndef SERVICES_WEB_H
#define SERVICES_WEB_H

#include "config/config.h"
#include "http/router.h"

#include <stddef.h>

/* One embedded file: its name under web/, its bytes and a quoted ETag. */
struct web_asset {
    const char *name;
    const unsigned char *data;
    size_t len;
    const char *etag;
};

/* The generated table (web_assets.c in the build directory). */
extern const struct web_asset web_assets[];
extern const size_t web_nassets;

#define WEB_MAX_ROUTES 32

/*
 * web_init builds the page's Content-Security-Policy from cfg (images may
 * also come from cdn.base_url and server.public_url). Call it once before the
 * server starts; the handlers only read what it built (thread-safe after).
 */
void web_init(const struct config *cfg);

/* web_csp is the policy web_init built (for tests and logs). */
const char *web_csp(void);

/* web_asset_find returns the embedded file called name (length n), or NULL. */
const struct web_asset *web_asset_find(const char *name, size_t n);

/*
 * web_routes_with writes base's n routes followed by the page's routes into
 * out (cap entries) and returns how many it wrote; routes that do not fit are
 * left out and logged. out must outlive the server that uses it.
 */
size_t web_routes_with(const struct route *base, size_t n, struct route *out, size_t cap);

struct http_req;

/*
 * web_asset_send answers a (200, or 304 when If-None-Match names its ETag) with
 * the page headers: csp as Content-Security-Policy, nosniff, no framing.
 */
void web_asset_send(struct http_req *req, const struct web_asset *a, const char *csp);

#endif
