/*
 * test_ratelimit.c - token buckets: burst, refill, Retry-After, client address choice.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
/* above: what cmocka.h needs before it, kept apart from the sorted block below */
#include "http/ratelimit.h"

#include <cmocka.h>
#include <stdint.h>
#include <string.h>

static void test_off(void **state)
{
    unsigned ra = 0;

    (void)state;
    assert_null(ratelimit_new(0, 10));
    assert_true(ratelimit_take(NULL, "a", 1, 1, &ra));
}

static void test_burst_then_refill(void **state)
{
    struct ratelimit *rl = ratelimit_new(60, 3); /* one a second, three at once */
    int64_t t = 1000000;
    unsigned ra = 0;

    (void)state;
    for (int i = 0; i < 3; i++)
        assert_true(ratelimit_take(rl, "k1", 2, t, &ra));
    assert_false(ratelimit_take(rl, "k1", 2, t, &ra));
    assert_int_equal(ra, 1);
    /* another identity has its own bucket */
    assert_true(ratelimit_take(rl, "k2", 2, t, &ra));
    /* half a second: still empty; a second: one token back */
    assert_false(ratelimit_take(rl, "k1", 2, t + 500000, &ra));
    assert_true(ra >= 1);
    assert_true(ratelimit_take(rl, "k1", 2, t + 1600000, &ra));
    assert_false(ratelimit_take(rl, "k1", 2, t + 1600000, &ra));
    /* a long pause refills to the burst, not beyond */
    t += 3600LL * 1000000;
    for (int i = 0; i < 3; i++)
        assert_true(ratelimit_take(rl, "k1", 2, t, &ra));
    assert_false(ratelimit_take(rl, "k1", 2, t, &ra));
    ratelimit_free(rl);
}

static void test_slow_rate_retry_after(void **state)
{
    struct ratelimit *rl = ratelimit_new(1, 1); /* one a minute */
    unsigned ra = 0;

    (void)state;
    assert_true(ratelimit_take(rl, "x", 1, 5, &ra));
    assert_false(ratelimit_take(rl, "x", 1, 5, &ra));
    assert_true(ra >= 59 && ra <= 61);
    ratelimit_free(rl);
}

static void test_client_addr(void **state)
{
    char out[64];

    (void)state;
    ratelimit_client_addr("10.0.0.9", "1.2.3.4", "", out, sizeof(out));
    assert_string_equal(out, "10.0.0.9"); /* no trusted proxy: the header is ignored */
    ratelimit_client_addr("10.0.0.9", "1.2.3.4", "10.0.0.1", out, sizeof(out));
    assert_string_equal(out, "10.0.0.9"); /* peer not trusted */
    ratelimit_client_addr("10.0.0.1", "6.6.6.6, 1.2.3.4", "127.0.0.1, 10.0.0.1", out, sizeof(out));
    assert_string_equal(out, "1.2.3.4"); /* the address the trusted proxy appended */
    ratelimit_client_addr("10.0.0.1", NULL, "10.0.0.1", out, sizeof(out));
    assert_string_equal(out, "10.0.0.1");
    ratelimit_client_addr("10.0.0.1", "", "10.0.0.1", out, sizeof(out));
    assert_string_equal(out, "10.0.0.1");
    ratelimit_client_addr("10.0.0.11", "1.2.3.4", "10.0.0.1", out, sizeof(out));
    assert_string_equal(out, "10.0.0.11"); /* no prefix match */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_off),
        cmocka_unit_test(test_burst_then_refill),
        cmocka_unit_test(test_slow_rate_retry_after),
        cmocka_unit_test(test_client_addr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
