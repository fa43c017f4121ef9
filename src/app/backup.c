/*
 * backup.c - blobs to a backup target and back (backup.h).
 *
 * Both directions work from listings (store/ring_walk.h) and copy with ring_walk_verify +
 * ring_walk_copy: a copy is read from a source whose bytes hash to the key and written
 * durably, so a backup never holds a corrupt blob and a restore never writes one. Nothing
 * here deletes a blob anywhere.
 */
#include "app/backup.h"

#include "app/ring_state.h"
#include "app/runtime.h"
#include "core/codec.h"
#include "core/err.h"
#include "core/progress.h"
#include "core/xalloc.h"
#include "meta/meta.h"
#include "store/blob.h"
#include "store/blob_ring.h"
#include "store/ring.h"
#include "store/ring_walk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RESTORE_PAGE      1000
#define RESTORE_EPOCH_KEY "restore.epoch" /* the ring a restore is filling; "" once done */

int backup_target_open(const struct runtime *rt, const char *url, struct blob_store **out,
                       char *err, size_t cap)
{
    struct blob_ring_opts o;
    struct ring *ring = NULL;
    struct stat st;
    char *spec;
    int rc;

    *out = NULL;
    if (strncmp(url, "file://", 7) == 0 && (stat(url + 7, &st) != 0 || !S_ISDIR(st.st_mode))) {
        snprintf(err, cap, "backup target %s: no such directory (is the backup disk mounted?)",
                 url);
        return E_UNAVAILABLE;
    }
    spec = xmalloc(strlen(url) + sizeof("backup="));
    memcpy(spec, "backup=", 7);
    memcpy(spec + 7, url, strlen(url) + 1);
    rc = ring_parse(spec, 1, 1, &ring, err, cap);
    free(spec);
    if (rc != OK)
        return rc;
    runtime_ring_opts(rt, &o);
    rc = blob_ring_open(ring, &o, out);
    if (rc != OK) {
        ring_free(ring);
        snprintf(err, cap, "backup target %s cannot be opened: %s", url, err_str(rc));
        return rc;
    }
    if (blob_store_check(*out) != OK) {
        char why[256] = "";
        blob_store_why(*out, why, sizeof(why));
        snprintf(err, cap, "backup target %s is not reachable or not writable%s%s", url,
                 why[0] ? ": " : "", why);
        blob_store_free(*out);
        *out = NULL;
        return E_UNAVAILABLE;
    }
    return OK;
}

/* copy_key copies key from src (verified) to dst; its size into *bytes. */
static int copy_key(struct blob_store *src, struct blob_store *dst, const char *key,
                    uint64_t *bytes)
{
    struct stat st;
    int fd = -1;
    int rc = ring_walk_verify(src, key, &fd);

    if (rc != OK)
        return rc;
    rc = ring_walk_copy(dst, key, fd);
    if (rc == OK && fstat(fd, &st) == 0)
        *bytes = (uint64_t)st.st_size;
    close(fd);
    return rc;
}

int backup_run(const struct runtime *rt, struct blob_store *target, struct progress *p,
               struct backup_result *res)
{
    struct ring_listing live = {0}, have = {0};
    size_t todo = 0;
    uint64_t todo_bytes = 0;
    int64_t t0 = time_mono_us();
    int rc, trc;

    memset(res, 0, sizeof(*res));
    progress_note(p, "listing %zu shards and the target", blob_ring_ring(rt->blobs)->n);
    rc = ring_walk_list(rt->blobs, &live, p);
    for (size_t s = 0; s < live.nshards; s++)
        res->unlisted += !live.listed[s];
    trc = ring_walk_list(target, &have, p);
    if (trc != OK) {
        progress_note(p, "the target cannot be listed: nothing copied");
        rc = trc;
        goto out;
    }
    res->keys = live.nkeys;
    for (size_t i = 0, j; i < live.n; i = j) {
        j = ring_walk_group(&live, i);
        if (!ring_walk_has(&have, live.v[i].key)) {
            todo++;
            todo_bytes += live.v[i].size;
        }
    }
    res->present = res->keys - todo;
    /* written to the target's one shard itself: a full disk is E_NOSPACE there, not the
     * ring's "no quorum" */
    struct blob_store *dst = blob_ring_shard(target, 0);
    progress_phase(p, "copying", todo, todo_bytes);
    for (size_t i = 0, j; i < live.n; i = j) {
        uint64_t bytes = 0;
        j = ring_walk_group(&live, i);
        if (ring_walk_has(&have, live.v[i].key))
            continue;
        int crc = copy_key(rt->blobs, dst, live.v[i].key, &bytes);
        if (crc == E_NOSPACE || crc == E_FULL) {
            progress_note(p, "%s: the target is full: stopped (%zu blobs copied)", live.v[i].key,
                          res->copied);
            res->target_full = true;
            res->errors++;
            rc = E_NOSPACE;
            break;
        }
        if (crc != OK) {
            progress_note(p, "%s: not copied: %s", live.v[i].key, err_str(crc));
            res->errors++;
        } else {
            res->copied++;
            res->bytes += bytes;
        }
        progress_add(p, 1, bytes);
    }
    progress_flush(p);
    if (rc == OK && res->errors > 0)
        rc = E_IO;
out:
    res->seconds = (double)(time_mono_us() - t0) / 1e6;
    ring_walk_release(&live);
    ring_walk_release(&have);
    return rc;
}

/* restore_begin refuses storage that holds blobs, unless a restore into nw is resumed. */
static int restore_begin(const struct runtime *rt, const struct ring *nw, struct blob_store *dst,
                         struct progress *p, char *err, size_t cap)
{
    struct ring_listing l = {0};
    char doing[64] = "";
    int rc;

    if (meta_setting_get(rt->meta, RESTORE_EPOCH_KEY, doing, sizeof(doing)) == OK &&
        strcmp(doing, nw->epoch) == 0) {
        progress_note(p, "resuming the restore into epoch %s", nw->epoch);
        return OK;
    }
    rc = ring_walk_list(dst, &l, p);
    if (rc != OK) {
        snprintf(err, cap, "every shard of the new cluster must answer to check it is empty");
    } else if (l.n > 0) {
        snprintf(err, cap,
                 "the new cluster's storage is not empty (shard %s holds blob %s, %zu copies "
                 "in all): a restore only fills empty storage",
                 nw->shards[l.v[0].shard].id, l.v[0].key, l.n);
        rc = E_EXISTS;
    }
    ring_walk_release(&l);
    if (rc == OK)
        rc = meta_setting_set(rt->meta, RESTORE_EPOCH_KEY, nw->epoch);
    if (rc == OK)
        rc = ring_state_set_previous(rt->meta, NULL);
    if (rc == OK)
        rc = ring_state_record(rt->meta, nw);
    return rc;
}

/* restore_key makes sure key is on dst: already there, else from live; false if missing. */
static bool restore_key(struct blob_store *dst, struct blob_store *live, const char *what,
                        const char *key, struct progress *p, struct restore_result *res)
{
    bool there = false;
    uint64_t bytes = 0;

    if (blob_exists(dst, key, &there) == OK && there)
        return true;
    if (live != NULL && copy_key(live, dst, key, &bytes) == OK) {
        progress_note(p, "%s: blob %s not in the backup: copied from the live store", what, key);
        res->from_live++;
        res->bytes += bytes;
        return true;
    }
    progress_note(p, "%s: blob %s is in neither the backup nor %s: missing", what, key,
                  live != NULL ? "the live store" : "(no --live store given)");
    res->missing++;
    return false;
}

/* restore_check walks every live image of the restored metadata and its preset variants. */
static int restore_check(const struct runtime *rt, struct blob_store *dst, struct blob_store *live,
                         struct progress *p, struct restore_result *res)
{
    const struct config *cfg = rt->cfg;
    struct image_rec *imgs = xmalloc(RESTORE_PAGE * sizeof(*imgs));
    int64_t before = 0;
    size_t n = 0;
    char what[128];
    int rc;

    progress_phase(p, "checking", 0, 0);
    do {
        rc = meta_image_list(rt->meta, before, RESTORE_PAGE, imgs, &n);
        for (size_t i = 0; rc == OK && i < n; i++) {
            res->images++;
            snprintf(what, sizeof(what), "image %s", imgs[i].id);
            restore_key(dst, live, what, imgs[i].key, p, res);
            for (size_t v = 0; v < cfg->n_variants; v++) {
                struct variant_rec vr;
                if (meta_variant_get(rt->meta, imgs[i].id, cfg->variant[v].name, &vr) != OK)
                    continue;
                snprintf(what, sizeof(what), "image %s variant %s", imgs[i].id, vr.name);
                restore_key(dst, live, what, vr.key, p, res);
            }
            progress_add(p, 1, 0);
        }
        if (n > 0)
            before = imgs[n - 1].seq;
    } while (rc == OK && n == RESTORE_PAGE);
    free(imgs);
    progress_flush(p);
    return rc;
}

int restore_run(const struct runtime *rt, const struct ring *nw, struct blob_store *backup,
                struct blob_store *live, struct progress *p, char *err, size_t cap,
                struct restore_result *res)
{
    struct blob_ring_opts o;
    struct blob_store *dst = NULL;
    struct ring_listing l = {0};
    struct ring *copy = NULL;
    char *text = ring_describe(nw);
    int64_t t0 = time_mono_us();
    int rc;

    memset(res, 0, sizeof(*res));
    runtime_ring_opts(rt, &o);
    rc = ring_parse_described(text, &copy, err, cap);
    free(text);
    if (rc == OK)
        rc = blob_ring_open(copy, &o, &dst);
    if (rc != OK) {
        ring_free(copy);
        goto out;
    }
    rc = restore_begin(rt, nw, dst, p, err, cap);
    if (rc != OK)
        goto out;
    rc = ring_walk_list(backup, &l, p);
    if (rc != OK) {
        snprintf(err, cap, "the backup cannot be listed: %s", err_str(rc));
        goto out;
    }
    res->listed = l.nkeys;
    progress_phase(p, "copying", l.nkeys, 0);
    for (size_t i = 0, j; i < l.n; i = j) {
        int64_t refs = 0;
        uint64_t bytes = 0;
        bool there = false;
        j = ring_walk_group(&l, i);
        progress_add(p, 1, l.v[i].size);
        if (meta_blob_refs(rt->meta, l.v[i].key, &refs) != OK) {
            res->errors++;
            continue;
        }
        if (refs <= 0) {
            res->unreferenced++; /* an image after the restored point, or deleted before it */
            continue;
        }
        if (blob_exists(dst, l.v[i].key, &there) == OK && there)
            continue; /* a resumed restore */
        int crc = copy_key(backup, dst, l.v[i].key, &bytes);
        if (crc != OK) {
            progress_note(p, "%s: not restored from the backup: %s", l.v[i].key, err_str(crc));
            res->errors++;
            continue;
        }
        res->copied++;
        res->bytes += bytes;
    }
    progress_flush(p);
    if (restore_check(rt, dst, live, p, res) != OK)
        res->errors++;
    if (res->missing > 0 || res->errors > 0)
        rc = E_IO;
    else
        rc = meta_setting_set(rt->meta, RESTORE_EPOCH_KEY, "");
out:
    res->seconds = (double)(time_mono_us() - t0) / 1e6;
    ring_walk_release(&l);
    blob_store_free(dst);
    return rc;
}
