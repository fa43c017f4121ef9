/*
 * ring.c - weighted rendezvous hashing over the shards of a ring.
 *
 * Every shard scores every key: score = weight / -ln(u), u a uniform (0,1)
 * drawn from hash(key) mixed with the shard's seed; the R best scores hold
 * the key. A shard's score for a key never depends on the other shards, so
 * adding one only takes keys onto it and removing one only moves its keys.
 * The logarithm is computed here with + * / and bit operations only, so placement is bit-for-bit
 * the same on every machine whatever its libm.
 */
#include "store/ring.h"

#include "core/codec.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/hash.h"
#include "core/str.h"
#include "core/xalloc.h"
#include "store/blob_s3.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RING_MAX_WEIGHT 1000000.0
#define RING_FILE_MAX   (1024 * 1024)

/* ring_mix is the splitmix64 finalizer: a bijection with full avalanche. */
static inline uint64_t ring_mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* ring_seed hashes a shard id (FNV-1a, then mixed) into the seed of its scores. */
static uint64_t ring_seed(const char *id)
{
    return ring_mix(fnv1a64_str(id));
}

/*
 * ring_ln is the natural logarithm of x in (0, 1], with frexp (exact) and the
 * atanh series: deterministic to the bit, which libm's log does not promise.
 */
static double ring_ln(double x)
{
    uint64_t bits;
    int e;
    double m, s, s2, p;

    /* x = m * 2^e with m in [0.5, 1), read from the bits (x is normal and positive here) */
    memcpy(&bits, &x, sizeof(bits));
    e = (int)((bits >> 52) & 0x7ff) - 1022;
    bits = (bits & 0x000fffffffffffffULL) | 0x3fe0000000000000ULL;
    memcpy(&m, &bits, sizeof(m));

    if (m < 0.70710678118654752440) {
        m *= 2.0;
        e -= 1;
    }
    s = (m - 1.0) / (m + 1.0); /* |s| <= 0.1716: six terms leave an error under 1e-11 */
    s2 = s * s;
    p = 1.0 / 11.0;
    p = p * s2 + 1.0 / 9.0;
    p = p * s2 + 1.0 / 7.0;
    p = p * s2 + 1.0 / 5.0;
    p = p * s2 + 1.0 / 3.0;
    p = p * s2 + 1.0;
    return 2.0 * s * p + (double)e * 0.69314718055994530942;
}

uint64_t ring_key_hash(const char *key)
{
    uint64_t h = 0;

    for (int i = 0; i < 16 && key[i] != '\0'; i++) {
        char c = key[i];
        unsigned v =
            (c >= '0' && c <= '9') ? (unsigned)(c - '0') : (unsigned)((c | 0x20) - 'a' + 10);
        h = (h << 4) | (v & 0xf);
    }
    return h;
}

/*
 * ring_score is the rank of shard s for key hash h; higher wins. With equal
 * weights the mixed hash itself ranks (weight / -ln(u) grows with u); with
 * weights it is the bit pattern of the positive double score, which orders
 * the same way as the double.
 */
static inline uint64_t ring_score(const struct ring *r, size_t i, uint64_t h)
{
    uint64_t x = ring_mix(h ^ r->seed[i]);
    double u, score;
    uint64_t bits;

    if (r->equal_weights)
        return x;
    u = ((double)(x >> 11) + 0.5) * (1.0 / 9007199254740992.0); /* (0, 1) */
    score = r->weight[i] / -ring_ln(u);
    memcpy(&bits, &score, sizeof(bits));
    return bits;
}

/* ring_better tells whether shard a ranks before shard b (ties, astronomically rare: lower seed).
 */
static inline bool ring_better(const struct ring *r, uint64_t sa, unsigned a, uint64_t sb,
                               unsigned b)
{
    return sa > sb || (sa == sb && r->seed[a] < r->seed[b]);
}

/*
 * ring_top keeps the n best (score, index) pairs in descending order as
 * candidates stream by: one comparison for most shards, an insertion for few.
 */
static inline void ring_top(const struct ring *r, uint64_t *ts, unsigned *ti, size_t *tn, size_t n,
                            uint64_t sc, unsigned i)
{
    size_t j = *tn;

    if (j == n) {
        if (!ring_better(r, sc, i, ts[n - 1], ti[n - 1]))
            return;
        j = n - 1;
    } else {
        (*tn)++;
    }
    while (j > 0 && ring_better(r, sc, i, ts[j - 1], ti[j - 1])) {
        ts[j] = ts[j - 1];
        ti[j] = ti[j - 1];
        j--;
    }
    ts[j] = sc;
    ti[j] = i;
}

/* ring_lookup_full is the general case (zones, or positions past R): a scan per position. */
static size_t ring_lookup_full(const struct ring *r, uint64_t h, unsigned *out, size_t n)
{
    uint64_t score[RING_MAX_SHARDS];
    bool taken[RING_MAX_SHARDS];
    bool zone_used[RING_MAX_SHARDS];
    size_t k = 0;
    size_t want_r = n < r->replicas ? n : r->replicas;
    unsigned zones_left = r->nzones;

    for (size_t i = 0; i < r->n; i++) {
        score[i] = ring_score(r, i, h);
        taken[i] = false;
    }
    memset(zone_used, 0, r->nzones * sizeof(zone_used[0]));
    /* Replicas: best score among shards of an unused zone while one remains, then the best left. */
    while (k < n) {
        bool zoned = k < want_r && r->nzones > 1 && zones_left > 0;
        size_t best = r->n;
        for (size_t i = 0; i < r->n; i++) {
            if (taken[i] || (zoned && zone_used[r->shards[i].zone_idx]))
                continue;
            if (best == r->n || ring_better(r, score[i], (unsigned)i, score[best], (unsigned)best))
                best = i;
        }
        taken[best] = true;
        if (zoned) {
            zone_used[r->shards[best].zone_idx] = true;
            zones_left--;
        }
        out[k++] = (unsigned)best;
    }
    return k;
}

size_t ring_lookup_hash(const struct ring *r, uint64_t h, unsigned *out, size_t n)
{
    uint64_t ts[RING_MAX_REPLICAS];
    size_t tn = 0;

    if (n > r->n)
        n = r->n;
    if (n == 0)
        return 0;
    if (r->nzones > 1 || n > r->replicas)
        return ring_lookup_full(r, h, out, n);
    /* Without zones the replicas are simply the n best scores: one pass. */
    if (r->equal_weights) {
        const uint64_t *seed = r->seed;
        for (size_t i = 0; i < r->n; i++) {
            uint64_t sc = ring_mix(h ^ seed[i]);
            if (tn < n || sc >= ts[n - 1])
                ring_top(r, ts, out, &tn, n, sc, (unsigned)i);
        }
        return n;
    }
    for (size_t i = 0; i < r->n; i++)
        ring_top(r, ts, out, &tn, n, ring_score(r, i, h), (unsigned)i);
    return n;
}

size_t ring_lookup(const struct ring *r, const char *key, unsigned *out, size_t n)
{
    return ring_lookup_hash(r, ring_key_hash(key), out, n);
}

int ring_find(const struct ring *r, const char *id)
{
    for (size_t i = 0; i < r->n; i++) {
        if (strcmp(r->shards[i].id, id) == 0)
            return (int)i;
    }
    return -1;
}

void ring_free(struct ring *r)
{
    if (r == NULL)
        return;
    free(r->shards);
    free(r->seed);
    free(r->weight);
    free(r);
}

/* --- parsing --- */

struct ring_err {
    char *buf;
    size_t cap;
};

static int ring_fail(struct ring_err *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int ring_fail(struct ring_err *e, const char *fmt, ...)
{
    va_list ap;

    if (e->buf != NULL && e->cap > 0) {
        va_start(ap, fmt);
        vsnprintf(e->buf, e->cap, fmt, ap);
        va_end(ap);
    }
    return E_INVALID;
}

static struct str ring_trim(const char *p, size_t len)
{
    while (len > 0 && isspace((unsigned char)*p)) {
        p++;
        len--;
    }
    while (len > 0 && isspace((unsigned char)p[len - 1]))
        len--;
    return (struct str){p, len};
}

static bool ring_chars_ok(const char *p, size_t len, size_t max, const char *extra)
{
    if (len == 0 || len > max)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (!(islower(c) || isdigit(c) || strchr(extra, c) != NULL))
            return false;
    }
    return true;
}

/*
 * ring_url_ok accepts file:///abs/path (not "/"), http://host:port with no path, and
 * s3+http(s)://host[:port]/bucket[/prefix].
 */
static bool ring_url_ok(const char *u)
{
    if (strncmp(u, "file:///", 8) == 0)
        return u[8] != '\0';
    if (blob_s3_is(u))
        return blob_s3_url_ok(u);
    if (strncmp(u, "http://", 7) == 0) {
        const char *host = u + 7;
        const char *colon = strrchr(host, ':');
        char *end = NULL;
        long port;
        if (colon == NULL || colon == host)
            return false;
        for (const char *p = host; p < colon; p++) {
            if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' && *p != '[' && *p != ']' &&
                *p != ':')
                return false;
        }
        errno = 0;
        port = strtol(colon + 1, &end, 10);
        return errno == 0 && end != colon + 1 && *end == '\0' && port > 0 && port < 65536;
    }
    return false;
}

/* ring_parse_entry parses "ID=URL[;zone=Z][;weight=W]" (trimmed, len bytes) into s. */
static int ring_parse_entry(const char *p, size_t len, struct ring_shard *s, struct ring_err *e)
{
    char item[RING_URL_MAX + 128];
    char *eq, *opt, *save = NULL;

    if (len >= sizeof(item))
        return ring_fail(e, "storage.shards: entry \"%.40s...\" is too long", p);
    memcpy(item, p, len);
    item[len] = '\0';
    memset(s, 0, sizeof(*s));
    s->weight = 1.0;
    eq = strchr(item, '=');
    if (eq == NULL)
        return ring_fail(e, "storage.shards: \"%s\" is not ID=URL[;zone=Z][;weight=W]", item);
    *eq = '\0';
    struct str id = ring_trim(item, strlen(item));
    if (!ring_chars_ok(id.p, id.len, RING_ID_MAX, "_-"))
        return ring_fail(e, "storage.shards: shard id \"%.*s\" must be 1 to %d of a-z 0-9 _ -",
                         (int)id.len, id.p, RING_ID_MAX);
    memcpy(s->id, id.p, id.len);
    opt = strtok_r(eq + 1, ";", &save);
    struct str url = ring_trim(opt ? opt : "", opt ? strlen(opt) : 0);
    if (url.len == 0 || url.len >= sizeof(s->url))
        return ring_fail(e, "storage.shards: shard %s: missing or too long URL", s->id);
    memcpy(s->url, url.p, url.len);
    while (url.len > 8 && s->url[url.len - 1] == '/')
        s->url[--url.len] = '\0';
    if (!ring_url_ok(s->url))
        return ring_fail(e,
                         "storage.shards: shard %s: \"%s\" is not file:///absolute/path, "
                         "http://host:port or s3+http(s)://host[:port]/bucket[/prefix]",
                         s->id, s->url);
    while ((opt = strtok_r(NULL, ";", &save)) != NULL) {
        struct str o = ring_trim(opt, strlen(opt));
        if (o.len > 5 && strncmp(o.p, "zone=", 5) == 0) {
            if (!ring_chars_ok(o.p + 5, o.len - 5, RING_ZONE_MAX - 1,
                               "_.-ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
                return ring_fail(e,
                                 "storage.shards: shard %s: zone \"%.*s\" must be 1 to %d of "
                                 "A-Z a-z 0-9 _ . -",
                                 s->id, (int)(o.len - 5), o.p + 5, RING_ZONE_MAX - 1);
            memcpy(s->zone, o.p + 5, o.len - 5);
        } else if (o.len > 7 && strncmp(o.p, "weight=", 7) == 0) {
            char num[32], *end = NULL;
            snprintf(num, sizeof(num), "%.*s", (int)(o.len - 7), o.p + 7);
            errno = 0;
            s->weight = strtod(num, &end);
            if (errno != 0 || end == num || *end != '\0' || !(s->weight > 0.0) ||
                s->weight > RING_MAX_WEIGHT)
                return ring_fail(e,
                                 "storage.shards: shard %s: weight \"%s\" is not a number in "
                                 "(0, 1000000]",
                                 s->id, num);
        } else if (o.len > 7 && strncmp(o.p, "region=", 7) == 0) {
            if (!blob_s3_is(s->url) || !ring_chars_ok(o.p + 7, o.len - 7, RING_REGION_MAX - 1, "-"))
                return ring_fail(e,
                                 "storage.shards: shard %s: region \"%.*s\" must be 1 to %d of "
                                 "a-z 0-9 -, on an s3+http(s):// shard",
                                 s->id, (int)(o.len - 7), o.p + 7, RING_REGION_MAX - 1);
            memcpy(s->region, o.p + 7, o.len - 7);
        } else {
            return ring_fail(e,
                             "storage.shards: shard %s: unknown option \"%.*s\" (zone=Z, "
                             "weight=W or region=R)",
                             s->id, (int)o.len, o.p);
        }
    }
    s->seed = ring_seed(s->id);
    return OK;
}

static int ring_cmp_id(const void *a, const void *b)
{
    return strcmp(((const struct ring_shard *)a)->id, ((const struct ring_shard *)b)->id);
}

char *ring_describe(const struct ring *r)
{
    struct ring_shard *sorted = xmalloc((r->n ? r->n : 1) * sizeof(*sorted));
    size_t cap = 64 + r->n * (RING_ID_MAX + RING_URL_MAX + RING_ZONE_MAX + RING_REGION_MAX + 48);
    char *text = xmalloc(cap);
    size_t len;

    memcpy(sorted, r->shards, r->n * sizeof(*sorted));
    qsort(sorted, r->n, sizeof(*sorted), ring_cmp_id);
    len = (size_t)snprintf(text, cap, "# replicas=%u write_quorum=%u\n", r->replicas,
                           r->write_quorum);
    for (size_t i = 0; i < r->n; i++)
        len += (size_t)snprintf(text + len, cap - len, "%s=%s;weight=%.9g%s%s%s%s\n", sorted[i].id,
                                sorted[i].url, sorted[i].weight, sorted[i].zone[0] ? ";zone=" : "",
                                sorted[i].zone, sorted[i].region[0] ? ";region=" : "",
                                sorted[i].region);
    free(sorted);
    return text;
}

/* ring_finish checks the whole ring, indexes zones and computes the epoch. */
static int ring_finish(struct ring *r, struct ring_err *e)
{
    uint8_t digest[SHA256_LEN];
    char hex[SHA256_HEX];
    char *text;

    if (r->n == 0)
        return ring_fail(e, "storage.shards: no shard given");
    if (r->write_quorum < 1 || r->replicas < r->write_quorum)
        return ring_fail(e, "storage.write_quorum: %u must be between 1 and storage.replicas (%u)",
                         r->write_quorum, r->replicas);
    if (r->replicas > RING_MAX_REPLICAS || r->replicas > r->n)
        return ring_fail(e,
                         "storage.replicas: %u copies need at least as many shards (the ring "
                         "has %zu) and at most %d",
                         r->replicas, r->n, RING_MAX_REPLICAS);
    r->equal_weights = true;
    r->nzones = 0;
    for (size_t i = 0; i < r->n; i++) {
        struct ring_shard *s = &r->shards[i];
        if (s->weight != r->shards[0].weight)
            r->equal_weights = false;
        if ((s->zone[0] == '\0') != (r->shards[0].zone[0] == '\0'))
            return ring_fail(e, "storage.shards: give a zone to every shard or to none (%s and %s)",
                             r->shards[0].id, s->id);
        s->zone_idx = r->nzones;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(r->shards[j].id, s->id) == 0)
                return ring_fail(e, "storage.shards: shard id \"%s\" appears twice", s->id);
            if (strcmp(r->shards[j].url, s->url) == 0)
                return ring_fail(e, "storage.shards: shards %s and %s have the same URL %s",
                                 r->shards[j].id, s->id, s->url);
            if (strcmp(r->shards[j].zone, s->zone) == 0 && s->zone_idx == r->nzones)
                s->zone_idx = r->shards[j].zone_idx;
        }
        if (s->zone_idx == r->nzones)
            r->nzones++;
    }
    r->seed = xmalloc(r->n * sizeof(*r->seed));
    r->weight = xmalloc(r->n * sizeof(*r->weight));
    for (size_t i = 0; i < r->n; i++) {
        r->seed[i] = r->shards[i].seed;
        r->weight[i] = r->shards[i].weight;
    }
    text = ring_describe(r);
    sha256_buf(text, strlen(text), digest);
    free(text);
    hex_encode(digest, SHA256_LEN, hex);
    memcpy(r->epoch, hex, RING_EPOCH_LEN);
    r->epoch[RING_EPOCH_LEN] = '\0';
    return OK;
}

int ring_parse(const char *text, unsigned replicas, unsigned write_quorum, struct ring **out,
               char *err, size_t cap)
{
    struct ring_err e = {err, cap};
    struct ring *r = xcalloc(1, sizeof(*r));
    size_t alloc = 0;
    const char *p = text ? text : "";
    int rc = OK;

    *out = NULL;
    r->replicas = replicas;
    r->write_quorum = write_quorum;
    while (*p != '\0') {
        size_t len = strcspn(p, ",\n");
        struct str ent = ring_trim(p, len);
        if (ent.len > 0 && ent.p[0] != '#') {
            if (r->n == RING_MAX_SHARDS) {
                rc = ring_fail(&e, "storage.shards: more than %d shards", RING_MAX_SHARDS);
                goto out;
            }
            if (r->n == alloc) {
                alloc = alloc ? 2 * alloc : 8;
                r->shards = xrealloc(r->shards, alloc * sizeof(*r->shards));
            }
            rc = ring_parse_entry(ent.p, ent.len, &r->shards[r->n], &e);
            if (rc != OK)
                goto out;
            r->n++;
        }
        p += len;
        if (*p != '\0')
            p++;
    }
    rc = ring_finish(r, &e);
    if (rc != OK)
        goto out;
    *out = r;
    r = NULL;
out:
    ring_free(r);
    return rc;
}

int ring_parse_spec(const char *spec, unsigned replicas, unsigned write_quorum, struct ring **out,
                    char *err, size_t cap)
{
    struct ring_err e = {err, cap};
    FILE *f = NULL;
    char *text = NULL;
    size_t len;
    int rc;

    *out = NULL;
    if (spec == NULL || spec[0] != '@')
        return ring_parse(spec, replicas, write_quorum, out, err, cap);
    f = fopen(spec + 1, "r");
    if (f == NULL) {
        rc = ring_fail(&e, "storage.shards: cannot open \"%s\": %s", spec + 1, strerror(errno));
        goto out;
    }
    text = xmalloc(RING_FILE_MAX + 1);
    len = fread(text, 1, RING_FILE_MAX + 1, f);
    if (len > RING_FILE_MAX || ferror(f)) {
        rc = ring_fail(&e, "storage.shards: \"%s\" is unreadable or larger than %d bytes", spec + 1,
                       RING_FILE_MAX);
        goto out;
    }
    text[len] = '\0';
    rc = ring_parse(text, replicas, write_quorum, out, err, cap);
out:
    if (f != NULL)
        fclose(f);
    free(text);
    return rc;
}

int ring_parse_described(const char *text, struct ring **out, char *err, size_t cap)
{
    struct ring_err e = {err, cap};
    unsigned r = 0, w = 0;

    *out = NULL;
    if (text == NULL || sscanf(text, "# replicas=%u write_quorum=%u", &r, &w) != 2)
        return ring_fail(&e,
                         "the recorded ring does not start with \"# replicas=R write_quorum=W\"");
    return ring_parse(text, r, w, out, err, cap);
}

int ring_without(const struct ring *r, const char *id, struct ring **out, char *err, size_t cap)
{
    struct ring_err e = {err, cap};
    char *text = NULL, *line;
    size_t idlen = strlen(id);
    int rc;

    *out = NULL;
    if (ring_find(r, id) < 0) {
        ring_fail(&e, "%s is not a shard of the ring (epoch %s)", id, r->epoch);
        return E_NOTFOUND;
    }
    if (r->n - 1 < r->replicas)
        return ring_fail(&e,
                         "removing %s would leave %zu shard%s for R=%u copies of every blob: add "
                         "a shard first (`tessera ring rebalance`), or lower storage.replicas",
                         id, r->n - 1, r->n - 1 == 1 ? "" : "s", r->replicas);
    /* the canonical text, one shard a line: drop the line of id */
    text = ring_describe(r);
    line = strchr(text, '\n');
    while (line != NULL && line[1] != '\0') {
        char *start = line + 1, *end = strchr(start, '\n');
        if (strncmp(start, id, idlen) == 0 && start[idlen] == '=') {
            memmove(start, end + 1, strlen(end + 1) + 1);
            break;
        }
        line = end;
    }
    rc = ring_parse_described(text, out, err, cap);
    free(text);
    if (rc == OK && r->nzones >= r->replicas && (*out)->nzones < r->replicas) {
        ring_free(*out);
        *out = NULL;
        rc = ring_fail(&e,
                       "removing %s would leave %u zone%s for R=%u copies that are now in "
                       "distinct zones: add a shard to its zone first",
                       id, r->nzones - 1, r->nzones - 1 == 1 ? "" : "s", r->replicas);
    }
    return rc;
}
