/*
 * node_auth.h - signed requests between the services and the storage nodes.
 *
 * A request carries X-Tessera-Date (Unix seconds), X-Tessera-Content-SHA256
 * (of its body; a PUT's body hashes to its key, a body-less request's to the
 * empty string) and Authorization: Tessera-HMAC-SHA256 <hex>, the HMAC-SHA256
 * under the shared secret of "TESSERA-HMAC-SHA256\n" METHOD "\n" TARGET "\n"
 * DATE "\n" SHA, TARGET being the request target as sent (path and query).
 * The protocol is docs/internals/storage.md ("Signed requests").
 */
#ifndef STORE_NODE_AUTH_H
#define STORE_NODE_AUTH_H

#include "core/crypto.h"

#include <stddef.h>
#include <stdint.h>

#define NODE_AUTH_SKEW_S   300 /* a date further than this from the node's clock is stale */
#define NODE_AUTH_DATE     "X-Tessera-Date"
#define NODE_AUTH_SHA      "X-Tessera-Content-SHA256"
#define NODE_AUTH_SCHEME   "Tessera-HMAC-SHA256"
#define NODE_AUTH_EMPTY    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define NODE_AUTH_VALUE    (sizeof(NODE_AUTH_SCHEME) + 2 * SHA256_LEN + 1)
#define NODE_AUTH_KEYS_MAX 2 /* the current secret and the previous one */

/*
 * node_auth_sign writes the Authorization value of a request (without the
 * header name) into out. target is the path and query as sent, date the
 * value of X-Tessera-Date, sha the 64 lowercase hex digits of
 * X-Tessera-Content-SHA256. Pure; thread-safe.
 */
void node_auth_sign(const struct secret *key, const char *method, const char *target,
                    const char *date, const char *sha, char out[NODE_AUTH_VALUE]);

/*
 * node_auth_check verifies a request's headers (any may be NULL: absent)
 * against each of the n keys (constant-time compare; every key is tried).
 * OK when one matches and date is within NODE_AUTH_SKEW_S of now;
 * E_UNAUTHORIZED otherwise, with *why a static sentence (it never quotes a
 * secret or a signature). Pure; thread-safe.
 */
int node_auth_check(const struct secret *keys, size_t n, const char *method, const char *target,
                    const char *date, const char *sha, const char *auth, int64_t now,
                    const char **why);

#endif
