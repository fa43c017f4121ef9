/*
 * client.c - tessera upload / ls / info / rm: the HTTP API from a terminal.
 *
 * One libcurl easy handle per command; answers are read into a capped buffer
 * and parsed with jansson. Errors print the API's own message and map to the
 * CLIENT_EXIT_ codes: 1 the API said no, 2 bad usage, 3 no connection.
 */
#include "cli/client.h"

#include "core/err.h"
#include "core/strbuf.h"
#include "core/xalloc.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CLIENT_DEFAULT_URL   "http://127.0.0.1:8080"
#define CLIENT_MAX_BODY      (16u * 1024 * 1024) /* one API answer */
#define CLIENT_MAX_URL       2048
#define CLIENT_PAGE          100           /* ls page size */
#define CLIENT_PROGRESS_FROM (1024 * 1024) /* bar for uploads from 1 MiB */
#define CLIENT_MAX_ARGS      256

struct client {
    const char *cmd; /* "upload", ... */
    char server[CLIENT_MAX_URL];
    const char *key;
    const char *token;
    long long limit; /* ls: at most this many images; 0 = all */
    bool json;
    int nargs;
    char *args[CLIENT_MAX_ARGS];
};

struct client_resp {
    long status;
    struct strbuf body;
};

/* what each command accepts */
enum {
    OPT_SERVER = 1 << 0,
    OPT_KEY = 1 << 1,
    OPT_JSON = 1 << 2,
    OPT_LIMIT = 1 << 3,
    OPT_TOKEN = 1 << 4,
};

static const struct client_cmd_spec {
    const char *name;
    unsigned opts;
    int min_args, max_args;
    const char *usage;
} client_specs[] = {
    {"upload", OPT_SERVER | OPT_KEY | OPT_JSON, 1, CLIENT_MAX_ARGS,
     "usage: tessera upload [--server URL] [--key KEY] [--json] FILE...\n"
     "  uploads each file; prints its URL (--json: the API's answer, one per line)\n"},
    {"ls", OPT_SERVER | OPT_KEY | OPT_JSON | OPT_LIMIT, 0, 0,
     "usage: tessera ls [--server URL] [--limit N] [--json]\n"
     "  lists images newest first, following the cursors (--limit: at most N)\n"},
    {"info", OPT_SERVER | OPT_KEY | OPT_JSON, 1, 1,
     "usage: tessera info [--server URL] [--json] ID\n"
     "  prints the metadata of one image\n"},
    {"rm", OPT_SERVER | OPT_KEY | OPT_TOKEN, 1, 1,
     "usage: tessera rm [--server URL] (--token DELETE_TOKEN | --key ADMIN_KEY) ID\n"
     "  deletes one image with its delete token (from the upload) or an admin key\n"},
};

static const char client_common_help[] =
    "server: --server URL, else $TESSERA_URL, else " CLIENT_DEFAULT_URL "\n"
    "API key: --key KEY, else $TESSERA_KEY (sent as Authorization: Bearer)\n"
    "exit status: 0 ok, 1 the API answered an error, 2 usage, 3 cannot connect\n";

/* --- HTTP --- */

static size_t client_write(char *p, size_t size, size_t n, void *arg)
{
    struct client_resp *r = arg;

    /* over the cap: returning less than given makes curl stop with an error */
    return strbuf_add(&r->body, p, size * n) == OK ? size * n : 0;
}

struct client_progress {
    const char *name;
    int last; /* last percent drawn, -1 none */
};

static void client_human(double v, char *out, size_t cap)
{
    const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    size_t u = 0;

    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(out, cap, u == 0 ? "%.0f %s" : "%.1f %s", v, unit[u]);
}

static int client_xferinfo(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                           curl_off_t ulnow)
{
    struct client_progress *pg = arg;
    char now[32], total[32], bar[31];
    int pct, fill;

    (void)dltotal;
    (void)dlnow;
    if (ultotal <= 0)
        return 0;
    pct = (int)(ulnow * 100 / ultotal);
    if (pct == pg->last)
        return 0;
    pg->last = pct;
    fill = pct * 30 / 100;
    memset(bar, '#', (size_t)fill);
    memset(bar + fill, '.', (size_t)(30 - fill));
    bar[30] = '\0';
    client_human((double)ulnow, now, sizeof(now));
    client_human((double)ultotal, total, sizeof(total));
    fprintf(stderr, "\r\033[K%.30s [%s] %3d%% %s / %s", pg->name, bar, pct, now, total);
    fflush(stderr);
    return 0;
}

/* client_connect_error tells a network failure (exit 3) from other transfer errors. */
static bool client_connect_error(CURLcode cc)
{
    switch (cc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
        return true;
    default:
        return false;
    }
}

/*
 * client_do runs one request: method on path (appended to the server URL),
 * with an optional multipart body and progress bar. Fills r; returns
 * CLIENT_EXIT_OK when an answer arrived (whatever its status), else prints
 * why and returns CLIENT_EXIT_CONNECT or CLIENT_EXIT_API.
 */
static int client_do(const struct client *c, const char *method, const char *path,
                     const char *upload_file, const char *extra_header, struct client_resp *r)
{
    char url[CLIENT_MAX_URL + 512], errbuf[CURL_ERROR_SIZE] = "", auth[1200];
    struct curl_slist *hdrs = NULL;
    struct client_progress pg = {upload_file, -1};
    curl_mime *mime = NULL;
    CURL *h = curl_easy_init();
    CURLcode cc;
    int rc = CLIENT_EXIT_OK;

    r->status = 0;
    strbuf_init(&r->body, CLIENT_MAX_BODY);
    if (h == NULL) {
        fprintf(stderr, "tessera %s: cannot start libcurl\n", c->cmd);
        rc = CLIENT_EXIT_API;
        goto out;
    }
    snprintf(url, sizeof(url), "%s%s", c->server, path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "tessera/" TESSERA_VERSION);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, client_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
    /* a stalled server: under 1 byte/s for a minute ends the transfer */
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    if (c->key != NULL) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", c->key);
        hdrs = curl_slist_append(hdrs, auth);
    }
    if (extra_header != NULL)
        hdrs = curl_slist_append(hdrs, extra_header);
    hdrs = curl_slist_append(hdrs, "Accept: application/json");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    if (upload_file != NULL) {
        struct stat st;
        curl_mimepart *part;
        mime = curl_mime_init(h);
        part = curl_mime_addpart(mime);
        curl_mime_name(part, "file");
        if (curl_mime_filedata(part, upload_file) != CURLE_OK) {
            fprintf(stderr, "tessera %s: cannot read \"%s\"\n", c->cmd, upload_file);
            rc = CLIENT_EXIT_USAGE;
            goto out;
        }
        curl_mime_type(part, "application/octet-stream");
        curl_easy_setopt(h, CURLOPT_MIMEPOST, mime);
        if (isatty(STDERR_FILENO) && stat(upload_file, &st) == 0 &&
            st.st_size >= CLIENT_PROGRESS_FROM) {
            const char *slash = strrchr(upload_file, '/');
            pg.name = slash ? slash + 1 : upload_file;
            curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, client_xferinfo);
            curl_easy_setopt(h, CURLOPT_XFERINFODATA, &pg);
            curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        }
    }
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    cc = curl_easy_perform(h);
    if (pg.last >= 0)
        fprintf(stderr, "\r\033[K");
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    if (cc != CURLE_OK && r->status == 0) {
        fprintf(stderr, "tessera %s: cannot connect to %s: %s\n", c->cmd, c->server,
                errbuf[0] ? errbuf : curl_easy_strerror(cc));
        rc = client_connect_error(cc) ? CLIENT_EXIT_CONNECT : CLIENT_EXIT_API;
        goto out;
    }
    if (cc != CURLE_OK && r->body.len == 0 && r->status < 400) {
        fprintf(stderr, "tessera %s: %s: %s\n", c->cmd, url,
                errbuf[0] ? errbuf : curl_easy_strerror(cc));
        rc = client_connect_error(cc) ? CLIENT_EXIT_CONNECT : CLIENT_EXIT_API;
        goto out;
    }
out:
    curl_mime_free(mime);
    curl_slist_free_all(hdrs);
    if (h != NULL)
        curl_easy_cleanup(h);
    if (rc != CLIENT_EXIT_OK)
        strbuf_release(&r->body);
    return rc;
}

/* client_api_error prints the API's error answer about what; returns CLIENT_EXIT_API. */
static int client_api_error(const struct client *c, const char *what, struct client_resp *r)
{
    json_t *j = json_loadb(r->body.buf ? r->body.buf : "", r->body.len, 0, NULL);
    const char *code = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
    const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));

    if (code != NULL && msg != NULL)
        fprintf(stderr, "tessera %s: %s: %s (%s, HTTP %ld)\n", c->cmd, what, msg, code, r->status);
    else
        fprintf(stderr, "tessera %s: %s: the server answered HTTP %ld without an API error\n",
                c->cmd, what, r->status);
    json_decref(j);
    return CLIENT_EXIT_API;
}

/* client_json parses the answer; prints and returns NULL when it is not a JSON object. */
static json_t *client_json(const struct client *c, const char *what, struct client_resp *r)
{
    json_error_t e;
    json_t *j = json_loadb(r->body.buf ? r->body.buf : "", r->body.len, 0, &e);

    if (!json_is_object(j)) {
        fprintf(stderr, "tessera %s: %s: the answer is not a JSON object (%s)\n", c->cmd, what,
                e.text);
        json_decref(j);
        return NULL;
    }
    return j;
}

static void client_print_json(json_t *j, size_t flags)
{
    char *s = json_dumps(j, flags | JSON_ENCODE_ANY);

    if (s != NULL)
        printf("%s\n", s);
    free(s);
}

static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));

    return s ? s : "";
}

static long long jint(json_t *o, const char *k)
{
    return (long long)json_integer_value(json_object_get(o, k));
}

/* client_id_ok accepts what may be an image id ([A-Za-z0-9_-]{1,64}), so it is safe in a path. */
static bool client_id_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

/* --- commands --- */

static int client_upload(struct client *c)
{
    int worst = CLIENT_EXIT_OK;

    /* every file is checked before the first byte is sent */
    for (int i = 0; i < c->nargs; i++) {
        struct stat st;
        if (stat(c->args[i], &st) != 0 || access(c->args[i], R_OK) != 0) {
            fprintf(stderr, "tessera upload: cannot read \"%s\": %s\n", c->args[i],
                    strerror(errno));
            return CLIENT_EXIT_USAGE;
        }
        if (!S_ISREG(st.st_mode)) {
            fprintf(stderr, "tessera upload: \"%s\" is not a regular file\n", c->args[i]);
            return CLIENT_EXIT_USAGE;
        }
    }
    for (int i = 0; i < c->nargs; i++) {
        struct client_resp r;
        const char *file = c->args[i];
        json_t *j;
        int rc = client_do(c, "POST", "/api/v1/images", file, NULL, &r);

        if (rc == CLIENT_EXIT_CONNECT)
            return rc;
        if (rc != CLIENT_EXIT_OK) {
            worst = rc;
            continue;
        }
        if (r.status != 201) {
            worst = client_api_error(c, file, &r);
        } else if ((j = client_json(c, file, &r)) == NULL) {
            worst = CLIENT_EXIT_API;
        } else {
            if (c->json) {
                client_print_json(j, JSON_COMPACT);
            } else {
                printf("%s\n", jstr(j, "url"));
                fprintf(stderr, "%s: id %s, delete with: tessera rm %s --token %s\n", file,
                        jstr(j, "id"), jstr(j, "id"), jstr(j, "delete_token"));
            }
            fflush(stdout);
            json_decref(j);
        }
        strbuf_release(&r.body);
    }
    return worst;
}

static int client_ls(struct client *c)
{
    char *cursor = NULL;
    long long shown = 0;
    int rc = CLIENT_EXIT_OK;

    for (;;) {
        char path[1024];
        long long want = CLIENT_PAGE;
        struct client_resp r;
        json_t *j, *items, *next;
        size_t i;

        if (c->limit > 0 && c->limit - shown < want)
            want = c->limit - shown;
        if (cursor != NULL) {
            char *esc = curl_easy_escape(NULL, cursor, 0);
            snprintf(path, sizeof(path), "/api/v1/images?limit=%lld&cursor=%s", want,
                     esc ? esc : "");
            curl_free(esc);
        } else {
            snprintf(path, sizeof(path), "/api/v1/images?limit=%lld", want);
        }
        rc = client_do(c, "GET", path, NULL, NULL, &r);
        if (rc != CLIENT_EXIT_OK)
            break;
        if (r.status != 200) {
            rc = client_api_error(c, "list", &r);
            strbuf_release(&r.body);
            break;
        }
        j = client_json(c, "list", &r);
        strbuf_release(&r.body);
        items = json_object_get(j, "items");
        if (j == NULL || !json_is_array(items)) {
            if (j != NULL)
                fprintf(stderr, "tessera ls: the answer has no items\n");
            json_decref(j);
            rc = CLIENT_EXIT_API;
            break;
        }
        json_t *it;
        json_array_foreach(items, i, it)
        {
            if (c->json) {
                client_print_json(it, JSON_COMPACT);
            } else {
                printf("%-24s %-5s %6lldx%-6lld %10lld  %s  %s\n", jstr(it, "id"),
                       jstr(it, "format"), jint(it, "width"), jint(it, "height"), jint(it, "bytes"),
                       jstr(it, "created_at"), jstr(it, "url"));
            }
            shown++;
        }
        fflush(stdout);
        next = json_object_get(j, "next_cursor");
        free(cursor);
        cursor = json_is_string(next) && json_array_size(items) > 0
                     ? xstrdup(json_string_value(next))
                     : NULL;
        json_decref(j);
        if (cursor == NULL || (c->limit > 0 && shown >= c->limit))
            break;
    }
    free(cursor);
    return rc;
}

static int client_info(struct client *c)
{
    char path[128];
    struct client_resp r;
    const char *id = c->args[0];
    json_t *j, *v;
    const char *name;
    int rc;

    if (!client_id_ok(id)) {
        fprintf(stderr, "tessera info: \"%s\" is not an image id\n", id);
        return CLIENT_EXIT_USAGE;
    }
    snprintf(path, sizeof(path), "/api/v1/images/%s", id);
    rc = client_do(c, "GET", path, NULL, NULL, &r);
    if (rc != CLIENT_EXIT_OK)
        return rc;
    if (r.status != 200) {
        rc = client_api_error(c, id, &r);
        strbuf_release(&r.body);
        return rc;
    }
    j = client_json(c, id, &r);
    strbuf_release(&r.body);
    if (j == NULL)
        return CLIENT_EXIT_API;
    if (c->json) {
        client_print_json(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    } else {
        printf("id:           %s\nurl:          %s\nformat:       %s\ncontent_type: %s\n"
               "width:        %lld\nheight:       %lld\nframes:       %lld\nbytes:        %lld\n"
               "sha256:       %s\ncreated_at:   %s\n",
               jstr(j, "id"), jstr(j, "url"), jstr(j, "format"), jstr(j, "content_type"),
               jint(j, "width"), jint(j, "height"), jint(j, "frames"), jint(j, "bytes"),
               jstr(j, "sha256"), jstr(j, "created_at"));
        json_object_foreach(json_object_get(j, "variants"), name, v)
        {
            printf("variant:      %s %s\n", name, json_string_value(v) ? json_string_value(v) : "");
        }
    }
    json_decref(j);
    return CLIENT_EXIT_OK;
}

static int client_rm(struct client *c)
{
    char path[128], hdr[512];
    struct client_resp r;
    const char *id = c->args[0];
    int rc;

    if (!client_id_ok(id)) {
        fprintf(stderr, "tessera rm: \"%s\" is not an image id\n", id);
        return CLIENT_EXIT_USAGE;
    }
    if (c->token == NULL && c->key == NULL) {
        fprintf(stderr, "tessera rm: give the image's delete token (--token) or an admin key "
                        "(--key or TESSERA_KEY)\n");
        return CLIENT_EXIT_USAGE;
    }
    if (c->token != NULL && (strlen(c->token) > 256 || strpbrk(c->token, "\r\n") != NULL)) {
        fprintf(stderr, "tessera rm: the delete token is not valid\n");
        return CLIENT_EXIT_USAGE;
    }
    snprintf(path, sizeof(path), "/api/v1/images/%s", id);
    if (c->token != NULL)
        snprintf(hdr, sizeof(hdr), "X-Delete-Token: %s", c->token);
    rc = client_do(c, "DELETE", path, NULL, c->token ? hdr : NULL, &r);
    if (rc != CLIENT_EXIT_OK)
        return rc;
    if (r.status != 204)
        rc = client_api_error(c, id, &r);
    else
        printf("deleted %s\n", id);
    strbuf_release(&r.body);
    return rc;
}

/* --- arguments --- */

/*
 * client_looks_like_id tells an image id that starts with '-' from an option:
 * every option name is shorter than an id (11+) and an id has no '='.
 */
static bool client_looks_like_id(const char *a)
{
    size_t n = strlen(a);

    return n >= 11 && n <= 32 && client_id_ok(a);
}

/* client_opt matches "--name" or "--name=value"; takes the value from the next argument if needed.
 */
static int client_opt(int argc, char **argv, int *i, const char *name, const char **val)
{
    size_t n = strlen(name);
    const char *a = argv[*i];

    if (strncmp(a, name, n) != 0 || (a[n] != '\0' && a[n] != '='))
        return 0;
    if (a[n] == '=') {
        *val = a + n + 1;
        return 1;
    }
    if (*i + 1 >= argc)
        return -1;
    (*i)++;
    *val = argv[*i];
    return 1;
}

static int client_parse(struct client *c, const struct client_cmd_spec *spec, int argc, char **argv)
{
    const char *server = getenv("TESSERA_URL");
    const char *v = NULL;
    bool flags_done = false;

    c->key = getenv("TESSERA_KEY");
    if (c->key != NULL && c->key[0] == '\0')
        c->key = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int m;
        /* ids may start with '-': one that is no option of ours is an argument */
        if (flags_done || a[0] != '-' || strcmp(a, "-") == 0 ||
            (spec->max_args == 1 && client_looks_like_id(a))) {
            if (c->nargs == CLIENT_MAX_ARGS) {
                fprintf(stderr, "tessera %s: too many arguments\n", c->cmd);
                return CLIENT_EXIT_USAGE;
            }
            c->args[c->nargs++] = argv[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            flags_done = true;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(spec->usage, stdout);
            fputs(client_common_help, stdout);
            return -1;
        }
        if ((spec->opts & OPT_JSON) && strcmp(a, "--json") == 0) {
            c->json = true;
            continue;
        }
        static const struct {
            unsigned opt;
            const char *name;
        } valued[] = {{OPT_SERVER, "--server"},
                      {OPT_KEY, "--key"},
                      {OPT_LIMIT, "--limit"},
                      {OPT_TOKEN, "--token"}};
        m = 0;
        for (size_t k = 0; k < sizeof(valued) / sizeof(valued[0]) && m == 0; k++) {
            if (!(spec->opts & valued[k].opt))
                continue;
            m = client_opt(argc, argv, &i, valued[k].name, &v);
            if (m < 0) {
                fprintf(stderr, "tessera %s: %s needs a value\n", c->cmd, valued[k].name);
                return CLIENT_EXIT_USAGE;
            }
            if (m == 0)
                continue;
            if (valued[k].opt == OPT_SERVER) {
                server = v;
            } else if (valued[k].opt == OPT_KEY) {
                c->key = v[0] ? v : NULL;
            } else if (valued[k].opt == OPT_TOKEN) {
                c->token = v;
            } else {
                char *end = NULL;
                errno = 0;
                c->limit = strtoll(v, &end, 10);
                if (errno != 0 || end == v || *end != '\0' || c->limit < 1) {
                    fprintf(stderr, "tessera %s: --limit must be a positive integer\n", c->cmd);
                    return CLIENT_EXIT_USAGE;
                }
            }
        }
        if (m == 0) {
            fprintf(stderr, "tessera %s: unknown option \"%s\"\n%s", c->cmd, a, spec->usage);
            return CLIENT_EXIT_USAGE;
        }
    }
    if (c->nargs < spec->min_args || c->nargs > spec->max_args) {
        fputs(spec->usage, stderr);
        return CLIENT_EXIT_USAGE;
    }
    if (server == NULL || server[0] == '\0')
        server = CLIENT_DEFAULT_URL;
    if ((strncmp(server, "http://", 7) != 0 && strncmp(server, "https://", 8) != 0) ||
        strlen(server) >= sizeof(c->server) || strpbrk(server, " \r\n?#") != NULL) {
        fprintf(stderr, "tessera %s: the server must be an http:// or https:// URL, not \"%s\"\n",
                c->cmd, server);
        return CLIENT_EXIT_USAGE;
    }
    snprintf(c->server, sizeof(c->server), "%s", server);
    size_t n = strlen(c->server);
    while (n > 0 && c->server[n - 1] == '/')
        c->server[--n] = '\0';
    if (c->key != NULL && (strlen(c->key) > 1024 || strpbrk(c->key, "\r\n") != NULL)) {
        fprintf(stderr, "tessera %s: the API key is not valid\n", c->cmd);
        return CLIENT_EXIT_USAGE;
    }
    return CLIENT_EXIT_OK;
}

int client_cmd(const struct config *cfg, int argc, char **argv)
{
    struct client c;
    const struct client_cmd_spec *spec = NULL;
    int rc;

    (void)cfg;
    memset(&c, 0, sizeof(c));
    for (size_t i = 0; i < sizeof(client_specs) / sizeof(client_specs[0]); i++) {
        if (argc > 0 && strcmp(argv[0], client_specs[i].name) == 0)
            spec = &client_specs[i];
    }
    if (spec == NULL) {
        fprintf(stderr, "tessera: unknown client command\n");
        return CLIENT_EXIT_USAGE;
    }
    c.cmd = spec->name;
    rc = client_parse(&c, spec, argc, argv);
    if (rc != CLIENT_EXIT_OK)
        return rc < 0 ? CLIENT_EXIT_OK : rc;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "tessera %s: cannot start libcurl\n", c.cmd);
        return CLIENT_EXIT_API;
    }
    if (strcmp(c.cmd, "upload") == 0)
        rc = client_upload(&c);
    else if (strcmp(c.cmd, "ls") == 0)
        rc = client_ls(&c);
    else if (strcmp(c.cmd, "info") == 0)
        rc = client_info(&c);
    else
        rc = client_rm(&c);
    curl_global_cleanup();
    return rc;
}
