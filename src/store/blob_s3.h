/*
 * blob_s3.h - the s3+http:// and s3+https:// blob backend: one bucket (and prefix) of an
 * S3-compatible object store (AWS S3, Ceph RGW, MinIO, Swift's s3api) as one shard.
 *
 * URL: s3+http://HOST[:PORT]/BUCKET[/PREFIX] (s3+https:// with TLS). Objects are named
 * PREFIX/KEY. Requests are signed with AWS SigV4 by libcurl (CURLOPT_AWS_SIGV4).
 */
#ifndef STORE_BLOB_S3_H
#define STORE_BLOB_S3_H

#include "store/blob.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BLOB_S3_MIN_PART (5 * 1024 * 1024) /* S3's smallest part of a multipart upload */

struct blob_s3_opts {
    const char *tmp_dir;          /* local directory of downloads (absolute) */
    const char *region;           /* signing region: "us-east-1" */
    const char *credentials_file; /* "aws_access_key_id = ..." lines; NULL or "": environment */
    const char *profile;          /* its [profile] section used when there is one: a shard id */
    bool virtual_host;            /* BUCKET.HOST addressing instead of HOST/BUCKET */
    uint64_t multipart_bytes;     /* blobs larger than this go up in parts of this size */
    long connect_ms;              /* to connect to the endpoint */
    long read_ms;                 /* no progress for this long fails the attempt */
};

/*
 * blob_s3_url_ok tells whether url is a well-formed s3+http(s):// shard URL: a host, an
 * optional port, a bucket of 3 to 63 of a-z 0-9 . - and an optional prefix of
 * A-Z a-z 0-9 . _ - / (no "//", no trailing "/").
 */
bool blob_s3_url_ok(const char *url);

/*
 * blob_s3_open opens the bucket of url. Credentials come from o->credentials_file (its
 * [o->profile] section when it has one, else its [default] section or the lines before any
 * section), else from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; never logged. The endpoint is
 * not contacted here (it may be down at start): blob_store_check reports a wrong bucket or
 * credentials. E_INVALID for a bad url, options or missing credentials (logged, naming
 * the setting).
 */
int blob_s3_open(const char *url, const struct blob_s3_opts *o, struct blob_store **out);

/*
 * blob_s3_check_credentials tells whether S3 credentials can be loaded from file (NULL or
 * "": the environment) for the shard profile (see blob_s3_open), for configuration checks: OK, or
 * E_INVALID with a sentence naming the setting in why (capacity cap). The values are neither kept
 * nor logged.
 */
int blob_s3_check_credentials(const char *file, const char *profile, char *why, size_t cap);

/* blob_s3_is tells whether url names the S3 backend (s3+http:// or s3+https://). */
bool blob_s3_is(const char *url);

#endif
