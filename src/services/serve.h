/*
 * serve.h - the service roles: serve (everything in one process), read, write.
 */
#ifndef SERVICES_SERVE_H
#define SERVICES_SERVE_H

#include "config/config.h"

/*
 * serve_run opens the embedded stores under storage.data_dir, serves until
 * SIGTERM or SIGINT, then drains requests in flight and returns OK. Returns
 * an error if it cannot start (the reason is logged).
 */
int serve_run(const struct config *cfg);

#define SERVICE_READ  (1u << 0) /* GET/HEAD of the API: bytes, variants, metadata, listings */
#define SERVICE_WRITE (1u << 1) /* POST/DELETE of the API: uploads and deletes */
#define SERVICE_JOBS  (1u << 2) /* job threads (variants, blob release) in the process */
#define SERVICE_WEB   (1u << 3) /* the web page at / */
#define SERVICE_ALL   (SERVICE_READ | SERVICE_WRITE | SERVICE_JOBS | SERVICE_WEB)

/*
 * service_run serves the given parts of the service (SERVICE_*) until SIGTERM
 * or SIGINT; role names it in logs. `tessera read` is SERVICE_READ, `tessera
 * write` SERVICE_WRITE, `tessera serve` all of them.
 */
int service_run(const struct config *cfg, unsigned parts, const char *role);

#endif
