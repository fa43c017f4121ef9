/*
 * fuzz_probe.c - image probing on bounded input, libvips kept out: img_sniff,
 * the byte-level structure walks (img_probe_bytes and the JPEG/GIF segment
 * readers under it), the pixel/frame limits and lossless metadata removal.
 *
 * Invariants: a probe that passes has frames >= 1; the limits refuse what is
 * over them; img_strip of probed bytes gives bytes of the same format.
 */
#include "core/err.h"
#include "fuzz.h"
#include "image/image.h"
#include "image/image_int.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* small limits, as a strict config would set them: the checks are what is fuzzed */
    static const struct img_limits lim = {.max_pixels = 4096u * 4096u,
                                          .max_frames = 100,
                                          .max_animation_pixels = 16u * 4096u * 4096u};
    struct img_probe pr;
    struct img_error err;
    enum img_format f;
    uint8_t *out = NULL;
    size_t out_len = 0;
    int rc;

    if (size > (1u << 20))
        return 0;
    f = img_sniff(data, size);
    if (f == IMG_UNKNOWN)
        return 0;
    memset(&pr, 0, sizeof(pr));
    err.msg[0] = '\0';
    rc = img_probe_bytes(f, data, size, &pr, &err);
    if (rc != OK) {
        fuzz_check(rc == E_BADIMAGE || rc == E_UNSUPPORTED || rc == E_TOOBIG);
        fuzz_check(err.msg[0] != '\0');
        return 0;
    }
    fuzz_check(pr.frames >= 1);
    rc = img_check_limits(pr.width, pr.height, pr.frames, &lim, &err);
    if (rc == OK) {
        fuzz_check((uint64_t)pr.width * pr.height <= lim.max_pixels);
        fuzz_check(pr.frames <= lim.max_frames);
    }
    rc = img_strip(f, data, size, &out, &out_len);
    if (rc == OK && out != NULL) {
        fuzz_check(out_len > 0);
        fuzz_check(img_sniff(out, out_len) == f);
        free(out);
    }
    return 0;
}
