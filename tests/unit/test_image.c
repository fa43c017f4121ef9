/*
 * test_image.c - the image pipeline: format tables, sniffing, the byte-level
 * parsers on hand-made buffers, and img_ingest / img_variant on every file of
 * the dev corpus (TESSERA_TESTDATA, with its manifest.tsv).
 */
#include "core/err.h"
#include "image/image.h"
#include "image/image_int.h"

#include <dirent.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* cmocka needs setjmp.h, stdarg.h and stddef.h first. */
#include <cmocka.h>

#define MAX_ROWS 128

struct row {
    char file[128];
    char format[32];
    uint32_t width, height, frames;
    bool accept;
    char why[512];
};

static struct row rows[MAX_ROWS];
static size_t nrows;
static const char *corpus;
static char tmpdir[64];

static const struct img_limits default_limits = {
    .max_pixels = 100000000,
    .max_frames = 1000,
    .max_animation_pixels = 500000000,
};

/* ---- helpers ---- */

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    uint8_t *buf;
    long sz;

    assert_non_null(fp);
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    sz = ftell(fp);
    assert_true(sz >= 0);
    rewind(fp);
    buf = malloc((size_t)sz + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)sz, fp), (size_t)sz);
    fclose(fp);
    *len = (size_t)sz;
    return buf;
}

static void spill(const char *path, const void *p, size_t n)
{
    FILE *fp = fopen(path, "wb");

    assert_non_null(fp);
    assert_int_equal(fwrite(p, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

static bool contains(const uint8_t *p, size_t n, const void *needle, size_t k)
{
    return k <= n && memmem(p, n, needle, k) != NULL;
}

#define CONTAINS(p, n, lit) contains((p), (n), (lit), sizeof(lit) - 1)

static void corpus_path(char *out, size_t cap, const char *file)
{
    if (snprintf(out, cap, "%s/%s", corpus, file) >= (int)cap)
        fail_msg("path too long: %s", file);
}

static void tmp_path(char *out, size_t cap, const char *name)
{
    if (snprintf(out, cap, "%s/%s", tmpdir, name) >= (int)cap)
        fail_msg("path too long: %s", name);
}

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static const struct row *find_row(const char *file)
{
    for (size_t i = 0; i < nrows; i++)
        if (strcmp(rows[i].file, file) == 0)
            return &rows[i];
    fail_msg("%s is not in the manifest", file);
    return NULL;
}

static void load_manifest(void)
{
    char path[512], line[4096];
    FILE *fp;

    corpus_path(path, sizeof(path), "manifest.tsv");
    fp = fopen(path, "r");
    if (fp == NULL)
        return;
    if (fgets(line, sizeof(line), fp) == NULL) { /* header */
        fclose(fp);
        return;
    }
    while (nrows < MAX_ROWS && fgets(line, sizeof(line), fp)) {
        char *cols[8] = {0};
        char *s = line;
        struct row *r = &rows[nrows];

        for (int c = 0; c < 8 && s; c++) {
            cols[c] = s;
            s = strchr(s, '\t');
            if (s)
                *s++ = '\0';
        }
        if (cols[6] == NULL)
            continue;
        snprintf(r->file, sizeof(r->file), "%s", cols[0]);
        snprintf(r->format, sizeof(r->format), "%s", cols[1]);
        r->width = (uint32_t)strtoul(cols[2], NULL, 10);
        r->height = (uint32_t)strtoul(cols[3], NULL, 10);
        r->frames = (uint32_t)strtoul(cols[4], NULL, 10);
        r->accept = strcmp(cols[5], "accept") == 0;
        snprintf(r->why, sizeof(r->why), "%s", cols[6]);
        nrows++;
    }
    fclose(fp);
}

static void need_corpus(void)
{
    if (corpus == NULL || nrows == 0) {
        print_message("TESSERA_TESTDATA not set or no manifest.tsv: skipped\n");
        skip();
    }
}

/* ---- format tables ---- */

static void test_format_tables(void **state)
{
    static const struct {
        enum img_format f;
        const char *name, *mime, *ext;
    } t[] = {
        {IMG_JPEG, "jpeg", "image/jpeg", "jpg"},  {IMG_PNG, "png", "image/png", "png"},
        {IMG_GIF, "gif", "image/gif", "gif"},     {IMG_WEBP, "webp", "image/webp", "webp"},
        {IMG_AVIF, "avif", "image/avif", "avif"}, {IMG_HEIF, "heif", "image/heif", "heic"},
        {IMG_TIFF, "tiff", "image/tiff", "tif"},  {IMG_BMP, "bmp", "image/bmp", "bmp"},
    };
    (void)state;

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        assert_string_equal(img_format_name(t[i].f), t[i].name);
        assert_string_equal(img_format_mime(t[i].f), t[i].mime);
        assert_string_equal(img_format_ext(t[i].f), t[i].ext);
        assert_int_equal(img_format_from_name(str_from(t[i].name)), t[i].f);
        assert_int_equal(img_format_from_ext(str_from(t[i].ext)), t[i].f);
    }
    assert_string_equal(img_format_name(IMG_UNKNOWN), "");
    assert_int_equal(img_format_from_ext(STR_LIT("jpeg")), IMG_JPEG);
    assert_int_equal(img_format_from_ext(STR_LIT("heif")), IMG_HEIF);
    assert_int_equal(img_format_from_ext(STR_LIT("tiff")), IMG_TIFF);
    assert_int_equal(img_format_from_ext(STR_LIT("svg")), IMG_UNKNOWN);
    assert_int_equal(img_format_from_ext(STR_LIT("")), IMG_UNKNOWN);
    assert_int_equal(img_format_from_ext(STR_LIT("JPG")), IMG_UNKNOWN);
    assert_int_equal(img_format_from_name(STR_LIT("jpg")), IMG_UNKNOWN);
    assert_int_equal(img_format_from_name(STR_LIT("")), IMG_UNKNOWN);
}

/* ---- sniffing ---- */

static void ftyp(uint8_t *b, const char *major, const char *compat)
{
    size_t nc = strlen(compat) / 4;
    uint32_t size = (uint32_t)(16 + 4 * nc);

    memset(b, 0, 64);
    b[0] = (uint8_t)(size >> 24);
    b[1] = (uint8_t)(size >> 16);
    b[2] = (uint8_t)(size >> 8);
    b[3] = (uint8_t)size;
    memcpy(b + 4, "ftyp", 4);
    memcpy(b + 8, major, 4);
    memcpy(b + 16, compat, 4 * nc);
}

static void test_sniff_magic(void **state)
{
    uint8_t b[64];
    (void)state;

    assert_int_equal(img_sniff((const uint8_t *)"\xFF\xD8\xFF", 3), IMG_JPEG);
    assert_int_equal(img_sniff((const uint8_t *)"\xFF\xD8", 2), IMG_UNKNOWN);
    assert_int_equal(img_sniff((const uint8_t *)"\x89PNG\r\n\x1a\n", 8), IMG_PNG);
    assert_int_equal(img_sniff((const uint8_t *)"GIF87a", 6), IMG_GIF);
    assert_int_equal(img_sniff((const uint8_t *)"GIF89a", 6), IMG_GIF);
    assert_int_equal(img_sniff((const uint8_t *)"GIF88a", 6), IMG_UNKNOWN);
    assert_int_equal(img_sniff((const uint8_t *)"RIFF\0\0\0\0WEBP", 12), IMG_WEBP);
    assert_int_equal(img_sniff((const uint8_t *)"RIFF\0\0\0\0WAVE", 12), IMG_UNKNOWN);
    assert_int_equal(img_sniff((const uint8_t *)"II*\0\x08\0\0\0", 8), IMG_TIFF);
    assert_int_equal(img_sniff((const uint8_t *)"MM\0*\0\0\0\x08", 8), IMG_TIFF);
    assert_int_equal(img_sniff(NULL, 0), IMG_UNKNOWN);
    assert_int_equal(img_sniff((const uint8_t *)"", 0), IMG_UNKNOWN);
    assert_int_equal(img_sniff((const uint8_t *)"<svg xmlns=", 11), IMG_UNKNOWN);

    ftyp(b, "avif", "mif1miaf");
    assert_int_equal(img_sniff(b, 24), IMG_AVIF);
    ftyp(b, "heic", "mif1heic");
    assert_int_equal(img_sniff(b, 24), IMG_HEIF);
    ftyp(b, "mif1", "mif1avif");
    assert_int_equal(img_sniff(b, 24), IMG_AVIF);
    ftyp(b, "mif1", "mif1heic");
    assert_int_equal(img_sniff(b, 24), IMG_HEIF);
    ftyp(b, "heic", "avifmif1"); /* the major brand decides */
    assert_int_equal(img_sniff(b, 24), IMG_HEIF);
    ftyp(b, "avis", "msf1");
    assert_int_equal(img_sniff(b, 20), IMG_AVIF);
    ftyp(b, "isom", "isomavc1mp41");
    assert_int_equal(img_sniff(b, 28), IMG_UNKNOWN);

    memset(b, 0, sizeof(b));
    b[0] = 'B';
    b[1] = 'M';
    b[14] = 40;
    assert_int_equal(img_sniff(b, 54), IMG_BMP);
    b[14] = 124;
    assert_int_equal(img_sniff(b, 54), IMG_BMP);
    b[14] = 41;
    assert_int_equal(img_sniff(b, 54), IMG_UNKNOWN);
    b[14] = 40;
    assert_int_equal(img_sniff(b, 17), IMG_UNKNOWN);
}

static enum img_format expected_sniff(const struct row *r)
{
    static const struct {
        const char *prefix;
        enum img_format f;
    } map[] = {
        {"jpeg", IMG_JPEG}, {"png", IMG_PNG},   {"gif", IMG_GIF},   {"webp", IMG_WEBP},
        {"avif", IMG_AVIF}, {"heif", IMG_HEIF}, {"tiff", IMG_TIFF}, {"bmp", IMG_BMP},
    };

    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        size_t k = strlen(map[i].prefix);
        if (strncmp(r->format, map[i].prefix, k) == 0 &&
            (r->format[k] == '\0' || r->format[k] == '-'))
            return map[i].f;
    }
    return IMG_UNKNOWN; /* svg, html, empty, random */
}

static void test_sniff_corpus(void **state)
{
    (void)state;
    need_corpus();
    for (size_t i = 0; i < nrows; i++) {
        char path[512];
        size_t n;
        uint8_t *p;

        corpus_path(path, sizeof(path), rows[i].file);
        p = slurp(path, &n);
        if (img_sniff(p, n) != expected_sniff(&rows[i]))
            fail_msg("%s sniffed as '%s'", rows[i].file, img_format_name(img_sniff(p, n)));
        if (rows[i].accept)
            assert_string_equal(img_format_name(img_sniff(p, n)), rows[i].format);
        free(p);
    }
}

/* ---- limits ---- */

static void test_limits(void **state)
{
    struct img_error err;
    (void)state;

    assert_int_equal(img_check_limits(10000, 10000, 1, &default_limits, &err), OK);
    assert_int_equal(img_check_limits(30000, 30000, 1, &default_limits, &err), E_BADIMAGE);
    assert_string_equal(err.msg,
                        "image is 30000x30000 (900000000 pixels), over the limit of 100000000");
    assert_int_equal(img_check_limits(10, 10, 1001, &default_limits, &err), E_BADIMAGE);
    assert_non_null(strstr(err.msg, "1001 frames"));
    assert_int_equal(img_check_limits(1000, 1000, 600, &default_limits, &err), E_BADIMAGE);
    assert_non_null(strstr(err.msg, "600000000 pixels"));
    assert_int_equal(img_check_limits(1000, 1000, 500, &default_limits, &err), OK);
    assert_int_equal(img_check_limits(0, 10, 1, &default_limits, &err), E_BADIMAGE);
    assert_int_equal(img_check_limits(65535, 65535, 1, &default_limits, &err), E_BADIMAGE);
}

/* ---- byte-level parsers on hand-made buffers ---- */

static size_t put(uint8_t *b, size_t o, const void *p, size_t n)
{
    memcpy(b + o, p, n);
    return o + n;
}

static size_t png_chunk(uint8_t *b, size_t o, const char *type, const void *data, uint32_t len)
{
    uint8_t hdr[8] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                      (uint8_t)len};

    memcpy(hdr + 4, type, 4);
    o = put(b, o, hdr, 8);
    o = put(b, o, data, len);
    return put(b, o, "\0\0\0\0", 4); /* CRC: not checked by the walk */
}

static size_t tiny_png(uint8_t *b, bool text)
{
    static const uint8_t ihdr[13] = {0, 0, 0, 2, 0, 0, 0, 3, 8, 2, 0, 0, 0};
    size_t o = put(b, 0, "\x89PNG\r\n\x1a\n", 8);

    o = png_chunk(b, o, "IHDR", ihdr, 13);
    if (text)
        o = png_chunk(b, o, "tEXt", "Comment\0hello", 13);
    o = png_chunk(b, o, "IDAT", "\x78\x9c\x03\x00", 4);
    return png_chunk(b, o, "IEND", "", 0);
}

static void test_png_walk(void **state)
{
    uint8_t b[256], *out;
    size_t n, out_len;
    struct img_probe pr;
    struct img_error err;
    (void)state;

    n = tiny_png(b, false);
    assert_int_equal(img_probe_bytes(IMG_PNG, b, n, &pr, &err), OK);
    assert_int_equal(pr.width, 2);
    assert_int_equal(pr.height, 3);
    assert_int_equal(img_strip(IMG_PNG, b, n, &out, &out_len), OK);
    assert_null(out); /* nothing to remove */

    b[n] = 'x'; /* one byte after IEND */
    assert_int_equal(img_probe_bytes(IMG_PNG, b, n + 1, &pr, &err), E_BADIMAGE);
    assert_non_null(strstr(err.msg, "1 unexpected bytes after the end of the png"));
    assert_int_equal(img_probe_bytes(IMG_PNG, b, n - 12, &pr, &err), E_BADIMAGE); /* no IEND */
    assert_non_null(strstr(err.msg, "truncated"));

    n = tiny_png(b, true);
    assert_int_equal(img_probe_bytes(IMG_PNG, b, n, &pr, &err), OK);
    assert_int_equal(img_strip(IMG_PNG, b, n, &out, &out_len), OK);
    assert_non_null(out);
    assert_int_equal(out_len, n - 25);
    assert_false(CONTAINS(out, out_len, "tEXt"));
    assert_true(CONTAINS(out, out_len, "IDAT"));
    assert_int_equal(img_probe_bytes(IMG_PNG, out, out_len, &pr, &err), OK);
    free(out);
}

static size_t tiny_gif(uint8_t *b, uint16_t sw, uint16_t sh, bool extras)
{
    static const uint8_t image[] = {0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0x02, 0x02, 0x44, 0x01, 0x00};
    size_t o = put(b, 0, "GIF89a", 6);
    uint8_t screen[7] = {
        (uint8_t)sw, (uint8_t)(sw >> 8), (uint8_t)sh, (uint8_t)(sh >> 8), 0x80, 0, 0};

    o = put(b, o, screen, 7);
    o = put(b, o, "\0\0\0\xff\xff\xff", 6); /* global colour table, 2 colours */
    if (extras) {
        o = put(b, o, "\x21\xFF\x0BNETSCAPE2.0\x03\x01\x00\x00\x00", 19);
        o = put(b, o, "\x21\xFE\x05hello\x00", 9);
        o = put(b, o, "\x21\xFF\x0BXMP DataXMP\x03<x>\x00", 19);
    }
    o = put(b, o, image, sizeof(image));
    return put(b, o, "\x3B", 1);
}

static void test_gif_walk(void **state)
{
    uint8_t b[256], *out;
    size_t n, out_len;
    struct img_probe pr;
    struct img_error err;
    (void)state;

    n = tiny_gif(b, 1, 1, false);
    assert_int_equal(img_probe_bytes(IMG_GIF, b, n, &pr, &err), OK);
    assert_int_equal(pr.width, 1);
    assert_int_equal(pr.frames, 1);
    assert_int_equal(img_strip(IMG_GIF, b, n, &out, &out_len), OK);
    assert_null(out);

    memcpy(b + n, "<html>", 6); /* after the trailer */
    assert_int_equal(img_probe_bytes(IMG_GIF, b, n + 6, &pr, &err), E_BADIMAGE);
    assert_non_null(strstr(err.msg, "6 unexpected bytes after the end of the gif"));
    assert_int_equal(img_probe_bytes(IMG_GIF, b, n - 1, &pr, &err), E_BADIMAGE); /* no trailer */

    /* The logical screen counts, not only the frame. */
    n = tiny_gif(b, 65535, 65535, false);
    assert_int_equal(img_probe_bytes(IMG_GIF, b, n, &pr, &err), OK);
    assert_int_equal(pr.width, 65535);
    assert_int_equal(pr.height, 65535);
    assert_int_equal(img_check_limits(pr.width, pr.height, pr.frames, &default_limits, &err),
                     E_BADIMAGE);

    n = tiny_gif(b, 1, 1, true);
    assert_int_equal(img_probe_bytes(IMG_GIF, b, n, &pr, &err), OK);
    assert_int_equal(img_strip(IMG_GIF, b, n, &out, &out_len), OK);
    assert_non_null(out);
    assert_int_equal(out_len, n - 9 - 19);
    assert_true(CONTAINS(out, out_len, "NETSCAPE2.0"));
    assert_false(CONTAINS(out, out_len, "hello"));
    assert_false(CONTAINS(out, out_len, "XMP DataXMP"));
    assert_int_equal(img_probe_bytes(IMG_GIF, out, out_len, &pr, &err), OK);
    free(out);
}

static void le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static size_t tiny_webp(uint8_t *b, bool exif)
{
    size_t o = put(b, 0, "RIFF\0\0\0\0WEBP", 12);

    /* VP8X: EXIF flag, 1x1 canvas */
    o = put(b, o, "VP8X\x0a\0\0\0", 8);
    o = put(b, o, exif ? "\x08\0\0\0\0\0\0\0\0\0" : "\0\0\0\0\0\0\0\0\0\0", 10);
    o = put(b, o, "VP8L\x05\0\0\0\x2f\0\0\0\0\0", 14); /* 5 bytes + pad */
    if (exif)
        o = put(b, o, "EXIF\x05\0\0\0MM\0*x\0", 14); /* odd size + pad */
    le32(b + 4, (uint32_t)(o - 8));
    return o;
}

static void test_webp_walk(void **state)
{
    uint8_t b[256], *out;
    size_t n, out_len;
    struct img_probe pr;
    struct img_error err;
    (void)state;

    n = tiny_webp(b, true);
    assert_int_equal(img_probe_bytes(IMG_WEBP, b, n, &pr, &err), OK);
    assert_int_equal(pr.width, 1);
    assert_true(pr.lossless);
    assert_int_equal(img_strip(IMG_WEBP, b, n, &out, &out_len), OK);
    assert_non_null(out);
    assert_int_equal(out_len, n - 14);
    assert_false(CONTAINS(out, out_len, "EXIF"));
    assert_int_equal(img_le32(out + 4), out_len - 8); /* RIFF size fixed */
    assert_int_equal(out[20] & 0x0C, 0);              /* VP8X EXIF/XMP flags cleared */
    assert_int_equal(img_probe_bytes(IMG_WEBP, out, out_len, &pr, &err), OK);
    free(out);

    n = tiny_webp(b, false);
    assert_int_equal(img_strip(IMG_WEBP, b, n, &out, &out_len), OK);
    assert_null(out);
    b[n] = 0;
    assert_int_equal(img_probe_bytes(IMG_WEBP, b, n + 1, &pr, &err), E_BADIMAGE);
    assert_non_null(strstr(err.msg, "after the end of the webp"));
    le32(b + 4, (uint32_t)(n + 10));
    assert_int_equal(img_probe_bytes(IMG_WEBP, b, n, &pr, &err), E_BADIMAGE);
}

static size_t tiny_jpeg(uint8_t *b, bool app1)
{
    static const uint8_t sof[] = {0xFF, 0xC0, 0, 11, 8, 0, 2, 0, 3, 1, 1, 0x11, 0};
    static const uint8_t sos[] = {0xFF, 0xDA, 0, 8, 1, 1, 0, 0, 0x3F, 0};
    /* entropy data with a stuffed zero, a restart marker and a fill byte */
    static const uint8_t data[] = {0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF};
    size_t o = put(b, 0, "\xFF\xD8", 2);

    o = put(b, o, "\xFF\xE0\x00\x04JF", 6);
    if (app1)
        o = put(b, o,
                "\xFF\xE1\x00\x08"
                "Exif\0\0",
                10);
    o = put(b, o, "\xFF\xFE\x00\x05hi!", 7);
    o = put(b, o, sof, sizeof(sof));
    o = put(b, o, sos, sizeof(sos));
    o = put(b, o, data, sizeof(data));
    return put(b, o, "\xFF\xD9", 2);
}

static void test_jpeg_walk(void **state)
{
    uint8_t b[256], *out;
    size_t n, out_len;
    struct img_probe pr;
    struct img_error err;
    (void)state;

    n = tiny_jpeg(b, true);
    assert_int_equal(img_probe_bytes(IMG_JPEG, b, n, &pr, &err), OK);
    assert_int_equal(pr.width, 3);
    assert_int_equal(pr.height, 2);
    assert_int_equal(img_strip(IMG_JPEG, b, n, &out, &out_len), OK);
    assert_non_null(out);
    assert_false(CONTAINS(out, out_len, "Exif"));
    assert_false(CONTAINS(out, out_len, "hi!"));
    assert_true(CONTAINS(out, out_len, "JF"));
    assert_int_equal(img_probe_bytes(IMG_JPEG, out, out_len, &pr, &err), OK);
    assert_memory_equal(out + out_len - 10, b + n - 10, 10); /* scan data untouched */
    free(out);

    b[n] = 0;
    assert_int_equal(img_probe_bytes(IMG_JPEG, b, n + 1, &pr, &err), E_BADIMAGE);
    assert_non_null(strstr(err.msg, "1 unexpected bytes after the end of the jpeg"));
    assert_int_equal(img_probe_bytes(IMG_JPEG, b, n - 2, &pr, &err), E_BADIMAGE); /* no EOI */
    assert_non_null(strstr(err.msg, "truncated"));
    /* the frame header declares 50000x50000 */
    n = tiny_jpeg(b, false);
    b[8 + 7 + 5] = 0xC3;
    b[8 + 7 + 6] = 0x50;
    b[8 + 7 + 7] = 0xC3;
    b[8 + 7 + 8] = 0x50;
    assert_int_equal(img_probe_bytes(IMG_JPEG, b, n, &pr, &err), OK);
    assert_int_equal(pr.width, 50000);
    assert_int_equal(pr.height, 50000);
}

/* A Multi-Picture JPEG: MPF in APP2, a secondary JPEG after the primary's EOI. */
static void test_jpeg_mpf(void **state)
{
    uint8_t b[512], *out;
    size_t n, m, out_len;
    struct img_probe pr;
    struct img_error err;
    (void)state;

    n = tiny_jpeg(b, false);
    /* insert APP2 "MPF\0" after SOI */
    memmove(b + 2 + 10, b + 2, n - 2);
    memcpy(b + 2, "\xFF\xE2\x00\x08MPF\0II", 10);
    n += 10;
    m = n + tiny_jpeg(b + n, false); /* the secondary image */
    assert_int_equal(img_probe_bytes(IMG_JPEG, b, m, &pr, &err), OK);
    assert_true(pr.trailing_mpf);
    assert_int_equal(img_strip(IMG_JPEG, b, m, &out, &out_len), OK);
    assert_non_null(out);
    assert_int_equal(out_len, n - 10 - 7); /* no secondary, no MPF, no COM */
    assert_int_equal(img_probe_bytes(IMG_JPEG, out, out_len, &pr, &err), OK);
    assert_false(pr.trailing_mpf);
    free(out);

    memcpy(b + n, "<html>", 6); /* MPF does not excuse anything else */
    assert_int_equal(img_probe_bytes(IMG_JPEG, b, n + 6, &pr, &err), E_BADIMAGE);
    n = tiny_jpeg(b, false); /* nor does a JPEG after a JPEG without MPF */
    m = n + tiny_jpeg(b + n, false);
    assert_int_equal(img_probe_bytes(IMG_JPEG, b, m, &pr, &err), E_BADIMAGE);
}

static size_t tiny_bmp(uint8_t *b)
{
    memset(b, 0, 58);
    b[0] = 'B';
    b[1] = 'M';
    le32(b + 2, 58);
    le32(b + 10, 54);
    le32(b + 14, 40);
    le32(b + 18, 1);
    le32(b + 22, 1);
    b[26] = 1;
    b[28] = 24;
    return 58;
}

static void test_bmp_and_bmff_walk(void **state)
{
    uint8_t b[256];
    size_t n;
    struct img_probe pr;
    struct img_error err;
    (void)state;

    n = tiny_bmp(b);
    assert_int_equal(img_probe_bytes(IMG_BMP, b, n, &pr, &err), OK);
    memcpy(b + n, "<script>", 8);
    assert_int_equal(img_probe_bytes(IMG_BMP, b, n + 8, &pr, &err), E_BADIMAGE);
    le32(b + 2, (uint32_t)n + 8); /* a lying file size does not help */
    assert_int_equal(img_probe_bytes(IMG_BMP, b, n + 8, &pr, &err), E_BADIMAGE);
    n = tiny_bmp(b);
    assert_int_equal(img_probe_bytes(IMG_BMP, b, n - 1, &pr, &err), E_BADIMAGE); /* truncated */

    ftyp(b, "heic", "mif1heic");
    memcpy(b + 24, "\0\0\0\x08meta", 8);
    assert_int_equal(img_probe_bytes(IMG_HEIF, b, 32, &pr, &err), OK);
    memcpy(b + 32, "junk", 4);
    assert_int_equal(img_probe_bytes(IMG_HEIF, b, 36, &pr, &err), E_BADIMAGE);
    memcpy(b + 24, "\0\0\0\x10meta", 8); /* box runs past the end */
    assert_int_equal(img_probe_bytes(IMG_HEIF, b, 32, &pr, &err), E_BADIMAGE);
}

/* Mutated corpus files: the walks never read out of bounds (run under ASan),
 * answer only OK or E_BADIMAGE, and what they strip still walks. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void test_walks_mutated(void **state)
{
    (void)state;
    need_corpus();
    for (size_t i = 0; i < nrows; i++) {
        char path[512];
        size_t n;
        uint8_t *orig, *p;
        enum img_format f;
        int rounds;

        corpus_path(path, sizeof(path), rows[i].file);
        orig = slurp(path, &n);
        f = img_sniff(orig, n);
        if (f == IMG_UNKNOWN) {
            free(orig);
            continue;
        }
        p = malloc(n + 64);
        assert_non_null(p);
        rounds = n > 500000 ? 20 : 300;
        for (int r = 0; r < rounds; r++) {
            struct img_probe pr;
            struct img_error err;
            size_t m = n, out_len;
            uint8_t *out;
            int rc;

            memcpy(p, orig, n);
            switch (rng() % 4) {
            case 0: /* flip a few bytes, mostly near the headers */
                for (int k = 0; k < 4; k++)
                    p[rng() % (k < 2 && n > 256 ? 256 : n)] ^= (uint8_t)(1 + rng() % 255);
                break;
            case 1: /* truncate */
                m = (size_t)(rng() % n);
                break;
            case 2: /* append */
                for (size_t k = 0; k < 1 + rng() % 63; k++)
                    p[m++] = (uint8_t)rng();
                break;
            default: /* overwrite a 32-bit field with an extreme value */
                if (n > 8) {
                    size_t at = (size_t)(rng() % (n - 4));
                    uint32_t v = (rng() & 1) ? 0xFFFFFFFFu : 0x80000000u;
                    memcpy(p + at, &v, 4);
                }
                break;
            }
            rc = img_probe_bytes(f, p, m, &pr, &err);
            assert_true(rc == OK || rc == E_BADIMAGE);
            if (rc != OK)
                continue;
            assert_int_equal(img_strip(f, p, m, &out, &out_len), OK);
            if (out != NULL) {
                assert_true(out_len < m);
                if (img_probe_bytes(f, out, out_len, &pr, &err) != OK)
                    fail_msg("%s: stripped bytes no longer walk: %s", rows[i].file, err.msg);
                free(out);
            }
        }
        free(p);
        free(orig);
    }
}

/* ---- img_ingest on the corpus ---- */

static bool is_bomb(const struct row *r)
{
    return strstr(r->format, "bomb") != NULL;
}

static void test_bombs_fast(void **state)
{
    struct rusage before, after;
    (void)state;
    need_corpus();
    getrusage(RUSAGE_SELF, &before);
    for (size_t i = 0; i < nrows; i++) {
        char in[512], out[512];
        struct img_info info;
        struct img_error err;
        bool unchanged;
        double t0, ms;
        int rc;

        if (!is_bomb(&rows[i]))
            continue;
        corpus_path(in, sizeof(in), rows[i].file);
        tmp_path(out, sizeof(out), "bomb.out");
        t0 = now_ms();
        rc = img_ingest(in, &default_limits, out, &unchanged, &info, &err);
        ms = now_ms() - t0;
        print_message("  %-45s %6.2f ms  %s\n", rows[i].file, ms, err.msg);
        assert_int_equal(rc, E_BADIMAGE);
        assert_true(ms < 200.0);
        assert_int_equal(access(out, F_OK), -1);
    }
    getrusage(RUSAGE_SELF, &after);
    /* Decoding any of them would take hundreds of MB. */
    assert_true(after.ru_maxrss - before.ru_maxrss < 64 * 1024);
}

static bool has_gps(const struct row *r)
{
    return strstr(r->why, "GPS") != NULL;
}

static void check_no_personal_metadata(const char *file, const uint8_t *p, size_t n)
{
    if (CONTAINS(p, n, "Tessera-Test-Camera") || CONTAINS(p, n, "corpus test data") ||
        CONTAINS(p, n, "Exif\0\0") || CONTAINS(p, n, "eXIf") || CONTAINS(p, n, "EXIF") ||
        CONTAINS(p, n, "ns.adobe.com/xap") || CONTAINS(p, n, "Paris"))
        fail_msg("%s: metadata survived normalisation", file);
}

static void test_ingest_corpus(void **state)
{
    (void)state;
    need_corpus();
    for (size_t i = 0; i < nrows; i++) {
        const struct row *r = &rows[i];
        char in[512], out[512];
        struct img_info info;
        struct img_error err;
        bool unchanged = false;
        double t0, ms;
        int rc;

        corpus_path(in, sizeof(in), r->file);
        tmp_path(out, sizeof(out), "ingest.out");
        unlink(out);
        t0 = now_ms();
        rc = img_ingest(in, &default_limits, out, &unchanged, &info, &err);
        ms = now_ms() - t0;
        print_message("  %-52s %-4s %7.1f ms %s %s\n", r->file, rc == OK ? "ok" : err_code(rc), ms,
                      rc == OK ? (unchanged ? "unchanged" : "rewritten") : "", err.msg);
        if (!r->accept) {
            int want = expected_sniff(r) == IMG_UNKNOWN ? E_UNSUPPORTED : E_BADIMAGE;

            if (rc != want)
                fail_msg("%s: got %s, want %s", r->file, err_str(rc), err_str(want));
            assert_true(strlen(err.msg) > 0);
            assert_int_equal(access(out, F_OK), -1);
            continue;
        }
        if (rc != OK)
            fail_msg("%s: %s (%s)", r->file, err_str(rc), err.msg);
        assert_string_equal(img_format_name(info.format), r->format);
        if (strstr(r->file, "_orient6_") || strstr(r->file, "_orient8_")) {
            assert_int_equal(info.width, r->height);
            assert_int_equal(info.height, r->width);
            assert_false(unchanged);
        } else {
            assert_int_equal(info.width, r->width);
            assert_int_equal(info.height, r->height);
        }
        assert_int_equal(info.frames, r->frames);
        if (has_gps(r))
            assert_false(unchanged);
        if (!unchanged) {
            size_t n;
            uint8_t *p = slurp(out, &n);
            struct img_info again;
            bool unchanged2 = false;
            char out2[512];

            check_no_personal_metadata(r->file, p, n);
            assert_int_equal(img_sniff(p, n), info.format);
            free(p);
            /* Normalisation is idempotent: the stored bytes pass again untouched (but a
             * TIFF, which is always re-encoded: its offsets could hide a payload). */
            tmp_path(out2, sizeof(out2), "ingest2.out");
            rc = img_ingest(out, &default_limits, out2, &unchanged2, &again, &err);
            if (rc != OK)
                fail_msg("%s: re-ingest: %s", r->file, err.msg);
            assert_true(unchanged2 == (info.format != IMG_TIFF));
            assert_int_equal(again.width, info.width);
            assert_int_equal(again.height, info.height);
            assert_int_equal(again.frames, info.frames);
        } else {
            assert_int_equal(access(out, F_OK), -1);
        }
        unlink(out);
    }
}

static void test_ingest_unchanged(void **state)
{
    /* Not accept_png_truecolor_astronaut_512x512.png: it carries tIME and a tEXt
     * comment ("File written by Adobe Photoshop"), which are stripped. */
    static const char *const files[] = {
        "accept_png_palette_coffee_64colors_600x400.png", "accept_jpeg_gray_camera_512x512.jpg",
        "accept_gif_static_hubble_500x436.gif", "accept_webp_lossy_hubble_1000x872.webp",
        "accept_jpeg_large_seeding_4000x3000.jpg"};
    (void)state;
    need_corpus();
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char in[512], out[512];
        struct img_info info;
        struct img_error err;
        bool unchanged = false;

        corpus_path(in, sizeof(in), files[i]);
        tmp_path(out, sizeof(out), "unchanged.out");
        assert_int_equal(img_ingest(in, &default_limits, out, &unchanged, &info, &err), OK);
        if (!unchanged)
            fail_msg("%s was rewritten", files[i]);
        assert_int_equal(access(out, F_OK), -1);
    }
    /* ... and the astronaut is rewritten only by dropping those two chunks */
    {
        char in[512], out[512];
        struct img_info info;
        struct img_error err;
        bool unchanged = true;
        size_t n, m;
        uint8_t *p, *q;

        corpus_path(in, sizeof(in), "accept_png_truecolor_astronaut_512x512.png");
        tmp_path(out, sizeof(out), "astronaut.out");
        assert_int_equal(img_ingest(in, &default_limits, out, &unchanged, &info, &err), OK);
        assert_false(unchanged);
        p = slurp(in, &n);
        q = slurp(out, &m);
        assert_int_equal(m, n - (12 + 7) - (12 + 44));
        assert_true(CONTAINS(q, m, "iCCP"));
        assert_false(CONTAINS(q, m, "tEXt"));
        assert_false(CONTAINS(q, m, "tIME"));
        free(p);
        free(q);
    }
}

/* The rocket JPEG (Adobe RGB ICC) with a COM segment, then with EXIF orientation 6. */
static void test_ingest_keeps_icc(void **state)
{
    static const uint8_t exif[] = {
        0xFF, 0xE1, 0x00, 0x22, 'E', 'x', 'i', 'f', 0, 0, 'M', 'M', 0, 0x2A, 0, 0, 0, 8,
        0,    1,    0x01, 0x12, 0,   3,   0,   0,   0, 1, 0,   6,   0, 0,    0, 0, 0, 0,
    };
    char in[512], tmp[512], out[512];
    const struct row *r;
    struct img_info info;
    struct img_error err;
    bool unchanged;
    uint8_t *p, *q;
    size_t n, m;
    (void)state;
    need_corpus();

    r = find_row("accept_jpeg_baseline_rocket_640x427.jpg");
    corpus_path(in, sizeof(in), r->file);
    p = slurp(in, &n);
    assert_true(CONTAINS(p, n, "ICC_PROFILE"));
    q = malloc(n + sizeof(exif));
    assert_non_null(q);
    tmp_path(out, sizeof(out), "rocket.out");

    /* byte-level strip: its comment goes, the profile and the scan stay */
    assert_int_equal(img_ingest(in, &default_limits, out, &unchanged, &info, &err), OK);
    assert_false(unchanged);
    free(q);
    q = slurp(out, &m);
    assert_int_equal(m, n - 30); /* its 26-byte COM segment */
    assert_true(CONTAINS(q, m, "ICC_PROFILE"));
    assert_memory_equal(q + m - 100000, p + n - 100000, 100000);
    free(q);

    /* orientation 6: re-encoded upright, still with its profile */
    q = malloc(n + sizeof(exif));
    assert_non_null(q);
    memcpy(q, p, 2);
    memcpy(q + 2, exif, sizeof(exif));
    memcpy(q + 2 + sizeof(exif), p + 2, n - 2);
    tmp_path(tmp, sizeof(tmp), "rocket-orient6.jpg");
    spill(tmp, q, n + sizeof(exif));
    free(q);
    assert_int_equal(img_ingest(tmp, &default_limits, out, &unchanged, &info, &err), OK);
    assert_false(unchanged);
    assert_int_equal(info.width, 427);
    assert_int_equal(info.height, 640);
    q = slurp(out, &m);
    assert_true(CONTAINS(q, m, "ICC_PROFILE"));
    assert_false(CONTAINS(q, m, "Exif"));
    free(q);
    free(p);
}

static void test_ingest_errors(void **state)
{
    char out[512], tmp[512];
    struct img_info info;
    struct img_error err;
    bool unchanged;
    (void)state;

    tmp_path(out, sizeof(out), "err.out");
    assert_int_equal(
        img_ingest("/nonexistent/x.jpg", &default_limits, out, &unchanged, &info, &err), E_IO);
    assert_true(strlen(err.msg) > 0);
    /* a tiny hand-made GIF with trailing bytes never reaches libvips */
    {
        uint8_t b[128];
        size_t n = tiny_gif(b, 1, 1, false);

        memcpy(b + n, "<html>", 6);
        tmp_path(tmp, sizeof(tmp), "poly.gif");
        spill(tmp, b, n + 6);
        assert_int_equal(img_ingest(tmp, &default_limits, out, &unchanged, &info, &err),
                         E_BADIMAGE);
        /* without them it is accepted */
        spill(tmp, b, n);
        assert_int_equal(img_ingest(tmp, &default_limits, out, &unchanged, &info, &err), OK);
        assert_true(unchanged);
    }
    /* stricter limits apply to real files too */
    if (corpus != NULL && nrows > 0) {
        struct img_limits small = {
            .max_pixels = 100000, .max_frames = 3, .max_animation_pixels = 1000000};
        char in[512];

        corpus_path(in, sizeof(in), "accept_png_truecolor_astronaut_512x512.png");
        assert_int_equal(img_ingest(in, &small, out, &unchanged, &info, &err), E_BADIMAGE);
        assert_string_equal(err.msg, "image is 512x512 (262144 pixels), over the limit of 100000");
        corpus_path(in, sizeof(in), "accept_gif_animated_4frames_chelsea_225x150.gif");
        assert_int_equal(img_ingest(in, &small, out, &unchanged, &info, &err), E_BADIMAGE);
        assert_non_null(strstr(err.msg, "4 frames"));
        corpus_path(in, sizeof(in), "accept_webp_animated_4frames_chelsea_225x150.webp");
        assert_int_equal(img_ingest(in, &small, out, &unchanged, &info, &err), E_BADIMAGE);
    }
}

/* The corpus TIFF with a Make tag added to IFD0 (a new IFD0 appended at the end). */
static void test_ingest_tiff_metadata(void **state)
{
    static const char make[] = "Tessera-Test-Camera";
    char in[512], tmp[512], out[512];
    struct img_probe pr;
    struct img_info info;
    struct img_error err;
    bool unchanged;
    uint8_t *p, *q;
    size_t n, m, o;
    uint32_t ifd, cnt, k, make_at;
    (void)state;
    need_corpus();

    corpus_path(in, sizeof(in), "accept_tiff_lzw_coffee_600x400.tif");
    p = slurp(in, &n);
    assert_memory_equal(p, "II*\0", 4);
    ifd = img_le32(p + 4);
    cnt = img_le16(p + ifd);
    q = malloc(n + sizeof(make) + 2 + (cnt + 1) * 12 + 4 + 4);
    assert_non_null(q);
    memcpy(q, p, n);
    o = n + (n & 1);
    q[n] = 0;
    make_at = (uint32_t)o;
    memcpy(q + o, make, sizeof(make));
    o += sizeof(make) + (sizeof(make) & 1);
    le32(q + 4, (uint32_t)o); /* the new IFD0 */
    q[o] = (uint8_t)(cnt + 1);
    q[o + 1] = (uint8_t)((cnt + 1) >> 8);
    o += 2;
    for (k = 0; k < cnt && img_le16(p + ifd + 2 + k * 12) < 271; k++, o += 12)
        memcpy(q + o, p + ifd + 2 + k * 12, 12);
    memcpy(q + o, "\x0f\x01\x02\x00", 4); /* 271 Make, ASCII */
    le32(q + o + 4, sizeof(make));
    le32(q + o + 8, make_at);
    o += 12;
    for (; k < cnt; k++, o += 12)
        memcpy(q + o, p + ifd + 2 + k * 12, 12);
    memset(q + o, 0, 4); /* no next IFD */
    o += 4;
    tmp_path(tmp, sizeof(tmp), "make.tif");
    spill(tmp, q, o);
    assert_int_equal(img_probe_bytes(IMG_TIFF, q, o, &pr, &err), OK);
    assert_true(pr.has_meta);
    assert_int_equal(pr.width, 600);
    free(q);
    free(p);

    tmp_path(out, sizeof(out), "make.out.tif");
    assert_int_equal(img_ingest(tmp, &default_limits, out, &unchanged, &info, &err), OK);
    assert_false(unchanged);
    assert_int_equal(info.format, IMG_TIFF);
    assert_int_equal(info.width, 600);
    assert_int_equal(info.height, 400);
    q = slurp(out, &m);
    assert_int_equal(img_sniff(q, m), IMG_TIFF);
    check_no_personal_metadata(tmp, q, m);
    free(q);
}

static const char polyglot_html[] = "<html><body><script>alert(document.domain)</script></body>";

/* A TIFF followed by an HTML document: stored re-encoded, the document gone. */
static void test_polyglot_tiff(void **state)
{
    char in[512], tmp[512], out[512];
    struct img_info info;
    struct img_error err;
    bool unchanged = true;
    uint8_t *p, *q;
    size_t n, m;
    (void)state;
    need_corpus();

    corpus_path(in, sizeof(in), "accept_tiff_lzw_coffee_600x400.tif");
    p = slurp(in, &n);
    q = malloc(n + sizeof(polyglot_html));
    assert_non_null(q);
    memcpy(q, p, n);
    memcpy(q + n, polyglot_html, sizeof(polyglot_html));
    tmp_path(tmp, sizeof(tmp), "polyglot.tif");
    spill(tmp, q, n + sizeof(polyglot_html));
    free(q);
    free(p);
    tmp_path(out, sizeof(out), "polyglot.out.tif");
    assert_int_equal(img_ingest(tmp, &default_limits, out, &unchanged, &info, &err), OK);
    assert_false(unchanged); /* every TIFF is re-encoded */
    assert_int_equal(info.format, IMG_TIFF);
    q = slurp(out, &m);
    assert_int_equal(img_sniff(q, m), IMG_TIFF);
    assert_null(memmem(q, m, "<script", 7));
    assert_null(memmem(q, m, "<html", 5));
    free(q);
}

/* HEIF and AVIF with a payload: after the last box, or in a box no decoder reads: 422. */
static void test_polyglot_bmff(void **state)
{
    static const char *const files[] = {"accept_avif_rocket_640x427.avif",
                                        "accept_heic_exif_gps_chelsea_451x300.heic"};
    static const char *const boxes[] = {"free", "skip", "uuid", "html", NULL};
    (void)state;
    need_corpus();
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char in[512], tmp[512], out[512];
        struct img_info info;
        struct img_error err;
        bool unchanged;
        size_t n, len = 8 + sizeof(polyglot_html);
        uint8_t *p, *q;

        corpus_path(in, sizeof(in), files[i]);
        p = slurp(in, &n);
        q = malloc(n + len);
        assert_non_null(q);
        memcpy(q, p, n);
        for (size_t b = 0; b <= sizeof(boxes) / sizeof(boxes[0]) - 1; b++) {
            size_t total = n;
            if (boxes[b] != NULL) { /* a whole box holding the document */
                le32(q + n, 0);
                q[n] = (uint8_t)(len >> 24);
                q[n + 1] = (uint8_t)(len >> 16);
                q[n + 2] = (uint8_t)(len >> 8);
                q[n + 3] = (uint8_t)len;
                memcpy(q + n + 4, boxes[b], 4);
                memcpy(q + n + 8, polyglot_html, sizeof(polyglot_html));
                total = n + len;
            } else { /* the bare document after the last box */
                memcpy(q + n, polyglot_html, sizeof(polyglot_html));
                total = n + sizeof(polyglot_html);
            }
            tmp_path(tmp, sizeof(tmp), "polyglot.heif");
            spill(tmp, q, total);
            tmp_path(out, sizeof(out), "polyglot.out");
            assert_int_equal(img_ingest(tmp, &default_limits, out, &unchanged, &info, &err),
                             E_BADIMAGE);
        }
        /* the file as it is still passes */
        tmp_path(out, sizeof(out), "clean.out");
        assert_int_equal(img_ingest(in, &default_limits, out, &unchanged, &info, &err), OK);
        free(q);
        free(p);
    }
}

/* TIFF, HEIF and AVIF sizes come from libvips' header read: limits apply there too. */
static void test_ingest_limits_from_libvips(void **state)
{
    static const char *const files[] = {"accept_heic_exif_gps_chelsea_451x300.heic",
                                        "accept_avif_rocket_640x427.avif",
                                        "accept_tiff_lzw_coffee_600x400.tif"};
    struct img_limits small = {
        .max_pixels = 1000, .max_frames = 1000, .max_animation_pixels = 1000000};
    (void)state;
    need_corpus();
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char in[512], out[512];
        struct img_info info;
        struct img_error err;
        bool unchanged;
        double t0 = now_ms();

        corpus_path(in, sizeof(in), files[i]);
        tmp_path(out, sizeof(out), "limits.out");
        assert_int_equal(img_ingest(in, &small, out, &unchanged, &info, &err), E_BADIMAGE);
        assert_non_null(strstr(err.msg, "over the limit of 1000"));
        assert_true(now_ms() - t0 < 200.0);
    }
}

/* ---- variants ---- */

static void check_variant(const char *file, enum img_format f, uint32_t w, uint32_t h,
                          uint32_t want_w, uint32_t want_h)
{
    struct img_variant_spec spec = {.width = w, .height = h, .format = f, .quality = 80};
    char in[512], out[512], out2[512];
    struct img_info info, again;
    struct img_error err;
    bool unchanged;
    double t0, ms;
    uint8_t *p;
    size_t n;
    int rc;

    corpus_path(in, sizeof(in), file);
    tmp_path(out, sizeof(out), "variant.out");
    t0 = now_ms();
    rc = img_variant(in, &spec, out, &info, &err);
    ms = now_ms() - t0;
    print_message("  %-52s -> %ux%u %s %6.1f ms %s\n", file, info.width, info.height,
                  img_format_name(f), ms, err.msg);
    if (rc != OK)
        fail_msg("%s: %s", file, err.msg);
    assert_int_equal(info.format, f);
    assert_int_equal(info.width, want_w);
    assert_int_equal(info.height, want_h);
    assert_int_equal(info.frames, 1);
    p = slurp(out, &n);
    assert_int_equal(img_sniff(p, n), f);
    check_no_personal_metadata(file, p, n);
    free(p);
    /* a variant is itself a clean, valid image */
    tmp_path(out2, sizeof(out2), "variant2.out");
    rc = img_ingest(out, &default_limits, out2, &unchanged, &again, &err);
    if (rc != OK)
        fail_msg("%s variant: %s", file, err.msg);
    assert_true(unchanged);
    assert_int_equal(again.width, want_w);
    assert_int_equal(again.height, want_h);
    unlink(out);
}

static void test_variant(void **state)
{
    (void)state;
    need_corpus();
    check_variant("accept_jpeg_large_seeding_4000x3000.jpg", IMG_WEBP, 256, 256, 256, 192);
    check_variant("accept_jpeg_large_seeding_4000x3000.jpg", IMG_JPEG, 1024, 1024, 1024, 768);
    check_variant("accept_jpeg_exif_orient6_gps_chelsea_300x451.jpg", IMG_WEBP, 256, 256, 256, 170);
    check_variant("accept_jpeg_baseline_rocket_640x427.jpg", IMG_PNG, 100, 100, 100, 67);
    check_variant("accept_jpeg_cmyk_astronaut_512x512.jpg", IMG_JPEG, 64, 64, 64, 64);
    check_variant("accept_png_alpha_rgba_astronaut_vignette_512x512.png", IMG_JPEG, 128, 128, 128,
                  128);
    check_variant("accept_png_16bit_rgb_gradient_1024x256.png", IMG_WEBP, 512, 512, 512, 128);
    check_variant("accept_gif_animated_4frames_chelsea_225x150.gif", IMG_WEBP, 100, 100, 100, 67);
    check_variant("accept_webp_animated_4frames_chelsea_225x150.webp", IMG_PNG, 1000, 1000, 225,
                  150); /* never enlarged */
    check_variant("accept_bmp_24bit_chelsea_451x300.bmp", IMG_JPEG, 200, 200, 200, 133);
    check_variant("accept_heic_exif_gps_chelsea_451x300.heic", IMG_AVIF, 128, 128, 128, 85);
    check_variant("accept_tiff_lzw_coffee_600x400.tif", IMG_WEBP, 300, 300, 300, 200);
    check_variant("accept_png_extreme_aspect_4000x1.png", IMG_WEBP, 256, 256, 256, 1);
}

static void test_variant_errors(void **state)
{
    struct img_variant_spec spec = {.width = 0, .height = 10, .format = IMG_WEBP, .quality = 80};
    struct img_info info;
    struct img_error err;
    char out[512];
    (void)state;

    tmp_path(out, sizeof(out), "variant-err.out");
    assert_int_equal(img_variant("/nonexistent", &spec, out, &info, &err), E_INVALID);
    spec.width = 10;
    spec.format = IMG_GIF;
    assert_int_equal(img_variant("/nonexistent", &spec, out, &info, &err), E_INVALID);
    spec.format = IMG_WEBP;
    spec.quality = 101;
    assert_int_equal(img_variant("/nonexistent", &spec, out, &info, &err), E_INVALID);
    spec.quality = 80;
    assert_int_equal(img_variant("/nonexistent", &spec, out, &info, &err), E_NOTFOUND);
}

/* ---- concurrency ---- */

struct worker {
    size_t first;
    int failures;
    char name[32];
};

static void *worker_run(void *arg)
{
    struct worker *w = arg;

    for (size_t k = 0; k < nrows; k++) {
        const struct row *r = &rows[(w->first + k) % nrows];
        char in[512], out[512];
        struct img_info info;
        struct img_error err;
        bool unchanged;
        int rc;

        if (strstr(r->file, "4000x3000") || strstr(r->file, "avif")) /* keep it quick */
            continue;
        corpus_path(in, sizeof(in), r->file);
        tmp_path(out, sizeof(out), w->name);
        rc = img_ingest(in, &default_limits, out, &unchanged, &info, &err);
        if ((rc == OK) != r->accept)
            w->failures++;
        unlink(out);
    }
    img_thread_exit();
    return NULL;
}

static void test_concurrent_ingest(void **state)
{
    pthread_t t[4];
    struct worker w[4];
    (void)state;
    need_corpus();
    for (int i = 0; i < 4; i++) {
        w[i].first = (size_t)i * 7;
        w[i].failures = 0;
        snprintf(w[i].name, sizeof(w[i].name), "worker%d.out", i);
        assert_int_equal(pthread_create(&t[i], NULL, worker_run, &w[i]), 0);
    }
    /* join them all before any assert: libvips must be idle at shutdown */
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(w[i].failures, 0);
}

/* ---- setup ---- */

static int group_setup(void **state)
{
    (void)state;
    corpus = getenv("TESSERA_TESTDATA");
    if (corpus != NULL && corpus[0] != '\0')
        load_manifest();
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_image.XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    return img_init("test_image", 2, 64u << 20) == OK ? 0 : -1;
}

static int group_teardown(void **state)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    (void)state;

    while (d && (e = readdir(d)) != NULL) {
        char path[512];

        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", tmpdir, e->d_name);
        unlink(path);
    }
    if (d)
        closedir(d);
    rmdir(tmpdir);
    img_shutdown();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_tables),
        cmocka_unit_test(test_sniff_magic),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_png_walk),
        cmocka_unit_test(test_gif_walk),
        cmocka_unit_test(test_webp_walk),
        cmocka_unit_test(test_jpeg_walk),
        cmocka_unit_test(test_jpeg_mpf),
        cmocka_unit_test(test_bmp_and_bmff_walk),
        cmocka_unit_test(test_bombs_fast), /* early: its memory check needs a low peak */
        cmocka_unit_test(test_sniff_corpus),
        cmocka_unit_test(test_walks_mutated),
        cmocka_unit_test(test_ingest_corpus),
        cmocka_unit_test(test_ingest_unchanged),
        cmocka_unit_test(test_ingest_keeps_icc),
        cmocka_unit_test(test_ingest_errors),
        cmocka_unit_test(test_ingest_tiff_metadata),
        cmocka_unit_test(test_polyglot_tiff),
        cmocka_unit_test(test_polyglot_bmff),
        cmocka_unit_test(test_ingest_limits_from_libvips),
        cmocka_unit_test(test_variant),
        cmocka_unit_test(test_variant_errors),
        cmocka_unit_test(test_concurrent_ingest),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
