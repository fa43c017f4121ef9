/*
 * bench_thumb.c - time of img_variant (the thumbnail path of the server) on one file.
 *
 * Usage: bench_thumb FILE [RUNS] [SIZE] [FORMAT]; prints min, median and mean ms.
 */
#include "core/codec.h"
#include "core/err.h"
#include "image/image.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    struct img_variant_spec spec = {256, 256, IMG_WEBP, 80};
    struct img_info info;
    struct img_error err;
    char out[] = "/tmp/bench-thumb-XXXXXX";
    int runs = argc > 2 ? atoi(argv[2]) : 20;
    int64_t *t;
    int64_t sum = 0;
    int fd;

    if (argc < 2 || runs < 1) {
        fprintf(stderr, "usage: bench_thumb FILE [RUNS] [SIZE] [webp|jpeg]\n");
        return 2;
    }
    if (argc > 3)
        spec.width = spec.height = (uint32_t)atoi(argv[3]);
    if (argc > 4)
        spec.format = img_format_from_name(str_from(argv[4]));
    if (img_init("bench_thumb", 1, 0) != OK)
        return 1;
    fd = mkstemp(out);
    if (fd < 0)
        return 1;
    close(fd);
    t = calloc((size_t)runs, sizeof(*t));
    for (int i = 0; i < runs; i++) {
        int64_t start = time_mono_us();
        if (img_variant(argv[1], &spec, out, &info, &err) != OK) {
            fprintf(stderr, "img_variant: %s\n", err.msg);
            return 1;
        }
        t[i] = time_mono_us() - start;
        sum += t[i];
    }
    qsort(t, (size_t)runs, sizeof(*t), cmp_i64);
    printf("img_variant %s -> %ux%u %s: runs %d, min %.1f ms, median %.1f ms, mean %.1f ms\n",
           argv[1], info.width, info.height, img_format_name(spec.format), runs,
           (double)t[0] / 1000, (double)t[runs / 2] / 1000, (double)sum / runs / 1000);
    unlink(out);
    free(t);
    img_shutdown();
    return 0;
}
