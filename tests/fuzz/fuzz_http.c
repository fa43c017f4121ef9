/*
 * fuzz_http.c - the HTTP core end to end: raw request bytes to a real server.
 *
 * Why end to end: multipart bodies go through libmicrohttpd's post processor,
 * which only exists on a live MHD connection (it reads the Content-Type and
 * boundary from it), and header/limit handling lives in the MHD callbacks.
 * So the target starts the real http_server (server.c: epoll pool, worker
 * thread for blocking routes, the limits) once on 127.0.0.1:0 with routes
 * shaped like the API's and the storage node's, then for each input opens a
 * connection, sends the bytes, half-closes and reads the answer.
 * Invariants: the server never crashes (sanitizers), every answer it sends
 * is an HTTP/1.x status line and not a 5xx (nothing here fails on the server's
 * side), and it answers /healthz after each input.
 */
#include "app/cursor.h"
#include "core/err.h"
#include "core/ident.h"
#include "core/log.h"
#include "fuzz.h"
#include "http/http.h"
#include "http/range.h"
#include "image/image.h"
#include "services/api.h"
#include "services/storage.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

static void h_upload(struct http_req *req)
{
    uint8_t head[64];
    ssize_t n = 0;
    int fd = open(http_body_path(req), O_RDONLY | O_CLOEXEC);

    if (fd >= 0) {
        n = read(fd, head, sizeof(head));
        close(fd);
    }
    if (n <= 0 || img_sniff(head, (size_t)n) == IMG_UNKNOWN) {
        http_reply_error(req, E_UNSUPPORTED, "not an image");
        return;
    }
    http_reply_json(req, 201, json_pack("{s:I}", "bytes", (json_int_t)http_body_len(req)));
}

/* the cursor secret of this fuzzing process */
static const uint8_t cursor_key[CURSOR_KEY_LEN] = {7};

static void h_list(struct http_req *req)
{
    const char *ls = http_query(req, "limit");
    const char *cs = http_query(req, "cursor");
    int64_t before = 0;

    if (ls != NULL) {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(ls, &end, 10);
        if (errno != 0 || end == ls || *end != '\0' || v < 1 || v > 1000) {
            http_reply_error(req, E_INVALID, "limit must be an integer from 1 to 1000");
            return;
        }
    }
    if (cs != NULL && cursor_decode(cursor_key, cs, strlen(cs), &before) != OK) {
        http_reply_error(req, E_INVALID, "bad cursor");
        return;
    }
    http_reply_json(req, 200, json_pack("{s:[],s:n}", "items", "next_cursor"));
}

static void h_bytes(struct http_req *req)
{
    struct str id, ext;
    const char *range = http_header(req, "Range");
    const char *inm = http_header(req, "If-None-Match");
    uint64_t first, last;

    api_split_ext(http_param(req, 0), &id, &ext);
    if (!image_id_valid(id.p, id.len) || (ext.len > 0 && img_format_from_ext(ext) == IMG_UNKNOWN)) {
        /* quotes request bytes, as the API's answers do */
        http_reply_error(req, E_NOTFOUND, "no image %.*s, not .%.*s", (int)id.len, id.p,
                         (int)ext.len, ext.p);
        return;
    }
    if (inm != NULL && http_etag_match(inm, "abc")) {
        http_reply_empty(req, 304);
        return;
    }
    if (range != NULL && http_range_parse(range, 1000, &first, &last) == E_RANGE) {
        http_reply_error(req, E_RANGE, "unsatisfiable range");
        return;
    }
    http_reply_buf(req, 200, "image/png", "0123456789", 10);
}

static void h_blobs(struct http_req *req)
{
    size_t limit;
    const char *why = "";

    if (storage_list_args(http_query(req, "after"), http_query(req, "limit"), &limit, &why) != OK) {
        http_reply_error(req, E_INVALID, "%s", why);
        return;
    }
    http_reply_json(req, 200, json_pack("{s:[],s:n}", "blobs", "next"));
}

static void h_blob(struct http_req *req)
{
    struct str k = http_param(req, 0);

    if (!blob_key_valid(k.p, k.len)) {
        http_reply_error(req, E_INVALID, "a blob key is 64 lowercase hex digits");
        return;
    }
    http_reply_error(req, E_NOTFOUND, "no such blob");
}

static const struct route routes[] = {
    {HTTP_POST, "/api/v1/images", "upload", h_upload, ROUTE_BODY_UPLOAD | ROUTE_BLOCKING},
    {HTTP_GET, "/api/v1/images", "list", h_list, ROUTE_BLOCKING},
    {HTTP_GET, "/i/*", "bytes", h_bytes, 0},
    {HTTP_GET, "/blobs", "blob_list", h_blobs, 0},
    {HTTP_GET | HTTP_DELETE, "/blobs/*", "blob", h_blob, 0},
    {HTTP_PUT, "/blobs/*", "blob_put", h_blob, ROUTE_BODY_UPLOAD},
};

static struct http_server *srv;
static struct sockaddr_in addr;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static char tmp[64];
    sigset_t set;

    (void)argc;
    (void)argv;
    log_min_level = getenv("FUZZ_HTTP_LOG") ? LOG_DEBUG : LOG_OFF;
    snprintf(tmp, sizeof(tmp), "/tmp/fuzz-http-%d", (int)getpid());
    mkdir(tmp, 0700);
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    struct http_server_opts o = {
        .listen = "127.0.0.1:0",
        .thread_pool = 1,
        .workers = 1,
        .max_connections = 64,
        .idle_timeout_s = 2,
        .max_header_bytes = 8192,
        .max_url_bytes = 2048,
        .max_body_bytes = 64 * 1024,
        .tmp_dir = tmp,
        .routes = routes,
        .nroutes = sizeof(routes) / sizeof(routes[0]),
    };
    if (http_server_start(&o, &srv) != OK) {
        fprintf(stderr, "fuzz_http: cannot start the server\n");
        abort();
    }
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)http_server_port(srv));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return 0;
}

/* exchange sends n bytes on a new connection, half-closes, reads the answer into buf. */
static size_t exchange(const void *p, size_t n, char *buf, size_t cap)
{
    struct timeval tv = {3, 0};
    size_t got = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    fuzz_check(fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        fprintf(stderr, "fuzz_http: connect: %s\n", strerror(errno));
        abort();
    }
    for (size_t off = 0; off < n;) {
        ssize_t w = send(fd, (const char *)p + off, n - off, MSG_NOSIGNAL);
        if (w <= 0)
            break; /* the server closed early: fine */
        off += (size_t)w;
    }
    shutdown(fd, SHUT_WR);
    /*
     * Read until the server closes, or until it has been quiet for 5 ms after
     * answering: a keep-alive connection whose client half-closed is only
     * dropped at the idle timeout, which would cost seconds per input.
     */
    for (;;) {
        char drop[4096];
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, got > 0 ? 5 : 1000) <= 0)
            break;
        ssize_t r = recv(fd, got < cap ? buf + got : drop, got < cap ? cap - got : sizeof(drop), 0);
        if (r <= 0)
            break;
        if (got < cap)
            got += (size_t)r;
    }
    close(fd);
    return got;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char health[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    char buf[512];
    size_t got;

    if (srv == NULL)
        LLVMFuzzerInitialize(NULL, NULL);
    if (size > 256 * 1024)
        return 0;
    got = exchange(data, size, buf, sizeof(buf));
    if (got >= 5)
        fuzz_check(memcmp(buf, "HTTP/", 5) == 0);
    /*
     * The routes here never fail on the server's side: a 5xx is a bug in the
     * core. Except 505, libmicrohttpd's own answer to an HTTP version it does
     * not speak ("HTTP/2.1"): right by RFC 9110, and not ours to make.
     */
    if (got >= 12)
        fuzz_check(buf[9] != '5' || memcmp(buf + 9, "505", 3) == 0);
    got = exchange(health, sizeof(health) - 1, buf, sizeof(buf) - 1);
    buf[got] = '\0';
    fuzz_check(strncmp(buf, "HTTP/1.1 200", 12) == 0);
    return 0;
}
