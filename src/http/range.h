/*
 * range.h - the Range and If-None-Match request headers (RFC 9110).
 */
#ifndef HTTP_RANGE_H
#define HTTP_RANGE_H

#include <stdbool.h>
#include <stdint.h>

/*
 * http_range_parse reads a Range header for a representation of size bytes.
 * OK with [*first, *last] (inclusive) for one satisfiable range; E_RANGE when
 * it is syntactically fine but unsatisfiable (answer 416); E_INVALID when the
 * header should be ignored (not bytes=, several ranges, malformed): answer 200.
 */
int http_range_parse(const char *header, uint64_t size, uint64_t *first, uint64_t *last);

/*
 * http_etag_match tells whether an If-None-Match header matches the strong
 * entity tag etag (given without quotes): "*" or any listed tag, weak or not.
 */
bool http_etag_match(const char *header, const char *etag);

#endif
