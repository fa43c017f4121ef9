/*
 * prom.h - a client of the Prometheus HTTP API: instant and range queries.
 *
 * The status page (/admin) asks the Prometheus that scrapes the cluster for
 * what no single process knows: every instance's health and the request and
 * error rates over the last minutes. libcurl stays in this module.
 */
#ifndef PROM_PROM_H
#define PROM_PROM_H

#include <jansson.h>
#include <stdint.h>

/*
 * prom_query runs expr against the Prometheus at base_url (http(s)://host:port,
 * no trailing /): an instant query when range_s is 0, else a range query over
 * the last range_s seconds with a point every step_s. Returns the "result"
 * array of the answer (a new reference: the caller json_decref()s it), or NULL
 * when Prometheus did not answer with success within timeout_ms (logged once
 * per call). Blocks; thread-safe.
 */
json_t *prom_query(const char *base_url, const char *expr, int64_t range_s, int64_t step_s,
                   long timeout_ms);

#endif
