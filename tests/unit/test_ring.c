/*
 * test_ring.c - placement properties of the ring: determinism, distinct
 * replicas, zone spread, movement only onto an added / off a removed shard,
 * weights honoured; and the errors of ring_parse. The plan of a move between
 * two rings (store/ring_move.h): the union reaches both placements, adding
 * one of N+1 shards moves about R/(N+1) of the keys, only onto it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
// cmocka needs the above first
#include "core/err.h"
#include "store/ring.h"
#include "store/ring_move.h"
#include "store/ring_walk.h"

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
    expect_bad("s1=s3+http://a:1/ab", 1, 1, "is not file:///");
    expect_bad("s1=http://a:1;region=eu-west-1", 1, 1, "region");
    expect_bad("s1=s3+http://a:1/bkt;region=EU", 1, 1, "region");

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

    /* S3 shards: a bucket and prefix, a region of their own, kept by the description */
    assert_int_equal(ring_parse("m=s3+https://s3.example.com/my.bucket/img;region=eu-west-1,"
                                "n=s3+http://127.0.0.1:18081/tessera",
                                1, 1, &r, err, sizeof(err)),
                     OK);
    assert_string_equal(r->shards[0].region, "eu-west-1");
    assert_string_equal(r->shards[1].region, "");
    d = ring_describe(r);
    assert_int_equal(ring_parse_described(d, &back, err, sizeof(err)), OK);
    assert_string_equal(back->epoch, r->epoch);
    assert_string_equal(back->shards[0].region, "eu-west-1");
    free(d);
    ring_free(back);
    ring_free(r);
}

/* --- plans between two rings (store/ring_move.h) --- */

static int cmp_copy(const void *a, const void *b)
{
    const struct ring_copy *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c != 0 ? c : (x->shard > y->shard) - (x->shard < y->shard);
}

/*
 * listing_on places KEYS keys of size 10 on their R homes of old and returns
 * the listing of the union ring uni that the shards would give.
 */
static void listing_on(const struct ring *old, const struct ring *uni, struct ring_listing *l)
{
    uint64_t st = 7;

    memset(l, 0, sizeof(*l));
    l->v = calloc((size_t)KEYS * old->replicas, sizeof(*l->v));
    assert_non_null(l->v);
    for (unsigned long k = 0; k < KEYS; k++) {
        char key[BLOB_KEY_LEN + 1];
        unsigned home[RING_MAX_REPLICAS];
        snprintf(key, sizeof(key), "%016llx%048d", (unsigned long long)next_key(&st), 0);
        size_t nh = ring_lookup(old, key, home, old->replicas);
        for (size_t h = 0; h < nh; h++) {
            struct ring_copy *c = &l->v[l->n++];
            int u = ring_find(uni, old->shards[home[h]].id);
            assert_true(u >= 0);
            memcpy(c->key, key, sizeof(c->key));
            c->shard = (unsigned)u;
            c->size = 10;
        }
    }
    qsort(l->v, l->n, sizeof(*l->v), cmp_copy);
    l->nkeys = KEYS;
}

static void test_union_reaches_both(void **state)
{
    (void)state;
    struct ring *a = make_ring(6, 2, NULL, 0);
    struct ring *b = make_ring(8, 3, NULL, 0);
    struct ring *u = NULL, *moved = NULL;
    char err[256] = "";

    assert_int_equal(ring_union(a, b, &u, err, sizeof(err)), OK);
    assert_int_equal(u->n, 8);
    assert_int_equal(u->replicas, 1);
    for (int pass = 0; pass < 2; pass++) {
        const struct ring *r = pass == 0 ? a : b;
        for (size_t i = 0; i < r->n; i++) {
            int j = ring_find(u, r->shards[i].id);
            assert_true(j >= 0);
            assert_string_equal(u->shards[j].url, r->shards[i].url);
        }
    }
    /* every home of every key, on either ring, is a shard of the union */
    uint64_t st = 3;
    for (int k = 0; k < 1000; k++) {
        unsigned home[RING_MAX_REPLICAS];
        uint64_t h = next_key(&st);
        size_t n = ring_lookup_hash(b, h, home, b->replicas);
        for (size_t i = 0; i < n; i++)
            assert_true(ring_find(u, b->shards[home[i]].id) >= 0);
        n = ring_lookup_hash(a, h, home, a->replicas);
        for (size_t i = 0; i < n; i++)
            assert_true(ring_find(u, a->shards[home[i]].id) >= 0);
    }
    ring_free(u);
    /* the same id at another URL is refused: it would be read as the old location */
    assert_int_equal(ring_parse("s1=http://10.0.0.1:9000,s2=http://10.0.0.99:9000", 1, 1, &moved,
                                err, sizeof(err)),
                     OK);
    assert_int_equal(ring_union(a, moved, &u, err, sizeof(err)), E_INVALID);
    assert_null(u);
    assert_non_null(strstr(err, "s2 changes URL"));
    ring_free(moved);
    ring_free(a);
    ring_free(b);
}

static void test_plan_add_one(void **state)
{
    (void)state;
    for (unsigned r = 1; r <= 2; r++) {
        struct ring *a = make_ring(8, r, NULL, 0);
        struct ring *b = make_ring(9, r, NULL, 0);
        struct ring *u = NULL;
        struct ring_listing l;
        struct ring_plan pl;
        char err[256];
        assert_int_equal(ring_union(a, b, &u, err, sizeof(err)), OK);
        int s9 = ring_find(u, "s9");
        listing_on(a, u, &l);
        ring_plan(u, b, &l, &pl);
        assert_int_equal(pl.keys, KEYS);
        /* HRW: a key moves when the new shard ranks among its top R of N+1 */
        double ideal = (double)r / 9.0, frac = (double)pl.moving / KEYS;
        assert_true(frac > ideal / 1.1 && frac < ideal * 1.1);
        /* one copy a moving key, onto s9; the copy it replaces is the one pruned */
        assert_int_equal(pl.add, pl.moving);
        assert_int_equal(pl.remove, pl.add);
        assert_int_equal(pl.add_bytes, 10 * pl.add);
        assert_int_equal(pl.remove_bytes, pl.add_bytes);
        for (size_t i = 0, j; i < l.n; i = j) {
            struct ring_key_plan kp;
            j = ring_walk_group(&l, i);
            ring_key_plan(u, b, &l.v[i], j - i, &kp);
            assert_int_equal(kp.nhome, r);
            for (size_t x = 0; x < kp.nadd; x++)
                assert_int_equal(kp.add[x], s9);
            /* after the move every home holds it: held before or added now */
            for (size_t h = 0; h < kp.nhome; h++) {
                bool held = false;
                for (size_t q = i; q < j; q++)
                    held = held || l.v[q].shard == kp.home[h];
                for (size_t x = 0; x < kp.nadd; x++)
                    held = held || kp.add[x] == kp.home[h];
                assert_true(held);
            }
        }
        /* planning the ring in force against itself moves nothing */
        ring_plan(u, a, &l, &pl);
        assert_int_equal(pl.moving, 0);
        assert_int_equal(pl.add, 0);
        assert_int_equal(pl.remove, 0);
        free(l.v);
        ring_free(u);
        ring_free(a);
        ring_free(b);
    }
}

static void test_plan_remove_one(void **state)
{
    (void)state;
    struct ring *a = make_ring(8, 2, NULL, 0);
    struct ring *b = make_ring(7, 2, NULL, 0); /* s8 removed */
    struct ring *u = NULL;
    struct ring_listing l;
    struct ring_plan pl;
    char err[256];
    size_t on_s8 = 0;

    assert_int_equal(ring_union(a, b, &u, err, sizeof(err)), OK);
    assert_int_equal(u->n, 8);
    listing_on(a, u, &l);
    for (size_t i = 0; i < l.n; i++)
        on_s8 += l.v[i].shard == (unsigned)ring_find(u, "s8");
    ring_plan(u, b, &l, &pl);
    /* exactly the copies on s8 go, each replaced by one copy elsewhere */
    assert_int_equal(pl.remove, on_s8);
    assert_int_equal(pl.add, on_s8);
    assert_int_equal(pl.moving, on_s8);
    double frac = (double)pl.moving / KEYS;
    assert_true(frac > 0.25 / 1.1 && frac < 0.25 * 1.1);
    free(l.v);
    ring_free(u);
    ring_free(a);
    ring_free(b);
}

/* Draining a shard: the ring without it, or a refusal that says why. */
static void test_without(void **state)
{
    struct ring *r = make_ring(4, 3, NULL, 0), *w = NULL, *again = NULL;
    char err[256];

    (void)state;
    assert_int_equal(ring_without(r, "s9", &w, err, sizeof(err)), E_NOTFOUND);
    assert_null(w);
    assert_non_null(strstr(err, "s9"));
    assert_int_equal(ring_without(r, "s2", &w, err, sizeof(err)), OK);
    assert_int_equal(w->n, 3);
    assert_int_equal(w->replicas, 3);
    assert_int_equal(ring_find(w, "s2"), -1);
    assert_true(strcmp(w->epoch, r->epoch) != 0);
    /* "s1" is a prefix of no other id here, but "s" must not match "s1" */
    assert_int_equal(ring_without(w, "s", &again, err, sizeof(err)), E_NOTFOUND);
    /* 3 shards for R=3: one more drain would leave 2 */
    assert_int_equal(ring_without(w, "s1", &again, err, sizeof(err)), E_INVALID);
    assert_null(again);
    assert_non_null(strstr(err, "would leave 2 shards for R=3"));
    ring_free(w);
    ring_free(r);
    /* zones: copies in 3 distinct zones, one shard a zone: draining one leaves 2 zones */
    r = make_ring(4, 3, NULL, 3);
    assert_int_equal(ring_without(r, "s4", &w, err, sizeof(err)), OK); /* z0 keeps s1 */
    ring_free(w);
    assert_int_equal(ring_without(r, "s2", &w, err, sizeof(err)), E_INVALID);
    assert_non_null(strstr(err, "zone"));
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
        cmocka_unit_test(test_union_reaches_both),
        cmocka_unit_test(test_plan_add_one),
        cmocka_unit_test(test_plan_remove_one),
        cmocka_unit_test(test_without),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
