/*
 * rcluster.c - Redis Cluster routing, redirects, per-node pools and down marks.
 *
 * Invariant: slot_node[s] is -1 or the index of a node in nodes[], which only
 * grows (nodes are never freed before rcluster_free), so an index read under
 * the map lock stays valid after it is dropped. A connection is owned by one
 * caller at a time: taken from its node's idle pool, returned or freed.
 */
#include "cache/rcluster.h"

#include "core/codec.h"
#include "core/err.h"
#include "core/log.h"
#include "core/xalloc.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RCL_POOL_MAX       16
#define RCL_REDIRECTS      3
#define RCL_REFRESH_MIN_US 100000 /* at most ten slot-map reads a second */

struct rcl_node {
    char host[RCLUSTER_HOST_MAX];
    int port;
    pthread_mutex_t lock; /* the fields below */
    redisContext *idle[RCL_POOL_MAX];
    size_t n_idle;
    int fails;             /* consecutive failures */
    int64_t down_until_us; /* monotonic; 0: up */
    bool probing;          /* one caller is trying a node whose back-off ended */
    _Atomic int64_t commands;
    _Atomic int64_t errors;
};

struct rcluster {
    struct rcluster_opts o;
    char user[64];
    struct secret password;
    pthread_rwlock_t map_lock; /* nodes[], n_nodes, slot_node[] */
    struct rcl_node *nodes[RCLUSTER_NODES_MAX];
    size_t n_nodes;
    int16_t slot_node[RCLUSTER_SLOTS];
    pthread_mutex_t refresh_lock;
    int64_t last_refresh_us;
    _Atomic bool map_stale;
    _Atomic unsigned rr; /* round robin for keyless commands */
};

struct rcluster_sub {
    struct rcluster *rc;
    char *channel;
    rcluster_msg_fn *on_msg;
    rcluster_state_fn *on_state;
    void *arg;
    pthread_t thread;
    _Atomic bool stop;
};

/* --- pure functions --- */

uint16_t rcluster_crc16(const char *buf, size_t len)
{
    uint16_t crc = 0;

    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((unsigned char)buf[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

unsigned rcluster_key_slot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);

    if (open != NULL) {
        size_t rest = len - (size_t)(open - key) - 1;
        const char *close = memchr(open + 1, '}', rest);
        if (close != NULL && close > open + 1)
            return rcluster_crc16(open + 1, (size_t)(close - open - 1)) & (RCLUSTER_SLOTS - 1);
    }
    return rcluster_crc16(key, len) & (RCLUSTER_SLOTS - 1);
}

int rcluster_parse_addr(const char *s, size_t len, char *host, size_t hostcap, int *port)
{
    const char *colon = memrchr(s, ':', len);
    long p = 0;

    if (colon == NULL || colon == s || (size_t)(colon - s) >= hostcap ||
        memchr(s, ' ', (size_t)(colon - s)) != NULL)
        return E_INVALID;
    const char *d = colon + 1;
    if (d == s + len || (size_t)(s + len - d) > 5)
        return E_INVALID;
    for (; d < s + len; d++) {
        if (*d < '0' || *d > '9')
            return E_INVALID;
        p = p * 10 + (*d - '0');
    }
    /* "host:port@cport" never reaches here: redirects and CLUSTER SLOTS give host and port */
    if (p < 1 || p > 65535)
        return E_INVALID;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    *port = (int)p;
    return OK;
}

int rcluster_parse_redirect(const char *err, size_t len, struct rcluster_redirect *out)
{
    const char *p = err, *end = err + len;
    unsigned long slot = 0;
    size_t digits = 0;

    memset(out, 0, sizeof(*out));
    if (len > 6 && memcmp(err, "MOVED ", 6) == 0) {
        p += 6;
    } else if (len > 4 && memcmp(err, "ASK ", 4) == 0) {
        out->ask = true;
        p += 4;
    } else {
        return E_INVALID;
    }
    for (; p < end && *p >= '0' && *p <= '9' && digits < 6; p++, digits++)
        slot = slot * 10 + (unsigned long)(*p - '0');
    if (digits == 0 || slot >= RCLUSTER_SLOTS || p >= end || *p != ' ')
        return E_INVALID;
    out->slot = (unsigned)slot;
    p++;
    return rcluster_parse_addr(p, (size_t)(end - p), out->host, sizeof(out->host), &out->port);
}

/* --- nodes and connections --- */

static struct timeval rcl_tv(int64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    return tv;
}

/* rcl_node_add returns the index of host:port, adding it; -1 when the table is full. Map lock
 * held for writing. */
static int rcl_node_add(struct rcluster *rc, const char *host, int port)
{
    for (size_t i = 0; i < rc->n_nodes; i++)
        if (rc->nodes[i]->port == port && strcmp(rc->nodes[i]->host, host) == 0)
            return (int)i;
    if (rc->n_nodes == RCLUSTER_NODES_MAX)
        return -1;
    struct rcl_node *n = xcalloc(1, sizeof(*n));
    snprintf(n->host, sizeof(n->host), "%s", host);
    n->port = port;
    pthread_mutex_init(&n->lock, NULL);
    rc->nodes[rc->n_nodes] = n;
    return (int)rc->n_nodes++;
}

/* rcl_node_fail records a failure: the node is skipped for a back-off doubling up to 16x. */
static void rcl_node_fail(struct rcluster *rc, struct rcl_node *n, const char *why)
{
    int64_t now = time_mono_us();
    bool was_up;

    atomic_fetch_add_explicit(&n->errors, 1, memory_order_relaxed);
    pthread_mutex_lock(&n->lock);
    was_up = n->down_until_us == 0;
    n->fails++;
    n->probing = false;
    int shift = n->fails - 1 < 4 ? n->fails - 1 : 4;
    n->down_until_us = now + (rc->o.down_backoff_ms * 1000 << shift);
    /* its pooled connections are most likely dead too */
    while (n->n_idle > 0)
        redisFree(n->idle[--n->n_idle]);
    pthread_mutex_unlock(&n->lock);
    if (was_up)
        log_warn("cache", "redis %s:%d down: %s (skipped for %lld ms)", n->host, n->port, why,
                 (long long)rc->o.down_backoff_ms);
    atomic_store(&rc->map_stale, true);
}

static void rcl_node_ok(struct rcl_node *n)
{
    bool was_down;

    pthread_mutex_lock(&n->lock);
    was_down = n->down_until_us != 0;
    n->fails = 0;
    n->down_until_us = 0;
    n->probing = false;
    pthread_mutex_unlock(&n->lock);
    if (was_down)
        log_info("cache", "redis %s:%d up again", n->host, n->port);
}

/*
 * rcl_urgent, set by the calling thread around a command, makes it try a node
 * even while the node is marked down. Deletes need it: a node that came back
 * before its back-off ended already has subscribers using their LRUs again, so
 * a tombstone or an invalidation skipped for the mark would leave them stale.
 */
static _Thread_local bool rcl_urgent;

/*
 * rcl_connect opens a connection to n with the command timeout set and, with
 * a password, authenticated (AUTH user password). NULL on failure, the
 * reason (never the password) in why.
 */
static redisContext *rcl_connect(struct rcluster *rc, const struct rcl_node *n, int64_t timeout_ms,
                                 char *why, size_t cap)
{
    redisContext *c = redisConnectWithTimeout(n->host, n->port, rcl_tv(rc->o.connect_timeout_ms));
    redisReply *r;

    if (c == NULL || c->err) {
        snprintf(why, cap, "%s", c != NULL ? c->errstr : "out of memory");
        if (c != NULL)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, rcl_tv(timeout_ms));
    redisEnableKeepAlive(c);
    if (rc->password.len == 0)
        return c;
    const char *argv[3] = {"AUTH", rc->user, (const char *)rc->password.b};
    size_t argvlen[3] = {4, strlen(rc->user), rc->password.len};
    r = redisCommandArgv(c, 3, argv, argvlen);
    if (r == NULL || r->type != REDIS_REPLY_STATUS) {
        snprintf(why, cap, "AUTH as \"%s\" refused: %s", rc->user,
                 r == NULL ? (c->errstr[0] ? c->errstr : "i/o error")
                           : (r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply"));
        freeReplyObject(r);
        redisFree(c);
        return NULL;
    }
    freeReplyObject(r);
    return c;
}

/*
 * rcl_conn_get hands out a connection to n: pooled (*reused true) or new.
 * E_UNAVAILABLE at once while n is down or another caller is probing it
 * (unless rcl_urgent).
 */
static int rcl_conn_get(struct rcluster *rc, struct rcl_node *n, redisContext **out, bool *reused)
{
    int64_t now = time_mono_us();
    redisContext *c = NULL;

    *out = NULL;
    *reused = false;
    pthread_mutex_lock(&n->lock);
    if (!rcl_urgent && n->down_until_us != 0 && (now < n->down_until_us || n->probing)) {
        pthread_mutex_unlock(&n->lock);
        return E_UNAVAILABLE;
    }
    if (n->n_idle > 0) {
        *out = n->idle[--n->n_idle];
        *reused = true;
        pthread_mutex_unlock(&n->lock);
        return OK;
    }
    if (n->down_until_us != 0)
        n->probing = true;
    pthread_mutex_unlock(&n->lock);

    char why[256];
    c = rcl_connect(rc, n, rc->o.timeout_ms, why, sizeof(why));
    if (c == NULL) {
        rcl_node_fail(rc, n, why);
        return E_UNAVAILABLE;
    }
    *out = c;
    return OK;
}

/* rcl_conn_put returns a healthy connection to n's pool (or closes it when the pool is full). */
static void rcl_conn_put(struct rcluster *rc, struct rcl_node *n, redisContext *c)
{
    pthread_mutex_lock(&n->lock);
    if (n->n_idle < rc->o.pool && n->n_idle < RCL_POOL_MAX) {
        n->idle[n->n_idle++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&n->lock);
    if (c != NULL)
        redisFree(c);
}

/* rcl_node_at returns node i (under the map lock: the array may be growing). */
static struct rcl_node *rcl_node_at(struct rcluster *rc, int i)
{
    struct rcl_node *n = NULL;

    pthread_rwlock_rdlock(&rc->map_lock);
    if (i >= 0 && (size_t)i < rc->n_nodes)
        n = rc->nodes[i];
    pthread_rwlock_unlock(&rc->map_lock);
    return n;
}

/*
 * rcl_call sends one command to n (after ASKING when ask) and returns its
 * reply, error replies included. A pooled connection that fails is retried
 * once on a new one (the node may have restarted). E_UNAVAILABLE when n
 * cannot answer; the node is then marked down.
 */
static int rcl_call(struct rcluster *rc, struct rcl_node *n, bool ask, int argc, const char **argv,
                    const size_t *argvlen, redisReply **out)
{
    redisContext *c = NULL;
    redisReply *r = NULL;
    bool reused = false;
    int rc_ = E_UNAVAILABLE;

    *out = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        rc_ = rcl_conn_get(rc, n, &c, &reused);
        if (rc_ != OK)
            return rc_;
        atomic_fetch_add_explicit(&n->commands, 1, memory_order_relaxed);
        if (ask)
            redisAppendCommand(c, "ASKING");
        redisAppendCommandArgv(c, argc, argv, argvlen);
        void *rp = NULL;
        bool ok = true;
        if (ask) {
            ok = redisGetReply(c, &rp) == REDIS_OK;
            freeReplyObject(rp);
            rp = NULL;
        }
        ok = ok && redisGetReply(c, &rp) == REDIS_OK;
        if (ok) {
            r = rp;
            rcl_node_ok(n);
            rcl_conn_put(rc, n, c);
            *out = r;
            return OK;
        }
        char why[128];
        snprintf(why, sizeof(why), "%s", c->errstr[0] ? c->errstr : "i/o error");
        redisFree(c);
        c = NULL;
        if (!reused) {
            rcl_node_fail(rc, n, why);
            return E_UNAVAILABLE;
        }
        /* a stale pooled connection: drop the pool and try one fresh connection */
        pthread_mutex_lock(&n->lock);
        while (n->n_idle > 0)
            redisFree(n->idle[--n->n_idle]);
        pthread_mutex_unlock(&n->lock);
    }
    return E_UNAVAILABLE;
}

/* rcl_parse_slots applies a CLUSTER SLOTS reply from node `from` to a new map. */
static int rcl_apply_slots(struct rcluster *rc, const struct rcl_node *from, const redisReply *r)
{
    int16_t *map = NULL;
    int rc_ = E_INVALID;
    size_t covered = 0;

    if (r->type != REDIS_REPLY_ARRAY)
        return E_INVALID;
    map = xmalloc(sizeof(int16_t) * RCLUSTER_SLOTS);
    for (size_t s = 0; s < RCLUSTER_SLOTS; s++)
        map[s] = -1;
    pthread_rwlock_wrlock(&rc->map_lock);
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER ||
            e->element[2]->type != REDIS_REPLY_ARRAY || e->element[2]->elements < 2)
            goto unlock;
        long long lo = e->element[0]->integer, hi = e->element[1]->integer;
        const redisReply *m = e->element[2];
        if (lo < 0 || hi >= RCLUSTER_SLOTS || lo > hi ||
            m->element[0]->type != REDIS_REPLY_STRING || m->element[1]->type != REDIS_REPLY_INTEGER)
            goto unlock;
        /* an empty host means "the address you reached me at" */
        const char *host = m->element[0]->len > 0 && strcmp(m->element[0]->str, "?") != 0
                               ? m->element[0]->str
                               : from->host;
        int idx = rcl_node_add(rc, host, (int)m->element[1]->integer);
        if (idx < 0)
            goto unlock;
        for (long long s = lo; s <= hi; s++)
            map[s] = (int16_t)idx;
        covered += (size_t)(hi - lo + 1);
    }
    memcpy(rc->slot_node, map, sizeof(int16_t) * RCLUSTER_SLOTS);
    rc_ = OK;
unlock:
    pthread_rwlock_unlock(&rc->map_lock);
    free(map);
    if (rc_ == OK && covered < RCLUSTER_SLOTS)
        log_debug("cache", "slot map covers %zu of %d slots", covered, RCLUSTER_SLOTS);
    return rc_;
}

/*
 * rcl_refresh reads the slot map from the first node that answers, at most
 * once per RCL_REFRESH_MIN_US (callers in between keep the current map).
 */
static void rcl_refresh(struct rcluster *rc)
{
    const char *argv[] = {"CLUSTER", "SLOTS"};
    const size_t argvlen[] = {7, 5};
    int64_t now = time_mono_us();
    size_t n;

    if (pthread_mutex_trylock(&rc->refresh_lock) != 0)
        return; /* another thread is refreshing */
    if (rc->last_refresh_us != 0 && now - rc->last_refresh_us < RCL_REFRESH_MIN_US)
        goto out;
    rc->last_refresh_us = now;
    pthread_rwlock_rdlock(&rc->map_lock);
    n = rc->n_nodes;
    pthread_rwlock_unlock(&rc->map_lock);
    for (size_t i = 0; i < n; i++) {
        struct rcl_node *node = rcl_node_at(rc, (int)i);
        redisReply *r = NULL;
        if (rcl_call(rc, node, false, 2, argv, argvlen, &r) != OK)
            continue;
        int ok = rcl_apply_slots(rc, node, r);
        freeReplyObject(r);
        if (ok == OK) {
            atomic_store(&rc->map_stale, false);
            break;
        }
    }
out:
    pthread_mutex_unlock(&rc->refresh_lock);
}

static int rcl_slot_owner(struct rcluster *rc, unsigned slot)
{
    int idx;

    pthread_rwlock_rdlock(&rc->map_lock);
    idx = rc->slot_node[slot];
    pthread_rwlock_unlock(&rc->map_lock);
    return idx;
}

/*
 * rcl_exec runs a command on the node owning key's slot, following up to
 * RCL_REDIRECTS MOVED/ASK answers. *out is the final reply (possibly an
 * error reply other than a redirect); the caller frees it.
 */
static int rcl_exec(struct rcluster *rc, const char *key, int argc, const char **argv,
                    const size_t *argvlen, redisReply **out)
{
    unsigned slot = rcluster_key_slot(key, strlen(key));
    struct rcluster_redirect rd;
    redisReply *r = NULL;
    bool ask = false;
    int idx, rc_ = E_UNAVAILABLE;

    *out = NULL;
    if (atomic_load(&rc->map_stale))
        rcl_refresh(rc);
    idx = rcl_slot_owner(rc, slot);
    if (idx < 0) {
        /* no map yet (or the slot is unassigned): any node answers with MOVED */
        pthread_rwlock_rdlock(&rc->map_lock);
        idx = (int)(atomic_fetch_add(&rc->rr, 1) % rc->n_nodes);
        pthread_rwlock_unlock(&rc->map_lock);
    }
    for (int hop = 0; hop <= RCL_REDIRECTS; hop++) {
        struct rcl_node *n = rcl_node_at(rc, idx);
        rc_ = rcl_call(rc, n, ask, argc, argv, argvlen, &r);
        if (rc_ != OK)
            goto out;
        if (r->type != REDIS_REPLY_ERROR || rcluster_parse_redirect(r->str, r->len, &rd) != OK)
            goto out;
        pthread_rwlock_wrlock(&rc->map_lock);
        idx = rcl_node_add(rc, rd.host, rd.port);
        if (idx >= 0 && !rd.ask)
            rc->slot_node[rd.slot] = (int16_t)idx; /* MOVED: the slot lives there now */
        pthread_rwlock_unlock(&rc->map_lock);
        log_debug("cache", "%s slot %u -> %s:%d", rd.ask ? "ASK" : "MOVED", rd.slot, rd.host,
                  rd.port);
        freeReplyObject(r);
        r = NULL;
        if (idx < 0) {
            rc_ = E_UNAVAILABLE;
            goto out;
        }
        ask = rd.ask;
        if (!rd.ask)
            atomic_store(&rc->map_stale, true); /* other slots probably moved too */
    }
    rc_ = E_UNAVAILABLE; /* redirected in circles */
out:
    if (rc_ != OK && r != NULL) {
        freeReplyObject(r);
        r = NULL;
    }
    *out = r;
    return rc_;
}

/* --- commands --- */

int rcluster_get(struct rcluster *rc, const char *key, char *buf, size_t cap, size_t *len)
{
    const char *argv[] = {"GET", key};
    const size_t argvlen[] = {3, strlen(key)};
    redisReply *r = NULL;
    int rc_;

    rc_ = rcl_exec(rc, key, 2, argv, argvlen, &r);
    if (rc_ != OK)
        goto out;
    if (r->type == REDIS_REPLY_NIL) {
        rc_ = E_NOTFOUND;
    } else if (r->type != REDIS_REPLY_STRING) {
        rc_ = E_UNAVAILABLE; /* CLUSTERDOWN, TRYAGAIN, LOADING... */
    } else if (r->len >= cap) {
        rc_ = E_TOOBIG;
    } else {
        memcpy(buf, r->str, r->len);
        buf[r->len] = '\0';
        *len = r->len;
    }
out:
    freeReplyObject(r);
    return rc_;
}

int rcluster_set(struct rcluster *rc, const char *key, const char *val, size_t len, int64_t ttl_ms,
                 bool nx)
{
    char ttl[24];
    const char *argv[] = {"SET", key, val, "PX", ttl, "NX"};
    size_t argvlen[6] = {3, strlen(key), len, 2, 0, 2};
    redisReply *r = NULL;
    int rc_;

    argvlen[4] = (size_t)snprintf(ttl, sizeof(ttl), "%lld", (long long)ttl_ms);
    rcl_urgent = !nx; /* an overwrite is a delete's tombstone */
    rc_ = rcl_exec(rc, key, nx ? 6 : 5, argv, argvlen, &r);
    rcl_urgent = false;
    if (rc_ != OK)
        goto out;
    if (r->type == REDIS_REPLY_NIL)
        rc_ = E_EXISTS;
    else if (r->type != REDIS_REPLY_STATUS)
        rc_ = E_UNAVAILABLE;
out:
    freeReplyObject(r);
    return rc_;
}

int rcluster_del(struct rcluster *rc, const char *key)
{
    const char *argv[] = {"DEL", key};
    const size_t argvlen[] = {3, strlen(key)};
    redisReply *r = NULL;
    int rc_;

    rc_ = rcl_exec(rc, key, 2, argv, argvlen, &r);
    if (rc_ == OK && r->type != REDIS_REPLY_INTEGER)
        rc_ = E_UNAVAILABLE;
    freeReplyObject(r);
    return rc_;
}

int rcluster_publish(struct rcluster *rc, const char *channel, const char *msg,
                     long long *receivers)
{
    /* sharded pub/sub: the channel's slot owner delivers to its subscribers directly, no bus hop */
    const char *argv[] = {"SPUBLISH", channel, msg};
    const size_t argvlen[] = {8, strlen(channel), strlen(msg)};
    redisReply *r = NULL;
    int rc_;

    rcl_urgent = true;
    rc_ = rcl_exec(rc, channel, 3, argv, argvlen, &r);
    rcl_urgent = false;
    if (rc_ == OK && r->type != REDIS_REPLY_INTEGER)
        rc_ = E_UNAVAILABLE;
    if (rc_ == OK && receivers != NULL)
        *receivers = r->integer;
    freeReplyObject(r);
    return rc_;
}

size_t rcluster_nodes(struct rcluster *rc, struct rcluster_node_info *out, size_t cap)
{
    size_t n = 0;

    pthread_rwlock_rdlock(&rc->map_lock);
    for (; n < rc->n_nodes && n < cap; n++) {
        struct rcl_node *node = rc->nodes[n];
        snprintf(out[n].addr, sizeof(out[n].addr), "%s:%d", node->host, node->port);
        pthread_mutex_lock(&node->lock);
        out[n].up = node->down_until_us == 0;
        pthread_mutex_unlock(&node->lock);
        out[n].commands = atomic_load_explicit(&node->commands, memory_order_relaxed);
        out[n].errors = atomic_load_explicit(&node->errors, memory_order_relaxed);
    }
    pthread_rwlock_unlock(&rc->map_lock);
    return n;
}

/* --- lifecycle --- */

int rcluster_new(const struct rcluster_opts *o, struct rcluster **out)
{
    struct rcluster *rc = xcalloc(1, sizeof(*rc));
    const char *p = o->nodes;
    int rc_ = OK;

    *out = NULL;
    rc->o = *o;
    rc->o.password = NULL; /* copied below: the caller's may not outlive the client */
    snprintf(rc->user, sizeof(rc->user), "%s",
             o->user != NULL && o->user[0] != '\0' ? o->user : "default");
    if (o->password != NULL)
        rc->password = *o->password;
    if (rc->o.pool > RCL_POOL_MAX)
        rc->o.pool = RCL_POOL_MAX;
    pthread_rwlock_init(&rc->map_lock, NULL);
    pthread_mutex_init(&rc->refresh_lock, NULL);
    for (size_t s = 0; s < RCLUSTER_SLOTS; s++)
        rc->slot_node[s] = -1;
    atomic_store(&rc->map_stale, true);
    while (*p != '\0') {
        char host[RCLUSTER_HOST_MAX];
        int port;
        while (*p == ' ' || *p == ',')
            p++;
        size_t len = strcspn(p, ", ");
        if (len == 0)
            break;
        if (rcluster_parse_addr(p, len, host, sizeof(host), &port) != OK ||
            rcl_node_add(rc, host, port) < 0) {
            rc_ = E_INVALID;
            goto out;
        }
        p += len;
    }
    if (rc->n_nodes == 0)
        rc_ = E_INVALID;
out:
    if (rc_ != OK) {
        rcluster_free(rc);
        rc = NULL;
    }
    *out = rc;
    return rc_;
}

void rcluster_free(struct rcluster *rc)
{
    if (rc == NULL)
        return;
    for (size_t i = 0; i < rc->n_nodes; i++) {
        struct rcl_node *n = rc->nodes[i];
        while (n->n_idle > 0)
            redisFree(n->idle[--n->n_idle]);
        pthread_mutex_destroy(&n->lock);
        free(n);
    }
    pthread_rwlock_destroy(&rc->map_lock);
    pthread_mutex_destroy(&rc->refresh_lock);
    memset(&rc->password, 0, sizeof(rc->password));
    free(rc);
}

/* --- subscriber --- */

static void rcl_sleep_ms(struct rcluster_sub *s, int64_t ms)
{
    while (ms > 0 && !atomic_load(&s->stop)) {
        int64_t step = ms < 50 ? ms : 50;
        struct timespec ts = {0, (long)step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

/* rcl_sub_session connects to n, subscribes and delivers messages until an error or stop. */
static void rcl_sub_session(struct rcluster_sub *s, struct rcl_node *n)
{
    struct rcluster *rc = s->rc;
    char why[256];
    redisContext *c =
        rcl_connect(rc, n, rc->o.timeout_ms > 1000 ? rc->o.timeout_ms : 1000, why, sizeof(why));
    redisReply *r = NULL;
    bool subscribed = false;

    if (c == NULL) {
        log_debug("cache", "subscriber: %s:%d: %s", n->host, n->port, why);
        goto out;
    }
    r = redisCommand(c, "SSUBSCRIBE %s", s->channel);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY)
        goto out;
    freeReplyObject(r);
    r = NULL;
    subscribed = true;
    log_info("cache", "subscribed to \"%s\" on %s:%d", s->channel, n->host, n->port);
    s->on_state(s->arg, true);
    while (!atomic_load(&s->stop)) {
        void *rp = NULL;
        /* replies already buffered first; then wait for the socket, waking up to check stop */
        if (redisGetReplyFromReader(c, &rp) != REDIS_OK)
            goto out;
        if (rp == NULL) {
            struct pollfd pfd = {c->fd, POLLIN, 0};
            int pr = poll(&pfd, 1, 200);
            if (pr < 0 && errno != EINTR)
                goto out;
            if (pr > 0 && redisBufferRead(c) != REDIS_OK)
                goto out;
            continue;
        }
        r = rp;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
            r->element[0]->type == REDIS_REPLY_STRING) {
            const char *kind = r->element[0]->str;
            if (strcmp(kind, "smessage") == 0 && r->element[2]->type == REDIS_REPLY_STRING)
                s->on_msg(s->arg, r->element[2]->str, r->element[2]->len);
            else if (strcmp(kind, "sunsubscribe") == 0)
                goto out; /* the channel's slot moved away: follow it */
        }
        freeReplyObject(r);
        r = NULL;
    }
out:
    freeReplyObject(r);
    if (subscribed) {
        s->on_state(s->arg, false);
        if (!atomic_load(&s->stop))
            log_warn("cache", "subscription on %s:%d lost: %s", n->host, n->port,
                     c->errstr[0] ? c->errstr : "closed");
    }
    if (c != NULL)
        redisFree(c);
}

static void *rcl_sub_main(void *arg)
{
    struct rcluster_sub *s = arg;
    struct rcluster *rc = s->rc;
    unsigned slot = rcluster_key_slot(s->channel, strlen(s->channel));

    while (!atomic_load(&s->stop)) {
        /* sharded channels live on their slot's owner: (re)read the map, then subscribe there */
        atomic_store(&rc->map_stale, true);
        rcl_refresh(rc);
        int idx = rcl_slot_owner(rc, slot);
        if (idx >= 0)
            rcl_sub_session(s, rcl_node_at(rc, idx));
        rcl_sleep_ms(s, rc->o.down_backoff_ms < 250 ? rc->o.down_backoff_ms : 250);
    }
    return NULL;
}

int rcluster_subscribe(struct rcluster *rc, const char *channel, rcluster_msg_fn *on_msg,
                       rcluster_state_fn *on_state, void *arg, struct rcluster_sub **out)
{
    struct rcluster_sub *s = xcalloc(1, sizeof(*s));

    s->rc = rc;
    s->channel = xstrdup(channel);
    s->on_msg = on_msg;
    s->on_state = on_state;
    s->arg = arg;
    if (pthread_create(&s->thread, NULL, rcl_sub_main, s) != 0) {
        free(s->channel);
        free(s);
        *out = NULL;
        return E_INTERNAL;
    }
    *out = s;
    return OK;
}

void rcluster_unsubscribe(struct rcluster_sub *s)
{
    if (s == NULL)
        return;
    atomic_store(&s->stop, true);
    pthread_join(s->thread, NULL);
    free(s->channel);
    free(s);
}
