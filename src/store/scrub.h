/*
 * scrub.h - re-reading a storage node's blobs in the background: bit rot found before a
 * reader meets it.
 *
 * One thread walks the file:// store's listing in key order, one pass at most every
 * interval, hashing every blob at a bounded rate (bytes a second for the whole node). A copy
 * that does not hash to its key, or cannot be read, is moved to the quarantine directory: no
 * longer listed or served (readers get the other replicas, and `tessera repair` writes the
 * copy back from one of them), never deleted - it may be the last copy, whose bytes an
 * operator can still salvage. Nothing else is ever changed.
 */
#ifndef STORE_SCRUB_H
#define STORE_SCRUB_H

#include "store/blob.h"

#include <stddef.h>
#include <stdint.h>

struct scrubber;

/* scrub_found_fn is told of each copy moved to the quarantine (its size): the node's gauges. */
typedef void scrub_found_fn(void *arg, uint64_t size);

struct scrub_opts {
    struct blob_store *store; /* a file:// store, borrowed: outlives the scrubber */
    const char *quarantine;   /* directory on the store's filesystem (copied) */
    int64_t bytes_per_s;      /* > 0 */
    int64_t interval_ms;      /* between the starts of two passes */
    scrub_found_fn *found;    /* may be NULL */
    void *arg;
};

/*
 * scrub_start starts the scrubber thread (*out; scrub_stop ends it) and registers its
 * metrics: tessera_storage_scrub_{bytes,blobs,corrupt,passes}_total and
 * tessera_storage_scrub_pass_seconds. E_INVALID for a rate <= 0, E_IO if no thread.
 */
int scrub_start(const struct scrub_opts *o, struct scrubber **out);

/* scrub_stop ends the pass in progress at the next chunk read, joins and frees; NULL is fine. */
void scrub_stop(struct scrubber *s);

/*
 * scrub_quarantine_list fills out[0..*n) with at most cap copies in the quarantine dir
 * (key, size, mtime: when it was put aside), sorted by name; a dir that does not exist holds
 * none. E_IO if it cannot be read. Blocks.
 */
int scrub_quarantine_list(const char *dir, struct blob_entry *out, size_t cap, size_t *n);

#endif
