/*
 * image.h - the image pipeline: sniffing, limits, validation, normalisation, variants.
 *
 * Invariant: nothing here trusts a file. The type is decided by magic bytes,
 * the pixel and frame limits are checked from the header before any decode,
 * and a file is accepted only after one full decode that fails on any warning.
 * VipsImage never leaves this module.
 */
#ifndef IMAGE_IMAGE_H
#define IMAGE_IMAGE_H

#include "core/str.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum img_format {
    IMG_UNKNOWN = 0,
    IMG_JPEG,
    IMG_PNG,
    IMG_GIF,
    IMG_WEBP,
    IMG_AVIF,
    IMG_HEIF,
    IMG_TIFF,
    IMG_BMP,
};

/* img_format_name: API.md name ("jpeg", "png", ...); "" for IMG_UNKNOWN. */
const char *img_format_name(enum img_format f);
/* img_format_mime: Content-Type ("image/jpeg", ...). */
const char *img_format_mime(enum img_format f);
/* img_format_ext: the canonical URL extension ("jpg", "png", "gif", "webp", "avif", "heic", "tif",
 * "bmp"). */
const char *img_format_ext(enum img_format f);
/* img_format_from_name: inverse of img_format_name; IMG_UNKNOWN when unknown. */
enum img_format img_format_from_name(struct str name);
/* img_format_from_ext: "jpg"/"jpeg", "png", "gif", "webp", "avif", "heic"/"heif", "tif"/"tiff",
 * "bmp". */
enum img_format img_format_from_ext(struct str ext);

/* img_sniff decides the format from the first n bytes only; IMG_UNKNOWN if none matches. */
enum img_format img_sniff(const uint8_t *p, size_t n);

struct img_limits {
    uint64_t max_pixels;           /* per frame, a GIF's logical screen included */
    uint64_t max_frames;           /* frames of an animation */
    uint64_t max_animation_pixels; /* width x height x frames */
};

struct img_info {
    enum img_format format;
    uint32_t width; /* upright */
    uint32_t height;
    uint32_t frames;
};

/* An error for the client: the status (E_UNSUPPORTED, E_BADIMAGE, ...) carries a sentence. */
struct img_error {
    char msg[256];
};

/*
 * img_init starts libvips for the whole process: operation cache bounded by
 * cache_max_mem (0: no cache), bounded concurrency (threads per pipeline),
 * untrusted loaders blocked, glibc's allocator told to give large blocks back.
 * Call once from the main thread before any other img_ function. Returns OK
 * or E_INTERNAL.
 */
int img_init(const char *argv0, int concurrency, size_t cache_max_mem);

/* img_shutdown stops libvips; call once at exit. */
void img_shutdown(void);

/*
 * img_thread_exit frees libvips' per-thread buffers: call it in a thread that
 * ran img_ingest or img_variant, just before that thread exits.
 */
void img_thread_exit(void);

/*
 * img_ingest runs the upload pipeline on the file at in_path: sniff (E_UNSUPPORTED),
 * header limits before any decode (E_BADIMAGE), a full decode failing on any
 * warning (E_BADIMAGE), trailing bytes after the image (E_BADIMAGE), then
 * normalisation: EXIF/XMP/IPTC removed, ICC profile kept, EXIF orientation applied.
 * When the file needs no change *unchanged is set and out_path is not touched;
 * otherwise the bytes to store are written to out_path (created or truncated).
 * info describes the bytes to store. err->msg is set on every error. Also
 * E_TOOBIG (file over 512 MiB), E_IO/E_NOSPACE (reading or writing files),
 * E_INTERNAL (re-encoding failed).
 * Blocks (decoding); thread-safe.
 */
int img_ingest(const char *in_path, const struct img_limits *lim, const char *out_path,
               bool *unchanged, struct img_info *info, struct img_error *err);

/* A variant recipe: fit inside width x height (never enlarge), encode as format. */
struct img_variant_spec {
    uint32_t width;
    uint32_t height;
    enum img_format format; /* IMG_WEBP, IMG_JPEG, IMG_PNG or IMG_AVIF */
    int quality;            /* 1..100 */
};

/*
 * img_variant makes a variant of the stored image at src_path (already
 * validated) with shrink-on-load, and writes it, free of metadata, to out_path.
 * Only the first frame of an animation; colours converted to sRGB; JPEG alpha
 * flattened on white. E_INVALID for a bad spec (sizes 1..16383, quality 1..100),
 * E_NOTFOUND if src_path does not exist, E_BADIMAGE if it does not decode.
 * info describes the written variant. Blocks; thread-safe.
 */
int img_variant(const char *src_path, const struct img_variant_spec *spec, const char *out_path,
                struct img_info *info, struct img_error *err);

struct img_ops;
struct img_plan;

/*
 * img_transform makes the rendition o (planned by img_ops_plan: plan gives
 * the exact output size) of the stored image at src_path with shrink-on-load,
 * and writes it, free of metadata and in sRGB, to out_path. contain and fill
 * resize to plan's size; cover resizes to plan's scaled size and crops at
 * o->g (libvips' attention or entropy finder, or the centre; an animation is
 * cropped at its centre). An animation keeps its frames when plan->animated;
 * else the first frame. o->format IMG_UNKNOWN ("auto" for a client that takes
 * neither AVIF nor WebP) encodes JPEG, or PNG when the result has an alpha
 * channel; info->format says which. E_NOTFOUND if src_path does not exist,
 * E_BADIMAGE if it does not decode, E_INTERNAL if encoding fails, E_IO.
 * Blocks; thread-safe.
 */
int img_transform(const char *src_path, const struct img_ops *o, const struct img_plan *plan,
                  const char *out_path, struct img_info *info, struct img_error *err);

#endif
