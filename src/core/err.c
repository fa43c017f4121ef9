/*
 * err.c - names and HTTP statuses of the program's status codes.
 *
 * The single mapping from status codes to HTTP statuses and API error codes.
 */
#include "core/err.h"

#include <stddef.h>

struct err_info {
    int rc;
    int http;
    const char *code;
    const char *text;
};

static const struct err_info err_table[] = {
    {OK, 200, "ok", "ok"},
    {E_INVALID, 400, "bad_request", "invalid request"},
    {E_NOTFOUND, 404, "not_found", "not found"},
    {E_TOOBIG, 413, "payload_too_large", "payload too large"},
    {E_UNSUPPORTED, 415, "unsupported_media_type", "unsupported media type"},
    {E_BADIMAGE, 422, "unprocessable_image", "unprocessable image"},
    {E_UNAVAILABLE, 503, "unavailable", "service unavailable"},
    {E_IO, 500, "internal", "i/o error"},
    {E_UNAUTHORIZED, 401, "unauthorized", "unauthorized"},
    {E_FORBIDDEN, 403, "forbidden", "forbidden"},
    {E_METHOD, 405, "method_not_allowed", "method not allowed"},
    {E_URITOOLONG, 414, "uri_too_long", "request target too long"},
    {E_RATELIMITED, 429, "rate_limited", "rate limited"},
    {E_EXISTS, 409, "conflict", "already exists"},
    {E_INTERNAL, 500, "internal", "internal error"},
    {E_RANGE, 416, "range_not_satisfiable", "range not satisfiable"},
    {E_NOSPACE, 503, "unavailable", "no space left on device"},
    {E_HEADERS, 431, "request_header_fields_too_large", "request headers too large"},
    {E_FULL, 507, "insufficient_storage", "storage node full"},
    {E_AGAIN, 500, "internal", "would block"},
};

static const struct err_info *err_find(int rc)
{
    for (size_t i = 0; i < sizeof(err_table) / sizeof(err_table[0]); i++) {
        if (err_table[i].rc == rc)
            return &err_table[i];
    }
    return err_find(E_INTERNAL);
}

const char *err_str(int rc)
{
    return err_find(rc)->text;
}

const char *err_code(int rc)
{
    return err_find(rc)->code;
}

int err_http_status(int rc)
{
    return err_find(rc)->http;
}
