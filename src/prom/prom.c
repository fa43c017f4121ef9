/*
 * prom.c - Prometheus queries over libcurl (GET /api/v1/query and query_range).
 *
 * Answers are capped (PROM_MAX_BODY): a query that would return more is an
 * error, never a large allocation.
 */
#include "prom/prom.h"

#include "core/log.h"
#include "core/strbuf.h"

#include <curl/curl.h>
#include <stdio.h>
#include <time.h>

#define PROM_MAX_BODY (4 * 1024 * 1024)

static size_t prom_write(char *p, size_t size, size_t n, void *arg)
{
    struct strbuf *sb = arg;

    if (sb->len + size * n > PROM_MAX_BODY)
        return 0; /* curl fails the transfer */
    strbuf_add(sb, p, size * n);
    return size * n;
}

json_t *prom_query(const char *base_url, const char *expr, int64_t range_s, int64_t step_s,
                   long timeout_ms)
{
    CURL *h = curl_easy_init();
    char *q = NULL, url[2048], errbuf[CURL_ERROR_SIZE] = "";
    struct strbuf body;
    json_t *root = NULL, *result = NULL;
    long status = 0;

    strbuf_init(&body, PROM_MAX_BODY);
    if (h == NULL)
        goto out;
    q = curl_easy_escape(h, expr, 0);
    if (range_s == 0) {
        snprintf(url, sizeof(url), "%s/api/v1/query?query=%s", base_url, q);
    } else {
        long long end = (long long)time(NULL);
        snprintf(url, sizeof(url), "%s/api/v1/query_range?query=%s&start=%lld&end=%lld&step=%lld",
                 base_url, q, end - (long long)range_s, end, (long long)step_s);
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, prom_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    if (curl_easy_perform(h) != CURLE_OK) {
        log_warn("prom", "%s: %s", base_url, errbuf[0] ? errbuf : "request failed");
        goto out;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    root = json_loadb(body.buf ? body.buf : "", body.len, 0, NULL);
    result = json_object_get(json_object_get(root, "data"), "result");
    if (status != 200 || !json_is_array(result)) {
        log_warn("prom", "%s: query \"%s\" answered %ld", base_url, expr, status);
        result = NULL;
        goto out;
    }
    json_incref(result);
out:
    json_decref(root);
    curl_free(q);
    if (h != NULL)
        curl_easy_cleanup(h);
    strbuf_release(&body);
    return result;
}
