/*
 * ops.h - the transform options of /i/{id}/t/{ops}.{ext}: parse, canonical
 * form, signature, and the plan (output size, memory) of one rendition.
 *
 * Pure functions: no libvips, no I/O, no state. Invariant: two ops strings
 * that mean the same rendition have one canonical form (API.md: table order,
 * defaults of fit, g, dpr and up left out), and only that form is signed and
 * stored, so a rendition is made, kept and purged once.
 */
#ifndef IMAGE_OPS_H
#define IMAGE_OPS_H

#include "core/str.h"
#include "image/image.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OPS_CANON_MAX 64 /* "w:4096,h:4096,fit:cover,g:attention,q:100,dpr:4,up:1.avif" + NUL */
#define OPS_SIG_LEN   32 /* characters of base64url HMAC-SHA256 in ?s= */
#define OPS_DPR_MAX   4
/*
 * What every rendition takes besides its pixels and file, measured (test_transform): the
 * thread that makes it and libvips' per-thread buffers, the codecs' state, allocator slack.
 * Without it 32 small renditions at once overran a 96 MiB budget by a quarter; with 16 MiB
 * they stayed 35 MiB under it (docs/transforms.md, "Memory budget").
 */
#define OPS_MEMORY_FIXED (16u << 20)

enum ops_fit { OPS_FIT_CONTAIN = 0, OPS_FIT_COVER, OPS_FIT_FILL };
enum ops_gravity { OPS_G_CENTER = 0, OPS_G_ATTENTION, OPS_G_ENTROPY };

/* What the URL asked for; 0 in w, h or q: not given. */
struct img_ops {
    uint32_t w, h; /* CSS pixels, before dpr */
    enum ops_fit fit;
    enum ops_gravity g;
    int q;                  /* 1..100, 0: the format's default */
    int dpr;                /* 1..OPS_DPR_MAX */
    bool up;                /* may enlarge */
    enum img_format format; /* IMG_WEBP, IMG_AVIF, IMG_JPEG, IMG_PNG; IMG_UNKNOWN for auto */
};

struct ops_limits {
    uint32_t max_dimension; /* w and h, before dpr */
    uint64_t max_pixels;    /* of the output, after dpr */
};

/*
 * img_ops_parse reads ops ("w:300,h:200,fit:cover") and ext ("webp", "avif",
 * "jpg", "png" or "auto") into *out. OK, or E_INVALID with a sentence in err
 * (capacity cap) that starts with the offending key ("w", "fit", "ext", ...):
 * an unknown key, a key twice, a value out of range or malformed, no w and
 * no h, cover or fill without both, g without cover, a box over max_pixels.
 * Numbers are plain decimal without sign or leading zero. Thread-safe.
 */
int img_ops_parse(struct str ops, struct str ext, const struct ops_limits *lim, struct img_ops *out,
                  char *err, size_t cap);

/*
 * img_ops_canonical writes the canonical "ops.ext" of o into out (capacity
 * >= OPS_CANON_MAX), ext being the URL extension of format (which must not be
 * IMG_UNKNOWN: resolve auto first) or "auto" when format is IMG_UNKNOWN.
 */
void img_ops_canonical(const struct img_ops *o, char *out, size_t cap);

/*
 * img_ops_sign writes the signature of the canonical path
 * "/i/{id}/t/{canonical}" (canonical from img_ops_canonical, with the URL's
 * ext) under key (klen bytes): the first OPS_SIG_LEN characters of unpadded
 * base64url HMAC-SHA256, and a NUL. Thread-safe.
 */
void img_ops_sign(const void *key, size_t klen, const char *id, const char *canonical,
                  char out[OPS_SIG_LEN + 1]);

/*
 * img_ops_sig_ok tells whether sig (NUL-terminated, from ?s=) is the
 * signature of id and canonical under one of the n keys (NUL-terminated
 * strings; a key is its bytes). Compares in constant time per key. Thread-safe.
 */
bool img_ops_sig_ok(char *const *keys, size_t n, const char *id, const char *canonical,
                    const char *sig);

/* The source a rendition is made from: the stored image's record. */
struct img_source {
    enum img_format format;
    uint32_t width, height, frames;
    uint64_t bytes; /* of the stored file */
};

/* How one rendition will be made. */
struct img_plan {
    uint32_t width, height;      /* of the output (per frame) */
    uint32_t scaled_w, scaled_h; /* cover: the resized image the crop is cut from */
    bool animated;               /* every frame is kept (WebP of an animation) */
    int quality;                 /* the encoder's, q or the format's default */
    uint64_t memory;             /* predicted peak bytes: see img_ops_plan */
};

/*
 * img_ops_plan computes the output of o on src (format resolved, not
 * IMG_UNKNOWN): w and h times dpr; contain fits the box keeping the aspect
 * ratio (a missing side follows it), cover and fill give exactly the box;
 * without up nothing is larger than the source (contain keeps the source
 * size; cover and fill shrink the box, keeping its aspect ratio, until it
 * fits in the source). memory predicts the peak from the header alone: the
 * decoded pixels after shrink-on-load (JPEG 1/2/4/8, WebP any scale, others
 * none) x 4 bands x bytes per band (2 for PNG and TIFF, which may be 16-bit)
 * x frames kept, plus the output, plus the file held in memory, plus
 * OPS_MEMORY_FIXED.
 * OK, or E_INVALID with err naming the key when the output exceeds
 * lim->max_pixels ("w" or "h": an enlarged one-sided box).
 */
int img_ops_plan(const struct img_ops *o, const struct img_source *src,
                 const struct ops_limits *lim, struct img_plan *plan, char *err, size_t cap);

#endif
