/*
 * strbuf.h - a growable byte buffer with a cap.
 *
 * Invariant: buf is always NUL-terminated; len never exceeds cap. An append
 * past the cap fails (E_TOOBIG) and leaves the buffer as it was.
 */
#ifndef CORE_STRBUF_H
#define CORE_STRBUF_H

#include <stddef.h>

struct strbuf {
    char *buf;
    size_t len;
    size_t alloc;
    size_t cap;
};

/* strbuf_init prepares sb with at most cap bytes of content. */
void strbuf_init(struct strbuf *sb, size_t cap);

/* strbuf_release frees the content; sb may be initialised again. */
void strbuf_release(struct strbuf *sb);

/* strbuf_add appends n bytes; E_TOOBIG over the cap. */
int strbuf_add(struct strbuf *sb, const void *p, size_t n);

/* strbuf_addf appends formatted text; E_TOOBIG over the cap. */
int strbuf_addf(struct strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* strbuf_detach returns the content (caller frees) and resets sb. */
char *strbuf_detach(struct strbuf *sb, size_t *len);

#endif
