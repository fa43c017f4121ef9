/*
 * cursor.h - the opaque listing cursor: a position in the newest-first order.
 *
 * Encodes the seq of the last image of a page with a check value, so a cursor
 * that was not made here (edited, truncated, invented) is refused (400).
 */
#ifndef SERVICES_CURSOR_H
#define SERVICES_CURSOR_H

#include <stddef.h>
#include <stdint.h>

#define CURSOR_LEN 20 /* "c1" + base64url of 12 bytes (16) + NUL, rounded */

/* cursor_encode writes the cursor for seq into out. */
void cursor_encode(int64_t seq, char out[CURSOR_LEN]);

/* cursor_decode reads a cursor; OK with *seq > 0, or E_INVALID. */
int cursor_decode(const char *s, size_t len, int64_t *seq);

#endif
