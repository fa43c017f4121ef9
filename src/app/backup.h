/*
 * backup.h - the blobs of a cluster copied to a backup target, and back into a new cluster.
 *
 * A blob never changes, so a backup is incremental by construction: it copies the keys the
 * target lacks and never rewrites, never deletes anything there (older backups stay whole).
 * A restore fills the empty storage of a new cluster whose metadata was restored first
 * (pgBackRest, docs/operations.md): every blob the restored metadata references and the
 * backup holds, then every image (and preset variant) still without its blob from the live
 * store when one is given; what is in neither is listed as missing.
 */
#ifndef APP_BACKUP_H
#define APP_BACKUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct runtime;
struct progress;
struct blob_store;
struct ring;

/*
 * backup_target_open opens the store at url (file:///abs/dir, s3+http(s)://host/bucket[/prefix]
 * or a storage node's http://host:port) as a one-shard ring with rt's options, and checks it
 * answers: a file:// directory must exist already (a backup disk that is not mounted is not
 * silently replaced by a directory on the root disk). E_INVALID bad url, E_UNAVAILABLE not
 * reachable or not writable; a sentence in err (capacity cap) in both cases.
 */
int backup_target_open(const struct runtime *rt, const char *url, struct blob_store **out,
                       char *err, size_t cap);

struct backup_result {
    size_t keys;      /* distinct blobs listed on the cluster */
    size_t present;   /* already in the target */
    size_t copied;    /* copied and verified */
    uint64_t bytes;   /* their bytes */
    size_t errors;    /* copies that failed (the target full stops the run) */
    size_t unlisted;  /* cluster shards that could not be listed */
    bool target_full; /* stopped: the target has no space left */
    double seconds;
};

/*
 * backup_run copies every blob listed on rt's ring (opened with RT_BLOBS | RT_RING) that
 * target lacks, each read from a copy that verifies (SHA-256) and written durably, reporting
 * phases "listing" and "copying" to p. OK when everything listed was copied or present;
 * E_NOSPACE when the target filled up (stopped at once); E_UNAVAILABLE when a shard or the
 * target could not be listed; E_IO when a copy failed. res is filled in every case. Blocks.
 */
int backup_run(const struct runtime *rt, struct blob_store *target, struct progress *p,
               struct backup_result *res);

struct restore_result {
    size_t listed;       /* blobs in the backup */
    size_t unreferenced; /* of them, not referenced by the restored metadata: left out */
    size_t copied;       /* from the backup */
    size_t from_live;    /* from the live store: made after the backup */
    uint64_t bytes;
    size_t images;  /* live images checked */
    size_t missing; /* image or variant blobs in neither: listed */
    size_t errors;
    double seconds;
};

/*
 * restore_run fills the storage of the ring nw (its shards must hold no blob, unless an
 * interrupted restore into the same ring is being resumed) from backup, for rt's metadata
 * (opened with RT_META: the restored database), then records nw as the ring in force.
 * live (NULL: none) is the old cluster's store, read for blobs the backup lacks. Reports
 * phases and every missing blob to p. E_EXISTS when nw's storage is not empty (a sentence in
 * err), E_UNAVAILABLE when a shard cannot be listed, E_IO when a blob is missing or a copy
 * failed; res is filled. Blocks.
 */
int restore_run(const struct runtime *rt, const struct ring *nw, struct blob_store *backup,
                struct blob_store *live, struct progress *p, char *err, size_t cap,
                struct restore_result *res);

#endif
