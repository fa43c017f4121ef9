/*
 * test_cache.c - the cache module without servers: CRC16 and hash slots (the
 * Redis Cluster spec's vectors and hash-tag rules), MOVED/ASK and address
 * parsing, and the Redis value encoding (the LRU is tested in test_core.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
// cmocka needs the above first
#include "cache/cache.h"
#include "cache/rcluster.h"
#include "core/err.h"
#include "meta/meta.h"

#include <cmocka.h>
#include <stdio.h>
#include <string.h>

static unsigned slot_of(const char *k)
{
    return rcluster_key_slot(k, strlen(k));
}

static void test_crc16_vector(void **state)
{
    (void)state;
    assert_int_equal(rcluster_crc16("123456789", 9), 0x31C3);
    assert_int_equal(slot_of("123456789"), 12739);
    assert_int_equal(rcluster_crc16("", 0), 0);
    /* values redis-cli CLUSTER KEYSLOT gives */
    assert_int_equal(slot_of("foo"), 12182);
    assert_int_equal(slot_of("bar"), 5061);
}

static void test_hash_tags(void **state)
{
    (void)state;
    /* the spec's examples */
    assert_int_equal(slot_of("{user1000}.following"), slot_of("{user1000}.followers"));
    assert_int_equal(slot_of("{user1000}.following"), slot_of("user1000"));
    assert_int_equal(slot_of("foo{}{bar}"), rcluster_crc16("foo{}{bar}", 10) & 16383);
    assert_int_equal(slot_of("foo{{bar}}zap"), slot_of("{bar"));
    assert_int_equal(slot_of("foo{bar}{zap}"), slot_of("bar"));
    assert_int_equal(slot_of("no{close"), rcluster_crc16("no{close", 8) & 16383);
    for (int i = 0; i < 1000; i++) {
        char k[32];
        snprintf(k, sizeof(k), "tessera:img:%d", i);
        assert_true(slot_of(k) < RCLUSTER_SLOTS);
    }
}

static void test_redirects(void **state)
{
    struct rcluster_redirect r;
    const char *moved = "MOVED 3999 127.0.0.1:6381";
    const char *ask = "ASK 12739 10.0.0.7:7002";
    const char *v6 = "MOVED 1 ::1:7003";
    (void)state;

    assert_int_equal(rcluster_parse_redirect(moved, strlen(moved), &r), OK);
    assert_false(r.ask);
    assert_int_equal(r.slot, 3999);
    assert_string_equal(r.host, "127.0.0.1");
    assert_int_equal(r.port, 6381);
    assert_int_equal(rcluster_parse_redirect(ask, strlen(ask), &r), OK);
    assert_true(r.ask);
    assert_int_equal(r.slot, 12739);
    assert_string_equal(r.host, "10.0.0.7");
    assert_int_equal(r.port, 7002);
    assert_int_equal(rcluster_parse_redirect(v6, strlen(v6), &r), OK);
    assert_string_equal(r.host, "::1");
    assert_int_equal(r.port, 7003);

    static const char *const bad[] = {
        "ERR unknown command",
        "MOVED",
        "MOVED ",
        "MOVED 3999",
        "MOVED 3999 ",
        "MOVED 16384 h:1",
        "MOVED x h:1",
        "MOVED 1 h",
        "MOVED 1 h:",
        "MOVED 1 :7000",
        "MOVED 1 h:0",
        "MOVED 1 h:65536",
        "MOVED 1 h:70a",
        "MOVED 1  h:1",
        "ASK 1",
        "CLUSTERDOWN The cluster is down",
        "TRYAGAIN Multiple keys request during rehashing of slot",
        "moved 1 h:1",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(rcluster_parse_redirect(bad[i], strlen(bad[i]), &r), E_INVALID);
    /* not NUL-terminated: only len counts */
    assert_int_equal(rcluster_parse_redirect("MOVED 5 h:12345", 12, &r), OK);
    assert_int_equal(r.port, 12);
}

static void test_seed_list(void **state)
{
    struct rcluster_opts o = {
        "127.0.0.1:7001, 127.0.0.1:7002,127.0.0.1:7003", 100, 100, 1000, 4, NULL, NULL};
    struct rcluster *rc = NULL;
    struct rcluster_node_info ni[4];
    (void)state;

    assert_int_equal(rcluster_new(&o, &rc), OK);
    assert_int_equal(rcluster_nodes(rc, ni, 4), 3);
    assert_string_equal(ni[1].addr, "127.0.0.1:7002");
    assert_true(ni[0].up);
    rcluster_free(rc);
    static const char *const bad[] = {"", " , ", "localhost", "h:99999", "h:1,nope"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        o.nodes = bad[i];
        assert_int_equal(rcluster_new(&o, &rc), E_INVALID);
        assert_null(rc);
    }
}

/* A dead node costs one refused connection, then fails fast while marked down. */
static void test_down_node_fails_fast(void **state)
{
    struct rcluster_opts o = {"127.0.0.1:1", 100, 100, 60000, 4, NULL, NULL};
    struct rcluster *rc = NULL;
    struct rcluster_node_info ni[1];
    char buf[16];
    size_t len;
    (void)state;

    assert_int_equal(rcluster_new(&o, &rc), OK);
    assert_int_equal(rcluster_get(rc, "k", buf, sizeof(buf), &len), E_UNAVAILABLE);
    assert_int_equal(rcluster_nodes(rc, ni, 1), 1);
    assert_false(ni[0].up);
    int64_t errors = ni[0].errors;
    for (int i = 0; i < 100; i++)
        assert_int_equal(rcluster_get(rc, "k", buf, sizeof(buf), &len), E_UNAVAILABLE);
    rcluster_nodes(rc, ni, 1);
    assert_int_equal(ni[0].errors, errors); /* no new attempt during the back-off */
    assert_int_equal(rcluster_publish(rc, "c", "m", NULL), E_UNAVAILABLE);
    rcluster_free(rc);
}

static void test_value_codec(void **state)
{
    struct image_rec r, back;
    char buf[CACHE_VALUE_MAX];
    (void)state;

    memset(&r, 0, sizeof(r));
    snprintf(r.id, sizeof(r.id), "abcDEF0123456789");
    r.seq = 42;
    memset(r.key, 'a', SHA256_HEX - 1);
    snprintf(r.format, sizeof(r.format), "jpeg");
    r.width = 4000;
    r.height = 3000;
    r.frames = 1;
    r.bytes = 5000000000ULL;
    r.created_at = 1700000000;
    memset(r.token_hash, 'f', SHA256_HEX - 1);
    size_t n = cache_rec_encode(&r, buf);
    assert_true(n > 0 && n < sizeof(buf));
    assert_int_equal(cache_rec_decode(buf, n, r.id, &back), OK);
    assert_memory_equal(&r, &back, sizeof(r));
    snprintf(r.owner, sizeof(r.owner), "0123456789abcdef");
    n = cache_rec_encode(&r, buf);
    assert_int_equal(cache_rec_decode(buf, n, r.id, &back), OK);
    assert_string_equal(back.owner, r.owner);

    assert_int_equal(cache_rec_decode("0", 1, "x", &back), E_NOTFOUND);
    static const char *const bad[] = {"",  "1", "2|1", "1|", "1|x|k", "1|1|short|jpeg|1|1|1|1|1||h",
                                      "00"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(cache_rec_decode(bad[i], strlen(bad[i]), "x", &back), E_INVALID);
    /* truncated or extended good values */
    n = cache_rec_encode(&r, buf);
    assert_int_equal(cache_rec_decode(buf, n - 1 - (SHA256_HEX - 1), "x", &back), E_INVALID);
    buf[n] = '|';
    buf[n + 1] = 'x';
    assert_int_equal(cache_rec_decode(buf, n + 2, "x", &back), E_INVALID);
}

/* Sealed values: any change of text, MAC or id fails the check; another key fails too. */
static void test_seal(void **state)
{
    struct secret k = {32, {0}}, other = {32, {0}};
    char buf[CACHE_VALUE_MAX + CACHE_MAC_HEX + 2], copy[sizeof(buf)];
    size_t n, len;

    (void)state;
    memset(k.b, 'k', k.len);
    memset(other.b, 'o', other.len);
    strcpy(buf, "0");
    n = cache_seal(&k, "rec", "abcdefghijk", buf, 1, sizeof(buf));
    assert_int_equal(n, 1 + 1 + CACHE_MAC_HEX);
    len = n;
    assert_int_equal(cache_unseal(&k, "rec", "abcdefghijk", buf, &len), OK);
    assert_int_equal(len, 1);
    /* another id, domain or key */
    len = n;
    assert_int_equal(cache_unseal(&k, "rec", "abcdefghijl", buf, &len), E_INVALID);
    len = n;
    assert_int_equal(cache_unseal(&k, "msg", "abcdefghijk", buf, &len), E_INVALID);
    len = n;
    assert_int_equal(cache_unseal(&other, "rec", "abcdefghijk", buf, &len), E_INVALID);
    /* every one-byte change */
    for (size_t i = 0; i < n; i++) {
        memcpy(copy, buf, n);
        copy[i] ^= 1;
        len = n;
        assert_int_equal(cache_unseal(&k, "rec", "abcdefghijk", copy, &len), E_INVALID);
    }
    /* unsealed, truncated, too long for the buffer */
    len = 1;
    assert_int_equal(cache_unseal(&k, "rec", "abcdefghijk", "0", &len), E_INVALID);
    len = n - 1;
    assert_int_equal(cache_unseal(&k, "rec", "abcdefghijk", buf, &len), E_INVALID);
    assert_int_equal(cache_seal(&k, "rec", "x", buf, sizeof(buf) - CACHE_MAC_HEX, sizeof(buf)), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc16_vector),
        cmocka_unit_test(test_hash_tags),
        cmocka_unit_test(test_redirects),
        cmocka_unit_test(test_seed_list),
        cmocka_unit_test(test_down_node_fails_fast),
        cmocka_unit_test(test_value_codec),
        cmocka_unit_test(test_seal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
