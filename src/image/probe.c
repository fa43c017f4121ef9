/*
 * probe.c - structure walks over an upload's bytes, before any decode.
 *
 * For each format: the declared size and frame count (so the limits are
 * applied before a decoder allocates anything), and where the image ends, so a
 * file with bytes after it (a polyglot) is refused. Every read is bounds-checked
 * against n; nothing here allocates.
 */
#include "core/err.h"
#include "image/image_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* BMP writers may pad the file to an even or 4-byte size after the pixels. */
#define IMG_BMP_SLACK 3

void img_errf(struct img_error *err, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
}

static int img_trailing(struct img_error *err, const char *what, size_t end, size_t n)
{
    img_errf(err, "%zu unexpected bytes after the end of the %s image", n - end, what);
    return E_BADIMAGE;
}

static int img_truncated(struct img_error *err, const char *what)
{
    img_errf(err, "%s image is truncated", what);
    return E_BADIMAGE;
}

int img_check_limits(uint64_t w, uint64_t h, uint64_t frames, const struct img_limits *lim,
                     struct img_error *err)
{
    uint64_t px = w * h; /* both fit in 32 bits */
    uint64_t all;

    if (w == 0 || h == 0) {
        img_errf(err, "image declares an empty size (%llux%llu)", (unsigned long long)w,
                 (unsigned long long)h);
        return E_BADIMAGE;
    }
    if (px > lim->max_pixels) {
        img_errf(err, "image is %llux%llu (%llu pixels), over the limit of %llu",
                 (unsigned long long)w, (unsigned long long)h, (unsigned long long)px,
                 (unsigned long long)lim->max_pixels);
        return E_BADIMAGE;
    }
    if (frames > lim->max_frames) {
        img_errf(err, "animation has %llu frames, over the limit of %llu",
                 (unsigned long long)frames, (unsigned long long)lim->max_frames);
        return E_BADIMAGE;
    }
    if (__builtin_mul_overflow(px, frames, &all) || all > lim->max_animation_pixels) {
        img_errf(err,
                 "animation is %llux%llu with %llu frames (%llu pixels), over the limit of %llu",
                 (unsigned long long)w, (unsigned long long)h, (unsigned long long)frames,
                 (unsigned long long)(px * frames), (unsigned long long)lim->max_animation_pixels);
        return E_BADIMAGE;
    }
    return OK;
}

/* ---- JPEG ---- */

static bool img_jpeg_is_sof(uint8_t m)
{
    return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
}

int img_jpeg_next(const uint8_t *p, size_t n, size_t *pos, struct img_jpeg_seg *seg,
                  struct img_error *err)
{
    size_t i = *pos;
    size_t len;
    uint8_t m;

    if (i >= n)
        return img_truncated(err, "jpeg");
    if (p[i] != 0xFF) {
        img_errf(err, "jpeg has no marker at offset %zu", i);
        return E_BADIMAGE;
    }
    while (i + 1 < n && p[i + 1] == 0xFF) /* fill bytes */
        i++;
    if (i + 1 >= n)
        return img_truncated(err, "jpeg");
    m = p[i + 1];
    seg->marker = m;
    seg->start = i;
    if (m == 0xD9 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {
        seg->payload = seg->end = i + 2;
        *pos = seg->end;
        return OK;
    }
    if (m == 0x00 || m == 0xD8) {
        img_errf(err, "jpeg has an invalid marker 0x%02X at offset %zu", m, i);
        return E_BADIMAGE;
    }
    if (i + 4 > n)
        return img_truncated(err, "jpeg");
    len = img_be16(p + i + 2);
    if (len < 2) {
        img_errf(err, "jpeg segment at offset %zu has an invalid length", i);
        return E_BADIMAGE;
    }
    if (len > n - i - 2)
        return img_truncated(err, "jpeg");
    seg->payload = i + 4;
    seg->end = i + 2 + len;
    if (m == 0xDA) {
        /* Entropy-coded data runs to the first marker that is not a stuffed
         * zero (FF00), a restart marker (RSTn) or a fill byte. */
        size_t j = seg->end;
        for (;;) {
            const uint8_t *ff = memchr(p + j, 0xFF, n - j);
            uint8_t c;

            if (ff == NULL)
                return img_truncated(err, "jpeg");
            j = (size_t)(ff - p);
            if (j + 1 >= n)
                return img_truncated(err, "jpeg");
            c = p[j + 1];
            if (c == 0x00 || (c >= 0xD0 && c <= 0xD7))
                j += 2;
            else if (c == 0xFF)
                j += 1;
            else
                break;
        }
        seg->end = j;
    }
    *pos = seg->end;
    return OK;
}

static int img_probe_jpeg(const uint8_t *p, size_t n, struct img_probe *pr, struct img_error *err)
{
    struct img_jpeg_seg seg;
    size_t pos = 2;
    bool sof = false, sos = false, mpf = false;
    int rc;

    for (;;) {
        rc = img_jpeg_next(p, n, &pos, &seg, err);
        if (rc != OK)
            return rc;
        if (seg.marker == 0xD9)
            break;
        if (img_jpeg_is_sof(seg.marker)) {
            if (sof) {
                img_errf(err, "jpeg has two frame headers");
                return E_BADIMAGE;
            }
            if (seg.end - seg.payload < 6) {
                img_errf(err, "jpeg frame header is too short");
                return E_BADIMAGE;
            }
            pr->height = img_be16(p + seg.payload + 1);
            pr->width = img_be16(p + seg.payload + 3);
            if (pr->width == 0 || pr->height == 0) {
                img_errf(err, "jpeg declares a %ux%u image", pr->width, pr->height);
                return E_BADIMAGE;
            }
            sof = true;
        } else if (seg.marker == 0xE2 && seg.end - seg.payload >= 4 &&
                   memcmp(p + seg.payload, "MPF\0", 4) == 0) {
            mpf = true;
        } else if (seg.marker == 0xDA) {
            if (!sof) {
                img_errf(err, "jpeg has a scan before its frame header");
                return E_BADIMAGE;
            }
            sos = true;
        }
    }
    if (!sos) {
        img_errf(err, "jpeg has no image data");
        return E_BADIMAGE;
    }
    /*
     * Multi-Picture files (MPF in APP2: Android Ultra HDR, iPhone gain maps,
     * MPO) carry their secondary JPEGs after the primary's EOI. They are not
     * refused: img_strip stops at the EOI and drops the MPF segment, so the
     * stored bytes end with the image that was decoded.
     */
    if (seg.end != n && !(mpf && n - seg.end >= 3 && p[seg.end] == 0xFF && p[seg.end + 1] == 0xD8 &&
                          p[seg.end + 2] == 0xFF))
        return img_trailing(err, "jpeg", seg.end, n);
    pr->trailing_mpf = seg.end != n;
    pr->frames = 1;
    return OK;
}

/* ---- PNG ---- */

static bool img_png_type_ok(const uint8_t *t)
{
    for (int i = 0; i < 4; i++)
        if (!((t[i] >= 'A' && t[i] <= 'Z') || (t[i] >= 'a' && t[i] <= 'z')))
            return false;
    return true;
}

static int img_probe_png(const uint8_t *p, size_t n, struct img_probe *pr, struct img_error *err)
{
    size_t pos = 8;
    bool first = true;

    for (;;) {
        uint32_t len;
        const uint8_t *type;

        if (n - pos < 12)
            return img_truncated(err, "png");
        len = img_be32(p + pos);
        type = p + pos + 4;
        if (len > 0x7FFFFFFFu || !img_png_type_ok(type)) {
            img_errf(err, "png has an invalid chunk at offset %zu", pos);
            return E_BADIMAGE;
        }
        if (len > n - pos - 12)
            return img_truncated(err, "png");
        if (first) {
            if (memcmp(type, "IHDR", 4) != 0 || len != 13) {
                img_errf(err, "png does not start with its header chunk");
                return E_BADIMAGE;
            }
            pr->width = img_be32(p + pos + 8);
            pr->height = img_be32(p + pos + 12);
            if (pr->width == 0 || pr->height == 0 || pr->width > 0x7FFFFFFFu ||
                pr->height > 0x7FFFFFFFu) {
                img_errf(err, "png declares an invalid size %ux%u", pr->width, pr->height);
                return E_BADIMAGE;
            }
            first = false;
        }
        pos += 12 + (size_t)len;
        if (memcmp(type, "IEND", 4) == 0)
            break;
    }
    if (pos != n)
        return img_trailing(err, "png", pos, n);
    /* APNG animation chunks are removed by img_strip: the stored file is the
     * still image libvips decoded, so one frame. */
    pr->frames = 1;
    return OK;
}

/* ---- GIF ---- */

static size_t img_gif_table(uint8_t flags)
{
    return (flags & 0x80) ? (size_t)3 << ((flags & 7) + 1) : 0;
}

size_t img_gif_body_start(const uint8_t *p, size_t n)
{
    return n < 13 ? n : 13 + img_gif_table(p[10]);
}

static int img_gif_subblocks(const uint8_t *p, size_t n, size_t *pos, struct img_error *err)
{
    size_t i = *pos;

    for (;;) {
        uint8_t sz;

        if (i >= n)
            return img_truncated(err, "gif");
        sz = p[i++];
        if (sz == 0)
            break;
        i += sz;
    }
    *pos = i;
    return OK;
}

int img_gif_next(const uint8_t *p, size_t n, size_t *pos, struct img_gif_block *b,
                 struct img_error *err)
{
    size_t i = *pos;
    int rc = OK;

    if (i >= n)
        return img_truncated(err, "gif");
    b->start = i;
    b->kind = p[i];
    b->label = 0;
    switch (b->kind) {
    case 0x3B:
        i += 1;
        break;
    case 0x21:
        if (n - i < 2)
            return img_truncated(err, "gif");
        b->label = p[i + 1];
        i += 2;
        rc = img_gif_subblocks(p, n, &i, err);
        break;
    case 0x2C:
        if (n - i < 10)
            return img_truncated(err, "gif");
        i += 10 + img_gif_table(p[i + 9]);
        i += 1; /* LZW minimum code size */
        rc = img_gif_subblocks(p, n, &i, err);
        break;
    default:
        img_errf(err, "gif has an unknown block 0x%02X at offset %zu", b->kind, i);
        return E_BADIMAGE;
    }
    if (rc != OK)
        return rc;
    b->end = i;
    *pos = i;
    return OK;
}

static int img_probe_gif(const uint8_t *p, size_t n, struct img_probe *pr, struct img_error *err)
{
    struct img_gif_block b;
    uint32_t cw, ch, frames = 0;
    size_t pos;
    int rc;

    if (n < 13)
        return img_truncated(err, "gif");
    /* The logical screen is the canvas other decoders allocate: libvips only
     * reports the frames, so it is read here. */
    cw = img_le16(p + 6);
    ch = img_le16(p + 8);
    pos = img_gif_body_start(p, n);
    for (;;) {
        rc = img_gif_next(p, n, &pos, &b, err);
        if (rc != OK)
            return rc;
        if (b.kind == 0x3B)
            break;
        if (b.kind == 0x2C) {
            uint32_t right = (uint32_t)img_le16(p + b.start + 1) + img_le16(p + b.start + 5);
            uint32_t bottom = (uint32_t)img_le16(p + b.start + 3) + img_le16(p + b.start + 7);

            cw = right > cw ? right : cw;
            ch = bottom > ch ? bottom : ch;
            frames++;
        }
    }
    if (frames == 0) {
        img_errf(err, "gif has no image");
        return E_BADIMAGE;
    }
    if (pos != n)
        return img_trailing(err, "gif", pos, n);
    pr->width = cw;
    pr->height = ch;
    pr->frames = frames;
    return OK;
}

/* ---- WebP ---- */

static int img_probe_webp(const uint8_t *p, size_t n, struct img_probe *pr, struct img_error *err)
{
    uint64_t total = (uint64_t)img_le32(p + 4) + 8;
    uint32_t w = 0, h = 0, anmf = 0;
    bool vp8x = false;
    size_t pos = 12;

    if (total > n)
        return img_truncated(err, "webp");
    if (total < n)
        return img_trailing(err, "webp", (size_t)total, n);
    while (pos < total) {
        const uint8_t *c, *d;
        uint32_t sz;

        if (total - pos < 8) {
            img_errf(err, "webp has a broken chunk at offset %zu", pos);
            return E_BADIMAGE;
        }
        c = p + pos;
        d = c + 8;
        sz = img_le32(c + 4);
        if (sz > total - pos - 8) {
            img_errf(err, "webp chunk at offset %zu runs past the end of the file", pos);
            return E_BADIMAGE;
        }
        if (memcmp(c, "VP8X", 4) == 0 && sz >= 10) {
            w = 1 + img_le24(d + 4);
            h = 1 + img_le24(d + 7);
            vp8x = true;
        } else if (memcmp(c, "VP8 ", 4) == 0 && sz >= 10 && !vp8x && w == 0) {
            if (d[3] != 0x9D || d[4] != 0x01 || d[5] != 0x2A) {
                img_errf(err, "webp has a broken VP8 frame header");
                return E_BADIMAGE;
            }
            w = img_le16(d + 6) & 0x3FFF;
            h = img_le16(d + 8) & 0x3FFF;
        } else if (memcmp(c, "VP8L", 4) == 0 && sz >= 5) {
            uint32_t bits = img_le32(d + 1);

            if (d[0] != 0x2F) {
                img_errf(err, "webp has a broken VP8L header");
                return E_BADIMAGE;
            }
            if (!vp8x && w == 0) {
                w = (bits & 0x3FFF) + 1;
                h = ((bits >> 14) & 0x3FFF) + 1;
            }
            pr->lossless = true;
        } else if (memcmp(c, "ANMF", 4) == 0) {
            anmf++;
            if (sz >= 24 && memcmp(d + 16, "VP8L", 4) == 0)
                pr->lossless = true;
        }
        pos += 8 + (size_t)sz + (sz & 1);
    }
    if (w == 0 || h == 0) {
        img_errf(err, "webp has no image");
        return E_BADIMAGE;
    }
    pr->width = w;
    pr->height = h;
    pr->frames = anmf > 0 ? anmf : 1;
    return OK;
}

/* ---- BMP ---- */

/* Where RLE4/RLE8 data starting at off ends: just after its end-of-bitmap code. */
static int img_bmp_rle_end(const uint8_t *p, size_t n, size_t off, bool rle4, size_t *end,
                           struct img_error *err)
{
    size_t i = off;

    for (;;) {
        uint8_t a, b;

        if (i > n || n - i < 2)
            return img_truncated(err, "bmp");
        a = p[i];
        b = p[i + 1];
        i += 2;
        if (a != 0 || b == 0) /* encoded run, end of line */
            continue;
        if (b == 1) /* end of bitmap */
            break;
        if (b == 2) { /* delta */
            i += 2;
            continue;
        }
        /* absolute run of b pixels, padded to 16 bits */
        size_t bytes = rle4 ? ((size_t)b + 1) / 2 : b;
        i += bytes + (bytes & 1);
    }
    *end = i;
    return OK;
}

static int img_probe_bmp(const uint8_t *p, size_t n, struct img_probe *pr, struct img_error *err)
{
    uint32_t bfsize, off, dib, comp = 0, planes, bpp;
    int64_t w, h;
    uint64_t end;
    int rc;

    if (n < 26)
        return img_truncated(err, "bmp");
    bfsize = img_le32(p + 2);
    off = img_le32(p + 10);
    dib = img_le32(p + 14);
    if (14 + (size_t)dib > n)
        return img_truncated(err, "bmp");
    if (dib == 12) {
        w = img_le16(p + 18);
        h = img_le16(p + 20);
        planes = img_le16(p + 22);
        bpp = img_le16(p + 24);
    } else {
        w = (int32_t)img_le32(p + 18);
        h = (int32_t)img_le32(p + 22);
        planes = img_le16(p + 26);
        bpp = img_le16(p + 28);
        comp = img_le32(p + 30);
    }
    if (w <= 0 || h == 0 || w > 0x7FFFFFFF || h > 0x7FFFFFFF || h < -0x7FFFFFFF) {
        img_errf(err, "bmp declares an invalid size %lldx%lld", (long long)w, (long long)h);
        return E_BADIMAGE;
    }
    if (planes != 1 || (bpp != 1 && bpp != 4 && bpp != 8 && bpp != 16 && bpp != 24 && bpp != 32)) {
        img_errf(err, "bmp has an invalid header (%u planes, %u bits per pixel)", planes, bpp);
        return E_BADIMAGE;
    }
    pr->width = (uint32_t)w;
    pr->height = (uint32_t)(h < 0 ? -h : h);
    pr->frames = 1;
    if ((comp == 1 && (bpp != 8 || h < 0)) || (comp == 2 && (bpp != 4 || h < 0)) ||
        ((comp == 3 || comp == 6) && bpp != 16 && bpp != 32) || comp > 6 || comp == 4 ||
        comp == 5) {
        img_errf(err, "bmp compression %u with %u bits per pixel is not supported", comp, bpp);
        return E_BADIMAGE;
    }
    if (off < 14 + dib || off >= n) {
        img_errf(err, "bmp pixel data offset %u is outside the file", off);
        return E_BADIMAGE;
    }
    if (bfsize > n)
        return img_truncated(err, "bmp");
    if (comp == 1 || comp == 2) {
        size_t e;

        rc = img_bmp_rle_end(p, n, off, comp == 2, &e, err);
        if (rc != OK)
            return rc;
        end = e;
    } else {
        uint64_t stride = ((uint64_t)w * bpp + 31) / 32 * 4;

        end = off + stride * pr->height;
        if (end > n)
            return img_truncated(err, "bmp");
    }
    /* A V5 header may embed its ICC profile after the pixels. */
    if (dib >= 124 && img_le32(p + 14 + 56) == 0x4D424544u) {
        uint64_t pend = 14 + (uint64_t)img_le32(p + 14 + 112) + img_le32(p + 14 + 116);

        if (pend > n)
            return img_truncated(err, "bmp");
        end = pend > end ? pend : end;
    }
    if (n - end > IMG_BMP_SLACK)
        return img_trailing(err, "bmp", (size_t)end, n);
    return OK;
}

/* ---- TIFF ---- */

/*
 * TIFF has no end: its IFDs and strips are found through offsets that may
 * point anywhere, so trailing bytes cannot be told from unreferenced data and
 * are not checked here; img_ingest re-encodes every TIFF instead (a polyglot's
 * payload does not survive). IFD0 is read for the size and for metadata tags.
 */
static int img_probe_tiff(const uint8_t *p, size_t n, struct img_probe *pr, struct img_error *err)
{
    bool le = p[0] == 'I';
    uint32_t ifd, cnt;

    if (n < 8)
        return img_truncated(err, "tiff");
    ifd = le ? img_le32(p + 4) : img_be32(p + 4);
    if (ifd < 8 || ifd > n - 2) {
        img_errf(err, "tiff first directory offset %u is outside the file", ifd);
        return E_BADIMAGE;
    }
    cnt = le ? img_le16(p + ifd) : img_be16(p + ifd);
    if ((size_t)cnt * 12 > n - ifd - 2)
        return img_truncated(err, "tiff");
    for (uint32_t k = 0; k < cnt; k++) {
        const uint8_t *e = p + ifd + 2 + (size_t)k * 12;
        uint16_t tag = le ? img_le16(e) : img_be16(e);
        uint16_t type = le ? img_le16(e + 2) : img_be16(e + 2);
        uint32_t v = 0;

        if (type == 3)
            v = le ? img_le16(e + 8) : img_be16(e + 8);
        else if (type == 4)
            v = le ? img_le32(e + 8) : img_be32(e + 8);
        switch (tag) {
        case 256:
            pr->width = v;
            break;
        case 257:
            pr->height = v;
            break;
        case 270:   /* ImageDescription */
        case 271:   /* Make */
        case 272:   /* Model */
        case 305:   /* Software */
        case 306:   /* DateTime */
        case 315:   /* Artist */
        case 316:   /* HostComputer */
        case 700:   /* XMP */
        case 33432: /* Copyright */
        case 33723: /* IPTC */
        case 34377: /* Photoshop */
        case 34665: /* Exif IFD */
        case 34853: /* GPS IFD */
            pr->has_meta = true;
            break;
        default:
            break;
        }
    }
    if (pr->width == 0 || pr->height == 0) {
        img_errf(err, "tiff declares no image size");
        return E_BADIMAGE;
    }
    pr->frames = 1;
    return OK;
}

/* ---- HEIF / AVIF ---- */

/*
 * img_bmff_box_ok: the top-level boxes an image file needs. Others ("free",
 * "skip", "uuid", anything unknown) hold bytes no decoder reads, which is
 * where a polyglot keeps its second document: refused.
 */
static bool img_bmff_box_ok(const uint8_t *type)
{
    static const char *const ok[] = {"ftyp", "meta", "mdat", "moov"};

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        if (memcmp(type, ok[i], 4) == 0)
            return true;
    }
    return false;
}

/* The top-level boxes must cover the file exactly (no bytes after the last), known boxes only. */
static int img_probe_bmff(const uint8_t *p, size_t n, struct img_probe *pr, struct img_error *err)
{
    size_t pos = 0;

    while (pos < n) {
        uint64_t sz, hdr = 8;

        if (n - pos < 8) {
            img_errf(err, "%zu unexpected bytes after the last box of the image", n - pos);
            return E_BADIMAGE;
        }
        sz = img_be32(p + pos);
        if (sz == 1) {
            if (n - pos < 16)
                return img_truncated(err, "heif");
            sz = (uint64_t)img_be32(p + pos + 8) << 32 | img_be32(p + pos + 12);
            hdr = 16;
        } else if (sz == 0) {
            sz = n - pos;
        }
        if (sz < hdr) {
            img_errf(err, "image has an invalid box at offset %zu", pos);
            return E_BADIMAGE;
        }
        if (sz > n - pos)
            return img_truncated(err, "heif");
        if (!img_bmff_box_ok(p + pos + 4)) {
            char t[5];
            for (int i = 0; i < 4; i++)
                t[i] = p[pos + 4 + i] >= 0x20 && p[pos + 4 + i] < 0x7f ? (char)p[pos + 4 + i] : '?';
            t[4] = '\0';
            img_errf(err, "image has a top-level box \"%s\" at offset %zu that may carry any bytes",
                     t, pos);
            return E_BADIMAGE;
        }
        pos += (size_t)sz;
    }
    pr->frames = 1;
    return OK;
}

int img_probe_bytes(enum img_format f, const uint8_t *p, size_t n, struct img_probe *pr,
                    struct img_error *err)
{
    memset(pr, 0, sizeof(*pr));
    if (img_sniff(p, n) != f) {
        img_errf(err, "not a %s image", img_format_name(f));
        return E_BADIMAGE;
    }
    switch (f) {
    case IMG_JPEG:
        return img_probe_jpeg(p, n, pr, err);
    case IMG_PNG:
        return img_probe_png(p, n, pr, err);
    case IMG_GIF:
        return img_probe_gif(p, n, pr, err);
    case IMG_WEBP:
        return img_probe_webp(p, n, pr, err);
    case IMG_BMP:
        return img_probe_bmp(p, n, pr, err);
    case IMG_TIFF:
        return img_probe_tiff(p, n, pr, err);
    case IMG_HEIF:
    case IMG_AVIF:
        return img_probe_bmff(p, n, pr, err);
    case IMG_UNKNOWN:
        break;
    }
    img_errf(err, "not an accepted image type");
    return E_UNSUPPORTED;
}
