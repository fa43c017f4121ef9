/*
 * err.h - the one status enum of the program.
 *
 * Every fallible function returns OK (0) or one of these negative codes; the
 * HTTP status of an answer is chosen from them in exactly one place (http/).
 */
#ifndef CORE_ERR_H
#define CORE_ERR_H

enum err {
    OK = 0,
    E_INVALID = -1,      /* malformed input from a client: 400 */
    E_NOTFOUND = -2,     /* no such thing (or deleted): 404 */
    E_TOOBIG = -3,       /* a body over its limit: 413 */
    E_UNSUPPORTED = -4,  /* not an accepted image type: 415 */
    E_BADIMAGE = -5,     /* corrupt, truncated, too many pixels or frames: 422 */
    E_UNAVAILABLE = -6,  /* a dependency is down (storage, database): 503 */
    E_IO = -7,           /* local I/O failed: 500 */
    E_UNAUTHORIZED = -8, /* no or bad credentials: 401 */
    E_FORBIDDEN = -9,    /* credentials that may not do this: 403 */
    E_METHOD = -10,      /* method not allowed: 405 */
    E_URITOOLONG = -11,  /* request target over the limit: 414 */
    E_RATELIMITED = -12, /* too many requests: 429 */
    E_EXISTS = -13,      /* already there (idempotent callers treat it as OK) */
    E_INTERNAL = -14,    /* a bug or an unexpected library failure: 500 */
    E_RANGE = -15,       /* unsatisfiable byte range: 416 */
    E_NOSPACE = -16,     /* disk full: 507 on storage, 503 to clients */
    E_HEADERS = -17,     /* request headers over the limit: 431 */
    E_FULL = -18,        /* a storage node's disk is full: 507 (its clients try another) */
    E_AGAIN = -19,       /* needs a blocking call: ask again off the event thread (never sent) */
};

/* err_str returns a static lowercase description of rc ("ok" for OK). */
const char *err_str(int rc);

/* err_code returns the API.md error code string of rc, e.g. "not_found". */
const char *err_code(int rc);

/* err_http_status returns the HTTP status that answers rc. */
int err_http_status(int rc);

#endif
