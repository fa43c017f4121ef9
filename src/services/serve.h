/*
 * serve.h - the single-node role: read + write + worker in one process.
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

#endif
