/*
 * test_blob_cache.c - the local blob cache in front of a store: hits, misses,
 * deletes, eviction under its size, blobs too large to keep.
 *
 * The inner store is a file:// store standing in for the remote shards: the
 * cache does not care what it wraps.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
// cmocka needs the above first
#include "core/codec.h"
#include "core/crypto.h"
#include "core/err.h"
#include "store/blob.h"
#include "store/blob_cache.h"

#include <cmocka.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct fixture {
    char dir[64];
    char cache[96];
    struct blob_store *bs; /* the cache, owning the inner store */
    struct blob_store *inner;
};

static int setup_cap(void **state, uint64_t cap)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char url[128];

    snprintf(f->dir, sizeof(f->dir), "/tmp/tessera-bcache-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(url, sizeof(url), "file://%s/inner", f->dir);
    snprintf(f->cache, sizeof(f->cache), "%s/cache", f->dir);
    if (blob_store_open(url, &f->inner) != OK)
        return -1;
    if (blob_cache_open(f->inner, f->cache, cap, &f->bs) != OK)
        return -1;
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_cap(state, 64 * 1024);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    blob_store_free(f->bs);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* put_bytes stores n bytes of value c through the cache and writes their key. */
static void put_bytes(struct fixture *f, char c, size_t n, char key[SHA256_HEX])
{
    char src[128];
    uint8_t d[SHA256_LEN];
    char *buf = malloc(n);
    FILE *fp;

    memset(buf, c, n);
    sha256_buf(buf, n, d);
    hex_encode(d, sizeof(d), key);
    snprintf(src, sizeof(src), "%s/src", f->dir);
    fp = fopen(src, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, n, fp), n);
    fclose(fp);
    free(buf);
    assert_int_equal(blob_put_path(f->bs, key, src), OK);
}

static bool cached(const struct fixture *f, const char *key)
{
    char path[1024];

    snprintf(path, sizeof(path), "%s/%.2s/%s", f->cache, key, key);
    return access(path, F_OK) == 0;
}

static void read_back(struct fixture *f, const char *key, char c, size_t n)
{
    int fd = -1;
    uint64_t size = 0;
    char *buf = malloc(n + 1);

    assert_int_equal(blob_open(f->bs, key, &fd, &size), OK);
    assert_int_equal(size, n);
    assert_int_equal(pread(fd, buf, n + 1, 0), (ssize_t)n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(buf[i], c);
    close(fd);
    free(buf);
}

static void test_miss_then_hit(void **state)
{
    struct fixture *f = *state;
    char key[SHA256_HEX];

    put_bytes(f, 'a', 1000, key);
    assert_false(cached(f, key)); /* writes go to the inner store only */
    read_back(f, key, 'a', 1000);
    assert_true(cached(f, key)); /* the first read kept a copy */
    read_back(f, key, 'a', 1000);
    /* the copy serves even with the inner store's blob gone behind the cache's back */
    assert_int_equal(blob_delete(f->inner, key), OK);
    read_back(f, key, 'a', 1000);
}

static void test_delete_drops_copy(void **state)
{
    struct fixture *f = *state;
    char key[SHA256_HEX];
    int fd = -1;
    uint64_t size = 0;

    put_bytes(f, 'b', 2000, key);
    read_back(f, key, 'b', 2000);
    assert_true(cached(f, key));
    assert_int_equal(blob_delete(f->bs, key), OK);
    assert_false(cached(f, key));
    assert_int_equal(blob_open(f->bs, key, &fd, &size), E_NOTFOUND);
}

static void test_eviction_stays_under_cap(void **state)
{
    struct fixture *f = *state;
    char keys[12][SHA256_HEX];
    int present = 0;

    /* 12 blobs of 7 KiB through a 64 KiB cache: at most 9 copies stay */
    for (int i = 0; i < 12; i++) {
        put_bytes(f, (char)('c' + i), 7 * 1024, keys[i]);
        read_back(f, keys[i], (char)('c' + i), 7 * 1024);
    }
    for (int i = 0; i < 12; i++)
        present += cached(f, keys[i]);
    assert_true(present <= 9);
    assert_true(present >= 8);
    assert_false(cached(f, keys[0])); /* the least recently used went first */
    assert_true(cached(f, keys[11]));
    /* evicted blobs still read, through the inner store */
    read_back(f, keys[0], 'c', 7 * 1024);
}

static void test_large_blob_not_kept(void **state)
{
    struct fixture *f = *state;
    char key[SHA256_HEX];

    put_bytes(f, 'z', 9 * 1024, key); /* over cap / 8 = 8 KiB */
    read_back(f, key, 'z', 9 * 1024);
    assert_false(cached(f, key));
}

static void test_bad_arguments(void **state)
{
    struct blob_store *out = NULL;

    (void)state;
    assert_int_equal(blob_cache_open(NULL, "relative/dir", 1024, &out), E_INVALID);
    assert_null(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_miss_then_hit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_drops_copy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_eviction_stays_under_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_blob_not_kept, setup, teardown),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
