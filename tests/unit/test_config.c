/*
 * test_config.c - unit tests of config/: the settings table and its loaders.
 *
 * Every type and bound, the defaults, the INI file (errors name file:line and
 * key), the environment and flag overrides and their priority, the derived
 * settings (variants, key lists) and the printed defaults parsing back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
/* above: what cmocka.h needs before it, kept apart from the sorted block below */
#include "config/config.h"
#include "core/err.h"

#include <cmocka.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmp_dir[] = "/tmp/tessera-test-config-XXXXXX";
static char err[512];

static int group_setup(void **state)
{
    (void)state;
    return mkdtemp(tmp_dir) == NULL ? -1 : 0;
}

static int group_teardown(void **state)
{
    (void)state;
    return rmdir(tmp_dir);
}

/* write_file writes text to tmp_dir/name and returns the path in a static buffer. */
static const char *write_file(const char *name, const char *text)
{
    static char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", tmp_dir, name);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    return path;
}

/* load_flags runs config_init + config_load with no file and no environment. */
static int load_flags(struct config *cfg, char *const *flags, size_t n)
{
    config_init(cfg);
    err[0] = '\0';
    return config_load(cfg, NULL, NULL, flags, n, err, sizeof(err));
}

/* set1 loads a default configuration with one flag "name=value". */
static int set1(struct config *cfg, const char *name, const char *value)
{
    char flag[4096];
    char *flags[1] = {flag};

    snprintf(flag, sizeof(flag), "%s=%s", name, value);
    return load_flags(cfg, flags, 1);
}

/* effective returns config_print_effective's output (caller frees). */
static char *effective(const struct config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    assert_non_null(f);
    config_print_effective(cfg, f);
    assert_int_equal(fclose(f), 0);
    return buf;
}

static char *print_defaults(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    assert_non_null(f);
    config_print_defaults(f);
    assert_int_equal(fclose(f), 0);
    return buf;
}

#define assert_err_contains(needle)                                                                \
    do {                                                                                           \
        if (strstr(err, (needle)) == NULL)                                                         \
            fail_msg("error \"%s\" does not contain \"%s\"", err, (needle));                       \
    } while (0)

/* --- defaults --- */

static void test_defaults(void **state)
{
    struct config c;

    (void)state;
    assert_int_equal(load_flags(&c, NULL, 0), OK);
    assert_string_equal(c.server.listen, "127.0.0.1:8080");
    assert_string_equal(c.server.public_url, "");
    assert_int_equal(c.server.thread_pool, 2);
    assert_int_equal(c.server.workers, 16);
    assert_int_equal(c.server.max_connections, 1024);
    assert_int_equal(c.server.idle_timeout_ms, 30000);
    assert_int_equal(c.server.max_header_bytes, 16 * 1024);
    assert_int_equal(c.server.max_url_bytes, 4096);
    assert_int_equal(c.server.shutdown_timeout_ms, 10000);
    assert_int_equal(c.limits.max_upload_bytes, 52428800);
    assert_int_equal(c.limits.max_pixels, 100000000);
    assert_int_equal(c.limits.max_frames, 1000);
    assert_int_equal(c.limits.max_animation_pixels, 500000000);
    assert_int_equal(c.limits.max_list, 1000);
    assert_string_equal(c.storage.data_dir, "./tessera-data");
    assert_string_equal(c.storage.blobs, "");
    assert_string_equal(c.storage.db, "");
    assert_string_equal(c.auth.upload_keys, "");
    assert_string_equal(c.auth.admin_keys, "");
    assert_int_equal(c.n_upload_keys, 0);
    assert_int_equal(c.n_admin_keys, 0);
    assert_string_equal(c.cdn.base_url, "");
    assert_int_equal(c.image.concurrency, 1);
    assert_int_equal(c.image.cache_bytes, 0);
    assert_int_equal(c.transforms.max_dimension, 4096);
    assert_false(c.transforms.allow_unsigned);
    assert_int_equal(c.transforms.memory_budget, 0);
    assert_int_equal(c.transforms.queue_timeout_ms, 2000);
    assert_int_equal(c.n_transform_keys, 0);
    assert_int_equal(c.n_srcset_widths, 5);
    assert_string_equal(c.log.level, "info");
    assert_true(c.log.access);
    config_release(&c);
}

static void test_release_twice_and_reload(void **state)
{
    struct config c;

    (void)state;
    assert_int_equal(set1(&c, "auth.upload_keys", "0123456789abcdef01234567"), OK);
    assert_int_equal(c.n_upload_keys, 1);
    config_release(&c);
    config_release(&c); /* release leaves nothing to free twice */
    assert_null(c.server.listen);
    assert_int_equal(c.n_upload_keys, 0);
}

/* --- types --- */

struct typed_case {
    const char *name;
    const char *value;
    int64_t want;
};

static int64_t int_field(const struct config *c, const char *name)
{
    if (strcmp(name, "limits.max_upload_bytes") == 0)
        return c->limits.max_upload_bytes;
    if (strcmp(name, "limits.max_pixels") == 0)
        return c->limits.max_pixels;
    if (strcmp(name, "limits.max_animation_pixels") == 0)
        return c->limits.max_animation_pixels;
    if (strcmp(name, "server.idle_timeout") == 0)
        return c->server.idle_timeout_ms;
    if (strcmp(name, "server.shutdown_timeout") == 0)
        return c->server.shutdown_timeout_ms;
    if (strcmp(name, "server.max_header_bytes") == 0)
        return c->server.max_header_bytes;
    if (strcmp(name, "image.cache_bytes") == 0)
        return c->image.cache_bytes;
    if (strcmp(name, "server.thread_pool") == 0)
        return c->server.thread_pool;
    fail_msg("no field %s", name);
    return -1;
}

static void check_good(const struct typed_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct config c;
        int rc = set1(&c, cases[i].name, cases[i].value);

        if (rc != OK)
            fail_msg("%s=%s: unexpected error: %s", cases[i].name, cases[i].value, err);
        if (int_field(&c, cases[i].name) != cases[i].want)
            fail_msg("%s=%s: got %lld, want %lld", cases[i].name, cases[i].value,
                     (long long)int_field(&c, cases[i].name), (long long)cases[i].want);
        config_release(&c);
    }
}

/* check_bad expects E_INVALID with the key and the reason word in the message. */
static void check_bad(const char *name, const char *const *values, size_t n, const char *why)
{
    for (size_t i = 0; i < n; i++) {
        struct config c;
        int rc = set1(&c, name, values[i]);

        if (rc != E_INVALID)
            fail_msg("%s=\"%s\": got %d, want E_INVALID", name, values[i], rc);
        assert_err_contains(name);
        assert_err_contains(why);
        config_release(&c);
    }
}

static void test_integer(void **state)
{
    static const struct typed_case good[] = {
        {"limits.max_pixels", "12345", 12345},
        {"limits.max_pixels", "1", 1},
        {"limits.max_pixels", "1000000000", 1000000000},
        {"limits.max_pixels", "007", 7},
        {"limits.max_animation_pixels", "10000000000", 10000000000LL}, /* over 32 bits */
        {"server.thread_pool", "0", 0},
        {"server.thread_pool", "256", 256},
    };
    static const char *const not_int[] = {
        "", "abc", "12k", "1e6", "1.5", "-5", "+5", "0x10", "5 apples", "99999999999999999999",
    };

    (void)state;
    check_good(good, sizeof(good) / sizeof(good[0]));
    check_bad("limits.max_pixels", not_int, sizeof(not_int) / sizeof(not_int[0]), "not an integer");
}

static void test_size(void **state)
{
    static const struct typed_case good[] = {
        {"limits.max_upload_bytes", "512", 512},
        {"limits.max_upload_bytes", "1K", 1024},
        {"limits.max_upload_bytes", "1k", 1024},
        {"limits.max_upload_bytes", "3KiB", 3 * 1024},
        {"limits.max_upload_bytes", "2M", 2 * 1024 * 1024},
        {"limits.max_upload_bytes", "2m", 2 * 1024 * 1024},
        {"limits.max_upload_bytes", "50M", 52428800},
        {"limits.max_upload_bytes", "1G", 1024LL * 1024 * 1024},
        {"limits.max_upload_bytes", "4G", 4LL * 1024 * 1024 * 1024},
        {"limits.max_upload_bytes", "100b", 100},
        {"image.cache_bytes", "0", 0},
        {"server.max_header_bytes", "256K", 256 * 1024},
    };
    static const char *const not_size[] = {
        "", "M", "1T", "1.5M", "-1K", "ten", "1 Mx", "99999999999999G",
    };

    (void)state;
    check_good(good, sizeof(good) / sizeof(good[0]));
    check_bad("limits.max_upload_bytes", not_size, sizeof(not_size) / sizeof(not_size[0]),
              "not a size");
}

static void test_duration(void **state)
{
    static const struct typed_case good[] = {
        {"server.idle_timeout", "1500ms", 1500},    {"server.idle_timeout", "2s", 2000},
        {"server.idle_timeout", "2", 2000}, /* a bare number is seconds */
        {"server.idle_timeout", "1m", 60000},       {"server.idle_timeout", "1h", 3600000},
        {"server.shutdown_timeout", "0", 0},        {"server.shutdown_timeout", "0ms", 0},
        {"server.shutdown_timeout", "10m", 600000},
    };
    static const char *const not_duration[] = {
        "", "s", "5x", "5 min", "1d", "-1s", "1.5s", "5sec",
    };

    (void)state;
    check_good(good, sizeof(good) / sizeof(good[0]));
    check_bad("server.idle_timeout", not_duration, sizeof(not_duration) / sizeof(not_duration[0]),
              "not a duration");
}

static void test_boolean(void **state)
{
    static const char *const yes[] = {"true", "yes", "on", "1", "TRUE", "Yes", "ON"};
    static const char *const no[] = {"false", "no", "off", "0", "FALSE", "No", "Off"};
    static const char *const not_bool[] = {"", "maybe", "2", "y", "n", "truee", "enabled"};
    struct config c;

    (void)state;
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        assert_int_equal(set1(&c, "log.access", "false"), OK);
        assert_false(c.log.access);
        config_release(&c);
        assert_int_equal(set1(&c, "log.access", yes[i]), OK);
        assert_true(c.log.access);
        config_release(&c);
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        assert_int_equal(set1(&c, "log.access", no[i]), OK);
        assert_false(c.log.access);
        config_release(&c);
    }
    check_bad("log.access", not_bool, sizeof(not_bool) / sizeof(not_bool[0]), "not a boolean");
}

static void test_string(void **state)
{
    struct config c;
    char *flags[] = {"storage.data_dir=/var/lib/tessera", "cdn.base_url=https://cdn.example",
                     "server.public_url=", "storage.db=/tmp/x.db"};

    (void)state;
    assert_int_equal(load_flags(&c, flags, 4), OK);
    assert_string_equal(c.storage.data_dir, "/var/lib/tessera");
    assert_string_equal(c.cdn.base_url, "https://cdn.example");
    assert_string_equal(c.server.public_url, "");
    assert_string_equal(c.storage.db, "/tmp/x.db");
    config_release(&c);
}

/* --- bounds --- */

static void test_bounds(void **state)
{
    static const struct {
        const char *name;
        const char *value;
    } out[] = {
        {"limits.max_upload_bytes", "0"},     {"limits.max_upload_bytes", "5G"},
        {"limits.max_upload_bytes", "4097M"}, {"limits.max_pixels", "0"},
        {"limits.max_pixels", "1000000001"},  {"limits.max_frames", "100001"},
        {"limits.max_list", "10001"},         {"limits.max_list", "0"},
        {"server.idle_timeout", "999ms"},     {"server.idle_timeout", "2h"},
        {"server.shutdown_timeout", "601s"},  {"server.thread_pool", "257"},
        {"server.max_connections", "0"},      {"server.max_connections", "65536"},
        {"server.max_header_bytes", "4095"},  {"server.max_header_bytes", "257K"},
        {"server.max_url_bytes", "255"},      {"server.max_url_bytes", "65K"},
        {"image.concurrency", "0"},           {"image.concurrency", "65"},
        {"image.cache_bytes", "5G"},          {"limits.max_animation_pixels", "10000000001"},
    };
    struct config c;

    (void)state;
    for (size_t i = 0; i < sizeof(out) / sizeof(out[0]); i++) {
        int rc = set1(&c, out[i].name, out[i].value);
        if (rc != E_INVALID)
            fail_msg("%s=%s: got %d, want E_INVALID", out[i].name, out[i].value, rc);
        assert_err_contains(out[i].name);
        assert_err_contains("out of range");
        assert_err_contains("flag --");
        config_release(&c);
    }
    /* the limits themselves are inside */
    assert_int_equal(set1(&c, "limits.max_upload_bytes", "1"), OK);
    config_release(&c);
    assert_int_equal(set1(&c, "server.idle_timeout", "1000ms"), OK);
    config_release(&c);
    assert_int_equal(set1(&c, "server.max_connections", "65535"), OK);
    config_release(&c);
}

static void test_set_errors(void **state)
{
    struct config c;
    char *no_eq[] = {"limits.max_pixels"};
    char *no_dot[] = {"listen=127.0.0.1:1"};
    char *unknown[] = {"limits.nosuch=1"};
    char *unknown_section[] = {"nosuch.key=1"};

    (void)state;
    assert_int_equal(load_flags(&c, no_eq, 1), E_INVALID);
    assert_err_contains("limits.max_pixels");
    config_release(&c);
    assert_int_equal(load_flags(&c, no_dot, 1), E_INVALID);
    assert_err_contains("listen");
    config_release(&c);
    assert_int_equal(load_flags(&c, unknown, 1), E_INVALID);
    assert_err_contains("limits.nosuch");
    assert_err_contains("unknown");
    config_release(&c);
    assert_int_equal(load_flags(&c, unknown_section, 1), E_INVALID);
    assert_err_contains("nosuch.key");
    config_release(&c);

    /* config_set directly */
    config_init(&c);
    assert_int_equal(config_set(&c, "limits.max_frames", "7", err, sizeof(err)), OK);
    assert_int_equal(c.limits.max_frames, 7);
    assert_int_equal(config_set(&c, "limits.max_frames", "x", err, sizeof(err)), E_INVALID);
    assert_err_contains("limits.max_frames");
    assert_int_equal(c.limits.max_frames, 7); /* a rejected value changes nothing */
    assert_int_equal(config_set(&c, "nodot", "1", err, sizeof(err)), E_INVALID);
    assert_int_equal(config_set(&c, "limits.max_frames", "x", NULL, 0), E_INVALID);
    config_release(&c);
}

/* --- validation across settings --- */

static void test_validation(void **state)
{
    static const struct {
        const char *flag;
        const char *needle;
    } bad[] = {
        {"server.listen=localhost", "server.listen"},
        {"server.listen=", "server.listen"},
        {"server.max_url_bytes=32K", "server.max_url_bytes"}, /* not under max_header_bytes */
        {"log.level=verbose", "log.level"},
        {"log.level=", "log.level"},
        {"storage.blobs=s3://bucket", "storage.blobs"},
        {"storage.blobs=file://relative", "storage.blobs"},
        {"storage.data_dir=", "storage.data_dir"},
    };
    static const char *const levels[] = {"debug", "info", "warn", "error", "off"};
    struct config c;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *flags[1] = {(char *)bad[i].flag};
        if (load_flags(&c, flags, 1) != E_INVALID)
            fail_msg("%s: accepted", bad[i].flag);
        assert_err_contains(bad[i].needle);
        config_release(&c);
    }
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
        assert_int_equal(set1(&c, "log.level", levels[i]), OK);
        config_release(&c);
    }
    assert_int_equal(set1(&c, "storage.blobs", "file:///srv/blobs"), OK);
    assert_string_equal(c.storage.blobs, "file:///srv/blobs");
    config_release(&c);
}

/* --- the INI file --- */

static void test_file_values(void **state)
{
    struct config c;
    const char *path = write_file("good.ini", "# a comment\n"
                                              "; another comment\n"
                                              "[server]\n"
                                              "listen = 0.0.0.0:9000\n"
                                              "idle_timeout = 5s\n"
                                              "\n"
                                              "[limits]\n"
                                              "max_upload_bytes = 10M\n"
                                              "max_pixels=42\n"
                                              "[log]\n"
                                              "access = off\n"
                                              "level = debug\n"
                                              "[storage]\n"
                                              "data_dir = /srv/tessera data\n");

    (void)state;
    config_init(&c);
    assert_int_equal(config_load(&c, path, NULL, NULL, 0, err, sizeof(err)), OK);
    assert_string_equal(c.server.listen, "0.0.0.0:9000");
    assert_int_equal(c.server.idle_timeout_ms, 5000);
    assert_int_equal(c.limits.max_upload_bytes, 10 * 1024 * 1024);
    assert_int_equal(c.limits.max_pixels, 42);
    assert_false(c.log.access);
    assert_string_equal(c.log.level, "debug");
    assert_string_equal(c.storage.data_dir, "/srv/tessera data");
    /* what the file does not name keeps its default */
    assert_int_equal(c.limits.max_frames, 1000);
    config_release(&c);
    unlink(path);
}

static void test_transform_keys(void **state)
{
    struct config c;
    char flag[1024];
    char *flags[2] = {flag, NULL};
    const char *path = write_file(
        "keys", "\nfirst-file-key-0123456789abcdef\r\n  spaced, key with comma 12345 \n");

    (void)state;
    assert_int_equal(set1(&c, "transforms.keys", ""), OK);
    assert_int_equal(c.n_transform_keys, 0);
    config_release(&c);
    /* the setting first (trimmed, split at commas), then each line of the file as its bytes */
    snprintf(flag, sizeof(flag),
             "transforms.keys= setting-key-0123456789abcdef ,other-key-0123456789abcdefgh");
    char kf[600];
    snprintf(kf, sizeof(kf), "transforms.keys_file=%s", path);
    flags[1] = kf;
    assert_int_equal(load_flags(&c, flags, 2), OK);
    assert_int_equal(c.n_transform_keys, 4);
    assert_string_equal(c.transform_key[0], "setting-key-0123456789abcdef");
    assert_string_equal(c.transform_key[1], "other-key-0123456789abcdefgh");
    assert_string_equal(c.transform_key[2], "first-file-key-0123456789abcdef");
    assert_string_equal(c.transform_key[3], "  spaced, key with comma 12345 ");
    config_release(&c);
    unlink(path);
    path = write_file("short", "tooshort\n");
    assert_int_equal(set1(&c, "transforms.keys_file", path), E_INVALID);
    assert_err_contains("transforms.keys_file");
    config_release(&c);
    unlink(path);
    assert_int_equal(set1(&c, "transforms.keys_file", "/nonexistent/keys"), E_INVALID);
    assert_err_contains("transforms.keys_file");
    config_release(&c);
}

/* auth.admin_keys_file adds its lines to auth.admin_keys; a short key names the setting. */
static void test_admin_keys_file(void **state)
{
    struct config c;
    char kf[600], ks[128];
    char *flags[2] = {ks, kf};
    const char *path = write_file("admin", "file-admin-key-0123456789abcdef\n");

    (void)state;
    snprintf(ks, sizeof(ks), "auth.admin_keys=setting-admin-key-0123456789ab");
    snprintf(kf, sizeof(kf), "auth.admin_keys_file=%s", path);
    assert_int_equal(load_flags(&c, flags, 2), OK);
    assert_int_equal(c.n_admin_keys, 2);
    assert_string_equal(c.admin_key[0], "setting-admin-key-0123456789ab");
    assert_string_equal(c.admin_key[1], "file-admin-key-0123456789abcdef");
    config_release(&c);
    unlink(path);
    path = write_file("short", "tooshort\n");
    assert_int_equal(set1(&c, "auth.admin_keys_file", path), E_INVALID);
    assert_err_contains("auth.admin_keys_file");
    config_release(&c);
    unlink(path);
}

static void test_srcset_widths(void **state)
{
    struct config c;

    (void)state;
    assert_int_equal(set1(&c, "transforms.srcset_widths", "100, 200,4096"), OK);
    assert_int_equal(c.n_srcset_widths, 3);
    assert_int_equal(c.srcset_width[0], 100);
    assert_int_equal(c.srcset_width[2], 4096);
    config_release(&c);
    assert_int_equal(set1(&c, "transforms.srcset_widths", ""), OK);
    assert_int_equal(c.n_srcset_widths, 0);
    config_release(&c);
    static const char *const bad[] = {"200,100", "0", "4097", "1,,2", "1;2", "x", "100,"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(set1(&c, "transforms.srcset_widths", bad[i]), E_INVALID);
        assert_err_contains("transforms.srcset_widths");
        config_release(&c);
    }
}

static void test_file_bad_value_names_line(void **state)
{
    struct config c;
    const char *path = write_file("bad.ini", "# line 1\n"
                                             "[server]\n"
                                             "listen = 127.0.0.1:9000\n"
                                             "\n"
                                             "[limits]\n"
                                             "max_frames = 10\n"
                                             "max_pixels = lots\n"
                                             "max_list = 5\n");
    char want[600];

    (void)state;
    config_init(&c);
    assert_int_equal(config_load(&c, path, NULL, NULL, 0, err, sizeof(err)), E_INVALID);
    snprintf(want, sizeof(want), "%s:7", path);
    assert_err_contains(want);
    assert_err_contains("limits.max_pixels");
    assert_err_contains("lots");
    config_release(&c);

    /* out of range in a file: the same, with its line */
    path = write_file("bad.ini", "[limits]\n"
                                 "\n"
                                 "max_upload_bytes = 8G\n");
    config_init(&c);
    assert_int_equal(config_load(&c, path, NULL, NULL, 0, err, sizeof(err)), E_INVALID);
    snprintf(want, sizeof(want), "%s:3", path);
    assert_err_contains(want);
    assert_err_contains("limits.max_upload_bytes");
    assert_err_contains("out of range");
    config_release(&c);
    unlink(path);
}

static void test_file_unknown_key(void **state)
{
    struct config c;
    const char *path = write_file("unknown.ini", "[server]\n"
                                                 "listen = 127.0.0.1:9000\n"
                                                 "listne = 127.0.0.1:9001\n");
    char want[600];

    (void)state;
    config_init(&c);
    assert_int_equal(config_load(&c, path, NULL, NULL, 0, err, sizeof(err)), E_INVALID);
    snprintf(want, sizeof(want), "%s:3", path);
    assert_err_contains(want);
    assert_err_contains("server.listne");
    assert_err_contains("unknown");
    config_release(&c);

    /* a key of an unknown section, and a key before any section */
    path = write_file("unknown.ini", "[nosuch]\nlisten = 1\n");
    config_init(&c);
    assert_int_equal(config_load(&c, path, NULL, NULL, 0, err, sizeof(err)), E_INVALID);
    assert_err_contains("nosuch.listen");
    assert_err_contains(":2");
    config_release(&c);

    path = write_file("unknown.ini", "listen = 127.0.0.1:1\n");
    config_init(&c);
    assert_int_equal(config_load(&c, path, NULL, NULL, 0, err, sizeof(err)), E_INVALID);
    assert_err_contains(":1");
    config_release(&c);
    unlink(path);
}

static void test_file_syntax_error(void **state)
{
    struct config c;
    const char *path = write_file("syntax.ini", "[server]\n"
                                                "listen = 127.0.0.1:9000\n"
                                                "this line is not ini\n"
                                                "[limits]\n");
    char want[600];

    (void)state;
    config_init(&c);
    assert_int_equal(config_load(&c, path, NULL, NULL, 0, err, sizeof(err)), E_INVALID);
    snprintf(want, sizeof(want), "%s:3", path);
    assert_err_contains(want);
    assert_err_contains("syntax");
    config_release(&c);

    path = write_file("syntax.ini", "[limits]\nmax_pixels = 5\n[server\n");
    config_init(&c);
    assert_int_equal(config_load(&c, path, NULL, NULL, 0, err, sizeof(err)), E_INVALID);
    assert_err_contains(":3");
    assert_err_contains("syntax");
    config_release(&c);

    /* a broken section header followed by keys is still refused */
    path = write_file("syntax.ini", "[limits\nmax_pixels = 5\n");
    config_init(&c);
    assert_int_equal(config_load(&c, path, NULL, NULL, 0, err, sizeof(err)), E_INVALID);
    config_release(&c);
    unlink(path);
}

static void test_file_missing(void **state)
{
    struct config c;
    char path[600];

    (void)state;
    snprintf(path, sizeof(path), "%s/does-not-exist.ini", tmp_dir);
    config_init(&c);
    assert_int_equal(config_load(&c, path, NULL, NULL, 0, err, sizeof(err)), E_INVALID);
    assert_err_contains(path);
    config_release(&c);
}

/*
 * The system inih reads a line in pieces of INI_MAX_LINE (200) bytes: a longer
 * line must be refused naming its own line, never cut and misread.
 */
static void test_file_long_line(void **state)
{
    struct config c;
    char text[1024];
    char keys[600] = "";
    const char *path;
    int rc;
    bool correct;

    (void)state;
    for (int i = 0; i < 8; i++) {
        char key[64];
        snprintf(key, sizeof(key), "%skey-%02d-0123456789abcdef0123456789", i ? ", " : "", i);
        strcat(keys, key);
    }
    snprintf(text, sizeof(text), "[auth]\nupload_keys = %s\n[limits]\nmax_pixels = 5\n", keys);
    path = write_file("long.ini", text);
    config_init(&c);
    rc = config_load(&c, path, NULL, NULL, 0, err, sizeof(err));
    /* correct: the whole line is read, or it is refused naming its own line (2) */
    correct = (rc == OK && c.n_upload_keys == 8 && c.limits.max_pixels == 5) ||
              (rc == E_INVALID && strstr(err, ":2") != NULL);
    if (!correct)
        fail_msg("a %zu-byte line: rc %d, \"%s\"", strlen("upload_keys = ") + strlen(keys), rc,
                 err);
    config_release(&c);
    unlink(path);
}

/* --- environment and flags --- */

static void test_env_and_flag_priority(void **state)
{
    struct config c;
    const char *path = write_file("prio.ini", "[limits]\nmax_pixels = 7\nmax_frames = 70\n"
                                              "[server]\nlisten = 127.0.0.1:1000\n");
    char *env[] = {"HOME=/root",
                   "TESSERA_LIMITS_MAX_PIXELS=5",
                   "TESSERA_SERVER_LISTEN=127.0.0.1:2000",
                   "TESSERA_LOG_ACCESS=no",
                   "TESSERA_URL=http://127.0.0.1:8080",
                   "TESSERA_BIN=/usr/bin/tessera",
                   "TESSERA_TESTDATA=/tmp",
                   "TESSERA_NOSUCH_THING=1",
                   NULL};
    char *flags[] = {"server.listen=127.0.0.1:3000"};

    (void)state;
    config_init(&c);
    assert_int_equal(config_load(&c, path, env, NULL, 0, err, sizeof(err)), OK);
    assert_int_equal(c.limits.max_pixels, 5);  /* environment over the file */
    assert_int_equal(c.limits.max_frames, 70); /* the file where the environment says nothing */
    assert_string_equal(c.server.listen, "127.0.0.1:2000");
    assert_false(c.log.access);
    config_release(&c);

    config_init(&c);
    assert_int_equal(config_load(&c, path, env, flags, 1, err, sizeof(err)), OK);
    assert_string_equal(c.server.listen, "127.0.0.1:3000"); /* flags over the environment */
    assert_int_equal(c.limits.max_pixels, 5);
    config_release(&c);

    /* a later flag wins over an earlier one */
    {
        char *twice[] = {"limits.max_pixels=8", "limits.max_pixels=9"};
        config_init(&c);
        assert_int_equal(config_load(&c, path, env, twice, 2, err, sizeof(err)), OK);
        assert_int_equal(c.limits.max_pixels, 9);
        config_release(&c);
    }
    unlink(path);
}

static void test_env_errors(void **state)
{
    struct config c;
    char *unknown[] = {"TESSERA_LIMITS_BOGUS=1", NULL};
    char *bad_value[] = {"TESSERA_LIMITS_MAX_PIXELS=many", NULL};
    char *out_of_range[] = {"TESSERA_SERVER_IDLE_TIMEOUT=2h", NULL};
    char *unrelated[] = {"TESSERA_URL=x", "TESSERA=1", "TESSERA_=1", "TESSERA_LIMITS", NULL};

    (void)state;
    config_init(&c);
    assert_int_equal(config_load(&c, NULL, unknown, NULL, 0, err, sizeof(err)), E_INVALID);
    assert_err_contains("TESSERA_LIMITS_BOGUS");
    assert_err_contains("unknown");
    config_release(&c);

    config_init(&c);
    assert_int_equal(config_load(&c, NULL, bad_value, NULL, 0, err, sizeof(err)), E_INVALID);
    assert_err_contains("TESSERA_LIMITS_MAX_PIXELS");
    assert_err_contains("limits.max_pixels");
    config_release(&c);

    config_init(&c);
    assert_int_equal(config_load(&c, NULL, out_of_range, NULL, 0, err, sizeof(err)), E_INVALID);
    assert_err_contains("TESSERA_SERVER_IDLE_TIMEOUT");
    assert_err_contains("out of range");
    config_release(&c);

    config_init(&c);
    assert_int_equal(config_load(&c, NULL, unrelated, NULL, 0, err, sizeof(err)), OK);
    assert_string_equal(c.server.listen, "127.0.0.1:8080");
    config_release(&c);
}

/* --- image.variants --- */

static void test_variants_default(void **state)
{
    struct config c;
    const struct variant_preset *v;

    (void)state;
    assert_int_equal(load_flags(&c, NULL, 0), OK);
    assert_int_equal(c.n_variants, 1);
    v = config_variant(&c, "thumb", 5);
    assert_non_null(v);
    assert_string_equal(v->name, "thumb");
    assert_int_equal(v->width, 256);
    assert_int_equal(v->height, 256);
    assert_string_equal(v->format, "webp");
    assert_int_equal(v->quality, 80);
    assert_null(config_variant(&c, "large", 5));
    assert_null(config_variant(&c, "thum", 4));
    assert_null(config_variant(&c, "", 0));
    /* the length given is the name: a longer string's prefix matches */
    assert_ptr_equal(config_variant(&c, "thumb.webp", 5), v);
    assert_null(config_variant(&c, "thumb.webp", 10));
    config_release(&c);
}

static void test_variants_parse(void **state)
{
    struct config c;
    const struct variant_preset *v;

    (void)state;
    assert_int_equal(set1(&c, "image.variants",
                          "thumb:128x96:jpeg:70, large:2048x1536:webp:85 ,av:1x1:avif:1,"
                          "p-n_g2:8192x8192:png:100"),
                     OK);
    assert_int_equal(c.n_variants, 4);
    v = config_variant(&c, "thumb", 5);
    assert_non_null(v);
    assert_int_equal(v->width, 128);
    assert_int_equal(v->height, 96);
    assert_string_equal(v->format, "jpeg");
    assert_int_equal(v->quality, 70);
    v = config_variant(&c, "large", 5);
    assert_non_null(v);
    assert_int_equal(v->width, 2048);
    assert_int_equal(v->height, 1536);
    assert_string_equal(v->format, "webp");
    v = config_variant(&c, "p-n_g2", 6);
    assert_non_null(v);
    assert_string_equal(v->format, "png");
    assert_int_equal(v->quality, 100);
    assert_non_null(config_variant(&c, "av", 2));
    config_release(&c);
}

static void test_variants_errors(void **state)
{
    static const struct {
        const char *value;
        const char *needle;
    } bad[] = {
        {"small:64x64:webp:80", "thumb"},                /* thumb must exist */
        {"", "thumb"},                                   /* none at all */
        {"thumb:256x256:gif:80", "gif"},                 /* not an output format */
        {"thumb:256x256:webpwebp:80", "image.variants"}, /* format too long */
        {"thumb:0x256:webp:80", "out of range"},
        {"thumb:256x8193:webp:80", "out of range"},
        {"thumb:256x-1:webp:80", "out of range"},
        {"thumb:256x256:webp:0", "quality"},
        {"thumb:256x256:webp:101", "quality"},
        {"thumb:256x256:webp", "name:WxH:format:quality"},
        {"thumb:256:webp:80", "name:WxH:format:quality"},
        {"thumb:256x256:webp:80x", "name:WxH:format:quality"},
        {"thumb", "name:WxH:format:quality"},
        {"thumb:256x256:webp:80,,large:1x1:png:5", "name:WxH:format:quality"},
        {"Thumb:256x256:webp:80", "bad name"},
        {"th/umb:256x256:webp:80,thumb:1x1:png:1", "bad name"},
        {"thumb:256x256:webp:80,thumb:1x1:png:1", "twice"},
        {"thumb:256x256:webp:80,abcdefghijklmnopqrstuvwxyz0123456:1x1:png:1", "bad name"},
    };
    struct config c;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = set1(&c, "image.variants", bad[i].value);
        if (rc != E_INVALID)
            fail_msg("variants \"%s\": got %d, want E_INVALID", bad[i].value, rc);
        assert_err_contains("image.variants");
        assert_err_contains(bad[i].needle);
        config_release(&c);
    }
}

static void test_variants_limit(void **state)
{
    char list[2048] = "thumb:1x1:webp:1";
    struct config c;

    (void)state;
    for (int i = 1; i < CONFIG_MAX_VARIANTS; i++) {
        char item[32];
        snprintf(item, sizeof(item), ",v%d:1x1:webp:1", i);
        strcat(list, item);
    }
    assert_int_equal(set1(&c, "image.variants", list), OK);
    assert_int_equal(c.n_variants, CONFIG_MAX_VARIANTS);
    config_release(&c);
    strcat(list, ",one_more:1x1:webp:1");
    assert_int_equal(set1(&c, "image.variants", list), E_INVALID);
    assert_err_contains("more than");
    config_release(&c);
}

/* --- auth key lists --- */

static void test_auth_keys(void **state)
{
    struct config c;
    char *flags[] = {"auth.upload_keys= 0123456789abcdef01234567 ,,  upload-key-number-two-xyz\t, ",
                     "auth.admin_keys=admin-key-0123456789abcdef"};

    (void)state;
    assert_int_equal(load_flags(&c, flags, 2), OK);
    assert_int_equal(c.n_upload_keys, 2);
    assert_string_equal(c.upload_key[0], "0123456789abcdef01234567");
    assert_string_equal(c.upload_key[1], "upload-key-number-two-xyz");
    assert_int_equal(c.n_admin_keys, 1);
    assert_string_equal(c.admin_key[0], "admin-key-0123456789abcdef");
    config_release(&c);

    assert_int_equal(set1(&c, "auth.upload_keys", " , ,"), OK);
    assert_int_equal(c.n_upload_keys, 0);
    config_release(&c);
}

static void test_auth_short_key(void **state)
{
    struct config c;

    (void)state;
    assert_int_equal(set1(&c, "auth.upload_keys", "0123456789abcdef01234567,short"), E_INVALID);
    assert_err_contains("auth.upload_keys");
    assert_err_contains("24");
    assert_err_contains("openssl rand");
    config_release(&c);
    assert_int_equal(set1(&c, "auth.admin_keys", "0123456789abcdef0123456"), E_INVALID); /* 23 */
    assert_err_contains("auth.admin_keys");
    config_release(&c);
    /* trimming happens before the length is checked */
    assert_int_equal(set1(&c, "auth.admin_keys", "   0123456789abcdef0123456   "), E_INVALID);
    config_release(&c);
    /* the example configuration's placeholders are refused, whatever their length */
    assert_int_equal(set1(&c, "auth.upload_keys", "change-me-to-a-long-random-key"), E_INVALID);
    assert_err_contains("placeholder");
    config_release(&c);
    assert_int_equal(set1(&c, "auth.admin_keys", "my-example-admin-key-0123456789"), E_INVALID);
    assert_err_contains("placeholder");
    config_release(&c);
}

static void test_list_requires_key(void **state)
{
    char *flags[2] = {"auth.list_requires_key=true", "auth.admin_keys=0123456789abcdef01234567"};
    struct config c;

    (void)state;
    assert_int_equal(set1(&c, "auth.list_requires_key", "true"), E_INVALID);
    assert_err_contains("auth.list_requires_key");
    config_release(&c);
    assert_int_equal(load_flags(&c, flags, 2), OK);
    assert_true(c.auth.list_requires_key);
    config_release(&c);
}

static void test_auth_too_many_keys(void **state)
{
    char list[4096] = "";
    struct config c;

    (void)state;
    for (int i = 0; i < CONFIG_MAX_KEYS; i++) {
        char key[40];
        snprintf(key, sizeof(key), "%sk%02d-0123456789abcdef01234567", i ? "," : "", i);
        strcat(list, key);
    }
    assert_int_equal(set1(&c, "auth.upload_keys", list), OK);
    assert_int_equal(c.n_upload_keys, CONFIG_MAX_KEYS);
    config_release(&c);
    strcat(list, ",k99-0123456789abcdef01234567");
    assert_int_equal(set1(&c, "auth.upload_keys", list), E_INVALID);
    assert_err_contains("auth.upload_keys");
    config_release(&c);
}

/* write_secret writes len bytes of c (and a newline) to a new file; its path in path. */
static void write_secret(char *path, size_t cap, char c, size_t len)
{
    char buf[400];
    FILE *f;

    snprintf(path, cap, "/tmp/tessera-test-secret-%d-%zu", (int)getpid(), len);
    memset(buf, c, len);
    f = fopen(path, "w");
    assert_non_null(f);
    fwrite(buf, 1, len, f);
    fputc('\n', f);
    fclose(f);
}

static void test_secret_files(void **state)
{
    char good[128], shortp[128], longp[128];
    struct config c;

    (void)state;
    write_secret(good, sizeof(good), 'g', 40);
    write_secret(shortp, sizeof(shortp), 's', 31);
    write_secret(longp, sizeof(longp), 'l', 300);
    assert_int_equal(set1(&c, "storage.secret_file", good), OK);
    assert_int_equal(c.storage_secret.len, 40); /* the newline is not part of it */
    assert_int_equal(c.storage_secret.b[0], 'g');
    config_release(&c);
    /* too short, too long, missing: refused, naming the setting, never quoting the content */
    assert_int_equal(set1(&c, "storage.secret_file", shortp), E_INVALID);
    assert_err_contains("storage.secret_file");
    assert_err_contains("openssl rand");
    assert_null(strstr(err, "sssssss"));
    config_release(&c);
    assert_int_equal(set1(&c, "cache.secret_file", longp), E_INVALID);
    assert_err_contains("cache.secret_file");
    config_release(&c);
    assert_int_equal(set1(&c, "metrics.token_file", "/nonexistent/token"), E_INVALID);
    assert_err_contains("metrics.token_file");
    config_release(&c);
    /* a token and a password need 24 bytes, not 32 */
    write_secret(shortp, sizeof(shortp), 't', 24);
    assert_int_equal(set1(&c, "cache.redis_password_file", shortp), OK);
    assert_int_equal(c.redis_password.len, 24);
    config_release(&c);
    /* a previous secret without a current one, a user without a password: refused */
    assert_int_equal(set1(&c, "storage.secret_file_previous", good), E_INVALID);
    assert_err_contains("needs storage.secret_file");
    config_release(&c);
    assert_int_equal(set1(&c, "cache.redis_user", "tessera"), E_INVALID);
    assert_err_contains("cache.redis_password_file");
    config_release(&c);
    unlink(good);
    unlink(shortp);
    unlink(longp);
}

/* --- printed configuration --- */

static void test_print_defaults_round_trip(void **state)
{
    struct config def, back;
    char *text = print_defaults();
    char *want, *got;
    const char *path;

    (void)state;
    assert_int_equal(load_flags(&def, NULL, 0), OK);
    want = effective(&def);

    /* every section of the table has its header */
    for (const char *p = want; (p = strchr(p, '[')) != NULL; p++) {
        char header[64];
        size_t n = strcspn(p, "]\n");
        assert_true(n < sizeof(header) - 3);
        snprintf(header, sizeof(header), "\n%.*s]\n", (int)n, p);
        if (strstr(text, header) == NULL)
            fail_msg("config --defaults lacks the section header %s", header + 1);
    }
    assert_non_null(strstr(text, "\n[server]\n"));
    assert_non_null(strstr(text, "\n[limits]\n"));
    assert_non_null(strstr(text, "\n[storage]\n"));
    assert_non_null(strstr(text, "\n[auth]\n"));
    assert_non_null(strstr(text, "\n[cdn]\n"));
    assert_non_null(strstr(text, "\n[image]\n"));
    assert_non_null(strstr(text, "\n[log]\n"));

    path = write_file("defaults.ini", text);
    config_init(&back);
    if (config_load(&back, path, NULL, NULL, 0, err, sizeof(err)) != OK)
        fail_msg("config --defaults does not load back: %s", err);
    got = effective(&back);
    assert_string_equal(got, want);

    free(got);
    free(want);
    free(text);
    config_release(&back);
    config_release(&def);
    unlink(path);
}

static void test_print_effective_round_trip(void **state)
{
    struct config a, b;
    char *flags[] = {"server.listen=0.0.0.0:9999",
                     "server.idle_timeout=1500ms",
                     "limits.max_upload_bytes=3M",
                     "log.access=false",
                     "image.variants=thumb:10x20:png:30,big:100x100:jpeg:90",
                     "auth.upload_keys=0123456789abcdef01234567,fedcba9876543210fedcba98"};
    char *first, *second;
    const char *path;

    (void)state;
    assert_int_equal(load_flags(&a, flags, sizeof(flags) / sizeof(flags[0])), OK);
    first = effective(&a);
    assert_non_null(strstr(first, "idle_timeout = 1500ms\n"));
    assert_non_null(strstr(first, "max_upload_bytes = 3145728\n"));
    assert_non_null(strstr(first, "access = false\n"));
    path = write_file("effective.ini", first);
    config_init(&b);
    if (config_load(&b, path, NULL, NULL, 0, err, sizeof(err)) != OK)
        fail_msg("config_print_effective does not load back: %s", err);
    second = effective(&b);
    assert_string_equal(second, first);
    assert_int_equal(b.n_variants, 2);
    assert_int_equal(b.n_upload_keys, 2);
    free(first);
    free(second);
    config_release(&a);
    config_release(&b);
    unlink(path);
}

static void test_print_markdown(void **state)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    (void)state;
    assert_non_null(f);
    config_print_markdown(f);
    assert_int_equal(fclose(f), 0);
    assert_non_null(strstr(buf, "## [server]"));
    assert_non_null(strstr(buf, "## [log]"));
    assert_non_null(strstr(buf, "`TESSERA_SERVER_LISTEN`"));
    assert_non_null(strstr(buf, "`TESSERA_LIMITS_MAX_UPLOAD_BYTES`"));
    assert_non_null(strstr(buf, "`TESSERA_IMAGE_VARIANTS`"));
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_release_twice_and_reload),
        cmocka_unit_test(test_integer),
        cmocka_unit_test(test_size),
        cmocka_unit_test(test_duration),
        cmocka_unit_test(test_boolean),
        cmocka_unit_test(test_string),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_set_errors),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_file_values),
        cmocka_unit_test(test_transform_keys),
        cmocka_unit_test(test_admin_keys_file),
        cmocka_unit_test(test_srcset_widths),
        cmocka_unit_test(test_file_bad_value_names_line),
        cmocka_unit_test(test_file_unknown_key),
        cmocka_unit_test(test_file_syntax_error),
        cmocka_unit_test(test_file_missing),
        cmocka_unit_test(test_file_long_line),
        cmocka_unit_test(test_env_and_flag_priority),
        cmocka_unit_test(test_env_errors),
        cmocka_unit_test(test_variants_default),
        cmocka_unit_test(test_variants_parse),
        cmocka_unit_test(test_variants_errors),
        cmocka_unit_test(test_variants_limit),
        cmocka_unit_test(test_auth_keys),
        cmocka_unit_test(test_auth_short_key),
        cmocka_unit_test(test_auth_too_many_keys),
        cmocka_unit_test(test_secret_files),
        cmocka_unit_test(test_list_requires_key),
        cmocka_unit_test(test_print_defaults_round_trip),
        cmocka_unit_test(test_print_effective_round_trip),
        cmocka_unit_test(test_print_markdown),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
