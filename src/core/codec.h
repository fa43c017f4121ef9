/*
 * codec.h - hex and unpadded base64url (RFC 4648 §5) encoding, RFC 3339 times.
 */
#ifndef CORE_CODEC_H
#define CORE_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* hex_encode writes 2n lowercase digits and a NUL to out (2n+1 bytes). */
void hex_encode(const uint8_t *in, size_t n, char *out);

/*
 * hex_decode decodes len hex digits (either case) into out (capacity cap):
 * the number of bytes, or -1 for an odd length, a non-hex digit or too many.
 */
long hex_decode(const char *in, size_t len, uint8_t *out, size_t cap);

/* b64url_encoded_len is the length of the unpadded encoding of n bytes. */
size_t b64url_encoded_len(size_t n);

/* b64url_encode writes the unpadded encoding of n bytes and a NUL to out. */
void b64url_encode(const uint8_t *in, size_t n, char *out);

/*
 * b64url_decode decodes len characters into out (capacity cap); returns the
 * number of bytes, or -1 for a bad character, a bad length or a short buffer.
 */
long b64url_decode(const char *in, size_t len, uint8_t *out, size_t cap);

/* time_rfc3339 formats seconds since the epoch as "2026-11-27T10:31:07Z" (21 bytes). */
void time_rfc3339(int64_t secs, char out[21]);

/* time_http formats seconds as an IMF-fixdate for Last-Modified (30 bytes). */
void time_http(int64_t secs, char out[30]);

/* time_now_us returns the wall clock in microseconds since the epoch. */
int64_t time_now_us(void);

/* time_mono_us returns a monotonic clock in microseconds. */
int64_t time_mono_us(void);

struct timespec;

/*
 * time_deadline sets *ts to clock (CLOCK_MONOTONIC, CLOCK_REALTIME) now plus
 * ms milliseconds: the absolute time pthread_cond_timedwait wants (with a
 * condition variable on that clock).
 */
void time_deadline(struct timespec *ts, int clock, int64_t ms);

#endif
