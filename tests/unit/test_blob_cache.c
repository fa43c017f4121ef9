/*
 * test_blob_cache.c - the local blob cache in front of a store: hits, misses,
 * deletes, eviction under its size (alone and with concurrent readers), its
 * tessera_blob_cache_* metrics, blobs too large to keep.
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
#include "core/metrics.h"
#include "core/strbuf.h"
#include "store/blob.h"
#include "store/blob_cache.h"

#include <cmocka.h>
#include <dirent.h>
#include <ftw.h>
#include <pthread.h>
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

/* metric_value returns the value of the unlabelled metric name as rendered for a scrape. */
static int64_t metric_value(const char *name)
{
    struct strbuf sb;
    char pat[128];
    const char *p;
    long long v = -1;

    strbuf_init(&sb, 1 << 20);
    metrics_render(&sb);
    snprintf(pat, sizeof(pat), "\n%s ", name);
    p = strstr(sb.buf, pat);
    assert_non_null(p);
    assert_int_equal(sscanf(p + strlen(pat), "%lld", &v), 1);
    strbuf_release(&sb);
    return v;
}

/* cached_bytes sums the sizes of the copies in the cache directory (tmp/ aside). */
static uint64_t cached_bytes(const struct fixture *f)
{
    uint64_t sum = 0;
    DIR *top = opendir(f->cache);
    struct dirent *d;

    assert_non_null(top);
    while ((d = readdir(top)) != NULL) {
        char sub[1024];
        DIR *dd;
        struct dirent *e;

        if (d->d_name[0] == '.' || strcmp(d->d_name, "tmp") == 0)
            continue;
        snprintf(sub, sizeof(sub), "%s/%s", f->cache, d->d_name);
        dd = opendir(sub);
        if (dd == NULL)
            continue;
        while ((e = readdir(dd)) != NULL) {
            char path[2048];
            struct stat st;

            snprintf(path, sizeof(path), "%s/%s", sub, e->d_name);
            if (e->d_name[0] != '.' && stat(path, &st) == 0)
                sum += (uint64_t)st.st_size;
        }
        closedir(dd);
    }
    closedir(top);
    return sum;
}

static void test_metrics(void **state)
{
    struct fixture *f = *state;
    char keys[12][SHA256_HEX];
    int64_t hits0 = metric_value("tessera_blob_cache_hits_total");
    int64_t misses0 = metric_value("tessera_blob_cache_misses_total");
    int64_t evictions0 = metric_value("tessera_blob_cache_evictions_total");

    for (int i = 0; i < 12; i++) {
        put_bytes(f, (char)('A' + i), 7 * 1024, keys[i]);
        read_back(f, keys[i], (char)('A' + i), 7 * 1024);
    }
    /* 64 KiB hold 9 copies of 7 KiB: 3 were evicted, and their files are gone */
    assert_int_equal(metric_value("tessera_blob_cache_misses_total") - misses0, 12);
    assert_int_equal(metric_value("tessera_blob_cache_evictions_total") - evictions0, 3);
    assert_int_equal(metric_value("tessera_blob_cache_bytes"), 9 * 7 * 1024);
    assert_int_equal(cached_bytes(f), 9 * 7 * 1024);
    read_back(f, keys[11], 'A' + 11, 7 * 1024);
    assert_int_equal(metric_value("tessera_blob_cache_hits_total") - hits0, 1);
    /* a delete drops the copy and its bytes, and is not an eviction */
    assert_int_equal(blob_delete(f->bs, keys[11]), OK);
    assert_int_equal(metric_value("tessera_blob_cache_bytes"), 8 * 7 * 1024);
    assert_int_equal(cached_bytes(f), 8 * 7 * 1024);
    assert_int_equal(metric_value("tessera_blob_cache_evictions_total") - evictions0, 3);
}

struct reader {
    struct fixture *f;
    char (*keys)[SHA256_HEX];
    int nkeys;
    int seed;
};

static void *reader_main(void *arg)
{
    struct reader *r = arg;

    for (int i = 0; i < 60; i++) {
        int k = (i * 7 + r->seed * 13) % r->nkeys;
        read_back(r->f, r->keys[k], (char)('a' + k), 5 * 1024 + (size_t)k);
    }
    return NULL;
}

static void test_concurrent_readers_stay_under_cap(void **state)
{
    struct fixture *f = *state;
    char keys[20][SHA256_HEX];
    struct reader r[4];
    pthread_t t[4];

    for (int i = 0; i < 20; i++)
        put_bytes(f, (char)('a' + i), 5 * 1024 + (size_t)i, keys[i]);
    for (int i = 0; i < 4; i++) {
        r[i] = (struct reader){f, keys, 20, i};
        pthread_create(&t[i], NULL, reader_main, &r[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    /* on disk never more than accounted, accounted never more than the cap */
    assert_true(cached_bytes(f) <= (uint64_t)metric_value("tessera_blob_cache_bytes"));
    assert_true(metric_value("tessera_blob_cache_bytes") <= 64 * 1024);
    assert_true(cached_bytes(f) > 0);
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
        cmocka_unit_test_setup_teardown(test_metrics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_readers_stay_under_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_blob_not_kept, setup, teardown),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
