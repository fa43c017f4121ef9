/*
 * web.c - serves the embedded page: "/" is index.html, "/web/NAME" any file.
 *
 * Every answer carries the page's CSP (no inline script or style, nothing
 * from another origin but the image hosts), nosniff and an ETag made at
 * build time; Cache-Control: no-cache makes browsers revalidate (304).
 */
#include "services/web.h"

#include "core/err.h"
#include "core/log.h"
#include "http/http.h"
#include "http/range.h"

#include <stdio.h>
#include <string.h>

#define WEB_CSP_MAX 1024

static char web_policy[WEB_CSP_MAX] =
    "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'";

static const struct {
    const char *ext;
    const char *mime;
} web_types[] = {
    {".html", "text/html; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".svg", "image/svg+xml"},
    {".png", "image/png"},
    {".ico", "image/x-icon"},
    {".json", "application/json"},
    {".txt", "text/plain; charset=utf-8"},
};

/* web_origin writes the origin (scheme://host[:port]) of url into out; false if it has none. */
static bool web_origin(const char *url, char *out, size_t cap)
{
    const char *p = strstr(url, "://");
    size_t n;

    if (p == NULL || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0))
        return false;
    p += 3;
    n = strcspn(p, "/?#");
    if (n == 0)
        return false;
    /* only characters of a host and port may reach the header */
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == ':' || c == '[' || c == ']'))
            return false;
    }
    n += (size_t)(p - url);
    if (n + 1 > cap)
        return false;
    memcpy(out, url, n);
    out[n] = '\0';
    return true;
}

void web_init(const struct config *cfg)
{
    char cdn[256] = "", pub[256] = "";
    const char *urls[2] = {cfg->cdn.base_url, cfg->server.public_url};
    char *origins[2] = {cdn, pub};

    for (size_t i = 0; i < 2; i++) {
        if (urls[i] != NULL && urls[i][0] != '\0' && !web_origin(urls[i], origins[i], 256))
            log_warn("web", "\"%s\" has no usable origin; the page may not show its images",
                     urls[i]);
    }
    snprintf(web_policy, sizeof(web_policy),
             "default-src 'self'; img-src 'self' blob: data:%s%s%s%s; object-src 'none'; "
             "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
             cdn[0] ? " " : "", cdn, pub[0] ? " " : "", pub);
}

const char *web_csp(void)
{
    return web_policy;
}

const struct web_asset *web_asset_find(const char *name, size_t n)
{
    for (size_t i = 0; i < web_nassets; i++) {
        if (strlen(web_assets[i].name) == n && memcmp(web_assets[i].name, name, n) == 0)
            return &web_assets[i];
    }
    return NULL;
}

static const char *web_mime(const char *name)
{
    const char *dot = strrchr(name, '.');

    for (size_t i = 0; dot != NULL && i < sizeof(web_types) / sizeof(web_types[0]); i++) {
        if (strcmp(dot, web_types[i].ext) == 0)
            return web_types[i].mime;
    }
    return "application/octet-stream";
}

void web_asset_send(struct http_req *req, const struct web_asset *a, const char *csp)
{
    const char *inm = http_header(req, "If-None-Match");

    http_set_header(req, "ETag", a->etag);
    http_set_header(req, "Cache-Control", "no-cache");
    http_set_header(req, "X-Content-Type-Options", "nosniff");
    http_set_header(req, "Content-Security-Policy", csp);
    http_set_header(req, "Referrer-Policy", "same-origin");
    http_set_header(req, "X-Frame-Options", "DENY");
    /* the ETag is quoted hex: strip the quotes for the shared matcher */
    if (inm != NULL) {
        char bare[64];
        snprintf(bare, sizeof(bare), "%.*s", (int)strlen(a->etag) - 2, a->etag + 1);
        if (http_etag_match(inm, bare)) {
            http_reply_empty(req, 304);
            return;
        }
    }
    http_reply_buf(req, 200, web_mime(a->name), a->data, a->len);
}

static void h_web_index(struct http_req *req)
{
    const struct web_asset *a = web_asset_find("index.html", 10);

    if (a == NULL) {
        http_reply_error(req, E_NOTFOUND, "this build has no web page");
        return;
    }
    web_asset_send(req, a, web_policy);
}

static void h_web_file(struct http_req *req)
{
    struct str name = http_param(req, 0);
    const struct web_asset *a = web_asset_find(name.p, name.len);

    if (a == NULL) {
        http_reply_error(req, E_NOTFOUND, "no such file");
        return;
    }
    web_asset_send(req, a, web_policy);
}

static const struct route web_routes[] = {
    {HTTP_GET, "/", "web", h_web_index, 0},
    {HTTP_GET, "/web/*", "web_file", h_web_file, 0},
};

size_t web_routes_with(const struct route *base, size_t n, struct route *out, size_t cap)
{
    size_t k = 0;

    for (size_t i = 0; i < n && k < cap; i++)
        out[k++] = base[i];
    for (size_t i = 0; i < sizeof(web_routes) / sizeof(web_routes[0]); i++) {
        if (k == cap) {
            log_error("web", "route table full: %s left out", web_routes[i].pattern);
            continue;
        }
        out[k++] = web_routes[i];
    }
    return k;
}
