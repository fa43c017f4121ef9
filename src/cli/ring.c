/*
 * ring.c - `tessera ring`: arguments, the runtime, the logic below, the output.
 *
 * The ring in force is recorded in the metadata store (app/ring_state.h);
 * show compares it with the configured one, apply records the configured
 * one, plan and rebalance move the blobs to it (app/rebalance.h), drain moves them
 * off one shard to the ring in force without it (same protocol), migrate moves
 * them to a ring given on the command line (another backend) with the same protocol, simulate
 * measures placement (store/ring_sim.h). Results go to stdout, progress to
 * stderr; with --json both are JSON lines on stdout.
 */
#include "cli/ring.h"

#include "app/rebalance.h"
#include "app/ring_state.h"
#include "app/runtime.h"
#include "core/codec.h"
#include "core/err.h"
#include "core/log.h"
#include "core/progress.h"
#include "store/blob_ring.h"
#include "store/ring.h"
#include "store/ring_move.h"
#include "store/ring_sim.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ring_configured parses storage.shards with storage.replicas and write_quorum; logs why not. */
static int ring_configured(const struct config *cfg, struct ring **out)
{
    char err[512];
    int rc = ring_parse_spec(cfg->storage.shards, (unsigned)cfg->storage.replicas,
                             (unsigned)cfg->storage.write_quorum, out, err, sizeof(err));

    if (rc != OK)
        log_error("ring", "%s", err);
    return rc;
}

/* --- show, apply --- */

static int ring_show(const struct config *cfg)
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
    rc = ring_configured(cfg, &ring);
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

static int ring_apply(const struct config *cfg)
{
    struct runtime rt = {0};
    struct ring *ring = NULL, *old = NULL;
    char recorded[64] = "", err[512], *text = NULL;
    int rc = ring_configured(cfg, &ring);

    if (rc != OK)
        goto out;
    rc = runtime_open(cfg, RT_META, &rt);
    if (rc != OK)
        goto out;
    if (ring_state_config(rt.meta, &text) == OK &&
        ring_parse_described(text, &old, err, sizeof(err)) == OK &&
        strcmp(old->epoch, ring->epoch) != 0) {
        /* running services follow at once: until repair moved the blobs, they read the old
         * placement as a fallback */
        snprintf(recorded, sizeof(recorded), "%s", old->epoch);
        rc = ring_state_set_previous(rt.meta, old);
    } else {
        snprintf(recorded, sizeof(recorded), "%s", old != NULL ? old->epoch : "(none)");
    }
    if (rc == OK)
        rc = ring_state_record(rt.meta, ring);
    if (rc == OK)
        printf("ring epoch %s recorded (was %s); blobs were not moved: `tessera repair` puts "
               "them on their new homes\n",
               ring->epoch, recorded);
out:
    runtime_close(&rt);
    ring_free(ring);
    ring_free(old);
    free(text);
    return rc;
}

/* --- plan, rebalance, drain: from the ring in force to the configured one, or without a shard ---
 */

struct ring_move_args {
    bool execute; /* rebalance or drain; else plan */
    bool json;
    long rate;         /* keys a second, 0: no limit */
    long wait_s;       /* between the switch and the pruning */
    long jobs;         /* blobs copied at once */
    const char *drain; /* the shard to drain; NULL: move to the configured ring */
};

/*
 * ring_drain_target builds the ring a drain of name moves to: the ring in force without it.
 * A drain interrupted after it recorded that ring resumes (the ring in force is the previous
 * one without name). Refuses, saying why on stderr, a shard the ring does not have, a ring
 * that would be left with fewer shards than R (or zones), and an unfinished move to another
 * ring (uploads since it began live on its ring only).
 */
static int ring_drain_target(const struct runtime *rt, const char *name, struct ring **out)
{
    struct ring *in = NULL, *prev = NULL, *without = NULL;
    char err[512] = "", *text = NULL, *ptext = NULL;
    int rc = ring_state_config(rt->meta, &text);

    *out = NULL;
    if (rc == OK)
        rc = ring_parse_described(text, &in, err, sizeof(err));
    else
        snprintf(err, sizeof(err), "no ring in force: %s", err_str(rc));
    if (rc == OK)
        rc = ring_state_previous(rt->meta, &ptext);
    if (rc != OK)
        goto out;
    if (ptext[0] != '\0' && ring_parse_described(ptext, &prev, err, sizeof(err)) != OK) {
        rc = E_INVALID;
        goto out;
    }
    if (ring_find(in, name) >= 0) {
        if (prev != NULL) {
            snprintf(err, sizeof(err),
                     "a move from epoch %s to %s is unfinished: finish it first (`tessera ring "
                     "rebalance` or `ring migrate --finish`), then drain",
                     prev->epoch, in->epoch);
            rc = E_INVALID;
        } else {
            rc = ring_without(in, name, out, err, sizeof(err));
        }
    } else if (prev != NULL && ring_without(prev, name, &without, err, sizeof(err)) == OK &&
               strcmp(without->epoch, in->epoch) == 0) {
        *out = in; /* resume: the drain recorded this ring and stopped before the end */
        in = NULL;
    } else {
        snprintf(err, sizeof(err),
                 "%s is not a shard of the ring in force (epoch %s; `tessera ring show` lists "
                 "them): nothing to drain",
                 name, in->epoch);
        rc = E_NOTFOUND;
    }
out:
    if (rc != OK)
        fprintf(stderr, "tessera ring drain: refused: %s\n", err);
    ring_free(in);
    ring_free(prev);
    ring_free(without);
    free(text);
    free(ptext);
    return rc;
}

static void ring_print_plan(const char *op, const struct rebalance *rb, bool json)
{
    const struct ring_plan *pl = &rb->plan;

    if (json)
        printf("{\"op\":\"%s\",\"event\":\"plan\",\"old_epoch\":\"%s\",\"new_epoch\":\"%s\","
               "\"keys\":%zu,\"moving\":%zu,\"add\":%zu,\"add_bytes\":%llu,\"remove\":%zu,"
               "\"remove_bytes\":%llu}\n",
               op, rb->old->epoch, rb->nw->epoch, pl->keys, pl->moving, pl->add,
               (unsigned long long)pl->add_bytes, pl->remove, (unsigned long long)pl->remove_bytes);
    else
        printf("ring %s: %zu blobs, %zu move; %zu copies to add (%llu bytes), %zu to remove "
               "(%llu bytes)\n",
               op, pl->keys, pl->moving, pl->add, (unsigned long long)pl->add_bytes, pl->remove,
               (unsigned long long)pl->remove_bytes);
    fflush(stdout);
}

static void ring_print_done(const char *op, const struct rebalance *rb, bool switched,
                            double seconds, bool json)
{
    const struct ring_move_result *r = &rb->res;

    if (json)
        printf("{\"op\":\"%s\",\"event\":\"summary\",\"switched\":%s,\"epoch\":\"%s\","
               "\"seconds\":%.1f,\"copied\":%zu,\"removed\":%zu,\"not_pruned\":%zu,"
               "\"errors\":%zu}\n",
               op, switched ? "true" : "false", switched ? rb->nw->epoch : rb->old->epoch, seconds,
               r->copied, r->removed, r->skipped, r->errors);
    else if (switched)
        printf("ring %s: done in %.1f s, %zu copies made, %zu old copies removed, %zu "
               "errors\n",
               op, seconds, r->copied, r->removed, r->errors);
    fflush(stdout);
}

/*
 * ring_drain_check lists every shard again and counts what the drained shard still holds: a
 * blob a service wrote there before it followed the new ring. Those are copied and pruned
 * too, up to three rounds. OK once it holds nothing; E_IO (with the count on stderr) if it
 * still does, E_UNAVAILABLE if a shard cannot be listed.
 */
static int ring_drain_check(struct rebalance *rb, const struct ring_move_args *a,
                            struct progress *p)
{
    unsigned s = (unsigned)ring_find(blob_ring_ring(rb->store), a->drain);
    size_t left = 0;

    for (int round = 0; round < 3; round++) {
        if (rebalance_relist(rb, p) != OK)
            return E_UNAVAILABLE;
        left = 0;
        for (size_t i = 0; i < rb->listing.n; i++)
            left += rb->listing.v[i].shard == s;
        if (left == 0)
            return OK;
        progress_note(p,
                      "%s still holds %zu blobs (written before a service followed): moving "
                      "them",
                      a->drain, left);
        rebalance_copy(rb, a->rate, (unsigned)a->jobs, p);
        rebalance_prune(rb, p);
    }
    fprintf(stderr, "tessera ring drain: %s still holds %zu blobs: run it again\n", a->drain, left);
    return E_IO;
}

static int ring_move(const struct config *cfg, const struct ring_move_args *a)
{
    const char *op = !a->execute ? "plan" : a->drain != NULL ? "drain" : "rebalance";
    struct runtime rt = {0};
    struct ring *nw = NULL;
    struct rebalance rb = {0};
    struct progress *p = NULL;
    char err[1024];
    int64_t t0 = time_mono_us();
    int rc;

    rc = a->drain != NULL ? OK : ring_configured(cfg, &nw);
    if (rc == OK)
        rc = runtime_open(cfg, RT_META, &rt);
    if (rc == OK && a->drain != NULL)
        rc = ring_drain_target(&rt, a->drain, &nw);
    if (rc != OK)
        goto out;
    p = progress_new(op, a->json, a->json ? stdout : stderr);
    rc = rebalance_open(&rt, nw, &rb, p, err, sizeof(err));
    if (rc != OK) {
        fprintf(stderr, "tessera ring: %s\n", err);
        if (a->drain != NULL && rc == E_UNAVAILABLE)
            fprintf(stderr,
                    "tessera ring drain: refused: the blobs of %s are read from it and every "
                    "other shard, which must all answer; if %s is lost for good, record a ring "
                    "without it (`tessera ring apply`) and run `tessera repair`: the other "
                    "replicas restore every copy\n",
                    a->drain, a->drain);
        goto out;
    }
    if (rb.store == NULL) {
        if (a->json)
            printf("{\"op\":\"%s\",\"event\":\"summary\",\"epoch\":\"%s\",\"nothing_to_move\":"
                   "true}\n",
                   op, nw->epoch);
        else
            printf("the configured ring is the one in force (epoch %s): nothing to move\n",
                   nw->epoch);
        goto out;
    }
    if (a->drain != NULL && !a->json)
        printf("ring %s: drain %s: epoch %s -> %s (%zu shards left, R=%u)\n", op, a->drain,
               rb.old->epoch, nw->epoch, nw->n, nw->replicas);
    ring_print_plan(op, &rb, a->json);
    if (!a->execute)
        goto out;
    /* the new ring in force first: services follow it, then the blobs move */
    rc = rebalance_begin(&rb);
    if (rc != OK) {
        fprintf(stderr, "tessera ring: cannot record the new ring: %s\n", err_str(rc));
        goto out;
    }
    long follow_ms = rebalance_follow_ms(&rb);
    if (a->json)
        printf("{\"op\":\"%s\",\"event\":\"switched\",\"epoch\":\"%s\","
               "\"previous\":\"%s\",\"follow_ms\":%ld}\n",
               op, nw->epoch, rb.old->epoch, follow_ms);
    else
        printf("ring %s: epoch %s in force (reads fall back to epoch %s until the move "
               "is done); waiting %.1f s for the services to follow\n",
               op, nw->epoch, rb.old->epoch, (double)follow_ms / 1000);
    fflush(stdout);
    usleep((useconds_t)follow_ms * 1000);
    rc = rebalance_relist(&rb, p);
    if (rc != OK) {
        fprintf(stderr, "tessera ring: every shard must be listed to move blobs safely; the "
                        "move stays unfinished (reads fall back): run it again\n");
        goto out;
    }
    rebalance_copy(&rb, a->rate, (unsigned)a->jobs, p);
    rc = rebalance_finish(&rb);
    if (rc != OK) {
        if (rb.res.errors > 0)
            fprintf(stderr,
                    "tessera ring: %zu copies failed: the move stays unfinished (reads fall "
                    "back to the old ring); run it again\n",
                    rb.res.errors);
        ring_print_done(op, &rb, false, (double)(time_mono_us() - t0) / 1e6, a->json);
        goto out;
    }
    if (a->json)
        printf("{\"op\":\"%s\",\"event\":\"moved\",\"epoch\":\"%s\","
               "\"prune_in_s\":%ld}\n",
               op, nw->epoch, a->wait_s);
    else
        printf("ring %s: every blob on its new homes, each copy verified; old copies removed in "
               "%ld s\n",
               op, a->wait_s);
    fflush(stdout);
    if (a->wait_s > 0)
        sleep((unsigned)a->wait_s);
    rebalance_prune(&rb, p);
    if (a->drain != NULL && rb.res.errors == 0)
        rc = ring_drain_check(&rb, a, p);
    ring_print_done(op, &rb, true, (double)(time_mono_us() - t0) / 1e6, a->json);
    if (rc == OK && rb.res.errors > 0)
        rc = E_IO;
    if (rc == OK && a->drain != NULL) {
        if (a->json)
            printf("{\"op\":\"drain\",\"event\":\"drained\",\"shard\":\"%s\","
                   "\"epoch\":\"%s\"}\n",
                   a->drain, nw->epoch);
        else
            printf("ring drain: %s holds no blob (every shard listed again): it can be switched "
                   "off. Remove it from storage.shards in every configuration (epoch %s is in "
                   "force)\n",
                   a->drain, nw->epoch);
    }
out:
    progress_free(p);
    rebalance_release(&rb);
    runtime_close(&rt);
    ring_free(nw);
    return rc;
}

/* --- migrate: to another backend (nodes <-> S3), online, the old copies kept until --finish --- */

struct ring_migrate_args {
    const char *to; /* the new ring: storage.shards syntax; NULL with finish */
    long replicas;  /* 0: storage.replicas, at most the new ring's shards */
    long quorum;    /* 0: storage.write_quorum, at most replicas */
    bool finish;
    bool json;
    long rate;
    long jobs; /* blobs copied at once */
};

/* ring_migrate_target parses --to with R and W that fit it (one bucket: R = W = 1). */
static int ring_migrate_target(const struct config *cfg, const struct ring_migrate_args *a,
                               struct ring **out)
{
    struct ring *probe = NULL;
    char err[512];
    long r = a->replicas, w = a->quorum;
    int rc;

    /* count the shards first: R defaults to storage.replicas, capped by them */
    rc = ring_parse_spec(a->to, 1, 1, &probe, err, sizeof(err));
    if (rc == OK) {
        if (r <= 0)
            r = cfg->storage.replicas < (int64_t)probe->n ? (long)cfg->storage.replicas
                                                          : (long)probe->n;
        if (w <= 0)
            w = cfg->storage.write_quorum < r ? (long)cfg->storage.write_quorum : r;
        rc = ring_parse_spec(a->to, (unsigned)r, (unsigned)w, out, err, sizeof(err));
    }
    ring_free(probe);
    if (rc != OK)
        fprintf(stderr, "tessera ring migrate: --to: %s\n", err);
    return rc;
}

/* ring_migrate_in_force reads the ring in force (what --finish completes the move to). */
static int ring_migrate_in_force(const struct runtime *rt, struct ring **out)
{
    char err[512], *text = NULL;
    int rc = ring_state_config(rt->meta, &text);

    if (rc == OK)
        rc = ring_parse_described(text, out, err, sizeof(err));
    else
        snprintf(err, sizeof(err), "no ring in force: %s", err_str(rc));
    if (rc != OK)
        fprintf(stderr, "tessera ring migrate: %s\n", err);
    free(text);
    return rc;
}

/*
 * ring_migrate_unfinished refuses to start a move to nw while one to another ring is open:
 * blobs uploaded since that one began live only on its ring, which a new move from the
 * previous ring would leave behind. Moving to the ring in force again resumes it.
 */
static int ring_migrate_unfinished(const struct runtime *rt, const struct ring *nw)
{
    char epoch[64] = "", *prev = NULL;
    int rc = ring_state_previous(rt->meta, &prev);

    if (rc == OK && prev[0] != '\0' && ring_state_epoch(rt->meta, epoch, sizeof(epoch)) == OK &&
        strcmp(epoch, nw->epoch) != 0) {
        fprintf(stderr,
                "tessera ring migrate: a move to epoch %s is unfinished (uploads since went "
                "there): finish it first (`tessera ring migrate --finish`, or `ring rebalance`), "
                "or give --to that ring again to resume it\n",
                epoch);
        rc = E_INVALID;
    }
    free(prev);
    return rc;
}

static void ring_migrate_say(bool json, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ring_migrate_say prints one result line: a sentence, or {"op":"migrate","event":...} with --json.
 */
static void ring_migrate_say(bool json, const char *event, const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (json)
        printf("{\"op\":\"migrate\",\"event\":\"%s\",\"message\":\"%s\"}\n", event, line);
    else
        printf("ring migrate: %s\n", line);
    fflush(stdout);
}

/*
 * ring_migrate moves every blob to the ring of --to, with rebalance's protocol: the new ring
 * in force first with the old one recorded as previous (services write to the new backend,
 * read it first and the old one as a fallback), then every listed blob copied and verified.
 * The previous ring stays recorded, with its copies, until --finish: that copies what is
 * still missing, stops the fallback, waits for the services, and only then removes the old
 * copies. Run again after a crash, it resumes from the recorded previous ring.
 */
static int ring_migrate(const struct config *cfg, const struct ring_migrate_args *a)
{
    struct runtime rt = {0};
    struct ring *nw = NULL;
    struct rebalance rb = {0};
    struct progress *p = NULL;
    char err[1024];
    int rc;

    rc = runtime_open(cfg, RT_META, &rt);
    if (rc != OK)
        goto out;
    rc = a->finish ? ring_migrate_in_force(&rt, &nw) : ring_migrate_target(cfg, a, &nw);
    if (rc == OK && !a->finish)
        rc = ring_migrate_unfinished(&rt, nw);
    if (rc != OK)
        goto out;
    p = progress_new("migrate", a->json, a->json ? stdout : stderr);
    rc = rebalance_open(&rt, nw, &rb, p, err, sizeof(err));
    if (rc != OK) {
        fprintf(stderr, "tessera ring migrate: %s\n", err);
        goto out;
    }
    if (rb.store == NULL) {
        ring_migrate_say(a->json, "nothing", "epoch %s is in force and no migration is open%s",
                         nw->epoch, a->finish ? ": nothing to finish" : "");
        goto out;
    }
    ring_migrate_say(a->json, "plan",
                     "epoch %s -> %s: %zu blobs, %zu copies to make (%llu bytes), %zu old "
                     "copies (%llu bytes) kept until --finish",
                     rb.old->epoch, nw->epoch, rb.plan.keys, rb.plan.add,
                     (unsigned long long)rb.plan.add_bytes, rb.plan.remove,
                     (unsigned long long)rb.plan.remove_bytes);
    if (!a->finish) {
        rc = rebalance_begin(&rb);
        if (rc != OK) {
            fprintf(stderr, "tessera ring migrate: cannot record the new ring: %s\n", err_str(rc));
            goto out;
        }
        long follow_ms = rebalance_follow_ms(&rb);
        ring_migrate_say(a->json, "switched",
                         "epoch %s in force (uploads go there; reads fall back to epoch %s); "
                         "waiting %.1f s for the services to follow",
                         nw->epoch, rb.old->epoch, (double)follow_ms / 1000);
        usleep((useconds_t)follow_ms * 1000);
        /* what services wrote to the old placement before they followed is listed now */
        rc = rebalance_relist(&rb, p);
        if (rc != OK) {
            fprintf(stderr, "tessera ring migrate: every shard must be listed to copy safely; "
                            "run it again (reads fall back meanwhile)\n");
            goto out;
        }
    }
    int64_t t0 = time_mono_us(); /* the copy alone: its speed is what a migration costs */
    rebalance_copy(&rb, a->rate, (unsigned)a->jobs, p);
    double secs = (double)(time_mono_us() - t0) / 1e6;
    if (rb.res.errors > 0) {
        fprintf(stderr,
                "tessera ring migrate: %zu copies failed (listed above); the old copies stay "
                "and reads fall back to them: run it again\n",
                rb.res.errors);
        rc = E_IO;
        goto out;
    }
    ring_migrate_say(a->json, "copied",
                     "%zu copies made and verified (SHA-256) in %.1f s (%.1f blobs/s, %.2f MB/s)",
                     rb.res.copied, secs, secs > 0 ? (double)rb.res.copied / secs : 0.0,
                     secs > 0 ? (double)rb.plan.add_bytes / secs / 1e6 : 0.0);
    if (!a->finish) {
        ring_migrate_say(a->json, "migrated",
                         "every blob is on epoch %s; the old backend keeps its copies (and is "
                         "read as a fallback) until `tessera ring migrate --finish`; set "
                         "storage.shards to the new ring in every service's configuration",
                         nw->epoch);
        goto out;
    }
    rc = rebalance_finish(&rb);
    if (rc != OK) {
        fprintf(stderr, "tessera ring migrate: cannot clear the previous ring: %s\n", err_str(rc));
        goto out;
    }
    long follow_ms = rebalance_follow_ms(&rb);
    ring_migrate_say(a->json, "finishing",
                     "no fallback to epoch %s any more; removing its copies in %.1f s (once "
                     "the services followed)",
                     rb.old->epoch, (double)follow_ms / 1000);
    usleep((useconds_t)follow_ms * 1000);
    rebalance_prune(&rb, p);
    ring_migrate_say(a->json, "finished",
                     "%zu old copies removed, %zu kept (not on every new "
                     "home), %zu errors",
                     rb.res.removed, rb.res.skipped, rb.res.errors);
    if (rb.res.errors > 0)
        rc = E_IO;
out:
    progress_free(p);
    rebalance_release(&rb);
    runtime_close(&rt);
    ring_free(nw);
    return rc;
}

/* --- simulate --- */

static int ring_sim_parse(int argc, char **argv, struct ring_sim_opts *o, bool *json)
{
    ring_sim_opts_init(o);
    *json = false;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        unsigned long v = 0;
        if (strcmp(a, "--json") == 0) {
            *json = true;
            continue;
        }
        if (strcmp(a, "--remove") == 0) {
            o->remove = true;
            continue;
        }
        if (strcmp(a, "--weighted") == 0) {
            o->weighted = true;
            continue;
        }
        const char *val = strchr(a, '=') ? strchr(a, '=') + 1 : (i + 1 < argc ? argv[++i] : NULL);
        char *end = NULL;
        if (val == NULL || (v = strtoul(val, &end, 10), end == val || *end != '\0')) {
            fprintf(stderr, "tessera ring simulate: %s needs a number\n", a);
            return E_INVALID;
        }
        if (strncmp(a, "--shards", 8) == 0)
            o->shards = (unsigned)v;
        else if (strncmp(a, "--add", 5) == 0)
            o->add = (unsigned)v;
        else if (strncmp(a, "--keys", 6) == 0)
            o->keys = v;
        else if (strncmp(a, "--replicas", 10) == 0)
            o->replicas = (unsigned)v;
        else if (strncmp(a, "--zones", 7) == 0)
            o->zones = (unsigned)v;
        else if (strncmp(a, "--seed", 6) == 0)
            o->seed = v;
        else {
            fprintf(stderr, "tessera ring simulate: unknown option %s\n", a);
            return E_INVALID;
        }
    }
    if (!ring_sim_opts_valid(o)) {
        fprintf(stderr, "usage: tessera ring simulate --shards N [--add M | --add M --remove] "
                        "--keys K [--replicas R] [--zones Z] [--weighted] [--seed S] [--json]\n"
                        "(1 <= R <= shards left, K <= 100000000)\n");
        return E_INVALID;
    }
    return OK;
}

static void ring_sim_print(const struct ring_sim_opts *o, const struct ring_sim_result *r,
                           bool json)
{
    double ratio = r->moved_fraction / r->ideal_fraction;

    if (json) {
        printf("{\"shards\":%u,\"%s\":%u,\"keys\":%lu,\"replicas\":%u,\"zones\":%u,"
               "\"weighted\":%s,\"moved_fraction\":%.6f,\"ideal_fraction\":%.6f,"
               "\"moved_over_ideal\":%.4f,\"moved_elsewhere\":%lu,"
               "\"replica_moved_fraction\":%.6f,\"replica_moved_elsewhere\":%lu,"
               "\"max_over_mean\":%.4f,\"replica_max_over_mean\":%.4f,\"weight_error\":%.4f,"
               "\"zone_violations\":%lu,\"ns_per_lookup\":%.1f}\n",
               o->shards, o->remove ? "removed" : "added", o->add, o->keys, o->replicas, o->zones,
               o->weighted ? "true" : "false", r->moved_fraction, r->ideal_fraction, ratio,
               r->moved_bad, r->slot_moved_fraction, r->slots_bad, r->max_over_mean,
               r->slot_max_over_mean, r->weight_error, r->zone_violations, r->ns_per_lookup);
        return;
    }
    printf("ring simulate: %u shards %s %u, %lu keys, R=%u%s%s\n", o->shards,
           o->remove ? "minus" : "plus", o->add, o->keys, o->replicas, o->zones ? ", zones" : "",
           o->weighted ? ", weights 1..4" : "");
    printf("  %-34s %10.4f%%  (ideal %.4f%%, ratio %.3f)\n", "primaries moved",
           r->moved_fraction * 100, r->ideal_fraction * 100, ratio);
    printf("  %-34s %10lu\n",
           o->remove ? "moves not off a removed shard" : "moves not onto an added shard",
           r->moved_bad);
    printf("  %-34s %10.4f%%\n", "replica slots moved", r->slot_moved_fraction * 100);
    printf("  %-34s %10lu\n", "replica moves elsewhere", r->slots_bad);
    printf("  %-34s %10.4f\n", "max/mean load (primaries)", r->max_over_mean);
    printf("  %-34s %10.4f\n", "max/mean load (all replicas)", r->slot_max_over_mean);
    printf("  %-34s %10.4f\n", "worst |load/weight share - 1|", r->weight_error);
    if (o->zones > 1)
        printf("  %-34s %10lu\n", "replica sets short of zones", r->zone_violations);
    printf("  %-34s %10.1f\n", "ns per lookup (R replicas)", r->ns_per_lookup);
}

static int ring_simulate(int argc, char **argv)
{
    struct ring_sim_opts o;
    struct ring_sim_result r;
    char err[256];
    bool json;

    if (ring_sim_parse(argc, argv, &o, &json) != OK)
        return 2;
    if (ring_sim_run(&o, &r, err, sizeof(err)) != OK) {
        fprintf(stderr, "tessera ring simulate: %s\n", err);
        return 1;
    }
    ring_sim_print(&o, &r, json);
    return 0;
}

/* ring_migrate_cmd parses `ring migrate --to SPEC [--replicas R] [--write-quorum W]
 * [--rate N] [--jobs N] [--json]` or `ring migrate --finish [--jobs N] [--json]`. */
static int ring_migrate_cmd(const struct config *cfg, int argc, char **argv)
{
    struct ring_migrate_args a = {NULL, 0, 0, false, false, 0, 4};
    bool bad = false;

    for (int i = 2; i < argc; i++) {
        const char *o = argv[i];
        if (strcmp(o, "--finish") == 0)
            a.finish = true;
        else if (strcmp(o, "--json") == 0)
            a.json = true;
        else if (strcmp(o, "--to") == 0 && i + 1 < argc)
            a.to = argv[++i];
        else if (strcmp(o, "--replicas") == 0 && i + 1 < argc)
            a.replicas = strtol(argv[++i], NULL, 10);
        else if (strcmp(o, "--write-quorum") == 0 && i + 1 < argc)
            a.quorum = strtol(argv[++i], NULL, 10);
        else if (strcmp(o, "--rate") == 0 && i + 1 < argc)
            a.rate = strtol(argv[++i], NULL, 10);
        else if (strcmp(o, "--jobs") == 0 && i + 1 < argc)
            a.jobs = strtol(argv[++i], NULL, 10);
        else
            bad = true;
    }
    if (bad || (a.to == NULL) == !a.finish || a.replicas < 0 || a.quorum < 0 || a.rate < 0 ||
        a.jobs < 1 || a.jobs > RING_MOVE_MAX_JOBS) {
        fprintf(stderr,
                "usage: tessera ring migrate --to SHARDS [--replicas R] [--write-quorum W] "
                "[--rate KEYS_PER_S] [--json]\n"
                "       tessera ring migrate --finish [--json]\n"
                "  SHARDS as storage.shards, e.g. main=s3+http://127.0.0.1:18081/bucket or "
                "@/etc/tessera/nodes.txt;\n"
                "  R defaults to storage.replicas (at most the shards of SHARDS); N blobs are "
                "copied at once (default 4, at most %d)\n",
                RING_MOVE_MAX_JOBS);
        return 2;
    }
    return ring_migrate(cfg, &a) == OK ? 0 : 1;
}

int ring_cmd(const struct config *cfg, int argc, char **argv)
{
    const char *sub = argc >= 2 ? argv[1] : "";
    struct ring_move_args a = {false, false, 0, 5, 1, NULL};
    int first = 2, rc;

    if (strcmp(sub, "simulate") == 0)
        return ring_simulate(argc, argv);
    if (strcmp(sub, "migrate") == 0)
        return ring_migrate_cmd(cfg, argc, argv);
    if (strcmp(sub, "drain") == 0) {
        a.drain = argc >= 3 && argv[2][0] != '-' ? argv[2] : NULL;
        a.jobs = 4;
        first = 3;
    }
    for (int i = first; i < argc; i++) {
        if (strcmp(argv[i], "--rate") == 0 && i + 1 < argc)
            a.rate = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--wait") == 0 && i + 1 < argc)
            a.wait_s = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--jobs") == 0 && i + 1 < argc)
            a.jobs = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--drain") == 0 && i + 1 < argc && strcmp(sub, "plan") == 0)
            a.drain = argv[++i];
        else if (strcmp(argv[i], "--json") == 0)
            a.json = true;
        else
            sub = "?";
    }
    if (a.rate < 0 || a.wait_s < 0 || a.jobs < 1 || a.jobs > RING_MOVE_MAX_JOBS)
        sub = "?";
    if (strcmp(sub, "show") == 0)
        rc = ring_show(cfg);
    else if (strcmp(sub, "apply") == 0)
        rc = ring_apply(cfg);
    else if (strcmp(sub, "plan") == 0)
        rc = ring_move(cfg, &a);
    else if (strcmp(sub, "rebalance") == 0 || (strcmp(sub, "drain") == 0 && a.drain != NULL)) {
        a.execute = true;
        rc = ring_move(cfg, &a);
    } else {
        fprintf(stderr,
                "usage: tessera ring show | apply | plan [--drain SHARD] [--json]\n"
                "       tessera ring rebalance [--rate KEYS_PER_S] [--wait S] [--jobs N] [--json]\n"
                "       tessera ring drain SHARD [--rate KEYS_PER_S] [--wait S] [--jobs N] "
                "[--json]\n"
                "       tessera ring migrate --to SHARDS | migrate --finish | simulate ...\n"
                "  the ring in force is recorded in the metadata store; plan, rebalance and "
                "apply move it to the configured storage.shards; drain moves every blob off "
                "SHARD and removes it from the ring in force; N blobs are copied at once "
                "(rebalance 1, drain 4, at most %d)\n",
                RING_MOVE_MAX_JOBS);
        return 2;
    }
    return rc == OK ? 0 : 1;
}
