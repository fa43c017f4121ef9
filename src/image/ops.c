/*
 * ops.c - transform options: parse, canonical form, signature, plan.
 *
 * The parser is table-driven (API.md's table, in its order): the canonical
 * form walks the same table, so "the order of the table" is one fact here.
 * Every value is range-checked before it is stored; nothing is allocated.
 */
#include "image/ops.h"

#include "core/codec.h"
#include "core/crypto.h"
#include "core/err.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum ops_key { K_W, K_H, K_FIT, K_G, K_Q, K_DPR, K_UP, K_N };

static const char *const ops_keys[K_N] = {"w", "h", "fit", "g", "q", "dpr", "up"};
static const char *const fit_names[] = {"contain", "cover", "fill"};
static const char *const g_names[] = {"center", "attention", "entropy"};

static int ops_fail(char *err, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int ops_fail(char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
    return E_INVALID;
}

/* ops_number reads a plain decimal in [min, max]: no sign, no leading zero, at most 9 digits. */
static bool ops_number(struct str v, long min, long max, long *out)
{
    long n = 0;

    if (v.len == 0 || v.len > 9 || (v.p[0] == '0' && v.len > 1))
        return false;
    for (size_t i = 0; i < v.len; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return false;
        n = n * 10 + (v.p[i] - '0');
    }
    if (n < min || n > max)
        return false;
    *out = n;
    return true;
}

static int ops_name(struct str v, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (str_eq(v, names[i]))
            return (int)i;
    }
    return -1;
}

static enum img_format ops_ext(struct str ext, bool *is_auto)
{
    *is_auto = str_eq(ext, "auto");
    if (str_eq(ext, "webp"))
        return IMG_WEBP;
    if (str_eq(ext, "avif"))
        return IMG_AVIF;
    if (str_eq(ext, "jpg"))
        return IMG_JPEG;
    if (str_eq(ext, "png"))
        return IMG_PNG;
    return IMG_UNKNOWN;
}

/* ops_value stores the value v of key k into o; false when it is out of range or malformed. */
static bool ops_value(enum ops_key k, struct str v, const struct ops_limits *lim, struct img_ops *o)
{
    long n = 0;
    int i;

    switch (k) {
    case K_W:
    case K_H:
        if (!ops_number(v, 1, (long)lim->max_dimension, &n))
            return false;
        *(k == K_W ? &o->w : &o->h) = (uint32_t)n;
        return true;
    case K_FIT:
        i = ops_name(v, fit_names, 3);
        o->fit = (enum ops_fit)i;
        return i >= 0;
    case K_G:
        i = ops_name(v, g_names, 3);
        o->g = (enum ops_gravity)i;
        return i >= 0;
    case K_Q:
        if (!ops_number(v, 1, 100, &n))
            return false;
        o->q = (int)n;
        return true;
    case K_DPR:
        if (!ops_number(v, 1, OPS_DPR_MAX, &n))
            return false;
        o->dpr = (int)n;
        return true;
    case K_UP:
        if (!ops_number(v, 0, 1, &n))
            return false;
        o->up = n == 1;
        return true;
    case K_N:
        break;
    }
    return false;
}

static const char *ops_expect(enum ops_key k, const struct ops_limits *lim, char *buf, size_t cap)
{
    switch (k) {
    case K_W:
    case K_H:
        snprintf(buf, cap, "an integer from 1 to %u", lim->max_dimension);
        return buf;
    case K_FIT:
        return "contain, cover or fill";
    case K_G:
        return "center, attention or entropy";
    case K_Q:
        return "an integer from 1 to 100";
    case K_DPR:
        return "an integer from 1 to 4";
    case K_UP:
        return "0 or 1";
    case K_N:
        break;
    }
    return "";
}

int img_ops_parse(struct str ops, struct str ext, const struct ops_limits *lim, struct img_ops *out,
                  char *err, size_t cap)
{
    bool seen[K_N] = {false};
    bool is_auto = false;
    const char *p = ops.p, *end = ops.p + ops.len;
    char expect[48];

    memset(out, 0, sizeof(*out));
    out->dpr = 1;
    if (ops.len == 0)
        return ops_fail(err, cap, "w: give w or h (ops are key:value pairs joined by ',')");
    while (p <= end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *item_end = comma ? comma : end;
        const char *colon = memchr(p, ':', (size_t)(item_end - p));
        struct str key, val;
        int k;

        if (item_end == p)
            return ops_fail(err, cap, "ops: an empty item (pairs are joined by one ',')");
        if (colon == NULL)
            return ops_fail(err, cap, "%.*s: not key:value",
                            (int)(item_end - p > 16 ? 16 : item_end - p), p);
        key = (struct str){p, (size_t)(colon - p)};
        val = (struct str){colon + 1, (size_t)(item_end - colon - 1)};
        k = ops_name(key, ops_keys, K_N);
        if (k < 0)
            return ops_fail(err, cap, "%.*s: unknown key (w, h, fit, g, q, dpr, up)",
                            (int)(key.len > 16 ? 16 : key.len), key.p);
        if (seen[k])
            return ops_fail(err, cap, "%s: given twice", ops_keys[k]);
        seen[k] = true;
        if (!ops_value((enum ops_key)k, val, lim, out))
            return ops_fail(err, cap, "%s: must be %s", ops_keys[k],
                            ops_expect((enum ops_key)k, lim, expect, sizeof(expect)));
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    out->format = ops_ext(ext, &is_auto);
    if (out->format == IMG_UNKNOWN && !is_auto)
        return ops_fail(err, cap, "ext: must be webp, avif, jpg, png or auto");
    if (out->w == 0 && out->h == 0)
        return ops_fail(err, cap, "w: give w or h (or both)");
    if (out->fit != OPS_FIT_CONTAIN && (out->w == 0 || out->h == 0))
        return ops_fail(err, cap, "fit: %s needs both w and h", fit_names[out->fit]);
    if (seen[K_G] && out->fit != OPS_FIT_COVER)
        return ops_fail(err, cap, "g: only with fit:cover");
    if (out->w > 0 && out->h > 0 &&
        (uint64_t)out->w * out->h * (uint64_t)(out->dpr * out->dpr) > lim->max_pixels)
        return ops_fail(err, cap, "w: %ux%u at dpr %d is over %llu pixels", out->w, out->h,
                        out->dpr, (unsigned long long)lim->max_pixels);
    return OK;
}

void img_ops_canonical(const struct img_ops *o, char *out, size_t cap)
{
    char buf[OPS_CANON_MAX];
    size_t n = 0;

    /* the table's order; fit, g, dpr and up only when not their default */
    if (o->w > 0)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, ",w:%u", o->w);
    if (o->h > 0)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, ",h:%u", o->h);
    if (o->fit != OPS_FIT_CONTAIN)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, ",fit:%s", fit_names[o->fit]);
    if (o->g != OPS_G_CENTER)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, ",g:%s", g_names[o->g]);
    if (o->q > 0)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, ",q:%d", o->q);
    if (o->dpr > 1)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, ",dpr:%d", o->dpr);
    if (o->up)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, ",up:1");
    snprintf(out, cap, "%s.%s", buf + 1,
             o->format == IMG_UNKNOWN ? "auto" : img_format_ext(o->format));
}

void img_ops_sign(const void *key, size_t klen, const char *id, const char *canonical,
                  char out[OPS_SIG_LEN + 1])
{
    uint8_t mac[SHA256_LEN];
    char path[160], enc[64];
    int n = snprintf(path, sizeof(path), "/i/%s/t/%s", id, canonical);

    hmac_sha256(key, klen, path, n > 0 && (size_t)n < sizeof(path) ? (size_t)n : 0, mac);
    b64url_encode(mac, SHA256_LEN, enc); /* 43 characters */
    memcpy(out, enc, OPS_SIG_LEN);
    out[OPS_SIG_LEN] = '\0';
}

bool img_ops_sig_ok(char *const *keys, size_t n, const char *id, const char *canonical,
                    const char *sig)
{
    char want[OPS_SIG_LEN + 1];
    bool ok = false;

    if (sig == NULL || strlen(sig) != OPS_SIG_LEN)
        return false;
    for (size_t i = 0; i < n; i++) {
        img_ops_sign(keys[i], strlen(keys[i]), id, canonical, want);
        ok |= ct_equal(want, sig, OPS_SIG_LEN);
    }
    return ok;
}

/* ---- plan ---- */

static int ops_default_quality(enum img_format f)
{
    return f == IMG_AVIF ? 55 : f == IMG_JPEG ? 82 : 80;
}

static uint32_t ops_round(double v)
{
    double r = floor(v + 0.5);
    return r < 1 ? 1 : r > 1e9 ? 1000000000u : (uint32_t)r;
}

/* ops_load_scale is the shrink-on-load factor (<= 1) a loader decodes f at to cover scale. */
static double ops_load_scale(enum img_format f, double scale)
{
    if (scale >= 1)
        return 1;
    if (f == IMG_WEBP)
        return scale;
    if (f == IMG_JPEG) {
        /* libjpeg's DCT scaling: the largest 1/8, 1/4, 1/2 that still covers the target */
        for (int s = 8; s > 1; s /= 2) {
            if (1.0 / s >= scale)
                return 1.0 / s;
        }
    }
    return 1;
}

int img_ops_plan(const struct img_ops *o, const struct img_source *src,
                 const struct ops_limits *lim, struct img_plan *plan, char *err, size_t cap)
{
    double sw = src->width ? src->width : 1, sh = src->height ? src->height : 1;
    double bw = (double)o->w * o->dpr, bh = (double)o->h * o->dpr;
    double scale, ow, oh;
    uint64_t frames, bytes_per_band, decoded;

    memset(plan, 0, sizeof(*plan));
    if (o->fit == OPS_FIT_CONTAIN) {
        double sx = o->w ? bw / sw : HUGE_VAL, sy = o->h ? bh / sh : HUGE_VAL;
        scale = sx < sy ? sx : sy;
        if (!o->up && scale > 1)
            scale = 1;
        ow = sw * scale;
        oh = sh * scale;
        plan->width = ops_round(ow);
        plan->height = ops_round(oh);
    } else {
        /* without up, a box larger than the source shrinks (same aspect) until it fits */
        double over = bw / sw > bh / sh ? bw / sw : bh / sh;
        if (!o->up && over > 1) {
            bw /= over;
            bh /= over;
        }
        plan->width = ops_round(bw);
        plan->height = ops_round(bh);
        if (o->fit == OPS_FIT_COVER) {
            scale = over > 1 && !o->up ? 1 : over;
            plan->scaled_w = ops_round(sw * scale);
            plan->scaled_h = ops_round(sh * scale);
            if (plan->scaled_w < plan->width)
                plan->scaled_w = plan->width;
            if (plan->scaled_h < plan->height)
                plan->scaled_h = plan->height;
        } else {
            scale = bw / sw > bh / sh ? bw / sw : bh / sh;
        }
    }
    if ((uint64_t)plan->width * plan->height > lim->max_pixels)
        return ops_fail(err, cap, "%s: the output %ux%u is over %llu pixels", o->w ? "w" : "h",
                        plan->width, plan->height, (unsigned long long)lim->max_pixels);
    plan->animated = src->frames > 1 && o->format == IMG_WEBP;
    plan->quality = o->q ? o->q : ops_default_quality(o->format);
    frames = plan->animated ? src->frames : 1;
    bytes_per_band = src->format == IMG_PNG || src->format == IMG_TIFF ? 2 : 1;
    {
        double ls = ops_load_scale(src->format, scale);
        double dw = ceil(sw * ls), dh = ceil(sh * ls);
        decoded = (uint64_t)dw * (uint64_t)dh * 4 * bytes_per_band * frames;
    }
    {
        uint64_t ow64 = plan->scaled_w ? plan->scaled_w : plan->width;
        uint64_t oh64 = plan->scaled_h ? plan->scaled_h : plan->height;
        plan->memory = decoded + ow64 * oh64 * 4 * frames + src->bytes + OPS_MEMORY_FIXED;
    }
    return OK;
}
