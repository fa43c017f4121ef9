/*
 * ring_admin.c - the ring as services open it; `tessera ring` and `tessera repair`.
 *
 * The ring in force is recorded in the metadata store (ring.epoch, and its
 * canonical text as ring.config): a service refuses a configured ring with
 * another epoch. Repair and rebalance work from the shards' own listings, so
 * they see every copy (home, hinted or stray), and from the reference counts
 * of the metadata, so they never remove a blob an image still names.
 */
#include "services/ring_admin.h"

#include "app/ring_state.h"
#include "app/runtime.h"
#include "core/codec.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/log.h"
#include "core/xalloc.h"
#include "meta/meta.h"
#include "services/ring_sim.h"
#include "store/blob.h"
#include "store/blob_ring.h"
#include "store/ring.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define RA_PAGE 1000

/* --- opening the ring --- */

static int ra_parse_configured(const struct config *cfg, struct ring **out)
{
    char err[512];
    int rc = ring_parse_spec(cfg->storage.shards, (unsigned)cfg->storage.replicas,
                             (unsigned)cfg->storage.write_quorum, out, err, sizeof(err));
    if (rc != OK)
        log_error("ring", "%s", err);
    return rc;
}

/* --- the tools' context: metadata, the ring store, a temporary directory --- */

struct ra_ctx {
    const struct config *cfg;
    struct runtime rt;
    struct meta_store *meta;  /* rt's */
    struct blob_store *store; /* rt's: a ring store */
    bool dry_run;
};

static void ra_ctx_release(struct ra_ctx *c)
{
    runtime_close(&c->rt);
}

/* --- listings: every copy on every shard --- */

struct ra_copy {
    char key[BLOB_KEY_LEN + 1];
    unsigned shard;
    uint64_t size;
    int64_t mtime;
};

struct ra_walk {
    struct ra_copy *v;
    size_t n, alloc;
    bool *listed; /* per shard: its listing is complete */
};

static int ra_cmp_copy(const void *a, const void *b)
{
    const struct ra_copy *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c != 0 ? c : (x->shard > y->shard) - (x->shard < y->shard);
}

/* ra_list_all lists every shard of the ring store; shards that cannot be listed are reported. */
static int ra_list_all(struct blob_store *store, struct ra_walk *w)
{
    const struct ring *ring = blob_ring_ring(store);
    struct blob_entry *page = xmalloc(RA_PAGE * sizeof(*page));
    int failed = 0;

    w->listed = xcalloc(ring->n, sizeof(*w->listed));
    for (size_t s = 0; s < ring->n; s++) {
        char after[BLOB_KEY_LEN + 1] = "";
        size_t n = 0, total = 0;
        int rc;
        do {
            rc = blob_list(blob_ring_shard(store, s), after, page, RA_PAGE, &n);
            for (size_t i = 0; rc == OK && i < n; i++) {
                if (w->n == w->alloc) {
                    w->alloc = w->alloc ? 2 * w->alloc : 4096;
                    w->v = xrealloc(w->v, w->alloc * sizeof(*w->v));
                }
                struct ra_copy *c = &w->v[w->n++];
                memcpy(c->key, page[i].key, sizeof(c->key));
                c->shard = (unsigned)s;
                c->size = page[i].size;
                c->mtime = page[i].mtime;
            }
            total += n;
            if (n > 0)
                memcpy(after, page[n - 1].key, sizeof(after));
        } while (rc == OK && n == RA_PAGE);
        if (rc != OK) {
            fprintf(stderr, "  shard %s: cannot list (%s): its copies are left alone this run\n",
                    ring->shards[s].id, err_str(rc));
            failed++;
        } else {
            w->listed[s] = true;
            fprintf(stderr, "  shard %s: %zu blobs\n", ring->shards[s].id, total);
        }
    }
    free(page);
    qsort(w->v, w->n, sizeof(*w->v), ra_cmp_copy);
    return failed == 0 ? OK : E_UNAVAILABLE;
}

static void ra_walk_release(struct ra_walk *w)
{
    free(w->v);
    free(w->listed);
}

static bool ra_walk_has(const struct ra_walk *w, const char *key)
{
    size_t lo = 0, hi = w->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(w->v[mid].key, key);
        if (c == 0)
            return true;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

/* ra_verify opens the copy on bs and checks its bytes hash to key: OK, E_NOTFOUND (missing or
 * corrupt) or an error. On OK with fd != NULL the open descriptor is handed over. */
static int ra_verify(struct blob_store *bs, const char *key, int *fd_out)
{
    uint8_t d[SHA256_LEN];
    char hex[SHA256_HEX];
    uint64_t size;
    int fd = -1;
    int rc = blob_open(bs, key, &fd, &size);

    if (rc != OK)
        goto out;
    rc = sha256_fd(fd, d);
    if (rc != OK)
        goto out;
    hex_encode(d, SHA256_LEN, hex);
    if (strcmp(hex, key) != 0) {
        rc = E_NOTFOUND;
        goto out;
    }
    if (fd_out != NULL) {
        *fd_out = fd;
        fd = -1;
    }
out:
    if (fd >= 0)
        close(fd);
    return rc;
}

/* ra_copy_to writes the blob behind fd (verified) to bs: the path of an open descriptor. */
static int ra_copy_to(struct blob_store *bs, const char *key, int fd)
{
    char path[64];

    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    return blob_put_path(bs, key, path);
}

/* --- repair --- */

struct ra_counts {
    size_t keys, restored, moved_home, corrupt, orphans_removed, orphans_young, lost, errors,
        strays;
};

/*
 * ra_repair_key brings one key to exactly its R home copies. copies[0..n)
 * are its listed copies (sorted by shard).
 */
static void ra_repair_key(struct ra_ctx *c, const struct ra_copy *copies, size_t n,
                          struct ra_counts *k, int64_t now)
{
    const struct ring *ring = blob_ring_ring(c->store);
    const char *key = copies[0].key;
    unsigned home[RING_MAX_REPLICAS];
    bool good[RING_MAX_SHARDS] = {false};
    bool is_home[RING_MAX_SHARDS] = {false};
    size_t nhome = ring_lookup(ring, key, home, ring->replicas);
    int64_t refs = 0, youngest = 0;
    int src_fd = -1;
    bool all_home = true;
    int rc;

    rc = meta_blob_refs(c->meta, key, &refs);
    if (rc != OK) {
        k->errors++;
        return;
    }
    for (size_t i = 0; i < n; i++)
        youngest = copies[i].mtime > youngest ? copies[i].mtime : youngest;
    if (refs == 0) {
        /* No image names it: an upload that failed its quorum, a crash, a deleted image. */
        if (now - youngest < c->cfg->storage.repair_grace_ms / 1000) {
            k->orphans_young++;
            return;
        }
        for (size_t i = 0; i < n; i++) {
            if (!c->dry_run && blob_delete(blob_ring_shard(c->store, copies[i].shard), key) != OK)
                k->errors++;
            else
                k->orphans_removed++;
        }
        return;
    }
    for (size_t i = 0; i < nhome; i++)
        is_home[home[i]] = true;
    /* Verify every copy: a corrupt one is removed and counts as missing. */
    for (size_t i = 0; i < n; i++) {
        struct blob_store *bs = blob_ring_shard(c->store, copies[i].shard);
        rc = ra_verify(bs, key, src_fd < 0 ? &src_fd : NULL);
        if (rc == OK) {
            good[copies[i].shard] = true;
        } else if (rc == E_NOTFOUND) {
            fprintf(stderr, "  %s on %s: corrupt or gone, %s\n", key,
                    ring->shards[copies[i].shard].id, c->dry_run ? "would rewrite" : "rewriting");
            k->corrupt++;
            if (!c->dry_run)
                blob_delete(bs, key);
        } else {
            k->errors++;
            good[copies[i].shard] = true; /* unreadable now: leave it, never count it missing */
        }
    }
    if (src_fd < 0) {
        fprintf(stderr, "  %s: no good copy on any shard: lost\n", key);
        k->lost++;
        return;
    }
    for (size_t i = 0; i < nhome; i++) {
        if (good[home[i]])
            continue;
        if (!c->dry_run) {
            rc = ra_copy_to(blob_ring_shard(c->store, home[i]), key, src_fd);
            if (rc != OK) {
                fprintf(stderr, "  %s: cannot copy to %s: %s\n", key, ring->shards[home[i]].id,
                        err_str(rc));
                k->errors++;
                all_home = false;
                continue;
            }
        }
        k->restored++;
    }
    close(src_fd);
    /* Only with every home copy in place do copies elsewhere (hinted, left by a move) go. */
    for (size_t i = 0; all_home && i < n; i++) {
        unsigned s = copies[i].shard;
        if (is_home[s] || !good[s])
            continue;
        if (!c->dry_run && blob_delete(blob_ring_shard(c->store, s), key) != OK)
            k->errors++;
        else
            k->moved_home++;
    }
}

/*
 * ra_missing tells whether key is in no shard's listing and, asked again now,
 * on no shard: blobs stored after the listings were taken (uploads and
 * variants made while repair runs) are not lost.
 */
static bool ra_missing(struct ra_ctx *c, const struct ra_walk *w, const char *key)
{
    bool exists = false;

    if (ra_walk_has(w, key))
        return false;
    return blob_exists(c->store, key, &exists) != OK || !exists;
}

/* ra_check_meta reports images whose blob no shard lists (lost). */
static int ra_check_meta(struct ra_ctx *c, const struct ra_walk *w, struct ra_counts *k)
{
    struct image_rec *imgs = xmalloc(RA_PAGE * sizeof(*imgs));
    int64_t before = 0;
    size_t n = 0, seen = 0;
    int rc;

    do {
        rc = meta_image_list(c->meta, before, RA_PAGE, imgs, &n);
        for (size_t i = 0; rc == OK && i < n; i++) {
            seen++;
            if (ra_missing(c, w, imgs[i].key)) {
                fprintf(stderr, "  image %s: blob %s is on no shard: lost\n", imgs[i].id,
                        imgs[i].key);
                k->lost++;
            }
            for (size_t v = 0; v < c->cfg->n_variants; v++) {
                struct variant_rec vr;
                if (meta_variant_get(c->meta, imgs[i].id, c->cfg->variant[v].name, &vr) == OK &&
                    ra_missing(c, w, vr.key)) {
                    fprintf(stderr, "  image %s: variant %s blob %s is on no shard: lost\n",
                            imgs[i].id, vr.name, vr.key);
                    k->lost++;
                }
            }
        }
        if (n > 0)
            before = imgs[n - 1].seq;
    } while (rc == OK && n == RA_PAGE);
    free(imgs);
    fprintf(stderr, "repair: %zu images checked against the listings\n", seen);
    return rc;
}

static int ra_ctx_open(const struct config *cfg, struct ra_ctx *c)
{
    int rc;

    memset(c, 0, sizeof(*c));
    c->cfg = cfg;
    rc = runtime_open(cfg, RT_META | RT_BLOBS | RT_RING, &c->rt);
    c->meta = c->rt.meta;
    c->store = c->rt.blobs;
    return rc;
}

int ring_admin_repair_cmd(const struct config *cfg, int argc, char **argv)
{
    struct ra_ctx c;
    struct ra_walk w = {0};
    struct ra_counts k = {0};
    const char *after = "";
    int64_t t0 = time_mono_us(), now = time(NULL);
    bool dry = false;
    int rc;

    memset(&c, 0, sizeof(c));
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--dry-run") == 0) {
            dry = true;
        } else if (strcmp(argv[i], "--after") == 0 && i + 1 < argc) {
            after = argv[++i];
        } else {
            fprintf(stderr, "usage: tessera repair [--dry-run] [--after KEY]\n");
            return 2;
        }
    }
    rc = ra_ctx_open(cfg, &c);
    c.dry_run = dry;
    if (rc != OK)
        goto out;
    fprintf(stderr, "repair: listing %zu shards%s\n", blob_ring_ring(c.store)->n,
            dry ? " (dry run: nothing is changed)" : "");
    rc = ra_list_all(c.store, &w);
    for (size_t i = 0; i < w.n;) {
        size_t j = i;
        while (j < w.n && strcmp(w.v[j].key, w.v[i].key) == 0)
            j++;
        if (strcmp(w.v[i].key, after) > 0) {
            ra_repair_key(&c, &w.v[i], j - i, &k, now);
            k.keys++;
            if (k.keys % 1000 == 0)
                fprintf(stderr, "repair: %zu keys done, last %s (resume with --after it)\n", k.keys,
                        w.v[i].key);
        }
        i = j;
    }
    if (ra_check_meta(&c, &w, &k) != OK)
        k.errors++;
    printf("repair%s: %zu keys in %.1f s: %zu copies restored, %zu moved home (extra copies "
           "removed), %zu corrupt rewritten, %zu orphan copies removed, %zu young orphans kept, "
           "%zu lost, %zu errors\n",
           dry ? " (dry run)" : "", k.keys, (double)(time_mono_us() - t0) / 1e6, k.restored,
           k.moved_home, k.corrupt, k.orphans_removed, k.orphans_young, k.lost, k.errors);
    if (rc == OK && (k.lost > 0 || k.errors > 0))
        rc = E_IO;
out:
    ra_walk_release(&w);
    ra_ctx_release(&c);
    return rc == OK ? 0 : 1;
}

/* --- ring show / apply --- */

static int ra_show(const struct config *cfg)
{
    struct runtime rt = {0};
    struct ring *ring = NULL;
    char recorded[64] = "";
    int rc;

    if (cfg->storage.shards[0] == '\0') {
        printf("no ring: storage.shards is empty (single store %s)\n",
               cfg->storage.blobs[0] ? cfg->storage.blobs : "<data_dir>/blobs");
        return OK;
    }
    rc = ra_parse_configured(cfg, &ring);
    if (rc != OK)
        return rc;
    if (runtime_open(cfg, RT_META, &rt) == OK &&
        ring_state_epoch(rt.meta, recorded, sizeof(recorded)) != OK)
        snprintf(recorded, sizeof(recorded), "(none)");
    printf("configured ring epoch %s, recorded %s%s\nR=%u W=%u, %zu shards:\n", ring->epoch,
           recorded, strcmp(recorded, ring->epoch) == 0 ? " (in force)" : " (DIFFERENT)",
           ring->replicas, ring->write_quorum, ring->n);
    printf("  %-12s %-8s %8s  %s\n", "id", "zone", "weight", "url");
    for (size_t i = 0; i < ring->n; i++)
        printf("  %-12s %-8s %8g  %s\n", ring->shards[i].id,
               ring->shards[i].zone[0] ? ring->shards[i].zone : "-", ring->shards[i].weight,
               ring->shards[i].url);
    runtime_close(&rt);
    ring_free(ring);
    return OK;
}

static int ra_apply(const struct config *cfg)
{
    struct runtime rt = {0};
    struct ring *ring = NULL;
    char recorded[64] = "";
    int rc = ra_parse_configured(cfg, &ring);

    if (rc != OK)
        goto out;
    rc = runtime_open(cfg, RT_META, &rt);
    if (rc != OK)
        goto out;
    if (ring_state_epoch(rt.meta, recorded, sizeof(recorded)) != OK)
        snprintf(recorded, sizeof(recorded), "(none)");
    rc = ring_state_record(rt.meta, ring);
    if (rc == OK)
        printf("ring epoch %s recorded (was %s); blobs were not moved: `tessera repair` puts "
               "them on their new homes\n",
               ring->epoch, recorded);
out:
    runtime_close(&rt);
    ring_free(ring);
    return rc;
}

/* --- plan and rebalance: from the recorded ring to the configured one --- */

/*
 * ra_union_ring builds a ring of every shard of old and new (R = W = 1: only
 * its shard stores are used), so one store reaches both placements.
 */
static int ra_union_ring(const struct ring *old, const struct ring *nw, struct ring **out)
{
    char *a = ring_describe(old);
    char *b = ring_describe(nw);
    size_t cap = strlen(a) + strlen(b) + 2;
    char *text = xmalloc(cap), err[512];
    size_t len = 0;
    int rc;

    text[0] = '\0';
    for (int pass = 0; pass < 2; pass++) {
        const struct ring *r = pass == 0 ? old : nw;
        for (size_t i = 0; i < r->n; i++) {
            int j = pass == 1 ? ring_find(old, r->shards[i].id) : -1;
            if (j >= 0 && strcmp(old->shards[j].url, r->shards[i].url) != 0) {
                fprintf(stderr,
                        "tessera ring: shard %s changes URL (%s -> %s): give the new "
                        "location a new id\n",
                        r->shards[i].id, old->shards[j].url, r->shards[i].url);
                rc = E_INVALID;
                goto out;
            }
            if (j < 0)
                len += (size_t)snprintf(text + len, cap - len, "%s=%s\n", r->shards[i].id,
                                        r->shards[i].url);
        }
    }
    rc = ring_parse(text, 1, 1, out, err, sizeof(err));
    if (rc != OK)
        fprintf(stderr, "tessera ring: %s\n", err);
out:
    free(a);
    free(b);
    free(text);
    return rc;
}

struct ra_move {
    size_t keys, moving, add, remove;
    uint64_t add_bytes, remove_bytes;
};

static int ra_rebalance(const struct config *cfg, bool execute, long rate, long wait_s)
{
    struct runtime rt = {0};
    struct meta_store *meta = NULL;
    struct ring *old = NULL, *nw = NULL, *uni = NULL;
    struct blob_store *store = NULL;
    struct ra_walk w = {0};
    struct ra_move mv = {0};
    char *text = NULL, recorded[64] = "", err[512];
    size_t errors = 0;
    int64_t t0 = time_mono_us();
    int rc;

    rc = ra_parse_configured(cfg, &nw);
    if (rc == OK)
        rc = runtime_open(cfg, RT_META, &rt);
    if (rc != OK)
        goto out;
    meta = rt.meta;
    if (ring_state_config(meta, &text) != OK ||
        ring_state_epoch(meta, recorded, sizeof(recorded)) != OK) {
        fprintf(stderr, "tessera ring: no ring recorded yet: `tessera ring apply` records the "
                        "configured one\n");
        rc = E_INVALID;
        goto out;
    }
    rc = ring_parse_described(text, &old, err, sizeof(err));
    if (rc != OK) {
        fprintf(stderr, "tessera ring: %s\n", err);
        goto out;
    }
    if (strcmp(old->epoch, nw->epoch) == 0) {
        printf("the configured ring is the one in force (epoch %s): nothing to move\n", nw->epoch);
        goto out;
    }
    rc = ra_union_ring(old, nw, &uni);
    if (rc != OK)
        goto out;
    struct blob_ring_opts o = {rt.tmp_dir, (long)cfg->storage.connect_timeout_ms,
                               (long)cfg->storage.read_timeout_ms,
                               (long)cfg->storage.down_backoff_ms};
    rc = blob_ring_open(uni, &o, &store);
    if (rc != OK) {
        ring_free(uni);
        goto out;
    }
    fprintf(stderr, "ring %s: epoch %s -> %s; listing %zu shards\n", execute ? "rebalance" : "plan",
            old->epoch, nw->epoch, uni->n);
    rc = ra_list_all(store, &w);
    if (rc != OK) {
        fprintf(stderr, "tessera ring: every shard must be listed to move blobs safely\n");
        goto out;
    }
    /* Pass 1: copy to every new home that lacks the blob (verified source, verified copy). */
    int64_t tick = time_mono_us();
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < w.n;) {
            size_t j = i;
            unsigned home[RING_MAX_REPLICAS];
            bool holds[RING_MAX_SHARDS] = {false}, is_home[RING_MAX_SHARDS] = {false};
            size_t nh = ring_lookup(nw, w.v[i].key, home, nw->replicas);
            bool complete = true;
            while (j < w.n && strcmp(w.v[j].key, w.v[i].key) == 0)
                holds[w.v[j++].shard] = true;
            for (size_t h = 0; h < nh; h++) {
                unsigned u = (unsigned)ring_find(uni, nw->shards[home[h]].id);
                is_home[u] = true;
                if (holds[u])
                    continue;
                if (pass == 1) {
                    /* the listing predates pass 1: ask the shard for the copy made since */
                    bool there = false;
                    if (blob_exists(blob_ring_shard(store, u), w.v[i].key, &there) != OK || !there)
                        complete = false;
                    continue;
                }
                complete = false;
                mv.add++;
                mv.add_bytes += w.v[i].size;
                if (!execute)
                    continue;
                int fd = -1;
                rc = E_NOTFOUND;
                for (size_t q = i; q < j && rc != OK; q++)
                    rc = ra_verify(blob_ring_shard(store, w.v[q].shard), w.v[i].key, &fd);
                if (rc == OK)
                    rc = ra_copy_to(blob_ring_shard(store, u), w.v[i].key, fd);
                if (rc == OK)
                    rc = ra_verify(blob_ring_shard(store, u), w.v[i].key, NULL);
                if (fd >= 0)
                    close(fd);
                if (rc != OK) {
                    fprintf(stderr, "  %s -> %s: %s\n", w.v[i].key, uni->shards[u].id, err_str(rc));
                    errors++;
                } else {
                    holds[u] = true;
                }
            }
            if (pass == 0) {
                mv.keys++;
                mv.moving += !complete;
                for (size_t q = i; q < j; q++) {
                    if (!is_home[w.v[q].shard]) {
                        mv.remove++;
                        mv.remove_bytes += w.v[q].size;
                    }
                }
                if (execute && rate > 0) {
                    /* throttle: at most rate keys a second */
                    int64_t due = tick + (int64_t)(1000000.0 * (double)mv.keys / (double)rate);
                    int64_t wait = due - time_mono_us();
                    if (wait > 0)
                        usleep((useconds_t)wait);
                }
                if (execute && mv.keys % 1000 == 0)
                    fprintf(stderr, "  copied: %zu keys walked, %zu copies made\n", mv.keys,
                            mv.add);
            } else if (complete) {
                /* Pass 2, after the switch: copies off their new home go. */
                for (size_t q = i; q < j; q++) {
                    if (!is_home[w.v[q].shard] &&
                        blob_delete(blob_ring_shard(store, w.v[q].shard), w.v[q].key) != OK)
                        errors++;
                }
            }
            i = j;
        }
        if (pass == 0) {
            printf("ring %s: %zu blobs, %zu move; %zu copies to add (%llu bytes), %zu to remove "
                   "(%llu bytes)\n",
                   execute ? "rebalance" : "plan", mv.keys, mv.moving, mv.add,
                   (unsigned long long)mv.add_bytes, mv.remove,
                   (unsigned long long)mv.remove_bytes);
            if (!execute)
                goto out;
            if (errors > 0) {
                fprintf(stderr,
                        "tessera ring: %zu copies failed: the old ring stays in force; "
                        "run it again\n",
                        errors);
                rc = E_IO;
                goto out;
            }
            /* Switch: the new ring is in force. Services reading find every blob at its new
             * home; the old copies stay until the services had time to follow. */
            rc = ring_state_record(meta, nw);
            if (rc != OK)
                goto out;
            printf("ring rebalance: epoch %s in force; old copies removed in %ld s\n", nw->epoch,
                   wait_s);
            fflush(stdout);
            if (wait_s > 0)
                sleep((unsigned)wait_s);
        }
    }
    printf("ring rebalance: done in %.1f s, %zu errors\n", (double)(time_mono_us() - t0) / 1e6,
           errors);
    if (errors > 0)
        rc = E_IO;
out:
    ra_walk_release(&w);
    blob_store_free(store);
    runtime_close(&rt);
    ring_free(old);
    ring_free(nw);
    free(text);
    return rc;
}

int ring_admin_cmd(const struct config *cfg, int argc, char **argv)
{
    const char *sub = argc >= 2 ? argv[1] : "";
    long rate = 0, wait_s = 5;
    int rc;

    if (strcmp(sub, "simulate") == 0)
        return ring_sim_cmd(argc, argv);
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--rate") == 0 && i + 1 < argc)
            rate = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--wait") == 0 && i + 1 < argc)
            wait_s = strtol(argv[++i], NULL, 10);
        else
            sub = "?";
    }
    if (strcmp(sub, "show") == 0)
        rc = ra_show(cfg);
    else if (strcmp(sub, "apply") == 0)
        rc = ra_apply(cfg);
    else if (strcmp(sub, "plan") == 0)
        rc = ra_rebalance(cfg, false, 0, 0);
    else if (strcmp(sub, "rebalance") == 0)
        rc = ra_rebalance(cfg, true, rate, wait_s);
    else {
        fprintf(
            stderr,
            "usage: tessera ring show | apply | plan | rebalance [--rate KEYS_PER_S] [--wait S] | "
            "simulate ...\n"
            "  the ring in force is recorded in the metadata store; plan, rebalance and "
            "apply move it to the configured storage.shards\n");
        return 2;
    }
    return rc == OK ? 0 : 1;
}
