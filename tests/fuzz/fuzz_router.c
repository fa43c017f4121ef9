/*
 * fuzz_router.c - request paths: route matching of the API and storage tables,
 * the id and "name.ext" splitting of /i/{id}.{ext}, and the identifier checks.
 *
 * Input: one byte choosing the method, then the path (NUL bytes included).
 * Invariants: captured parameters lie inside the path, are non-empty and hold
 * no '/'; an id that passes image_id_valid only holds [A-Za-z0-9_-].
 */
#include "core/err.h"
#include "core/ident.h"
#include "core/str.h"
#include "fuzz.h"
#include "http/http.h"
#include "http/router.h"
#include "image/image.h"
#include "services/api.h"

#include <string.h>

static void dummy(struct http_req *req)
{
    (void)req;
}

/* The storage node's table (static in storage.c): the same patterns. */
static const struct route storage_like[] = {
    {HTTP_GET, "/blobs", "blob_list", dummy, 0},
    {HTTP_GET, "/blobs/*", "blob_get", dummy, 0},
    {HTTP_PUT, "/blobs/*", "blob_put", dummy, ROUTE_BODY_UPLOAD},
    {HTTP_DELETE, "/blobs/*", "blob_delete", dummy, 0},
};

static void check_match(const struct route_match *m, struct str path)
{
    char allow[128];

    if (m->status == OK) {
        fuzz_check(m->route != NULL);
        fuzz_check(m->nparams <= ROUTER_MAX_PARAMS);
        for (size_t i = 0; i < m->nparams; i++) {
            struct str p = m->params[i];
            fuzz_check(p.len > 0);
            fuzz_check(p.p >= path.p && p.p + p.len <= path.p + path.len);
            fuzz_check(memchr(p.p, '/', p.len) == NULL);
        }
    } else {
        fuzz_check(m->route == NULL);
        fuzz_check(m->status == E_NOTFOUND || m->status == E_METHOD);
        fuzz_check((m->status == E_METHOD) == (m->allow != 0));
    }
    http_allow_format(m->allow, allow, sizeof(allow));
    fuzz_check(strlen(allow) < sizeof(allow));
}

static void check_id(struct str s)
{
    struct str name, ext;

    api_split_ext(s, &name, &ext);
    fuzz_check(name.p == s.p && name.len <= s.len);
    fuzz_check(ext.len == 0 || (ext.p > s.p && ext.p + ext.len == s.p + s.len));
    if (image_id_valid(name.p, name.len)) {
        fuzz_check(name.len >= 11 && name.len <= IMAGE_ID_MAX);
        fuzz_check(memchr(name.p, '.', name.len) == NULL);
        fuzz_check(memchr(name.p, '/', name.len) == NULL);
    }
    (void)img_format_from_ext(ext);
    (void)img_format_from_name(ext);
    if (blob_key_valid(s.p, s.len))
        fuzz_check(s.len == BLOB_KEY_LEN);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const unsigned methods[] = {HTTP_GET,    HTTP_HEAD,    HTTP_POST, HTTP_PUT,
                                       HTTP_DELETE, HTTP_OPTIONS, HTTP_OTHER};
    struct route_match m;
    struct str path;
    unsigned method;

    if (size < 1 || size > 4096)
        return 0;
    method = methods[data[0] % (sizeof(methods) / sizeof(methods[0]))];
    path = (struct str){(const char *)data + 1, size - 1};

    router_match(api_routes, api_nroutes, method, path, &m);
    check_match(&m, path);
    for (size_t i = 0; i < m.nparams; i++)
        check_id(m.params[i]);
    router_match(storage_like, sizeof(storage_like) / sizeof(storage_like[0]), method, path, &m);
    check_match(&m, path);
    check_id(path);

    /* the method name itself, and the request id a client may send */
    char *s = fuzz_cstr(data + 1, size - 1);
    (void)http_method_parse(s);
    if (http_rid_valid(s))
        fuzz_check(strlen(s) >= 1 && strlen(s) <= 64 && strpbrk(s, "\r\n /") == NULL);
    free(s);
    return 0;
}
