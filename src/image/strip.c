/*
 * strip.c - lossless, byte-level metadata removal.
 *
 * Whole segments, chunks or blocks that carry EXIF, XMP, IPTC, comments or
 * text are dropped and everything else is copied byte for byte, so the image
 * data is never re-encoded. ICC profiles are kept. The output is never longer
 * than the input.
 */
#include "core/err.h"
#include "core/xalloc.h"
#include "image/image_int.h"

#include <stdlib.h>
#include <string.h>

/* JPEG: APP1 (Exif, XMP), APP13 (Photoshop/IPTC), COM, and APP2 unless ICC. */
static bool img_jpeg_drop(const uint8_t *p, const struct img_jpeg_seg *s)
{
    size_t len = s->end - s->payload;

    switch (s->marker) {
    case 0xE1:
    case 0xED:
    case 0xFE:
        return true;
    case 0xE2: /* MPF and FlashPix go; with no trailing images MPF means nothing */
        return !(len >= 12 && memcmp(p + s->payload, "ICC_PROFILE\0", 12) == 0);
    default:
        return false;
    }
}

static int img_strip_jpeg(const uint8_t *p, size_t n, uint8_t *out, size_t *o, bool *changed)
{
    struct img_jpeg_seg seg;
    size_t pos = 2;
    int rc;

    memcpy(out, p, 2);
    *o = 2;
    do {
        rc = img_jpeg_next(p, n, &pos, &seg, NULL);
        if (rc != OK)
            return rc;
        if (img_jpeg_drop(p, &seg)) {
            *changed = true;
            continue;
        }
        memcpy(out + *o, p + seg.start, seg.end - seg.start);
        *o += seg.end - seg.start;
    } while (seg.marker != 0xD9);
    if (pos != n) /* MPF secondary images after the EOI */
        *changed = true;
    return OK;
}

static bool img_png_drop(const uint8_t *type)
{
    /* eXIf (and the pre-standard exIf/zxIf), text, time; the APNG chunks too,
     * since only the still image is decoded and validated. */
    static const char *const drop[] = {"eXIf", "exIf", "zxIf", "tEXt", "zTXt", "iTXt",
                                       "tIME", "acTL", "fcTL", "fdAT", NULL};

    for (const char *const *d = drop; *d; d++)
        if (memcmp(type, *d, 4) == 0)
            return true;
    return false;
}

static int img_strip_png(const uint8_t *p, size_t n, uint8_t *out, size_t *o, bool *changed)
{
    size_t pos = 8;

    memcpy(out, p, 8);
    *o = 8;
    while (pos < n) {
        size_t len;

        if (n - pos < 12)
            return E_BADIMAGE;
        len = img_be32(p + pos);
        if (len > n - pos - 12)
            return E_BADIMAGE;
        if (img_png_drop(p + pos + 4)) {
            *changed = true;
        } else {
            memcpy(out + *o, p + pos, len + 12);
            *o += len + 12;
        }
        pos += len + 12;
    }
    return OK;
}

/* GIF: comments go, and application extensions except looping and ICC. */
static bool img_gif_drop(const uint8_t *p, const struct img_gif_block *b)
{
    static const char *const keep[] = {"NETSCAPE2.0", "ANIMEXTS1.0", "ICCRGBG1012", NULL};

    if (b->kind != 0x21)
        return false;
    if (b->label == 0xFE)
        return true;
    if (b->label != 0xFF)
        return false;
    if (b->end - b->start < 14 || p[b->start + 2] != 11)
        return true;
    for (const char *const *k = keep; *k; k++)
        if (memcmp(p + b->start + 3, *k, 11) == 0)
            return false;
    return true;
}

static int img_strip_gif(const uint8_t *p, size_t n, uint8_t *out, size_t *o, bool *changed)
{
    struct img_gif_block b;
    size_t pos = img_gif_body_start(p, n);
    int rc;

    if (pos >= n)
        return E_BADIMAGE;
    memcpy(out, p, pos);
    *o = pos;
    do {
        rc = img_gif_next(p, n, &pos, &b, NULL);
        if (rc != OK)
            return rc;
        if (img_gif_drop(p, &b)) {
            *changed = true;
            continue;
        }
        memcpy(out + *o, p + b.start, b.end - b.start);
        *o += b.end - b.start;
    } while (b.kind != 0x3B);
    return OK;
}

/* WebP: EXIF and XMP chunks go, their VP8X flags are cleared, the RIFF size is fixed. */
static int img_strip_webp(const uint8_t *p, size_t n, uint8_t *out, size_t *o, bool *changed)
{
    size_t pos = 12, total = (size_t)img_le32(p + 4) + 8;

    if (total > n)
        return E_BADIMAGE;
    memcpy(out, p, 12);
    *o = 12;
    while (pos < total) {
        size_t sz, whole;

        if (total - pos < 8)
            return E_BADIMAGE;
        sz = img_le32(p + pos + 4);
        if (sz > total - pos - 8)
            return E_BADIMAGE;
        whole = 8 + sz + (sz & 1);
        if (whole > total - pos)
            whole = total - pos; /* a missing pad byte at the very end */
        if (memcmp(p + pos, "EXIF", 4) == 0 || memcmp(p + pos, "XMP ", 4) == 0) {
            *changed = true;
        } else {
            memcpy(out + *o, p + pos, whole);
            if (memcmp(p + pos, "VP8X", 4) == 0 && sz >= 1 && (out[*o + 8] & 0x0C)) {
                out[*o + 8] &= (uint8_t)~0x0C;
                *changed = true;
            }
            *o += whole;
        }
        pos += whole;
    }
    if (*changed) {
        uint32_t riff = (uint32_t)(*o - 8);

        out[4] = (uint8_t)riff;
        out[5] = (uint8_t)(riff >> 8);
        out[6] = (uint8_t)(riff >> 16);
        out[7] = (uint8_t)(riff >> 24);
    }
    return OK;
}

int img_strip(enum img_format f, const uint8_t *p, size_t n, uint8_t **out, size_t *out_len)
{
    uint8_t *buf = NULL;
    size_t o = 0;
    bool changed = false;
    int rc = OK;

    *out = NULL;
    *out_len = 0;
    if (img_sniff(p, n) != f)
        return E_BADIMAGE;
    if (f != IMG_JPEG && f != IMG_PNG && f != IMG_GIF && f != IMG_WEBP)
        return OK;
    buf = xmalloc(n);
    switch (f) {
    case IMG_JPEG:
        rc = img_strip_jpeg(p, n, buf, &o, &changed);
        break;
    case IMG_PNG:
        rc = img_strip_png(p, n, buf, &o, &changed);
        break;
    case IMG_GIF:
        rc = img_strip_gif(p, n, buf, &o, &changed);
        break;
    case IMG_WEBP:
        rc = img_strip_webp(p, n, buf, &o, &changed);
        break;
    default:
        break;
    }
    if (rc != OK || !changed)
        goto out;
    *out = buf;
    *out_len = o;
    buf = NULL;
out:
    free(buf);
    return rc;
}
