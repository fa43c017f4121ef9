/*
 * test_ring.c - placement properties of the ring: determinism, distinct
 * replicas, zone spread, movement only onto an added / off a removed shard,
 * weights honoured; and the errors of ring_parse.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
// cmocka needs the above first
#include "core/err.h"
#include "store/ring.h"

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEYS 100000

static uint64_t next_key(uint64_t *st)
{
    uint64_t z = (*st += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* make_ring builds shards s1..sn (weights from w, zones z0..z(zones-1) when zones > 0). */
static struct ring *make_ring(unsigned n, unsigned r, const double *w, unsigned zones)
{
    char text[16384], err[256];
    size_t len = 0;
    struct ring *ring = NULL;

    text[0] = '\0';
    for (unsigned i = 0; i < n; i++) {
        len += (size_t)snprintf(text + len, sizeof(text) - len, "s%u=http://10.0.0.%u:9000", i + 1,
                                i + 1);
        if (w != NULL)
            len += (size_t)snprintf(text + len, sizeof(text) - len, ";weight=%g", w[i]);
        if (zones > 0)
            len += (size_t)snprintf(text + len, sizeof(text) - len, ";zone=z%u", i % zones);
        len += (size_t)snprintf(text + len, sizeof(text) - len, ",\n");
    }
    assert_int_equal(ring_parse(text, r, 1, &ring, err, sizeof(err)), OK);
    return ring;
}

static void test_deterministic_and_order_independent(void **state)
{
    (void)state;
    struct ring *a = make_ring(8, 3, NULL, 0);
    struct ring *b = NULL;
    char err[256];
    /* the same shards listed in another order: same ids, same placement */
    const char *text = "s8=http://10.0.0.8:9000,s7=http://10.0.0.7:9000,s6=http://10.0.0.6:9000,"
                       "s5=http://10.0.0.5:9000,s4=http://10.0.0.4:9000,s3=http://10.0.0.3:9000,"
                       "s2=http://10.0.0.2:9000,s1=http://10.0.0.1:9000";
    assert_int_equal(ring_parse(text, 3, 1, &b, err, sizeof(err)), OK);
    assert_string_equal(a->epoch, b->epoch);
    uint64_t st = 7;
    for (int k = 0; k < 10000; k++) {
        uint64_t h = next_key(&st);
        unsigned ra[3], ra2[3], rb[3];
        ring_lookup_hash(a, h, ra, 3);
        ring_lookup_hash(a, h, ra2, 3);
        ring_lookup_hash(b, h, rb, 3);
        for (int i = 0; i < 3; i++) {
            assert_int_equal(ra[i], ra2[i]);
            assert_string_equal(a->shards[ra[i]].id, b->shards[rb[i]].id);
        }
    }
    /* a key's hash comes from its first 16 hex digits */
    assert_true(ring_key_hash("00000000000000ff"
                              "0000") == 0xff);
    ring_free(a);
    ring_free(b);
}

static void test_distinct_replicas_and_full_order(void **state)
{
    (void)state;
    struct ring *r = make_ring(5, 3, NULL, 0);
    uint64_t st = 1;
    for (int k = 0; k < 10000; k++) {
        unsigned o[5], top[3];
        uint64_t h = next_key(&st);
        assert_int_equal(ring_lookup_hash(r, h, o, 5), 5);
        assert_int_equal(ring_lookup_hash(r, h, top, 3), 3);
        for (int i = 0; i < 5; i++) {
            for (int j = 0; j < i; j++)
                assert_int_not_equal(o[i], o[j]);
        }
        /* the full order starts with the replicas */
        for (int i = 0; i < 3; i++)
            assert_int_equal(o[i], top[i]);
    }
    ring_free(r);
}

static void test_zone_spread(void **state)
{
    (void)state;
    /* 9 shards in 3 zones, R=3: one replica per zone, always */
    struct ring *r = make_ring(9, 3, NULL, 3);
    /* 6 shards in 2 zones, R=3: both zones used, then the best remaining */
    struct ring *r2 = make_ring(6, 3, NULL, 2);
    uint64_t st = 3;
    assert_int_equal(r->nzones, 3);
    for (int k = 0; k < 20000; k++) {
        unsigned o[3];
        uint64_t h = next_key(&st);
        ring_lookup_hash(r, h, o, 3);
        assert_int_not_equal(r->shards[o[0]].zone_idx, r->shards[o[1]].zone_idx);
        assert_int_not_equal(r->shards[o[0]].zone_idx, r->shards[o[2]].zone_idx);
        assert_int_not_equal(r->shards[o[1]].zone_idx, r->shards[o[2]].zone_idx);
        ring_lookup_hash(r2, h, o, 3);
        assert_int_not_equal(r2->shards[o[0]].zone_idx, r2->shards[o[1]].zone_idx);
        assert_true(o[2] != o[0] && o[2] != o[1]);
    }
    ring_free(r);
    ring_free(r2);
}

/* moves counts replica-set changes from a to b (shards matched by id); bad: not involving changed.
 */
static void moves(const struct ring *a, const struct ring *b, unsigned rep, bool add, double *frac,
                  unsigned long *bad)
{
    uint64_t st = 11;
    unsigned long moved = 0;

    *bad = 0;
    for (int k = 0; k < KEYS; k++) {
        unsigned oa[8], ob[8];
        uint64_t h = next_key(&st);
        ring_lookup_hash(a, h, oa, rep);
        ring_lookup_hash(b, h, ob, rep);
        for (unsigned i = 0; i < rep; i++) {
            bool found = false;
            for (unsigned j = 0; j < rep && !found; j++)
                found = strcmp(b->shards[ob[i]].id, a->shards[oa[j]].id) == 0;
            if (!found) {
                moved++;
                /* adding: the new member must be the added shard; removing: the old member
                 * that left must be the removed one */
                if (add && ring_find(a, b->shards[ob[i]].id) >= 0)
                    (*bad)++;
            }
        }
        if (!add) {
            for (unsigned i = 0; i < rep; i++) {
                if (ring_find(b, a->shards[oa[i]].id) >= 0) {
                    bool kept = false;
                    for (unsigned j = 0; j < rep && !kept; j++)
                        kept = strcmp(b->shards[ob[j]].id, a->shards[oa[i]].id) == 0;
                    if (!kept)
                        (*bad)++;
                }
            }
        }
    }
    *frac = (double)moved / (double)(KEYS * rep);
}

static void test_add_moves_only_to_new(void **state)
{
    (void)state;
    for (unsigned n = 4; n <= 16; n *= 2) {
        struct ring *a = make_ring(n, 2, NULL, 0);
        struct ring *b = make_ring(n + 1, 2, NULL, 0);
        double frac;
        unsigned long bad;
        moves(a, b, 2, true, &frac, &bad);
        assert_int_equal(bad, 0);
        double ideal = 1.0 / (n + 1);
        assert_true(frac > ideal / 1.1 && frac < ideal * 1.1);
        ring_free(a);
        ring_free(b);
    }
}

static void test_remove_moves_only_from_removed(void **state)
{
    (void)state;
    struct ring *a = make_ring(8, 3, NULL, 0);
    struct ring *b = make_ring(7, 3, NULL, 0); /* s8 removed */
    double frac;
    unsigned long bad;
    moves(a, b, 3, false, &frac, &bad);
    assert_int_equal(bad, 0);
    assert_true(frac > 0.125 / 1.1 && frac < 0.125 * 1.1);
    ring_free(a);
    ring_free(b);
}

static void test_balance_and_weights(void **state)
{
    (void)state;
    const double w[6] = {1, 1, 2, 2, 4, 4};
    struct ring *eq = make_ring(10, 1, NULL, 0);
    struct ring *wr = make_ring(6, 1, w, 0);
    unsigned long le[10] = {0}, lw[6] = {0};
    uint64_t st = 5;
    const int keys = 1000000;

    assert_true(eq->equal_weights);
    assert_false(wr->equal_weights);
    for (int k = 0; k < keys; k++) {
        unsigned o;
        uint64_t h = next_key(&st);
        ring_lookup_hash(eq, h, &o, 1);
        le[o]++;
        ring_lookup_hash(wr, h, &o, 1);
        lw[o]++;
    }
    for (int i = 0; i < 10; i++)
        assert_true(le[i] < keys / 10 * 1.02 && le[i] > keys / 10 * 0.98);
    for (int i = 0; i < 6; i++) {
        double share = w[i] / 14.0 * keys;
        assert_true(lw[i] < share * 1.03 && lw[i] > share * 0.97);
    }
    ring_free(eq);
    ring_free(wr);
}

static void expect_bad(const char *text, unsigned r, unsigned w, const char *words)
{
    struct ring *ring = (struct ring *)1;
    char err[512] = "";
    assert_int_equal(ring_parse(text, r, w, &ring, err, sizeof(err)), E_INVALID);
    assert_null(ring);
    if (strstr(err, words) == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", err, words);
}

static void test_parse_errors(void **state)
{
    (void)state;
    expect_bad("", 1, 1, "no shard");
    expect_bad("s1", 1, 1, "ID=URL");
    expect_bad("S1=http://a:1", 1, 1, "shard id");
    expect_bad("s1=ftp://a", 1, 1, "is not file:///");
    expect_bad("s1=http://a", 1, 1, "is not file:///");
    expect_bad("s1=http://a:70000", 1, 1, "is not file:///");
    expect_bad("s1=file:///", 1, 1, "is not file:///");
    expect_bad("s1=http://a:1;weight=0", 1, 1, "weight");
    expect_bad("s1=http://a:1;weight=x", 1, 1, "weight");
    expect_bad("s1=http://a:1;colour=red", 1, 1, "unknown option");
    expect_bad("s1=http://a:1,s1=http://b:1", 1, 1, "twice");
    expect_bad("s1=http://a:1,s2=http://a:1", 1, 1, "same URL");
    expect_bad("s1=http://a:1;zone=a,s2=http://b:1", 1, 1, "every shard or to none");
    expect_bad("s1=http://a:1,s2=http://b:1", 3, 1, "storage.replicas");
    expect_bad("s1=http://a:1,s2=http://b:1", 1, 2, "storage.write_quorum");

    struct ring *r = NULL;
    char err[256];
    assert_int_equal(ring_parse(" # comment\n s1 = http://a:1/ ; zone=eu-1 ; weight=2.5 ,\n\n"
                                "s2=file:///srv/b;zone=eu-2",
                                2, 2, &r, err, sizeof(err)),
                     OK);
    assert_int_equal(r->n, 2);
    assert_string_equal(r->shards[0].url, "http://a:1");
    assert_string_equal(r->shards[0].zone, "eu-1");
    assert_true(r->shards[0].weight == 2.5);
    assert_int_equal(r->nzones, 2);
    assert_int_equal(strlen(r->epoch), RING_EPOCH_LEN);
    /* the described text parses back to the same ring */
    char *d = ring_describe(r);
    struct ring *back = NULL;
    assert_int_equal(ring_parse_described(d, &back, err, sizeof(err)), OK);
    assert_string_equal(back->epoch, r->epoch);
    free(d);
    ring_free(back);
    ring_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deterministic_and_order_independent),
        cmocka_unit_test(test_distinct_replicas_and_full_order),
        cmocka_unit_test(test_zone_spread),
        cmocka_unit_test(test_add_moves_only_to_new),
        cmocka_unit_test(test_remove_moves_only_from_removed),
        cmocka_unit_test(test_balance_and_weights),
        cmocka_unit_test(test_parse_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
