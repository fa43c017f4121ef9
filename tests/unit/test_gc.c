/*
 * test_gc.c - app/gc on SQLite and a file:// blob store in a temporary directory.
 *
 * Time is moved by gc_opts.now (and by aging a stored file's mtime), never
 * slept: a stale pin is cleared and its blob collected, a referenced blob
 * never is, an old orphan file is collected and a young one is not, dead
 * jobs and variants of deleted images go, and a dry run changes nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
// cmocka needs the above first
#include "app/gc.h"
#include "core/codec.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/ident.h"
#include "core/progress.h"
#include "meta/meta.h"
#include "store/blob.h"

#include <cmocka.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HOUR 3600

struct fixture {
    char dir[64];
    char db[128];
    struct meta_store *ms;
    struct blob_store *bs;
    struct progress *p;
    FILE *devnull;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char url[160];

    snprintf(f->dir, sizeof(f->dir), "/tmp/tessera-gc-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->db, sizeof(f->db), "%s/meta.db", f->dir);
    snprintf(url, sizeof(url), "file://%s/blobs", f->dir);
    if (meta_open_sqlite(f->db, &f->ms) != OK || blob_store_open(url, &f->bs) != OK)
        return -1;
    f->devnull = fopen("/dev/null", "w");
    f->p = progress_new("gc", true, f->devnull);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];

    progress_free(f->p);
    fclose(f->devnull);
    meta_close(f->ms);
    blob_store_free(f->bs);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* put_blob stores fresh random bytes and writes their key; returns their size. */
static uint64_t put_blob(struct fixture *f, char key[SHA256_HEX])
{
    char path[160];
    uint8_t buf[1000], digest[SHA256_LEN];
    int fd;

    random_bytes(buf, sizeof(buf));
    snprintf(path, sizeof(path), "%s/src", f->dir);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, buf, sizeof(buf)), (ssize_t)sizeof(buf));
    assert_int_equal(sha256_fd(fd, digest), OK);
    close(fd);
    hex_encode(digest, SHA256_LEN, key);
    assert_int_equal(blob_put_path(f->bs, key, path), OK);
    unlink(path);
    return sizeof(buf);
}

/* age sets the stored copy's mtime to seconds ago. */
static void age(struct fixture *f, const char *key, int64_t seconds)
{
    struct timespec ts[2] = {{time(NULL) - seconds, 0}, {time(NULL) - seconds, 0}};
    uint64_t size;
    int fd;

    assert_int_equal(blob_open(f->bs, key, &fd, &size), OK);
    assert_int_equal(futimens(fd, ts), 0);
    close(fd);
}

static bool stored(struct fixture *f, const char *key)
{
    bool there = false;

    assert_int_equal(blob_exists(f->bs, key, &there), OK);
    return there;
}

/* upload records an image on key the way app.c does: pin, (bytes stored), insert, unpin. */
static void upload(struct fixture *f, const char *key, uint64_t bytes, char id[IMAGE_ID_MAX + 1])
{
    struct image_rec img = {.width = 1, .height = 1, .frames = 1, .bytes = bytes};

    image_id_new(img.id);
    memcpy(img.key, key, SHA256_HEX);
    snprintf(img.format, sizeof(img.format), "png");
    delete_token_hash("t", 1, img.token_hash);
    assert_int_equal(meta_blob_pin(f->ms, key, bytes), OK);
    assert_int_equal(meta_image_insert(f->ms, &img), OK);
    assert_int_equal(meta_blob_unpin(f->ms, key), OK);
    if (id != NULL)
        memcpy(id, img.id, IMAGE_ID_MAX + 1);
}

static void opts(struct gc_opts *o, bool apply, int64_t later)
{
    memset(o, 0, sizeof(*o));
    o->apply = apply;
    o->now = time(NULL) + later;
    o->grace_s = HOUR;
    o->pin_grace_s = 2 * HOUR;
    o->dead_retention_ms = 24LL * HOUR * 1000;
}

static void test_stale_pin_cleared_and_collected(void **state)
{
    struct fixture *f = *state;
    struct gc_opts o;
    struct gc_report r;
    struct meta_blob row;
    char key[SHA256_HEX];
    uint64_t size = put_blob(f, key);

    /* an upload that crashed between the blob write and the unpin */
    assert_int_equal(meta_blob_pin(f->ms, key, size), OK);

    opts(&o, true, HOUR + 60); /* past the grace, not past the pin grace */
    assert_int_equal(gc_run(f->ms, f->bs, &o, f->p, &r), OK);
    assert_int_equal(r.stale_pins.n, 0);
    assert_int_equal(r.unused.n, 0);
    assert_true(stored(f, key));

    opts(&o, true, 2 * HOUR + 60);
    assert_int_equal(gc_run(f->ms, f->bs, &o, f->p, &r), OK);
    assert_int_equal(r.stale_pins.n, 1);
    assert_int_equal(r.unused.n, 1);
    assert_int_equal(r.unused.bytes, size);
    assert_int_equal(r.errors, 0);
    assert_false(stored(f, key));
    assert_int_equal(meta_blob_get(f->ms, key, &row), E_NOTFOUND);

    /* idempotent: a second run finds nothing */
    assert_int_equal(gc_run(f->ms, f->bs, &o, f->p, &r), OK);
    assert_int_equal(r.stale_pins.n + r.unused.n + r.orphans.n, 0);
}

static void test_referenced_never_collected(void **state)
{
    struct fixture *f = *state;
    struct gc_opts o;
    struct gc_report r;
    struct meta_blob row;
    char key[SHA256_HEX], shared[SHA256_HEX];
    uint64_t size = put_blob(f, key);
    uint64_t ssize = put_blob(f, shared);
    char id[IMAGE_ID_MAX + 1];

    upload(f, key, size, NULL);
    upload(f, shared, ssize, id);
    upload(f, shared, ssize, NULL); /* deduplicated: two references */
    assert_int_equal(meta_image_delete(f->ms, id, NULL), OK);
    /* a stale pin on a referenced blob is cleared, the blob stays */
    assert_int_equal(meta_blob_pin(f->ms, key, size), OK);
    age(f, key, 100 * HOUR);
    age(f, shared, 100 * HOUR);

    opts(&o, true, 100 * HOUR);
    assert_int_equal(gc_run(f->ms, f->bs, &o, f->p, &r), OK);
    assert_int_equal(r.stale_pins.n, 1);
    assert_int_equal(r.unused.n + r.orphans.n, 0);
    assert_true(stored(f, key));
    assert_true(stored(f, shared));
    assert_int_equal(meta_blob_get(f->ms, key, &row), OK);
    assert_int_equal(row.refs, 1);
    assert_int_equal(row.pins, 0);
    assert_int_equal(meta_blob_get(f->ms, shared, &row), OK);
    assert_int_equal(row.refs, 1);
}

static void test_orphan_files_by_age(void **state)
{
    struct fixture *f = *state;
    struct gc_opts o;
    struct gc_report r;
    char old[SHA256_HEX], young[SHA256_HEX];
    uint64_t size = put_blob(f, old);

    put_blob(f, young);
    age(f, old, 2 * HOUR);
    age(f, young, HOUR / 2);

    opts(&o, true, 0);
    assert_int_equal(gc_run(f->ms, f->bs, &o, f->p, &r), OK);
    assert_int_equal(r.orphans.n, 1);
    assert_int_equal(r.orphans.bytes, size);
    assert_int_equal(r.young.n, 1);
    assert_false(stored(f, old));
    assert_true(stored(f, young));
}

/* An orphan that an upload pinned meanwhile is not removed: the pin's row wins the claim. */
static int never_fn(void *arg, const char *key)
{
    (void)key;
    *(int *)arg += 1;
    return OK;
}

static void test_collect_orphan_loses_to_pin(void **state)
{
    struct fixture *f = *state;
    char key[SHA256_HEX];
    uint64_t size = put_blob(f, key);
    int calls = 0;

    assert_int_equal(meta_blob_pin(f->ms, key, size), OK);
    assert_int_equal(meta_blob_collect_orphan(f->ms, key, never_fn, &calls), E_EXISTS);
    assert_int_equal(calls, 0);
    assert_int_equal(meta_blob_unpin(f->ms, key), OK);
    /* the release job's row is still there: still not an orphan */
    assert_int_equal(meta_blob_collect_orphan(f->ms, key, never_fn, &calls), E_EXISTS);
    assert_int_equal(calls, 0);
}

/* dead_job makes one dead job. */
static void dead_job(struct fixture *f)
{
    struct meta_job job;

    assert_int_equal(meta_job_enqueue(f->ms, "purge", "x:png", 0), OK);
    assert_int_equal(meta_job_claim(f->ms, 1000, &job), OK);
    assert_int_equal(meta_job_fail(f->ms, &job, "boom", 1, 0), OK);
}

/* leftover_variant records a variant row of a deleted image behind the store's back. */
static void leftover_variant(struct fixture *f, char vkey[SHA256_HEX])
{
    char key[SHA256_HEX], id[IMAGE_ID_MAX + 1], sql[512];
    uint64_t size = put_blob(f, key);
    sqlite3 *db = NULL;

    put_blob(f, vkey);
    upload(f, key, size, id);
    assert_int_equal(meta_image_delete(f->ms, id, NULL), OK);
    snprintf(sql, sizeof(sql),
             "INSERT INTO variants (image_id, name, key, format, width, height, bytes, created_at)"
             " VALUES ('%s', 'thumb', '%s', 'webp', 1, 1, 1000, 0);"
             "INSERT INTO blobs (key, refs, bytes, created_at) VALUES ('%s', 1, 1000, 0);",
             id, vkey, vkey);
    assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static void test_dead_jobs_and_variants(void **state)
{
    struct fixture *f = *state;
    struct gc_opts o;
    struct gc_report r;
    struct meta_job_stats js;
    struct meta_blob row;
    char vkey[SHA256_HEX];

    dead_job(f);
    leftover_variant(f, vkey);
    opts(&o, true, 25 * HOUR);
    assert_int_equal(gc_run(f->ms, f->bs, &o, f->p, &r), OK);
    assert_int_equal(r.jobs.n, 1);
    assert_int_equal(r.variants.n, 1);
    assert_int_equal(r.variants.bytes, 1000);
    assert_int_equal(r.errors, 0);
    assert_int_equal(meta_job_stats(f->ms, &js), OK);
    assert_int_equal(js.dead, 0);
    /* the variant's blob lost its last reference and was collected in the same run */
    assert_int_equal(meta_blob_get(f->ms, vkey, &row), E_NOTFOUND);
    assert_false(stored(f, vkey));
}

static void test_dry_run_changes_nothing(void **state)
{
    struct fixture *f = *state;
    struct gc_opts o;
    struct gc_report r;
    struct meta_job_stats js;
    struct meta_blob row;
    char pinned[SHA256_HEX], orphan[SHA256_HEX], vkey[SHA256_HEX], unused[SHA256_HEX];
    uint64_t psize = put_blob(f, pinned);
    uint64_t osize = put_blob(f, orphan);
    uint64_t usize = put_blob(f, unused);
    char id[IMAGE_ID_MAX + 1];

    assert_int_equal(meta_blob_pin(f->ms, pinned, psize), OK);
    age(f, orphan, 100 * HOUR);
    upload(f, unused, usize, id);
    assert_int_equal(meta_image_delete(f->ms, id, NULL), OK); /* refs 0, release queued */
    dead_job(f);
    leftover_variant(f, vkey);

    opts(&o, false, 100 * HOUR);
    for (int run = 0; run < 2; run++) {
        assert_int_equal(gc_run(f->ms, f->bs, &o, f->p, &r), OK);
        assert_int_equal(r.stale_pins.n, 1);
        assert_int_equal(r.stale_pins.bytes, psize);
        assert_int_equal(r.orphans.n, 1);
        assert_int_equal(r.orphans.bytes, osize);
        assert_int_equal(r.jobs.n, 1);
        assert_int_equal(r.variants.n, 1);
        assert_true(r.unused.n >= 2); /* the deleted image's blob and the stale-pinned one */
    }
    assert_true(stored(f, pinned) && stored(f, orphan) && stored(f, unused) && stored(f, vkey));
    assert_int_equal(meta_blob_get(f->ms, pinned, &row), OK);
    assert_int_equal(row.pins, 1);
    assert_int_equal(meta_blob_get(f->ms, unused, &row), OK);
    assert_int_equal(meta_job_stats(f->ms, &js), OK);
    assert_int_equal(js.dead, 1);

    /* and --apply then takes exactly the plan */
    o.apply = true;
    assert_int_equal(gc_run(f->ms, f->bs, &o, f->p, &r), OK);
    assert_int_equal(r.errors, 0);
    assert_false(stored(f, pinned) || stored(f, orphan) || stored(f, unused) || stored(f, vkey));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stale_pin_cleared_and_collected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_referenced_never_collected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_orphan_files_by_age, setup, teardown),
        cmocka_unit_test_setup_teardown(test_collect_orphan_loses_to_pin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_jobs_and_variants, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dry_run_changes_nothing, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
