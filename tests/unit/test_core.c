/*
 * test_core.c - unit tests of core/: codec (hex, base64url, dates), ident, strbuf,
 * and the LRU (entry and weight bounds, TTLs, tombstones, eviction callbacks, threads).
 *
 * Pins the encodings byte for byte (RFC 4648 vectors, RFC 7231 dates) and
 * every reject path of the decoders and validators that see client input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
/* above: what cmocka.h needs before it, kept apart from the sorted block below */
#include "core/codec.h"
#include "core/err.h"
#include "core/ident.h"
#include "core/log.h"
#include "core/lru.h"
#include "core/metrics.h"
#include "core/strbuf.h"

#include <cmocka.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- hex --- */

static void test_hex_encode(void **state)
{
    const uint8_t in[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
    char out[2 * sizeof(in) + 1];
    char empty[1] = {'x'};

    (void)state;
    hex_encode(in, sizeof(in), out);
    assert_string_equal(out, "00017f80abff");
    hex_encode(in, 0, empty);
    assert_string_equal(empty, "");
}

/* --- base64url --- */

struct b64_vector {
    const char *raw;
    const char *enc;
};

/* RFC 4648 section 10, without padding. */
static const struct b64_vector b64_vectors[] = {
    {"", ""},           {"f", "Zg"},          {"fo", "Zm8"},          {"foo", "Zm9v"},
    {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"},
};

static void test_b64url_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(b64_vectors) / sizeof(b64_vectors[0]); i++) {
        const struct b64_vector *v = &b64_vectors[i];
        size_t n = strlen(v->raw);
        char enc[32];
        uint8_t dec[32];
        long got;

        assert_int_equal(b64url_encoded_len(n), strlen(v->enc));
        b64url_encode((const uint8_t *)v->raw, n, enc);
        assert_string_equal(enc, v->enc);
        got = b64url_decode(v->enc, strlen(v->enc), dec, sizeof(dec));
        assert_int_equal(got, (long)n);
        assert_memory_equal(dec, v->raw, n);
    }
}

static void test_b64url_alphabet_is_url_safe(void **state)
{
    const uint8_t in[] = {0xfb, 0xff, 0xbf}; /* standard base64: "+/+/" */
    const uint8_t in2[] = {0xfb, 0xff};      /* standard base64: "+/8=" */
    char out[8];
    uint8_t dec[4];

    (void)state;
    b64url_encode(in, sizeof(in), out);
    assert_string_equal(out, "-_-_");
    b64url_encode(in2, sizeof(in2), out);
    assert_string_equal(out, "-_8");
    assert_int_equal(b64url_decode("-_-_", 4, dec, sizeof(dec)), 3);
    assert_memory_equal(dec, in, 3);
}

static void test_b64url_round_trip(void **state)
{
    uint8_t raw[200], dec[200];
    char enc[300];

    (void)state;
    srand(12345);
    for (size_t n = 0; n <= sizeof(raw); n++) {
        for (size_t i = 0; i < n; i++)
            raw[i] = (uint8_t)(rand() & 0xff);
        b64url_encode(raw, n, enc);
        assert_int_equal(strlen(enc), b64url_encoded_len(n));
        assert_null(strchr(enc, '='));
        assert_int_equal(b64url_decode(enc, strlen(enc), dec, sizeof(dec)), (long)n);
        assert_memory_equal(dec, raw, n);
    }
}

static void test_b64url_rejects_bad_chars(void **state)
{
    static const char *const bad[] = {
        "Zm9+", /* '+' and '/' are standard base64, not url */
        "Zm/v", "Zg==", "Zm8=", "Zm 9", "Zm9\n", "Zm9.", "Zm9*", "\xc3\xa9xx",
    };
    uint8_t dec[16];

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(b64url_decode(bad[i], strlen(bad[i]), dec, sizeof(dec)), -1);
    /* an embedded NUL inside the given length */
    assert_int_equal(b64url_decode("Zm\0v", 4, dec, sizeof(dec)), -1);
}

static void test_b64url_rejects_bad_lengths(void **state)
{
    uint8_t dec[16];

    (void)state;
    /* 4k+1 characters can never come from an encoder */
    assert_int_equal(b64url_decode("Z", 1, dec, sizeof(dec)), -1);
    assert_int_equal(b64url_decode("Zm9vY", 5, dec, sizeof(dec)), -1);
    assert_int_equal(b64url_decode("Zm9vYmFyZ", 9, dec, sizeof(dec)), -1);
    /* even when the lone character's bits are zero ('A' is 0) */
    assert_int_equal(b64url_decode("A", 1, dec, sizeof(dec)), -1);
    assert_int_equal(b64url_decode("Zm9vA", 5, dec, sizeof(dec)), -1);
    assert_int_equal(b64url_decode("", 0, dec, sizeof(dec)), 0);
}

static void test_b64url_rejects_noncanonical(void **state)
{
    uint8_t dec[16];

    (void)state;
    /* "Zg" is "f"; "Zh".."Zv" carry the same byte with nonzero trailing bits */
    assert_int_equal(b64url_decode("Zg", 2, dec, sizeof(dec)), 1);
    assert_int_equal(b64url_decode("Zh", 2, dec, sizeof(dec)), -1);
    assert_int_equal(b64url_decode("Zv", 2, dec, sizeof(dec)), -1);
    /* "Zm8" is "fo"; "Zm9" differs only in the two trailing bits */
    assert_int_equal(b64url_decode("Zm8", 3, dec, sizeof(dec)), 2);
    assert_int_equal(b64url_decode("Zm9", 3, dec, sizeof(dec)), -1);
    assert_int_equal(b64url_decode("Zm_", 3, dec, sizeof(dec)), -1);
}

static void test_b64url_short_buffer(void **state)
{
    uint8_t dec[8];

    (void)state;
    memset(dec, 0xaa, sizeof(dec));
    assert_int_equal(b64url_decode("Zm9vYmFy", 8, dec, 5), -1);
    assert_int_equal(dec[5], 0xaa); /* never written past cap */
    assert_int_equal(b64url_decode("Zm9vYmFy", 8, dec, 6), 6);
    assert_memory_equal(dec, "foobar", 6);
    assert_int_equal(b64url_decode("Zg", 2, dec, 0), -1);
}

/* --- dates --- */

static void test_time_rfc3339(void **state)
{
    char out[21];

    (void)state;
    time_rfc3339(0, out);
    assert_string_equal(out, "1970-01-01T00:00:00Z");
    time_rfc3339(1795775467, out);
    assert_string_equal(out, "2026-11-27T10:31:07Z");
    time_rfc3339(951782400, out); /* leap day */
    assert_string_equal(out, "2000-02-29T00:00:00Z");
    time_rfc3339(-1, out);
    assert_string_equal(out, "1969-12-31T23:59:59Z");
    time_rfc3339(253402300799LL, out); /* the last second with a 4-digit year */
    assert_string_equal(out, "9999-12-31T23:59:59Z");
}

static void test_time_http(void **state)
{
    char out[30];

    (void)state;
    time_http(784111777, out); /* the RFC 7231 example */
    assert_string_equal(out, "Sun, 06 Nov 1994 08:49:37 GMT");
    time_http(0, out);
    assert_string_equal(out, "Thu, 01 Jan 1970 00:00:00 GMT");
    time_http(1795775467, out);
    assert_string_equal(out, "Fri, 27 Nov 2026 10:31:07 GMT");
    time_http(951782400 + 86399, out);
    assert_string_equal(out, "Tue, 29 Feb 2000 23:59:59 GMT");
    assert_int_equal(strlen(out), 29);
}

static void test_time_clocks(void **state)
{
    int64_t a, b;

    (void)state;
    assert_true(time_now_us() > 1577836800LL * 1000000); /* after 2020-01-01 */
    a = time_mono_us();
    b = time_mono_us();
    assert_true(b >= a);
}

/* --- ident --- */

static bool id_pattern(const char *s)
{
    size_t n = strlen(s);

    if (n < 11 || n > 32)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

#define N_IDS 2000

static void test_image_id_new(void **state)
{
    char(*ids)[IMAGE_ID_LEN + 1] = calloc(N_IDS, sizeof(*ids));

    (void)state;
    assert_non_null(ids);
    for (size_t i = 0; i < N_IDS; i++) {
        image_id_new(ids[i]);
        assert_int_equal(strlen(ids[i]), IMAGE_ID_LEN);
        assert_true(id_pattern(ids[i]));
        assert_true(image_id_valid(ids[i], strlen(ids[i])));
    }
    qsort(ids, N_IDS, sizeof(*ids), cmp_id);
    for (size_t i = 1; i < N_IDS; i++)
        assert_string_not_equal(ids[i - 1], ids[i]);
    free(ids);
}

static void test_delete_token(void **state)
{
    char a[DELETE_TOKEN_LEN + 1], b[DELETE_TOKEN_LEN + 1];
    char h[SHA256_HEX];

    (void)state;
    delete_token_new(a);
    delete_token_new(b);
    assert_int_equal(strlen(a), DELETE_TOKEN_LEN);
    assert_true(id_pattern(a));
    assert_string_not_equal(a, b);
    delete_token_hash("abc", 3, h);
    assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    delete_token_hash(a, strlen(a), h);
    assert_true(blob_key_valid(h, strlen(h)));
}

static void test_image_id_valid(void **state)
{
    static const char *const good[] = {
        "Zk3v9QxT2bA",                      /* 11, the API.md example */
        "abcdefghijklmnopqrstuvwxyz012345", /* 32 */
        "___________",
        "-----------",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "0123456789_-aZ",
    };
    static const char *const bad[] = {
        "",
        "Zk3v9QxT2b",                        /* 10 */
        "abcdefghijklmnopqrstuvwxyz0123456", /* 33 */
        "Zk3v9QxT2b.",
        "Zk3v9QxT2b/",
        "../../etc/pa",
        "Zk3v9QxT2b+",
        "Zk3v9QxT2b=",
        "Zk3v9QxT2b ",
        "Zk3v9QxT2b%",
        "Zk3v9QxT\xc3\xa9",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_true(image_id_valid(good[i], strlen(good[i])));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(image_id_valid(bad[i], strlen(bad[i])));
    /* the length given wins over the NUL: a prefix may be valid, a NUL inside is not */
    assert_true(image_id_valid("Zk3v9QxT2bA.jpg", 11));
    assert_false(image_id_valid("Zk3v9QxT2bA.jpg", 12));
    assert_false(image_id_valid("Zk3v9\0xT2bA", 11));
    assert_false(image_id_valid(NULL, 0));
}

static void test_blob_key_valid(void **state)
{
    const char *key = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    char buf[80];

    (void)state;
    assert_true(blob_key_valid(key, 64));
    assert_true(
        blob_key_valid("0000000000000000000000000000000000000000000000000000000000000000", 64));
    assert_false(blob_key_valid(key, 63));
    assert_false(blob_key_valid("", 0));
    assert_false(blob_key_valid(NULL, 0));
    snprintf(buf, sizeof(buf), "%s0", key);
    assert_false(blob_key_valid(buf, 65));
    snprintf(buf, sizeof(buf), "%s", key);
    buf[10] = 'A'; /* uppercase hex is not the canonical form */
    assert_false(blob_key_valid(buf, 64));
    buf[10] = 'g';
    assert_false(blob_key_valid(buf, 64));
    buf[10] = '/';
    assert_false(blob_key_valid(buf, 64));
    buf[10] = '\0';
    assert_false(blob_key_valid(buf, 64));
    buf[10] = 'f';
    buf[63] = '.';
    assert_false(blob_key_valid(buf, 64));
}

/* --- strbuf --- */

static void test_strbuf_cap(void **state)
{
    struct strbuf sb;

    (void)state;
    strbuf_init(&sb, 10);
    assert_int_equal(strbuf_add(&sb, "0123456789", 10), OK);
    assert_int_equal(sb.len, 10);
    assert_string_equal(sb.buf, "0123456789");
    assert_int_equal(strbuf_add(&sb, "x", 1), E_TOOBIG);
    assert_int_equal(sb.len, 10);
    assert_string_equal(sb.buf, "0123456789");
    assert_int_equal(strbuf_addf(&sb, "%d", 1), E_TOOBIG);
    assert_string_equal(sb.buf, "0123456789");
    assert_int_equal(strbuf_add(&sb, "", 0), OK);
    assert_int_equal(strbuf_add(&sb, "x", SIZE_MAX), E_TOOBIG); /* no overflow, no allocation */
    assert_int_equal(sb.len, 10);
    strbuf_release(&sb);
    assert_null(sb.buf);
    assert_int_equal(sb.len, 0);
    assert_int_equal(sb.cap, 10); /* release keeps the cap: the buffer may be used again */
    assert_int_equal(strbuf_add(&sb, "abc", 3), OK);
    assert_string_equal(sb.buf, "abc");
    strbuf_release(&sb);
}

static void test_strbuf_addf(void **state)
{
    struct strbuf sb;

    (void)state;
    strbuf_init(&sb, 12);
    assert_int_equal(strbuf_addf(&sb, "%s=%d", "key", 42), OK);
    assert_string_equal(sb.buf, "key=42");
    assert_int_equal(strbuf_addf(&sb, "%s", "abcdef"), OK); /* exactly to the cap */
    assert_int_equal(sb.len, 12);
    assert_string_equal(sb.buf, "key=42abcdef");
    assert_int_equal(strbuf_addf(&sb, "%s", ""), OK);
    assert_int_equal(strbuf_addf(&sb, "%c", 'z'), E_TOOBIG);
    assert_string_equal(sb.buf, "key=42abcdef");
    strbuf_release(&sb);

    strbuf_init(&sb, 0);
    assert_int_equal(strbuf_addf(&sb, "%s", ""), OK);
    assert_int_equal(strbuf_add(&sb, "a", 1), E_TOOBIG);
    assert_int_equal(sb.len, 0);
    strbuf_release(&sb);
}

static void test_strbuf_growth_and_detach(void **state)
{
    struct strbuf sb;
    char *p;
    size_t len = 0;

    (void)state;
    strbuf_init(&sb, 100000);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(strbuf_addf(&sb, "%04d", i % 10000), OK);
    assert_int_equal(sb.len, 40000);
    assert_true(sb.alloc > sb.len);
    assert_int_equal(sb.buf[sb.len], '\0');
    assert_memory_equal(sb.buf, "000000010002", 12);
    assert_memory_equal(sb.buf + 39996, "9999", 4);
    p = strbuf_detach(&sb, &len);
    assert_int_equal(len, 40000);
    assert_int_equal(strlen(p), 40000);
    assert_null(sb.buf);
    assert_int_equal(sb.len, 0);
    free(p);

    /* an empty buffer detaches as an owned "" */
    p = strbuf_detach(&sb, &len);
    assert_non_null(p);
    assert_string_equal(p, "");
    assert_int_equal(len, 0);
    free(p);
    p = strbuf_detach(&sb, NULL);
    assert_string_equal(p, "");
    free(p);
    strbuf_release(&sb);
}

static void test_strbuf_binary(void **state)
{
    struct strbuf sb;
    const char bin[] = {'a', '\0', 'b', '\0'};

    (void)state;
    strbuf_init(&sb, 64);
    assert_int_equal(strbuf_add(&sb, bin, sizeof(bin)), OK);
    assert_int_equal(sb.len, 4);
    assert_memory_equal(sb.buf, bin, 4);
    assert_int_equal(sb.buf[4], '\0');
    strbuf_release(&sb);
}

/* --- lru --- */

/* lru_new_entries makes an LRU of n ints bounded by entries only, as the metadata cache uses it. */
static struct lru *lru_new_entries(size_t n)
{
    return lru_new(&(struct lru_opts){.max_entries = n, .value_size = sizeof(int)});
}

static void test_lru_basic_ttl(void **state)
{
    struct lru *l = lru_new_entries(4);
    int v = 7, out = 0;
    (void)state;

    assert_int_equal(lru_get(l, "a", 0, &out), LRU_MISS);
    assert_true(lru_put(l, "a", &v, 100, 0, false));
    assert_int_equal(lru_get(l, "a", 50, &out), LRU_VALUE);
    assert_int_equal(out, 7);
    assert_int_equal(lru_get(l, "a", 100, &out), LRU_MISS); /* expired at 100 */
    assert_int_equal(lru_count(l), 0);
    char longkey[LRU_KEY_MAX + 1];
    memset(longkey, 'k', LRU_KEY_MAX);
    longkey[LRU_KEY_MAX] = '\0';
    assert_false(lru_put(l, longkey, &v, 100, 0, false));
    lru_free(l);
    lru_free(NULL);
}

static void test_lru_eviction(void **state)
{
    struct lru *l = lru_new_entries(3);
    int out = 0;
    (void)state;

    for (int i = 0; i < 3; i++) {
        char k[16];
        snprintf(k, sizeof(k), "k%d", i);
        lru_put(l, k, &i, 1000, 0, false);
    }
    assert_int_equal(lru_get(l, "k0", 1, &out), LRU_VALUE); /* k0 now most recent */
    int four = 4;
    lru_put(l, "k3", &four, 1000, 1, false); /* evicts k1, the least recent */
    assert_int_equal(lru_count(l), 3);
    assert_int_equal(lru_get(l, "k1", 2, &out), LRU_MISS);
    assert_int_equal(lru_get(l, "k0", 2, &out), LRU_VALUE);
    assert_int_equal(lru_get(l, "k2", 2, &out), LRU_VALUE);
    assert_int_equal(lru_get(l, "k3", 2, &out), LRU_VALUE);
    assert_int_equal(out, 4);
    lru_del(l, "k3");
    assert_int_equal(lru_get(l, "k3", 2, &out), LRU_MISS);
    lru_clear(l);
    assert_int_equal(lru_count(l), 0);
    lru_free(l);

    /* a large LRU (striped) stays within its bound */
    l = lru_new_entries(2048);
    for (int i = 0; i < 10000; i++) {
        char k[16];
        snprintf(k, sizeof(k), "id%d", i);
        lru_put(l, k, &i, 1000, 0, false);
    }
    assert_true(lru_count(l) <= 2048);
    assert_true(lru_count(l) >= 2000);
    assert_int_equal(lru_get(l, "id9999", 1, &out), LRU_VALUE);
    lru_free(l);
}

static void test_lru_tombstone(void **state)
{
    struct lru *l = lru_new_entries(8);
    int v = 1, out = 0;
    (void)state;

    lru_put(l, "x", &v, 1000, 0, false);
    assert_true(lru_put(l, "x", NULL, 500, 0, true)); /* the invalidation */
    assert_int_equal(lru_get(l, "x", 1, &out), LRU_GONE);
    assert_false(lru_put(l, "x", &v, 1000, 1, false)); /* a late fill is refused */
    assert_int_equal(lru_get(l, "x", 2, &out), LRU_GONE);
    assert_true(lru_put(l, "x", &v, 1000, 600, false)); /* after the tombstone expired */
    assert_int_equal(lru_get(l, "x", 601, &out), LRU_VALUE);
    lru_free(l);
}

struct hammer {
    struct lru *l;
    int seed;
};

static void *hammer_main(void *arg)
{
    struct hammer *h = arg;
    int out;

    for (int i = 0; i < 20000; i++) {
        char k[16];
        int v = (i * 7 + h->seed) % 3000;
        snprintf(k, sizeof(k), "h%d", v);
        if (lru_get(h->l, k, 1, &out) == LRU_VALUE)
            assert_int_equal(out, v);
        else
            lru_put(h->l, k, &v, 1000, 1, false);
        if (i % 1000 == 0)
            lru_put(h->l, k, NULL, 1000, 1, true);
    }
    return NULL;
}

static void test_lru_threads(void **state)
{
    struct hammer h[4];
    pthread_t t[4];
    (void)state;

    struct lru *l = lru_new_entries(1024);
    for (int i = 0; i < 4; i++) {
        h[i] = (struct hammer){l, i};
        pthread_create(&t[i], NULL, hammer_main, &h[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_true(lru_count(l) <= 1024);
    lru_free(l);
}

struct evicted {
    char keys[16][16];
    uint64_t weights[16];
    int values[16];
    size_t n;
    struct lru *l; /* to call back into */
    size_t count_seen;
};

static void on_evict(void *arg, const char *key, const void *value, uint64_t weight)
{
    struct evicted *ev = arg;

    assert_true(ev->n < 16);
    snprintf(ev->keys[ev->n], sizeof(ev->keys[0]), "%s", key);
    memcpy(&ev->values[ev->n], value, sizeof(int));
    ev->weights[ev->n] = weight;
    ev->n++;
    ev->count_seen = lru_count(ev->l); /* the stripe lock is not held: this must not deadlock */
}

static void test_lru_weight_bound(void **state)
{
    struct evicted ev = {0};
    struct lru *l = lru_new(&(struct lru_opts){
        .max_weight = 100,
        .value_size = sizeof(int),
        .stripes = 1,
        .evict = on_evict,
        .evict_arg = &ev,
    });
    int out = 0;
    (void)state;

    ev.l = l;
    for (int i = 0; i < 4; i++) {
        char k[16];
        snprintf(k, sizeof(k), "w%d", i);
        assert_true(lru_put_weighted(l, k, &i, 30, LRU_NEVER, 0, true));
    }
    /* 4 x 30 > 100: the least recent (w0) went, with its value and weight */
    assert_int_equal(lru_weight(l), 90);
    assert_int_equal(lru_count(l), 3);
    assert_int_equal(ev.n, 1);
    assert_string_equal(ev.keys[0], "w0");
    assert_int_equal(ev.values[0], 0);
    assert_int_equal(ev.weights[0], 30);
    assert_int_equal(ev.count_seen, 3);
    assert_int_equal(lru_get(l, "w0", 0, &out), LRU_MISS);

    /* a heavy entry evicts as many as it needs, least recent first, never itself */
    assert_int_equal(lru_get(l, "w1", 0, &out), LRU_VALUE); /* w1 now most recent */
    int big = 99;
    assert_true(lru_put_weighted(l, "big", &big, 60, LRU_NEVER, 0, true));
    assert_int_equal(ev.n, 3);
    assert_string_equal(ev.keys[1], "w2");
    assert_string_equal(ev.keys[2], "w3");
    assert_int_equal(lru_weight(l), 90);
    assert_int_equal(lru_get(l, "w1", 0, &out), LRU_VALUE);
    assert_int_equal(out, 1);

    /* replacing a key re-weighs it; an entry heavier than the bound is refused */
    assert_true(lru_put_weighted(l, "big", &big, 70, LRU_NEVER, 0, true));
    assert_int_equal(ev.n, 3);
    assert_int_equal(lru_weight(l), 100);
    assert_false(lru_put_weighted(l, "huge", &big, 101, LRU_NEVER, 0, true));
    assert_int_equal(lru_get(l, "huge", 0, &out), LRU_MISS);
    assert_int_equal(lru_weight(l), 100);

    /* deletes, expiries and clears are not evictions */
    assert_true(lru_del(l, "big"));
    assert_false(lru_del(l, "big"));
    assert_int_equal(lru_weight(l), 30);
    assert_true(lru_put_weighted(l, "short", &big, 10, 5, 0, true));
    assert_int_equal(lru_get(l, "short", 5, &out), LRU_MISS);
    lru_clear(l);
    assert_int_equal(lru_weight(l), 0);
    assert_int_equal(ev.n, 3);
    lru_free(l);
}

static void test_lru_both_bounds(void **state)
{
    struct evicted ev = {0};
    struct lru *l = lru_new(&(struct lru_opts){
        .max_entries = 2,
        .max_weight = 1000,
        .value_size = sizeof(int),
        .evict = on_evict,
        .evict_arg = &ev,
    });
    int v = 5;
    (void)state;

    ev.l = l;
    /* light entries: the entry bound evicts */
    assert_true(lru_put_weighted(l, "a", &v, 1, LRU_NEVER, 0, true));
    assert_true(lru_put_weighted(l, "b", &v, 1, LRU_NEVER, 0, true));
    assert_true(lru_put_weighted(l, "c", &v, 1, LRU_NEVER, 0, true));
    assert_int_equal(ev.n, 1);
    assert_string_equal(ev.keys[0], "a");
    assert_int_equal(lru_count(l), 2);
    /* a tombstone is an entry too; its value reaches the evict function zeroed */
    assert_true(lru_put(l, "t", NULL, LRU_NEVER, 0, true));
    assert_string_equal(ev.keys[1], "b");
    assert_true(lru_put(l, "u", NULL, LRU_NEVER, 0, true));
    assert_string_equal(ev.keys[2], "c");
    assert_true(lru_put(l, "x", &v, LRU_NEVER, 0, true));
    assert_string_equal(ev.keys[3], "t");
    assert_int_equal(ev.values[3], 0);
    assert_int_equal(ev.weights[3], 0);
    lru_free(l);
}

static void test_lru_stripes_split_bounds(void **state)
{
    /* 4 stripes over a weight of 400: each holds at most 100, so no total over 400 */
    struct lru *l = lru_new(&(struct lru_opts){.max_weight = 400, .stripes = 4});
    (void)state;

    for (int i = 0; i < 1000; i++) {
        char k[16];
        snprintf(k, sizeof(k), "s%d", i);
        lru_put_weighted(l, k, "", 7, LRU_NEVER, 0, true);
        assert_true(lru_weight(l) <= 400);
    }
    assert_true(lru_weight(l) > 300);
    /* over a stripe's share (100) is refused even though the total bound is 400 */
    assert_false(lru_put_weighted(l, "heavy", "", 101, LRU_NEVER, 0, true));
    assert_true(lru_put_weighted(l, "heavy", "", 100, LRU_NEVER, 0, true));
    lru_free(l);

    /* more stripes asked for than the bounds allow are capped: a bound of 2 gets 2 */
    l = lru_new(&(struct lru_opts){.max_entries = 2, .stripes = 16});
    assert_true(lru_put(l, "p", "", LRU_NEVER, 0, true));
    assert_true(lru_put(l, "q", "", LRU_NEVER, 0, true));
    assert_true(lru_count(l) >= 1);
    assert_true(lru_count(l) <= 2);
    lru_free(l);
}

static void test_lru_no_entry_bound(void **state)
{
    /* weight-bounded only: the table grows, long keys fit key_max, no value needed */
    char key[80], longkey[81];
    struct lru *l = lru_new(&(struct lru_opts){
        .max_weight = UINT64_MAX / 2,
        .key_max = sizeof(key),
        .stripes = 1,
    });
    (void)state;

    for (int i = 0; i < 100000; i++) {
        snprintf(key, sizeof(key), "%064d", i);
        assert_true(lru_put_weighted(l, key, "", (uint64_t)i, LRU_NEVER, 0, true));
    }
    assert_int_equal(lru_count(l), 100000);
    assert_int_equal(lru_weight(l), (uint64_t)99999 * 100000 / 2);
    for (int i = 0; i < 100000; i += 997) {
        snprintf(key, sizeof(key), "%064d", i);
        assert_int_equal(lru_get(l, key, 0, NULL), LRU_VALUE);
    }
    /* key_max counts the NUL: 79 characters fit, 80 do not */
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    assert_false(lru_put_weighted(l, longkey, "", 1, LRU_NEVER, 0, true));
    longkey[sizeof(key) - 1] = '\0';
    assert_true(lru_put_weighted(l, longkey, "", 1, LRU_NEVER, 0, true));
    assert_int_equal(lru_get(l, longkey, 0, NULL), LRU_VALUE);
    lru_free(l);
}

/* hex_decode reverses hex_encode, either case; refuses odd lengths, non-digits and overflow. */
static void test_hex_decode(void **state)
{
    uint8_t out[4];

    (void)state;
    assert_int_equal(hex_decode("00ff7Fa0", 8, out, sizeof(out)), 4);
    assert_int_equal(out[0], 0x00);
    assert_int_equal(out[1], 0xff);
    assert_int_equal(out[2], 0x7f);
    assert_int_equal(out[3], 0xa0);
    assert_int_equal(hex_decode("abc", 3, out, sizeof(out)), -1);
    assert_int_equal(hex_decode("zz", 2, out, sizeof(out)), -1);
    assert_int_equal(hex_decode("0011223344", 10, out, sizeof(out)), -1);
    assert_int_equal(hex_decode("", 0, out, sizeof(out)), 0);
}

/* log_escape: a request's bytes can never start a log line of their own or break the text. */
static void test_log_escape(void **state)
{
    char out[128];
    const char forged[] = "/i/x\nFAKE 2026 info access: admin\r\x1b[2J";

    (void)state;
    log_escape(forged, strlen(forged), out, sizeof(out));
    assert_null(strchr(out, '\n'));
    assert_null(strchr(out, '\r'));
    assert_null(strchr(out, 0x1b));
    assert_string_equal(out, "/i/x\\x0aFAKE 2026 info access: admin\\x0d\\x1b[2J");
    /* well-formed UTF-8 stays as it is; broken sequences, overlongs and surrogates are escaped */
    log_escape("caf\xc3\xa9 \xe2\x82\xac", 9, out, sizeof(out));
    assert_string_equal(out, "caf\xc3\xa9 \xe2\x82\xac");
    log_escape("a\xc3(\xc0\xaf\xed\xa0\x80\xff", 9, out, sizeof(out));
    assert_string_equal(out, "a\\xc3(\\xc0\\xaf\\xed\\xa0\\x80\\xff");
    /* the backslash is escaped so an escape cannot be forged either */
    log_escape("a\\x0ab", 6, out, sizeof(out));
    assert_string_equal(out, "a\\\\x0ab");
    /* bounded: the output is cut, terminated, never overrun */
    memset(out, 'Z', sizeof(out));
    assert_true(log_escape("\n\n\n\n\n\n\n\n", 8, out, 12) < 12);
    assert_int_equal(out[11] == 'Z' || strlen(out) < 12, 1);
}

/* histogram_render: cumulative buckets with the labels, +Inf = count, sum in seconds. */
static void test_histogram(void **state)
{
    struct histogram h = {0};
    struct strbuf sb;

    (void)state;
    histogram_observe(&h, 300);      /* 0.3 ms: the first bucket */
    histogram_observe(&h, 2000);     /* 2 ms: le 0.0025 */
    histogram_observe(&h, 60000000); /* a minute: only +Inf */
    strbuf_init(&sb, 1 << 16);
    histogram_render(&sb, "t_seconds", "kind=\"k\"", &h);
    assert_non_null(strstr(sb.buf, "t_seconds_bucket{kind=\"k\",le=\"0.0005\"} 1\n"));
    assert_non_null(strstr(sb.buf, "t_seconds_bucket{kind=\"k\",le=\"0.001\"} 1\n"));
    assert_non_null(strstr(sb.buf, "t_seconds_bucket{kind=\"k\",le=\"0.0025\"} 2\n"));
    assert_non_null(strstr(sb.buf, "t_seconds_bucket{kind=\"k\",le=\"10\"} 2\n"));
    assert_non_null(strstr(sb.buf, "t_seconds_bucket{kind=\"k\",le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(sb.buf, "t_seconds_sum{kind=\"k\"} 60.002300\n"));
    assert_non_null(strstr(sb.buf, "t_seconds_count{kind=\"k\"} 3\n"));
    strbuf_release(&sb);
    strbuf_init(&sb, 1 << 16);
    histogram_render(&sb, "u_seconds", "", &h); /* no labels: no empty braces */
    assert_non_null(strstr(sb.buf, "u_seconds_bucket{le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(sb.buf, "u_seconds_count 3\n"));
    strbuf_release(&sb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hex_encode),
        cmocka_unit_test(test_hex_decode),
        cmocka_unit_test(test_log_escape),
        cmocka_unit_test(test_b64url_vectors),
        cmocka_unit_test(test_b64url_alphabet_is_url_safe),
        cmocka_unit_test(test_b64url_round_trip),
        cmocka_unit_test(test_b64url_rejects_bad_chars),
        cmocka_unit_test(test_b64url_rejects_bad_lengths),
        cmocka_unit_test(test_b64url_rejects_noncanonical),
        cmocka_unit_test(test_b64url_short_buffer),
        cmocka_unit_test(test_time_rfc3339),
        cmocka_unit_test(test_time_http),
        cmocka_unit_test(test_time_clocks),
        cmocka_unit_test(test_image_id_new),
        cmocka_unit_test(test_delete_token),
        cmocka_unit_test(test_image_id_valid),
        cmocka_unit_test(test_blob_key_valid),
        cmocka_unit_test(test_strbuf_cap),
        cmocka_unit_test(test_strbuf_addf),
        cmocka_unit_test(test_strbuf_growth_and_detach),
        cmocka_unit_test(test_strbuf_binary),
        cmocka_unit_test(test_lru_basic_ttl),
        cmocka_unit_test(test_lru_eviction),
        cmocka_unit_test(test_lru_tombstone),
        cmocka_unit_test(test_lru_threads),
        cmocka_unit_test(test_lru_weight_bound),
        cmocka_unit_test(test_lru_both_bounds),
        cmocka_unit_test(test_lru_stripes_split_bounds),
        cmocka_unit_test(test_lru_no_entry_bound),
        cmocka_unit_test(test_histogram),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
