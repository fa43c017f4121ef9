/*
 * api.h - the image API of API.md: upload, metadata, listing, delete, bytes, variants.
 *
 * The handlers are shared by every role that serves them; they reach the
 * stores only through the meta and blob interfaces.
 */
#ifndef SERVICES_API_H
#define SERVICES_API_H

#include "config/config.h"
#include "http/router.h"

#include <jansson.h>
#include <pthread.h>
#include <stddef.h>

struct meta_store;
struct blob_store;
struct cache;
struct ratelimit;
struct cdn;

#define API_VARIANT_FLIGHTS 64

/* One variant being made; others asking for it wait instead of making it again. */
struct api_flight {
    char image_id[33];
    char name[32];
    int waiters;
    bool busy;
};

struct api {
    const struct config *cfg;
    struct meta_store *meta;
    struct blob_store *blobs;
    struct cache *cache;         /* metadata cache (LRU, Redis); NULL: none; owned by the runner */
    struct ratelimit *upload_rl; /* limits.upload_rate; NULL: no limit */
    char base_url[512];          /* public URLs: cdn.base_url, server.public_url or http://listen */
    struct cdn *cdn;             /* the purger of cdn.purger; NULL: none (purge jobs do nothing) */
    pthread_mutex_t lock;
    pthread_cond_t flight_done;
    struct api_flight flights[API_VARIANT_FLIGHTS];
    pthread_mutex_t work_lock; /* bounds concurrent decodes: memory stays bounded */
    pthread_cond_t work_free;
    int work_running;
};

/* api_init prepares a with the stores (borrowed, not freed by api_release). */
void api_init(struct api *a, const struct config *cfg, struct meta_store *meta,
              struct blob_store *blobs);
void api_release(struct api *a);

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

struct meta_job;

/*
 * api_job_run is the job handler (jobs_handler_fn) of every role that runs
 * jobs: "variants" makes an image's missing preset variants with the code the
 * variant route uses; "release" removes a blob nothing references (under the
 * store's release protocol). Idempotent; may block.
 */
int api_job_run(void *app, const struct meta_job *job, char *err, size_t cap);

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
