/*
 * ring_state.c - reading and recording the ring in force (two settings rows).
 *
 * The description is written before the epoch: a reader that sees the new
 * epoch finds its description already there.
 */
#include "app/ring_state.h"

#include "core/err.h"
#include "core/log.h"
#include "core/xalloc.h"
#include "meta/meta.h"
#include "store/ring.h"

#include <stdlib.h>

int ring_state_record(struct meta_store *meta, const struct ring *ring)
{
    char *text = ring_describe(ring);
    int rc = meta_setting_set(meta, RING_STATE_CONFIG, text);

    free(text);
    if (rc == OK)
        rc = meta_setting_set(meta, RING_STATE_EPOCH, ring->epoch);
    if (rc != OK)
        log_error("ring", "cannot record the ring in the metadata store: %s", err_str(rc));
    return rc;
}

int ring_state_epoch(struct meta_store *meta, char *epoch, size_t cap)
{
    int rc = meta_setting_get(meta, RING_STATE_EPOCH, epoch, cap);

    if (rc != OK && rc != E_NOTFOUND)
        log_error("ring", "cannot read the recorded ring: %s", err_str(rc));
    return rc;
}

int ring_state_config(struct meta_store *meta, char **out)
{
    char *text = xmalloc(RING_STATE_MAX);
    int rc = meta_setting_get(meta, RING_STATE_CONFIG, text, RING_STATE_MAX);

    if (rc != OK) {
        free(text);
        text = NULL;
    }
    *out = text;
    return rc;
}

int ring_state_set_previous(struct meta_store *meta, const struct ring *prev)
{
    char *text = prev != NULL ? ring_describe(prev) : NULL;
    int rc = meta_setting_set(meta, RING_STATE_PREVIOUS, text != NULL ? text : "");

    free(text);
    if (rc != OK)
        log_error("ring", "cannot record the previous ring: %s", err_str(rc));
    return rc;
}

int ring_state_previous(struct meta_store *meta, char **out)
{
    char *text = xmalloc(RING_STATE_MAX);
    int rc = meta_setting_get(meta, RING_STATE_PREVIOUS, text, RING_STATE_MAX);

    if (rc == E_NOTFOUND) {
        text[0] = '\0';
        rc = OK;
    }
    if (rc != OK) {
        free(text);
        text = NULL;
    }
    *out = text;
    return rc;
}
