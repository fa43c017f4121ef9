/*
 * ratelimit.c - a fixed table of token buckets, tokens kept in micro-tokens.
 */
#include "http/ratelimit.h"

#include "core/hash.h"
#include "core/xalloc.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MICRO 1000000ull

struct bucket {
    uint64_t tokens; /* micro-tokens */
    int64_t last_us; /* 0: never used (full) */
};

struct ratelimit {
    pthread_mutex_t lock;
    uint64_t per_minute;
    uint64_t burst;
    struct bucket slots[RATELIMIT_SLOTS];
};

struct ratelimit *ratelimit_new(uint64_t per_minute, uint64_t burst)
{
    struct ratelimit *rl;

    if (per_minute == 0)
        return NULL;
    rl = xcalloc(1, sizeof(*rl));
    pthread_mutex_init(&rl->lock, NULL);
    rl->per_minute = per_minute;
    rl->burst = burst > 0 ? burst : 1;
    return rl;
}

void ratelimit_free(struct ratelimit *rl)
{
    if (rl == NULL)
        return;
    pthread_mutex_destroy(&rl->lock);
    free(rl);
}

bool ratelimit_take(struct ratelimit *rl, const void *id, size_t len, int64_t now_us,
                    unsigned *retry_after_s)
{
    struct bucket *b;
    uint64_t cap, need;
    bool ok;

    if (rl == NULL)
        return true;
    cap = rl->burst * MICRO;
    pthread_mutex_lock(&rl->lock);
    b = &rl->slots[fnv1a64(id, len) % RATELIMIT_SLOTS];
    if (b->last_us == 0) {
        b->tokens = cap;
    } else if (now_us > b->last_us) {
        /* per_minute tokens per 60e6 us: micro-tokens gained = elapsed_us * per_minute / 60 */
        uint64_t elapsed = (uint64_t)(now_us - b->last_us);
        uint64_t gain = elapsed > 3600 * MICRO ? cap : elapsed * rl->per_minute / 60;
        b->tokens = b->tokens + gain > cap ? cap : b->tokens + gain;
    }
    b->last_us = now_us;
    ok = b->tokens >= MICRO;
    if (ok) {
        b->tokens -= MICRO;
    } else {
        need = MICRO - b->tokens;
        /* us until need micro-tokens: need * 60 / per_minute, rounded up to whole seconds */
        uint64_t us = (need * 60 + rl->per_minute - 1) / rl->per_minute;
        *retry_after_s = (unsigned)((us + MICRO - 1) / MICRO);
        if (*retry_after_s == 0)
            *retry_after_s = 1;
    }
    pthread_mutex_unlock(&rl->lock);
    return ok;
}

/* listed tells whether addr is one of the comma-separated entries of list. */
static bool listed(const char *list, const char *addr)
{
    size_t n = strlen(addr);

    for (const char *p = list; *p != '\0';) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *end = p + strcspn(p, ", ");
        if ((size_t)(end - p) == n && n > 0 && memcmp(p, addr, n) == 0)
            return true;
        p = end;
    }
    return false;
}

void ratelimit_client_addr(const char *peer, const char *xff, const char *trusted, char *out,
                           size_t cap)
{
    if (xff != NULL && trusted != NULL && listed(trusted, peer)) {
        const char *last = strrchr(xff, ',');
        last = last ? last + 1 : xff;
        while (*last == ' ')
            last++;
        size_t n = strcspn(last, " \t");
        if (n > 0 && n < 64) {
            snprintf(out, cap, "%.*s", (int)n, last);
            return;
        }
    }
    snprintf(out, cap, "%s", peer);
}
