/*
 * sign.c - signed transform URLs: the same parse, canonical form and HMAC
 * as the check in services/api.c, so a URL made here is always accepted.
 */
#include "app/sign.h"

#include "config/config.h"
#include "core/err.h"
#include "core/ident.h"
#include "image/ops.h"

#include <stdio.h>
#include <string.h>

int sign_path(const struct config *cfg, struct str path, char *out, size_t cap, char *err,
              size_t ecap)
{
    const struct ops_limits lim = {(uint32_t)cfg->transforms.max_dimension,
                                   (uint64_t)cfg->limits.max_pixels};
    const char *q = memchr(path.p, '?', path.len);
    size_t len = q ? (size_t)(q - path.p) : path.len;
    const char *id, *slash, *dot;
    char idbuf[IMAGE_ID_MAX + 1], canon[OPS_CANON_MAX], sig[OPS_SIG_LEN + 1];
    struct img_ops o;
    struct str ops, ext;
    int rc;

    if (cfg->n_transform_keys == 0) {
        snprintf(err, ecap, "transforms.keys: no signing key is configured");
        return E_NOTFOUND;
    }
    /* /i/{id}/t/{ops}.{ext} */
    if (len < 3 || memcmp(path.p, "/i/", 3) != 0)
        goto bad;
    id = path.p + 3;
    slash = memchr(id, '/', len - 3);
    if (slash == NULL || !image_id_valid(id, (size_t)(slash - id)) ||
        (size_t)(path.p + len - slash) < 4 || memcmp(slash, "/t/", 3) != 0)
        goto bad;
    ops = (struct str){slash + 3, (size_t)(path.p + len - slash - 3)};
    if (memchr(ops.p, '/', ops.len) != NULL)
        goto bad;
    dot = memrchr(ops.p, '.', ops.len);
    ext = dot ? (struct str){dot + 1, (size_t)(ops.p + ops.len - dot - 1)} : (struct str){"", 0};
    ops.len = dot ? (size_t)(dot - ops.p) : ops.len;
    rc = img_ops_parse(ops, ext, &lim, &o, err, ecap);
    if (rc != OK)
        return rc;
    snprintf(idbuf, sizeof(idbuf), "%.*s", (int)(slash - id), id);
    img_ops_canonical(&o, canon, sizeof(canon));
    img_ops_sign(cfg->transform_key[0], strlen(cfg->transform_key[0]), idbuf, canon, sig);
    snprintf(out, cap, "/i/%s/t/%s?s=%s", idbuf, canon, sig);
    return OK;
bad:
    snprintf(err, ecap, "path: expected /i/{id}/t/{ops}.{ext}");
    return E_INVALID;
}
