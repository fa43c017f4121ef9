/*
 * sign.h - signed transform URLs (/i/{id}/t/{ops}.{ext}?s=SIG) made by the
 * service itself: for `tessera sign` and for the srcset of API answers.
 */
#ifndef APP_SIGN_H
#define APP_SIGN_H

#include "core/str.h"

#include <stddef.h>

struct config;

#define SIGN_PATH_MAX 160 /* "/i/{id}/t/{canonical}?s={sig}" and a NUL */

/*
 * sign_path writes the signed canonical form of path ("/i/{id}/t/{ops}.{ext}",
 * a query string ignored) into out (capacity cap >= SIGN_PATH_MAX), signed
 * with the first configured key (list the newest first while rotating).
 * OK; E_INVALID with err (capacity ecap) naming the key or "path" for a
 * malformed one; E_NOTFOUND when no key is configured. Thread-safe.
 */
int sign_path(const struct config *cfg, struct str path, char *out, size_t cap, char *err,
              size_t ecap);

#endif
