/*
 * image_int.h - internals shared by the files of src/image/ (and its unit test).
 *
 * The byte-level half of the pipeline: structure walks that find each format's
 * end (trailing bytes), its declared size and frame count before any decode,
 * and lossless metadata removal. Nothing here calls libvips.
 */
#ifndef IMAGE_IMAGE_INT_H
#define IMAGE_IMAGE_INT_H

#include "image/image.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Files larger than this are refused (E_TOOBIG) before they are read. */
#define IMG_MAX_FILE_BYTES ((size_t)512 << 20)

/* What the structure walk learned from the bytes alone. */
struct img_probe {
    uint32_t width; /* declared canvas (GIF: logical screen or frame extent, whichever is
                       larger); 0 when only libvips knows (TIFF, HEIF, AVIF) */
    uint32_t height;
    uint32_t frames;   /* frames declared or counted; 1 for still formats */
    bool has_meta;     /* TIFF: IFD0 carries EXIF/GPS/XMP/IPTC or descriptive text tags */
    bool lossless;     /* WebP: the image data is VP8L */
    bool trailing_mpf; /* JPEG: MPF secondary images follow the EOI (img_strip cuts them) */
};

/*
 * img_probe_bytes walks the structure of n bytes of format f (as sniffed):
 * header sanity, declared size, frame count, and that the image ends exactly
 * at the end of the file. Reads no pixels. OK, or E_BADIMAGE with err set.
 * Thread-safe (no state).
 */
int img_probe_bytes(enum img_format f, const uint8_t *p, size_t n, struct img_probe *pr,
                    struct img_error *err);

/*
 * img_check_limits applies lim to a w x h image of frames frames (per frame,
 * frame count, then pixels across all frames). OK or E_BADIMAGE with err set.
 */
int img_check_limits(uint64_t w, uint64_t h, uint64_t frames, const struct img_limits *lim,
                     struct img_error *err);

/*
 * img_strip removes EXIF, XMP, IPTC, comments and text from n bytes of format
 * f without touching the image data (JPEG, PNG, GIF, WebP; other formats are
 * left as they are). A JPEG ends at its first EOI: MPF secondary images go. The bytes must have
 * passed img_probe_bytes. On OK, *out is NULL when nothing had to go, else a new xmalloc'd buffer
 * of *out_len bytes that the caller frees. E_BADIMAGE if the structure is broken.
 */
int img_strip(enum img_format f, const uint8_t *p, size_t n, uint8_t **out, size_t *out_len);

/* img_errf formats a message into err (ignored when err is NULL). */
void img_errf(struct img_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One marker segment of a JPEG, as img_jpeg_next finds them. */
struct img_jpeg_seg {
    uint8_t marker; /* the byte after 0xFF; 0xD9 for the end of image */
    size_t start;   /* offset of the 0xFF that introduces it */
    size_t payload; /* offset of its payload (after the length field), == end if none */
    size_t end;     /* one past its last byte; SOS includes the entropy-coded data */
};

/*
 * img_jpeg_next reads the segment at *pos (just after SOI at first) and moves
 * *pos past it. OK, or E_BADIMAGE when the bytes end early or are not markers.
 */
int img_jpeg_next(const uint8_t *p, size_t n, size_t *pos, struct img_jpeg_seg *seg,
                  struct img_error *err);

/* One top-level block of a GIF, as img_gif_next finds them. */
struct img_gif_block {
    uint8_t kind;  /* 0x21 extension, 0x2C image, 0x3B trailer */
    uint8_t label; /* the extension label (0xF9, 0xFE, 0xFF, 0x01) */
    size_t start;
    size_t end;
};

/*
 * img_gif_next reads the block at *pos (just after the header and global
 * colour table at first) and moves *pos past it. OK or E_BADIMAGE.
 */
int img_gif_next(const uint8_t *p, size_t n, size_t *pos, struct img_gif_block *b,
                 struct img_error *err);

/* img_gif_body_start: offset of the first block after header and global colour table. */
size_t img_gif_body_start(const uint8_t *p, size_t n);

/* Little- and big-endian readers; the caller has checked the bounds. */
static inline uint32_t img_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint16_t img_be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t img_le32(const uint8_t *p)
{
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static inline uint16_t img_le16(const uint8_t *p)
{
    return (uint16_t)(p[1] << 8 | p[0]);
}

static inline uint32_t img_le24(const uint8_t *p)
{
    return (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

#endif
