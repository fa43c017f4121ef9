/*
 * hash.h - FNV-1a, the one non-cryptographic hash of the program.
 *
 * For spreading keys over buckets, slots and ring seeds: fast and stable
 * across builds (ring placement depends on it), never a secret.
 */
#ifndef CORE_HASH_H
#define CORE_HASH_H

#include <stddef.h>
#include <stdint.h>

#define FNV1A64_BASIS 14695981039346656037ULL
#define FNV1A64_PRIME 1099511628211ULL

/* fnv1a64 hashes n bytes at p. Pure; thread-safe. */
static inline uint64_t fnv1a64(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = FNV1A64_BASIS;

    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= FNV1A64_PRIME;
    }
    return h;
}

/* fnv1a64_str hashes a NUL-terminated string (without its NUL). Pure; thread-safe. */
static inline uint64_t fnv1a64_str(const char *s)
{
    uint64_t h = FNV1A64_BASIS;

    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        h ^= *p;
        h *= FNV1A64_PRIME;
    }
    return h;
}

#endif
