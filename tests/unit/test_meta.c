/*
 * test_meta.c - the metadata store contract, against SQLite and PostgreSQL.
 *
 * The same contract tests run on both backends. SQLite: each test gets a fresh
 * database in a mkdtemp directory. PostgreSQL: a throwaway leader and one
 * synchronous standby (Patroni) are started with deploy/local/pg.sh in a temporary
 * directory on free ports (or TESSERA_TEST_PG_URL names a server to use), and
 * each test starts from an empty schema. A few tests look under the interface:
 * the schema version, WAL mode, query plans, reads under a lock, replica routing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
// cmocka needs the above first
#include "core/codec.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/ident.h"
#include "core/log.h"
#include "jobs/jobs.h"
#include "meta/meta.h"
#include "meta/meta_int.h"

#include <cmocka.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct fixture {
    bool pg;
    char dir[64];
    char path[128];
    struct meta_store *ms;
};

/* The PostgreSQL server of the "postgres" group (primary URL, replica URL). */
static char pg_url[256];
static char pg_replica_url[256];
static char pg_dir[64];
static char pg_script[512];
static int pg_base;  /* pg.sh's TESSERA_PG_PORT */
static bool pg_ours; /* started by this test: stopped and removed at the end */

static int open_store(struct fixture *f, const char *replicas)
{
    struct meta_options o = {.url = f->pg ? pg_url : "",
                             .replicas = replicas ? replicas : "",
                             .sqlite_path = f->path,
                             .max_replica_lag_ms = 1000,
                             .statement_timeout_ms = 5000,
                             .connect_timeout_ms = 2000,
                             .pool = 4,
                             .migrate = true};

    return meta_open(&o, &f->ms);
}

/* pg_sql runs statements on a side connection to url; returns the first value of the last. */
static void pg_sql(const char *url, const char *sql, char *buf, size_t cap)
{
    PGconn *c = PQconnectdb(url);
    PGresult *r;

    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    if (buf != NULL) {
        buf[0] = '\0';
        for (int i = 0; i < PQntuples(r); i++) /* rows joined with ';' (query plans) */
            snprintf(buf + strlen(buf), cap - strlen(buf), "%s%s", i ? ";" : "",
                     PQgetvalue(r, i, 0));
    }
    PQclear(r);
    PQfinish(c);
}

static int setup_sqlite(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    snprintf(f->dir, sizeof(f->dir), "/tmp/tessera-meta-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->path, sizeof(f->path), "%s/meta.db", f->dir);
    if (open_store(f, NULL) != OK)
        return -1;
    *state = f;
    return 0;
}

static int setup_pg(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    f->pg = true;
    pg_sql(pg_url, "DROP SCHEMA public CASCADE; CREATE SCHEMA public", NULL, 0);
    if (open_store(f, NULL) != OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    const char *suffix[] = {"", "-wal", "-shm", "-journal"};
    char p[160];

    meta_close(f->ms);
    if (!f->pg) {
        for (size_t i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++) {
            snprintf(p, sizeof(p), "%s%s", f->path, suffix[i]);
            unlink(p);
        }
        rmdir(f->dir);
    }
    free(f);
    return 0;
}

static void reopen(struct fixture *f)
{
    meta_close(f->ms);
    f->ms = NULL;
    assert_int_equal(open_store(f, NULL), OK);
}

/* key_of writes a distinct valid blob key for n. */
static void key_of(unsigned n, char out[SHA256_HEX])
{
    uint8_t d[SHA256_LEN];

    sha256_buf(&n, sizeof(n), d);
    hex_encode(d, sizeof(d), out);
}

static void image_make(struct image_rec *img, unsigned keyn)
{
    memset(img, 0, sizeof(*img));
    image_id_new(img->id);
    key_of(keyn, img->key);
    strcpy(img->format, "jpeg");
    img->width = 4000;
    img->height = 3000;
    img->frames = 1;
    img->bytes = 2481919;
    img->created_at = 1795775467;
    delete_token_hash("token", 5, img->token_hash);
}

static void variant_make(struct variant_rec *v, const char *image_id, const char *name,
                         unsigned keyn)
{
    memset(v, 0, sizeof(*v));
    strcpy(v->image_id, image_id);
    strcpy(v->name, name);
    key_of(keyn, v->key);
    strcpy(v->format, "webp");
    v->width = 256;
    v->height = 192;
    v->bytes = 12345;
}

static int64_t refs_of(struct meta_store *ms, const char *key)
{
    int64_t refs = -1;

    assert_int_equal(meta_blob_refs(ms, key, &refs), OK);
    return refs;
}

static int64_t count_of(struct meta_store *ms)
{
    int64_t n = -1;

    assert_int_equal(meta_image_count(ms, &n), OK);
    return n;
}

static void test_roundtrip(void **state)
{
    struct fixture *f = *state;
    struct image_rec img, got, list[4];
    struct meta_released rel;
    size_t n = 99;

    image_make(&img, 1);
    strcpy(img.owner, "key-7");
    img.frames = 12;
    assert_int_equal(meta_ping(f->ms), OK);
    assert_int_equal(meta_image_insert(f->ms, &img), OK);
    assert_true(img.seq > 0);

    assert_int_equal(meta_image_get(f->ms, img.id, &got), OK);
    assert_string_equal(got.id, img.id);
    assert_int_equal(got.seq, img.seq);
    assert_string_equal(got.key, img.key);
    assert_string_equal(got.format, "jpeg");
    assert_int_equal(got.width, 4000);
    assert_int_equal(got.height, 3000);
    assert_int_equal(got.frames, 12);
    assert_int_equal(got.bytes, 2481919);
    assert_int_equal(got.created_at, 1795775467);
    assert_string_equal(got.owner, "key-7");
    assert_string_equal(got.token_hash, img.token_hash);
    assert_int_equal(count_of(f->ms), 1);

    assert_int_equal(meta_image_list(f->ms, 0, 4, list, &n), OK);
    assert_int_equal(n, 1);
    assert_string_equal(list[0].id, img.id);
    assert_int_equal(meta_image_list(f->ms, img.seq, 4, list, &n), OK);
    assert_int_equal(n, 0);
    assert_int_equal(meta_image_list(f->ms, 0, 0, list, &n), OK);
    assert_int_equal(n, 0);

    assert_int_equal(meta_image_delete(f->ms, img.id, &rel), OK);
    assert_int_equal(rel.n, 1);
    assert_string_equal(rel.keys[0], img.key);
    assert_int_equal(meta_image_get(f->ms, img.id, &got), E_NOTFOUND);
    assert_int_equal(meta_image_delete(f->ms, img.id, &rel), E_NOTFOUND);
    assert_int_equal(rel.n, 0);
    assert_int_equal(meta_image_list(f->ms, 0, 4, list, &n), OK);
    assert_int_equal(n, 0);
    assert_int_equal(count_of(f->ms), 0);
}

static void test_notfound(void **state)
{
    struct fixture *f = *state;
    struct image_rec got;
    struct variant_rec v;
    char id[IMAGE_ID_LEN + 1];

    image_id_new(id);
    assert_int_equal(meta_image_get(f->ms, id, &got), E_NOTFOUND);
    assert_int_equal(meta_image_delete(f->ms, id, NULL), E_NOTFOUND);
    assert_int_equal(meta_variant_get(f->ms, id, "thumb", &v), E_NOTFOUND);
    /* Ids that cannot exist are simply not found. */
    assert_int_equal(meta_image_get(f->ms, "short", &got), E_NOTFOUND);
    assert_int_equal(meta_image_get(f->ms, "bad/id/with/slashes", &got), E_NOTFOUND);
    assert_int_equal(meta_image_get(f->ms, "x' OR '1'='1", &got), E_NOTFOUND);
    assert_int_equal(meta_image_get(f->ms, NULL, &got), E_NOTFOUND);
    assert_int_equal(meta_variant_get(f->ms, id, "../thumb", &v), E_NOTFOUND);
}

static void test_duplicate_id(void **state)
{
    struct fixture *f = *state;
    struct image_rec a, b;

    image_make(&a, 1);
    assert_int_equal(meta_image_insert(f->ms, &a), OK);
    image_make(&b, 2);
    strcpy(b.id, a.id);
    assert_int_equal(meta_image_insert(f->ms, &b), E_EXISTS);
    /* The failed insert took no reference and left nothing behind. */
    assert_int_equal(refs_of(f->ms, b.key), 0);
    assert_int_equal(refs_of(f->ms, a.key), 1);
    assert_int_equal(count_of(f->ms), 1);
    /* Ids are never reused, not even after a delete. */
    assert_int_equal(meta_image_delete(f->ms, a.id, NULL), OK);
    assert_int_equal(meta_image_insert(f->ms, &b), E_EXISTS);
    assert_int_equal(refs_of(f->ms, b.key), 0);
}

static void test_invalid(void **state)
{
    struct fixture *f = *state;
    struct image_rec img;
    struct variant_rec v;
    int64_t refs;

    image_make(&img, 1);
    strcpy(img.key, "ABCDEF");
    assert_int_equal(meta_image_insert(f->ms, &img), E_INVALID);
    image_make(&img, 1);
    img.key[63] = 'G';
    assert_int_equal(meta_image_insert(f->ms, &img), E_INVALID);
    image_make(&img, 1);
    strcpy(img.id, "no spaces in ids");
    assert_int_equal(meta_image_insert(f->ms, &img), E_INVALID);
    image_make(&img, 1);
    img.format[0] = '\0';
    assert_int_equal(meta_image_insert(f->ms, &img), E_INVALID);
    image_make(&img, 1);
    memset(img.format, 'a', sizeof(img.format)); /* not terminated */
    assert_int_equal(meta_image_insert(f->ms, &img), E_INVALID);
    image_make(&img, 1);
    img.token_hash[0] = '\0';
    assert_int_equal(meta_image_insert(f->ms, &img), E_INVALID);
    assert_int_equal(count_of(f->ms), 0);

    image_make(&img, 1);
    assert_int_equal(meta_image_insert(f->ms, &img), OK);
    variant_make(&v, img.id, "Thumb", 2);
    assert_int_equal(meta_variant_put(f->ms, &v), E_INVALID);
    variant_make(&v, img.id, "../x", 2);
    assert_int_equal(meta_variant_put(f->ms, &v), E_INVALID);
    variant_make(&v, img.id, "", 2);
    assert_int_equal(meta_variant_put(f->ms, &v), E_INVALID);
    variant_make(&v, img.id, "thumb", 2);
    v.key[0] = 'Z';
    assert_int_equal(meta_variant_put(f->ms, &v), E_INVALID);
    assert_int_equal(meta_blob_refs(f->ms, "nothex", &refs), E_INVALID);
}

/* seen_index finds id in the initial set, or -1. */
static int seen_index(char ids[][IMAGE_ID_MAX + 1], int n, const char *id)
{
    for (int i = 0; i < n; i++)
        if (strcmp(ids[i], id) == 0)
            return i;
    return -1;
}

static void test_keyset_pagination(void **state)
{
    struct fixture *f = *state;
    enum { N = 100, PAGE = 7 };
    char ids[N][IMAGE_ID_MAX + 1];
    int64_t seqs[N];
    int visits[N] = {0};
    bool deleted[N] = {false};
    struct image_rec img, page[PAGE];
    int64_t before = 0;
    int64_t last = INT64_MAX;
    unsigned extra = 1000;
    size_t n;

    for (int i = 0; i < N; i++) {
        image_make(&img, (unsigned)i % 10); /* shared keys too */
        assert_int_equal(meta_image_insert(f->ms, &img), OK);
        strcpy(ids[i], img.id);
        seqs[i] = img.seq;
        if (i > 0)
            assert_true(seqs[i] > seqs[i - 1]);
    }
    for (int round = 0;; round++) {
        assert_int_equal(meta_image_list(f->ms, before, PAGE, page, &n), OK);
        if (n == 0)
            break;
        for (size_t j = 0; j < n; j++) {
            int k = seen_index(ids, N, page[j].id);
            assert_true(page[j].seq < last); /* strictly newest first */
            last = page[j].seq;
            assert_true(k >= 0); /* never an image inserted during the walk */
            assert_false(deleted[k]);
            visits[k]++;
        }
        before = page[n - 1].seq;
        /* Between pages: an upload, a delete ahead of the cursor, one behind it. */
        image_make(&img, extra++);
        assert_int_equal(meta_image_insert(f->ms, &img), OK);
        int ahead = (int)(round * 3 + 1) % N;
        if (seqs[ahead] < before && !deleted[ahead]) {
            assert_int_equal(meta_image_delete(f->ms, ids[ahead], NULL), OK);
            deleted[ahead] = true;
        }
        int behind = seen_index(ids, N, page[0].id);
        if (!deleted[behind]) {
            assert_int_equal(meta_image_delete(f->ms, ids[behind], NULL), OK);
            deleted[behind] = true;
        }
    }
    int ndeleted_unseen = 0;
    for (int i = 0; i < N; i++) {
        if (visits[i] == 0) {
            assert_true(deleted[i]); /* only an image deleted before the cursor got there */
            ndeleted_unseen++;
        } else {
            assert_int_equal(visits[i], 1);
        }
    }
    assert_true(ndeleted_unseen > 0); /* the walk did see deletes ahead of it */
}

static void test_refcounts(void **state)
{
    struct fixture *f = *state;
    struct image_rec a, b;
    struct meta_released rel;

    image_make(&a, 5);
    image_make(&b, 5);
    assert_int_equal(meta_image_insert(f->ms, &a), OK);
    assert_int_equal(meta_image_insert(f->ms, &b), OK);
    assert_int_equal(refs_of(f->ms, a.key), 2);
    assert_int_equal(meta_image_delete(f->ms, a.id, &rel), OK);
    assert_int_equal(rel.n, 0);
    assert_int_equal(refs_of(f->ms, a.key), 1);
    assert_int_equal(meta_image_delete(f->ms, b.id, &rel), OK);
    assert_int_equal(rel.n, 1);
    assert_string_equal(rel.keys[0], a.key);
    assert_int_equal(refs_of(f->ms, a.key), 0);
}

static int gc_count_fn(void *arg, const char *key)
{
    (void)key;
    *(int *)arg += 1;
    return OK;
}

/* The gc primitives, on both backends: every statement runs once. */
static void test_gc_primitives(void **state)
{
    struct fixture *f = *state;
    struct meta_gc_cutoffs cut = {time(NULL) + 10, time(NULL) + 10, meta_now_ms() + 10000};
    struct meta_gc_counts c;
    struct meta_blob rows[4], row;
    struct image_rec a;
    char orphan[SHA256_HEX];
    int64_t n = 0;
    uint64_t bytes = 0;
    size_t got = 0;
    int calls = 0;

    image_make(&a, 7);
    memset(orphan, 'e', SHA256_HEX - 1);
    orphan[SHA256_HEX - 1] = '\0';
    assert_int_equal(meta_blob_pin(f->ms, a.key, 10), OK); /* stale with the cutoffs above */
    assert_int_equal(meta_gc_count(f->ms, &cut, &c), OK);
    assert_int_equal(c.stale_pins, 1);
    assert_int_equal(c.unused, 1);
    assert_int_equal(meta_blob_get(f->ms, a.key, &row), OK);
    assert_int_equal(row.pins, 1);
    assert_int_equal(meta_blob_get(f->ms, orphan, &row), E_NOTFOUND);
    assert_int_equal(meta_blob_collect_orphan(f->ms, a.key, gc_count_fn, &calls), E_EXISTS);
    assert_int_equal(calls, 0);
    assert_int_equal(meta_blob_collect_orphan(f->ms, orphan, gc_count_fn, &calls), OK);
    assert_int_equal(calls, 1);
    assert_int_equal(meta_blob_get(f->ms, orphan, &row), E_NOTFOUND); /* the claim is gone */
    assert_int_equal(meta_blob_list_unused(f->ms, "", cut.created_before, rows, 4, &got), OK);
    assert_int_equal(got, 0); /* still pinned */
    assert_int_equal(meta_blob_unpin_stale(f->ms, cut.pinned_before, &n), OK);
    assert_int_equal(n, 1);
    assert_int_equal(meta_blob_list_unused(f->ms, "", cut.created_before, rows, 4, &got), OK);
    assert_int_equal(got, 1);
    assert_string_equal(rows[0].key, a.key);
    assert_int_equal(meta_variants_drop_dead(f->ms, 10, &n, &bytes), OK);
    assert_int_equal(n, 0);
    assert_int_equal(meta_job_purge_dead(f->ms, cut.job_before_ms, &n), OK);
    assert_int_equal(n, 0);
}

static void test_variants(void **state)
{
    struct fixture *f = *state;
    struct image_rec img, other;
    struct variant_rec v, got;
    struct meta_released rel;
    char shared[SHA256_HEX];

    image_make(&img, 1);
    image_make(&other, 2);
    assert_int_equal(meta_image_insert(f->ms, &img), OK);
    assert_int_equal(meta_image_insert(f->ms, &other), OK);

    variant_make(&v, img.id, "thumb", 10);
    assert_int_equal(meta_variant_get(f->ms, img.id, "thumb", &got), E_NOTFOUND);
    assert_int_equal(meta_variant_put(f->ms, &v), OK);
    assert_int_equal(meta_variant_put(f->ms, &v), OK); /* idempotent */
    assert_int_equal(refs_of(f->ms, v.key), 1);        /* the reference was taken once */
    assert_int_equal(meta_variant_get(f->ms, img.id, "thumb", &got), OK);
    assert_string_equal(got.image_id, img.id);
    assert_string_equal(got.name, "thumb");
    assert_string_equal(got.key, v.key);
    assert_string_equal(got.format, "webp");
    assert_int_equal(got.width, 256);
    assert_int_equal(got.height, 192);
    assert_int_equal(got.bytes, 12345);

    /* A variant whose bytes equal the original's, and one shared with another image. */
    variant_make(&v, img.id, "medium", 1);
    assert_int_equal(meta_variant_put(f->ms, &v), OK);
    assert_int_equal(refs_of(f->ms, img.key), 2);
    key_of(11, shared);
    variant_make(&v, img.id, "small_1-x", 11);
    assert_int_equal(meta_variant_put(f->ms, &v), OK);
    variant_make(&v, other.id, "small_1-x", 11);
    assert_int_equal(meta_variant_put(f->ms, &v), OK);
    assert_int_equal(refs_of(f->ms, shared), 2);

    assert_int_equal(meta_image_delete(f->ms, img.id, &rel), OK);
    /* Released: the original (twice referenced, both gone) and the thumb; not the shared one. */
    assert_int_equal(rel.n, 2);
    char k10[SHA256_HEX];
    key_of(10, k10);
    bool has_img = false, has_thumb = false;
    for (size_t i = 0; i < rel.n; i++) {
        has_img |= strcmp(rel.keys[i], img.key) == 0;
        has_thumb |= strcmp(rel.keys[i], k10) == 0;
    }
    assert_true(has_img && has_thumb);
    assert_int_equal(refs_of(f->ms, img.key), 0);
    assert_int_equal(refs_of(f->ms, k10), 0);
    assert_int_equal(refs_of(f->ms, shared), 1);
    assert_int_equal(meta_variant_get(f->ms, img.id, "thumb", &got), E_NOTFOUND);
    assert_int_equal(meta_variant_get(f->ms, other.id, "small_1-x", &got), OK);

    /* After the delete a variant cannot be recorded (a late worker) nor take a reference. */
    variant_make(&v, img.id, "late", 12);
    assert_int_equal(meta_variant_put(f->ms, &v), E_NOTFOUND);
    assert_int_equal(refs_of(f->ms, v.key), 0);
    image_make(&img, 13);
    variant_make(&v, img.id, "thumb", 12); /* an image never inserted */
    assert_int_equal(meta_variant_put(f->ms, &v), E_NOTFOUND);
}

/* a rendition is a variant named by its canonical form: up to 63 characters of [a-z0-9:,.] */
static void test_variant_rendition_name(void **state)
{
    struct fixture *f = *state;
    const char *longest = "w:4096,h:4096,fit:cover,g:attention,q:100,dpr:4,up:1.avif";
    struct image_rec img;
    struct variant_rec v, got;
    char name[META_VARIANT_MAX + 1];

    image_make(&img, 1);
    assert_int_equal(meta_image_insert(f->ms, &img), OK);
    variant_make(&v, img.id, longest, 7);
    assert_int_equal(meta_variant_put(f->ms, &v), OK);
    assert_int_equal(meta_variant_get(f->ms, img.id, longest, &got), OK);
    assert_string_equal(got.name, longest);
    assert_string_equal(got.key, v.key);
    /* 64 characters cannot name one (not found); other characters are refused */
    memset(name, 'a', META_VARIANT_MAX);
    name[META_VARIANT_MAX] = '\0';
    assert_int_equal(meta_variant_get(f->ms, img.id, name, &got), E_NOTFOUND);
    variant_make(&v, img.id, "w:1;drop", 8);
    assert_int_equal(meta_variant_put(f->ms, &v), E_INVALID);
    variant_make(&v, img.id, "W:1.webp", 8);
    assert_int_equal(meta_variant_put(f->ms, &v), E_INVALID);
}

/*
 * The renditions' disk budget: touches order them, eviction drops the least recently used
 * rows (and their references) until under budget, never a preset; and the making lease.
 */
static void test_renditions_budget_and_lease(void **state)
{
    struct fixture *f = *state;
    struct image_rec a, b;
    struct variant_rec v, got;
    struct meta_evicted e;
    struct meta_variant_ref t[3];
    bool won = false;
    int64_t now = meta_now_ms();

    image_make(&a, 1);
    image_make(&b, 2);
    assert_int_equal(meta_image_insert(f->ms, &a), OK);
    assert_int_equal(meta_image_insert(f->ms, &b), OK);
    variant_make(&v, a.id, "thumb", 10); /* a preset: never counted, never evicted */
    assert_int_equal(meta_variant_put(f->ms, &v), OK);
    variant_make(&v, a.id, "w:1.webp", 11);
    assert_int_equal(meta_variant_put(f->ms, &v), OK);
    variant_make(&v, a.id, "w:2.webp", 12);
    assert_int_equal(meta_variant_put(f->ms, &v), OK);
    variant_make(&v, b.id, "w:3.webp", 13);
    assert_int_equal(meta_variant_put(f->ms, &v), OK);
    /* last uses: w:1 oldest, then w:3, then w:2 */
    snprintf(t[0].image_id, sizeof(t[0].image_id), "%s", a.id);
    snprintf(t[0].name, sizeof(t[0].name), "w:1.webp");
    snprintf(t[1].image_id, sizeof(t[1].image_id), "%s", b.id);
    snprintf(t[1].name, sizeof(t[1].name), "w:3.webp");
    snprintf(t[2].image_id, sizeof(t[2].image_id), "%s", a.id);
    snprintf(t[2].name, sizeof(t[2].name), "w:2.webp");
    for (int i = 0; i < 3; i++)
        assert_int_equal(meta_variants_touch(f->ms, &t[i], 1, 1000 + 1000 * i), OK);
    assert_int_equal(meta_variant_get(f->ms, a.id, "w:2.webp", &got), OK);
    assert_int_equal(got.used_at, 3000);

    assert_int_equal(meta_renditions_evict(f->ms, 3 * 12345, &e), OK);
    assert_int_equal(e.total, 3 * 12345); /* the preset does not count */
    assert_int_equal(e.n, 0);
    assert_int_equal(meta_renditions_evict(f->ms, 12345, &e), OK);
    assert_false(e.skipped);
    assert_int_equal(e.n, 2);
    assert_int_equal(e.bytes, 2 * 12345);
    assert_string_equal(e.ref[0].name, "w:1.webp");
    assert_string_equal(e.ref[1].name, "w:3.webp");
    assert_int_equal(meta_variant_get(f->ms, a.id, "w:1.webp", &got), E_NOTFOUND);
    assert_int_equal(meta_variant_get(f->ms, b.id, "w:3.webp", &got), E_NOTFOUND);
    assert_int_equal(meta_variant_get(f->ms, a.id, "w:2.webp", &got), OK);
    assert_int_equal(meta_variant_get(f->ms, a.id, "thumb", &got), OK);
    {
        char k11[SHA256_HEX];
        key_of(11, k11);
        assert_int_equal(refs_of(f->ms, k11), 0); /* its reference went with the row */
    }
    /* a touch of a row gone is no error; within budget nothing goes */
    assert_int_equal(meta_variants_touch(f->ms, t, 3, 5000), OK);
    assert_int_equal(meta_renditions_evict(f->ms, 12345, &e), OK);
    assert_int_equal(e.n, 0);
    assert_int_equal(e.total, 12345);

    /* leases: one holder at a time, its own again, others' drops ignored, expiry */
    assert_int_equal(meta_lease_take(f->ms, a.id, "w:9.webp", 1, now + 60000, &won), OK);
    assert_true(won);
    assert_int_equal(meta_lease_take(f->ms, a.id, "w:9.webp", 2, now + 60000, &won), OK);
    assert_false(won);
    assert_int_equal(meta_lease_take(f->ms, a.id, "w:9.webp", 1, now + 60000, &won), OK);
    assert_true(won);
    assert_int_equal(meta_lease_drop(f->ms, a.id, "w:9.webp", 2), OK);
    assert_int_equal(meta_lease_take(f->ms, a.id, "w:9.webp", 2, now + 60000, &won), OK);
    assert_false(won);
    assert_int_equal(meta_lease_drop(f->ms, a.id, "w:9.webp", 1), OK);
    assert_int_equal(meta_lease_take(f->ms, a.id, "w:9.webp", 2, now + 60000, &won), OK);
    assert_true(won);
    assert_int_equal(meta_lease_take(f->ms, b.id, "w:9.webp", 3, now - 1, &won), OK);
    assert_true(won); /* another variant: its own lease */
    assert_int_equal(meta_lease_take(f->ms, b.id, "w:9.webp", 4, now + 60000, &won), OK);
    assert_true(won); /* holder 3's ran out */
    assert_int_equal(meta_lease_take(f->ms, a.id, "w:9.webp", 0, now, &won), E_INVALID);
    assert_int_equal(meta_lease_take(f->ms, a.id, "W;9", 5, now, &won), E_INVALID);
}

static void test_variant_cap(void **state)
{
    struct fixture *f = *state;
    struct image_rec img;
    struct variant_rec v;
    struct meta_released rel;
    char name[16];

    image_make(&img, 1);
    assert_int_equal(meta_image_insert(f->ms, &img), OK);
    for (unsigned i = 0; i < META_VARIANTS_PER_IMAGE; i++) {
        snprintf(name, sizeof(name), "v%u", i);
        variant_make(&v, img.id, name, 100 + i);
        assert_int_equal(meta_variant_put(f->ms, &v), OK);
    }
    variant_make(&v, img.id, "one-too-many", 999);
    assert_int_equal(meta_variant_put(f->ms, &v), E_TOOBIG);
    assert_int_equal(refs_of(f->ms, v.key), 0);
    variant_make(&v, img.id, "v0", 100); /* already recorded: still fine */
    assert_int_equal(meta_variant_put(f->ms, &v), OK);
    assert_int_equal(meta_image_delete(f->ms, img.id, &rel), OK);
    assert_int_equal(rel.n, META_RELEASE_MAX);
}

/* sql_text runs a one-row query on a side connection and copies column 0. */
static void sql_text(const char *path, const char *sql, char *buf, size_t cap)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;

    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    snprintf(buf, cap, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void test_settings(void **state)
{
    struct fixture *f = *state;
    char v[80], small[4];

    assert_int_equal(meta_setting_get(f->ms, "ring.epoch", v, sizeof(v)), E_NOTFOUND);
    assert_int_equal(meta_setting_set(f->ms, "ring.epoch", "abc123"), OK);
    assert_int_equal(meta_setting_get(f->ms, "ring.epoch", v, sizeof(v)), OK);
    assert_string_equal(v, "abc123");
    assert_int_equal(meta_setting_set(f->ms, "ring.epoch", "def456"), OK);
    assert_int_equal(meta_setting_get(f->ms, "ring.epoch", v, sizeof(v)), OK);
    assert_string_equal(v, "def456");
    assert_int_equal(meta_setting_get(f->ms, "ring.epoch", small, sizeof(small)), E_TOOBIG);
    assert_int_equal(meta_setting_set(f->ms, "Bad Name", "x"), E_INVALID);
    assert_int_equal(meta_setting_get(f->ms, "", v, sizeof(v)), E_INVALID);
    reopen(f);
    assert_int_equal(meta_setting_get(f->ms, "ring.epoch", v, sizeof(v)), OK);
    assert_string_equal(v, "def456");
}

static void test_migrations_idempotent(void **state)
{
    struct fixture *f = *state;
    struct image_rec img, got;
    char buf[64];
    char want[16];

    image_make(&img, 1);
    assert_int_equal(meta_image_insert(f->ms, &img), OK);
    reopen(f);
    reopen(f);
    assert_int_equal(meta_image_get(f->ms, img.id, &got), OK);
    assert_int_equal(refs_of(f->ms, img.key), 1);
    snprintf(want, sizeof(want), "%d", meta_sqlite_schema_version);
    sql_text(f->path, "PRAGMA user_version", buf, sizeof(buf));
    assert_string_equal(buf, want);
    sql_text(f->path, "PRAGMA journal_mode", buf, sizeof(buf));
    assert_string_equal(buf, "wal");

    /* A database from a newer build is refused, not misread. */
    meta_close(f->ms);
    f->ms = NULL;
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 999", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    log_min_level = LOG_OFF;
    assert_int_equal(meta_open_sqlite(f->path, &f->ms), E_IO);
    log_min_level = LOG_WARN;
    assert_null(f->ms);
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    snprintf(buf, sizeof(buf), "PRAGMA user_version = %d", meta_sqlite_schema_version);
    assert_int_equal(sqlite3_exec(db, buf, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    reopen(f);
}

static void test_list_query_plan(void **state)
{
    struct fixture *f = *state;
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    char sql[512];
    char plan[512] = "";

    snprintf(sql, sizeof(sql), "EXPLAIN QUERY PLAN %s", meta_sqlite_list_sql);
    assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        strncat(plan, (const char *)sqlite3_column_text(st, 3), sizeof(plan) - strlen(plan) - 2);
        strcat(plan, ";");
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    print_message("list plan: %s\n", plan);
    assert_non_null(strstr(plan, "SEARCH images USING INDEX images_live (seq<?)"));
    assert_null(strstr(plan, "SCAN"));
    assert_null(strstr(plan, "TEMP B-TREE"));
}

static void test_reads_during_write_lock(void **state)
{
    struct fixture *f = *state;
    struct image_rec img, got, list[2];
    sqlite3 *db = NULL;
    size_t n;

    image_make(&img, 1);
    assert_int_equal(meta_image_insert(f->ms, &img), OK);
    /* Another process holds the write lock (say `tessera migrate`, or a stuck writer). */
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db, "BEGIN IMMEDIATE; UPDATE images SET width = 1", NULL, NULL, NULL),
        SQLITE_OK);
    assert_int_equal(meta_ping(f->ms), OK);
    assert_int_equal(meta_image_get(f->ms, img.id, &got), OK);
    assert_int_equal(got.width, 4000); /* the last commit, not the open transaction */
    assert_int_equal(meta_image_list(f->ms, 0, 2, list, &n), OK);
    assert_int_equal(n, 1);
    /* A write waits out the busy timeout, then reports the database unavailable. */
    image_make(&img, 2);
    log_min_level = LOG_OFF;
    assert_int_equal(meta_image_insert(f->ms, &img), E_UNAVAILABLE);
    log_min_level = LOG_WARN;
    assert_int_equal(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(meta_image_insert(f->ms, &img), OK);
    assert_int_equal(count_of(f->ms), 2);
}

enum { THREADS = 8, PER_THREAD = 40 };

struct worker {
    struct meta_store *ms;
    atomic_int *errors;
};

static void *worker_run(void *arg)
{
    struct worker *w = arg;
    struct image_rec img, got, page[10];
    struct variant_rec v;
    size_t n;

    for (unsigned i = 0; i < PER_THREAD; i++) {
        image_make(&img, i % 5);
        if (meta_image_insert(w->ms, &img) != OK)
            atomic_fetch_add(w->errors, 1);
        if (meta_image_get(w->ms, img.id, &got) != OK || got.seq != img.seq)
            atomic_fetch_add(w->errors, 1);
        if (meta_image_list(w->ms, 0, 10, page, &n) != OK || n == 0)
            atomic_fetch_add(w->errors, 1);
        variant_make(&v, img.id, "thumb", 50 + i % 3);
        if (meta_variant_put(w->ms, &v) != OK)
            atomic_fetch_add(w->errors, 1);
        if (i % 4 == 0 && meta_image_delete(w->ms, img.id, NULL) != OK)
            atomic_fetch_add(w->errors, 1);
    }
    return NULL;
}

static void test_concurrent(void **state)
{
    struct fixture *f = *state;
    pthread_t th[THREADS];
    struct worker w[THREADS];
    atomic_int errors = 0;
    struct image_rec page[64];
    int64_t before = 0, seen = 0;
    size_t n;

    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){f->ms, &errors};
        assert_int_equal(pthread_create(&th[i], NULL, worker_run, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&errors), 0);
    int64_t live = THREADS * (PER_THREAD - PER_THREAD / 4);
    assert_int_equal(count_of(f->ms), live);
    do {
        assert_int_equal(meta_image_list(f->ms, before, 64, page, &n), OK);
        seen += (int64_t)n;
        if (n > 0)
            before = page[n - 1].seq;
    } while (n > 0);
    assert_int_equal(seen, live);
    /* The counts add up: every live image and variant holds exactly one reference. */
    int64_t refs = 0;
    char key[SHA256_HEX];
    for (unsigned k = 0; k < 5; k++) {
        key_of(k, key);
        refs += refs_of(f->ms, key);
    }
    for (unsigned k = 50; k < 53; k++) {
        key_of(k, key);
        refs += refs_of(f->ms, key);
    }
    assert_int_equal(refs, 2 * live);
}

static void test_durable_across_close(void **state)
{
    struct fixture *f = *state;
    enum { N = 30 };
    struct image_rec imgs[N], got;
    struct variant_rec v, vgot;

    for (int i = 0; i < N; i++) {
        image_make(&imgs[i], (unsigned)i);
        assert_int_equal(meta_image_insert(f->ms, &imgs[i]), OK);
        variant_make(&v, imgs[i].id, "thumb", 500 + (unsigned)i);
        assert_int_equal(meta_variant_put(f->ms, &v), OK);
    }
    for (int i = 0; i < N; i += 3)
        assert_int_equal(meta_image_delete(f->ms, imgs[i].id, NULL), OK);
    reopen(f);
    for (int i = 0; i < N; i++) {
        int rc = meta_image_get(f->ms, imgs[i].id, &got);
        int vrc = meta_variant_get(f->ms, imgs[i].id, "thumb", &vgot);
        if (i % 3 == 0) {
            assert_int_equal(rc, E_NOTFOUND);
            assert_int_equal(vrc, E_NOTFOUND);
            assert_int_equal(refs_of(f->ms, imgs[i].key), 0);
        } else {
            assert_int_equal(rc, OK);
            assert_int_equal(got.seq, imgs[i].seq);
            assert_int_equal(vrc, OK);
            assert_int_equal(refs_of(f->ms, imgs[i].key), 1);
            assert_int_equal(refs_of(f->ms, vgot.key), 1);
        }
    }
    assert_int_equal(count_of(f->ms), N - N / 3);
    /* seq keeps growing after a reopen, past even the deleted newest row. */
    struct image_rec last = imgs[N - 1];
    assert_int_equal(meta_image_delete(f->ms, last.id, NULL), OK);
    reopen(f);
    image_make(&got, 7000);
    assert_int_equal(meta_image_insert(f->ms, &got), OK);
    assert_true(got.seq > last.seq);
}

/* ---- the job queue and blob release (both backends) ---- */

static int claim(struct meta_store *ms, int64_t lease_ms, struct meta_job *j)
{
    return meta_job_claim(ms, lease_ms, j);
}

/* drain_jobs completes every due job (after the outbox tests looked at them). */
static void drain_jobs(struct meta_store *ms)
{
    struct meta_job j;

    while (claim(ms, 10000, &j) == OK)
        assert_int_equal(meta_job_done(ms, &j), OK);
}

/* claim_not_purge claims the next job that is not a CDN purge, finishing the purges it meets. */
static int claim_not_purge(struct meta_store *ms, int64_t lease_ms, struct meta_job *j)
{
    int rc;

    while ((rc = claim(ms, lease_ms, j)) == OK && strcmp(j->kind, META_JOB_PURGE) == 0)
        assert_int_equal(meta_job_done(ms, j), OK);
    return rc;
}

static void test_jobs_outbox(void **state)
{
    struct fixture *f = *state;
    struct image_rec img;
    struct meta_job j, j2;
    struct meta_job_stats st;
    struct meta_released rel;

    assert_int_equal(claim(f->ms, 10000, &j), E_NOTFOUND);
    image_make(&img, 1);
    assert_int_equal(meta_image_insert(f->ms, &img), OK);
    /* the insert queued "make the variants of this image" in its own transaction */
    assert_int_equal(meta_job_stats(f->ms, &st), OK);
    assert_int_equal(st.queued, 1);
    assert_int_equal(claim(f->ms, 10000, &j), OK);
    assert_string_equal(j.kind, META_JOB_VARIANTS);
    assert_string_equal(j.payload, img.id);
    assert_int_equal(j.attempts, 1);
    assert_int_equal(claim(f->ms, 10000, &j2), E_NOTFOUND); /* leased: nobody else gets it */
    assert_int_equal(meta_job_stats(f->ms, &st), OK);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.running, 1);
    assert_int_equal(meta_job_done(f->ms, &j), OK);
    assert_int_equal(meta_job_done(f->ms, &j), E_NOTFOUND);
    /* a failed insert queues nothing */
    assert_int_equal(meta_image_insert(f->ms, &img), E_EXISTS);
    assert_int_equal(claim(f->ms, 10000, &j), E_NOTFOUND);
    /* a delete queues the CDN purge ("id:format") and the release of each blob at zero */
    assert_int_equal(meta_image_delete(f->ms, img.id, &rel), OK);
    assert_int_equal(rel.n, 1);
    assert_int_equal(claim(f->ms, 10000, &j), OK);
    assert_int_equal(claim(f->ms, 10000, &j2), OK);
    if (strcmp(j.kind, META_JOB_PURGE) == 0) { /* same due time: either may come first */
        struct meta_job t = j;
        j = j2;
        j2 = t;
    }
    char want[META_JOB_PAYLOAD_MAX];
    snprintf(want, sizeof(want), "%s:%s", img.id, img.format);
    assert_string_equal(j2.kind, META_JOB_PURGE);
    assert_string_equal(j2.payload, want);
    assert_int_equal(meta_job_done(f->ms, &j2), OK);
    assert_string_equal(j.kind, META_JOB_RELEASE);
    assert_string_equal(j.payload, img.key);
    assert_int_equal(meta_job_done(f->ms, &j), OK);
    assert_int_equal(meta_job_stats(f->ms, &st), OK);
    assert_int_equal(st.queued + st.running + st.dead, 0);
}

static void test_jobs_lease_retry_dead(void **state)
{
    struct fixture *f = *state;
    struct meta_job j, again, stale;
    struct meta_job_stats st;

    assert_int_equal(meta_job_enqueue(f->ms, "test", "payload-1", 0), OK);
    assert_int_equal(meta_job_enqueue(f->ms, "Bad Kind", "x", 0), E_INVALID);
    assert_int_equal(meta_job_enqueue(f->ms, "test", "a\nb", 0), E_INVALID);
    /* a worker takes it and dies: the lease runs out, another takes it */
    assert_int_equal(claim(f->ms, 50, &stale), OK);
    usleep(120 * 1000);
    assert_int_equal(claim(f->ms, 10000, &j), OK);
    assert_int_equal(j.id, stale.id);
    assert_int_equal(j.attempts, 2);
    /* the dead worker's late answers are fenced off by the lease token */
    assert_int_equal(meta_job_done(f->ms, &stale), E_NOTFOUND);
    assert_int_equal(meta_job_fail(f->ms, &stale, "late", 5, 0), E_NOTFOUND);
    /* a failure backs off: not due until retry_ms has passed */
    assert_int_equal(meta_job_fail(f->ms, &j, "boom", 3, 150), OK);
    assert_int_equal(claim(f->ms, 10000, &again), E_NOTFOUND);
    usleep(200 * 1000);
    assert_int_equal(claim(f->ms, 10000, &again), OK);
    assert_int_equal(again.attempts, 3);
    /* the last allowed attempt fails: dead, never claimed again */
    assert_int_equal(meta_job_fail(f->ms, &again, "boom again", 3, 0), OK);
    assert_int_equal(claim(f->ms, 10000, &j), E_NOTFOUND);
    assert_int_equal(meta_job_stats(f->ms, &st), OK);
    assert_int_equal(st.dead, 1);
    assert_int_equal(st.queued, 0);
}

static void test_jobs_lease_extend(void **state)
{
    struct fixture *f = *state;
    struct meta_job j, other, stale;

    assert_int_equal(meta_job_enqueue(f->ms, "test", "payload-x", 0), OK);
    assert_int_equal(claim(f->ms, 100, &j), OK);
    /* renewed: still ours after the first lease would have run out */
    assert_int_equal(meta_job_extend(f->ms, &j, 10000), OK);
    usleep(150 * 1000);
    assert_int_equal(claim(f->ms, 10000, &other), E_NOTFOUND);
    /* a token that is not the lease's renews nothing */
    stale = j;
    stale.lease ^= 1;
    assert_int_equal(meta_job_extend(f->ms, &stale, 10000), E_NOTFOUND);
    assert_int_equal(meta_job_extend(f->ms, &j, 0), E_INVALID);
    assert_int_equal(meta_job_done(f->ms, &j), OK);
    assert_int_equal(meta_job_extend(f->ms, &j, 10000), E_NOTFOUND);
}

/* meta_job_stats counts by kind: queued, due now, running, and how long the oldest due waits. */
static void test_jobs_stats_by_kind(void **state)
{
    struct fixture *f = *state;
    struct meta_job_stats st;
    struct meta_job j;

    assert_int_equal(meta_job_enqueue(f->ms, "beta", "b1", 0), OK);
    assert_int_equal(meta_job_enqueue(f->ms, "alpha", "a1", 0), OK);
    assert_int_equal(meta_job_enqueue(f->ms, "alpha", "a2", 0), OK);
    assert_int_equal(meta_job_enqueue(f->ms, "alpha", "later", 60000), OK);
    usleep(1100 * 1000);
    assert_int_equal(claim(f->ms, 10000, &j), OK); /* one of the due ones runs */
    assert_int_equal(meta_job_stats(f->ms, &st), OK);
    assert_int_equal(st.nkinds, 2);
    assert_int_equal(st.queued + st.running, 4);
    assert_string_equal(st.kind[0].kind, "alpha"); /* in name order */
    assert_string_equal(st.kind[1].kind, "beta");
    assert_int_equal(st.kind[0].queued + st.kind[0].running, 3);
    assert_int_equal(st.kind[0].due + st.kind[1].due, 2); /* "later" is not due; one is leased */
    assert_int_equal(st.kind[0].running + st.kind[1].running, 1);
    for (size_t i = 0; i < 2; i++) {
        if (st.kind[i].due > 0)
            assert_true(st.kind[i].oldest_due_age >= 1);
        else
            assert_int_equal(st.kind[i].oldest_due_age, 0);
    }
    assert_true(st.oldest_age >= 1);
}

struct slow_job {
    struct meta_store *ms;
    int rival; /* what a second worker's claim returned while the job ran */
};

static int slow_handler(void *arg, const struct meta_job *job, char *err, size_t cap)
{
    struct slow_job *s = arg;
    struct meta_job j;

    (void)job;
    (void)err;
    (void)cap;
    usleep(4500 * 1000); /* longer than two leases of 2 s (renewed every 0.67 s) */
    s->rival = meta_job_claim(s->ms, 2000, &j);
    return OK;
}

/* jobs_run_one renews the lease while the handler runs: a slow job is not run twice. */
static void test_jobs_slow_job_kept(void **state)
{
    struct fixture *f = *state;
    struct jobs_opts o = {
        .workers = 1, .lease_ms = 2000, .max_attempts = 3, .backoff_ms = 10, .poll_ms = 10};
    struct slow_job s = {.ms = f->ms, .rival = -1};
    struct meta_job_stats st;

    assert_int_equal(meta_job_enqueue(f->ms, "test", "slow", 0), OK);
    assert_int_equal(jobs_run_one(f->ms, &o, slow_handler, &s), OK);
    assert_int_equal(s.rival, E_NOTFOUND);
    assert_int_equal(meta_job_stats(f->ms, &st), OK);
    assert_int_equal(st.queued + st.running + st.dead, 0);
}

enum { CLAIMERS = 6, CLAIM_JOBS = 60 };

struct claimer {
    struct meta_store *ms;
    atomic_int *seen; /* per job payload index: completions */
    atomic_int *errors;
};

static void *claimer_run(void *arg)
{
    struct claimer *c = arg;
    struct meta_job j;
    int rc;

    while ((rc = claim(c->ms, 10000, &j)) == OK) {
        int k = atoi(j.payload);
        if (k < 0 || k >= CLAIM_JOBS || meta_job_done(c->ms, &j) != OK)
            atomic_fetch_add(c->errors, 1);
        else
            atomic_fetch_add(&c->seen[k], 1);
    }
    if (rc != E_NOTFOUND)
        atomic_fetch_add(c->errors, 1);
    return NULL;
}

static void test_jobs_concurrent_claims(void **state)
{
    struct fixture *f = *state;
    atomic_int seen[CLAIM_JOBS];
    atomic_int errors = 0;
    pthread_t th[CLAIMERS];
    struct claimer c = {f->ms, seen, &errors};
    char payload[16];

    for (int i = 0; i < CLAIM_JOBS; i++) {
        atomic_init(&seen[i], 0);
        snprintf(payload, sizeof(payload), "%d", i);
        assert_int_equal(meta_job_enqueue(f->ms, "test", payload, 0), OK);
    }
    for (int i = 0; i < CLAIMERS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, claimer_run, &c), 0);
    for (int i = 0; i < CLAIMERS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&errors), 0);
    for (int i = 0; i < CLAIM_JOBS; i++)
        assert_int_equal(atomic_load(&seen[i]), 1); /* each job done exactly once */
}

struct removed {
    int calls;
    char last[SHA256_HEX];
    int rc;
};

static int remove_fn(void *arg, const char *key)
{
    struct removed *r = arg;

    r->calls++;
    snprintf(r->last, sizeof(r->last), "%s", key);
    return r->rc;
}

static void test_blob_pins_release(void **state)
{
    struct fixture *f = *state;
    struct image_rec a, b;
    struct removed rm = {0, "", OK};
    struct meta_job j;

    image_make(&a, 7);
    /* an upload pins the key before writing bytes, inserts, unpins */
    assert_int_equal(meta_blob_pin(f->ms, a.key, a.bytes), OK);
    assert_int_equal(refs_of(f->ms, a.key), 0);
    assert_int_equal(meta_blob_release(f->ms, a.key, remove_fn, &rm), E_EXISTS); /* pinned */
    assert_int_equal(rm.calls, 0);
    assert_int_equal(meta_image_insert(f->ms, &a), OK);
    assert_int_equal(meta_blob_unpin(f->ms, a.key), OK);
    assert_int_equal(refs_of(f->ms, a.key), 1);
    drain_jobs(f->ms); /* the variants job; unpin with a reference queued nothing */
    assert_int_equal(meta_blob_release(f->ms, a.key, remove_fn, &rm), E_EXISTS); /* referenced */
    assert_int_equal(rm.calls, 0);

    /* delete: count zero, row kept for the release job */
    assert_int_equal(meta_image_delete(f->ms, a.id, NULL), OK);
    assert_int_equal(claim_not_purge(f->ms, 10000, &j), OK);
    assert_string_equal(j.payload, a.key);
    /* meanwhile an upload of the same bytes pins it: the release leaves the bytes */
    image_make(&b, 7);
    assert_int_equal(meta_blob_pin(f->ms, b.key, b.bytes), OK);
    assert_int_equal(meta_blob_release(f->ms, j.payload, remove_fn, &rm), E_EXISTS);
    assert_int_equal(rm.calls, 0);
    assert_int_equal(meta_job_done(f->ms, &j), OK);
    /* the upload fails after all: its unpin queues a release, which removes the bytes */
    assert_int_equal(meta_blob_unpin(f->ms, b.key), OK);
    assert_int_equal(claim_not_purge(f->ms, 10000, &j), OK);
    assert_string_equal(j.kind, META_JOB_RELEASE);
    rm.rc = E_UNAVAILABLE; /* the blob store is down: the row stays, the job retries */
    assert_int_equal(meta_blob_release(f->ms, j.payload, remove_fn, &rm), E_UNAVAILABLE);
    assert_int_equal(rm.calls, 1);
    rm.rc = OK;
    assert_int_equal(meta_blob_release(f->ms, j.payload, remove_fn, &rm), OK);
    assert_int_equal(rm.calls, 2);
    assert_string_equal(rm.last, b.key);
    /* idempotent: released already, nothing to do */
    assert_int_equal(meta_blob_release(f->ms, j.payload, remove_fn, &rm), OK);
    assert_int_equal(rm.calls, 2);
    assert_int_equal(meta_job_done(f->ms, &j), OK);
    assert_int_equal(refs_of(f->ms, b.key), 0);
    /* after the release, the same bytes may be uploaded again */
    assert_int_equal(meta_blob_pin(f->ms, b.key, b.bytes), OK);
    assert_int_equal(meta_image_insert(f->ms, &b), OK);
    assert_int_equal(meta_blob_unpin(f->ms, b.key), OK);
    assert_int_equal(refs_of(f->ms, b.key), 1);
}

/* ---- PostgreSQL only ---- */

static int64_t node_queries(struct meta_store *ms, const char *name)
{
    struct meta_node nodes[META_NODES_MAX];
    size_t n;

    meta_nodes(ms, nodes, META_NODES_MAX, &n);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(nodes[i].name, name) == 0)
            return nodes[i].queries;
    }
    fail_msg("no node %s", name);
    return -1;
}

static void test_pg_replica_reads(void **state)
{
    struct fixture *f = *state;
    struct image_rec img, got;
    struct meta_node nodes[META_NODES_MAX];
    size_t n;

    meta_close(f->ms);
    f->ms = NULL;
    assert_int_equal(open_store(f, pg_replica_url), OK);
    meta_nodes(f->ms, nodes, META_NODES_MAX, &n);
    assert_int_equal(n, 2);
    assert_string_equal(nodes[0].role, "primary");
    assert_string_equal(nodes[1].role, "replica");
    assert_true(nodes[1].reachable);
    /* read-your-writes: every read right after the write finds it, replica or not */
    for (unsigned i = 0; i < 50; i++) {
        image_make(&img, i);
        assert_int_equal(meta_image_insert(f->ms, &img), OK);
        assert_int_equal(meta_image_get(f->ms, img.id, &got), OK);
        assert_string_equal(got.id, img.id);
    }
    /* once replayed, reads are served by the replica, not the primary */
    usleep(300 * 1000);
    int64_t r0 = node_queries(f->ms, "replica-1");
    int64_t p0 = node_queries(f->ms, "primary");
    for (int i = 0; i < 20; i++)
        assert_int_equal(meta_image_get(f->ms, img.id, &got), OK);
    assert_true(node_queries(f->ms, "replica-1") - r0 >= 20);
    assert_true(node_queries(f->ms, "primary") - p0 < 20); /* only the monitor's probes */
    /* a miss on the replica is asked on the primary, then remembered briefly */
    char id[IMAGE_ID_LEN + 1];
    image_id_new(id);
    assert_int_equal(meta_image_get(f->ms, id, &got), E_NOTFOUND);
    assert_int_equal(meta_ping(f->ms), OK);
}

static void test_pg_migrate(void **state)
{
    struct fixture *f = *state;
    char buf[64], want[16];
    int from = -1, to = -1;

    (void)f;
    snprintf(want, sizeof(want), "%d", meta_pg_schema_version);
    pg_sql(pg_url, "SELECT max(version) FROM schema_migrations", buf, sizeof(buf));
    assert_string_equal(buf, want);
    assert_int_equal(meta_migrate_pg(pg_url, &from, &to), OK); /* idempotent */
    assert_int_equal(from, meta_pg_schema_version);
    assert_int_equal(to, meta_pg_schema_version);
    log_min_level = LOG_OFF;
    assert_int_equal(meta_migrate_pg(pg_replica_url, &from, &to), E_INVALID); /* a replica */
    log_min_level = LOG_WARN;
    /* a multi-host URL whose first host is the replica: read-write finds the primary */
    char multi[700];
    const char *rp = strstr(pg_replica_url, "127.0.0.1:"), *pp = strstr(pg_url, "127.0.0.1:");
    assert_non_null(rp);
    assert_non_null(pp);
    snprintf(multi, sizeof(multi),
             "%.*s127.0.0.1:%d,127.0.0.1:%d%s%starget_session_attrs=read-write",
             (int)(rp - pg_replica_url), pg_replica_url, atoi(rp + 10), atoi(pp + 10),
             strchr(rp, '/'), strchr(rp, '?') ? "&" : "?");
    assert_int_equal(meta_migrate_pg(multi, &from, &to), OK);
    assert_int_equal(to, meta_pg_schema_version);
    log_min_level = LOG_OFF;
    assert_int_equal(meta_migrate_pg("postgresql://postgres@127.0.0.1:1/postgres", NULL, NULL),
                     E_UNAVAILABLE);
    log_min_level = LOG_WARN;
    /* a database from a newer build is refused, not misread */
    pg_sql(pg_url, "INSERT INTO schema_migrations (version) VALUES (999)", NULL, 0);
    meta_close(f->ms);
    f->ms = NULL;
    log_min_level = LOG_OFF;
    assert_int_not_equal(open_store(f, NULL), OK);
    log_min_level = LOG_WARN;
    assert_null(f->ms);
    pg_sql(pg_url, "DELETE FROM schema_migrations WHERE version = 999", NULL, 0);
    reopen(f);
}

static void test_pg_list_query_plan(void **state)
{
    struct fixture *f = *state;
    char sql[600], plan[1024];

    (void)f;
    /* with statistics saying the table is big, the listing walks the partial index */
    snprintf(sql, sizeof(sql),
             "SET enable_seqscan = off; PREPARE l AS %s; EXPLAIN EXECUTE l(100, 50)",
             meta_pg_list_sql);
    pg_sql(pg_url, sql, plan, sizeof(plan));
    print_message("list plan: %s\n", plan);
    assert_non_null(strstr(plan, "images_live"));
    assert_null(strstr(plan, "Sort"));
}

/* ---- the PostgreSQL server for the "postgres" group ---- */

/* ports_free: nothing listens on port .. port + n - 1. */
static bool ports_free(int port, int n)
{
    char cmd[128];

    snprintf(cmd, sizeof(cmd),
             "ss -Htln '( sport >= :%d and sport <= :%d )' 2>/dev/null | grep -q .", port,
             port + n - 1);
    return system(cmd) != 0;
}

/* pg_script_url runs "pg.sh url [NODE]" and keeps its one line in out. */
static bool pg_script_url(const char *node, char *out, size_t cap)
{
    char cmd[1024];
    FILE *f;
    bool ok;

    snprintf(cmd, sizeof(cmd), "TESSERA_PG_DIR=%s TESSERA_PG_PORT=%d TESSERA_PG_NODES=2 %s url %s",
             pg_dir, pg_base, pg_script, node);
    f = popen(cmd, "r");
    if (f == NULL)
        return false;
    ok = fgets(out, (int)cap, f) != NULL;
    if (pclose(f) != 0)
        ok = false;
    if (ok)
        out[strcspn(out, "\n")] = '\0';
    return ok;
}

/*
 * pg_start starts two PostgreSQL nodes (Patroni, etcd, a synchronous standby)
 * with deploy/local/pg.sh in a temporary directory on free ports; pg_url is the
 * leader's URL, pg_replica_url the standby's. Returns false (with why)
 * when it cannot.
 */
static bool pg_start(char *why, size_t cap)
{
    const char *ext = getenv("TESSERA_TEST_PG_URL");
    const char *here = __FILE__;
    const char *cut = strstr(here, "tests/unit/");
    char cmd[1024];
    int base = 0;

    if (ext != NULL && ext[0] != '\0') {
        snprintf(pg_url, sizeof(pg_url), "%s", ext);
        snprintf(pg_replica_url, sizeof(pg_replica_url), "%s",
                 getenv("TESSERA_TEST_PG_REPLICA_URL") ? getenv("TESSERA_TEST_PG_REPLICA_URL")
                                                       : "");
        return true;
    }
    if (cut == NULL) {
        snprintf(why, cap, "cannot locate deploy/local/pg.sh from %s", here);
        return false;
    }
    snprintf(pg_script, sizeof(pg_script), "%.*sdeploy/local/pg.sh", (int)(cut - here), here);
    if (access(pg_script, X_OK) != 0 || access("/usr/lib/postgresql/15/bin/postgres", X_OK) != 0) {
        snprintf(why, cap, "no PostgreSQL 15 server binaries or no %.300s (run scripts/deps.sh)",
                 pg_script);
        return false;
    }
    srand((unsigned)(getpid() ^ time(NULL)));
    for (int tries = 0; tries < 50 && base == 0; tries++) {
        int b = 20000 + rand() % 12000; /* below the ephemeral port range */
        if (ports_free(b, 18))          /* PostgreSQL, etcd, Patroni: see pg.sh */
            base = b;
    }
    snprintf(pg_dir, sizeof(pg_dir), "/tmp/tessera-test-pg-XXXXXX");
    if (base == 0 || mkdtemp(pg_dir) == NULL) {
        snprintf(why, cap, "no free ports or no temporary directory");
        return false;
    }
    pg_base = base;
    snprintf(cmd, sizeof(cmd),
             "TESSERA_PG_DIR=%s TESSERA_PG_PORT=%d TESSERA_PG_NODES=2 %s up >%s/up.log 2>&1",
             pg_dir, base, pg_script, pg_dir);
    pg_ours = true;
    if (system(cmd) != 0) {
        snprintf(why, cap, "deploy/local/pg.sh up failed (see %.64s/up.log)", pg_dir);
        return false;
    }
    /* the leader's own URL: the contract tests read their writes (a multi-host URL would
     * make both nodes read nodes, and a standby may not have replayed the last write) */
    if (!pg_script_url("pg-primary", pg_url, sizeof(pg_url)) ||
        !pg_script_url("pg-replica-1", pg_replica_url, sizeof(pg_replica_url))) {
        snprintf(why, cap, "deploy/local/pg.sh url failed");
        return false;
    }
    return true;
}

static void pg_stop(void)
{
    char cmd[1024];

    if (!pg_ours)
        return;
    snprintf(cmd, sizeof(cmd),
             "TESSERA_PG_DIR=%s TESSERA_PG_PORT=%d TESSERA_PG_NODES=2 %s destroy >/dev/null 2>&1",
             pg_dir, pg_base, pg_script);
    if (system(cmd) != 0)
        fprintf(stderr, "test_meta: could not remove the PostgreSQL in %s\n", pg_dir);
}

#define CONTRACT_TESTS(setup)                                                                      \
    cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),                              \
        cmocka_unit_test_setup_teardown(test_notfound, setup, teardown),                           \
        cmocka_unit_test_setup_teardown(test_duplicate_id, setup, teardown),                       \
        cmocka_unit_test_setup_teardown(test_invalid, setup, teardown),                            \
        cmocka_unit_test_setup_teardown(test_keyset_pagination, setup, teardown),                  \
        cmocka_unit_test_setup_teardown(test_refcounts, setup, teardown),                          \
        cmocka_unit_test_setup_teardown(test_gc_primitives, setup, teardown),                      \
        cmocka_unit_test_setup_teardown(test_variants, setup, teardown),                           \
        cmocka_unit_test_setup_teardown(test_variant_rendition_name, setup, teardown),             \
        cmocka_unit_test_setup_teardown(test_renditions_budget_and_lease, setup, teardown),        \
        cmocka_unit_test_setup_teardown(test_variant_cap, setup, teardown),                        \
        cmocka_unit_test_setup_teardown(test_settings, setup, teardown),                           \
        cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),                         \
        cmocka_unit_test_setup_teardown(test_durable_across_close, setup, teardown),               \
        cmocka_unit_test_setup_teardown(test_jobs_outbox, setup, teardown),                        \
        cmocka_unit_test_setup_teardown(test_jobs_lease_retry_dead, setup, teardown),              \
        cmocka_unit_test_setup_teardown(test_jobs_lease_extend, setup, teardown),                  \
        cmocka_unit_test_setup_teardown(test_jobs_stats_by_kind, setup, teardown),                 \
        cmocka_unit_test_setup_teardown(test_jobs_slow_job_kept, setup, teardown),                 \
        cmocka_unit_test_setup_teardown(test_jobs_concurrent_claims, setup, teardown),             \
        cmocka_unit_test_setup_teardown(test_blob_pins_release, setup, teardown)

int main(void)
{
    char why[512] = "";
    int failed;

    log_min_level = LOG_WARN;
    const struct CMUnitTest sqlite_tests[] = {
        CONTRACT_TESTS(setup_sqlite),
        cmocka_unit_test_setup_teardown(test_migrations_idempotent, setup_sqlite, teardown),
        cmocka_unit_test_setup_teardown(test_list_query_plan, setup_sqlite, teardown),
        cmocka_unit_test_setup_teardown(test_reads_during_write_lock, setup_sqlite, teardown),
    };
    const struct CMUnitTest pg_tests[] = {
        CONTRACT_TESTS(setup_pg),
        cmocka_unit_test_setup_teardown(test_pg_replica_reads, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_pg_migrate, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_pg_list_query_plan, setup_pg, teardown),
    };

    failed = cmocka_run_group_tests_name("sqlite", sqlite_tests, NULL, NULL);
    if (!pg_start(why, sizeof(why))) {
        printf("[  SKIPPED ] postgres: the PostgreSQL half of the suite did not run: %s\n", why);
        pg_stop();
        return failed;
    }
    failed += cmocka_run_group_tests_name("postgres", pg_tests, NULL, NULL);
    pg_stop();
    return failed;
}
