/*
 * cache.c - LRU -> Redis Cluster -> metadata store, tombstones and invalidation.
 *
 * Invariant: a fill (reader) never overwrites a tombstone: in Redis it is a
 * SET NX, in the LRU a non-forced put. Only a delete writes over an entry.
 * So a reader that read the live row just before a delete cannot put it back
 * after the delete's tombstone landed (docs/internals/cache.md, "Ordering").
 */
#include "cache/cache.h"

#include "cache/rcluster.h"
#include "core/codec.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/ident.h"
#include "core/log.h"
#include "core/lru.h"
#include "core/metrics.h"
#include "core/strbuf.h"
#include "core/xalloc.h"
#include "meta/meta.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CACHE_KEY_PREFIX "tessera:img:"
#define CACHE_WAITS_MAX  64 /* deletes waiting for acknowledgements at once */

/* A delete waiting until every subscriber applied its invalidation. */
struct cache_wait {
    uint64_t nonce; /* 0: free slot */
    long long acks;
};

enum cache_layer_id { CL_LRU, CL_REDIS, CL_DB, CL_N };
static const char *const cache_layer_name[CL_N] = {"lru", "redis", "db"};

struct cache_layer {
    _Atomic int64_t hits;   /* a value or a tombstone/negative answer found */
    _Atomic int64_t misses; /* not there: next layer asked */
    _Atomic int64_t errors; /* the layer failed: next layer asked */
    _Atomic int64_t us;     /* time spent in lookups, microseconds */
    _Atomic int64_t lookups;
};

struct cache {
    struct cache_opts o;
    struct lru *lru;
    struct rcluster *rc;
    struct rcluster_sub *sub;
    bool local_only;
    _Atomic bool sub_live; /* the subscription is up: the LRU sees every invalidation */
    struct cache_layer layer[CL_N];
    _Atomic int64_t invalidations_received;
    _Atomic int64_t invalidations_published;
    _Atomic int64_t invalidation_errors;
    _Atomic int64_t fills_refused;   /* fills that met a tombstone */
    _Atomic int64_t ack_timeouts;    /* deletes answered before every subscriber acknowledged */
    _Atomic int64_t forged_records;  /* Redis values that failed their HMAC check */
    _Atomic int64_t forged_messages; /* pub/sub messages that failed their HMAC check */
    struct secret key;               /* len 0: values and messages are not sealed */
    pthread_mutex_t wait_lock;
    pthread_cond_t wait_cond;
    struct cache_wait waits[CACHE_WAITS_MAX];
};

static metrics_renderer_fn cache_metrics;

static void count(_Atomic int64_t *v, int64_t d)
{
    atomic_fetch_add_explicit(v, d, memory_order_relaxed);
}

static void layer_done(struct cache *c, enum cache_layer_id l, int64_t t0, _Atomic int64_t *what)
{
    count(what, 1);
    count(&c->layer[l].us, time_mono_us() - t0);
    count(&c->layer[l].lookups, 1);
}

/* --- values --- */

size_t cache_rec_encode(const struct image_rec *r, char *buf)
{
    int n = snprintf(buf, CACHE_VALUE_MAX,
                     "1|%" PRId64 "|%s|%s|%" PRIu32 "|%" PRIu32 "|%" PRIu32 "|%" PRIu64 "|%" PRId64
                     "|%s|%s",
                     r->seq, r->key, r->format, r->width, r->height, r->frames, r->bytes,
                     r->created_at, r->owner, r->token_hash);
    return n < 0 ? 0 : (size_t)n;
}

/* field copies the next '|'-separated field of *p (up to end) into dst (capacity cap). */
static bool field(const char **p, const char *end, char *dst, size_t cap)
{
    const char *bar, *stop;
    size_t len;

    if (*p > end) /* every field was consumed already */
        return false;
    bar = memchr(*p, '|', (size_t)(end - *p));
    stop = bar != NULL ? bar : end;
    len = (size_t)(stop - *p);
    if (len >= cap)
        return false;
    memcpy(dst, *p, len);
    dst[len] = '\0';
    *p = bar != NULL ? bar + 1 : end + 1;
    return true;
}

static bool num(const char **p, const char *end, int64_t lo, int64_t hi, int64_t *out)
{
    char tmp[24], *e = NULL;

    if (!field(p, end, tmp, sizeof(tmp)) || tmp[0] == '\0')
        return false;
    long long v = strtoll(tmp, &e, 10);
    if (*e != '\0' || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

int cache_rec_decode(const char *val, size_t len, const char *id, struct image_rec *r)
{
    const char *p = val, *end = val + len;
    int64_t seq, w, h, fr, by, cr;

    if (len == 1 && val[0] == '0')
        return E_NOTFOUND;
    if (len < 2 || memcmp(val, "1|", 2) != 0)
        return E_INVALID;
    p += 2;
    memset(r, 0, sizeof(*r));
    if (!num(&p, end, 0, INT64_MAX, &seq) || !field(&p, end, r->key, sizeof(r->key)) ||
        strlen(r->key) != SHA256_HEX - 1 || !field(&p, end, r->format, sizeof(r->format)) ||
        r->format[0] == '\0' || !num(&p, end, 0, UINT32_MAX, &w) ||
        !num(&p, end, 0, UINT32_MAX, &h) || !num(&p, end, 0, UINT32_MAX, &fr) ||
        !num(&p, end, 0, INT64_MAX, &by) || !num(&p, end, INT64_MIN + 1, INT64_MAX, &cr) ||
        !field(&p, end, r->owner, sizeof(r->owner)) ||
        !field(&p, end, r->token_hash, sizeof(r->token_hash)) || p != end + 1)
        return E_INVALID;
    snprintf(r->id, sizeof(r->id), "%s", id);
    r->seq = seq;
    r->width = (uint32_t)w;
    r->height = (uint32_t)h;
    r->frames = (uint32_t)fr;
    r->bytes = (uint64_t)by;
    r->created_at = cr;
    return OK;
}

size_t cache_seal(const struct secret *key, const char *domain, const char *id, char *buf,
                  size_t len, size_t cap)
{
    uint8_t mac[SHA256_LEN];
    char hex[2 * SHA256_LEN + 1];
    struct strbuf sb;

    if (len + 1 + CACHE_MAC_HEX + 1 > cap)
        return 0;
    strbuf_init(&sb, CACHE_VALUE_MAX + 128);
    strbuf_addf(&sb, "%s\n%s\n", domain, id);
    strbuf_add(&sb, buf, len);
    hmac_sha256(key->b, key->len, sb.buf, sb.len, mac);
    strbuf_release(&sb);
    hex_encode(mac, CACHE_MAC_HEX / 2, hex);
    buf[len] = '|';
    memcpy(buf + len + 1, hex, CACHE_MAC_HEX);
    buf[len + 1 + CACHE_MAC_HEX] = '\0';
    return len + 1 + CACHE_MAC_HEX;
}

int cache_unseal(const struct secret *key, const char *domain, const char *id, const char *buf,
                 size_t *len)
{
    char tmp[CACHE_VALUE_MAX + CACHE_MAC_HEX + 2];
    size_t n = *len, body;

    if (n < CACHE_MAC_HEX + 1 || n >= sizeof(tmp) || buf[n - CACHE_MAC_HEX - 1] != '|')
        return E_INVALID;
    body = n - CACHE_MAC_HEX - 1;
    memcpy(tmp, buf, body);
    if (cache_seal(key, domain, id, tmp, body, sizeof(tmp)) != n ||
        !ct_equal(tmp + body, buf + body, CACHE_MAC_HEX + 1))
        return E_INVALID;
    *len = body;
    return OK;
}

/* --- subscriber --- */

/* msg_publish seals and publishes one message ("i ID NONCE" or "a ID NONCE"). */
static int msg_publish(struct cache *c, const char *id, char *text, size_t cap,
                       long long *receivers)
{
    size_t len = strlen(text);

    if (c->key.len > 0 && cache_seal(&c->key, "msg", id, text, len, cap) == 0)
        return E_INTERNAL;
    return rcluster_publish(c->rc, c->o.channel, text, receivers);
}

/*
 * Messages: "i ID NONCE" (an invalidation: apply, then publish "a ID NONCE"),
 * "a ID NONCE" (an acknowledgement, counted by the deleter waiting on NONCE).
 */
static void cache_on_msg(void *arg, const char *msg, size_t len)
{
    struct cache *c = arg;
    char text[IMAGE_ID_MAX + 32 + CACHE_MAC_HEX + 2], id[IMAGE_ID_MAX + 1], kind = 0;
    unsigned long long nonce = 0;
    int64_t now = time_mono_us();

    if (len >= sizeof(text))
        return;
    memcpy(text, msg, len);
    text[len] = '\0';
    if (sscanf(text, "%c %32s %llu", &kind, id, &nonce) != 3 || nonce == 0)
        return;
    if (c->key.len > 0) {
        size_t n = len;
        if (memchr(msg, '\0', len) != NULL || cache_unseal(&c->key, "msg", id, text, &n) != OK) {
            count(&c->forged_messages, 1);
            log_warn("cache", "invalidation message for %s fails its HMAC check: dropped", id);
            return;
        }
        text[n] = '\0';
    }
    if (kind == 'a') {
        pthread_mutex_lock(&c->wait_lock);
        for (size_t i = 0; i < CACHE_WAITS_MAX; i++) {
            if (c->waits[i].nonce == nonce) {
                c->waits[i].acks++;
                pthread_cond_broadcast(&c->wait_cond);
            }
        }
        pthread_mutex_unlock(&c->wait_lock);
        return;
    }
    if (kind != 'i')
        return;
    count(&c->invalidations_received, 1);
    log_debug("cache", "invalidation of %s received", id);
    if (c->lru != NULL)
        lru_put(c->lru, id, NULL, now + c->o.tombstone_ttl_ms * 1000, now, true);
    text[0] = 'a';
    if (msg_publish(c, id, text, sizeof(text), NULL) != OK)
        count(&c->invalidation_errors, 1);
}

static void cache_on_state(void *arg, bool subscribed)
{
    struct cache *c = arg;

    /* messages may have been missed while unsubscribed: start from an empty LRU either way */
    if (!subscribed)
        atomic_store(&c->sub_live, false);
    if (c->lru != NULL)
        lru_clear(c->lru);
    if (subscribed)
        atomic_store(&c->sub_live, true);
}

/* --- lifecycle --- */

int cache_new(const struct cache_opts *o, struct cache **out)
{
    struct cache *c = xcalloc(1, sizeof(*c));
    int rc = OK;

    *out = NULL;
    c->o = *o;
    c->o.secret = NULL; /* copied: the caller's may not outlive the cache */
    c->o.redis_password = NULL;
    if (o->secret != NULL)
        c->key = *o->secret;
    c->local_only = o->local_deletes_only;
    pthread_mutex_init(&c->wait_lock, NULL);
    pthread_cond_init(&c->wait_cond, NULL);
    if (o->redis[0] != '\0') {
        struct rcluster_opts ro = {
            .nodes = o->redis,
            .connect_timeout_ms = o->connect_timeout_ms,
            .timeout_ms = o->timeout_ms,
            .down_backoff_ms = o->down_backoff_ms,
            .pool = (size_t)o->pool,
            .user = o->redis_user,
            .password = o->redis_password,
        };
        rc = rcluster_new(&ro, &c->rc);
        if (rc != OK) {
            log_error("cache", "cache.redis \"%s\": not a list of host:port", o->redis);
            goto out;
        }
    }
    if (o->lru_entries > 0 && (c->rc != NULL || o->local_deletes_only))
        c->lru = lru_new(&(struct lru_opts){
            .max_entries = (size_t)o->lru_entries,
            .value_size = sizeof(struct image_rec),
        });
    if (c->rc != NULL) {
        rc = rcluster_subscribe(c->rc, o->channel, cache_on_msg, cache_on_state, c, &c->sub);
        if (rc != OK)
            goto out;
    }
    if (c->rc != NULL && c->key.len == 0)
        log_warn("cache", "cache.redis without cache.secret_file: whoever can write to Redis "
                          "decides what a cached id serves");
    metrics_add_renderer(cache_metrics, c);
    log_info("cache", "metadata cache: lru %s, redis %s", c->lru ? "on" : "off",
             c->rc ? o->redis : "off");
out:
    if (rc != OK) {
        cache_free(c);
        c = NULL;
    }
    *out = c;
    return rc;
}

void cache_free(struct cache *c)
{
    if (c == NULL)
        return;
    metrics_remove_renderer(cache_metrics, c);
    rcluster_unsubscribe(c->sub);
    rcluster_free(c->rc);
    lru_free(c->lru);
    pthread_mutex_destroy(&c->wait_lock);
    pthread_cond_destroy(&c->wait_cond);
    memset(&c->key, 0, sizeof(c->key));
    free(c);
}

const char *cache_state(struct cache *c)
{
    if (c == NULL || c->rc == NULL)
        return "off";
    return atomic_load(&c->sub_live) ? "subscribed" : "degraded";
}

/* --- the read path --- */

static bool lru_usable(struct cache *c)
{
    return c->lru != NULL && (c->rc == NULL ? c->local_only : atomic_load(&c->sub_live));
}

static void redis_key(const char *id, char *key, size_t cap)
{
    snprintf(key, cap, CACHE_KEY_PREFIX "%s", id);
}

static void lru_fill(struct cache *c, const char *id, const struct image_rec *rec, int64_t ttl_ms)
{
    int64_t now = time_mono_us();

    if (lru_usable(c) && !lru_put(c->lru, id, rec, now + ttl_ms * 1000, now, false))
        count(&c->fills_refused, 1);
}

/* lru_lookup answers from the LRU: OK, E_NOTFOUND (a tombstone or negative entry) or E_AGAIN. */
static int lru_lookup(struct cache *c, const char *id, struct image_rec *out, bool count_miss)
{
    int64_t t0;
    enum lru_state st;

    if (!lru_usable(c))
        return E_AGAIN;
    t0 = time_mono_us();
    st = lru_get(c->lru, id, t0, out);
    if (st != LRU_MISS || count_miss)
        layer_done(c, CL_LRU, t0,
                   st == LRU_MISS ? &c->layer[CL_LRU].misses : &c->layer[CL_LRU].hits);
    return st == LRU_VALUE ? OK : st == LRU_GONE ? E_NOTFOUND : E_AGAIN;
}

int cache_image_peek(struct cache *c, const char *id, struct image_rec *out)
{
    /* a miss is counted by the cache_image_get that follows */
    return c == NULL ? E_AGAIN : lru_lookup(c, id, out, false);
}

int cache_image_get(struct cache *c, struct meta_store *ms, const char *id, struct image_rec *out)
{
    const struct cache_opts *o;
    char key[IMAGE_ID_MAX + sizeof(CACHE_KEY_PREFIX) + 1], val[CACHE_VALUE_MAX + CACHE_MAC_HEX + 2];
    size_t len = 0;
    int64_t t0;
    int rc;

    if (c == NULL)
        return meta_image_get(ms, id, out);
    o = &c->o;
    rc = lru_lookup(c, id, out, true);
    if (rc != E_AGAIN)
        return rc;
    redis_key(id, key, sizeof(key));
    if (c->rc != NULL) {
        t0 = time_mono_us();
        rc = rcluster_get(c->rc, key, val, sizeof(val), &len);
        if (rc == OK && c->key.len > 0 && cache_unseal(&c->key, "rec", id, val, &len) != OK) {
            /* not written by a tessera process: dropped, and the store answers */
            count(&c->forged_records, 1);
            log_warn("cache", "cached record of %s fails its HMAC check: dropped", id);
            rcluster_del(c->rc, key);
            len = 0;
            rc = E_INVALID;
        }
        if (rc == OK)
            rc = cache_rec_decode(val, len, id, out);
        if (rc == OK || rc == E_NOTFOUND) {
            bool gone = rc == E_NOTFOUND && len > 0;
            if (rc == OK || gone) {
                layer_done(c, CL_REDIS, t0, &c->layer[CL_REDIS].hits);
                lru_fill(c, id, gone ? NULL : out, gone ? o->negative_ttl_ms : o->lru_ttl_ms);
                return rc;
            }
            layer_done(c, CL_REDIS, t0, &c->layer[CL_REDIS].misses);
        } else {
            layer_done(c, CL_REDIS, t0, &c->layer[CL_REDIS].errors);
        }
    }
    t0 = time_mono_us();
    rc = meta_image_get(ms, id, out);
    if (rc == OK || rc == E_NOTFOUND) {
        layer_done(c, CL_DB, t0, rc == OK ? &c->layer[CL_DB].hits : &c->layer[CL_DB].misses);
    } else {
        layer_done(c, CL_DB, t0, &c->layer[CL_DB].errors);
        return rc;
    }
    if (c->rc != NULL) {
        /* NX: a tombstone a delete wrote meanwhile wins over this (possibly old) read */
        if (rc == OK)
            len = cache_rec_encode(out, val);
        else
            len = (size_t)snprintf(val, sizeof(val), "0");
        if (c->key.len > 0)
            len = cache_seal(&c->key, "rec", id, val, len, sizeof(val));
        int src =
            rcluster_set(c->rc, key, val, len, rc == OK ? o->ttl_ms : o->negative_ttl_ms, true);
        if (src == E_EXISTS)
            count(&c->fills_refused, 1);
        else if (src != OK)
            count(&c->layer[CL_REDIS].errors, 1);
    }
    lru_fill(c, id, rc == OK ? out : NULL, rc == OK ? o->lru_ttl_ms : o->negative_ttl_ms);
    return rc;
}

/* wait_slot claims a wait slot for nonce; NULL when all are taken (the delete then does not wait).
 */
static struct cache_wait *wait_slot(struct cache *c, uint64_t nonce)
{
    struct cache_wait *w = NULL;

    pthread_mutex_lock(&c->wait_lock);
    for (size_t i = 0; i < CACHE_WAITS_MAX && w == NULL; i++)
        if (c->waits[i].nonce == 0)
            w = &c->waits[i];
    if (w != NULL)
        *w = (struct cache_wait){nonce, 0};
    pthread_mutex_unlock(&c->wait_lock);
    return w;
}

void cache_image_deleted(struct cache *c, const char *id)
{
    char key[IMAGE_ID_MAX + sizeof(CACHE_KEY_PREFIX) + 1],
        msg[IMAGE_ID_MAX + 32 + CACHE_MAC_HEX + 2];
    struct cache_wait *w = NULL;
    long long receivers = 0;
    uint64_t nonce = 0;
    int64_t now;
    int rc;

    if (c == NULL)
        return;
    now = time_mono_us();
    if (c->lru != NULL)
        lru_put(c->lru, id, NULL, now + c->o.tombstone_ttl_ms * 1000, now, true);
    if (c->rc == NULL)
        return;
    redis_key(id, key, sizeof(key));
    char tomb[CACHE_MAC_HEX + 8] = "0";
    size_t tlen = 1;
    if (c->key.len > 0)
        tlen = cache_seal(&c->key, "rec", id, tomb, tlen, sizeof(tomb));
    rc = rcluster_set(c->rc, key, tomb, tlen, c->o.tombstone_ttl_ms, false);
    if (rc != OK) {
        count(&c->invalidation_errors, 1);
        log_warn("cache", "image %s: tombstone not written: %s", id, err_str(rc));
    }
    while (nonce == 0)
        random_bytes(&nonce, sizeof(nonce));
    nonce &= 0x7fffffffffffffffULL;
    nonce |= 1;
    snprintf(msg, sizeof(msg), "i %s %llu", id, (unsigned long long)nonce);
    w = wait_slot(c, nonce); /* before publishing: acknowledgements may be quick */
    rc = msg_publish(c, id, msg, sizeof(msg), &receivers);
    if (rc != OK) {
        count(&c->invalidation_errors, 1);
        log_warn("cache", "image %s: invalidation not published: %s", id, err_str(rc));
        goto out;
    }
    count(&c->invalidations_published, 1);
    if (w == NULL)
        goto out;
    /* every subscriber (this process's too) acknowledges once its LRU dropped the id */
    struct timespec until;
    time_deadline(&until, CLOCK_REALTIME, c->o.ack_timeout_ms);
    pthread_mutex_lock(&c->wait_lock);
    while (w->acks < receivers)
        if (pthread_cond_timedwait(&c->wait_cond, &c->wait_lock, &until) != 0)
            break;
    bool all = w->acks >= receivers;
    pthread_mutex_unlock(&c->wait_lock);
    if (!all) {
        count(&c->ack_timeouts, 1);
        log_warn("cache", "image %s: %lld of %lld subscribers acknowledged the invalidation", id,
                 w->acks, receivers);
    }
out:
    if (w != NULL) {
        pthread_mutex_lock(&c->wait_lock);
        w->nonce = 0;
        pthread_mutex_unlock(&c->wait_lock);
    }
}

/* --- metrics --- */

size_t cache_redis_nodes(struct cache *c, struct rcluster_node_info *out, size_t cap)
{
    return c != NULL && c->rc != NULL ? rcluster_nodes(c->rc, out, cap) : 0;
}

static void cache_metrics(struct strbuf *sb, void *arg)
{
    struct cache *c = arg;
    struct rcluster_node_info nodes[RCLUSTER_NODES_MAX];
    size_t n = c->rc != NULL ? rcluster_nodes(c->rc, nodes, RCLUSTER_NODES_MAX) : 0;
    static const char *const results[] = {"hit", "miss", "error"};

    strbuf_addf(sb, "# HELP tessera_cache_lookups_total Metadata lookups answered by each cache "
                    "layer (hit), passed on (miss) or failed (error).\n"
                    "# TYPE tessera_cache_lookups_total counter\n");
    for (size_t l = 0; l < CL_N; l++) {
        const struct cache_layer *cl = &c->layer[l];
        int64_t v[3] = {atomic_load(&cl->hits), atomic_load(&cl->misses), atomic_load(&cl->errors)};
        for (size_t k = 0; k < 3; k++)
            strbuf_addf(sb, "tessera_cache_lookups_total{layer=\"%s\",result=\"%s\"} %lld\n",
                        cache_layer_name[l], results[k], (long long)v[k]);
    }
    strbuf_addf(sb, "# HELP tessera_cache_latency_seconds Time spent in each layer's lookups.\n"
                    "# TYPE tessera_cache_latency_seconds summary\n");
    for (size_t l = 0; l < CL_N; l++) {
        strbuf_addf(sb, "tessera_cache_latency_seconds_sum{layer=\"%s\"} %.6f\n",
                    cache_layer_name[l], (double)atomic_load(&c->layer[l].us) / 1e6);
        strbuf_addf(sb, "tessera_cache_latency_seconds_count{layer=\"%s\"} %lld\n",
                    cache_layer_name[l], (long long)atomic_load(&c->layer[l].lookups));
    }
    strbuf_addf(sb,
                "# HELP tessera_cache_invalidations_total Invalidations published (deletes "
                "here), received (from any process) and failed.\n"
                "# TYPE tessera_cache_invalidations_total counter\n"
                "tessera_cache_invalidations_total{event=\"published\"} %lld\n"
                "tessera_cache_invalidations_total{event=\"received\"} %lld\n"
                "tessera_cache_invalidations_total{event=\"error\"} %lld\n"
                "# HELP tessera_cache_fills_refused_total Fills that met a tombstone (a delete "
                "raced the read).\n# TYPE tessera_cache_fills_refused_total counter\n"
                "tessera_cache_fills_refused_total %lld\n"
                "# HELP tessera_cache_ack_timeouts_total Deletes answered before every "
                "subscriber acknowledged the invalidation.\n"
                "# TYPE tessera_cache_ack_timeouts_total counter\n"
                "tessera_cache_ack_timeouts_total %lld\n"
                "# HELP tessera_cache_forged_total Redis values and invalidation messages "
                "dropped because their HMAC (cache.secret_file) did not check.\n"
                "# TYPE tessera_cache_forged_total counter\n"
                "tessera_cache_forged_total{what=\"record\"} %lld\n"
                "tessera_cache_forged_total{what=\"message\"} %lld\n"
                "# HELP tessera_cache_lru_entries Entries in the in-process LRU.\n"
                "# TYPE tessera_cache_lru_entries gauge\ntessera_cache_lru_entries %zu\n"
                "# HELP tessera_cache_subscribed 1 while the invalidation subscription is live.\n"
                "# TYPE tessera_cache_subscribed gauge\ntessera_cache_subscribed %d\n",
                (long long)atomic_load(&c->invalidations_published),
                (long long)atomic_load(&c->invalidations_received),
                (long long)atomic_load(&c->invalidation_errors),
                (long long)atomic_load(&c->fills_refused), (long long)atomic_load(&c->ack_timeouts),
                (long long)atomic_load(&c->forged_records),
                (long long)atomic_load(&c->forged_messages), c->lru ? lru_count(c->lru) : 0,
                atomic_load(&c->sub_live) ? 1 : 0);
    if (n == 0)
        return;
    strbuf_addf(sb, "# HELP tessera_cache_redis_up 1 when the node is not marked down.\n"
                    "# TYPE tessera_cache_redis_up gauge\n");
    for (size_t i = 0; i < n; i++)
        strbuf_addf(sb, "tessera_cache_redis_up{node=\"%s\"} %d\n", nodes[i].addr,
                    nodes[i].up ? 1 : 0);
    strbuf_addf(sb, "# HELP tessera_cache_redis_commands_total Commands sent, by node.\n"
                    "# TYPE tessera_cache_redis_commands_total counter\n");
    for (size_t i = 0; i < n; i++)
        strbuf_addf(sb, "tessera_cache_redis_commands_total{node=\"%s\"} %lld\n", nodes[i].addr,
                    (long long)nodes[i].commands);
    strbuf_addf(sb, "# HELP tessera_cache_redis_errors_total Failed connections and commands, "
                    "by node.\n# TYPE tessera_cache_redis_errors_total counter\n");
    for (size_t i = 0; i < n; i++)
        strbuf_addf(sb, "tessera_cache_redis_errors_total{node=\"%s\"} %lld\n", nodes[i].addr,
                    (long long)nodes[i].errors);
}
