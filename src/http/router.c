/*
 * router.c - segment-wise matching of request paths against route patterns.
 */
#include "http/router.h"

#include "core/err.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static const struct {
    unsigned bit;
    const char *name;
} method_names[] = {
    {HTTP_GET, "GET"}, {HTTP_HEAD, "HEAD"},     {HTTP_POST, "POST"},
    {HTTP_PUT, "PUT"}, {HTTP_DELETE, "DELETE"}, {HTTP_OPTIONS, "OPTIONS"},
};

unsigned http_method_parse(const char *name)
{
    for (size_t i = 0; i < sizeof(method_names) / sizeof(method_names[0]); i++) {
        if (strcmp(name, method_names[i].name) == 0)
            return method_names[i].bit;
    }
    return HTTP_OTHER;
}

void http_allow_format(unsigned methods, char *buf, size_t cap)
{
    size_t n = 0;

    buf[0] = '\0';
    if (methods & HTTP_GET)
        methods |= HTTP_HEAD;
    for (size_t i = 0; i < sizeof(method_names) / sizeof(method_names[0]); i++) {
        if ((methods & method_names[i].bit) && n < cap) {
            int w = snprintf(buf + n, cap - n, "%s%s", n ? ", " : "", method_names[i].name);
            if (w > 0)
                n += (size_t)w;
        }
    }
}

/* route_path_match matches path against pattern, capturing "*" segments into m. */
static bool route_path_match(const char *pattern, struct str path, struct route_match *m)
{
    const char *p = pattern;
    size_t i = 0;

    m->nparams = 0;
    while (*p != '\0' && i < path.len) {
        if (*p == '*') {
            size_t start = i;
            while (i < path.len && path.p[i] != '/')
                i++;
            if (i == start || m->nparams == ROUTER_MAX_PARAMS)
                return false;
            m->params[m->nparams++] = (struct str){path.p + start, i - start};
            p++;
            continue;
        }
        if (*p != path.p[i])
            return false;
        p++;
        i++;
    }
    return *p == '\0' && i == path.len;
}

void router_match(const struct route *routes, size_t n, unsigned method, struct str path,
                  struct route_match *m)
{
    struct route_match probe;

    memset(m, 0, sizeof(*m));
    m->status = E_NOTFOUND;
    for (size_t r = 0; r < n; r++) {
        unsigned admits = routes[r].methods;
        if (admits & HTTP_GET)
            admits |= HTTP_HEAD;
        if (!route_path_match(routes[r].pattern, path, &probe))
            continue;
        m->allow |= admits;
        if ((admits & method) && m->route == NULL) {
            unsigned allow = m->allow;
            *m = probe;
            m->route = &routes[r];
            m->allow = allow;
            m->status = OK;
        }
    }
    if (m->route == NULL && m->allow != 0)
        m->status = E_METHOD;
}
