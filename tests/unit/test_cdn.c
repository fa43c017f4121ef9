/*
 * test_cdn.c - unit tests of cdn/: the purgers' requests, without a network.
 *
 * The URL list of an image, the settings' validation (config.c's and
 * cdn_new's), and for each purger the requests it plans: methods, URLs,
 * headers (tokens from the options or the environment), JSON bodies; the
 * varnish fallback to URL PURGEs. The purgers are built from struct cdn_opts.
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

/* opts: options of purger with two presets and the API bases config.c defaults to. */
static struct cdn_opts opts(const char *purger, const char *purge_urls, const char *base_url)
{
    struct cdn_opts o = {
        .purger = purger,
        .purge_urls = purge_urls,
        .purge_timeout_ms = 5000,
        .base_url = base_url,
        .cloudflare_api = "https://api.cloudflare.com/client/v4",
        .fastly_api = "https://api.fastly.com",
        .n_variants = 2,
        .variant = {{"thumb", "webp"}, {"large", "jpg"}},
    };
    return o;
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
    struct cdn_opts o = opts("", NULL, "http://x");
    assert_int_equal(cdn_new(&o, &cdn), OK);
    assert_null(cdn);
    cdn = (struct cdn *)&c;
    memset(&o, 0, sizeof(o)); /* every string NULL: "" */
    assert_int_equal(cdn_new(&o, &cdn), OK);
    assert_null(cdn);
    assert_int_equal(cdn_purge(NULL, "id:jpeg", err, sizeof(err)), OK);
    /* presets cdn_new cannot name: refused, no object */
    cdn = (struct cdn *)&c;
    o = opts("http", "http://a:1", "http://x");
    o.n_variants = CDN_MAX_VARIANTS + 1;
    assert_int_equal(cdn_new(&o, &cdn), E_INVALID);
    assert_null(cdn);
    cdn = (struct cdn *)&c;
    o = opts("http", "http://a:1", "http://x");
    o.variant[1].ext = "";
    assert_int_equal(cdn_new(&o, &cdn), E_INVALID);
    assert_null(cdn);
    o.variant[1].ext = "jpg";
    o.variant[0].name = NULL;
    assert_int_equal(cdn_new(&o, &cdn), E_INVALID);
    assert_null(cdn);
}

static void test_paths(void **state)
{
    struct cdn_opts o = opts("http", "http://a:1", "http://x");
    struct cdn *cdn = NULL;
    char *paths[CDN_MAX_PATHS];
    size_t n;
    (void)state;

    assert_int_equal(cdn_new(&o, &cdn), OK);
    assert_true(o.n_variants >= 1);
    n = cdn_paths(cdn, ID, "jpeg", paths);
    assert_int_equal(n, 2 + o.n_variants);
    assert_string_equal(paths[0], "/i/AbCdEf123456");
    assert_string_equal(paths[1], "/i/AbCdEf123456.jpg");
    for (size_t i = 0; i < o.n_variants; i++) {
        char want[128];
        snprintf(want, sizeof(want), "/i/%s/%s.", ID, o.variant[i].name);
        assert_memory_equal(paths[2 + i], want, strlen(want));
        snprintf(want, sizeof(want), "/i/%s/%s.%s", ID, o.variant[i].name, o.variant[i].ext);
        assert_string_equal(paths[2 + i], want);
    }
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    /* an unknown format (an old payload of the id alone): no extension URL */
    n = cdn_paths(cdn, ID, "", paths);
    assert_int_equal(n, 1 + o.n_variants);
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    /* no purger: no presets to name */
    n = cdn_paths(NULL, ID, "png", paths);
    assert_int_equal(n, 2);
    assert_string_equal(paths[1], "/i/AbCdEf123456.png");
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    cdn_free(cdn);
}

static void test_varnish_plan(void **state)
{
    struct cdn_opts o =
        opts("varnish", "http://127.0.0.1:8000/,http://e2:6081", "http://cdn.example/");
    struct cdn *cdn = NULL;
    struct cdn_plan *p = calloc(1, sizeof(*p));
    (void)state;

    assert_int_equal(cdn_new(&o, &cdn), OK);
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
    assert_int_equal(p->n, 2 + o.n_variants);
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
    free(p);
}

static void test_http_plan(void **state)
{
    struct cdn_opts o = opts("http", " http://a:1 , http://b:2//", "http://cdn.example");
    struct cdn *cdn = NULL;
    struct cdn_plan *p = calloc(1, sizeof(*p));
    (void)state;

    assert_int_equal(cdn_new(&o, &cdn), OK);
    assert_int_equal(cdn_plan_build(cdn, "AbCdEf123456:gif", p), OK);
    size_t per = 2 + o.n_variants;
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
    free(p);
}

/*
 * A rendition's purge ("id/t/name": evicted, or its image deleted): varnish BANs its path and
 * its .auto sibling (every ?s= and Accept class), http PURGEs each URL with the ?s= of each
 * key (signatures computed with `openssl dgst -sha256 -hmac`), cloudflare lists them (never
 * the image's tag), fastly sends nothing.
 */
static void test_rendition_plans(void **state)
{
    static char *keys[] = {"unit-test-key-abcdefghijklmnop"};
    const char *sig_webp = "O5JKe69o_BA9RMozZf8-QvRuFffEIn3j";
    const char *sig_auto = "Ud-BYrJqhC_NYbnm5_qJPR17rKi5NaFq";
    struct cdn_plan *p = calloc(1, sizeof(*p));
    struct cdn *cdn = NULL;
    char want[256];
    (void)state;

    struct cdn_opts o = opts("varnish", "http://e1:8000,http://e2:6081", "http://cdn.example");
    o.sign_keys = keys;
    o.n_sign_keys = 1;
    assert_int_equal(cdn_new(&o, &cdn), OK);
    assert_int_equal(cdn_plan_build(cdn, "AbCdEf123456/t/w:40.webp", p), OK);
    assert_int_equal(p->n, 4);
    assert_string_equal(p->req[0].method, "BAN");
    assert_string_equal(p->req[0].url, "http://e1:8000/i/AbCdEf123456/t/w:40.webp");
    assert_string_equal(p->req[1].url, "http://e1:8000/i/AbCdEf123456/t/w:40.auto");
    assert_string_equal(p->req[3].url, "http://e2:6081/i/AbCdEf123456/t/w:40.auto");
    assert_false(p->req[0].xkey);
    cdn_plan_release(p);
    /* a JPEG rendition has no .auto sibling (auto's third class is stored as .auto itself) */
    assert_int_equal(cdn_plan_build(cdn, "AbCdEf123456/t/w:40,h:30,fit:cover.jpg", p), OK);
    assert_int_equal(p->n, 2);
    cdn_plan_release(p);
    assert_int_equal(cdn_plan_build(cdn, "AbCdEf123456/t/", p), E_INVALID);
    assert_int_equal(cdn_plan_build(cdn, "AbCdEf123456/t/W:40.webp", p), E_INVALID);
    assert_int_equal(cdn_plan_build(cdn, "../x/t/w:40.webp", p), E_INVALID);
    assert_int_equal(cdn_plan_build(cdn, "AbCdEf123456/t/w:40", p), E_INVALID);
    cdn_free(cdn);

    o = opts("http", "http://a:1", "http://cdn.example");
    o.sign_keys = keys;
    o.n_sign_keys = 1;
    assert_int_equal(cdn_new(&o, &cdn), OK);
    assert_int_equal(cdn_plan_build(cdn, "AbCdEf123456/t/w:40.webp", p), OK);
    assert_int_equal(p->n, 2);
    snprintf(want, sizeof(want), "http://a:1/i/AbCdEf123456/t/w:40.webp?s=%s", sig_webp);
    assert_string_equal(p->req[0].url, want);
    snprintf(want, sizeof(want), "http://a:1/i/AbCdEf123456/t/w:40.auto?s=%s", sig_auto);
    assert_string_equal(p->req[1].url, want);
    assert_string_equal(p->req[1].method, "PURGE");
    cdn_plan_release(p);
    cdn_free(cdn);

    o = opts("cloudflare", "", "https://img.example.com");
    o.sign_keys = keys;
    o.n_sign_keys = 1;
    o.cloudflare_tags = true;
    o.cloudflare_token = "tok";
    assert_int_equal(cdn_new(&o, &cdn), OK);
    assert_int_equal(cdn_plan_build(cdn, "AbCdEf123456/t/w:40.webp", p), OK);
    assert_int_equal(p->n, 1); /* the URLs only: the tag would purge the whole image */
    snprintf(want, sizeof(want),
             "{\"files\":[\"https://img.example.com/i/AbCdEf123456/t/w:40.webp?s=%s\","
             "\"https://img.example.com/i/AbCdEf123456/t/w:40.auto?s=%s\"]}",
             sig_webp, sig_auto);
    assert_string_equal(p->req[0].body, want);
    cdn_plan_release(p);
    cdn_free(cdn);

    o = opts("fastly", "", "https://img.example.com");
    o.fastly_service = "svc";
    o.fastly_key = "k";
    assert_int_equal(cdn_new(&o, &cdn), OK);
    assert_int_equal(cdn_plan_build(cdn, "AbCdEf123456/t/w:40.webp", p), OK);
    assert_int_equal(p->n, 0);
    cdn_free(cdn);
    free(p);
}

static void test_cloudflare_plan(void **state)
{
    struct cdn_opts o = opts("cloudflare", "", "https://img.example.com/");
    struct cdn *cdn = NULL;
    struct cdn_plan *p = calloc(1, sizeof(*p));
    json_t *j, *files;
    (void)state;

    o.cloudflare_zone = "z123";
    o.cloudflare_api = "http://127.0.0.1:9/client/v4/";
    o.cloudflare_tags = true;
    /* the token from the environment when the setting is empty */
    setenv("CLOUDFLARE_API_TOKEN", "env-token", 1);
    assert_int_equal(cdn_new(&o, &cdn), OK);
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
    assert_int_equal(json_array_size(files), 2 + o.n_variants);
    assert_string_equal(json_string_value(json_array_get(files, 0)),
                        "https://img.example.com/i/AbCdEf123456");
    assert_string_equal(json_string_value(json_array_get(files, 1)),
                        "https://img.example.com/i/AbCdEf123456.webp");
    json_decref(j);
    assert_string_equal(p->req[1].body, "{\"tags\":[\"img-AbCdEf123456\"]}");
    assert_string_equal(header_of(&p->req[1], "Authorization"), "Bearer env-token");
    cdn_plan_release(p);
    cdn_free(cdn);

    /* the token of the options wins; no tags unless asked */
    o = opts("cloudflare", "", "https://img.example.com");
    o.cloudflare_zone = "z9";
    o.cloudflare_token = "cfg-token";
    assert_int_equal(cdn_new(&o, &cdn), OK);
    assert_int_equal(cdn_plan_build(cdn, "AbCdEf123456:jpeg", p), OK);
    assert_int_equal(p->n, 1);
    assert_string_equal(p->req[0].url, "https://api.cloudflare.com/client/v4/zones/z9/purge_cache");
    assert_string_equal(header_of(&p->req[0], "Authorization"), "Bearer cfg-token");
    assert_null(strstr(p->req[0].body, "tags"));
    cdn_plan_release(p);
    cdn_free(cdn);
    unsetenv("CLOUDFLARE_API_TOKEN");
    free(p);
}

static void test_fastly_plan(void **state)
{
    struct cdn_opts o = opts("fastly", "", "https://img.example.com");
    struct cdn *cdn = NULL;
    struct cdn_plan *p = calloc(1, sizeof(*p));
    (void)state;

    o.fastly_service = "SVC1";
    o.fastly_key = "fk";
    assert_int_equal(cdn_new(&o, &cdn), OK);
    assert_int_equal(cdn_plan_build(cdn, "AbCdEf123456:png", p), OK);
    assert_int_equal(p->n, 1);
    assert_string_equal(p->req[0].method, "POST");
    assert_string_equal(p->req[0].url,
                        "https://api.fastly.com/service/SVC1/purge/img-AbCdEf123456");
    assert_string_equal(header_of(&p->req[0], "Fastly-Key"), "fk");
    cdn_plan_release(p);
    cdn_free(cdn);
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_settings_validated), cmocka_unit_test(test_paths),
        cmocka_unit_test(test_varnish_plan),       cmocka_unit_test(test_http_plan),
        cmocka_unit_test(test_cloudflare_plan),    cmocka_unit_test(test_fastly_plan),
        cmocka_unit_test(test_rendition_plans),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
