/*
 * test_blob.c - the blob store contract, against the file:// backend, and against the
 * s3+http:// backend when TESSERA_TEST_S3_URL names a bucket (tests/unit/blob_s3.sh starts
 * a real Swift with s3api and sets it, with TESSERA_TEST_S3_CREDENTIALS).
 *
 * Each test gets a fresh mkdtemp directory (and, on S3, a fresh prefix of the bucket);
 * the disk-full test mounts a 64 KiB tmpfs when it runs as root (and skips otherwise),
 * unmounting it afterwards. Checks of the file layout run on file:// only.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
// cmocka needs the above first
#include "core/codec.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/log.h"
#include "store/blob.h"
#include "store/blob_s3.h"
#include "store/blob_switch.h"
#include "store/node_auth.h"
#include "store/scrub.h"

#include <cmocka.h>
#include <curl/curl.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct fixture {
    char dir[64];    /* everything of the test lives here */
    char root[96];   /* the store's root */
    char src[96];    /* a source file */
    char mnt[64];    /* the tmpfs mount point, when mounted */
    char tmp[128];   /* where the store makes its temporaries */
    char s3url[512]; /* on S3: the bucket and this test's prefix */
    bool file;       /* the file:// backend: its layout can be checked */
    struct blob_store *bs;
};

static const char *s3_base;  /* TESSERA_TEST_S3_URL: s3+http://host:port/bucket */
static const char *s3_creds; /* TESSERA_TEST_S3_CREDENTIALS: its credentials file */

/* s3_opts: the options of an S3 store whose downloads go to f->tmp. */
static struct blob_s3_opts s3_opts(const struct fixture *f, const char *creds)
{
    struct blob_s3_opts o = {f->tmp, "us-east-1", creds, NULL, false, BLOB_S3_MIN_PART, 1000, 5000};
    return o;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char url[128];

    snprintf(f->dir, sizeof(f->dir), "/tmp/tessera-blob-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->root, sizeof(f->root), "%s/store/shard-1", f->dir); /* created by open */
    snprintf(f->src, sizeof(f->src), "%s/src.bin", f->dir);
    if (s3_base != NULL) {
        /* a prefix of its own: tests never see each other's objects */
        snprintf(f->tmp, sizeof(f->tmp), "%s/tmp", f->dir);
        snprintf(f->s3url, sizeof(f->s3url), "%s/t/%s", s3_base, f->dir + strlen("/tmp/"));
        struct blob_s3_opts o = s3_opts(f, s3_creds);
        if (mkdir(f->tmp, 0700) != 0 || blob_s3_open(f->s3url, &o, &f->bs) != OK)
            return -1;
        *state = f;
        return 0;
    }
    f->file = true;
    snprintf(f->tmp, sizeof(f->tmp), "%s/tmp", f->root);
    snprintf(url, sizeof(url), "file://%s", f->root);
    if (blob_store_open(url, &f->bs) != OK)
        return -1;
    *state = f;
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    blob_store_free(f->bs);
    if (f->mnt[0] != '\0') {
        umount2(f->mnt, MNT_DETACH);
        rmdir(f->mnt);
    }
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* write_file writes n bytes of a pattern seeded by seed to path. */
static void write_file(const char *path, size_t n, unsigned seed)
{
    FILE *fp = fopen(path, "wb");

    assert_non_null(fp);
    for (size_t i = 0; i < n; i++)
        fputc((int)((i * 31 + seed) & 0xff), fp);
    assert_int_equal(fclose(fp), 0);
}

static void key_of_file(const char *path, char key[SHA256_HEX])
{
    uint8_t d[SHA256_LEN];
    int fd = open(path, O_RDONLY);

    assert_true(fd >= 0);
    assert_int_equal(sha256_fd(fd, d), OK);
    close(fd);
    hex_encode(d, sizeof(d), key);
}

/* dir_entries counts the entries of a directory other than "." and "..". */
static int dir_entries(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *de;
    int n = 0;

    assert_non_null(d);
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

/* tmp_entries counts the temporaries left in a file:// store's root/tmp; 0 on S3 (none kept). */
static int tmp_entries(const char *root)
{
    char tmp[160];

    if (s3_base != NULL)
        return 0;
    assert_true((size_t)snprintf(tmp, sizeof(tmp), "%s/tmp", root) < sizeof(tmp));
    return dir_entries(tmp);
}

static void test_roundtrip(void **state)
{
    struct fixture *f = *state;
    char key[SHA256_HEX], path[256];
    char buf[300000];
    struct stat st;
    uint64_t size = 0;
    bool exists = true;
    int fd = -1;

    write_file(f->src, 200000, 7);
    key_of_file(f->src, key);
    assert_int_equal(blob_store_check(f->bs), OK);
    assert_int_equal(blob_exists(f->bs, key, &exists), OK);
    assert_false(exists);
    assert_int_equal(blob_open(f->bs, key, &fd, &size), E_NOTFOUND);
    assert_int_equal(fd, -1);

    assert_int_equal(blob_put_path(f->bs, key, f->src), OK);
    assert_int_equal(blob_exists(f->bs, key, &exists), OK);
    assert_true(exists);
    snprintf(path, sizeof(path), "%s/%.2s/%.2s/%s", f->root, key, key + 2, key);
    if (f->file) {
        assert_int_equal(stat(path, &st), 0); /* the documented layout */
        assert_int_equal(st.st_size, 200000);
    }

    assert_int_equal(blob_open(f->bs, key, &fd, &size), OK);
    assert_true(fd >= 0);
    assert_int_equal(size, 200000);
    assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    if (f->file) /* a remote store hands out its private download (read-write) */
        assert_int_equal(fcntl(fd, F_GETFL) & O_ACCMODE, O_RDONLY);
    ssize_t got = 0, n;
    while ((n = read(fd, buf + got, sizeof(buf) - (size_t)got)) > 0)
        got += n;
    close(fd);
    assert_int_equal(got, 200000);
    for (size_t i = 0; i < 200000; i++)
        assert_int_equal((unsigned char)buf[i], (i * 31 + 7) & 0xff);
    assert_int_equal(tmp_entries(f->root), 0);

    assert_int_equal(blob_delete(f->bs, key), OK);
    assert_int_equal(blob_exists(f->bs, key, &exists), OK);
    assert_false(exists);
    assert_int_equal(blob_open(f->bs, key, &fd, &size), E_NOTFOUND);
    assert_int_equal(blob_delete(f->bs, key), OK); /* absent: fine */
}

static void test_empty_blob(void **state)
{
    struct fixture *f = *state;
    char key[SHA256_HEX];
    uint64_t size = 1;
    int fd = -1;

    write_file(f->src, 0, 0);
    key_of_file(f->src, key);
    assert_int_equal(blob_put_path(f->bs, key, f->src), OK);
    assert_int_equal(blob_open(f->bs, key, &fd, &size), OK);
    assert_int_equal(size, 0);
    close(fd);
}

static void test_idempotent_put(void **state)
{
    struct fixture *f = *state;
    char key[SHA256_HEX], path[256], missing[160];
    struct stat st1, st2;

    write_file(f->src, 1000, 1);
    key_of_file(f->src, key);
    assert_int_equal(blob_put_path(f->bs, key, f->src), OK);
    snprintf(path, sizeof(path), "%s/%.2s/%.2s/%s", f->root, key, key + 2, key);
    assert_int_equal(stat(path, &st1), f->file ? 0 : -1);
    assert_int_equal(blob_put_path(f->bs, key, f->src), OK);
    /* Already there: not even the source is read. */
    snprintf(missing, sizeof(missing), "%s/does-not-exist", f->dir);
    assert_int_equal(blob_put_path(f->bs, key, missing), OK);
    if (f->file) {
        assert_int_equal(stat(path, &st2), 0);
        assert_int_equal(st1.st_ino, st2.st_ino);
    }
    assert_int_equal(tmp_entries(f->root), 0);
}

static void test_delete_absent(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(
        blob_delete(f->bs, "0000000000000000000000000000000000000000000000000000000000000000"), OK);
}

static void test_bad_keys(void **state)
{
    struct fixture *f = *state;
    char nul_key[65];
    const char *bad[] = {
        "",
        "../..",
        "../../../../../../etc/passwd",
        "000000000000000000000000000000000000000000000000000000000000000",   /* 63 */
        "00000000000000000000000000000000000000000000000000000000000000000", /* 65 */
        "ABCDEF0000000000000000000000000000000000000000000000000000000000",  /* uppercase */
        "../00000000000000000000000000000000000000000000000000000000000000", /* 64 with ../ */
        "00/0000000000000000000000000000000000000000000000000000000000000",
        nul_key,
        NULL,
    };
    uint64_t size;
    bool exists;
    int fd;

    memset(nul_key, 'a', 64);
    nul_key[10] = '\0'; /* 64 bytes with a NUL inside: seen as 10 */
    nul_key[64] = '\0';
    write_file(f->src, 100, 3);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(blob_put_path(f->bs, bad[i], f->src), E_INVALID);
        assert_int_equal(blob_open(f->bs, bad[i], &fd, &size), E_INVALID);
        assert_int_equal(fd, -1);
        assert_int_equal(blob_exists(f->bs, bad[i], &exists), E_INVALID);
        assert_int_equal(blob_delete(f->bs, bad[i]), E_INVALID);
    }
    /* Nothing was created: the root holds only its empty tmp directory. */
    if (f->file)
        assert_int_equal(dir_entries(f->root), 1);
    assert_int_equal(tmp_entries(f->root), 0);
}

static void test_failed_put_leaves_nothing(void **state)
{
    struct fixture *f = *state;
    char missing[160], subdir[160];
    const char *key = "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789";
    bool exists = true;

    snprintf(missing, sizeof(missing), "%s/does-not-exist", f->dir);
    log_min_level = LOG_OFF;
    assert_int_equal(blob_put_path(f->bs, key, missing), E_IO);
    /* A directory as the source: open works, reading fails after the temp was made. */
    snprintf(subdir, sizeof(subdir), "%s/store", f->dir);
    assert_int_equal(blob_put_path(f->bs, key, subdir), E_IO);
    log_min_level = LOG_WARN;
    assert_int_equal(blob_exists(f->bs, key, &exists), OK);
    assert_false(exists);
    assert_int_equal(tmp_entries(f->root), 0);
    if (f->file)
        assert_int_equal(dir_entries(f->root), 1);
}

static void test_tmp_path(void **state)
{
    struct fixture *f = *state;
    char a[256], b[256], small[16], prefix[160];

    assert_int_equal(blob_tmp_path(f->bs, a, sizeof(a)), OK);
    assert_int_equal(blob_tmp_path(f->bs, b, sizeof(b)), OK);
    assert_string_not_equal(a, b);
    snprintf(prefix, sizeof(prefix), "%s/", f->tmp);
    assert_int_equal(strncmp(a, prefix, strlen(prefix)), 0);
    assert_int_equal(strlen(a), strlen(prefix) + 32 + 4);
    assert_string_equal(a + strlen(a) - 4, ".tmp");
    assert_int_equal(blob_tmp_path(f->bs, small, sizeof(small)), E_INVALID);

    /* A caller builds its file there, then puts it. */
    char key[SHA256_HEX];
    write_file(a, 5000, 9);
    key_of_file(a, key);
    assert_int_equal(blob_put_path(f->bs, key, a), OK);
    unlink(a);
    assert_int_equal(tmp_entries(f->root), 0);
}

static void test_check(void **state)
{
    struct fixture *f = *state;
    char tmp[160];

    assert_int_equal(blob_store_check(f->bs), OK);
    snprintf(tmp, sizeof(tmp), "%s/tmp", f->root);
    assert_int_equal(rmdir(tmp), 0);
    assert_int_equal(blob_store_check(f->bs), E_UNAVAILABLE);
}

static void test_stale_temporaries_swept(void **state)
{
    struct fixture *f = *state;
    char old[256], fresh[256], url[128];
    struct timespec times[2];

    assert_int_equal(blob_tmp_path(f->bs, old, sizeof(old)), OK);
    assert_int_equal(blob_tmp_path(f->bs, fresh, sizeof(fresh)), OK);
    write_file(old, 10, 0);
    write_file(fresh, 10, 0);
    clock_gettime(CLOCK_REALTIME, &times[0]);
    times[0].tv_sec -= 2 * 3600;
    times[1] = times[0];
    assert_int_equal(utimensat(AT_FDCWD, old, times, 0), 0);
    blob_store_free(f->bs);
    f->bs = NULL;
    snprintf(url, sizeof(url), "file://%s/", f->root); /* a trailing slash is fine */
    assert_int_equal(blob_store_open(url, &f->bs), OK);
    assert_int_equal(access(old, F_OK), -1);
    assert_int_equal(access(fresh, F_OK), 0);
}

static void test_bad_urls(void **state)
{
    struct fixture *f = *state;
    struct blob_store *bs = (struct blob_store *)f;
    char url[160];
    const char *bad[] = {"",
                         "file://",
                         "file:///",
                         "file://relative/path",
                         "http://127.0.0.1/x",
                         "/abs/path/without/scheme",
                         NULL};

    log_min_level = LOG_OFF;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(blob_store_open(bad[i], &bs), E_INVALID);
        assert_null(bs);
    }
    /* A root that is a file cannot be used. */
    write_file(f->src, 1, 0);
    snprintf(url, sizeof(url), "file://%s", f->src);
    assert_int_equal(blob_store_open(url, &bs), E_IO);
    assert_null(bs);
    log_min_level = LOG_WARN;
}

struct racer {
    struct blob_store *bs;
    const char *key;
    const char *src;
    int rc;
};

static void *race_put(void *arg)
{
    struct racer *r = arg;

    r->rc = blob_put_path(r->bs, r->key, r->src);
    return NULL;
}

static void test_concurrent_same_key(void **state)
{
    struct fixture *f = *state;
    enum { N = 6 };
    pthread_t th[N];
    struct racer r[N];
    char key[SHA256_HEX], again[SHA256_HEX], path[256];

    write_file(f->src, 300000, 5);
    key_of_file(f->src, key);
    for (int i = 0; i < N; i++) {
        r[i] = (struct racer){f->bs, key, f->src, -100};
        assert_int_equal(pthread_create(&th[i], NULL, race_put, &r[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(r[i].rc, OK);
    }
    if (f->file) {
        snprintf(path, sizeof(path), "%s/%.2s/%.2s/%s", f->root, key, key + 2, key);
        key_of_file(path, again);
        assert_string_equal(key, again);
    } else {
        uint64_t size = 0;
        uint8_t d[SHA256_LEN];
        int fd = -1;
        assert_int_equal(blob_open(f->bs, key, &fd, &size), OK);
        assert_int_equal(sha256_fd(fd, d), OK);
        close(fd);
        hex_encode(d, sizeof(d), again);
        assert_string_equal(key, again);
    }
    assert_int_equal(tmp_entries(f->root), 0);
}

/* open_store opens a file:// store at dir/name. */
static struct blob_store *open_store(const struct fixture *f, const char *name)
{
    char url[160];
    struct blob_store *bs = NULL;

    snprintf(url, sizeof(url), "file://%s/%s", f->dir, name);
    assert_int_equal(blob_store_open(url, &bs), OK);
    return bs;
}

static bool has(struct blob_store *bs, const char *key)
{
    bool there = false;

    assert_int_equal(blob_exists(bs, key, &there), OK);
    return there;
}

/* A switch writes to the current store, reads fall back to the previous one, deletes reach both. */
static void test_switch(void **state)
{
    struct fixture *f = *state;
    struct blob_store *a = open_store(f, "a"), *b = open_store(f, "b");
    struct blob_store *sw = NULL, *a2, *b2;
    char k1[SHA256_HEX], k2[SHA256_HEX];
    uint64_t size = 0;
    int fd = -1;

    write_file(f->src, 5000, 1);
    key_of_file(f->src, k1);
    assert_int_equal(blob_put_path(a, k1, f->src), OK); /* k1 lives on the old placement */
    assert_int_equal(blob_switch_open(a, &sw), OK);
    assert_true(blob_switch_current(sw) == a);
    /* the ring changes: b is current, a the previous one */
    a2 = open_store(f, "a");
    assert_int_equal(blob_switch_set(sw, b, a2), OK);
    assert_true(blob_switch_current(sw) == b);
    write_file(f->src, 7000, 2);
    key_of_file(f->src, k2);
    assert_int_equal(blob_put_path(sw, k2, f->src), OK);
    assert_true(has(b, k2)); /* writes go to the new placement */
    assert_false(has(a2, k2));
    assert_true(has(sw, k1)); /* not moved yet: found on the previous one */
    assert_int_equal(blob_open(sw, k1, &fd, &size), OK);
    assert_int_equal(size, 5000);
    close(fd);
    assert_int_equal(blob_delete(sw, k1), OK); /* deletes reach both */
    assert_false(has(a2, k1));
    assert_int_equal(blob_open(sw, k1, &fd, &size), E_NOTFOUND);
    /* the rebalance is over: no fallback any more */
    b2 = open_store(f, "b");
    assert_int_equal(blob_switch_set(sw, b2, NULL), OK);
    assert_true(has(sw, k2));
    assert_int_equal(blob_switch_set(f->bs, open_store(f, "c"), NULL), E_INVALID);
    blob_store_free(sw);
}

struct swapper {
    struct fixture *f;
    struct blob_store *sw;
    atomic_bool stop;
    atomic_int reads, fails;
};

static void *sw_reader(void *arg)
{
    struct swapper *s = arg;
    char key[SHA256_HEX];
    uint64_t size;
    int fd;

    key_of_file(s->f->src, key);
    while (!atomic_load(&s->stop)) {
        if (blob_open(s->sw, key, &fd, &size) == OK) {
            close(fd);
            atomic_fetch_add(&s->reads, 1);
        } else {
            atomic_fetch_add(&s->fails, 1);
        }
    }
    return NULL;
}

/* Swapping while readers run: no reader sees a freed store (ASan in CI), every read finds the blob.
 */
static void test_switch_under_readers(void **state)
{
    struct fixture *f = *state;
    struct swapper s = {.f = f};
    pthread_t th[3];
    char key[SHA256_HEX];

    write_file(f->src, 3000, 9);
    key_of_file(f->src, key);
    struct blob_store *a = open_store(f, "a");
    assert_int_equal(blob_put_path(a, key, f->src), OK);
    assert_int_equal(blob_switch_open(a, &s.sw), OK);
    atomic_init(&s.stop, false);
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&th[i], NULL, sw_reader, &s), 0);
    for (int i = 0; i < 200; i++) {
        int done = atomic_load(&s.reads) + atomic_load(&s.fails);
        /* alternate: the blob current, then only on the fallback */
        if (i % 2 == 0)
            assert_int_equal(blob_switch_set(s.sw, open_store(f, "b"), open_store(f, "a")), OK);
        else
            assert_int_equal(blob_switch_set(s.sw, open_store(f, "a"), NULL), OK);
        /* interleave: the readers make progress between two swaps (a state, not a sleep) */
        while (atomic_load(&s.reads) + atomic_load(&s.fails) < done + 3)
            sched_yield();
    }
    atomic_store(&s.stop, true);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    assert_true(atomic_load(&s.reads) > 0);
    assert_int_equal(atomic_load(&s.fails), 0);
    blob_store_free(s.sw);
}

static void test_disk_full(void **state)
{
    struct fixture *f = *state;
    struct blob_store *bs = NULL;
    char url[128], big[160], key[SHA256_HEX], small_key[SHA256_HEX];
    bool exists = true;
    int rc;

    if (geteuid() != 0) {
        print_message("not root: cannot mount a small tmpfs, disk-full test skipped\n");
        skip();
    }
    assert_true((size_t)snprintf(f->mnt, sizeof(f->mnt), "%s/mnt", f->dir) < sizeof(f->mnt));
    assert_int_equal(mkdir(f->mnt, 0755), 0);
    if (mount("tmpfs", f->mnt, "tmpfs", 0, "size=64k") != 0) {
        rmdir(f->mnt);
        f->mnt[0] = '\0';
        print_message("cannot mount a tmpfs here, disk-full test skipped\n");
        skip();
    }
    snprintf(url, sizeof(url), "file://%s/store", f->mnt);
    assert_int_equal(blob_store_open(url, &bs), OK);
    snprintf(big, sizeof(big), "%s/big.bin", f->dir);
    write_file(big, 256 * 1024, 11);
    key_of_file(big, key);
    log_min_level = LOG_OFF;
    rc = blob_put_path(bs, key, big);
    log_min_level = LOG_WARN;
    assert_int_equal(rc, E_NOSPACE);
    assert_int_equal(blob_exists(bs, key, &exists), OK);
    assert_false(exists);
    snprintf(big, sizeof(big), "%s/store", f->mnt);
    assert_int_equal(tmp_entries(big), 0); /* the partial temporary is gone */
    /* and the space with it: a small blob fits again */
    write_file(f->src, 16 * 1024, 12);
    key_of_file(f->src, small_key);
    assert_int_equal(blob_put_path(bs, small_key, f->src), OK);
    blob_store_free(bs);
}

/* Signed node requests: every part of the request is covered, stale dates and old secrets fail. */
static void test_node_auth(void **state)
{
    struct secret k1 = {32, {0}}, k2 = {40, {0}}, keys[2];
    const char *t = "/blobs/" NODE_AUTH_EMPTY, *why = NULL;
    char sig[NODE_AUTH_VALUE], date[24];
    int64_t now = 1800000000;

    (void)state;
    memset(k1.b, 'a', k1.len);
    memset(k2.b, 'b', k2.len);
    keys[0] = k1;
    keys[1] = k2;
    snprintf(date, sizeof(date), "%lld", (long long)now);
    node_auth_sign(&k1, "GET", t, date, NODE_AUTH_EMPTY, sig);
    assert_int_equal(strncmp(sig, "Tessera-HMAC-SHA256 ", 20), 0);
    assert_int_equal(strlen(sig), 20 + 64);
    assert_int_equal(node_auth_check(keys, 1, "GET", t, date, NODE_AUTH_EMPTY, sig, now, &why), OK);
    /* within the skew either way */
    assert_int_equal(
        node_auth_check(keys, 1, "GET", t, date, NODE_AUTH_EMPTY, sig, now + 300, &why), OK);
    assert_int_equal(
        node_auth_check(keys, 1, "GET", t, date, NODE_AUTH_EMPTY, sig, now - 300, &why), OK);
    /* stale */
    assert_int_equal(
        node_auth_check(keys, 1, "GET", t, date, NODE_AUTH_EMPTY, sig, now + 301, &why),
        E_UNAUTHORIZED);
    assert_non_null(strstr(why, "stale"));
    assert_int_equal(
        node_auth_check(keys, 1, "GET", t, date, NODE_AUTH_EMPTY, sig, now - 301, &why),
        E_UNAUTHORIZED);
    /* another method, target, query, date or body hash: wrong */
    assert_int_equal(node_auth_check(keys, 1, "DELETE", t, date, NODE_AUTH_EMPTY, sig, now, &why),
                     E_UNAUTHORIZED);
    assert_non_null(strstr(why, "wrong signature"));
    assert_int_equal(
        node_auth_check(keys, 1, "GET", "/blobs?after=", date, NODE_AUTH_EMPTY, sig, now, &why),
        E_UNAUTHORIZED);
    assert_int_equal(node_auth_check(keys, 1, "GET", "/blobs/" NODE_AUTH_EMPTY "?x=1", date,
                                     NODE_AUTH_EMPTY, sig, now, &why),
                     E_UNAUTHORIZED);
    assert_int_equal(
        node_auth_check(keys, 1, "GET", t, "1800000001", NODE_AUTH_EMPTY, sig, now, &why),
        E_UNAUTHORIZED);
    assert_int_equal(
        node_auth_check(keys, 1, "GET", t, date,
                        "0000000000000000000000000000000000000000000000000000000000000000", sig,
                        now, &why),
        E_UNAUTHORIZED);
    /* missing and malformed headers */
    assert_int_equal(node_auth_check(keys, 1, "GET", t, NULL, NODE_AUTH_EMPTY, sig, now, &why),
                     E_UNAUTHORIZED);
    assert_non_null(strstr(why, "unsigned"));
    assert_int_equal(node_auth_check(keys, 1, "GET", t, date, NODE_AUTH_EMPTY, NULL, now, &why),
                     E_UNAUTHORIZED);
    assert_int_equal(
        node_auth_check(keys, 1, "GET", t, " 1800000000", NODE_AUTH_EMPTY, sig, now, &why),
        E_UNAUTHORIZED);
    assert_int_equal(node_auth_check(keys, 1, "GET", t, date, NODE_AUTH_EMPTY,
                                     "Tessera-HMAC-SHA256 zz", now, &why),
                     E_UNAUTHORIZED);
    assert_int_equal(node_auth_check(keys, 1, "GET", t, date, "ABC", sig, now, &why),
                     E_UNAUTHORIZED);
    /* rotation: a node holding both secrets accepts either; one holding only the new refuses
     * the old */
    node_auth_sign(&k2, "GET", t, date, NODE_AUTH_EMPTY, sig);
    assert_int_equal(node_auth_check(keys, 2, "GET", t, date, NODE_AUTH_EMPTY, sig, now, &why), OK);
    keys[0] = k2;
    node_auth_sign(&k1, "GET", t, date, NODE_AUTH_EMPTY, sig);
    assert_int_equal(node_auth_check(keys, 1, "GET", t, date, NODE_AUTH_EMPTY, sig, now, &why),
                     E_UNAUTHORIZED);
}

/* --- S3 only: what a bucket adds to the contract --- */

/* cred_value reads "name = value" from the credentials file of the Swift under test. */
static void cred_value(const char *name, char *out, size_t cap)
{
    char line[512];
    FILE *fp = fopen(s3_creds, "r");

    assert_non_null(fp);
    out[0] = '\0';
    while (fgets(line, sizeof(line), fp) != NULL) {
        if (strncmp(line, name, strlen(name)) == 0) {
            const char *v = strchr(line, '=');
            assert_non_null(v);
            snprintf(out, cap, "%s", v + 2);
            out[strcspn(out, "\r\n")] = '\0';
        }
    }
    fclose(fp);
}

/* raw_put stores bytes as object name under the test's prefix, bypassing the blob store. */
static void raw_put(const struct fixture *f, const char *name, const char *bytes)
{
    char access[256], secret[256], url[700], line[128];
    struct curl_slist *h = NULL;
    CURL *c = curl_easy_init();
    uint8_t d[SHA256_LEN];
    char hex[SHA256_HEX];
    long code = 0;

    cred_value("aws_access_key_id", access, sizeof(access));
    cred_value("aws_secret_access_key", secret, sizeof(secret));
    sha256_buf(bytes, strlen(bytes), d);
    hex_encode(d, sizeof(d), hex);
    snprintf(line, sizeof(line), "x-amz-content-sha256: %s", hex);
    h = curl_slist_append(h, line);
    /* s3+http://host:port/bucket/prefix -> http://host:port/bucket/prefix/name */
    snprintf(url, sizeof(url), "%s/%s", f->s3url + 3, name);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_AWS_SIGV4, "aws:amz:us-east-1:s3");
    curl_easy_setopt(c, CURLOPT_USERNAME, access);
    curl_easy_setopt(c, CURLOPT_PASSWORD, secret);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "PUT");
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, bytes);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    assert_int_equal(code, 200);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
}

/* Above storage.s3_multipart_bytes a blob goes up in parts, and comes back whole. */
static void test_s3_multipart(void **state)
{
    struct fixture *f = *state;
    char key[SHA256_HEX], again[SHA256_HEX];
    uint8_t d[SHA256_LEN];
    uint64_t size = 0;
    int fd = -1;

    write_file(f->src, 2 * BLOB_S3_MIN_PART + 12345, 21); /* three parts */
    key_of_file(f->src, key);
    assert_int_equal(blob_put_path(f->bs, key, f->src), OK);
    assert_true(has(f->bs, key));
    assert_int_equal(blob_open(f->bs, key, &fd, &size), OK);
    assert_int_equal(size, 2 * BLOB_S3_MIN_PART + 12345);
    assert_int_equal(sha256_fd(fd, d), OK);
    close(fd);
    hex_encode(d, sizeof(d), again);
    assert_string_equal(key, again);
}

/* A file that does not hash to its key is refused, small or multipart: nothing is stored. */
static void test_s3_wrong_file(void **state)
{
    struct fixture *f = *state;
    const char *key = "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789";

    log_min_level = LOG_OFF;
    write_file(f->src, 1000, 4);
    assert_int_equal(blob_put_path(f->bs, key, f->src), E_INVALID);
    write_file(f->src, BLOB_S3_MIN_PART + 1, 4);
    assert_int_equal(blob_put_path(f->bs, key, f->src), E_INVALID);
    write_file(f->src, 0, 0);
    assert_int_equal(blob_put_path(f->bs, key, f->src), E_INVALID);
    log_min_level = LOG_WARN;
    assert_false(has(f->bs, key));
}

/* Bytes that do not hash to their key are not served: the object counts as missing. */
static void test_s3_mismatch_not_served(void **state)
{
    struct fixture *f = *state;
    const char *key = "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789";
    uint64_t size = 0;
    int fd = -1;

    raw_put(f, key, "rotten bytes");
    assert_true(has(f->bs, key));
    log_min_level = LOG_OFF;
    assert_int_equal(blob_open(f->bs, key, &fd, &size), E_NOTFOUND);
    log_min_level = LOG_WARN;
    assert_int_equal(fd, -1);
}

struct collect {
    char keys[8][SHA256_HEX];
    size_t n;
};

static int collect_one(void *arg, const struct blob_entry *e)
{
    struct collect *c = arg;

    assert_true(c->n < 8);
    memcpy(c->keys[c->n++], e->key, SHA256_HEX);
    return OK;
}

/* Listing: key order, pages from "after", objects that are not blobs skipped. */
static void test_s3_list(void **state)
{
    struct fixture *f = *state;
    char keys[5][SHA256_HEX];
    struct blob_entry page[3];
    struct collect all = {0};
    size_t n = 0;

    raw_put(f, "README.txt", "not a blob");
    for (int i = 0; i < 5; i++) {
        write_file(f->src, 100 + (size_t)i, (unsigned)i + 40);
        key_of_file(f->src, keys[i]);
        assert_int_equal(blob_put_path(f->bs, keys[i], f->src), OK);
    }
    for (int i = 0; i < 5; i++) /* sorted, as a listing is */
        for (int j = i + 1; j < 5; j++)
            if (strcmp(keys[j], keys[i]) < 0) {
                char t[SHA256_HEX];
                memcpy(t, keys[i], sizeof(t));
                memcpy(keys[i], keys[j], sizeof(t));
                memcpy(keys[j], t, sizeof(t));
            }
    assert_int_equal(blob_list(f->bs, "", page, 3, &n), OK);
    assert_int_equal(n, 3);
    assert_string_equal(page[0].key, keys[0]);
    assert_true(page[0].size >= 100 && page[0].size < 105);
    assert_true(llabs(page[0].mtime - (int64_t)time(NULL)) < 600);
    assert_int_equal(blob_list(f->bs, page[2].key, page, 3, &n), OK);
    assert_int_equal(n, 2); /* fewer than asked: the end */
    assert_string_equal(page[0].key, keys[3]);
    assert_string_equal(page[1].key, keys[4]);
    assert_int_equal(blob_each(f->bs, collect_one, &all), OK);
    assert_int_equal(all.n, 5);
    for (int i = 0; i < 5; i++)
        assert_string_equal(all.keys[i], keys[i]);
}

/* Wrong credentials, a missing bucket, no server: not ready, and the reason names which. */
static void test_s3_not_ready(void **state)
{
    struct fixture *f = *state;
    char creds[160], url[600], why[256], key[SHA256_HEX];
    struct blob_s3_opts o = s3_opts(f, NULL);
    struct blob_store *bs = NULL;
    FILE *fp;

    log_min_level = LOG_OFF;
    write_file(f->src, 10, 1);
    key_of_file(f->src, key);
    snprintf(creds, sizeof(creds), "%s/wrong-credentials", f->dir);
    fp = fopen(creds, "w");
    assert_non_null(fp);
    fprintf(fp, "aws_access_key_id = tessera:s3\naws_secret_access_key = wrong\n");
    fclose(fp);
    o.credentials_file = creds;
    assert_int_equal(blob_s3_open(f->s3url, &o, &bs), OK);
    assert_int_equal(blob_store_check(bs), E_UNAVAILABLE);
    blob_store_why(bs, why, sizeof(why));
    assert_non_null(strstr(why, "refused the credentials of storage.s3_credentials_file"));
    assert_int_equal(blob_put_path(bs, key, f->src), E_UNAVAILABLE);
    blob_store_free(bs);

    o.credentials_file = s3_creds;
    snprintf(url, sizeof(url), "%s-missing", s3_base);
    assert_int_equal(blob_s3_open(url, &o, &bs), OK);
    assert_int_equal(blob_store_check(bs), E_UNAVAILABLE);
    blob_store_why(bs, why, sizeof(why));
    assert_non_null(strstr(why, "does not exist"));
    blob_store_free(bs);

    /* port 1 on loopback: nothing listens */
    assert_int_equal(blob_s3_open("s3+http://127.0.0.1:1/tessera", &o, &bs), OK);
    assert_int_equal(blob_store_check(bs), E_UNAVAILABLE);
    blob_store_why(bs, why, sizeof(why));
    assert_non_null(strstr(why, "unreachable"));
    assert_int_equal(blob_put_path(bs, key, f->src), E_UNAVAILABLE);
    blob_store_free(bs);

    /* no credentials at all: refused at open, naming the settings */
    o.credentials_file = "";
    unsetenv("AWS_ACCESS_KEY_ID");
    assert_int_equal(blob_s3_open(f->s3url, &o, &bs), E_INVALID);
    assert_null(bs);
    log_min_level = LOG_WARN;
}

/* A shard's own [ID] section of the credentials file wins over [default]. */
static void test_s3_profiles(void **state)
{
    struct fixture *f = *state;
    char creds[160], access[256], secret[256], why[256];
    struct blob_s3_opts o = s3_opts(f, NULL);
    struct blob_store *bs = NULL;
    FILE *fp;

    cred_value("aws_access_key_id", access, sizeof(access));
    cred_value("aws_secret_access_key", secret, sizeof(secret));
    snprintf(creds, sizeof(creds), "%s/profiles", f->dir);
    fp = fopen(creds, "w");
    assert_non_null(fp);
    fprintf(fp,
            "[default]\naws_access_key_id = %s\naws_secret_access_key = wrong\n\n"
            "[main]\naws_access_key_id = %s\naws_secret_access_key = %s\n",
            access, access, secret);
    fclose(fp);
    o.credentials_file = creds;
    o.profile = "main";
    assert_int_equal(blob_s3_open(f->s3url, &o, &bs), OK);
    assert_int_equal(blob_store_check(bs), OK);
    blob_store_free(bs);
    o.profile = "other"; /* no [other]: [default], whose secret is wrong */
    log_min_level = LOG_OFF;
    assert_int_equal(blob_s3_open(f->s3url, &o, &bs), OK);
    assert_int_equal(blob_store_check(bs), E_UNAVAILABLE);
    blob_store_free(bs);
    log_min_level = LOG_WARN;
    assert_int_equal(blob_s3_check_credentials(creds, "main", why, sizeof(why)), OK);
    assert_int_equal(blob_s3_check_credentials("/nonexistent", "main", why, sizeof(why)),
                     E_INVALID);
    assert_non_null(strstr(why, "storage.s3_credentials_file"));
}

/* Virtual-host addressing: BUCKET.HOST (Swift's storage_domain is localhost in s3.sh). */
static void test_s3_virtual_host(void **state)
{
    struct fixture *f = *state;
    struct blob_s3_opts o = s3_opts(f, s3_creds);
    const char *port = strrchr(s3_base, ':');
    char url[600], key[SHA256_HEX];
    struct blob_entry e[2];
    struct blob_store *bs = NULL;
    uint64_t size = 0;
    size_t n = 0;
    int fd = -1;

    assert_non_null(port); /* s3+http://127.0.0.1:PORT/BUCKET */
    snprintf(url, sizeof(url), "s3+http://localhost%s/vh", port);
    o.virtual_host = true;
    assert_int_equal(blob_s3_open(url, &o, &bs), OK);
    assert_int_equal(blob_store_check(bs), OK);
    write_file(f->src, 3000, 8);
    key_of_file(f->src, key);
    assert_int_equal(blob_put_path(bs, key, f->src), OK);
    assert_int_equal(blob_open(bs, key, &fd, &size), OK);
    assert_int_equal(size, 3000);
    close(fd);
    assert_int_equal(blob_list(bs, "", e, 2, &n), OK);
    assert_int_equal(n, 1);
    assert_string_equal(e[0].key, key);
    assert_int_equal(blob_delete(bs, key), OK);
    blob_store_free(bs);
}

static void test_s3_urls(void **state)
{
    const char *good[] = {"s3+http://127.0.0.1:18081/tessera",
                          "s3+https://s3.amazonaws.com/my.bucket", "s3+http://h/bkt/some/prefix",
                          "s3+http://[::1]:9000/bkt"};
    const char *bad[] = {"s3://h/bkt",           "s3+http://h",        "s3+http://h/",
                         "s3+http://h/ab",       "s3+http://h/Bucket", "s3+http://h/bkt/",
                         "s3+http://h/bkt/a//b", "s3+http:///bkt",     "s3+http://h/bkt/a b",
                         "s3+http://h?x/bkt"};

    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_true(blob_s3_url_ok(good[i]));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (blob_s3_url_ok(bad[i]))
            fail_msg("accepted %s", bad[i]);
    }
}

struct scrub_seen {
    atomic_int n;
    _Atomic uint64_t size;
};

static void scrub_found(void *arg, uint64_t size)
{
    struct scrub_seen *seen = arg;

    atomic_store(&seen->size, size);
    atomic_fetch_add(&seen->n, 1);
}

/*
 * The scrubber: a copy flipped on disk is found at the bounded rate, moved to the
 * quarantine (bytes kept, no longer listed or served); good copies are left alone.
 */
static void test_scrub(void **state)
{
    struct fixture *f = *state;
    struct scrub_seen seen = {0, 0};
    struct scrubber *sc = NULL;
    struct blob_entry q[4];
    char keys[3][SHA256_HEX], path[512], qdir[300];
    size_t n = 0;
    bool exists = true;

    for (unsigned i = 0; i < 3; i++) {
        write_file(f->src, i == 1 ? 1000000 : 5000, 40 + i); /* the bad one: 1 MB */
        key_of_file(f->src, keys[i]);
        assert_int_equal(blob_put_path(f->bs, keys[i], f->src), OK);
    }
    snprintf(path, sizeof(path), "%s/%.2s/%.2s/%s", f->root, keys[1], keys[1] + 2, keys[1]);
    assert_int_equal(chmod(path, 0644), 0);
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    fseek(fp, 500000, SEEK_SET);
    fputc(0x5a ^ ((500000 * 31 + 41) & 0xff), fp); /* a byte differs from the pattern */
    fclose(fp);
    snprintf(qdir, sizeof(qdir), "%s/quarantine", f->dir);

    struct scrub_opts bad = {f->bs, qdir, 0, 1000, NULL, NULL};
    assert_int_equal(scrub_start(&bad, &sc), E_INVALID);
    /* 2 MB/s: the 1 MB copy takes half a second, so finding it proves the rate is kept */
    struct scrub_opts o = {f->bs, qdir, 2000000, 60000, scrub_found, &seen};
    int64_t t0 = time_mono_us();
    assert_int_equal(scrub_start(&o, &sc), OK);
    while (atomic_load(&seen.n) == 0 && time_mono_us() - t0 < 10000000)
        usleep(10000);
    int64_t took = time_mono_us() - t0;
    assert_int_equal(atomic_load(&seen.n), 1);
    assert_int_equal(atomic_load(&seen.size), 1000000);
    assert_true(took >= 400000);
    scrub_stop(sc);

    assert_int_equal(blob_exists(f->bs, keys[1], &exists), OK);
    assert_false(exists);
    for (unsigned i = 0; i < 3; i += 2) {
        assert_int_equal(blob_exists(f->bs, keys[i], &exists), OK);
        assert_true(exists);
    }
    assert_int_equal(scrub_quarantine_list(qdir, q, 4, &n), OK);
    assert_int_equal(n, 1);
    assert_string_equal(q[0].key, keys[1]);
    assert_int_equal(q[0].size, 1000000);
    /* a store with no quarantine directory lists none */
    snprintf(path, sizeof(path), "%s/none", f->dir);
    assert_int_equal(scrub_quarantine_list(path, q, 4, &n), OK);
    assert_int_equal(n, 0);
    /* stopping in the middle of a long pass returns at once */
    struct scrub_opts slow = {f->bs, qdir, 1000, 60000, scrub_found, &seen};
    t0 = time_mono_us();
    assert_int_equal(scrub_start(&slow, &sc), OK);
    usleep(50000);
    scrub_stop(sc);
    assert_true(time_mono_us() - t0 < 2000000);
    assert_int_equal(atomic_load(&seen.n), 1);
}

int main(void)
{
    log_min_level = LOG_WARN;
    s3_base = getenv("TESSERA_TEST_S3_URL");
    s3_creds = getenv("TESSERA_TEST_S3_CREDENTIALS");
    if (s3_base != NULL && s3_base[0] != '\0') {
        const struct CMUnitTest s3_tests[] = {
            cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
            cmocka_unit_test_setup_teardown(test_empty_blob, setup, teardown),
            cmocka_unit_test_setup_teardown(test_idempotent_put, setup, teardown),
            cmocka_unit_test_setup_teardown(test_delete_absent, setup, teardown),
            cmocka_unit_test_setup_teardown(test_bad_keys, setup, teardown),
            cmocka_unit_test_setup_teardown(test_failed_put_leaves_nothing, setup, teardown),
            cmocka_unit_test_setup_teardown(test_tmp_path, setup, teardown),
            cmocka_unit_test_setup_teardown(test_concurrent_same_key, setup, teardown),
            cmocka_unit_test_setup_teardown(test_s3_multipart, setup, teardown),
            cmocka_unit_test_setup_teardown(test_s3_wrong_file, setup, teardown),
            cmocka_unit_test_setup_teardown(test_s3_mismatch_not_served, setup, teardown),
            cmocka_unit_test_setup_teardown(test_s3_list, setup, teardown),
            cmocka_unit_test_setup_teardown(test_s3_not_ready, setup, teardown),
            cmocka_unit_test_setup_teardown(test_s3_profiles, setup, teardown),
            cmocka_unit_test_setup_teardown(test_s3_virtual_host, setup, teardown),
        };
        return cmocka_run_group_tests_name("blob_s3", s3_tests, NULL, NULL);
    }
    s3_base = NULL;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
        cmocka_unit_test(test_node_auth),
        cmocka_unit_test_setup_teardown(test_empty_blob, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idempotent_put, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_absent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_put_leaves_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tmp_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_temporaries_swept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_urls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_same_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disk_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_switch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_switch_under_readers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scrub, setup, teardown),
        cmocka_unit_test(test_s3_urls),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
