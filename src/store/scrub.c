/*
 * scrub.c - the background scrubber of a storage node (scrub.h).
 *
 * Rate: a schedule in microseconds shared by the whole pass; after each chunk read it moves
 * by chunk / rate, and the thread waits until the clock catches up. Stopping wakes every wait.
 * Invariant: the only change it makes is a rename of a copy that failed its check into the
 * quarantine (blob_file_quarantine checks that the name still holds the very file checked).
 */
#include "store/scrub.h"

#include "core/codec.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/ident.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/xalloc.h"
#include "store/blob_int.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SCRUB_CHUNK (256 * 1024)
#define SCRUB_PAGE  256

static struct metric m_bytes = {"tessera_storage_scrub_bytes_total",
                                "Bytes of blobs re-read and checked by the scrubber.", "counter",
                                0};
static struct metric m_blobs = {"tessera_storage_scrub_blobs_total",
                                "Blobs re-read and checked by the scrubber.", "counter", 0};
static struct metric m_corrupt = {
    "tessera_storage_scrub_corrupt_total",
    "Copies the scrubber found not hashing to their key or unreadable, moved to the quarantine.",
    "counter", 0};
static struct metric m_passes = {"tessera_storage_scrub_passes_total",
                                 "Complete scrub passes over every blob of the node.", "counter",
                                 0};
static struct metric m_pass_s = {"tessera_storage_scrub_pass_seconds",
                                 "How long the last complete scrub pass took.", "gauge", 0};

struct scrubber {
    struct scrub_opts o;
    char quarantine[PATH_MAX];
    pthread_t tid;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stop;
    int64_t due_us; /* the rate's schedule: no more bytes before this monotonic time */
    uint8_t *buf;
};

/* scrub_sleep waits until the monotonic time until_us or a stop; false once stopping. */
static bool scrub_sleep(struct scrubber *s, int64_t until_us)
{
    bool go;

    pthread_mutex_lock(&s->lock);
    while (!s->stop) {
        int64_t now = time_mono_us();
        if (now >= until_us)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts); /* the condition variable's clock */
        int64_t ns = (int64_t)ts.tv_nsec + (until_us - now) * 1000;
        ts.tv_sec += (time_t)(ns / 1000000000);
        ts.tv_nsec = (long)(ns % 1000000000);
        pthread_cond_timedwait(&s->cond, &s->lock, &ts);
    }
    go = !s->stop;
    pthread_mutex_unlock(&s->lock);
    return go;
}

static bool scrub_stopped(struct scrubber *s)
{
    bool stop;

    pthread_mutex_lock(&s->lock);
    stop = s->stop;
    pthread_mutex_unlock(&s->lock);
    return stop;
}

/*
 * scrub_hash hashes fd at the rate into digest: OK, E_IO (a read error), E_UNAVAILABLE when
 * stopping (digest unset).
 */
static int scrub_hash(struct scrubber *s, int fd, uint8_t digest[SHA256_LEN])
{
    struct sha256_ctx *c = sha256_new();
    ssize_t got;
    int rc = OK;

    for (;;) {
        got = read(fd, s->buf, SCRUB_CHUNK);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            rc = E_IO;
            break;
        }
        if (got == 0)
            break;
        sha256_update(c, s->buf, (size_t)got);
        metric_add(&m_bytes, got);
        int64_t now = time_mono_us();
        if (s->due_us < now)
            s->due_us = now; /* idle time is not saved up as a burst */
        s->due_us += (int64_t)((double)got * 1e6 / (double)s->o.bytes_per_s);
        if (!scrub_sleep(s, s->due_us)) {
            rc = E_UNAVAILABLE;
            break;
        }
    }
    sha256_final(c, digest); /* frees c */
    return rc;
}

/* scrub_one checks one blob; a copy that is bad goes to the quarantine. */
static void scrub_one(struct scrubber *s, const char *key)
{
    uint8_t digest[SHA256_LEN];
    char hex[SHA256_HEX] = "", moved[PATH_MAX + 96];
    uint64_t size = 0;
    int fd = -1;
    int rc = blob_open(s->o.store, key, &fd, &size);

    if (rc == E_NOTFOUND)
        return; /* deleted since the listing */
    if (rc != OK) {
        log_error("scrub", "blob %s cannot be opened: %s", key, err_str(rc));
        return;
    }
    rc = scrub_hash(s, fd, digest);
    if (rc == E_UNAVAILABLE)
        goto out; /* stopping */
    metric_add(&m_blobs, 1);
    if (rc == OK) {
        hex_encode(digest, SHA256_LEN, hex);
        if (strcmp(hex, key) == 0)
            goto out;
    }
    /* corrupt or unreadable: aside, never deleted, never served again */
    rc = blob_file_quarantine(s->o.store, key, fd, s->quarantine, moved, sizeof(moved));
    if (rc != E_NOTFOUND)
        metric_add(&m_corrupt, 1);
    if (rc == OK) {
        log_error("scrub",
                  "blob %s %s: moved to %s (the other replicas serve it; `tessera repair` "
                  "writes it back)",
                  key, hex[0] != '\0' ? "does not hash to its key" : "cannot be read", moved);
        if (s->o.found != NULL)
            s->o.found(s->o.arg, size);
    } else if (rc == E_NOTFOUND) {
        log_info("scrub", "blob %s changed while checked: left for the next pass", key);
    } else {
        log_error("scrub", "blob %s failed its check and cannot be quarantined: %s", key,
                  err_str(rc));
    }
out:
    close(fd);
}

/* scrub_pass walks every blob once; false once stopping. */
static bool scrub_pass(struct scrubber *s)
{
    struct blob_entry *page = xmalloc(SCRUB_PAGE * sizeof(*page));
    char after[BLOB_KEY_LEN + 1] = "";
    bool go = true;
    size_t n;

    do {
        n = 0;
        int rc = blob_list(s->o.store, after, page, SCRUB_PAGE, &n);
        if (rc != OK) {
            log_error("scrub", "cannot list the blobs after \"%s\": %s; pass ended", after,
                      err_str(rc));
            break;
        }
        for (size_t i = 0; i < n && go; i++) {
            scrub_one(s, page[i].key);
            go = !scrub_stopped(s);
        }
        if (n > 0)
            memcpy(after, page[n - 1].key, sizeof(after));
    } while (go && n == SCRUB_PAGE);
    free(page);
    return go;
}

static void *scrub_main(void *arg)
{
    struct scrubber *s = arg;

    for (;;) {
        int64_t t0 = time_mono_us();
        if (!scrub_pass(s))
            break;
        int64_t took = time_mono_us() - t0;
        metric_add(&m_passes, 1);
        atomic_store_explicit(&m_pass_s.value, took / 1000000, memory_order_relaxed);
        log_info("scrub", "pass done in %.1f s", (double)took / 1e6);
        if (!scrub_sleep(s, t0 + s->o.interval_ms * 1000))
            break;
    }
    return NULL;
}

int scrub_start(const struct scrub_opts *o, struct scrubber **out)
{
    struct scrubber *s;

    *out = NULL;
    if (o->bytes_per_s <= 0 || o->interval_ms <= 0 || o->store == NULL ||
        strlen(o->quarantine) >= PATH_MAX)
        return E_INVALID;
    s = xcalloc(1, sizeof(*s));
    s->o = *o;
    memcpy(s->quarantine, o->quarantine, strlen(o->quarantine) + 1);
    s->o.quarantine = s->quarantine;
    s->buf = xmalloc(SCRUB_CHUNK);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    metric_register(&m_bytes);
    metric_register(&m_blobs);
    metric_register(&m_corrupt);
    metric_register(&m_passes);
    metric_register(&m_pass_s);
    if (pthread_create(&s->tid, NULL, scrub_main, s) != 0) {
        pthread_cond_destroy(&s->cond);
        pthread_mutex_destroy(&s->lock);
        free(s->buf);
        free(s);
        return E_IO;
    }
    *out = s;
    return OK;
}

void scrub_stop(struct scrubber *s)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->lock);
    s->stop = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->tid, NULL);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    free(s->buf);
    free(s);
}

static int scrub_cmp_entry(const void *a, const void *b)
{
    return strcmp(((const struct blob_entry *)a)->key, ((const struct blob_entry *)b)->key);
}

int scrub_quarantine_list(const char *dir, struct blob_entry *out, size_t cap, size_t *n)
{
    DIR *d = opendir(dir);
    struct dirent *e;

    *n = 0;
    if (d == NULL)
        return errno == ENOENT ? OK : E_IO;
    while (*n < cap && (e = readdir(d)) != NULL) {
        char path[PATH_MAX];
        struct stat st;
        /* "<key>.<seconds>": anything else is not ours */
        if (strlen(e->d_name) <= BLOB_KEY_LEN + 1 || e->d_name[BLOB_KEY_LEN] != '.' ||
            !blob_key_valid(e->d_name, BLOB_KEY_LEN))
            continue;
        if (snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >= (int)sizeof(path) ||
            stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        memcpy(out[*n].key, e->d_name, BLOB_KEY_LEN);
        out[*n].key[BLOB_KEY_LEN] = '\0';
        out[*n].size = (uint64_t)st.st_size;
        out[*n].mtime = (int64_t)st.st_mtime;
        (*n)++;
    }
    closedir(d);
    qsort(out, *n, sizeof(*out), scrub_cmp_entry);
    return OK;
}
