/*
 * test_cdn.c - unit tests of cdn/: the purgers' requests, without a network.
 *
 * The URL list of an image, the settings' validation, and for each purger the
 * requests it plans: methods, URLs, headers (tokens from the configuration or
 * the environment), JSON bodies; the varnish fallback to URL PURGEs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
/* above: what cmocka.h needs before it, kept apart from the sorted block below */
#include "cdn/cdn.h"
#include "config/config.h"
#include "core/err.h"

#include <cmocka.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char err[512];
static const char *ID = "AbCdEf123456";

/* load builds a configuration from flags ("section.key=value"); returns config_load's rc. */
static int load(struct config *cfg, char **flags, size_t n)
{
    config_init(cfg);
    err[0] = '\0';
    return config_load(cfg, NULL, NULL, flags, n, err, sizeof(err));
}

static const char *header_of(const struct cdn_req *r, const char *name)
{
    size_t len = strlen(name);

    for (size_t i = 0; i < r->n_headers; i++)
        if (strncasecmp(r->headers[i], name, len) == 0 && r->headers[i][len] == ':')
            return r->headers[i] + len + 2;
    return NULL;
}

static void test_settings_validated(void **state)
{
    struct config c;
    (void)state;
    char *bogus[] = {"cdn.purger=akamai"};
    char *no_urls[] = {"cdn.purger=varnish"};
    char *no_zone[] = {"cdn.purger=cloudflare"};
    char *no_service[] = {"cdn.purger=fastly"};
    char *ok[] = {"cdn.purger=http", "cdn.purge_urls=http://a:1, http://b:2/"};

    assert_int_equal(load(&c, bogus, 1), E_INVALID);
    assert_non_null(strstr(err, "cdn.purger"));
    config_release(&c);
    assert_int_equal(load(&c, no_urls, 1), E_INVALID);
    assert_non_null(strstr(err, "cdn.purge_urls"));
    config_release(&c);
    assert_int_equal(load(&c, no_zone, 1), E_INVALID);
    assert_non_null(strstr(err, "cdn.cloudflare_zone"));
    config_release(&c);
    assert_int_equal(load(&c, no_service, 1), E_INVALID);
    assert_non_null(strstr(err, "cdn.fastly_service"));
    config_release(&c);
    assert_int_equal(load(&c, ok, 2), OK);
    config_release(&c);
    /* no purger: no object, and a purge is a no-op */
    struct cdn *cdn = (struct cdn *)&c;
    assert_int_equal(load(&c, NULL, 0), OK);
    assert_int_equal(cdn_new(&c, "http://x", &cdn), OK);
    assert_null(cdn);
    assert_int_equal(cdn_purge(NULL, "id:jpeg", err, sizeof(err)), OK);
    config_release(&c);
}

static void test_paths(void **state)
{
    struct config c;
    char *paths[CDN_MAX_PATHS];
    size_t n;
    (void)state;

    assert_int_equal(load(&c, NULL, 0), OK);
    assert_true(c.n_variants >= 1);
    n = cdn_paths(&c, ID, "jpeg", paths);
    assert_int_equal(n, 2 + c.n_variants);
    assert_string_equal(paths[0], "/i/AbCdEf123456");
    assert_string_equal(paths[1], "/i/AbCdEf123456.jpg");
    for (size_t i = 0; i < c.n_variants; i++) {
        char want[128];
        snprintf(want, sizeof(want), "/i/%s/%s.", ID, c.variant[i].name);
        assert_memory_equal(paths[2 + i], want, strlen(want));
    }
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    /* an unknown format (an old payload of the id alone): no extension URL */
    n = cdn_paths(&c, ID, "", paths);
    assert_int_equal(n, 1 + c.n_variants);
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    config_release(&c);
}

static void test_varnish_plan(void **state)
{
    struct config c;
    struct cdn *cdn = NULL;
    struct cdn_plan *p = calloc(1, sizeof(*p));
    char *flags[] = {"cdn.purger=varnish", "cdn.purge_urls=http://127.0.0.1:8000/,http://e2:6081"};
    (void)state;

    assert_int_equal(load(&c, flags, 2), OK);
    assert_int_equal(cdn_new(&c, "http://cdn.example/", &cdn), OK);
    assert_int_equal(cdn_kind_of(cdn), CDN_VARNISH);
    /* one xkey purge per cache */
    assert_int_equal(cdn_plan_build(cdn, "AbCdEf123456:png", p), OK);
    assert_int_equal(p->n, 2);
    assert_string_equal(p->req[0].method, "PURGE");
    assert_string_equal(p->req[0].url, "http://127.0.0.1:8000/");
    assert_string_equal(header_of(&p->req[0], "xkey"), "img-AbCdEf123456");
    assert_true(p->req[0].xkey);
    assert_string_equal(p->req[1].url, "http://e2:6081/");
    assert_int_equal(p->req[1].cache, 1);
    assert_null(p->req[1].body);
    cdn_plan_release(p);
    /* the fallback: a PURGE per URL of the image and its variants, to that cache */
    assert_int_equal(cdn_plan_fallback(cdn, "AbCdEf123456:png", 1, p), OK);
    assert_int_equal(p->n, 2 + c.n_variants);
    assert_string_equal(p->req[0].url, "http://e2:6081/i/AbCdEf123456");
    assert_string_equal(p->req[1].url, "http://e2:6081/i/AbCdEf123456.png");
    assert_false(p->req[1].xkey);
    assert_int_equal(p->req[1].n_headers, 0);
    cdn_plan_release(p);
    /* malformed payloads are refused, not sent */
    assert_int_equal(cdn_plan_build(cdn, "", p), E_INVALID);
    assert_int_equal(cdn_plan_build(cdn, "../etc:jpeg", p), E_INVALID);
    assert_int_equal(cdn_plan_build(cdn, "abc:JPEG", p), E_INVALID);
    assert_int_equal(cdn_plan_build(cdn, "abc def", p), E_INVALID);
    assert_int_equal(p->n, 0);
    assert_int_equal(cdn_purge(cdn, "a b", err, sizeof(err)), E_INVALID);
    cdn_free(cdn);
    config_release(&c);
    free(p);
}

static void test_http_plan(void **state)
{
    struct config c;
    struct cdn *cdn = NULL;
    struct cdn_plan *p = calloc(1, sizeof(*p));
    char *flags[] = {"cdn.purger=http", "cdn.purge_urls= http://a:1 , http://b:2//"};
    (void)state;

    assert_int_equal(load(&c, flags, 2), OK);
    assert_int_equal(cdn_new(&c, "http://cdn.example", &cdn), OK);
    assert_int_equal(cdn_plan_build(cdn, "AbCdEf123456:gif", p), OK);
    size_t per = 2 + c.n_variants;
    assert_int_equal(p->n, 2 * per);
    assert_string_equal(p->req[0].url, "http://a:1/i/AbCdEf123456");
    assert_string_equal(p->req[1].url, "http://a:1/i/AbCdEf123456.gif");
    assert_string_equal(p->req[per].url, "http://b:2/i/AbCdEf123456");
    assert_int_equal(p->req[per].cache, 1);
    for (size_t i = 0; i < p->n; i++) {
        assert_string_equal(p->req[i].method, "PURGE");
        assert_false(p->req[i].xkey);
    }
    cdn_plan_release(p);
    cdn_free(cdn);
    config_release(&c);
    free(p);
}

static void test_cloudflare_plan(void **state)
{
    struct config c;
    struct cdn *cdn = NULL;
    struct cdn_plan *p = calloc(1, sizeof(*p));
    char *flags[] = {"cdn.purger=cloudflare", "cdn.cloudflare_zone=z123",
                     "cdn.cloudflare_api=http://127.0.0.1:9/client/v4/",
                     "cdn.cloudflare_tags=true"};
    json_t *j, *files;
    (void)state;

    /* the token from the environment when the setting is empty */
    setenv("CLOUDFLARE_API_TOKEN", "env-token", 1);
    assert_int_equal(load(&c, flags, 4), OK);
    assert_int_equal(cdn_new(&c, "https://img.example.com/", &cdn), OK);
    assert_int_equal(cdn_plan_build(cdn, "AbCdEf123456:webp", p), OK);
    assert_int_equal(p->n, 2); /* files, then tags */
    assert_string_equal(p->req[0].method, "POST");
    assert_string_equal(p->req[0].url, "http://127.0.0.1:9/client/v4/zones/z123/purge_cache");
    assert_string_equal(header_of(&p->req[0], "Authorization"), "Bearer env-token");
    assert_string_equal(header_of(&p->req[0], "Content-Type"), "application/json");
    j = json_loads(p->req[0].body, 0, NULL);
    assert_non_null(j);
    files = json_object_get(j, "files");
    assert_true(json_is_array(files));
    assert_int_equal(json_array_size(files), 2 + c.n_variants);
    assert_string_equal(json_string_value(json_array_get(files, 0)),
                        "https://img.example.com/i/AbCdEf123456");
    assert_string_equal(json_string_value(json_array_get(files, 1)),
                        "https://img.example.com/i/AbCdEf123456.webp");
    json_decref(j);
    assert_string_equal(p->req[1].body, "{\"tags\":[\"img-AbCdEf123456\"]}");
    assert_string_equal(header_of(&p->req[1], "Authorization"), "Bearer env-token");
    cdn_plan_release(p);
    cdn_free(cdn);
    config_release(&c);

    /* the token of the configuration wins; no tags unless asked */
    char *flags2[] = {"cdn.purger=cloudflare", "cdn.cloudflare_zone=z9",
                      "cdn.cloudflare_token=cfg-token"};
    assert_int_equal(load(&c, flags2, 3), OK);
    assert_int_equal(cdn_new(&c, "https://img.example.com", &cdn), OK);
    assert_int_equal(cdn_plan_build(cdn, "AbCdEf123456:jpeg", p), OK);
    assert_int_equal(p->n, 1);
    assert_string_equal(p->req[0].url, "https://api.cloudflare.com/client/v4/zones/z9/purge_cache");
    assert_string_equal(header_of(&p->req[0], "Authorization"), "Bearer cfg-token");
    assert_null(strstr(p->req[0].body, "tags"));
    cdn_plan_release(p);
    cdn_free(cdn);
    config_release(&c);
    unsetenv("CLOUDFLARE_API_TOKEN");
    free(p);
}

static void test_fastly_plan(void **state)
{
    struct config c;
    struct cdn *cdn = NULL;
    struct cdn_plan *p = calloc(1, sizeof(*p));
    char *flags[] = {"cdn.purger=fastly", "cdn.fastly_service=SVC1", "cdn.fastly_key=fk"};
    (void)state;

    assert_int_equal(load(&c, flags, 3), OK);
    assert_int_equal(cdn_new(&c, "https://img.example.com", &cdn), OK);
    assert_int_equal(cdn_plan_build(cdn, "AbCdEf123456:png", p), OK);
    assert_int_equal(p->n, 1);
    assert_string_equal(p->req[0].method, "POST");
    assert_string_equal(p->req[0].url,
                        "https://api.fastly.com/service/SVC1/purge/img-AbCdEf123456");
    assert_string_equal(header_of(&p->req[0], "Fastly-Key"), "fk");
    cdn_plan_release(p);
    cdn_free(cdn);
    config_release(&c);
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_settings_validated), cmocka_unit_test(test_paths),
        cmocka_unit_test(test_varnish_plan),       cmocka_unit_test(test_http_plan),
        cmocka_unit_test(test_cloudflare_plan),    cmocka_unit_test(test_fastly_plan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
