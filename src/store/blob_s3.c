/*
 * blob_s3.c - the S3 blob backend: a bucket of an S3-compatible store as one shard.
 *
 * Every request is signed by libcurl (CURLOPT_AWS_SIGV4) and carries x-amz-content-sha256:
 * for an upload that is the blob's key (the key is the SHA-256 of the bytes, so the server
 * can refuse a body that does not match), and the upload stream itself stops before its
 * last byte when the file does not hash to its key, so no wrong object ever completes.
 * Downloads are hashed as they arrive and bytes that do not match their key are never
 * returned. Pitfalls of libcurl's signer are in ../shared/PLATFORM.md: the query is signed
 * as given (so parameters are written sorted and percent-encoded), the access key may hold
 * a colon (so user and password are set apart), and Expect: is left to curl.
 * Handles are pooled for connection reuse; a handle serves one request at a time.
 */
#include "store/blob_s3.h"

#include "core/codec.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/strbuf.h"
#include "core/xalloc.h"
#include "store/blob_int.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define S3_POOL         32                /* idle handles kept */
#define S3_SMALL_MAX    (8 * 1024 * 1024) /* cap of an XML answer (a listing page) */
#define S3_LIST_PAGE    1000              /* S3 answers at most 1000 keys a request */
#define S3_TRIES        4                 /* attempts of one request (5xx, SlowDown, timeouts) */
#define S3_BACKOFF_MS   100               /* first pause between attempts, doubling */
#define S3_CHECK_MS     2000              /* a readiness probe answers within this */
#define S3_TOTAL_SECS   600               /* no single transfer may take longer */
#define S3_MAX_PARTS    10000             /* S3's limit of parts in one upload */
#define S3_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define S3_SECRET_MAX   256
#define S3_URL_MAX      2048

struct s3 {
    char *endpoint; /* "http(s)://host[:port]" for path style, "http(s)://bucket.host..." virtual */
    char *bucket;
    char *prefix; /* "" or "some/prefix/" */
    char *label;  /* the shard's URL, for log lines (no credentials in it) */
    char *tmp;
    char sigv4[128]; /* "aws:amz:REGION:s3" */
    char access[S3_SECRET_MAX];
    char secret[S3_SECRET_MAX];
    const char *cred_source; /* the setting the credentials came from, for readiness answers */
    uint64_t part;
    long connect_ms;
    long read_ms;
    pthread_mutex_t lock;
    CURL *pool[S3_POOL];
    size_t npool;
    char why[256]; /* why the last readiness probe failed, under lock */
};

static struct metric m_requests = {"tessera_s3_requests_total",
                                   "Requests sent to S3 endpoints (each attempt counts).",
                                   "counter", 0};
static struct metric m_retries = {"tessera_s3_retries_total",
                                  "S3 requests sent again after a 5xx, SlowDown or timeout.",
                                  "counter", 0};
static struct metric m_mismatch = {"tessera_s3_checksum_mismatch_total",
                                   "S3 objects whose bytes did not hash to their key on GET "
                                   "(not served; repair restores them from another copy).",
                                   "counter", 0};
static pthread_once_t s3_once = PTHREAD_ONCE_INIT;

static void s3_global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    metric_register(&m_requests);
    metric_register(&m_retries);
    metric_register(&m_mismatch);
}

/* --- URLs --- */

bool blob_s3_is(const char *url)
{
    return strncmp(url, "s3+http://", 10) == 0 || strncmp(url, "s3+https://", 11) == 0;
}

struct s3_url {
    bool tls;
    char host[256]; /* with ":port" when given */
    char bucket[64];
    char prefix[512]; /* without a trailing slash */
};

/* s3_url_parse splits s3+http(s)://HOST[:PORT]/BUCKET[/PREFIX]; false when malformed. */
static bool s3_url_parse(const char *url, struct s3_url *u)
{
    const char *p, *slash, *b, *pre;
    size_t hl, bl;

    memset(u, 0, sizeof(*u));
    if (strncmp(url, "s3+http://", 10) == 0) {
        p = url + 10;
    } else if (strncmp(url, "s3+https://", 11) == 0) {
        p = url + 11;
        u->tls = true;
    } else {
        return false;
    }
    slash = strchr(p, '/');
    if (slash == NULL || slash == p)
        return false;
    hl = (size_t)(slash - p);
    if (hl >= sizeof(u->host))
        return false;
    for (const char *q = p; q < slash; q++) {
        if (!isalnum((unsigned char)*q) && strchr(".-:[]", *q) == NULL)
            return false;
    }
    memcpy(u->host, p, hl);
    b = slash + 1;
    pre = strchr(b, '/');
    bl = pre ? (size_t)(pre - b) : strlen(b);
    if (bl < 3 || bl > 63)
        return false;
    for (size_t i = 0; i < bl; i++) {
        if (!islower((unsigned char)b[i]) && !isdigit((unsigned char)b[i]) && b[i] != '.' &&
            b[i] != '-')
            return false;
    }
    memcpy(u->bucket, b, bl);
    if (pre == NULL)
        return true;
    pre++;
    if (*pre == '\0' || strlen(pre) >= sizeof(u->prefix) || pre[strlen(pre) - 1] == '/' ||
        strstr(pre, "//") != NULL)
        return false;
    for (const char *q = pre; *q; q++) {
        if (!isalnum((unsigned char)*q) && strchr("._-/", *q) == NULL)
            return false;
    }
    snprintf(u->prefix, sizeof(u->prefix), "%s", pre);
    return true;
}

bool blob_s3_url_ok(const char *url)
{
    struct s3_url u;
    return s3_url_parse(url, &u);
}

/* s3_object_url writes the URL of key's object (key NULL: the bucket itself) plus query. */
static void s3_object_url(const struct s3 *s, const char *key, const char *query, char *buf,
                          size_t cap)
{
    snprintf(buf, cap, "%s/%s%s%s%s", s->endpoint, key ? s->prefix : "", key ? key : "",
             query && query[0] ? "?" : "", query ? query : "");
}

/* --- credentials --- */

/* s3_cred_line copies the value of a "name = value" line (AWS credentials file syntax). */
static bool s3_cred_line(const char *line, const char *name, char *out, size_t cap)
{
    size_t n = strlen(name);
    const char *v;
    size_t len;

    while (*line == ' ' || *line == '\t')
        line++;
    if (strncmp(line, name, n) != 0)
        return false;
    v = line + n;
    while (*v == ' ' || *v == '\t')
        v++;
    if (*v != '=')
        return false;
    v++;
    while (*v == ' ' || *v == '\t')
        v++;
    len = strcspn(v, "\r\n");
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    if (len == 0 || len >= cap)
        return false;
    memcpy(out, v, len);
    out[len] = '\0';
    return true;
}

/*
 * s3_load_credentials reads the access key and secret (capacity S3_SECRET_MAX each): from
 * file, in its [profile] section when there is one, else its [default] section or the lines
 * before any section (so an AWS shared credentials file works, and each shard of a ring may
 * have its own keys); or from the environment when file is NULL or "". On failure a
 * sentence naming the setting goes to why (capacity cap) and E_INVALID is returned.
 * Never logs the values.
 */
static int s3_load_credentials(const char *file, const char *profile, char *access, char *secret,
                               char *why, size_t cap)
{
    char line[1024], section[128] = "";
    char pa[S3_SECRET_MAX] = "", ps[S3_SECRET_MAX] = ""; /* of [profile] */
    FILE *fp;

    access[0] = secret[0] = '\0';
    if (file == NULL || file[0] == '\0') {
        const char *a = getenv("AWS_ACCESS_KEY_ID");
        const char *k = getenv("AWS_SECRET_ACCESS_KEY");
        if (a == NULL || k == NULL || a[0] == '\0' || k[0] == '\0' || strlen(a) >= S3_SECRET_MAX ||
            strlen(k) >= S3_SECRET_MAX) {
            snprintf(why, cap,
                     "no S3 credentials: set storage.s3_credentials_file, or "
                     "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY");
            return E_INVALID;
        }
        snprintf(access, S3_SECRET_MAX, "%s", a);
        snprintf(secret, S3_SECRET_MAX, "%s", k);
        return OK;
    }
    fp = fopen(file, "re");
    if (fp == NULL) {
        snprintf(why, cap, "storage.s3_credentials_file: cannot open '%s': %s", file,
                 strerror(errno));
        return E_INVALID;
    }
    while (fgets(line, sizeof(line), fp) != NULL) {
        const char *p = line + strspn(line, " \t");
        if (*p == '[') {
            size_t n = strcspn(p + 1, "]\r\n");
            snprintf(section, sizeof(section), "%.*s", (int)n, p + 1);
            continue;
        }
        bool mine = profile != NULL && profile[0] != '\0' && strcmp(section, profile) == 0;
        bool fallback = section[0] == '\0' || strcmp(section, "default") == 0;
        char *ka = mine ? pa : fallback ? access : NULL;
        char *ks = mine ? ps : fallback ? secret : NULL;
        if (ka != NULL && ka[0] == '\0')
            s3_cred_line(p, "aws_access_key_id", ka, S3_SECRET_MAX);
        if (ks != NULL && ks[0] == '\0')
            s3_cred_line(p, "aws_secret_access_key", ks, S3_SECRET_MAX);
    }
    explicit_bzero(line, sizeof(line));
    fclose(fp);
    if (pa[0] != '\0' && ps[0] != '\0') {
        memcpy(access, pa, S3_SECRET_MAX);
        memcpy(secret, ps, S3_SECRET_MAX);
    }
    explicit_bzero(ps, sizeof(ps));
    if (access[0] == '\0' || secret[0] == '\0') {
        snprintf(why, cap,
                 "storage.s3_credentials_file: '%s' has no aws_access_key_id and "
                 "aws_secret_access_key lines%s%s%s",
                 file, profile && profile[0] ? " (in [" : "", profile ? profile : "",
                 profile && profile[0] ? "] or [default])" : "");
        return E_INVALID;
    }
    return OK;
}

int blob_s3_check_credentials(const char *file, const char *profile, char *why, size_t cap)
{
    char access[S3_SECRET_MAX], secret[S3_SECRET_MAX];
    int rc = s3_load_credentials(file, profile, access, secret, why, cap);

    explicit_bzero(secret, sizeof(secret));
    return rc;
}

/* --- handles and requests --- */

static CURL *s3_take(struct s3 *s)
{
    CURL *c = NULL;

    pthread_mutex_lock(&s->lock);
    if (s->npool > 0)
        c = s->pool[--s->npool];
    pthread_mutex_unlock(&s->lock);
    if (c == NULL) {
        c = curl_easy_init();
        if (c == NULL) {
            fprintf(stderr, "fatal: curl_easy_init failed\n");
            abort();
        }
    }
    return c;
}

/* s3_give returns a handle whose connection is still good to the pool; others are closed. */
static void s3_give(struct s3 *s, CURL *c, bool ok)
{
    pthread_mutex_lock(&s->lock);
    if (ok && s->npool < S3_POOL) {
        s->pool[s->npool++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&s->lock);
    if (c != NULL)
        curl_easy_cleanup(c);
}

/* One request: what to send and where the answer goes. */
struct s3_req {
    const char *method; /* GET HEAD PUT POST DELETE */
    const char *url;
    const char *key;            /* for log lines */
    const char *payload_sha256; /* x-amz-content-sha256 */
    /* body from a file: [off, off + len) of fd */
    int fd;
    uint64_t off, len;
    const char *check_key; /* when sending a whole file: abort unless it hashes to this */
    /* or body from memory: [0, len) of body */
    const char *body;
    /*
     * answers: into answer (XML or error text; NULL: discarded), or into sink, which is
     * also called with a NULL buffer before each attempt and returns how many bytes it
     * kept (an attempt then asks for the rest only: Range: bytes=N-)
     */
    struct strbuf *answer;
    size_t (*sink)(char *, size_t, size_t, void *);
    void *sink_arg;
    long status;    /* of the answer being received (the last status line) */
    char etag[128]; /* the ETag header, quotes kept */
    long timeout_ms;
    int tries; /* 0: S3_TRIES */
};

struct s3_send {
    struct s3_req *r;
    uint64_t done;
    struct sha256_ctx *sha;
    bool mismatch;
};

static size_t s3_read(char *p, size_t size, size_t n, void *ud)
{
    struct s3_send *sd = ud;
    struct s3_req *r = sd->r;
    uint64_t left = r->len - sd->done;
    size_t want = size * n;
    ssize_t got;

    if (r->body != NULL) {
        if (want > left)
            want = (size_t)left;
        memcpy(p, r->body + sd->done, want);
        sd->done += want;
        return want;
    }
    if (want > left)
        want = (size_t)left;
    if (want == 0)
        return 0;
    do
        got = pread(r->fd, p, want, (off_t)(r->off + sd->done));
    while (got < 0 && errno == EINTR);
    if (got <= 0)
        return CURL_READFUNC_ABORT; /* the file shrank or failed: never send a short object */
    sd->done += (uint64_t)got;
    if (sd->sha != NULL) {
        sha256_update(sd->sha, p, (size_t)got);
        if (sd->done == r->len) {
            uint8_t d[SHA256_LEN];
            char hex[SHA256_HEX];
            sha256_final(sd->sha, d);
            sd->sha = NULL;
            hex_encode(d, sizeof(d), hex);
            if (strcmp(hex, r->check_key) != 0) {
                sd->mismatch = true; /* withhold the last bytes: the object never completes */
                return CURL_READFUNC_ABORT;
            }
        }
    }
    return (size_t)got;
}

static size_t s3_small(char *p, size_t size, size_t n, void *ud)
{
    if (ud == NULL)
        return size * n;
    return strbuf_add(ud, p, size * n) == OK ? size * n : 0;
}

static size_t s3_header(char *p, size_t size, size_t n, void *ud)
{
    struct s3_req *r = ud;
    size_t len = size * n;

    if (len > 9 && strncmp(p, "HTTP/", 5) == 0) {
        const char *sp = memchr(p, ' ', len);
        if (sp != NULL)
            r->status = strtol(sp + 1, NULL, 10);
    } else if (len > 5 && strncasecmp(p, "etag:", 5) == 0) {
        const char *v = p + 5;
        size_t vl = len - 5;
        while (vl > 0 && (*v == ' ' || *v == '\t')) {
            v++;
            vl--;
        }
        while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
            vl--;
        if (vl < sizeof(r->etag)) {
            memcpy(r->etag, v, vl);
            r->etag[vl] = '\0';
        }
    }
    return len;
}

/* s3_retryable tells whether an answer is worth another attempt: 5xx, SlowDown (503) and 429. */
static bool s3_retryable(long code)
{
    return code >= 500 || code == 429 || code == 408;
}

static void s3_pause(int attempt)
{
    long ms = S3_BACKOFF_MS << attempt;
    uint8_t r;

    random_bytes(&r, 1);
    ms += ms * r / 512; /* up to +50%: clients retrying together spread out */
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/*
 * s3_perform sends r, trying again after transport failures, timeouts and retryable
 * answers (with back-off), and sets *code (0 when nothing answered). The sink must be
 * able to start over: before each attempt r->sink is called with a NULL buffer to rewind.
 * Returns OK when something answered (look at *code), E_UNAVAILABLE when nothing did,
 * E_INVALID when the file sent did not hash to its key, E_IO when a local file failed.
 */
static int s3_perform(struct s3 *s, struct s3_req *r, long *code)
{
    struct curl_slist *hdr = NULL;
    char line[256];
    int rc = E_UNAVAILABLE;
    CURLcode cc = CURLE_OK;
    int tries = r->tries > 0 ? r->tries : S3_TRIES;

    *code = 0;
    for (int attempt = 0; attempt < tries; attempt++) {
        struct s3_send sd = {r, 0, NULL, false};
        size_t kept = 0;
        CURL *c;

        if (attempt > 0) {
            metric_add(&m_retries, 1);
            s3_pause(attempt - 1);
        }
        if (r->answer != NULL)
            r->answer->len = 0;
        if (r->sink != NULL)
            kept = r->sink(NULL, 0, 0, r->sink_arg);
        r->etag[0] = '\0';
        r->status = 0;
        curl_slist_free_all(hdr);
        hdr = NULL;
        snprintf(line, sizeof(line), "x-amz-content-sha256: %s", r->payload_sha256);
        hdr = curl_slist_append(hdr, line);
        if (kept > 0) {
            snprintf(line, sizeof(line), "Range: bytes=%zu-", kept);
            hdr = curl_slist_append(hdr, line);
        }
        if (strcmp(r->method, "PUT") == 0 || strcmp(r->method, "POST") == 0)
            hdr = curl_slist_append(hdr, "Content-Type: application/octet-stream");
        c = s3_take(s);
        if (r->check_key != NULL)
            sd.sha = sha256_new();
        curl_easy_reset(c);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_URL, r->url);
        curl_easy_setopt(c, CURLOPT_AWS_SIGV4, s->sigv4);
        curl_easy_setopt(c, CURLOPT_USERNAME, s->access);
        curl_easy_setopt(c, CURLOPT_PASSWORD, s->secret);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, s->connect_ms);
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (s->read_ms + 999) / 1000);
        if (r->timeout_ms > 0)
            curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, r->timeout_ms);
        else
            curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)S3_TOTAL_SECS);
        curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, s3_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
        if (r->sink != NULL) {
            curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, r->sink);
            curl_easy_setopt(c, CURLOPT_WRITEDATA, r->sink_arg);
        } else {
            curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, s3_small);
            curl_easy_setopt(c, CURLOPT_WRITEDATA, r->answer);
        }
        if (strcmp(r->method, "HEAD") == 0) {
            curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
        } else if (strcmp(r->method, "PUT") == 0 || strcmp(r->method, "POST") == 0) {
            curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
            curl_easy_setopt(c, CURLOPT_READFUNCTION, s3_read);
            curl_easy_setopt(c, CURLOPT_READDATA, &sd);
            curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->len);
            if (strcmp(r->method, "POST") == 0)
                curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "POST");
        } else if (strcmp(r->method, "GET") != 0) {
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, r->method);
        }
        metric_add(&m_requests, 1);
        cc = curl_easy_perform(c);
        if (sd.sha != NULL) {
            uint8_t d[SHA256_LEN];
            sha256_final(sd.sha, d);
        }
        if (cc == CURLE_OK)
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, code);
        s3_give(s, c, cc == CURLE_OK);
        if (sd.mismatch) {
            log_error("store", "put %.16s on %s: the file does not hash to its key; not stored",
                      r->key ? r->key : "", s->label);
            rc = E_INVALID;
            break;
        }
        if (cc == CURLE_OK && !s3_retryable(*code)) {
            rc = OK;
            break;
        }
        if (cc == CURLE_WRITE_ERROR || cc == CURLE_ABORTED_BY_CALLBACK) {
            rc = E_IO; /* our side failed (a local disk): another attempt would fail the same */
            break;
        }
        if (tries == 1)
            break; /* a probe: its caller reports */
        if (cc == CURLE_OK)
            log_warn("store", "%s %s %.16s: answered %ld (attempt %d of %d)", r->method, s->label,
                     r->key ? r->key : "(bucket)", *code, attempt + 1, tries);
        else
            log_warn("store", "%s %s %.16s: %s (attempt %d of %d)", r->method, s->label,
                     r->key ? r->key : "(bucket)", curl_easy_strerror(cc), attempt + 1, tries);
    }
    curl_slist_free_all(hdr);
    if (rc == OK)
        return OK;
    if (rc == E_UNAVAILABLE && cc == CURLE_OK)
        rc = OK; /* it answered, with a retryable status every time: the caller maps the code */
    return rc;
}

/* s3_status maps an S3 answer for one object to a status. */
static int s3_status(const struct s3 *s, const char *what, const char *key, long code)
{
    if (code >= 200 && code < 300)
        return OK;
    switch (code) {
    case 404:
        return E_NOTFOUND;
    case 400:
        log_error("store", "%s %.16s on %s: answered 400 (a request S3 refused)", what,
                  key ? key : "", s->label);
        return E_INVALID;
    case 403:
        log_error("store", "%s %.16s on %s: answered 403 (credentials from %s, or bucket policy)",
                  what, key ? key : "", s->label, s->cred_source);
        return E_UNAVAILABLE;
    case 507:
        return E_NOSPACE;
    default:
        if (code != 0)
            log_warn("store", "%s %.16s on %s: answered %ld", what, key ? key : "", s->label, code);
        return E_UNAVAILABLE;
    }
}

/* --- the operations --- */

static int s3_exists(void *be, const char *key, bool *exists)
{
    struct s3 *s = be;
    struct s3_req r = {.method = "HEAD", .key = key, .payload_sha256 = S3_EMPTY_SHA256};
    char url[S3_URL_MAX];
    long code;
    int rc;

    s3_object_url(s, key, NULL, url, sizeof(url));
    r.url = url;
    rc = s3_perform(s, &r, &code);
    if (rc == OK)
        rc = s3_status(s, "head", key, code);
    *exists = rc == OK;
    return rc == E_NOTFOUND ? OK : rc;
}

/* s3_xml_value copies the text of the first <tag>...</tag> in [p, end) into out. */
static const char *s3_xml_value(const char *p, const char *end, const char *tag, char *out,
                                size_t cap)
{
    char open[64], close[64];
    const char *a, *b;
    size_t n;

    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    a = memmem(p, (size_t)(end - p), open, strlen(open));
    if (a == NULL)
        return NULL;
    a += strlen(open);
    b = memmem(a, (size_t)(end - a), close, strlen(close));
    if (b == NULL)
        return NULL;
    /* the entities XML may put in a token; keys here are hex and need none */
    n = 0;
    for (const char *q = a; q < b && n + 1 < cap;) {
        static const struct {
            const char *ent;
            char c;
        } ents[] = {
            {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
        bool done = false;
        for (size_t i = 0; i < sizeof(ents) / sizeof(ents[0]) && !done; i++) {
            size_t el = strlen(ents[i].ent);
            if ((size_t)(b - q) >= el && memcmp(q, ents[i].ent, el) == 0) {
                out[n++] = ents[i].c;
                q += el;
                done = true;
            }
        }
        if (!done)
            out[n++] = *q++;
    }
    out[n] = '\0';
    return b + strlen(close);
}

/* s3_multipart_put uploads [0, size) of fd in parts of s->part bytes, aborting on failure. */
static int s3_multipart_put(struct s3 *s, const char *key, int fd, uint64_t size)
{
    struct strbuf answer, done;
    char url[S3_URL_MAX + 600], q[600], upload_id[512] = "";
    char *esc_id = NULL;
    uint64_t part = s->part;
    unsigned nparts;
    long code = 0;
    int rc;

    while ((size + part - 1) / part > S3_MAX_PARTS)
        part *= 2;
    nparts = (unsigned)((size + part - 1) / part);
    strbuf_init(&answer, S3_SMALL_MAX);
    strbuf_init(&done, S3_SMALL_MAX);
    s3_object_url(s, key, "uploads=", url, sizeof(url));
    struct s3_req init = {.method = "POST",
                          .url = url,
                          .key = key,
                          .payload_sha256 = S3_EMPTY_SHA256,
                          .body = "",
                          .answer = &answer};
    rc = s3_perform(s, &init, &code);
    if (rc == OK)
        rc = s3_status(s, "initiate upload", key, code);
    if (rc == OK && s3_xml_value(answer.buf ? answer.buf : "", answer.buf + answer.len, "UploadId",
                                 upload_id, sizeof(upload_id)) == NULL) {
        log_error("store", "initiate upload %.16s on %s: no UploadId in the answer", key, s->label);
        rc = E_UNAVAILABLE;
    }
    if (rc != OK)
        goto out;
    esc_id = curl_easy_escape(NULL, upload_id, 0);
    strbuf_addf(&done, "<CompleteMultipartUpload>");
    for (unsigned i = 0; rc == OK && i < nparts; i++) {
        uint64_t off = (uint64_t)i * part;
        uint64_t len = size - off < part ? size - off : part;
        uint8_t d[SHA256_LEN];
        char hex[SHA256_HEX];
        struct sha256_ctx *h = sha256_new();
        char buf[65536];

        /* each part is signed with its own hash: read it once to hash, then to send */
        for (uint64_t o = 0; o < len;) {
            size_t want = len - o < sizeof(buf) ? (size_t)(len - o) : sizeof(buf);
            ssize_t got = pread(fd, buf, want, (off_t)(off + o));
            if (got <= 0) {
                rc = E_IO;
                break;
            }
            sha256_update(h, buf, (size_t)got);
            o += (uint64_t)got;
        }
        sha256_final(h, d);
        if (rc != OK)
            break;
        hex_encode(d, sizeof(d), hex);
        snprintf(q, sizeof(q), "partNumber=%u&uploadId=%s", i + 1, esc_id);
        s3_object_url(s, key, q, url, sizeof(url));
        struct s3_req pr = {.method = "PUT",
                            .url = url,
                            .key = key,
                            .payload_sha256 = hex,
                            .fd = fd,
                            .off = off,
                            .len = len};
        rc = s3_perform(s, &pr, &code);
        if (rc == OK)
            rc = s3_status(s, "upload part", key, code);
        if (rc == OK && pr.etag[0] == '\0') {
            log_error("store", "upload part %u of %.16s on %s: no ETag", i + 1, key, s->label);
            rc = E_UNAVAILABLE;
        }
        if (rc == OK)
            strbuf_addf(&done, "<Part><PartNumber>%u</PartNumber><ETag>%s</ETag></Part>", i + 1,
                        pr.etag);
    }
    strbuf_addf(&done, "</CompleteMultipartUpload>");
    snprintf(q, sizeof(q), "uploadId=%s", esc_id);
    s3_object_url(s, key, q, url, sizeof(url));
    if (rc == OK) {
        uint8_t d[SHA256_LEN];
        char hex[SHA256_HEX];
        sha256_buf(done.buf, done.len, d);
        hex_encode(d, sizeof(d), hex);
        struct s3_req cr = {.method = "POST",
                            .url = url,
                            .key = key,
                            .payload_sha256 = hex,
                            .body = done.buf,
                            .len = done.len,
                            .answer = &answer};
        rc = s3_perform(s, &cr, &code);
        if (rc == OK)
            rc = s3_status(s, "complete upload", key, code);
        /* S3 may answer 200 with an error document once the parts are being joined */
        if (rc == OK && answer.buf != NULL &&
            memmem(answer.buf, answer.len, "<Error>", 7) != NULL) {
            log_error("store", "complete upload %.16s on %s: %.*s", key, s->label,
                      (int)(answer.len < 200 ? answer.len : 200), answer.buf);
            rc = E_UNAVAILABLE;
        }
    }
    if (rc != OK) {
        struct s3_req ar = {
            .method = "DELETE", .url = url, .key = key, .payload_sha256 = S3_EMPTY_SHA256};
        if (s3_perform(s, &ar, &code) != OK || s3_status(s, "abort upload", key, code) != OK)
            log_warn("store",
                     "abort upload %.16s on %s failed: its parts stay until the bucket's "
                     "lifecycle rule removes incomplete uploads",
                     key, s->label);
    }
out:
    curl_free(esc_id);
    strbuf_release(&answer);
    strbuf_release(&done);
    return rc;
}

/* s3_verify_file hashes [0, size) of fd and tells whether it is key (multipart: checked first). */
static int s3_verify_file(int fd, const char *key)
{
    uint8_t d[SHA256_LEN];
    char hex[SHA256_HEX];

    if (lseek(fd, 0, SEEK_SET) != 0 || sha256_fd(fd, d) != OK)
        return E_IO;
    hex_encode(d, sizeof(d), hex);
    return strcmp(hex, key) == 0 ? OK : E_INVALID;
}

static int s3_put_path(void *be, const char *key, const char *src_path)
{
    struct s3 *s = be;
    struct stat st;
    char url[S3_URL_MAX];
    bool there = false;
    long code = 0;
    int fd = -1;
    int rc;

    /* a blob is immutable and named by its bytes: one that is there already is this one */
    rc = s3_exists(be, key, &there);
    if (rc != OK || there)
        return rc;
    fd = open(src_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        log_error("store", "put %.16s: cannot open '%s': %s", key, src_path, strerror(errno));
        rc = E_IO;
        goto out;
    }
    if (st.st_size == 0 && strcmp(key, S3_EMPTY_SHA256) != 0) {
        rc = E_INVALID; /* no byte to withhold: the key is checked here */
        goto out;
    }
    if ((uint64_t)st.st_size > s->part) {
        rc = s3_verify_file(fd, key);
        if (rc == E_INVALID)
            log_error("store", "put %.16s: '%s' does not hash to its key; not stored", key,
                      src_path);
        if (rc == OK)
            rc = s3_multipart_put(s, key, fd, (uint64_t)st.st_size);
        goto out;
    }
    s3_object_url(s, key, NULL, url, sizeof(url));
    struct s3_req r = {.method = "PUT",
                       .url = url,
                       .key = key,
                       .payload_sha256 = key,
                       .fd = fd,
                       .len = (uint64_t)st.st_size,
                       .check_key = key};
    rc = s3_perform(s, &r, &code);
    if (rc == OK)
        rc = s3_status(s, "put", key, code);
out:
    if (fd >= 0)
        close(fd);
    return rc;
}

struct s3_download {
    int fd;
    struct sha256_ctx *sha;
    uint64_t len; /* bytes kept in fd */
    bool fresh;   /* no byte of this attempt's answer seen yet */
    const long *status;
    int err;
};

/*
 * s3_write keeps a GET's body. Called with a NULL buffer before each attempt, it returns
 * the bytes kept so far: an attempt after a cut download asks for the rest only. Only a
 * 200 or 206 answer's body is kept, and a 200 (the whole object again: a server that
 * ignores ranges) starts the file over.
 */
static size_t s3_write(char *p, size_t size, size_t n, void *ud)
{
    struct s3_download *d = ud;
    size_t total = size * n;

    if (p == NULL) {
        d->fresh = true;
        return (size_t)d->len;
    }
    if (*d->status != 200 && *d->status != 206)
        return total; /* an error document: the status tells */
    if (d->fresh && *d->status == 200 && d->len > 0) {
        uint8_t drop[SHA256_LEN];
        sha256_final(d->sha, drop);
        d->sha = sha256_new();
        d->len = 0;
    }
    d->fresh = false;
    for (size_t off = 0; off < total;) {
        ssize_t w = pwrite(d->fd, p + off, total - off, (off_t)(d->len + off));
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            d->err = errno;
            return 0;
        }
        off += (size_t)w;
    }
    sha256_update(d->sha, p, total);
    d->len += total;
    return total;
}

/*
 * s3_open downloads the object into an unlinked temporary while hashing it. A download cut
 * short is resumed with a ranged GET from where it stopped (s3_perform's attempts).
 * Bytes that do not hash to the key are not returned: counted, logged, E_NOTFOUND as with
 * a storage node (the ring reads another copy and repair rewrites this one; E_IO would
 * mark the whole bucket down for one bad object).
 */
static int s3_open(void *be, const char *key, int *fd, uint64_t *size)
{
    struct s3 *s = be;
    struct s3_download d = {-1, NULL, 0, false, NULL, 0};
    uint8_t digest[SHA256_LEN];
    char hex[SHA256_HEX];
    char url[S3_URL_MAX];
    long code = 0;
    int rc;

    d.fd = blob_tmp_unlinked(s->tmp);
    if (d.fd < 0) {
        log_error("store", "cannot create a download file in '%s': %s", s->tmp, strerror(errno));
        rc = E_IO;
        goto out;
    }
    d.sha = sha256_new();
    s3_object_url(s, key, NULL, url, sizeof(url));
    struct s3_req r = {.method = "GET",
                       .url = url,
                       .key = key,
                       .payload_sha256 = S3_EMPTY_SHA256,
                       .sink = s3_write,
                       .sink_arg = &d};
    d.status = &r.status;
    rc = s3_perform(s, &r, &code);
    if (rc == E_IO && d.err != 0)
        log_error("store", "download %.16s into '%s': %s", key, s->tmp, strerror(d.err));
    if (rc == OK)
        rc = s3_status(s, "get", key, code);
    if (rc != OK)
        goto out;
    sha256_final(d.sha, digest);
    d.sha = NULL;
    hex_encode(digest, SHA256_LEN, hex);
    if (strcmp(hex, key) != 0) {
        metric_add(&m_mismatch, 1);
        log_error("store",
                  "checksum mismatch: %s object %s%s holds bytes hashing to %.16s; not served, "
                  "treated as missing there (repair rewrites it)",
                  s->label, s->prefix, key, hex);
        rc = E_NOTFOUND;
        goto out;
    }
    if (lseek(d.fd, 0, SEEK_SET) != 0) {
        rc = E_IO;
        goto out;
    }
    *fd = d.fd;
    *size = d.len;
    d.fd = -1;
out:
    if (d.sha != NULL)
        sha256_final(d.sha, digest);
    if (d.fd >= 0)
        close(d.fd);
    return rc;
}

static int s3_delete(void *be, const char *key)
{
    struct s3 *s = be;
    struct s3_req r = {.method = "DELETE", .key = key, .payload_sha256 = S3_EMPTY_SHA256};
    char url[S3_URL_MAX];
    long code;
    int rc;

    s3_object_url(s, key, NULL, url, sizeof(url));
    r.url = url;
    rc = s3_perform(s, &r, &code);
    if (rc == OK)
        rc = s3_status(s, "delete", key, code);
    return rc == E_NOTFOUND ? OK : rc;
}

static int s3_tmp_path(void *be, char *buf, size_t cap)
{
    return blob_tmp_name(((struct s3 *)be)->tmp, buf, cap);
}

/* s3_check asks for the bucket (HEAD): 403 names the credentials, 404 the bucket. */
static int s3_check(void *be)
{
    struct s3 *s = be;
    struct s3_req r = {.method = "HEAD",
                       .key = NULL,
                       .payload_sha256 = S3_EMPTY_SHA256,
                       .timeout_ms = S3_CHECK_MS,
                       .tries = 1}; /* readiness is asked again soon: answer now */
    char url[S3_URL_MAX], why[256] = "";
    long code = 0;
    int rc;

    s3_object_url(s, NULL, NULL, url, sizeof(url));
    r.url = url;
    rc = s3_perform(s, &r, &code);
    if (rc != OK || code == 0)
        snprintf(why, sizeof(why), "S3 endpoint %s unreachable", s->label);
    else if (code == 403)
        snprintf(why, sizeof(why), "S3 %s refused the credentials of %s (403)", s->label,
                 s->cred_source);
    else if (code == 404)
        snprintf(why, sizeof(why), "S3 bucket %s does not exist at %s (404)", s->bucket, s->label);
    else if (code < 200 || code >= 300)
        snprintf(why, sizeof(why), "S3 %s answered %ld", s->label, code);
    pthread_mutex_lock(&s->lock);
    memcpy(s->why, why, sizeof(s->why));
    pthread_mutex_unlock(&s->lock);
    return why[0] == '\0' ? OK : E_UNAVAILABLE;
}

static void s3_why(void *be, char *buf, size_t cap)
{
    struct s3 *s = be;

    pthread_mutex_lock(&s->lock);
    snprintf(buf, cap, "%s", s->why);
    pthread_mutex_unlock(&s->lock);
}

/* s3_parse_time reads an ISO 8601 UTC time ("2026-12-04T13:42:00.000Z") as epoch seconds. */
static int64_t s3_parse_time(const char *t)
{
    struct tm tm;

    memset(&tm, 0, sizeof(tm));
    if (sscanf(t, "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec) != 6)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm);
}

/*
 * s3_list pages through ListObjectsV2 from start-after=PREFIX+after, following continuation
 * tokens until cap blobs or the end. Objects under the prefix that are not blob keys (other
 * tools' files) are skipped.
 */
static int s3_list(void *be, const char *after, struct blob_entry *out, size_t cap, size_t *n)
{
    struct s3 *s = be;
    struct strbuf sb;
    char token[1024] = "", url[S3_URL_MAX + 1500], q[1400], start[600];
    char *esc_tok = NULL, *esc_pre = NULL, *esc_start = NULL;
    bool truncated = true;
    long code = 0;
    int rc = OK;

    strbuf_init(&sb, S3_SMALL_MAX);
    snprintf(start, sizeof(start), "%s%s", s->prefix, after);
    esc_pre = curl_easy_escape(NULL, s->prefix, 0);
    esc_start = curl_easy_escape(NULL, start, 0);
    while (rc == OK && truncated && *n < cap) {
        size_t want = cap - *n < S3_LIST_PAGE ? cap - *n : S3_LIST_PAGE;
        const char *p, *end;

        /* parameters sorted by name: curl signs the query as written */
        if (token[0] != '\0') {
            curl_free(esc_tok);
            esc_tok = curl_easy_escape(NULL, token, 0);
            snprintf(q, sizeof(q), "continuation-token=%s&list-type=2&max-keys=%zu&prefix=%s",
                     esc_tok, want, esc_pre);
        } else if (start[0] != '\0') {
            snprintf(q, sizeof(q), "list-type=2&max-keys=%zu&prefix=%s&start-after=%s", want,
                     esc_pre, esc_start);
        } else {
            snprintf(q, sizeof(q), "list-type=2&max-keys=%zu&prefix=%s", want, esc_pre);
        }
        s3_object_url(s, NULL, q, url, sizeof(url));
        struct s3_req r = {
            .method = "GET", .url = url, .payload_sha256 = S3_EMPTY_SHA256, .answer = &sb};
        rc = s3_perform(s, &r, &code);
        if (rc == OK)
            rc = s3_status(s, "list", NULL, code);
        if (rc == E_NOTFOUND)
            rc = E_UNAVAILABLE; /* no bucket: not an empty store */
        if (rc != OK)
            break;
        p = sb.buf ? sb.buf : "";
        end = p + sb.len;
        if (memmem(p, sb.len, "<ListBucketResult", 17) == NULL) {
            log_error("store", "listing of %s: not a ListBucketResult", s->label);
            rc = E_UNAVAILABLE;
            break;
        }
        char flag[16] = "";
        s3_xml_value(p, end, "IsTruncated", flag, sizeof(flag));
        truncated = strcmp(flag, "true") == 0;
        token[0] = '\0';
        s3_xml_value(p, end, "NextContinuationToken", token, sizeof(token));
        if (truncated && token[0] == '\0') {
            log_error("store", "listing of %s: truncated without a continuation token", s->label);
            rc = E_UNAVAILABLE;
            break;
        }
        for (const char *c = memmem(p, sb.len, "<Contents>", 10); c != NULL && *n < cap;) {
            const char *ce = memmem(c, (size_t)(end - c), "</Contents>", 11);
            char k[600], num[32] = "", when[64] = "";
            size_t pl = strlen(s->prefix);
            if (ce == NULL)
                break;
            if (s3_xml_value(c, ce, "Key", k, sizeof(k)) != NULL &&
                strlen(k) == pl + BLOB_KEY_LEN && strncmp(k, s->prefix, pl) == 0 &&
                blob_key_valid(k + pl, BLOB_KEY_LEN)) {
                memcpy(out[*n].key, k + pl, BLOB_KEY_LEN + 1);
                s3_xml_value(c, ce, "Size", num, sizeof(num));
                s3_xml_value(c, ce, "LastModified", when, sizeof(when));
                out[*n].size = strtoull(num, NULL, 10);
                out[*n].mtime = s3_parse_time(when);
                (*n)++;
            }
            c = memmem(ce, (size_t)(end - ce), "<Contents>", 10);
        }
    }
    curl_free(esc_tok);
    curl_free(esc_pre);
    curl_free(esc_start);
    strbuf_release(&sb);
    return rc;
}

static void s3_free(void *be)
{
    struct s3 *s = be;

    if (s == NULL)
        return;
    for (size_t i = 0; i < s->npool; i++)
        curl_easy_cleanup(s->pool[i]);
    pthread_mutex_destroy(&s->lock);
    explicit_bzero(s->secret, sizeof(s->secret));
    free(s->endpoint);
    free(s->bucket);
    free(s->prefix);
    free(s->label);
    free(s->tmp);
    free(s);
}

static bool s3_may_block(void *be)
{
    (void)be;
    return true;
}

static const struct blob_ops s3_ops = {
    .name = "s3",
    .may_block = s3_may_block,
    .free = s3_free,
    .put_path = s3_put_path,
    .open = s3_open,
    .exists = s3_exists,
    .del = s3_delete,
    .tmp_path = s3_tmp_path,
    .check = s3_check,
    .why = s3_why,
    .list = s3_list,
};

int blob_s3_open(const char *url, const struct blob_s3_opts *o, struct blob_store **out)
{
    struct s3_url u;
    struct s3 *s = NULL;
    char buf[1024];
    int rc;

    *out = NULL;
    if (!s3_url_parse(url, &u)) {
        log_error("store",
                  "bad S3 shard '%s' (want s3+http(s)://host[:port]/bucket[/prefix], bucket of "
                  "3 to 63 of a-z 0-9 . -)",
                  url);
        return E_INVALID;
    }
    if (o->tmp_dir == NULL || o->tmp_dir[0] != '/' || o->region == NULL || o->region[0] == '\0' ||
        strlen(o->region) > 64 || o->multipart_bytes < BLOB_S3_MIN_PART) {
        log_error("store",
                  "S3 shard '%s': needs a local tmp dir, storage.s3_region and "
                  "storage.s3_multipart_bytes of at least 5M",
                  url);
        return E_INVALID;
    }
    pthread_once(&s3_once, s3_global_init);
    s = xcalloc(1, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    s->label = xstrdup(url);
    s->cred_source = o->credentials_file != NULL && o->credentials_file[0] != '\0'
                         ? "storage.s3_credentials_file"
                         : "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY";
    rc = s3_load_credentials(o->credentials_file, o->profile, s->access, s->secret, buf,
                             sizeof(buf));
    if (rc != OK) {
        log_error("store", "%s: %s", url, buf);
        s3_free(s);
        return rc;
    }
    if (o->virtual_host)
        snprintf(buf, sizeof(buf), "%s://%s.%s", u.tls ? "https" : "http", u.bucket, u.host);
    else
        snprintf(buf, sizeof(buf), "%s://%s/%s", u.tls ? "https" : "http", u.host, u.bucket);
    s->endpoint = xstrdup(buf);
    s->bucket = xstrdup(u.bucket);
    snprintf(buf, sizeof(buf), "%s%s", u.prefix, u.prefix[0] ? "/" : "");
    s->prefix = xstrdup(buf);
    s->tmp = xstrdup(o->tmp_dir);
    snprintf(s->sigv4, sizeof(s->sigv4), "aws:amz:%s:s3", o->region);
    s->part = o->multipart_bytes;
    s->connect_ms = o->connect_ms > 0 ? o->connect_ms : 1000;
    s->read_ms = o->read_ms > 0 ? o->read_ms : 10000;
    *out = blob_store_new(&s3_ops, s);
    return OK;
}
