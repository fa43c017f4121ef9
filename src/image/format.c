/*
 * format.c - image format names, MIME types, extensions and magic-byte sniffing.
 *
 * The type of an upload is decided here from its first bytes only, never from
 * its name or its Content-Type.
 */
#include "image/image.h"
#include "image/image_int.h"

#include <string.h>

struct img_format_row {
    const char *name;
    const char *mime;
    const char *ext;
};

/* Indexed by enum img_format. */
static const struct img_format_row img_formats[] = {
    [IMG_UNKNOWN] = {"", "application/octet-stream", ""},
    [IMG_JPEG] = {"jpeg", "image/jpeg", "jpg"},
    [IMG_PNG] = {"png", "image/png", "png"},
    [IMG_GIF] = {"gif", "image/gif", "gif"},
    [IMG_WEBP] = {"webp", "image/webp", "webp"},
    [IMG_AVIF] = {"avif", "image/avif", "avif"},
    [IMG_HEIF] = {"heif", "image/heif", "heic"},
    [IMG_TIFF] = {"tiff", "image/tiff", "tif"},
    [IMG_BMP] = {"bmp", "image/bmp", "bmp"},
};

#define IMG_NFORMATS (sizeof(img_formats) / sizeof(img_formats[0]))

/* Extensions accepted besides the canonical ones. */
static const struct {
    const char *ext;
    enum img_format f;
} img_ext_aliases[] = {
    {"jpeg", IMG_JPEG},
    {"heif", IMG_HEIF},
    {"tiff", IMG_TIFF},
};

static const struct img_format_row *img_format_row(enum img_format f)
{
    if ((unsigned)f >= IMG_NFORMATS)
        f = IMG_UNKNOWN;
    return &img_formats[f];
}

const char *img_format_name(enum img_format f)
{
    return img_format_row(f)->name;
}

const char *img_format_mime(enum img_format f)
{
    return img_format_row(f)->mime;
}

const char *img_format_ext(enum img_format f)
{
    return img_format_row(f)->ext;
}

enum img_format img_format_from_name(struct str name)
{
    for (size_t i = 1; i < IMG_NFORMATS; i++)
        if (name.len > 0 && str_eq(name, img_formats[i].name))
            return (enum img_format)i;
    return IMG_UNKNOWN;
}

enum img_format img_format_from_ext(struct str ext)
{
    if (ext.len == 0)
        return IMG_UNKNOWN;
    for (size_t i = 1; i < IMG_NFORMATS; i++)
        if (str_eq(ext, img_formats[i].ext))
            return (enum img_format)i;
    for (size_t i = 0; i < sizeof(img_ext_aliases) / sizeof(img_ext_aliases[0]); i++)
        if (str_eq(ext, img_ext_aliases[i].ext))
            return img_ext_aliases[i].f;
    return IMG_UNKNOWN;
}

static bool img_brand_is(const uint8_t *b, const char *const *set)
{
    for (; *set; set++)
        if (memcmp(b, *set, 4) == 0)
            return true;
    return false;
}

/*
 * ISO BMFF: a major brand of avif/avis is AVIF; one of the HEVC brands is
 * HEIF; a generic major brand (mif1, msf1, ...) is decided by the compatible
 * brands, AV1 first. Anything else in an ftyp box (MP4, MOV, CR3) is unknown.
 */
static enum img_format img_sniff_bmff(const uint8_t *p, size_t n)
{
    static const char *const avif[] = {"avif", "avis", NULL};
    static const char *const hevc[] = {"heic", "heix", "hevc", "hevx", NULL};
    static const char *const heif[] = {"heic", "heix", "hevc", "hevx", "mif1",
                                       "msf1", "heim", "heis", NULL};
    uint32_t box = img_be32(p);
    size_t end;
    bool any_avif = false, any_heif = false;

    if (box < 16)
        return IMG_UNKNOWN;
    if (img_brand_is(p + 8, avif))
        return IMG_AVIF;
    if (img_brand_is(p + 8, hevc))
        return IMG_HEIF;
    end = box < n ? box : n;
    for (size_t i = 16; i + 4 <= end; i += 4) {
        any_avif = any_avif || img_brand_is(p + i, avif);
        any_heif = any_heif || img_brand_is(p + i, heif);
    }
    if (any_avif)
        return IMG_AVIF;
    if (any_heif || img_brand_is(p + 8, heif))
        return IMG_HEIF;
    return IMG_UNKNOWN;
}

enum img_format img_sniff(const uint8_t *p, size_t n)
{
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};

    if (p == NULL)
        return IMG_UNKNOWN;
    if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF)
        return IMG_JPEG;
    if (n >= 8 && memcmp(p, png_sig, 8) == 0)
        return IMG_PNG;
    if (n >= 6 && (memcmp(p, "GIF87a", 6) == 0 || memcmp(p, "GIF89a", 6) == 0))
        return IMG_GIF;
    if (n >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0)
        return IMG_WEBP;
    if (n >= 16 && memcmp(p + 4, "ftyp", 4) == 0)
        return img_sniff_bmff(p, n);
    if (n >= 4 && (memcmp(p, "II*\0", 4) == 0 || memcmp(p, "MM\0*", 4) == 0))
        return IMG_TIFF;
    if (n >= 18 && p[0] == 'B' && p[1] == 'M') {
        switch (img_le32(p + 14)) {
        case 12:
        case 40:
        case 52:
        case 56:
        case 108:
        case 124:
            return IMG_BMP;
        default:
            break;
        }
    }
    return IMG_UNKNOWN;
}
