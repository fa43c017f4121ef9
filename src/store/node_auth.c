/*
 * node_auth.c - HMAC-SHA256 signatures of storage node requests.
 *
 * Invariant: the signed string names every part of the request that decides
 * what it reads or changes (method, path, query, body hash) and when it was
 * made, so a signature cannot be moved to another request or kept for later
 * (beyond NODE_AUTH_SKEW_S).
 */
#include "store/node_auth.h"

#include "core/codec.h"
#include "core/err.h"
#include "core/strbuf.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NODE_AUTH_TARGET_MAX (64 * 1024)

static void node_auth_mac(const struct secret *key, const char *method, const char *target,
                          const char *date, const char *sha, uint8_t mac[SHA256_LEN])
{
    struct strbuf sb;

    strbuf_init(&sb, NODE_AUTH_TARGET_MAX + 256);
    strbuf_addf(&sb, "TESSERA-HMAC-SHA256\n%s\n%s\n%s\n%s", method, target, date, sha);
    hmac_sha256(key->b, key->len, sb.buf ? sb.buf : "", sb.len, mac);
    strbuf_release(&sb);
}

void node_auth_sign(const struct secret *key, const char *method, const char *target,
                    const char *date, const char *sha, char out[NODE_AUTH_VALUE])
{
    uint8_t mac[SHA256_LEN];
    char hex[2 * SHA256_LEN + 1];

    node_auth_mac(key, method, target, date, sha, mac);
    hex_encode(mac, SHA256_LEN, hex);
    snprintf(out, NODE_AUTH_VALUE, "%s %s", NODE_AUTH_SCHEME, hex);
}

/* is_hex64 tells whether s is 64 lowercase hex digits. */
static bool is_hex64(const char *s)
{
    size_t i;

    for (i = 0; s[i] != '\0' && i < 65; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return i == 64;
}

int node_auth_check(const struct secret *keys, size_t n, const char *method, const char *target,
                    const char *date, const char *sha, const char *auth, int64_t now,
                    const char **why)
{
    size_t plen = strlen(NODE_AUTH_SCHEME);
    uint8_t given[SHA256_LEN], mac[SHA256_LEN];
    bool ok = false;
    char *end = NULL;
    long long ts;

    if (auth == NULL || date == NULL || sha == NULL) {
        *why = "unsigned request (Authorization, X-Tessera-Date and X-Tessera-Content-SHA256 "
               "are needed)";
        return E_UNAUTHORIZED;
    }
    if (strncmp(auth, NODE_AUTH_SCHEME, plen) != 0 || auth[plen] != ' ' ||
        !is_hex64(auth + plen + 1) ||
        hex_decode(auth + plen + 1, 64, given, sizeof(given)) != SHA256_LEN) {
        *why = "malformed Authorization (want Tessera-HMAC-SHA256 and 64 hex digits)";
        return E_UNAUTHORIZED;
    }
    if (!is_hex64(sha)) {
        *why = "malformed X-Tessera-Content-SHA256";
        return E_UNAUTHORIZED;
    }
    if (date[0] < '0' || date[0] > '9' || strlen(date) > 12) {
        *why = "malformed X-Tessera-Date (want Unix seconds)";
        return E_UNAUTHORIZED;
    }
    ts = strtoll(date, &end, 10);
    if (*end != '\0') {
        *why = "malformed X-Tessera-Date (want Unix seconds)";
        return E_UNAUTHORIZED;
    }
    if (ts < now - NODE_AUTH_SKEW_S || ts > now + NODE_AUTH_SKEW_S) {
        *why = "stale request (X-Tessera-Date more than 5 minutes from the node's clock)";
        return E_UNAUTHORIZED;
    }
    if (strlen(target) > NODE_AUTH_TARGET_MAX) {
        *why = "request target too long to verify";
        return E_UNAUTHORIZED;
    }
    for (size_t i = 0; i < n; i++) {
        if (keys[i].len == 0)
            continue;
        node_auth_mac(&keys[i], method, target, date, sha, mac);
        ok = ct_equal(mac, given, SHA256_LEN) || ok; /* every key tried: no early exit */
    }
    if (!ok) {
        *why = "wrong signature";
        return E_UNAUTHORIZED;
    }
    return OK;
}
