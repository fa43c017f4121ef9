/*
 * admin.h - the operators' status page (/admin) of the HTTP services.
 *
 * GET /admin and /admin/admin.{js,css} serve the page (no data, strict CSP);
 * GET /admin/status answers the cluster as this service and the Prometheus of
 * admin.prometheus_url see it, for an admin key only (401 without one; 404
 * when auth.admin_keys is empty). Handlers expect http_app() to be a struct api.
 */
#ifndef SERVICES_ADMIN_H
#define SERVICES_ADMIN_H

#include "http/router.h"

#include <stddef.h>

/* admin_routes_with copies base (n routes) then the status page's routes into out (capacity cap).
 */
size_t admin_routes_with(const struct route *base, size_t n, struct route *out, size_t cap);

#endif
