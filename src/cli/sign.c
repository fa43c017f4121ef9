/*
 * sign.c - `tessera sign PATH` prints the signed URL of a transform on the
 * public base URL (cdn.base_url, server.public_url or the listen address).
 * The key itself is never printed.
 */
#include "cli/sign.h"

#include "app/runtime.h"
#include "app/sign.h"
#include "config/config.h"
#include "core/err.h"

#include <stdio.h>
#include <string.h>

int sign_cmd(const struct config *cfg, int argc, char **argv)
{
    char base[512], out[SIGN_PATH_MAX], err[200];
    const char *path;
    int rc;

    if (argc != 2) {
        fprintf(stderr, "usage: tessera sign /i/{id}/t/{ops}.{ext}\n");
        return 2;
    }
    runtime_base_url(cfg, base, sizeof(base));
    path = argv[1];
    /* a full URL on the base is taken as its path */
    if (strncmp(path, base, strlen(base)) == 0 && path[strlen(base)] == '/')
        path += strlen(base);
    rc = sign_path(cfg, str_from(path), out, sizeof(out), err, sizeof(err));
    if (rc != OK) {
        fprintf(stderr, "tessera sign: %s\n", err);
        return rc == E_NOTFOUND ? 1 : 2;
    }
    printf("%s%s\n", base, out);
    return 0;
}
