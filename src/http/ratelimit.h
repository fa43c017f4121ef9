/*
 * ratelimit.h - token buckets keyed by a client identity (an API key or an address).
 *
 * A fixed table of buckets: memory is bounded whatever the number of clients;
 * identities that hash to the same slot share a bucket (stricter, never looser
 * than intended). Thread-safe (one mutex; the critical section is a few
 * arithmetic operations).
 */
#ifndef HTTP_RATELIMIT_H
#define HTTP_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RATELIMIT_SLOTS 4096

struct ratelimit;

/*
 * ratelimit_new makes a limiter of per_minute tokens a minute with room for
 * burst (>= 1). Returns NULL when per_minute is 0 (no limit).
 */
struct ratelimit *ratelimit_new(uint64_t per_minute, uint64_t burst);

void ratelimit_free(struct ratelimit *rl);

/*
 * ratelimit_take takes one token from the bucket of id (len bytes) at now_us
 * (a monotonic clock). True when allowed; false with *retry_after_s (>= 1)
 * the seconds until a token is back. A NULL rl allows everything.
 */
bool ratelimit_take(struct ratelimit *rl, const void *id, size_t len, int64_t now_us,
                    unsigned *retry_after_s);

/*
 * ratelimit_client_addr picks the address a request is accounted to: peer
 * (the connecting address, text), unless peer is listed in trusted (a comma-
 * separated list of addresses, "" for none) and xff (X-Forwarded-For, may be
 * NULL) is present, then the last address of xff (the one the trusted proxy
 * added). Writes at most cap bytes with a NUL into out.
 */
void ratelimit_client_addr(const char *peer, const char *xff, const char *trusted, char *out,
                           size_t cap);

#endif
