/*
 * test_router.c - unit tests of http/router (matching, 404/405 + Allow), the
 * status-to-HTTP mapping of core/err (API.md's error table) and http_rid_valid.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
/* above: what cmocka.h needs before it, kept apart from the sorted block below */
#include "core/err.h"
#include "core/str.h"
#include "http/http.h"
#include "http/router.h"

#include <cmocka.h>
#include <stdint.h>
#include <string.h>

static void h_list(struct http_req *req)
{
    (void)req;
}

static void h_upload(struct http_req *req)
{
    (void)req;
}

static void h_get(struct http_req *req)
{
    (void)req;
}

static void h_delete(struct http_req *req)
{
    (void)req;
}

static void h_image(struct http_req *req)
{
    (void)req;
}

static void h_variant(struct http_req *req)
{
    (void)req;
}

static void h_four(struct http_req *req)
{
    (void)req;
}

static void h_five(struct http_req *req)
{
    (void)req;
}

static const struct route routes[] = {
    {HTTP_GET, "/api/v1/images", "list", h_list, 0},
    {HTTP_POST, "/api/v1/images", "upload", h_upload, ROUTE_BODY_UPLOAD},
    {HTTP_GET, "/api/v1/images/*", "get", h_get, 0},
    {HTTP_DELETE, "/api/v1/images/*", "delete", h_delete, 0},
    {HTTP_GET, "/i/*/*", "variant", h_variant, 0},
    {HTTP_GET, "/i/*", "image", h_image, 0},
    {HTTP_PUT | HTTP_OPTIONS, "/a/*/b/*/*/*", "four", h_four, 0},
    {HTTP_GET, "/x/*/*/*/*/*", "five", h_five, 0}, /* more "*" than ROUTER_MAX_PARAMS */
};
#define N_ROUTES (sizeof(routes) / sizeof(routes[0]))

static void match(unsigned method, const char *path, struct route_match *m)
{
    router_match(routes, N_ROUTES, method, str_from(path), m);
}

static void assert_param(const struct route_match *m, size_t i, const char *want)
{
    assert_true(i < m->nparams);
    assert_int_equal(m->params[i].len, strlen(want));
    assert_memory_equal(m->params[i].p, want, strlen(want));
}

static void test_exact_match(void **state)
{
    struct route_match m;

    (void)state;
    match(HTTP_GET, "/api/v1/images", &m);
    assert_int_equal(m.status, OK);
    assert_ptr_equal(m.route, &routes[0]);
    assert_ptr_equal(m.route->handler, h_list);
    assert_int_equal(m.nparams, 0);
    assert_int_equal(m.allow, HTTP_GET | HTTP_HEAD | HTTP_POST);

    match(HTTP_POST, "/api/v1/images", &m);
    assert_int_equal(m.status, OK);
    assert_ptr_equal(m.route, &routes[1]);
    assert_true(m.route->flags & ROUTE_BODY_UPLOAD);
}

static void test_get_implies_head(void **state)
{
    struct route_match m;

    (void)state;
    match(HTTP_HEAD, "/api/v1/images", &m);
    assert_int_equal(m.status, OK);
    assert_ptr_equal(m.route, &routes[0]);
    match(HTTP_HEAD, "/i/abc/thumb.webp", &m);
    assert_int_equal(m.status, OK);
    assert_ptr_equal(m.route, &routes[4]);
    /* HEAD is not implied by anything else */
    match(HTTP_HEAD, "/a/1/b/2/3/4", &m);
    assert_int_equal(m.status, E_METHOD);
}

static void test_star_captures(void **state)
{
    struct route_match m;
    const char *path = "/api/v1/images/Zk3v9QxT2bA";

    (void)state;
    match(HTTP_GET, path, &m);
    assert_int_equal(m.status, OK);
    assert_ptr_equal(m.route, &routes[2]);
    assert_int_equal(m.nparams, 1);
    assert_param(&m, 0, "Zk3v9QxT2bA");
    /* a view into the path, not a copy */
    assert_ptr_equal(m.params[0].p, path + strlen("/api/v1/images/"));
    assert_int_equal(m.allow, HTTP_GET | HTTP_HEAD | HTTP_DELETE);

    match(HTTP_DELETE, path, &m);
    assert_int_equal(m.status, OK);
    assert_ptr_equal(m.route, &routes[3]);
    assert_param(&m, 0, "Zk3v9QxT2bA");

    match(HTTP_GET, "/i/Zk3v9QxT2bA.jpg", &m);
    assert_ptr_equal(m.route, &routes[5]);
    assert_int_equal(m.nparams, 1);
    assert_param(&m, 0, "Zk3v9QxT2bA.jpg");

    match(HTTP_GET, "/i/Zk3v9QxT2bA/thumb.webp", &m);
    assert_ptr_equal(m.route, &routes[4]);
    assert_int_equal(m.nparams, 2);
    assert_param(&m, 0, "Zk3v9QxT2bA");
    assert_param(&m, 1, "thumb.webp");

    match(HTTP_PUT, "/a/1/b/22/333/4444", &m);
    assert_int_equal(m.status, OK);
    assert_ptr_equal(m.route, &routes[6]);
    assert_int_equal(m.nparams, ROUTER_MAX_PARAMS);
    assert_param(&m, 0, "1");
    assert_param(&m, 1, "22");
    assert_param(&m, 2, "333");
    assert_param(&m, 3, "4444");
}

static void test_too_many_params_never_match(void **state)
{
    struct route_match m;

    (void)state;
    match(HTTP_GET, "/x/1/2/3/4/5", &m);
    assert_int_equal(m.status, E_NOTFOUND);
    assert_null(m.route);
    assert_true(m.nparams <= ROUTER_MAX_PARAMS);
}

static void test_empty_segment_not_matched(void **state)
{
    static const char *const paths[] = {
        "/api/v1/images/", "/i/", "/i//thumb.webp", "/i/abc/", "/a//b/1/2/3", "/a/1/b/2/3/",
    };
    struct route_match m;

    (void)state;
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        match(HTTP_GET, paths[i], &m);
        assert_int_equal(m.status, E_NOTFOUND);
        assert_null(m.route);
        assert_int_equal(m.allow, 0);
    }
}

static void test_trailing_slash_and_prefixes(void **state)
{
    static const char *const paths[] = {
        "/api/v1/images/abc/",
        "/api/v1/images/abc/def",
        "/api/v1/imagesX",
        "/api/v1/image",
        "/api/v1",
        "/api/v1/images?limit=5", /* the router gets the path without its query */
        "api/v1/images",
        "//api/v1/images",
        "/API/v1/images",
        "/",
        "",
        "/i/a/b/c",
    };
    struct route_match m;

    (void)state;
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        match(HTTP_GET, paths[i], &m);
        assert_int_equal(m.status, E_NOTFOUND);
        assert_null(m.route);
    }
    /* "/api/v1/images/" is an empty id, not the listing */
    match(HTTP_GET, "/api/v1/images/", &m);
    assert_int_equal(m.status, E_NOTFOUND);
}

static void test_method_not_allowed(void **state)
{
    struct route_match m;
    char allow[128];

    (void)state;
    match(HTTP_PUT, "/api/v1/images", &m);
    assert_int_equal(m.status, E_METHOD);
    assert_null(m.route);
    assert_int_equal(m.allow, HTTP_GET | HTTP_HEAD | HTTP_POST);
    http_allow_format(m.allow, allow, sizeof(allow));
    assert_string_equal(allow, "GET, HEAD, POST");

    match(HTTP_POST, "/api/v1/images/abc", &m);
    assert_int_equal(m.status, E_METHOD);
    http_allow_format(m.allow, allow, sizeof(allow));
    assert_string_equal(allow, "GET, HEAD, DELETE");

    match(HTTP_OTHER, "/i/abc", &m);
    assert_int_equal(m.status, E_METHOD);
    assert_int_equal(m.allow, HTTP_GET | HTTP_HEAD);

    match(HTTP_DELETE, "/i/abc", &m);
    assert_int_equal(m.status, E_METHOD);

    match(HTTP_GET, "/a/1/b/2/3/4", &m);
    assert_int_equal(m.status, E_METHOD);
    assert_int_equal(m.allow, HTTP_PUT | HTTP_OPTIONS);
}

static void test_not_found_and_empty_table(void **state)
{
    struct route_match m;

    (void)state;
    match(HTTP_GET, "/nope", &m);
    assert_int_equal(m.status, E_NOTFOUND);
    assert_null(m.route);
    assert_int_equal(m.allow, 0);
    assert_int_equal(m.nparams, 0);

    router_match(routes, 0, HTTP_GET, STR_LIT("/api/v1/images"), &m);
    assert_int_equal(m.status, E_NOTFOUND);
    assert_null(m.route);
    router_match(NULL, 0, HTTP_GET, STR_LIT("/"), &m);
    assert_int_equal(m.status, E_NOTFOUND);
}

static void test_first_route_wins(void **state)
{
    static const struct route dup[] = {
        {HTTP_GET, "/v/*", "first", h_get, 0},
        {HTTP_GET | HTTP_POST, "/v/*", "second", h_list, 0},
        {HTTP_GET, "/v/fixed", "third", h_image, 0},
    };
    struct route_match m;

    (void)state;
    router_match(dup, 3, HTTP_GET, STR_LIT("/v/fixed"), &m);
    assert_int_equal(m.status, OK);
    assert_ptr_equal(m.route, &dup[0]);
    assert_param(&m, 0, "fixed");
    assert_int_equal(m.allow, HTTP_GET | HTTP_HEAD | HTTP_POST);
    router_match(dup, 3, HTTP_POST, STR_LIT("/v/fixed"), &m);
    assert_ptr_equal(m.route, &dup[1]);
    assert_int_equal(m.nparams, 1);
}

static void test_path_not_nul_terminated(void **state)
{
    struct route_match m;
    const char buf[] = "/api/v1/images/abcdef";

    (void)state;
    /* a view of the first 14 bytes is "/api/v1/images" */
    router_match(routes, N_ROUTES, HTTP_GET, (struct str){buf, 14}, &m);
    assert_int_equal(m.status, OK);
    assert_ptr_equal(m.route, &routes[0]);
    router_match(routes, N_ROUTES, HTTP_GET, (struct str){buf, 18}, &m);
    assert_ptr_equal(m.route, &routes[2]);
    assert_param(&m, 0, "abc");
}

static void test_method_parse(void **state)
{
    (void)state;
    assert_int_equal(http_method_parse("GET"), HTTP_GET);
    assert_int_equal(http_method_parse("HEAD"), HTTP_HEAD);
    assert_int_equal(http_method_parse("POST"), HTTP_POST);
    assert_int_equal(http_method_parse("PUT"), HTTP_PUT);
    assert_int_equal(http_method_parse("DELETE"), HTTP_DELETE);
    assert_int_equal(http_method_parse("OPTIONS"), HTTP_OPTIONS);
    /* methods are case-sensitive (RFC 9110 9.1) */
    assert_int_equal(http_method_parse("get"), HTTP_OTHER);
    assert_int_equal(http_method_parse("PATCH"), HTTP_OTHER);
    assert_int_equal(http_method_parse("TRACE"), HTTP_OTHER);
    assert_int_equal(http_method_parse("GETX"), HTTP_OTHER);
    assert_int_equal(http_method_parse(""), HTTP_OTHER);
}

static void test_allow_format(void **state)
{
    char buf[128];

    (void)state;
    http_allow_format(0, buf, sizeof(buf));
    assert_string_equal(buf, "");
    http_allow_format(HTTP_GET, buf, sizeof(buf));
    assert_string_equal(buf, "GET, HEAD");
    http_allow_format(HTTP_HEAD, buf, sizeof(buf));
    assert_string_equal(buf, "HEAD");
    http_allow_format(HTTP_POST, buf, sizeof(buf));
    assert_string_equal(buf, "POST");
    http_allow_format(HTTP_GET | HTTP_DELETE, buf, sizeof(buf));
    assert_string_equal(buf, "GET, HEAD, DELETE");
    http_allow_format(HTTP_DELETE | HTTP_PUT | HTTP_POST, buf, sizeof(buf));
    assert_string_equal(buf, "POST, PUT, DELETE");
    http_allow_format(HTTP_GET | HTTP_HEAD | HTTP_POST | HTTP_PUT | HTTP_DELETE | HTTP_OPTIONS, buf,
                      sizeof(buf));
    assert_string_equal(buf, "GET, HEAD, POST, PUT, DELETE, OPTIONS");
    http_allow_format(HTTP_OTHER, buf, sizeof(buf));
    assert_string_equal(buf, "");
    http_allow_format(HTTP_OTHER | HTTP_OPTIONS, buf, sizeof(buf));
    assert_string_equal(buf, "OPTIONS");
}

static void test_allow_format_small_buffer(void **state)
{
    char buf[32];

    (void)state;
    for (size_t cap = 1; cap <= 12; cap++) {
        memset(buf, '#', sizeof(buf));
        http_allow_format(HTTP_GET | HTTP_POST | HTTP_DELETE, buf, cap);
        assert_true(strlen(buf) < cap); /* always terminated inside the buffer */
        for (size_t i = cap; i < sizeof(buf); i++)
            assert_int_equal(buf[i], '#'); /* never written past cap */
        assert_memory_equal(buf, "GET, HEAD, POST, DELETE", strlen(buf));
    }
}

/* --- err: API.md's error table --- */

struct err_row {
    int rc;
    int status;
    const char *code;
};

static const struct err_row api_errors[] = {
    {E_INVALID, 400, "bad_request"},
    {E_UNAUTHORIZED, 401, "unauthorized"},
    {E_FORBIDDEN, 403, "forbidden"},
    {E_NOTFOUND, 404, "not_found"},
    {E_METHOD, 405, "method_not_allowed"},
    {E_TOOBIG, 413, "payload_too_large"},
    {E_UNSUPPORTED, 415, "unsupported_media_type"},
    {E_BADIMAGE, 422, "unprocessable_image"},
    {E_RATELIMITED, 429, "rate_limited"},
    {E_UNAVAILABLE, 503, "unavailable"},
};

static void test_err_api_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(api_errors) / sizeof(api_errors[0]); i++) {
        assert_int_equal(err_http_status(api_errors[i].rc), api_errors[i].status);
        assert_string_equal(err_code(api_errors[i].rc), api_errors[i].code);
    }
}

static void test_err_other_statuses(void **state)
{
    (void)state;
    assert_int_equal(err_http_status(OK), 200);
    assert_int_equal(err_http_status(E_URITOOLONG), 414);
    assert_int_equal(err_http_status(E_RANGE), 416);
    assert_int_equal(err_http_status(E_EXISTS), 409);
    assert_int_equal(err_http_status(E_IO), 500);
    assert_int_equal(err_http_status(E_INTERNAL), 500);
    assert_string_equal(err_code(E_INTERNAL), "internal");
    /* a full disk is the service being unavailable to a client, not a client error */
    assert_int_equal(err_http_status(E_NOSPACE), 503);
    assert_string_equal(err_code(E_NOSPACE), "unavailable");
    /* an unknown status is a bug: 500 internal */
    assert_int_equal(err_http_status(-999), 500);
    assert_string_equal(err_code(-999), "internal");
    assert_int_equal(err_http_status(7), 500);
    assert_non_null(err_str(-999));
}

static void test_err_strings(void **state)
{
    (void)state;
    assert_string_equal(err_str(OK), "ok");
    assert_string_not_equal(err_str(E_NOTFOUND), err_str(E_INVALID));
    for (int rc = OK; rc >= E_NOSPACE; rc--) {
        const char *s = err_str(rc);
        const char *c = err_code(rc);
        int st = err_http_status(rc);

        assert_non_null(s);
        assert_true(strlen(s) > 0);
        for (const char *p = s; *p; p++)
            assert_false(*p >= 'A' && *p <= 'Z'); /* lowercase, as in git's messages */
        assert_non_null(c);
        assert_true(strlen(c) > 0);
        assert_true(strspn(c, "abcdefghijklmnopqrstuvwxyz_") == strlen(c));
        assert_true(st >= 200 && st <= 599);
        if (rc != OK)
            assert_true(st >= 400);
    }
}

/* --- request ids --- */

static void test_rid_valid(void **state)
{
    char buf[80];

    (void)state;
    assert_true(http_rid_valid("a"));
    assert_true(http_rid_valid("abc123"));
    assert_true(http_rid_valid("req-1.2_3"));
    assert_true(http_rid_valid("0123456789abcdef"));
    assert_true(http_rid_valid("f47ac10b-58cc-4372-a567-0e02b2c3d479"));
    memset(buf, 'x', 64);
    buf[64] = '\0';
    assert_true(http_rid_valid(buf));
    buf[64] = 'x';
    buf[65] = '\0';
    assert_false(http_rid_valid(buf));

    assert_false(http_rid_valid(""));
    assert_false(http_rid_valid("has space"));
    assert_false(http_rid_valid(" lead"));
    assert_false(http_rid_valid("tab\there"));
    assert_false(http_rid_valid("new\nline"));
    assert_false(http_rid_valid("cr\r"));
    assert_false(http_rid_valid("a/b"));
    assert_false(http_rid_valid("a:b"));
    assert_false(http_rid_valid("a=b"));
    assert_false(http_rid_valid("a\"b"));
    assert_false(http_rid_valid("%41"));
    assert_false(http_rid_valid("caf\xc3\xa9"));
    assert_false(http_rid_valid("\x7f"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_match),
        cmocka_unit_test(test_get_implies_head),
        cmocka_unit_test(test_star_captures),
        cmocka_unit_test(test_too_many_params_never_match),
        cmocka_unit_test(test_empty_segment_not_matched),
        cmocka_unit_test(test_trailing_slash_and_prefixes),
        cmocka_unit_test(test_method_not_allowed),
        cmocka_unit_test(test_not_found_and_empty_table),
        cmocka_unit_test(test_first_route_wins),
        cmocka_unit_test(test_path_not_nul_terminated),
        cmocka_unit_test(test_method_parse),
        cmocka_unit_test(test_allow_format),
        cmocka_unit_test(test_allow_format_small_buffer),
        cmocka_unit_test(test_err_api_table),
        cmocka_unit_test(test_err_other_statuses),
        cmocka_unit_test(test_err_strings),
        cmocka_unit_test(test_rid_valid),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
