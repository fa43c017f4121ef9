/*
 * pipeline.c - libvips: start-up, the upload pipeline and variants.
 *
 * VipsImage never leaves this file. Every load names its loader from the
 * sniffed format (libvips never guesses on an upload) and reads from memory
 * owned by a VipsBlob, so an operation held in libvips' cache can neither
 * outlive the bytes it read nor be mistaken for a later file at the same path.
 */
#include "core/err.h"
#include "core/log.h"
#include "core/xalloc.h"
#include "image/image.h"
#include "image/image_int.h"
#include "image/ops.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vips/vips.h>

#define IMG_CACHE_MAX_OPS   100
#define IMG_CACHE_MAX_FILES 16
#define IMG_REENCODE_Q      90           /* lossy re-encodes of an upload (orientation, metadata) */
#define IMG_VARIANT_MAX_DIM 16383        /* WebP's limit; larger variants make no sense here */
#define IMG_MMAP_THRESHOLD  (256 * 1024) /* bytes: larger blocks are mmapped, returned on free */
#define IMG_MALLOC_ARENAS   2
#define IMG_AVIF_EFFORT     4 /* libvips' default, for uploads and preset variants (jobs) */
/* A rendition is encoded while its client waits: 1024 px here took 2.3 s at
 * effort 4, 0.34 s at 2, for a file 3 % larger. */
#define IMG_AVIF_EFFORT_REQUEST 2

/* ---- errors ---- */

/*
 * img_vips_fail answers a failed libvips call: the sentence fmt, then
 * libvips' (global) error buffer on one line; the buffer is cleared.
 * Callers choose rc: E_BADIMAGE for the input, E_INTERNAL for encoding.
 */
static int img_vips_fail(struct img_error *err, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int img_vips_fail(struct img_error *err, int rc, const char *fmt, ...)
{
    char what[128];
    char *buf = vips_error_buffer_copy();
    size_t len = strlen(buf);
    char *first_end, *last;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
        buf[--len] = '\0';
    /* The first line says what failed first, the last one what gave up. */
    first_end = strchr(buf, '\n');
    last = strrchr(buf, '\n');
    if (first_end != NULL) {
        *first_end = '\0';
        img_errf(err, "%s: %s; %s", what, buf, last + 1);
    } else if (len > 0) {
        img_errf(err, "%s: %s", what, buf);
    } else {
        img_errf(err, "%s", what);
    }
    g_free(buf);
    return rc;
}

/* libvips' warnings go to our log, not to stderr. */
static void img_vips_log(const gchar *domain, GLogLevelFlags level, const gchar *message,
                         gpointer user)
{
    (void)domain;
    (void)level;
    (void)user;
    log_debug("image", "libvips: %s", message);
}

/* ---- start-up ---- */

int img_init(const char *argv0, int concurrency, size_t cache_max_mem)
{
    if (VIPS_INIT(argv0 ? argv0 : "tessera")) {
        log_error("image", "libvips failed to start: %s", vips_error_buffer());
        vips_error_clear();
        return E_INTERNAL;
    }
    g_log_set_handler("VIPS", G_LOG_LEVEL_WARNING | G_LOG_LEVEL_MESSAGE | G_LOG_LEVEL_INFO,
                      img_vips_log, NULL);
#ifdef __GLIBC__
    /*
     * Decoded images and file copies are large and short-lived. glibc raises
     * its mmap threshold after each such block is freed, so later ones come
     * from the heap arenas (one per connection thread) and stay resident
     * after free: RSS then grew past the renditions' memory budget (177 MiB
     * against 47 + 96 here). A fixed threshold gives them back at once; two
     * arenas keep libvips' many small buffers, freed by whichever thread, from
     * pinning memory in one arena per thread (152 MiB with the threshold
     * alone, 141-145 with both, in tests/system/test_transform.py).
     */
    mallopt(M_MMAP_THRESHOLD, IMG_MMAP_THRESHOLD);
    mallopt(M_ARENA_MAX, IMG_MALLOC_ARENAS);
#endif
    vips_concurrency_set(concurrency > 0 ? concurrency : 1);
    /* A cached load keeps its input bytes (a whole upload or stored image),
     * which max_mem does not count: with no byte limit, no cache at all. */
    vips_cache_set_max(cache_max_mem > 0 ? IMG_CACHE_MAX_OPS : 0);
    vips_cache_set_max_mem(cache_max_mem);
    vips_cache_set_max_files(IMG_CACHE_MAX_FILES);
    /* No loader marked untrusted (svg, pdf, magick, matlab, fits, ...) may run,
     * except ImageMagick's buffer loader: libvips 8.14 reads BMP only through
     * it, and it is called only on bytes already checked by img_probe_bytes. */
    vips_block_untrusted_set(TRUE);
    vips_operation_block_set("VipsForeignLoadMagickBuffer", FALSE);
    return OK;
}

void img_shutdown(void)
{
    vips_shutdown();
}

void img_thread_exit(void)
{
    vips_thread_shutdown();
}

/* ---- files ---- */

static int img_blob_free(void *data, void *area)
{
    (void)area;
    free(data);
    return 0;
}

/* img_read_file reads the whole file at path into a new buffer; E_TOOBIG over the
 * cap, missing_rc when there is no such file. */
static int img_read_file(const char *path, int missing_rc, uint8_t **out, size_t *n,
                         struct img_error *err)
{
    struct stat st;
    uint8_t *buf = NULL;
    size_t got = 0;
    int fd = -1, rc = OK;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        rc = errno == ENOENT ? missing_rc : E_IO;
        log_error("image", "cannot open '%s': %s", path, strerror(errno));
        img_errf(err, "cannot read the image file");
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = E_IO;
        img_errf(err, "the image is not a regular file");
        goto out;
    }
    if ((uint64_t)st.st_size > IMG_MAX_FILE_BYTES) {
        rc = E_TOOBIG;
        img_errf(err, "image file is %lld bytes, over the limit of %zu", (long long)st.st_size,
                 IMG_MAX_FILE_BYTES);
        goto out;
    }
    buf = xmalloc(st.st_size > 0 ? (size_t)st.st_size : 1);
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rc = E_IO;
            log_error("image", "cannot read '%s': %s", path, r < 0 ? strerror(errno) : "short");
            img_errf(err, "cannot read the image file");
            goto out;
        }
        got += (size_t)r;
    }
    *out = buf;
    *n = got;
    buf = NULL;
out:
    free(buf);
    if (fd >= 0)
        close(fd);
    return rc;
}

/* img_write_file creates or truncates path with exactly these bytes; removes it on failure. */
static int img_write_file(const char *path, const void *p, size_t n, struct img_error *err)
{
    const uint8_t *b = p;
    size_t done = 0;
    int fd, rc = OK;

    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = errno == ENOSPC ? E_NOSPACE : E_IO;
        log_error("image", "cannot create '%s': %s", path, strerror(errno));
        img_errf(err, "cannot write the image");
        return rc;
    }
    while (done < n) {
        ssize_t w = write(fd, b + done, n - done);

        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            rc = errno == ENOSPC || errno == EDQUOT ? E_NOSPACE : E_IO;
            log_error("image", "cannot write '%s': %s", path, strerror(errno));
            goto out;
        }
        done += (size_t)w;
    }
out:
    if (close(fd) != 0 && rc == OK) {
        rc = errno == ENOSPC || errno == EDQUOT ? E_NOSPACE : E_IO;
        log_error("image", "cannot write '%s': %s", path, strerror(errno));
    }
    if (rc != OK) {
        img_errf(err, "cannot write the image");
        unlink(path);
    }
    return rc;
}

/* ---- libvips helpers ---- */

/*
 * img_load opens the image in blob with the loader of format f, failing on
 * any warning. Only the header is read until pixels are asked for. all_pages
 * loads every frame of an animation as one tall image.
 */
static int img_load(enum img_format f, VipsBlob *blob, bool all_pages, VipsAccess access,
                    VipsImage **out)
{
    VipsSource *src;
    int n = all_pages ? -1 : 1;
    int r = -1;

    if (f == IMG_BMP) {
        size_t len;
        const void *data = vips_blob_get(blob, &len);

        return vips_magickload_buffer((void *)data, len, out, "access", access, "fail_on",
                                      VIPS_FAIL_ON_WARNING, NULL);
    }
    src = vips_source_new_from_blob(blob);
    if (src == NULL)
        return -1;
    switch (f) {
    case IMG_JPEG:
        r = vips_jpegload_source(src, out, "access", access, "fail_on", VIPS_FAIL_ON_WARNING, NULL);
        break;
    case IMG_PNG:
        r = vips_pngload_source(src, out, "access", access, "fail_on", VIPS_FAIL_ON_WARNING, NULL);
        break;
    case IMG_GIF:
        r = vips_gifload_source(src, out, "n", n, "access", access, "fail_on", VIPS_FAIL_ON_WARNING,
                                NULL);
        break;
    case IMG_WEBP:
        r = vips_webpload_source(src, out, "n", n, "access", access, "fail_on",
                                 VIPS_FAIL_ON_WARNING, NULL);
        break;
    case IMG_HEIF:
    case IMG_AVIF: /* the primary image */
        r = vips_heifload_source(src, out, "access", access, "fail_on", VIPS_FAIL_ON_WARNING, NULL);
        break;
    case IMG_TIFF: /* the first page */
        r = vips_tiffload_source(src, out, "access", access, "fail_on", VIPS_FAIL_ON_WARNING, NULL);
        break;
    default:
        vips_error("image", "no loader for format %d", (int)f);
        break;
    }
    g_object_unref(src);
    return r;
}

/* img_drop_metadata removes EXIF (all exif-ifd* fields too), XMP, IPTC, Photoshop,
 * description and orientation from an image this module owns; the ICC profile stays. */
static void img_drop_metadata(VipsImage *im)
{
    static const char *const names[] = {VIPS_META_EXIF_NAME,
                                        VIPS_META_XMP_NAME,
                                        VIPS_META_IPTC_NAME,
                                        VIPS_META_PHOTOSHOP_NAME,
                                        VIPS_META_IMAGEDESCRIPTION,
                                        VIPS_META_ORIENTATION,
                                        "gif-comment",
                                        NULL};
    gchar **fields = vips_image_get_fields(im);

    for (gchar **f = fields; *f; f++) {
        bool drop = strncmp(*f, "exif-", 5) == 0;

        for (const char *const *n = names; *n && !drop; n++)
            drop = strcmp(*f, *n) == 0;
        if (drop)
            vips_image_remove(im, *f);
    }
    g_strfreev(fields);
}

static bool img_has_metadata(VipsImage *im)
{
    return vips_image_get_typeof(im, VIPS_META_EXIF_NAME) ||
           vips_image_get_typeof(im, VIPS_META_XMP_NAME) ||
           vips_image_get_typeof(im, VIPS_META_IPTC_NAME) ||
           vips_image_get_typeof(im, VIPS_META_PHOTOSHOP_NAME);
}

/* How to encode: the format's own options; strip drops every field, ICC included. */
struct img_encode {
    int quality;
    bool lossless;
    VipsForeignSubsample subsample;
    bool strip;
    int effort; /* AVIF: libaom's CPU effort, 0..9 */
};

static int img_save(enum img_format f, VipsImage *im, const struct img_encode *e, void **buf,
                    size_t *len)
{
    switch (f) {
    case IMG_JPEG:
        return vips_jpegsave_buffer(im, buf, len, "Q", e->quality, "subsample_mode", e->subsample,
                                    "optimize_coding", TRUE, "strip", e->strip, NULL);
    case IMG_PNG:
        return vips_pngsave_buffer(im, buf, len, "strip", e->strip, NULL);
    case IMG_WEBP:
        if (e->lossless)
            return vips_webpsave_buffer(im, buf, len, "lossless", TRUE, "strip", e->strip, NULL);
        return vips_webpsave_buffer(im, buf, len, "Q", e->quality, "strip", e->strip, NULL);
    case IMG_HEIF:
        /* x265 is linked into this libheif: HEVC encoding works here. */
        return vips_heifsave_buffer(im, buf, len, "compression", VIPS_FOREIGN_HEIF_COMPRESSION_HEVC,
                                    "bitdepth", 8, "Q", e->quality, "subsample_mode", e->subsample,
                                    "strip", e->strip, NULL);
    case IMG_AVIF:
        return vips_heifsave_buffer(im, buf, len, "compression", VIPS_FOREIGN_HEIF_COMPRESSION_AV1,
                                    "bitdepth", 8, "Q", e->quality, "subsample_mode", e->subsample,
                                    "strip", e->strip, "effort", e->effort, NULL);
    case IMG_TIFF:
        return vips_tiffsave_buffer(im, buf, len, "compression", VIPS_FOREIGN_TIFF_COMPRESSION_LZW,
                                    "predictor", VIPS_FOREIGN_TIFF_PREDICTOR_HORIZONTAL, "strip",
                                    e->strip, NULL);
    default:
        vips_error("image", "cannot encode %s", img_format_name(f));
        return -1;
    }
}

/* After a libvips encode of HEIF or TIFF (no byte-level strip there): check nothing came back. */
static int img_check_clean(enum img_format f, const void *buf, size_t len, struct img_error *err)
{
    VipsBlob *blob = vips_blob_copy(buf, len);
    VipsImage *im = NULL;
    int rc = OK;

    if (img_load(f, blob, false, VIPS_ACCESS_SEQUENTIAL, &im)) {
        rc = img_vips_fail(err, E_INTERNAL, "cannot read back the re-encoded image");
        goto out;
    }
    if (img_has_metadata(im)) {
        img_errf(err, "the re-encoded %s image still carries metadata", img_format_name(f));
        rc = E_INTERNAL;
    }
out:
    if (im)
        g_object_unref(im);
    vips_area_unref(VIPS_AREA(blob));
    return rc;
}

/* ---- upload ---- */

/* What the validating decode learned, for the normalisation step. */
struct img_decoded {
    int orientation;   /* 1..8, 1 when it must not be applied */
    bool has_metadata; /* EXIF, XMP, IPTC or Photoshop fields */
    bool chroma444;    /* JPEG: no chroma subsampling */
    int file_pages;    /* images in the file (TIFF pages, HEIF top-level images) */
};

/*
 * img_validate: header limits from libvips, then one full decode of every
 * pixel (sequential, bounded memory), failing on any warning.
 */
static int img_validate(enum img_format f, VipsBlob *blob, const struct img_limits *lim,
                        struct img_info *info, struct img_decoded *d, struct img_error *err)
{
    bool animated = f == IMG_GIF || f == IMG_WEBP;
    VipsImage *im = NULL;
    const char *chroma = NULL;
    double avg;
    int page_h, pages, rc = OK;

    if (img_load(f, blob, animated, VIPS_ACCESS_SEQUENTIAL, &im)) {
        rc = img_vips_fail(err, E_BADIMAGE, "cannot read the %s image", img_format_name(f));
        goto out;
    }
    page_h = vips_image_get_page_height(im);
    pages = animated ? im->Ysize / page_h : 1;
    rc = img_check_limits((uint64_t)im->Xsize, (uint64_t)page_h, (uint64_t)pages, lim, err);
    if (rc != OK)
        goto out;
    if (vips_avg(im, &avg, NULL)) {
        rc = img_vips_fail(err, E_BADIMAGE, "%s image is corrupt", img_format_name(f));
        goto out;
    }
    info->format = f;
    info->width = (uint32_t)im->Xsize;
    info->height = (uint32_t)page_h;
    info->frames = (uint32_t)pages;

    d->file_pages = vips_image_get_n_pages(im);
    d->has_metadata = img_has_metadata(im);
    d->orientation = 1;
    if (vips_image_get_typeof(im, VIPS_META_ORIENTATION) &&
        vips_image_get_int(im, VIPS_META_ORIENTATION, &d->orientation) != 0)
        d->orientation = 1;
    /* HEIF/AVIF: libheif has already applied irot/imir, and EXIF orientation
     * is informative only there. An animation is left as its frames are. */
    if (d->orientation < 1 || d->orientation > 8 || f == IMG_HEIF || f == IMG_AVIF ||
        f == IMG_GIF || f == IMG_BMP || pages > 1)
        d->orientation = 1;
    d->chroma444 = vips_image_get_typeof(im, "jpeg-chroma-subsample") &&
                   vips_image_get_string(im, "jpeg-chroma-subsample", &chroma) == 0 &&
                   strncmp(chroma, "4:4:4", 5) == 0;
out:
    if (im)
        g_object_unref(im);
    return rc;
}

/*
 * img_reencode decodes the image again (random access, as rotation needs it),
 * applies its orientation, drops the metadata fields and encodes it in its
 * own format into *buf (g_free it).
 */
static int img_reencode(enum img_format f, VipsBlob *blob, const struct img_probe *pr,
                        const struct img_decoded *d, void **buf, size_t *len, struct img_info *info,
                        struct img_error *err)
{
    struct img_encode e = {
        .quality = IMG_REENCODE_Q,
        .lossless = pr->lossless,
        .subsample = d->chroma444 ? VIPS_FOREIGN_SUBSAMPLE_OFF : VIPS_FOREIGN_SUBSAMPLE_ON,
        .strip = false,
        .effort = IMG_AVIF_EFFORT,
    };
    VipsImage *in = NULL, *up = NULL, *out = NULL;
    int rc = OK;

    if (img_load(f, blob, false, VIPS_ACCESS_RANDOM, &in)) {
        rc = img_vips_fail(err, E_BADIMAGE, "cannot read the %s image", img_format_name(f));
        goto out;
    }
    if (d->orientation != 1) {
        if (vips_autorot(in, &up, NULL)) {
            rc = img_vips_fail(err, E_INTERNAL, "cannot rotate the image upright");
            goto out;
        }
    } else {
        up = in;
        g_object_ref(up);
    }
    /*
     * heifsave in libvips 8.14 writes a fresh EXIF block whenever it keeps any
     * metadata, and it has no option to keep only the ICC profile: HEIF and
     * AVIF are converted to sRGB with their profile, then saved stripped.
     */
    if ((f == IMG_HEIF || f == IMG_AVIF) && vips_image_get_typeof(up, VIPS_META_ICC_NAME)) {
        VipsImage *srgb;

        if (vips_icc_transform(up, &srgb, "srgb", "embedded", TRUE, NULL)) {
            rc = img_vips_fail(err, E_BADIMAGE, "cannot apply the image's colour profile");
            goto out;
        }
        g_object_unref(up);
        up = srgb;
    }
    if (f == IMG_HEIF || f == IMG_AVIF) {
        e.strip = true;
        /* 4:2:0: HEVC 4:4:4 (RExt) does not decode everywhere HEIC does. */
        e.subsample = VIPS_FOREIGN_SUBSAMPLE_ON;
    }
    /* A copy has its own fields, so removing them touches no shared image. */
    if (vips_copy(up, &out, NULL)) {
        rc = img_vips_fail(err, E_INTERNAL, "cannot copy the image");
        goto out;
    }
    img_drop_metadata(out);
    if (img_save(f, out, &e, buf, len)) {
        rc = img_vips_fail(err, E_INTERNAL, "cannot re-encode the %s image", img_format_name(f));
        goto out;
    }
    info->width = (uint32_t)out->Xsize;
    info->height = (uint32_t)out->Ysize;
    info->frames = 1;
out:
    if (out)
        g_object_unref(out);
    if (up)
        g_object_unref(up);
    if (in)
        g_object_unref(in);
    return rc;
}

int img_ingest(const char *in_path, const struct img_limits *lim, const char *out_path,
               bool *unchanged, struct img_info *info, struct img_error *err)
{
    struct img_probe pr;
    struct img_decoded d = {0};
    enum img_format f;
    uint8_t *data = NULL, *stripped = NULL;
    size_t n = 0, stripped_len = 0, enc_len = 0;
    void *enc = NULL;
    VipsBlob *blob = NULL;
    bool reencode;
    int rc;

    *unchanged = false;
    memset(info, 0, sizeof(*info));
    err->msg[0] = '\0';

    rc = img_read_file(in_path, E_IO, &data, &n, err);
    if (rc != OK)
        goto out;
    f = img_sniff(data, n);
    if (f == IMG_UNKNOWN) {
        img_errf(err, "not an accepted image type (jpeg, png, gif, webp, avif, heif, tiff, bmp)");
        rc = E_UNSUPPORTED;
        goto out;
    }
    /* Structure, declared size and frames, trailing bytes: before any decoder runs. */
    rc = img_probe_bytes(f, data, n, &pr, err);
    if (rc != OK)
        goto out;
    if (pr.width > 0 && pr.height > 0) {
        rc = img_check_limits(pr.width, pr.height, pr.frames, lim, err);
        if (rc != OK)
            goto out;
    }
    blob = vips_blob_new(img_blob_free, data, n);
    data = NULL; /* the blob owns it now */

    rc = img_validate(f, blob, lim, info, &d, err);
    if (rc != OK)
        goto out;

    /* TIFF offsets may point anywhere: only a re-encode guarantees no hidden payload is kept */
    reencode = d.orientation != 1 || f == IMG_TIFF;
    if ((f == IMG_HEIF || f == IMG_AVIF || f == IMG_TIFF) &&
        (d.has_metadata || pr.has_meta || d.file_pages > 1))
        reencode = true;

    if (reencode) {
        rc = img_reencode(f, blob, &pr, &d, &enc, &enc_len, info, err);
        if (rc != OK)
            goto out;
        /* libvips writes a fresh EXIF block of its own (resolution, size): strip it too. */
        rc = img_strip(f, enc, enc_len, &stripped, &stripped_len);
        if (rc == OK && (f == IMG_HEIF || f == IMG_AVIF || f == IMG_TIFF))
            rc = img_check_clean(f, enc, enc_len, err);
        if (rc != OK) {
            if (err->msg[0] == '\0')
                img_errf(err, "the re-encoded image is malformed");
            rc = E_INTERNAL;
            goto out;
        }
        if (stripped)
            rc = img_write_file(out_path, stripped, stripped_len, err);
        else
            rc = img_write_file(out_path, enc, enc_len, err);
        goto out;
    }

    {
        size_t len;
        const uint8_t *bytes = vips_blob_get(blob, &len);

        rc = img_strip(f, bytes, len, &stripped, &stripped_len);
    }
    if (rc != OK) {
        img_errf(err, "%s image is malformed", img_format_name(f));
        goto out;
    }
    if (stripped == NULL) {
        *unchanged = true;
        goto out;
    }
    rc = img_write_file(out_path, stripped, stripped_len, err);
out:
    free(data);
    free(stripped);
    g_free(enc);
    if (blob)
        vips_area_unref(VIPS_AREA(blob));
    if (rc != OK && err->msg[0] == '\0')
        img_errf(err, "%s", err_str(rc));
    return rc;
}

/* ---- variants ---- */

static bool img_variant_format_ok(enum img_format f)
{
    return f == IMG_WEBP || f == IMG_JPEG || f == IMG_PNG || f == IMG_AVIF;
}

/*
 * img_variant_finish turns a thumbnail into what a variant may hold: sRGB
 * (converted with its embedded profile, which then goes with the rest of the
 * metadata at save) and, for JPEG, no alpha (flattened on white).
 */
static int img_variant_finish(VipsImage *in, enum img_format f, VipsImage **out)
{
    VipsImage *cur = in, *t = NULL;
    int rc = 0;

    g_object_ref(cur);
    if (vips_image_get_typeof(cur, VIPS_META_ICC_NAME)) {
        /* The transform attaches an sRGB profile (6 KB, and some savers keep
         * it even when stripping): untagged means sRGB, so it goes. */
        rc = vips_icc_transform(cur, &t, "srgb", "embedded", TRUE, NULL);
        if (rc)
            goto out;
        g_object_unref(cur);
        cur = t;
        rc = vips_copy(cur, &t, NULL);
        if (rc)
            goto out;
        g_object_unref(cur);
        cur = t;
        vips_image_remove(cur, VIPS_META_ICC_NAME);
    }
    if (f == IMG_JPEG && vips_image_hasalpha(cur)) {
        double white =
            cur->Type == VIPS_INTERPRETATION_RGB16 || cur->Type == VIPS_INTERPRETATION_GREY16
                ? 65535.0
                : 255.0;
        VipsArrayDouble *bg = vips_array_double_newv(1, white);

        rc = vips_flatten(cur, &t, "background", bg, NULL);
        vips_area_unref(VIPS_AREA(bg));
        if (rc)
            goto out;
        g_object_unref(cur);
        cur = t;
    }
    *out = cur;
    cur = NULL;
out:
    if (cur)
        g_object_unref(cur);
    return rc;
}

/*
 * img_open_stored reads a stored image file into a blob (which owns the
 * bytes) and sniffs its format: E_NOTFOUND, E_BADIMAGE (not an image), E_IO.
 */
static int img_open_stored(const char *src_path, VipsBlob **blob, enum img_format *f,
                           struct img_error *err)
{
    uint8_t *data = NULL;
    size_t n = 0;
    int rc = img_read_file(src_path, E_NOTFOUND, &data, &n, err);

    if (rc != OK)
        return rc;
    *f = img_sniff(data, n);
    if (*f == IMG_UNKNOWN) {
        free(data);
        img_errf(err, "stored file is not an image");
        return E_BADIMAGE;
    }
    *blob = vips_blob_new(img_blob_free, data, n);
    return OK;
}

int img_variant(const char *src_path, const struct img_variant_spec *spec, const char *out_path,
                struct img_info *info, struct img_error *err)
{
    struct img_encode e = {
        .quality = spec->quality,
        .lossless = false,
        .subsample = VIPS_FOREIGN_SUBSAMPLE_AUTO,
        .strip = true,
        .effort = IMG_AVIF_EFFORT,
    };
    uint8_t *stripped = NULL;
    size_t stripped_len = 0, enc_len = 0;
    void *enc = NULL;
    VipsBlob *blob = NULL;
    VipsSource *src = NULL;
    VipsImage *in = NULL, *thumb = NULL, *fin = NULL;
    enum img_format f;
    int rc;

    memset(info, 0, sizeof(*info));
    err->msg[0] = '\0';
    if (spec->width < 1 || spec->height < 1 || spec->width > IMG_VARIANT_MAX_DIM ||
        spec->height > IMG_VARIANT_MAX_DIM || spec->quality < 1 || spec->quality > 100 ||
        !img_variant_format_ok(spec->format)) {
        img_errf(err, "invalid variant: %ux%u %s quality %d", spec->width, spec->height,
                 img_format_name(spec->format), spec->quality);
        rc = E_INVALID;
        goto out;
    }
    rc = img_open_stored(src_path, &blob, &f, err);
    if (rc != OK)
        goto out;

    /* Shrink-on-load: the loader decodes at the smallest scale that still
     * covers the box; only the first frame of an animation. */
    if (f == IMG_BMP) {
        if (img_load(f, blob, false, VIPS_ACCESS_SEQUENTIAL, &in) ||
            vips_thumbnail_image(in, &thumb, (int)spec->width, "height", (int)spec->height, "size",
                                 VIPS_SIZE_DOWN, NULL)) {
            rc = img_vips_fail(err, E_BADIMAGE, "cannot read the stored image");
            goto out;
        }
    } else {
        src = vips_source_new_from_blob(blob);
        if (src == NULL || vips_thumbnail_source(src, &thumb, (int)spec->width, "height",
                                                 (int)spec->height, "size", VIPS_SIZE_DOWN, NULL)) {
            rc = img_vips_fail(err, E_BADIMAGE, "cannot read the stored image");
            goto out;
        }
    }
    if (img_variant_finish(thumb, spec->format, &fin)) {
        rc = img_vips_fail(err, E_INTERNAL, "cannot convert the variant to sRGB");
        goto out;
    }
    /* The thumbnail is a sequential pipeline: it is encoded exactly once. */
    if (img_save(spec->format, fin, &e, &enc, &enc_len)) {
        rc = img_vips_fail(err, E_BADIMAGE, "cannot make the %s variant",
                           img_format_name(spec->format));
        goto out;
    }
    /* PLATFORM.md: the WebP writer was seen adding EXIF even when stripping. */
    rc = img_strip(spec->format, enc, enc_len, &stripped, &stripped_len);
    if (rc != OK) {
        img_errf(err, "the encoded variant is malformed");
        rc = E_INTERNAL;
        goto out;
    }
    rc = img_write_file(out_path, stripped ? (void *)stripped : enc,
                        stripped ? stripped_len : enc_len, err);
    if (rc != OK)
        goto out;
    info->format = spec->format;
    info->width = (uint32_t)fin->Xsize;
    info->height = (uint32_t)fin->Ysize;
    info->frames = 1;
out:
    if (fin)
        g_object_unref(fin);
    if (thumb)
        g_object_unref(thumb);
    if (in)
        g_object_unref(in);
    if (src)
        g_object_unref(src);
    if (blob)
        vips_area_unref(VIPS_AREA(blob));
    free(stripped);
    g_free(enc);
    if (rc != OK && err->msg[0] == '\0')
        img_errf(err, "%s", err_str(rc));
    return rc;
}

/* ---- renditions (/i/{id}/t/{ops}.{ext}) ---- */

static VipsInteresting img_interesting(enum ops_gravity g)
{
    return g == OPS_G_ATTENTION ? VIPS_INTERESTING_ATTENTION
           : g == OPS_G_ENTROPY ? VIPS_INTERESTING_ENTROPY
                                : VIPS_INTERESTING_CENTRE;
}

/*
 * img_crop_frames cuts the w x h centre of every frame of an animation whose
 * frames are page_h high: vips_smartcrop would treat the strip of frames as
 * one tall image.
 */
static int img_crop_frames(VipsImage *in, int w, int h, VipsImage **out)
{
    int page_h = vips_image_get_page_height(in);
    int pages = in->Ysize / page_h;
    int left = (in->Xsize - w) / 2, top = (page_h - h) / 2;
    VipsImage **frames = g_new0(VipsImage *, (size_t)pages);
    VipsImage *joined = NULL;
    int rc = 0;

    for (int i = 0; i < pages && rc == 0; i++)
        rc = vips_extract_area(in, &frames[i], left, i * page_h + top, w, h, NULL);
    if (rc == 0)
        rc = vips_arrayjoin(frames, &joined, pages, "across", 1, NULL);
    if (rc == 0)
        rc = vips_copy(joined, out, NULL);
    if (rc == 0)
        vips_image_set_int(*out, VIPS_META_PAGE_HEIGHT, h);
    for (int i = 0; i < pages; i++) {
        if (frames[i])
            g_object_unref(frames[i]);
    }
    g_free(frames);
    if (joined)
        g_object_unref(joined);
    return rc;
}

int img_transform(const char *src_path, const struct img_ops *o, const struct img_plan *plan,
                  const char *out_path, struct img_info *info, struct img_error *err)
{
    struct img_encode e = {
        .quality = plan->quality,
        .lossless = false,
        .subsample = VIPS_FOREIGN_SUBSAMPLE_AUTO,
        .strip = true,
        .effort = IMG_AVIF_EFFORT_REQUEST,
    };
    uint8_t *stripped = NULL;
    size_t stripped_len = 0, enc_len = 0;
    void *enc = NULL;
    VipsBlob *blob = NULL;
    VipsSource *src = NULL;
    VipsImage *in = NULL, *thumb = NULL, *cut = NULL, *fin = NULL;
    bool cover = o->fit == OPS_FIT_COVER;
    int tw = (int)(cover ? plan->scaled_w : plan->width);
    int th = (int)(cover ? plan->scaled_h : plan->height);
    enum img_format f, out_f = o->format;
    int rc;

    memset(info, 0, sizeof(*info));
    err->msg[0] = '\0';
    rc = img_open_stored(src_path, &blob, &f, err);
    if (rc != OK)
        goto out;

    /*
     * The plan fixed the exact size, so the resize is forced to it (the
     * aspect ratio was kept there when it had to be); vips_thumbnail still
     * picks the loader's shrink-on-load from it.
     */
    if (f == IMG_BMP) {
        if (img_load(f, blob, false, VIPS_ACCESS_SEQUENTIAL, &in) ||
            vips_thumbnail_image(in, &thumb, tw, "height", th, "size", VIPS_SIZE_FORCE, NULL)) {
            rc = img_vips_fail(err, E_BADIMAGE, "cannot read the stored image");
            goto out;
        }
    } else {
        src = vips_source_new_from_blob(blob);
        if (src == NULL ||
            vips_thumbnail_source(src, &thumb, tw, "height", th, "size", VIPS_SIZE_FORCE,
                                  "option_string", plan->animated ? "n=-1" : "", NULL)) {
            rc = img_vips_fail(err, E_BADIMAGE, "cannot read the stored image");
            goto out;
        }
    }
    if (cover && (thumb->Xsize != (int)plan->width ||
                  vips_image_get_page_height(thumb) != (int)plan->height)) {
        VipsImage *mem = NULL;
        int crc;

        /* the interest finders read the image more than once: a sequential
         * pipeline cannot, so the (already small) resized image is held in memory */
        mem = vips_image_copy_memory(thumb);
        crc = mem == NULL      ? -1
              : plan->animated ? img_crop_frames(mem, (int)plan->width, (int)plan->height, &cut)
                               : vips_smartcrop(mem, &cut, (int)plan->width, (int)plan->height,
                                                "interesting", img_interesting(o->g), NULL);
        if (mem)
            g_object_unref(mem);
        if (crc) {
            rc = img_vips_fail(err, E_INTERNAL, "cannot crop the rendition");
            goto out;
        }
    } else {
        cut = thumb;
        g_object_ref(cut);
    }
    if (out_f == IMG_UNKNOWN)
        out_f = vips_image_hasalpha(cut) ? IMG_PNG : IMG_JPEG;
    if (img_variant_finish(cut, out_f, &fin)) {
        rc = img_vips_fail(err, E_INTERNAL, "cannot convert the rendition to sRGB");
        goto out;
    }
    /* a sequential pipeline: encoded exactly once */
    if (img_save(out_f, fin, &e, &enc, &enc_len)) {
        rc = img_vips_fail(err, E_BADIMAGE, "cannot make the %s rendition", img_format_name(out_f));
        goto out;
    }
    /* PLATFORM.md: the WebP writer was seen adding EXIF even when stripping. */
    rc = img_strip(out_f, enc, enc_len, &stripped, &stripped_len);
    if (rc != OK) {
        img_errf(err, "the encoded rendition is malformed");
        rc = E_INTERNAL;
        goto out;
    }
    rc = img_write_file(out_path, stripped ? (void *)stripped : enc,
                        stripped ? stripped_len : enc_len, err);
    if (rc != OK)
        goto out;
    info->format = out_f;
    info->width = (uint32_t)fin->Xsize;
    info->height = (uint32_t)vips_image_get_page_height(fin);
    info->frames = (uint32_t)(fin->Ysize / vips_image_get_page_height(fin));
out:
    if (fin)
        g_object_unref(fin);
    if (cut)
        g_object_unref(cut);
    if (thumb)
        g_object_unref(thumb);
    if (in)
        g_object_unref(in);
    if (src)
        g_object_unref(src);
    if (blob)
        vips_area_unref(VIPS_AREA(blob));
    free(stripped);
    g_free(enc);
    if (rc != OK && err->msg[0] == '\0')
        img_errf(err, "%s", err_str(rc));
    return rc;
}
