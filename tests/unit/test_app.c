/*
 * test_app.c - the use cases of app/ on SQLite and a file:// blob store, no HTTP.
 *
 * Each test gets a fresh mkdtemp directory with its own runtime (metadata
 * store, blob store, in-process cache) and struct app. libvips can be started
 * only once per process, so the group opens a runtime with RT_IMAGE alone and
 * the tests' runtimes leave it out. Sample images come from the dev corpus
 * (TESSERA_TESTDATA); without it the tests are skipped.
 *
 * The binary is linked with -Wl,--wrap=img_variant (tests/CMakeLists.txt):
 * the wrapper counts the variants made and can slow them down, so the
 * single-flight tests see how many were made while eight threads asked, and
 * what each was told when the one making it failed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
// cmocka needs the above first
#include "app/app.h"
#include "app/cursor.h"
#include "app/runtime.h"
#include "config/config.h"
#include "core/codec.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/ident.h"
#include "core/log.h"
#include "image/image.h"
#include "image/ops.h"
#include "jobs/jobs.h"
#include "meta/meta.h"
#include "store/blob.h"

#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define JPEG_ROCKET    "accept_jpeg_baseline_rocket_640x427.jpg"
#define JPEG_TINY      "accept_jpeg_tiny_1x1.jpg"
#define PNG_TINY       "accept_png_tiny_1x1.png"
#define GIF_ANIMATED   "accept_gif_animated_4frames_chelsea_225x150.gif"
#define EMPTY_FILE     "reject_empty_zero_bytes.jpg"
#define HTML_AS_JPEG   "reject_html_renamed.jpg"
#define JPEG_TRUNCATED "reject_jpeg_truncated_half_1200x900.jpg"
#define PNG_BAD_CRC    "reject_png_bad_idat_crc_451x300.png"

/* The presets of every test: two, so "every preset" means more than one. */
#define VARIANTS  "thumb:64x64:webp:80,small:96x96:jpeg:85"
#define MAX_LIST  5
#define N_THREADS 8

struct fixture {
    char dir[64]; /* everything of the test lives here */
    struct config cfg;
    struct runtime rt;
    struct app app;
    struct jobs_opts jo;
};

static const char *corpus;
static char group_dir[64];
static struct config group_cfg;
static struct runtime group_rt; /* RT_IMAGE only: libvips for the whole binary */

/* --- the img_variant wrapper --- */

int __real_img_variant(const char *src_path, const struct img_variant_spec *spec,
                       const char *out_path, struct img_info *info, struct img_error *err);

static atomic_int variant_calls;
static atomic_int variant_delay_ms;
static atomic_int
    variant_fail; /* non-zero: the wrapper fails with this code, not making anything */

int __wrap_img_variant(const char *src_path, const struct img_variant_spec *spec,
                       const char *out_path, struct img_info *info, struct img_error *err);

int __wrap_img_variant(const char *src_path, const struct img_variant_spec *spec,
                       const char *out_path, struct img_info *info, struct img_error *err)
{
    int delay = atomic_load(&variant_delay_ms);

    atomic_fetch_add(&variant_calls, 1);
    if (delay > 0) {
        struct timespec ts = {delay / 1000, (long)(delay % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (atomic_load(&variant_fail) != 0) {
        snprintf(err->msg, sizeof(err->msg), "made to fail by the test");
        return atomic_load(&variant_fail);
    }
    return __real_img_variant(src_path, spec, out_path, info, err);
}

/* --- helpers --- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void need_corpus(void)
{
    char p[1024];

    snprintf(p, sizeof(p), "%s/manifest.tsv", corpus ? corpus : "");
    if (corpus == NULL || corpus[0] == '\0' || access(p, R_OK) != 0) {
        print_message("TESSERA_TESTDATA not set or no manifest.tsv: skipped\n");
        skip();
    }
}

/* sample writes the path of the corpus file name into buf. */
static const char *sample(const char *name, char *buf, size_t cap)
{
    need_corpus();
    snprintf(buf, cap, "%s/%s", corpus, name);
    assert_int_equal(access(buf, R_OK), 0);
    return buf;
}

/* upload_ok uploads the corpus file name as owner and expects OK. */
static void upload_ok(struct fixture *f, const char *name, const char *owner, struct app_upload *up)
{
    char path[1024];
    int rc = app_upload(&f->app, sample(name, path, sizeof(path)), owner, up);

    if (rc != OK)
        fail_msg("upload of %s: %s (%s)", name, err_str(rc), up->message);
}

/* drain runs the due jobs until none is left and checks that every one succeeded. */
static int drain(struct fixture *f)
{
    struct meta_job_stats st;
    int n = 0, rc;

    while ((rc = jobs_run_one(f->rt.meta, &f->jo, app_job_run, &f->app)) == OK)
        assert_true(++n < 100);
    assert_int_equal(rc, E_NOTFOUND);
    /* a failed job would be queued again with back-off, or dead */
    assert_int_equal(meta_job_stats(f->rt.meta, &st), OK);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.running, 0);
    assert_int_equal(st.dead, 0);
    return n;
}

static int64_t refs_of(struct fixture *f, const char *key)
{
    int64_t refs = -1;

    assert_int_equal(meta_blob_refs(f->rt.meta, key, &refs), OK);
    return refs;
}

static bool blob_there(struct fixture *f, const char *key)
{
    bool exists = false;

    assert_int_equal(blob_exists(f->rt.blobs, key, &exists), OK);
    return exists;
}

/* assert_blob_is checks that the stored blob key hashes to key and has bytes bytes. */
static void assert_blob_is(struct fixture *f, const char *key, uint64_t bytes)
{
    uint8_t digest[SHA256_LEN];
    char hex[SHA256_HEX];
    uint64_t size = 0;
    int fd = -1;

    assert_int_equal(blob_open(f->rt.blobs, key, &fd, &size), OK);
    assert_true(fd >= 0);
    assert_int_equal(sha256_fd(fd, digest), OK);
    close(fd);
    hex_encode(digest, SHA256_LEN, hex);
    assert_string_equal(hex, key);
    assert_int_equal(size, bytes);
}

static size_t blob_count(struct fixture *f)
{
    struct blob_entry e[16];
    size_t n = 99;

    assert_int_equal(blob_list(f->rt.blobs, "", e, 16, &n), OK);
    return n;
}

/* tmp_entries counts the files left in the blob store's temporary directory. */
static size_t tmp_entries(struct fixture *f)
{
    char path[512];
    size_t n = 0;
    struct dirent *e;
    DIR *d;

    assert_int_equal(blob_tmp_path(f->rt.blobs, path, sizeof(path)), OK);
    d = opendir(dirname(path));
    if (d == NULL)
        return 0;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    }
    closedir(d);
    return n;
}

/* assert_nothing_recorded: no image, no blob, no job, no temporary file. */
static void assert_nothing_recorded(struct fixture *f)
{
    struct image_rec out[MAX_LIST + 1];
    struct meta_job_stats st;
    size_t n = 99;
    bool more = true;
    int64_t count = -1;

    assert_int_equal(app_list(&f->app, 0, MAX_LIST, out, &n, &more), OK);
    assert_int_equal(n, 0);
    assert_false(more);
    assert_int_equal(meta_image_count(f->rt.meta, &count), OK);
    assert_int_equal(count, 0);
    assert_int_equal(blob_count(f), 0);
    assert_int_equal(meta_job_stats(f->rt.meta, &st), OK);
    assert_int_equal(st.queued, 0);
    assert_int_equal(tmp_entries(f), 0);
}

/* --- fixtures --- */

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char data_dir[128], err[512] = "";
    char *flags[] = {data_dir, "image.variants=" VARIANTS, "limits.max_list=5",
                     "image.max_parallel=2"};

    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/tessera-app-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(data_dir, sizeof(data_dir), "storage.data_dir=%s/data", f->dir);
    config_init(&f->cfg);
    if (config_load(&f->cfg, NULL, NULL, flags, sizeof(flags) / sizeof(flags[0]), err,
                    sizeof(err)) != OK) {
        fprintf(stderr, "config: %s\n", err);
        return -1;
    }
    if (runtime_open(&f->cfg, RT_META | RT_MIGRATE | RT_BLOBS | RT_CACHE | RT_LOCAL_DELETES,
                     &f->rt) != OK)
        return -1;
    app_init(&f->app, &f->rt);
    runtime_jobs_opts(&f->cfg, &f->jo);
    atomic_store(&variant_calls, 0);
    atomic_store(&variant_delay_ms, 0);
    atomic_store(&variant_fail, 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    app_release(&f->app);
    runtime_close(&f->rt);
    config_release(&f->cfg);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static int group_setup(void **state)
{
    char flag[128], err[512] = "";
    char *flags[] = {flag};

    (void)state;
    log_min_level = LOG_ERROR;
    corpus = getenv("TESSERA_TESTDATA");
    snprintf(group_dir, sizeof(group_dir), "/tmp/tessera-app-group-XXXXXX");
    if (mkdtemp(group_dir) == NULL)
        return -1;
    snprintf(flag, sizeof(flag), "storage.data_dir=%s", group_dir);
    config_init(&group_cfg);
    if (config_load(&group_cfg, NULL, NULL, flags, 1, err, sizeof(err)) != OK) {
        fprintf(stderr, "config: %s\n", err);
        return -1;
    }
    return runtime_open(&group_cfg, RT_IMAGE, &group_rt) == OK ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    runtime_close(&group_rt);
    config_release(&group_cfg);
    nftw(group_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* --- upload --- */

static void test_upload_ok(void **state)
{
    struct fixture *f = *state;
    struct app_upload up;
    struct image_rec got;
    char h[SHA256_HEX];
    int64_t now = time(NULL);

    upload_ok(f, JPEG_ROCKET, "alice", &up);
    assert_true(image_id_valid(up.img.id, strlen(up.img.id)));
    assert_int_equal(strlen(up.token), DELETE_TOKEN_LEN);
    assert_int_equal(strlen(up.img.key), SHA256_HEX - 1);
    assert_string_equal(up.img.format, "jpeg");
    assert_int_equal(up.img.width, 640);
    assert_int_equal(up.img.height, 427);
    assert_int_equal(up.img.frames, 1);
    assert_true(up.img.seq > 0);
    assert_true(up.img.bytes > 0);
    assert_true(up.img.created_at >= now - 5 && up.img.created_at <= now + 5);
    delete_token_hash(up.token, strlen(up.token), h);
    assert_string_equal(up.img.token_hash, h);

    /* the key is the SHA-256 of the stored bytes, one reference on it */
    assert_blob_is(f, up.img.key, up.img.bytes);
    assert_int_equal(refs_of(f, up.img.key), 1);
    assert_int_equal(blob_count(f), 1);
    assert_int_equal(tmp_entries(f), 0);

    /* the row, as a reader sees it (twice: the store, then the cache) */
    for (int i = 0; i < 2; i++) {
        memset(&got, 0, sizeof(got));
        assert_int_equal(app_image_get(&f->app, up.img.id, strlen(up.img.id), &got), OK);
        assert_string_equal(got.id, up.img.id);
        assert_int_equal(got.seq, up.img.seq);
        assert_string_equal(got.key, up.img.key);
        assert_string_equal(got.format, "jpeg");
        assert_int_equal(got.width, 640);
        assert_int_equal(got.height, 427);
        assert_int_equal(got.frames, 1);
        assert_int_equal(got.bytes, up.img.bytes);
        assert_string_equal(got.owner, "alice");
        assert_string_equal(got.token_hash, h);
    }

    /* the id is looked at exactly: a prefix, a malformed or an unknown id is not it */
    assert_int_equal(app_image_get(&f->app, up.img.id, strlen(up.img.id) - 1, &got), E_NOTFOUND);
    assert_int_equal(app_image_get(&f->app, "../etc", 6, &got), E_NOTFOUND);
    assert_int_equal(app_image_get(&f->app, "", 0, &got), E_NOTFOUND);
    {
        char other[IMAGE_ID_MAX + 1];
        image_id_new(other);
        assert_int_equal(app_image_get(&f->app, other, strlen(other), &got), E_NOTFOUND);
    }

    /* one "variants" job queued with the row */
    struct meta_job_stats st;
    assert_int_equal(meta_job_stats(f->rt.meta, &st), OK);
    assert_int_equal(st.queued, 1);
}

/* upload_rejected uploads path and expects rc, a reason, no token and nothing recorded. */
static void upload_rejected(struct fixture *f, const char *path, int rc)
{
    struct app_upload up;
    int got = app_upload(&f->app, path, "", &up);

    if (got != rc)
        fail_msg("%s: got %s (%s), want %s", path, err_str(got), up.message, err_str(rc));
    assert_true(up.message[0] != '\0');
    assert_string_equal(up.token, "");
    assert_nothing_recorded(f);
}

static void test_upload_rejects(void **state)
{
    struct fixture *f = *state;
    char path[1024], text[128], empty[128];
    FILE *fp;

    /* empty: the corpus's zero-byte file and one made here */
    upload_rejected(f, sample(EMPTY_FILE, path, sizeof(path)), E_UNSUPPORTED);
    snprintf(empty, sizeof(empty), "%s/empty", f->dir);
    fp = fopen(empty, "w");
    assert_non_null(fp);
    fclose(fp);
    upload_rejected(f, empty, E_UNSUPPORTED);

    /* not an image: plain text, and HTML named .jpg */
    snprintf(text, sizeof(text), "%s/notes.txt", f->dir);
    fp = fopen(text, "w");
    assert_non_null(fp);
    fputs("This is a plain text file, not an image at all.\n", fp);
    fclose(fp);
    upload_rejected(f, text, E_UNSUPPORTED);
    upload_rejected(f, sample(HTML_AS_JPEG, path, sizeof(path)), E_UNSUPPORTED);

    /* corrupt: a truncated JPEG, a PNG with a bad CRC */
    upload_rejected(f, sample(JPEG_TRUNCATED, path, sizeof(path)), E_BADIMAGE);
    upload_rejected(f, sample(PNG_BAD_CRC, path, sizeof(path)), E_BADIMAGE);

    /* the request body is left in place */
    assert_int_equal(access(text, R_OK), 0);
}

static void test_upload_limits(void **state)
{
    struct fixture *f = *state;
    char path[1024], err[256];
    struct app_upload up;

    /* 640x427 is 273280 pixels: over a limit of 273279, not over one of 273280 */
    assert_int_equal(config_set(&f->cfg, "limits.max_pixels", "273279", err, sizeof(err)), OK);
    upload_rejected(f, sample(JPEG_ROCKET, path, sizeof(path)), E_BADIMAGE);
    assert_int_equal(config_set(&f->cfg, "limits.max_pixels", "1000", err, sizeof(err)), OK);
    upload_rejected(f, sample(JPEG_ROCKET, path, sizeof(path)), E_BADIMAGE);

    /* 4 frames over a limit of 3 */
    assert_int_equal(config_set(&f->cfg, "limits.max_frames", "3", err, sizeof(err)), OK);
    upload_rejected(f, sample(GIF_ANIMATED, path, sizeof(path)), E_BADIMAGE);

    /* at the limits it goes in */
    assert_int_equal(config_set(&f->cfg, "limits.max_pixels", "273280", err, sizeof(err)), OK);
    upload_ok(f, JPEG_ROCKET, "", &up);
    assert_int_equal(config_set(&f->cfg, "limits.max_frames", "4", err, sizeof(err)), OK);
    upload_ok(f, GIF_ANIMATED, "", &up);
    assert_int_equal(up.img.frames, 4);
}

/* --- dedup and delete --- */

static void test_dedup_and_delete(void **state)
{
    struct fixture *f = *state;
    struct app_upload a, b;
    struct image_rec got;
    const char *key;

    upload_ok(f, JPEG_ROCKET, "", &a);
    upload_ok(f, JPEG_ROCKET, "", &b);
    key = a.img.key;
    assert_string_not_equal(a.img.id, b.img.id);
    assert_string_not_equal(a.token, b.token);
    assert_string_equal(a.img.key, b.img.key);
    assert_int_equal(refs_of(f, key), 2);
    assert_int_equal(blob_count(f), 1);

    /* warm the cache for a: the delete must invalidate it */
    assert_int_equal(app_image_get(&f->app, a.img.id, strlen(a.img.id), &got), OK);

    /* a's token deletes a only */
    assert_int_equal(app_delete(&f->app, a.img.id, strlen(a.img.id), a.token, false), OK);
    assert_int_equal(app_image_get(&f->app, a.img.id, strlen(a.img.id), &got), E_NOTFOUND);
    assert_int_equal(app_image_get(&f->app, b.img.id, strlen(b.img.id), &got), OK);
    assert_string_equal(got.key, key);
    assert_int_equal(refs_of(f, key), 1);
    assert_true(blob_there(f, key));

    /* the jobs run (b's variants are made); b's bytes stay */
    drain(f);
    assert_true(blob_there(f, key));
    assert_blob_is(f, key, b.img.bytes);
    assert_int_equal(refs_of(f, key), 1);
    assert_int_equal(app_image_get(&f->app, b.img.id, strlen(b.img.id), &got), OK);
    assert_true(blob_count(f) > 1); /* the image and its variants */

    /* b: a's token is the wrong one, no token is none, an admin may */
    assert_int_equal(app_delete(&f->app, b.img.id, strlen(b.img.id), a.token, false), E_FORBIDDEN);
    assert_int_equal(app_delete(&f->app, b.img.id, strlen(b.img.id), "", false), E_FORBIDDEN);
    assert_int_equal(app_delete(&f->app, b.img.id, strlen(b.img.id), NULL, false), E_UNAUTHORIZED);
    assert_int_equal(app_image_get(&f->app, b.img.id, strlen(b.img.id), &got), OK);
    assert_int_equal(refs_of(f, key), 1);
    assert_int_equal(app_delete(&f->app, b.img.id, strlen(b.img.id), NULL, true), OK);
    assert_int_equal(app_image_get(&f->app, b.img.id, strlen(b.img.id), &got), E_NOTFOUND);

    /* again: gone, whoever asks */
    assert_int_equal(app_delete(&f->app, b.img.id, strlen(b.img.id), b.token, false), E_NOTFOUND);
    assert_int_equal(app_delete(&f->app, b.img.id, strlen(b.img.id), NULL, true), E_NOTFOUND);
    assert_int_equal(app_delete(&f->app, a.img.id, strlen(a.img.id), a.token, false), E_NOTFOUND);
    assert_int_equal(app_delete(&f->app, "nope", 4, NULL, true), E_NOTFOUND);

    /* no reference left, but the bytes go only with the release job */
    assert_int_equal(refs_of(f, key), 0);
    assert_true(blob_there(f, key));
    drain(f);
    {
        int fd = -1;
        uint64_t size = 0;
        assert_int_equal(blob_open(f->rt.blobs, key, &fd, &size), E_NOTFOUND);
    }
    assert_false(blob_there(f, key));
    assert_int_equal(blob_count(f), 0); /* the variants' bytes too */
    assert_nothing_recorded(f);
}

/* --- list --- */

static void test_list(void **state)
{
    struct fixture *f = *state;
    struct image_rec out[MAX_LIST + 2];
    struct app_upload up[3];
    const char *names[3] = {JPEG_TINY, PNG_TINY, JPEG_TINY};
    size_t n;
    bool more;

    for (int i = 0; i < 3; i++)
        upload_ok(f, names[i], "", &up[i]);

    /* newest first, a page of 2 with more behind it */
    assert_int_equal(app_list(&f->app, 0, 2, out, &n, &more), OK);
    assert_int_equal(n, 2);
    assert_true(more);
    assert_string_equal(out[0].id, up[2].img.id);
    assert_string_equal(out[1].id, up[1].img.id);
    assert_true(out[0].seq > out[1].seq);
    assert_string_equal(out[1].format, "png");

    /* the next page, the last */
    assert_int_equal(app_list(&f->app, out[1].seq, 2, out, &n, &more), OK);
    assert_int_equal(n, 1);
    assert_false(more);
    assert_string_equal(out[0].id, up[0].img.id);

    /* a page exactly as long as what is left has nothing more */
    assert_int_equal(app_list(&f->app, 0, 3, out, &n, &more), OK);
    assert_int_equal(n, 3);
    assert_false(more);
    assert_int_equal(app_list(&f->app, 0, MAX_LIST, out, &n, &more), OK);
    assert_int_equal(n, 3);
    assert_false(more);

    /* bad limits and cursors */
    n = 99;
    more = true;
    assert_int_equal(app_list(&f->app, 0, MAX_LIST + 1, out, &n, &more), E_INVALID);
    assert_int_equal(n, 0);
    assert_false(more);
    assert_int_equal(app_list(&f->app, 0, 0, out, &n, &more), E_INVALID);
    assert_int_equal(app_list(&f->app, -1, 2, out, &n, &more), E_INVALID);

    /* a deleted image is not listed */
    assert_int_equal(app_delete(&f->app, up[1].img.id, strlen(up[1].img.id), up[1].token, false),
                     OK);
    assert_int_equal(app_list(&f->app, 0, MAX_LIST, out, &n, &more), OK);
    assert_int_equal(n, 2);
    assert_false(more);
    assert_string_equal(out[0].id, up[2].img.id);
    assert_string_equal(out[1].id, up[0].img.id);
}

/* --- variants --- */

struct variant_thread {
    struct fixture *f;
    const struct image_rec *img;
    const struct variant_preset *vp;
    pthread_barrier_t *start;
    struct variant_rec out;
    int rc;
};

static void *variant_main(void *arg)
{
    struct variant_thread *t = arg;

    pthread_barrier_wait(t->start);
    t->rc = app_variant(&t->f->app, t->img, t->vp, &t->out, NULL);
    return NULL;
}

/* ask_at_once has N_THREADS threads ask for the variant vp of img at the same moment. */
static void ask_at_once(struct fixture *f, const struct image_rec *img,
                        const struct variant_preset *vp, struct variant_thread *t)
{
    pthread_t tid[N_THREADS];
    pthread_barrier_t start;

    assert_int_equal(pthread_barrier_init(&start, NULL, N_THREADS), 0);
    for (int i = 0; i < N_THREADS; i++) {
        t[i] = (struct variant_thread){
            .f = f, .img = img, .vp = vp, .start = &start, .rc = E_INTERNAL};
        assert_int_equal(pthread_create(&tid[i], NULL, variant_main, &t[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++)
        assert_int_equal(pthread_join(tid[i], NULL), 0);
    pthread_barrier_destroy(&start);
}

/* Cursors: under the secret the first migration made, unforgeable, showing no counter. */
static void test_cursor(void **state)
{
    struct fixture *f = *state;
    char c1[64], c2[64], again[64], forged[64];
    char hex[80];
    uint8_t key[CURSOR_KEY_LEN], other[CURSOR_KEY_LEN];
    int64_t seq = 0;
    size_t same = 0;

    /* the secret exists from the first migration: 64 hex digits */
    assert_int_equal(meta_setting_get(f->rt.meta, APP_CURSOR_SECRET, hex, sizeof(hex)), OK);
    assert_int_equal(strlen(hex), 64);
    assert_int_equal(hex_decode(hex, 64, key, sizeof(key)), CURSOR_KEY_LEN);

    assert_int_equal(app_cursor_encode(&f->app, 1, c1, sizeof(c1)), OK);
    assert_int_equal(app_cursor_encode(&f->app, 2, c2, sizeof(c2)), OK);
    assert_int_equal(app_cursor_encode(&f->app, 1, again, sizeof(again)), OK);
    assert_string_equal(c1, again); /* one spelling per position */
    assert_int_equal(app_cursor_decode(&f->app, c2, strlen(c2), &seq), OK);
    assert_int_equal(seq, 2);
    /* neighbouring positions look unrelated: no counter shows through */
    for (size_t i = 2; c1[i] != '\0' && c2[i] != '\0'; i++)
        same += c1[i] == c2[i];
    assert_true(same < 8);
    /* every single-character edit is refused */
    for (size_t i = 0; c1[i] != '\0'; i++) {
        snprintf(forged, sizeof(forged), "%s", c1);
        forged[i] = forged[i] == 'A' ? 'B' : 'A';
        assert_int_equal(app_cursor_decode(&f->app, forged, strlen(forged), &seq), E_INVALID);
    }
    assert_int_equal(app_cursor_decode(&f->app, c1, strlen(c1) - 1, &seq), E_INVALID);
    assert_int_equal(app_cursor_decode(&f->app, "", 0, &seq), E_INVALID);
    /* made under another secret (another deployment, or a guess): refused */
    memcpy(other, key, sizeof(other));
    other[0] ^= 1;
    cursor_encode(other, 1, forged);
    assert_int_equal(app_cursor_decode(&f->app, forged, strlen(forged), &seq), E_INVALID);
    cursor_encode(key, 1, forged);
    assert_string_equal(forged, c1);
    assert_int_equal(app_cursor_encode(&f->app, 1, forged, 8), E_INVALID);
}

/* A delete is authorized by the database's token hash, never by a cached record. */
static void test_delete_authorized_by_database(void **state)
{
    struct fixture *f = *state;
    struct app_upload up;
    struct image_rec img;
    char newhash[SHA256_HEX], sql[256];
    const char *newtoken = "a-token-only-the-database-knows-0123";
    sqlite3 *db = NULL;

    upload_ok(f, JPEG_TINY, "", &up);
    /* the record is cached now, with the upload's token hash */
    assert_int_equal(app_image_get(&f->app, up.img.id, strlen(up.img.id), &img), OK);
    assert_int_equal(app_image_get(&f->app, up.img.id, strlen(up.img.id), &img), OK);
    /* the database alone changes: the cached hash is now stale (as a forged one would be) */
    delete_token_hash(newtoken, strlen(newtoken), newhash);
    snprintf(sql, sizeof(sql), "UPDATE images SET token_hash = '%s' WHERE id = '%s'", newhash,
             up.img.id);
    assert_int_equal(sqlite3_open(f->rt.db_path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_busy_timeout(db, 5000), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(app_image_get(&f->app, up.img.id, strlen(up.img.id), &img), OK);
    assert_string_equal(img.token_hash, up.img.token_hash); /* the cache still says the old one */
    assert_int_equal(app_delete(&f->app, up.img.id, strlen(up.img.id), up.token, false),
                     E_FORBIDDEN);
    assert_int_equal(app_delete(&f->app, up.img.id, strlen(up.img.id), newtoken, false), OK);
}

static void test_variant_single_flight(void **state)
{
    struct fixture *f = *state;
    const struct variant_preset *vp = config_variant(&f->cfg, "thumb", 5);
    struct variant_thread t[N_THREADS];
    struct variant_rec v;
    struct app_upload up;

    assert_non_null(vp);
    upload_ok(f, JPEG_ROCKET, "", &up);
    assert_int_equal(meta_variant_get(f->rt.meta, up.img.id, "thumb", &v), E_NOTFOUND);

    /* the maker takes long enough for all eight to ask while it works */
    atomic_store(&variant_delay_ms, 300);
    ask_at_once(f, &up.img, vp, t);
    atomic_store(&variant_delay_ms, 0);

    assert_int_equal(atomic_load(&variant_calls), 1);
    for (int i = 0; i < N_THREADS; i++) {
        if (t[i].rc != OK)
            fail_msg("thread %d: %s", i, err_str(t[i].rc));
        assert_string_equal(t[i].out.key, t[0].out.key);
        assert_string_equal(t[i].out.image_id, up.img.id);
        assert_string_equal(t[i].out.name, "thumb");
        assert_string_equal(t[i].out.format, "webp");
        assert_int_equal(t[i].out.width, t[0].out.width);
        assert_int_equal(t[i].out.height, t[0].out.height);
    }
    /* fits 64x64, keeps the aspect ratio */
    assert_int_equal(t[0].out.width, 64);
    assert_true(t[0].out.height >= 42 && t[0].out.height <= 43);

    /* one row, one reference, the bytes it names */
    assert_int_equal(meta_variant_get(f->rt.meta, up.img.id, "thumb", &v), OK);
    assert_string_equal(v.key, t[0].out.key);
    assert_int_equal(refs_of(f, v.key), 1);
    assert_blob_is(f, v.key, v.bytes);
    assert_int_equal(blob_count(f), 2);
    assert_int_equal(tmp_entries(f), 0);

    /* no flight left behind */
    for (size_t i = 0; i < APP_VARIANT_FLIGHTS; i++) {
        assert_false(f->app.flights[i].busy);
        assert_int_equal(f->app.flights[i].waiters, 0);
    }

    /* asked again: read, not made */
    assert_int_equal(app_variant(&f->app, &up.img, vp, &v, NULL), OK);
    assert_string_equal(v.key, t[0].out.key);
    assert_int_equal(atomic_load(&variant_calls), 1);
}

/*
 * When the one making a variant fails, the others waiting for it are told an
 * error too, never E_NOTFOUND: that means "the image went away" (a 404, and
 * a "variants" job that counts itself done), but the image is there.
 */
static void test_variant_single_flight_failure(void **state)
{
    struct fixture *f = *state;
    const struct variant_preset *vp = config_variant(&f->cfg, "thumb", 5);
    struct variant_thread t[N_THREADS];
    struct variant_rec v;
    struct app_upload up;
    struct image_rec got;

    assert_non_null(vp);
    upload_ok(f, JPEG_ROCKET, "", &up);
    atomic_store(&variant_delay_ms, 200);
    atomic_store(&variant_fail, E_BADIMAGE);
    ask_at_once(f, &up.img, vp, t);
    atomic_store(&variant_fail, 0);
    atomic_store(&variant_delay_ms, 0);

    assert_int_equal(app_image_get(&f->app, up.img.id, strlen(up.img.id), &got), OK);
    assert_int_equal(meta_variant_get(f->rt.meta, up.img.id, "thumb", &v), E_NOTFOUND);
    assert_true(atomic_load(&variant_calls) >= 1);
    for (int i = 0; i < N_THREADS; i++) {
        if (t[i].rc != E_BADIMAGE) {
            int notfound = 0;
            for (int j = 0; j < N_THREADS; j++)
                notfound += t[j].rc == E_NOTFOUND;
            fail_msg("thread %d: %s, want %s (%d of %d threads told not found, %d variant makes)",
                     i, err_str(t[i].rc), err_str(E_BADIMAGE), notfound, N_THREADS,
                     atomic_load(&variant_calls));
        }
    }
    for (size_t i = 0; i < APP_VARIANT_FLIGHTS; i++) {
        assert_false(f->app.flights[i].busy);
        assert_int_equal(f->app.flights[i].waiters, 0);
    }
    assert_int_equal(tmp_entries(f), 0);

    /* the next request makes it */
    assert_int_equal(app_variant(&f->app, &up.img, vp, &v, NULL), OK);
    assert_int_equal(refs_of(f, v.key), 1);
}

static void test_variant_missing_blob(void **state)
{
    struct fixture *f = *state;
    const struct variant_preset *vp = config_variant(&f->cfg, "thumb", 5);
    struct variant_rec v;
    struct app_upload up;

    assert_non_null(vp);
    upload_ok(f, JPEG_TINY, "", &up);
    /* a live image whose bytes are gone is a fault, not "not found" */
    assert_int_equal(blob_delete(f->rt.blobs, up.img.key), OK);
    assert_int_equal(app_variant(&f->app, &up.img, vp, &v, NULL), E_UNAVAILABLE);
    assert_int_equal(meta_variant_get(f->rt.meta, up.img.id, "thumb", &v), E_NOTFOUND);
    assert_int_equal(atomic_load(&variant_calls), 0);
    for (size_t i = 0; i < APP_VARIANT_FLIGHTS; i++)
        assert_false(f->app.flights[i].busy);
}

/* --- renditions --- */

static void parse_ops(const char *ops, const char *ext, struct img_ops *o)
{
    const struct ops_limits lim = {4096, 100000000};
    char err[160];

    assert_int_equal(img_ops_parse(str_from(ops), str_from(ext), &lim, o, err, sizeof(err)), OK);
}

static void test_rendition(void **state)
{
    struct fixture *f = *state;
    struct app_upload up, alpha;
    struct variant_rec v, again;
    struct img_ops o;
    char err[160] = "";
    int made_fd = 0;

    upload_ok(f, JPEG_ROCKET, "", &up);
    /* made once, recorded under its canonical form, then read back */
    parse_ops("h:100,w:100,fit:cover", "webp", &o);
    assert_int_equal(app_rendition(&f->app, &up.img, &o, &v, &made_fd, err, sizeof(err)), OK);
    assert_int_equal(made_fd, -1);
    assert_string_equal(v.name, "w:100,h:100,fit:cover.webp");
    assert_string_equal(v.format, "webp");
    assert_int_equal(v.width, 100);
    assert_int_equal(v.height, 100);
    assert_blob_is(f, v.key, v.bytes);
    assert_int_equal(meta_variant_get(f->rt.meta, up.img.id, v.name, &again), OK);
    assert_int_equal(app_rendition(&f->app, &up.img, &o, &again, NULL, err, sizeof(err)), OK);
    assert_string_equal(again.key, v.key);
    /* auto for a client without AVIF or WebP: JPEG, or PNG for an image with alpha */
    parse_ops("w:50", "auto", &o);
    assert_int_equal(app_rendition(&f->app, &up.img, &o, &v, NULL, err, sizeof(err)), OK);
    assert_string_equal(v.name, "w:50.auto");
    assert_string_equal(v.format, "jpeg");
    upload_ok(f, PNG_TINY, "", &alpha);
    parse_ops("w:5,up:1", "auto", &o);
    assert_int_equal(app_rendition(&f->app, &alpha.img, &o, &v, NULL, err, sizeof(err)), OK);
    assert_string_equal(v.format, "png");
    assert_int_equal(v.width, 5);
    /* an output over limits.max_pixels known only from the image: E_INVALID naming the key */
    parse_ops("h:4096,dpr:4,up:1", "webp", &o);
    assert_int_equal(app_rendition(&f->app, &up.img, &o, &v, NULL, err, sizeof(err)), E_INVALID);
    assert_memory_equal(err, "h:", 2);
    /* deleted: the rows go with the image */
    assert_int_equal(app_delete(&f->app, up.img.id, strlen(up.img.id), NULL, true), OK);
    assert_int_equal(meta_variant_get(f->rt.meta, up.img.id, "w:100,h:100,fit:cover.webp", &v),
                     E_NOTFOUND);
}

static void test_rendition_budget(void **state)
{
    struct fixture *f = *state;
    struct app_upload up;
    struct variant_rec v;
    struct img_ops o;
    char err[160] = "";

    upload_ok(f, JPEG_ROCKET, "", &up);
    parse_ops("w:64", "webp", &o);
    /* others hold the whole budget: after queue_timeout, E_UNAVAILABLE and nothing made */
    f->cfg.transforms.queue_timeout_ms = 50;
    f->app.budget = 1 << 20;
    f->app.budget_used = 1 << 20;
    assert_int_equal(app_rendition(&f->app, &up.img, &o, &v, NULL, err, sizeof(err)),
                     E_UNAVAILABLE);
    assert_int_equal(meta_variant_get(f->rt.meta, up.img.id, "w:64.webp", &v), E_NOTFOUND);
    /* alone, a rendition predicted over the whole budget is still made */
    f->app.budget_used = 0;
    f->app.budget = 1;
    assert_int_equal(app_rendition(&f->app, &up.img, &o, &v, NULL, err, sizeof(err)), OK);
    assert_int_equal(f->app.budget_used, 0);
    assert_int_equal(f->app.work_running, 0);
}

/* --- jobs --- */

static void job_of(struct meta_job *job, const char *kind, const char *payload)
{
    memset(job, 0, sizeof(*job));
    job->id = 1;
    job->attempts = 1;
    snprintf(job->kind, sizeof(job->kind), "%s", kind);
    snprintf(job->payload, sizeof(job->payload), "%s", payload);
}

static void test_job_variants(void **state)
{
    struct fixture *f = *state;
    struct app_upload up;
    struct variant_rec v;
    struct meta_job job;
    char err[256] = "";

    assert_int_equal(f->cfg.n_variants, 2);
    upload_ok(f, JPEG_ROCKET, "", &up);
    for (size_t i = 0; i < f->cfg.n_variants; i++)
        assert_int_equal(meta_variant_get(f->rt.meta, up.img.id, f->cfg.variant[i].name, &v),
                         E_NOTFOUND);

    /* the job queued by the upload makes every preset */
    assert_int_equal(drain(f), 1);
    assert_int_equal(atomic_load(&variant_calls), (int)f->cfg.n_variants);
    for (size_t i = 0; i < f->cfg.n_variants; i++) {
        const struct variant_preset *vp = &f->cfg.variant[i];

        assert_int_equal(meta_variant_get(f->rt.meta, up.img.id, vp->name, &v), OK);
        assert_string_equal(v.name, vp->name);
        assert_string_equal(v.format, vp->format);
        assert_true(v.width >= 1 && v.width <= vp->width);
        assert_true(v.height >= 1 && v.height <= vp->height);
        assert_true(v.width == vp->width || v.height == vp->height);
        assert_int_equal(refs_of(f, v.key), 1);
        assert_blob_is(f, v.key, v.bytes);
    }
    assert_int_equal(blob_count(f), 1 + f->cfg.n_variants);

    /* run again: nothing made twice */
    job_of(&job, META_JOB_VARIANTS, up.img.id);
    assert_int_equal(app_job_run(&f->app, &job, err, sizeof(err)), OK);
    assert_int_equal(atomic_load(&variant_calls), (int)f->cfg.n_variants);
    assert_int_equal(blob_count(f), 1 + f->cfg.n_variants);
}

static void test_job_unknown_kind(void **state)
{
    struct fixture *f = *state;
    struct meta_job job;
    char err[256] = "";

    job_of(&job, "frobnicate", "x");
    assert_int_equal(app_job_run(&f->app, &job, err, sizeof(err)), E_INVALID);
    assert_true(err[0] != '\0');
    assert_non_null(strstr(err, "frobnicate"));
}

static void test_job_variants_deleted(void **state)
{
    struct fixture *f = *state;
    struct app_upload up;
    struct variant_rec v;
    struct meta_job job;
    char err[256] = "";
    char unknown[IMAGE_ID_MAX + 1];

    upload_ok(f, JPEG_ROCKET, "", &up);
    assert_int_equal(app_delete(&f->app, up.img.id, strlen(up.img.id), up.token, false), OK);
    job_of(&job, META_JOB_VARIANTS, up.img.id);
    assert_int_equal(app_job_run(&f->app, &job, err, sizeof(err)), OK);
    for (size_t i = 0; i < f->cfg.n_variants; i++)
        assert_int_equal(meta_variant_get(f->rt.meta, up.img.id, f->cfg.variant[i].name, &v),
                         E_NOTFOUND);
    assert_int_equal(atomic_load(&variant_calls), 0);

    /* an id that never existed: nothing to do either */
    image_id_new(unknown);
    job_of(&job, META_JOB_VARIANTS, unknown);
    assert_int_equal(app_job_run(&f->app, &job, err, sizeof(err)), OK);
    assert_int_equal(atomic_load(&variant_calls), 0);

    /* the queued jobs (its variants, purge, release) leave nothing */
    drain(f);
    assert_int_equal(atomic_load(&variant_calls), 0);
    assert_nothing_recorded(f);
}

static void test_job_release_and_purge(void **state)
{
    struct fixture *f = *state;
    struct app_upload up;
    struct meta_job job;
    char err[256] = "";

    upload_ok(f, JPEG_TINY, "", &up);

    /* a referenced blob is not released */
    job_of(&job, META_JOB_RELEASE, up.img.key);
    assert_int_equal(app_job_run(&f->app, &job, err, sizeof(err)), OK);
    assert_true(blob_there(f, up.img.key));
    assert_int_equal(refs_of(f, up.img.key), 1);

    /* a key nothing knows: already gone */
    {
        char key[SHA256_HEX];
        uint8_t d[SHA256_LEN];
        sha256_buf("no such blob", 12, d);
        hex_encode(d, SHA256_LEN, key);
        job_of(&job, META_JOB_RELEASE, key);
        assert_int_equal(app_job_run(&f->app, &job, err, sizeof(err)), OK);
    }

    /* no CDN configured: a purge has nothing to do */
    char payload[64];
    snprintf(payload, sizeof(payload), "%s:jpeg", up.img.id);
    job_of(&job, META_JOB_PURGE, payload);
    assert_int_equal(app_job_run(&f->app, &job, err, sizeof(err)), OK);
    assert_true(blob_there(f, up.img.key));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_upload_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upload_rejects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upload_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dedup_and_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cursor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_authorized_by_database, setup, teardown),
        cmocka_unit_test_setup_teardown(test_variant_single_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_variant_single_flight_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_variant_missing_blob, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rendition, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rendition_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_variants, setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_unknown_kind, setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_variants_deleted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_release_and_purge, setup, teardown),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
