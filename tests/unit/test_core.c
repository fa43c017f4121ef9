/*
 * test_core.c - unit tests of core/: codec (hex, base64url, dates), ident, strbuf.
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
#include "core/strbuf.h"

#include <cmocka.h>
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hex_encode),
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
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
