/*
 * rcluster.h - a Redis Cluster client on hiredis 0.14 (which has no cluster API).
 *
 * Routes each key by its hash slot (CRC16 of the key or its {hash tag}, mod
 * 16384) with a slot map read from CLUSTER SLOTS; follows MOVED (update the
 * map, refresh it, retry) and ASK (ASKING + retry on the target, map kept).
 * Each node has a small pool of keep-alive connections with short connect and
 * command timeouts; a node that fails is marked down and skipped (fails fast)
 * for a back-off that doubles while it stays down, then one caller probes it.
 * With a password, every new connection (pooled, after a redirect, after a
 * reconnect, the subscriber's) sends AUTH user password before anything else.
 * hiredis types never leave this module. See docs/internals/cache.md.
 */
#ifndef CACHE_RCLUSTER_H
#define CACHE_RCLUSTER_H

#include "core/crypto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RCLUSTER_SLOTS     16384
#define RCLUSTER_NODES_MAX 32
#define RCLUSTER_HOST_MAX  64

struct rcluster;
struct rcluster_sub;

struct rcluster_opts {
    const char *nodes;             /* seed nodes "host:port,host:port,..." */
    int64_t connect_timeout_ms;    /* per connection attempt */
    int64_t timeout_ms;            /* per command (send + reply) */
    int64_t down_backoff_ms;       /* first back-off of a failed node; doubles up to 16x */
    size_t pool;                   /* idle connections kept per node */
    const char *user;              /* ACL user of AUTH; NULL or "": "default" */
    const struct secret *password; /* NULL or len 0: no AUTH; copied by rcluster_new */
};

/* What the client knows of one node (metrics). */
struct rcluster_node_info {
    char addr[RCLUSTER_HOST_MAX + 8]; /* "host:port" */
    bool up;                          /* not marked down */
    int64_t commands;
    int64_t errors;
};

/*
 * rcluster_new checks the seed list and makes the client; it connects lazily
 * (the first command reads the slot map), so it succeeds with every node down.
 * E_INVALID for a malformed or empty list, or more than RCLUSTER_NODES_MAX.
 */
int rcluster_new(const struct rcluster_opts *o, struct rcluster **out);

/* rcluster_free closes every connection; NULL is fine. No subscriber may be running. */
void rcluster_free(struct rcluster *rc);

/*
 * rcluster_get copies the string value of key into buf (capacity cap, NUL
 * added) and its length into *len. E_NOTFOUND when the key is absent,
 * E_TOOBIG when it does not fit, E_UNAVAILABLE when its node cannot answer now.
 * Blocks at most about two command timeouts (once per redirect). Thread-safe.
 */
int rcluster_get(struct rcluster *rc, const char *key, char *buf, size_t cap, size_t *len);

/*
 * rcluster_set sets key to val (len bytes) with a TTL in ms (PX); with nx
 * only when absent (E_EXISTS when it was there). E_UNAVAILABLE as above.
 */
int rcluster_set(struct rcluster *rc, const char *key, const char *val, size_t len, int64_t ttl_ms,
                 bool nx);

/* rcluster_del deletes key (OK also when it was absent). */
int rcluster_del(struct rcluster *rc, const char *key);

/*
 * rcluster_publish publishes msg on the sharded channel (SPUBLISH, routed by
 * the channel's slot like a key: its owner writes the message to every
 * subscriber before it answers, with no cluster-bus hop); *receivers (may be
 * NULL) gets the count of subscribers. E_UNAVAILABLE when the owner is down.
 */
int rcluster_publish(struct rcluster *rc, const char *channel, const char *msg,
                     long long *receivers);

/* rcluster_nodes fills out[0..return) with at most cap known nodes. Thread-safe. */
size_t rcluster_nodes(struct rcluster *rc, struct rcluster_node_info *out, size_t cap);

/* Subscriber callbacks, called on the subscriber's thread. */
typedef void rcluster_msg_fn(void *arg, const char *msg, size_t len);
typedef void rcluster_state_fn(void *arg, bool subscribed);

/*
 * rcluster_subscribe starts a thread that keeps one connection SSUBSCRIBEd to
 * the sharded channel on its slot's owner, calling on_msg for each message and
 * on_state(true) once subscribed, on_state(false) when the connection was lost
 * (messages may have been missed until the next on_state(true)). It follows
 * the slot when it moves and resubscribes by itself. OK, or E_INTERNAL if no thread.
 */
int rcluster_subscribe(struct rcluster *rc, const char *channel, rcluster_msg_fn *on_msg,
                       rcluster_state_fn *on_state, void *arg, struct rcluster_sub **out);

/* rcluster_unsubscribe stops and joins the subscriber (within ~250 ms); NULL is fine. */
void rcluster_unsubscribe(struct rcluster_sub *sub);

/* --- pure functions, exported for the unit tests --- */

/* rcluster_crc16 is CRC16-CCITT (XModem), the cluster's key hash: "123456789" -> 0x31C3. */
uint16_t rcluster_crc16(const char *buf, size_t len);

/* rcluster_key_slot: the slot of a key, hashing only the {tag} when it has a non-empty one. */
unsigned rcluster_key_slot(const char *key, size_t len);

/* A parsed redirect error: "MOVED 3999 127.0.0.1:6381" or "ASK 3999 127.0.0.1:6381". */
struct rcluster_redirect {
    bool ask;
    unsigned slot;
    char host[RCLUSTER_HOST_MAX];
    int port;
};

/* rcluster_parse_redirect parses an error reply; E_INVALID when it is not a well-formed redirect.
 */
int rcluster_parse_redirect(const char *err, size_t len, struct rcluster_redirect *out);

/* rcluster_parse_addr parses "host:port" (the last colon splits); E_INVALID when malformed. */
int rcluster_parse_addr(const char *s, size_t len, char *host, size_t hostcap, int *port);

#endif
