/*
 * ring.c - `tessera ring`: arguments, the runtime, the logic below, the output.
 *
 * The ring in force is recorded in the metadata store (app/ring_state.h);
 * show compares it with the configured one, apply records the configured
 * one, plan and rebalance move the blobs to it (app/rebalance.h), simulate
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
#include "store/ring.h"
#include "store/ring_sim.h"

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

/* --- plan, rebalance: from the ring in force to the configured one --- */

struct ring_move_args {
    bool execute; /* rebalance; else plan */
    bool json;
    long rate;   /* keys a second, 0: no limit */
    long wait_s; /* between the switch and the pruning */
};

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

static void ring_print_done(const struct rebalance *rb, bool switched, double seconds, bool json)
{
    const struct ring_move_result *r = &rb->res;

    if (json)
        printf("{\"op\":\"rebalance\",\"event\":\"summary\",\"switched\":%s,\"epoch\":\"%s\","
               "\"seconds\":%.1f,\"copied\":%zu,\"removed\":%zu,\"not_pruned\":%zu,"
               "\"errors\":%zu}\n",
               switched ? "true" : "false", switched ? rb->nw->epoch : rb->old->epoch, seconds,
               r->copied, r->removed, r->skipped, r->errors);
    else if (switched)
        printf("ring rebalance: done in %.1f s, %zu copies made, %zu old copies removed, %zu "
               "errors\n",
               seconds, r->copied, r->removed, r->errors);
}

static int ring_move(const struct config *cfg, const struct ring_move_args *a)
{
    const char *op = a->execute ? "rebalance" : "plan";
    struct runtime rt = {0};
    struct ring *nw = NULL;
    struct rebalance rb = {0};
    struct progress *p = NULL;
    char err[1024];
    int64_t t0 = time_mono_us();
    int rc;

    rc = ring_configured(cfg, &nw);
    if (rc == OK)
        rc = runtime_open(cfg, RT_META, &rt);
    if (rc != OK)
        goto out;
    p = progress_new(op, a->json, a->json ? stdout : stderr);
    rc = rebalance_open(&rt, nw, &rb, p, err, sizeof(err));
    if (rc != OK) {
        fprintf(stderr, "tessera ring: %s\n", err);
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
        printf("{\"op\":\"rebalance\",\"event\":\"switched\",\"epoch\":\"%s\","
               "\"previous\":\"%s\",\"follow_ms\":%ld}\n",
               nw->epoch, rb.old->epoch, follow_ms);
    else
        printf("ring rebalance: epoch %s in force (reads fall back to epoch %s until the move "
               "is done); waiting %.1f s for the services to follow\n",
               nw->epoch, rb.old->epoch, (double)follow_ms / 1000);
    fflush(stdout);
    usleep((useconds_t)follow_ms * 1000);
    rc = rebalance_relist(&rb, p);
    if (rc != OK) {
        fprintf(stderr, "tessera ring: every shard must be listed to move blobs safely; the "
                        "move stays unfinished (reads fall back): run it again\n");
        goto out;
    }
    rebalance_copy(&rb, a->rate, p);
    rc = rebalance_finish(&rb);
    if (rc != OK) {
        if (rb.res.errors > 0)
            fprintf(stderr,
                    "tessera ring: %zu copies failed: the move stays unfinished (reads fall "
                    "back to the old ring); run it again\n",
                    rb.res.errors);
        ring_print_done(&rb, false, (double)(time_mono_us() - t0) / 1e6, a->json);
        goto out;
    }
    if (a->json)
        printf("{\"op\":\"rebalance\",\"event\":\"moved\",\"epoch\":\"%s\","
               "\"prune_in_s\":%ld}\n",
               nw->epoch, a->wait_s);
    else
        printf("ring rebalance: every blob on its new homes; old copies removed in %ld s\n",
               a->wait_s);
    fflush(stdout);
    if (a->wait_s > 0)
        sleep((unsigned)a->wait_s);
    rebalance_prune(&rb, p);
    ring_print_done(&rb, true, (double)(time_mono_us() - t0) / 1e6, a->json);
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

int ring_cmd(const struct config *cfg, int argc, char **argv)
{
    const char *sub = argc >= 2 ? argv[1] : "";
    struct ring_move_args a = {false, false, 0, 5};
    int rc;

    if (strcmp(sub, "simulate") == 0)
        return ring_simulate(argc, argv);
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--rate") == 0 && i + 1 < argc)
            a.rate = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--wait") == 0 && i + 1 < argc)
            a.wait_s = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--json") == 0)
            a.json = true;
        else
            sub = "?";
    }
    if (strcmp(sub, "show") == 0)
        rc = ring_show(cfg);
    else if (strcmp(sub, "apply") == 0)
        rc = ring_apply(cfg);
    else if (strcmp(sub, "plan") == 0)
        rc = ring_move(cfg, &a);
    else if (strcmp(sub, "rebalance") == 0) {
        a.execute = true;
        rc = ring_move(cfg, &a);
    } else {
        fprintf(stderr,
                "usage: tessera ring show | apply | plan [--json] | rebalance [--rate KEYS_PER_S] "
                "[--wait S] [--json] | simulate ...\n"
                "  the ring in force is recorded in the metadata store; plan, rebalance and "
                "apply move it to the configured storage.shards\n");
        return 2;
    }
    return rc == OK ? 0 : 1;
}
