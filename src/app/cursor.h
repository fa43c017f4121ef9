/*
 * cursor.h - the opaque listing cursor: a position in the newest-first order.
 *
 * Deterministic authenticated encryption (SIV) of the seq of the last image
 * of a page under a secret of the deployment: a cursor that was not made
 * with the secret (edited, truncated, invented) is refused (400), and a
 * cursor reveals nothing of the upload counter. One spelling per position.
 */
#ifndef APP_CURSOR_H
#define APP_CURSOR_H

#include <stddef.h>
#include <stdint.h>

#define CURSOR_KEY_LEN 32
#define CURSOR_LEN     32 /* "c2" + base64url of 20 bytes (27) + NUL, rounded */

/* cursor_encode writes the cursor for seq (> 0) under key into out. Pure; thread-safe. */
void cursor_encode(const uint8_t key[CURSOR_KEY_LEN], int64_t seq, char out[CURSOR_LEN]);

/* cursor_decode reads the len bytes at s under key: OK with *seq > 0, or E_INVALID. */
int cursor_decode(const uint8_t key[CURSOR_KEY_LEN], const char *s, size_t len, int64_t *seq);

#endif
