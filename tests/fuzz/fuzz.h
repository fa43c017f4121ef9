/*
 * fuzz.h - what every fuzz target defines: the libFuzzer entry points.
 *
 * The same target links either with libFuzzer (-fsanitize=fuzzer, TESSERA_FUZZ)
 * or with replay.c, a plain main() that runs corpus files through it (ctest).
 */
#ifndef TESTS_FUZZ_FUZZ_H
#define TESTS_FUZZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* fuzz_cstr copies n bytes into a NUL-terminated xmalloc'd string (embedded NULs stay). */
char *fuzz_cstr(const uint8_t *data, size_t n);

/* fuzz_check aborts with the message when cond is false: an invariant a parser broke. */
#define fuzz_check(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
