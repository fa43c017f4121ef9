/*
 * api.h - the image API of API.md over HTTP: upload, metadata, listing,
 * delete, bytes, variants.
 *
 * The handlers are shared by every role that serves them; each parses and
 * authenticates, calls a use case of app/ and writes the answer.
 */
#ifndef SERVICES_API_H
#define SERVICES_API_H

#include "config/config.h"
#include "http/router.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct meta_store;
struct blob_store;
struct ratelimit;
struct runtime;
struct cache;
struct http_req;
struct app;

/* The HTTP face of the use cases of one process. */
struct api {
    const struct config *cfg;
    struct app *app;             /* the use cases (borrowed) */
    struct meta_store *meta;     /* for readiness and metrics (borrowed) */
    struct blob_store *blobs;    /* bytes are sent from here (borrowed) */
    struct cache *cache;         /* the metadata cache, for the status page (borrowed; NULL) */
    const char *role;            /* "serve", "read", "write": for the status page */
    struct ratelimit *upload_rl; /* limits.upload_rate; NULL: no limit */
    char base_url[512];          /* public URLs: cdn.base_url, server.public_url or http://listen */
};

/* api_init prepares a over app and the stores of rt (both borrowed; not freed by api_release). */
void api_init(struct api *a, const struct runtime *rt, struct app *app);
void api_release(struct api *a);

/* api_is_admin tells whether the request carries an admin key (Authorization: Bearer). */
bool api_is_admin(const struct api *a, const struct http_req *req);

/* api_split_ext splits "name.ext" at its last dot; ext is empty when there is none. */
void api_split_ext(struct str s, struct str *name, struct str *ext);

/* The routes of the API; each handler expects http_app() to be a struct api. */
extern const struct route api_routes[];
extern const size_t api_nroutes;

/*
 * api_routes_build copies into out (capacity cap) the API routes that admit
 * one of methods (HTTP_GET | HTTP_POST | ...: a role serves a subset), marking
 * the read routes ROUTE_BLOCKING when a's stores may wait on the network.
 * Returns how many were written.
 */
size_t api_routes_build(const struct api *a, unsigned methods, struct route *out, size_t cap);

/* api_ready_detail: each database server (reachable, usable, lag) for /readyz. */
json_t *api_ready_detail(void *app);

/*
 * api_gate: OK while the metadata store answers; while it does not, the
 * service answers 503 to its traffic so the balancer takes it out (storage
 * shards are not part of it: reads fail over between replicas per request).
 */
int api_gate(void *app, char *why, size_t cap);

/* api_ready: OK when the metadata store and the blob store can serve (readiness). */
int api_ready(void *app, char *why, size_t cap);

#endif
