/*
 * progress.c - a throttled progress reporter: bar, JSON lines or plain lines.
 *
 * Drawing is throttled by the monotonic clock so a hot loop may call
 * progress_add per item; everything happens under one mutex.
 */
#include "core/progress.h"

#include "core/xalloc.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum prog_mode { PROG_BAR, PROG_JSON, PROG_PLAIN };

struct progress {
    pthread_mutex_t lock;
    FILE *f;
    enum prog_mode mode;
    char op[32];
    char phase[32];
    uint64_t done, total, bytes, total_bytes;
    int64_t t0_us, last_us;
    bool drawn; /* a bar is on the current line */
};

static int64_t prog_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

struct progress *progress_new(const char *op, bool json, FILE *f)
{
    struct progress *p = xcalloc(1, sizeof(*p));

    pthread_mutex_init(&p->lock, NULL);
    p->f = f;
    p->mode = json ? PROG_JSON : isatty(fileno(f)) ? PROG_BAR : PROG_PLAIN;
    snprintf(p->op, sizeof(p->op), "%s", op);
    p->t0_us = p->last_us = prog_now_us();
    return p;
}

/* json_escape writes s as the inside of a JSON string (truncated to cap). */
static void json_escape(const char *s, char *out, size_t cap)
{
    size_t o = 0;

    for (const unsigned char *c = (const unsigned char *)s; *c != '\0' && o + 7 < cap; c++) {
        if (*c == '"' || *c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)*c;
        } else if (*c < 0x20) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", *c);
        } else {
            out[o++] = (char)*c;
        }
    }
    out[o] = '\0';
}

/* prog_size writes n bytes as a short human size into buf. */
static void prog_size(uint64_t n, char *buf, size_t cap)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)n;
    size_t u = 0;

    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(buf, cap, u == 0 ? "%.0f %s" : "%.1f %s", v, unit[u]);
}

/* prog_draw writes the state; the caller holds the lock. */
static void prog_draw(struct progress *p, int64_t now)
{
    double el = (double)(now - p->t0_us) / 1e6;
    double eta = -1;

    if (p->total > 0 && p->done > 0 && p->done <= p->total)
        eta = el * (double)(p->total - p->done) / (double)p->done;
    if (p->mode == PROG_JSON) {
        char op[80], ph[80];
        json_escape(p->op, op, sizeof(op));
        json_escape(p->phase, ph, sizeof(ph));
        fprintf(p->f,
                "{\"op\":\"%s\",\"phase\":\"%s\",\"done\":%llu,\"total\":%llu,\"bytes\":%llu,"
                "\"total_bytes\":%llu,\"elapsed_s\":%.1f,\"eta_s\":%.1f}\n",
                op, ph, (unsigned long long)p->done, (unsigned long long)p->total,
                (unsigned long long)p->bytes, (unsigned long long)p->total_bytes, el, eta);
    } else {
        char b[32], tb[32] = "";
        prog_size(p->bytes, b, sizeof(b));
        if (p->total_bytes > 0)
            prog_size(p->total_bytes, tb, sizeof(tb));
        if (p->mode == PROG_BAR) {
            char bar[21] = "                    ";
            if (p->total > 0) {
                size_t fill = (size_t)(20 * (p->done > p->total ? p->total : p->done) / p->total);
                memset(bar, '#', fill);
            }
            fprintf(p->f, "\r%s %s [%s] %llu", p->op, p->phase, bar, (unsigned long long)p->done);
        } else {
            fprintf(p->f, "%s %s: %llu", p->op, p->phase, (unsigned long long)p->done);
        }
        if (p->total > 0)
            fprintf(p->f, "/%llu", (unsigned long long)p->total);
        fprintf(p->f, ", %s%s%s, %.0f s", b, tb[0] ? " of " : "", tb, el);
        if (eta >= 0)
            fprintf(p->f, ", ETA %.0f s", eta);
        fputs(p->mode == PROG_BAR ? "\033[K" : "\n", p->f);
        p->drawn = p->mode == PROG_BAR;
    }
    fflush(p->f);
    p->last_us = now;
}

static void prog_maybe_draw(struct progress *p)
{
    int64_t now = prog_now_us();
    int64_t every = p->mode == PROG_BAR ? 200000 : p->mode == PROG_JSON ? 1000000 : 10000000;

    if (now - p->last_us >= every)
        prog_draw(p, now);
}

void progress_phase(struct progress *p, const char *phase, uint64_t total, uint64_t total_bytes)
{
    pthread_mutex_lock(&p->lock);
    if (p->drawn) {
        fputc('\n', p->f);
        p->drawn = false;
    }
    snprintf(p->phase, sizeof(p->phase), "%s", phase);
    p->done = p->bytes = 0;
    p->total = total;
    p->total_bytes = total_bytes;
    p->t0_us = prog_now_us();
    prog_draw(p, p->t0_us);
    pthread_mutex_unlock(&p->lock);
}

void progress_add(struct progress *p, uint64_t items, uint64_t bytes)
{
    pthread_mutex_lock(&p->lock);
    p->done += items;
    p->bytes += bytes;
    prog_maybe_draw(p);
    pthread_mutex_unlock(&p->lock);
}

void progress_note(struct progress *p, const char *fmt, ...)
{
    char msg[512], esc[1100];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&p->lock);
    if (p->drawn) {
        fputc('\n', p->f);
        p->drawn = false;
    }
    if (p->mode == PROG_JSON) {
        json_escape(msg, esc, sizeof(esc));
        fprintf(p->f, "{\"op\":\"%s\",\"event\":\"%s\"}\n", p->op, esc);
    } else {
        fprintf(p->f, "%s: %s\n", p->op, msg);
    }
    fflush(p->f);
    pthread_mutex_unlock(&p->lock);
}

void progress_flush(struct progress *p)
{
    pthread_mutex_lock(&p->lock);
    prog_draw(p, prog_now_us());
    pthread_mutex_unlock(&p->lock);
}

void progress_free(struct progress *p)
{
    if (p == NULL)
        return;
    if (p->drawn)
        fputc('\n', p->f);
    pthread_mutex_destroy(&p->lock);
    free(p);
}
