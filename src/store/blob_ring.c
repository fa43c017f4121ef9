/*
 * blob_ring.c - replication over the ring: parallel writes, quorum, failover, hints.
 *
 * Invariant: blob_put_path returns OK only when at least W shards hold a
 * durable copy. A shard failing twice in a row (transport, 5xx, disk) is
 * marked down for a back-off that doubles while it keeps failing; reads and
 * writes skip it meanwhile, writes going to the next shards of the key's ring
 * order instead (hinted copies: repair finds them off their home and moves
 * them). Health is kept with atomics: every call is thread-safe.
 */
#include "store/blob_ring.h"

#include "core/codec.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/xalloc.h"
#include "store/blob_int.h"
#include "store/blob_s3.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BR_FAILS_DOWN   2  /* consecutive failures that mark a shard down */
#define BR_BACKOFF_MULT 16 /* longest back-off, in multiples of the first */
#define BR_CHECK_US     1000000

struct br_shard {
    struct blob_store *bs;
    _Atomic int fails;
    _Atomic int64_t down_until_us; /* monotonic; 0: up */
    _Atomic int64_t backoff_ms;
    _Atomic int64_t checked_us; /* last readiness probe, and its result */
    _Atomic int check_rc;
};

struct br {
    struct ring *ring;
    struct br_shard *sh;
    char *tmp;
    long backoff_ms;
};

static struct metric m_hinted = {"tessera_ring_hinted_writes_total",
                                 "Blob copies written off their home shard (a replica was down).",
                                 "counter", 0};
static struct metric m_failover = {"tessera_ring_read_failovers_total",
                                   "Blob reads served by another than the first replica.",
                                   "counter", 0};
static struct metric m_down = {"tessera_ring_shard_down_total",
                               "Times a shard was marked down after repeated failures.", "counter",
                               0};
static pthread_once_t br_metrics_once = PTHREAD_ONCE_INIT;

static void br_metrics_init(void)
{
    metric_register(&m_hinted);
    metric_register(&m_failover);
    metric_register(&m_down);
}

static bool br_up(struct br *b, size_t i)
{
    int64_t until = atomic_load(&b->sh[i].down_until_us);
    return until == 0 || time_mono_us() >= until;
}

/* br_failed tells whether rc says the shard itself failed (not the key: missing, bad request). */
static bool br_failed(int rc)
{
    return rc == E_UNAVAILABLE || rc == E_IO || rc == E_NOSPACE || rc == E_FULL || rc == E_INTERNAL;
}

/* br_note records the outcome of a call to shard i, marking it down or up again. */
static void br_note(struct br *b, size_t i, int rc)
{
    struct br_shard *s = &b->sh[i];

    if (!br_failed(rc)) {
        if (atomic_exchange(&s->fails, 0) >= BR_FAILS_DOWN)
            log_info("store", "shard %s is back", b->ring->shards[i].id);
        atomic_store(&s->down_until_us, 0);
        atomic_store(&s->backoff_ms, 0);
        return;
    }
    if (atomic_fetch_add(&s->fails, 1) + 1 < BR_FAILS_DOWN)
        return;
    int64_t bo = atomic_load(&s->backoff_ms);
    bo = bo == 0 ? b->backoff_ms : bo * 2;
    if (bo > b->backoff_ms * BR_BACKOFF_MULT)
        bo = b->backoff_ms * BR_BACKOFF_MULT;
    atomic_store(&s->backoff_ms, bo);
    atomic_store(&s->down_until_us, time_mono_us() + bo * 1000);
    metric_add(&m_down, 1);
    log_warn("store", "shard %s marked down for %lld ms: %s", b->ring->shards[i].id, (long long)bo,
             err_str(rc));
}

/* br_order writes every shard index in the key's ring order: R replicas first, then the rest. */
static size_t br_order(const struct br *b, const char *key, unsigned *order)
{
    return ring_lookup(b->ring, key, order, b->ring->n);
}

struct br_job {
    struct br *b;
    unsigned shard;
    const char *key;
    const char *src;
    int rc;
    pthread_t tid;
    bool threaded;
};

static void *br_put_one(void *arg)
{
    struct br_job *j = arg;

    j->rc = blob_put_path(j->b->sh[j->shard].bs, j->key, j->src);
    br_note(j->b, j->shard, j->rc);
    return NULL;
}

/* br_put_batch writes to n shards at once (threads for all but the first); returns copies made. */
static unsigned br_put_batch(struct br_job *jobs, size_t n)
{
    unsigned ok = 0;

    for (size_t i = 1; i < n; i++) {
        jobs[i].threaded = pthread_create(&jobs[i].tid, NULL, br_put_one, &jobs[i]) == 0;
        if (!jobs[i].threaded)
            br_put_one(&jobs[i]); /* no thread: write it here, in turn */
    }
    if (n > 0)
        br_put_one(&jobs[0]);
    for (size_t i = 1; i < n; i++) {
        if (jobs[i].threaded)
            pthread_join(jobs[i].tid, NULL);
    }
    for (size_t i = 0; i < n; i++)
        ok += jobs[i].rc == OK;
    return ok;
}

static int br_put_path(void *be, const char *key, const char *src_path)
{
    struct br *b = be;
    unsigned order[RING_MAX_SHARDS];
    struct br_job jobs[RING_MAX_REPLICAS];
    size_t n = br_order(b, key, order);
    size_t pos = 0;
    unsigned want = b->ring->replicas;
    unsigned copies = 0, hinted = 0;
    int last = E_UNAVAILABLE;

    /*
     * Rounds: the first sends to the R first shards of the order that are not
     * marked down; each next round replaces the failed ones by the shards that
     * follow (hinted handoff), until R copies or the order runs out.
     */
    while (copies < want && pos < n) {
        size_t nj = 0;
        while (nj < want - copies && pos < n) {
            unsigned s = order[pos];
            if (br_up(b, s)) {
                jobs[nj] = (struct br_job){b, s, key, src_path, E_UNAVAILABLE, 0, false};
                if (pos >= want)
                    hinted++;
                nj++;
            }
            pos++;
        }
        copies += br_put_batch(jobs, nj);
        for (size_t i = 0; i < nj; i++) {
            if (jobs[i].rc != OK) {
                last = jobs[i].rc;
                log_warn("store", "put %.16s on shard %s: %s", key,
                         b->ring->shards[jobs[i].shard].id, err_str(jobs[i].rc));
            }
        }
    }
    if (hinted > 0)
        metric_add(&m_hinted, hinted);
    if (copies >= b->ring->write_quorum) {
        if (copies < want)
            log_warn("store", "put %.16s: %u of %u copies (quorum %u met)", key, copies, want,
                     b->ring->write_quorum);
        return OK;
    }
    log_error("store", "put %.16s: %u durable copies, fewer than the write quorum %u (%s)", key,
              copies, b->ring->write_quorum, err_str(last));
    return E_UNAVAILABLE;
}

/*
 * br_find calls fn on the shards of the key's order until one answers OK:
 * shards up first (replicas, then hinted positions), then those marked down
 * (one may be back). Returns OK, E_NOTFOUND if every shard answered "not
 * here", else E_UNAVAILABLE.
 */
static int br_find(struct br *b, const char *key,
                   int (*fn)(struct blob_store *, const char *, void *), void *arg,
                   size_t *served_by)
{
    unsigned order[RING_MAX_SHARDS];
    size_t n = br_order(b, key, order);
    bool failed = false;

    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < n; i++) {
            unsigned s = order[i];
            if (br_up(b, s) != (pass == 0))
                continue;
            int rc = fn(b->sh[s].bs, key, arg);
            br_note(b, s, rc);
            if (rc == OK) {
                *served_by = i;
                return OK;
            }
            if (rc != E_NOTFOUND)
                failed = true;
        }
    }
    return failed ? E_UNAVAILABLE : E_NOTFOUND;
}

struct br_open_arg {
    int *fd;
    uint64_t *size;
};

static int br_open_fn(struct blob_store *bs, const char *key, void *arg)
{
    struct br_open_arg *a = arg;
    return blob_open(bs, key, a->fd, a->size);
}

static int br_open(void *be, const char *key, int *fd, uint64_t *size)
{
    struct br_open_arg a = {fd, size};
    size_t pos = 0;
    int rc = br_find(be, key, br_open_fn, &a, &pos);

    if (rc == OK && pos > 0)
        metric_add(&m_failover, 1);
    return rc;
}

static int br_exists_fn(struct blob_store *bs, const char *key, void *arg)
{
    bool there = false;
    int rc = blob_exists(bs, key, &there);

    (void)arg;
    if (rc == OK && !there)
        rc = E_NOTFOUND;
    return rc;
}

static int br_exists(void *be, const char *key, bool *exists)
{
    size_t pos;
    int rc = br_find(be, key, br_exists_fn, NULL, &pos);

    *exists = rc == OK;
    return rc == E_NOTFOUND ? OK : rc;
}

/* br_delete removes every copy it can reach: home and hinted. Shards down keep theirs for repair.
 */
static int br_delete(void *be, const char *key)
{
    struct br *b = be;
    int rc = OK;

    for (size_t i = 0; i < b->ring->n; i++) {
        if (!br_up(b, i))
            continue;
        int r = blob_delete(b->sh[i].bs, key);
        br_note(b, i, r);
        if (r != OK && rc == OK)
            rc = r;
    }
    return rc;
}

static int br_tmp_path(void *be, char *buf, size_t cap)
{
    return blob_tmp_name(((struct br *)be)->tmp, buf, cap);
}

/* br_check is ready when at least W shards are: each probed at most once a second. */
static int br_check(void *be)
{
    struct br *b = be;
    unsigned ready = 0;
    int64_t now = time_mono_us();

    for (size_t i = 0; i < b->ring->n; i++) {
        struct br_shard *s = &b->sh[i];
        if (now - atomic_load(&s->checked_us) >= BR_CHECK_US) {
            int rc = blob_store_check(s->bs);
            atomic_store(&s->check_rc, rc);
            atomic_store(&s->checked_us, now);
        }
        ready += atomic_load(&s->check_rc) == OK;
    }
    return ready >= b->ring->write_quorum ? OK : E_UNAVAILABLE;
}

/* br_why names the shards whose last probe failed, with their backends' reasons. */
static void br_why(void *be, char *buf, size_t cap)
{
    struct br *b = be;
    size_t used = 0;

    for (size_t i = 0; i < b->ring->n && used < cap; i++) {
        char one[256];
        int rc = atomic_load(&b->sh[i].check_rc);
        if (rc == OK)
            continue;
        blob_store_why(b->sh[i].bs, one, sizeof(one));
        int w = snprintf(buf + used, cap - used, "%sshard %s: %s", used ? "; " : "",
                         b->ring->shards[i].id, one[0] ? one : err_str(rc));
        if (w < 0)
            break;
        used += (size_t)w;
    }
}

static void br_free(void *be)
{
    struct br *b = be;

    if (b == NULL)
        return;
    for (size_t i = 0; b->sh != NULL && i < b->ring->n; i++)
        blob_store_free(b->sh[i].bs);
    free(b->sh);
    ring_free(b->ring);
    free(b->tmp);
    free(b);
}

static bool br_may_block(void *be)
{
    struct br *b = be;

    for (size_t i = 0; i < b->ring->n; i++) {
        if (blob_store_may_block(b->sh[i].bs))
            return true;
    }
    return false;
}

static size_t br_shards(void *be, struct blob_shard_state *out, size_t cap, char *epoch)
{
    struct br *b = be;
    size_t n = 0;

    snprintf(epoch, BLOB_EPOCH_MAX + 1, "%s", b->ring->epoch);
    for (size_t i = 0; i < b->ring->n && n < cap; i++, n++) {
        const char *url = b->ring->shards[i].url;
        const char *host = strstr(url, "://");
        host = host != NULL ? host + 3 : url;
        snprintf(out[n].id, sizeof(out[n].id), "%s", b->ring->shards[i].id);
        snprintf(out[n].addr, sizeof(out[n].addr), "%.*s", (int)strcspn(host, "/"), host);
        out[n].up = atomic_load(&b->sh[i].check_rc) == OK && br_up(b, i);
    }
    return n;
}

static const struct blob_ops br_ops = {
    .name = "ring",
    .may_block = br_may_block,
    .free = br_free,
    .put_path = br_put_path,
    .open = br_open,
    .exists = br_exists,
    .del = br_delete,
    .tmp_path = br_tmp_path,
    .check = br_check,
    .why = br_why,
    .list = NULL, /* list the shards one by one */
    .shards = br_shards,
};

int blob_ring_open(struct ring *ring, const struct blob_ring_opts *o, struct blob_store **out)
{
    struct br *b = xcalloc(1, sizeof(*b));
    int rc = OK;

    *out = NULL;
    b->ring = ring;
    b->sh = xcalloc(ring->n, sizeof(*b->sh));
    if (o->tmp_dir == NULL || o->tmp_dir[0] != '/') {
        log_error("store", "the ring needs an absolute local directory for temporaries");
        rc = E_INVALID;
        goto out;
    }
    b->tmp = xstrdup(o->tmp_dir);
    b->backoff_ms = o->backoff_ms > 0 ? o->backoff_ms : 1000;
    pthread_once(&br_metrics_once, br_metrics_init);
    for (size_t i = 0; i < ring->n; i++) {
        const char *url = ring->shards[i].url;
        atomic_store(&b->sh[i].checked_us, INT64_MIN / 2);
        if (strncmp(url, "file://", 7) == 0) {
            rc = blob_file_open(url + 7, &b->sh[i].bs);
        } else if (blob_s3_is(url)) {
            const char *region = ring->shards[i].region;
            struct blob_s3_opts so = {b->tmp,
                                      region[0] ? region : o->s3_region,
                                      o->s3_credentials_file,
                                      ring->shards[i].id,
                                      o->s3_virtual_host,
                                      o->s3_multipart_bytes,
                                      o->connect_ms,
                                      o->read_ms};
            rc = blob_s3_open(url, &so, &b->sh[i].bs);
        } else {
            rc = blob_http_open(url, b->tmp, o->connect_ms, o->read_ms, o->node_key, &b->sh[i].bs);
        }
        if (rc != OK) {
            log_error("store", "shard %s (%s): %s", ring->shards[i].id, url, err_str(rc));
            goto out;
        }
    }
    *out = blob_store_new(&br_ops, b);
    b = NULL;
out:
    if (b != NULL) {
        b->ring = NULL; /* the caller keeps the ring on failure */
        for (size_t i = 0; i < ring->n; i++)
            blob_store_free(b->sh[i].bs);
        free(b->sh);
        free(b->tmp);
        free(b);
    }
    return rc;
}

static struct br *br_of(struct blob_store *bs)
{
    return bs != NULL && bs->ops == &br_ops ? bs->be : NULL;
}

const struct ring *blob_ring_ring(struct blob_store *bs)
{
    struct br *b = br_of(bs);
    return b ? b->ring : NULL;
}

struct blob_store *blob_ring_shard(struct blob_store *bs, size_t i)
{
    struct br *b = br_of(bs);
    return b != NULL && i < b->ring->n ? b->sh[i].bs : NULL;
}

bool blob_ring_shard_up(struct blob_store *bs, size_t i)
{
    struct br *b = br_of(bs);
    return b != NULL && i < b->ring->n && br_up(b, i);
}
