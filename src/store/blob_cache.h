/*
 * blob_cache.h - a bounded local disk cache of a remote blob store's blobs.
 */
#ifndef STORE_BLOB_CACHE_H
#define STORE_BLOB_CACHE_H

#include "store/blob.h"

#include <stdint.h>

/*
 * blob_cache_open wraps inner (owned from now on, freed with the cache) in a
 * cache of at most cap bytes of blob copies under the absolute directory dir
 * (emptied first). Reads hit the local copy when there is one; writes,
 * listings and checks go to inner; a delete drops the copy too. Blobs larger
 * than cap / 8 are not kept. E_INVALID for a bad dir or cap 0, E_IO.
 */
int blob_cache_open(struct blob_store *inner, const char *dir, uint64_t cap,
                    struct blob_store **out);

#endif
