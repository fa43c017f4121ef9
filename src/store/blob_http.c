/*
 * blob_http.c - the http:// blob backend: a client of one `tessera storage` node.
 *
 * libcurl easy handles are pooled per node and reused, so connections stay
 * alive between requests (curl_easy_reset keeps them). Every read is checked:
 * a GET is written to an unlinked local file while being hashed, and bytes
 * that do not hash to their key count as missing (docs/internals/storage.md).
 * Thread-safe: a handle belongs to one request at a time.
 */
#include "core/codec.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/log.h"
#include "core/strbuf.h"
#include "core/xalloc.h"
#include "store/blob_int.h"
#include "store/node_auth.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BH_POOL       32                /* idle handles kept per node */
#define BH_SMALL_MAX  (8 * 1024 * 1024) /* cap of a JSON answer (a listing page) */
#define BH_LIST_MAX   10000
#define BH_CHECK_MS   1000 /* /readyz answers within this or the node is not ready */
#define BH_TOTAL_SECS 600  /* no single transfer may take longer */

struct bh {
    char *base; /* "http://host:port", no trailing slash */
    char *tmp;  /* local directory for downloads */
    long connect_ms;
    long read_ms;
    struct secret key; /* signs every request (node_auth.h); len 0: unsigned */
    pthread_mutex_t lock;
    CURL *pool[BH_POOL];
    size_t npool;
};

static pthread_once_t bh_once = PTHREAD_ONCE_INIT;

static void bh_global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* bh_take returns a pooled handle (reset, connections kept) or a new one. */
static CURL *bh_take(struct bh *b)
{
    CURL *c = NULL;

    pthread_mutex_lock(&b->lock);
    if (b->npool > 0)
        c = b->pool[--b->npool];
    pthread_mutex_unlock(&b->lock);
    if (c == NULL) {
        c = curl_easy_init();
        if (c == NULL) {
            fprintf(stderr, "fatal: curl_easy_init failed\n");
            abort();
        }
    } else {
        curl_easy_reset(c);
    }
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, b->connect_ms);
    /* read timeout: less than one byte a second for read_ms aborts the transfer */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (b->read_ms + 999) / 1000);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)BH_TOTAL_SECS);
    curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
    return c;
}

/* bh_give returns a handle to the pool; a handle whose transfer failed is dropped with it. */
static void bh_give(struct bh *b, CURL *c, bool ok)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&b->lock);
    if (ok && b->npool < BH_POOL) {
        b->pool[b->npool++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&b->lock);
    if (c != NULL)
        curl_easy_cleanup(c);
}

/* bh_status maps a node's HTTP answer to a status (the node speaks docs/internals/storage.md). */
static int bh_status(long code)
{
    if (code >= 200 && code < 300)
        return OK;
    switch (code) {
    case 400:
    case 422:
        return E_INVALID;
    case 404:
        return E_NOTFOUND;
    case 413:
        return E_TOOBIG;
    case 507:
        return E_NOSPACE;
    default:
        return E_UNAVAILABLE; /* 5xx and anything unexpected: the node is not serving */
    }
}

/* bh_perform runs the transfer; transport failures are E_UNAVAILABLE (logged once here). */
static int bh_perform(struct bh *b, CURL *c, const char *what, const char *key, long *code)
{
    CURLcode cc = curl_easy_perform(c);

    *code = 0;
    if (cc != CURLE_OK) {
        log_warn("store", "%s %s/blobs/%.16s: %s", what, b->base, key ? key : "",
                 curl_easy_strerror(cc));
        return E_UNAVAILABLE;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, code);
    return OK;
}

static size_t bh_sink(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

static size_t bh_small(char *p, size_t size, size_t n, void *ud)
{
    return strbuf_add(ud, p, size * n) == OK ? size * n : 0;
}

/*
 * bh_sign appends the signature headers of a request to hdr (none without a
 * secret): url is the full URL about to be sent, sha the body's hash.
 */
static struct curl_slist *bh_sign(const struct bh *b, struct curl_slist *hdr, const char *method,
                                  const char *url, const char *sha)
{
    char date[24], auth[NODE_AUTH_VALUE], line[NODE_AUTH_VALUE + 32];

    if (b->key.len == 0)
        return hdr;
    snprintf(date, sizeof(date), "%lld", (long long)time(NULL));
    node_auth_sign(&b->key, method, url + strlen(b->base), date, sha, auth);
    snprintf(line, sizeof(line), "%s: %s", NODE_AUTH_DATE, date);
    hdr = curl_slist_append(hdr, line);
    snprintf(line, sizeof(line), "%s: %s", NODE_AUTH_SHA, sha);
    hdr = curl_slist_append(hdr, line);
    snprintf(line, sizeof(line), "Authorization: %s", auth);
    return curl_slist_append(hdr, line);
}

static void bh_url(const struct bh *b, const char *key, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/blobs/%s", b->base, key);
}

struct bh_upload {
    int fd;
};

static size_t bh_read(char *p, size_t size, size_t n, void *ud)
{
    struct bh_upload *u = ud;
    ssize_t r;

    do
        r = read(u->fd, p, size * n);
    while (r < 0 && errno == EINTR);
    return r < 0 ? CURL_READFUNC_ABORT : (size_t)r;
}

static int bh_put_path(void *be, const char *key, const char *src_path)
{
    struct bh *b = be;
    struct bh_upload u = {-1};
    struct curl_slist *hdr = NULL;
    struct stat st;
    char url[1200];
    CURL *c = NULL;
    long code = 0;
    int rc;

    u.fd = open(src_path, O_RDONLY | O_CLOEXEC);
    if (u.fd < 0 || fstat(u.fd, &st) != 0) {
        log_error("store", "put %.16s: cannot open '%s': %s", key, src_path, strerror(errno));
        rc = E_IO;
        goto out;
    }
    bh_url(b, key, url, sizeof(url));
    c = bh_take(b);
    hdr = curl_slist_append(hdr, "Content-Type: application/octet-stream");
    hdr = curl_slist_append(hdr, "Expect:"); /* no 100-continue round trip */
    hdr = bh_sign(b, hdr, "PUT", url, key);  /* a blob's body hashes to its key */
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, bh_read);
    curl_easy_setopt(c, CURLOPT_READDATA, &u);
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)st.st_size);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, bh_sink);
    rc = bh_perform(b, c, "put", key, &code);
    if (rc == OK)
        rc = bh_status(code);
    if (rc != OK && code != 0)
        log_warn("store", "put %s/blobs/%.16s: answered %ld", b->base, key, code);
out:
    bh_give(b, c, code != 0);
    curl_slist_free_all(hdr);
    if (u.fd >= 0)
        close(u.fd);
    return rc;
}

struct bh_download {
    int fd;
    struct sha256_ctx *sha;
    uint64_t len;
    int err;
};

static size_t bh_write(char *p, size_t size, size_t n, void *ud)
{
    struct bh_download *d = ud;
    size_t total = size * n;

    for (size_t off = 0; off < total;) {
        ssize_t w = write(d->fd, p + off, total - off);
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
 * bh_open downloads the blob into an unlinked temporary while hashing it and
 * returns that descriptor: the caller sees a regular file (sendfile works),
 * and bytes that do not hash to the key never reach it.
 */
static int bh_open(void *be, const char *key, int *fd, uint64_t *size)
{
    struct bh *b = be;
    struct bh_download d = {-1, NULL, 0, 0};
    struct curl_slist *hdr = NULL;
    uint8_t digest[SHA256_LEN];
    char hex[SHA256_HEX];
    char url[1200];
    CURL *c = NULL;
    long code = 0;
    int rc;

    d.fd = blob_tmp_unlinked(b->tmp);
    if (d.fd < 0) {
        log_error("store", "cannot create a download file in '%s': %s", b->tmp, strerror(errno));
        rc = E_IO;
        goto out;
    }
    d.sha = sha256_new();
    bh_url(b, key, url, sizeof(url));
    c = bh_take(b);
    hdr = bh_sign(b, hdr, "GET", url, NODE_AUTH_EMPTY);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, bh_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &d);
    rc = bh_perform(b, c, "get", key, &code);
    if (rc != OK && d.err != 0) {
        log_error("store", "download %.16s into '%s': %s", key, b->tmp, strerror(d.err));
        rc = E_IO;
    }
    if (rc == OK)
        rc = bh_status(code); /* an error answer's body went to the file too: dropped with it */
    if (rc != OK)
        goto out;
    sha256_final(d.sha, digest);
    d.sha = NULL;
    hex_encode(digest, SHA256_LEN, hex);
    if (strcmp(hex, key) != 0) {
        log_error("store",
                  "checksum mismatch: %s/blobs/%s holds bytes hashing to %.16s; "
                  "treated as missing there (repair rewrites it)",
                  b->base, key, hex);
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
    bh_give(b, c, code != 0);
    curl_slist_free_all(hdr);
    if (d.sha != NULL)
        sha256_final(d.sha, digest);
    if (d.fd >= 0)
        close(d.fd);
    return rc;
}

/* bh_simple runs a request without a body to send: HEAD, DELETE, GET of a small answer. */
static int bh_simple(struct bh *b, const char *method, const char *url, const char *key,
                     struct strbuf *answer, long timeout_ms, long *code)
{
    struct curl_slist *hdr = bh_sign(b, NULL, method, url, NODE_AUTH_EMPTY);
    CURL *c = bh_take(b);
    int rc;

    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    else if (strcmp(method, "GET") != 0)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, answer ? bh_small : bh_sink);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, answer);
    if (timeout_ms > 0)
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    rc = bh_perform(b, c, method, key, code);
    bh_give(b, c, *code != 0);
    curl_slist_free_all(hdr);
    return rc;
}

static int bh_exists(void *be, const char *key, bool *exists)
{
    struct bh *b = be;
    char url[1200];
    long code = 0;
    int rc;

    bh_url(b, key, url, sizeof(url));
    rc = bh_simple(b, "HEAD", url, key, NULL, 0, &code);
    if (rc != OK)
        return rc;
    rc = bh_status(code);
    if (rc == OK)
        *exists = true;
    return rc == E_NOTFOUND ? OK : rc;
}

static int bh_delete(void *be, const char *key)
{
    struct bh *b = be;
    char url[1200];
    long code = 0;
    int rc;

    bh_url(b, key, url, sizeof(url));
    rc = bh_simple(b, "DELETE", url, key, NULL, 0, &code);
    if (rc != OK)
        return rc;
    rc = bh_status(code);
    return rc == E_NOTFOUND ? OK : rc;
}

static int bh_tmp_path(void *be, char *buf, size_t cap)
{
    return blob_tmp_name(((struct bh *)be)->tmp, buf, cap);
}

static int bh_check(void *be)
{
    struct bh *b = be;
    char url[1200];
    long code = 0;
    int rc;

    snprintf(url, sizeof(url), "%s/readyz", b->base);
    rc = bh_simple(b, "GET", url, NULL, NULL, BH_CHECK_MS, &code);
    return rc == OK && code == 200 ? OK : E_UNAVAILABLE;
}

/* bh_entries GETs url, an answer {"blobs":[{"key","size","mtime"}...]} of at most cap entries. */
static int bh_entries(struct bh *b, const char *url, struct blob_entry *out, size_t cap, size_t *n)
{
    struct strbuf sb;
    json_error_t jerr;
    json_t *j = NULL, *keys;
    long code = 0;
    int rc;

    strbuf_init(&sb, BH_SMALL_MAX);
    rc = bh_simple(b, "GET", url, NULL, &sb, 0, &code);
    if (rc == OK)
        rc = bh_status(code);
    if (rc != OK)
        goto out;
    j = json_loadb(sb.buf ? sb.buf : "", sb.len, 0, &jerr);
    keys = json_object_get(j, "blobs");
    if (!json_is_array(keys) || json_array_size(keys) > cap) {
        log_error("store", "listing of %s: not a listing answer", b->base);
        rc = E_UNAVAILABLE;
        goto out;
    }
    for (size_t i = 0; i < json_array_size(keys); i++) {
        json_t *e = json_array_get(keys, i);
        const char *k = json_string_value(json_object_get(e, "key"));
        if (k == NULL || !blob_key_valid(k, strnlen(k, BLOB_KEY_LEN + 1))) {
            log_error("store", "listing of %s: bad key", b->base);
            rc = E_UNAVAILABLE;
            goto out;
        }
        memcpy(out[*n].key, k, BLOB_KEY_LEN + 1);
        out[*n].size = (uint64_t)json_integer_value(json_object_get(e, "size"));
        out[*n].mtime = (int64_t)json_integer_value(json_object_get(e, "mtime"));
        (*n)++;
    }
out:
    json_decref(j);
    strbuf_release(&sb);
    return rc;
}

static int bh_list(void *be, const char *after, struct blob_entry *out, size_t cap, size_t *n)
{
    struct bh *b = be;
    char url[1300];

    if (cap > BH_LIST_MAX)
        cap = BH_LIST_MAX;
    snprintf(url, sizeof(url), "%s/blobs?after=%s&limit=%zu", b->base, after, cap);
    return bh_entries(b, url, out, cap, n);
}

static int bh_quarantined(void *be, struct blob_entry *out, size_t cap, size_t *n)
{
    struct bh *b = be;
    char url[1100];

    snprintf(url, sizeof(url), "%s/quarantine", b->base);
    return bh_entries(b, url, out, cap, n);
}

static void bh_free(void *be)
{
    struct bh *b = be;

    if (b == NULL)
        return;
    for (size_t i = 0; i < b->npool; i++)
        curl_easy_cleanup(b->pool[i]);
    pthread_mutex_destroy(&b->lock);
    memset(&b->key, 0, sizeof(b->key));
    free(b->base);
    free(b->tmp);
    free(b);
}

static bool bh_may_block(void *be)
{
    (void)be;
    return true;
}

static const struct blob_ops bh_ops = {
    .name = "http",
    .may_block = bh_may_block,
    .free = bh_free,
    .put_path = bh_put_path,
    .open = bh_open,
    .exists = bh_exists,
    .del = bh_delete,
    .tmp_path = bh_tmp_path,
    .check = bh_check,
    .list = bh_list,
    .quarantined = bh_quarantined,
};

int blob_http_open(const char *base, const char *tmp_dir, long connect_ms, long read_ms,
                   const struct secret *key, struct blob_store **out)
{
    struct bh *b;
    size_t len = strlen(base);

    *out = NULL;
    if (strncmp(base, "http://", 7) != 0 || len < 8 || len > 1000 || tmp_dir == NULL ||
        tmp_dir[0] != '/') {
        log_error("store", "bad storage node '%s' (want http://host:port, and a local tmp dir)",
                  base);
        return E_INVALID;
    }
    pthread_once(&bh_once, bh_global_init);
    while (len > 7 && base[len - 1] == '/')
        len--;
    b = xcalloc(1, sizeof(*b));
    b->base = xstrndup(base, len);
    b->tmp = xstrdup(tmp_dir);
    b->connect_ms = connect_ms;
    b->read_ms = read_ms;
    if (key != NULL)
        b->key = *key;
    pthread_mutex_init(&b->lock, NULL);
    *out = blob_store_new(&bh_ops, b);
    return OK;
}
