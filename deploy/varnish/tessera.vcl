# tessera.vcl - the edge cache (Varnish 7, VCL 4.1) in front of the nginx balancer.
#
# Rendered by deploy/local/edge.sh (or by hand for production): @LB_HOST@ and
# @LB_PORT@ name the balancer; lines ending in "# xkey" are dropped when the
# xkey vmod (Debian varnish-modules) is not installed, leaving URL purges only.
#
# Invariant: only image bytes (/i/...) are cached, by URL alone (not Host), for
# as long as the origin's Cache-Control allows; everything else passes. Query
# strings are dropped, except the signature ?s= of a transform (/i/{id}/t/...). Purges
# (PURGE by URL, PURGE with an xkey header by surrogate key, BAN by URL regex)
# are accepted from the purgers ACL only.
vcl 4.1;

import xkey; # xkey

backend balancer {
    .host = "@LB_HOST@";
    .port = "@LB_PORT@";
    .connect_timeout = 1s;
    .first_byte_timeout = 60s;
    .between_bytes_timeout = 30s;
}

# Who may purge: loopback (the local cluster's workers) and the extra
# addresses rendered in place of the placeholder below.
acl purgers {
    "127.0.0.0"/8;
    "::1";
@PURGE_ACL@
}

sub vcl_recv {
    if (req.method == "PURGE" || req.method == "BAN") {
        if (client.ip !~ purgers) {
            return (synth(403, "Forbidden"));
        }
        if (req.method == "BAN") {
            # BAN /i/ID.* : every cached URL matching the regex in the path
            ban("obj.http.x-url ~ " + req.url);
            return (synth(200, "Banned"));
        }
        if (req.http.xkey) { # xkey
            set req.http.n-gone = xkey.purge(req.http.xkey); # xkey
            return (synth(200, "Purged " + req.http.n-gone + " objects")); # xkey
        } # xkey
        return (purge);
    }
    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }
    # image bytes are cached; the API, health, readiness and metrics pass
    if (req.url !~ "^/i/") {
        return (pass);
    }
    if (req.url ~ "^/i/[^/?]+/t/") {
        # a transform: the origin checks the signature ?s=, so it (and only it)
        # goes on; any other parameter would only split the cache
        if (req.url ~ "[?&]s=[^&]*") {
            set req.url = regsub(req.url, "^([^?]*)\?(.*&)?(s=[^&]*)(&.*)?$", "\1?\3");
        } else {
            set req.url = regsub(req.url, "\?.*$", "");
        }
        # .auto answers Vary: Accept; three classes of Accept (what the origin
        # tells apart) keep at most three copies instead of one per browser
        if (req.url ~ "\.auto(\?|$)") {
            if (req.http.Accept ~ "(?i)image/avif(?!\s*;\s*q=0(\.0*)?\s*(,|$))") {
                set req.http.Accept = "image/avif";
            } elsif (req.http.Accept ~ "(?i)image/webp(?!\s*;\s*q=0(\.0*)?\s*(,|$))") {
                set req.http.Accept = "image/webp";
            } else {
                set req.http.Accept = "*/*";
            }
        }
    } else {
        # the origin ignores query strings on image bytes: one object per image
        # URL, which is what a purge by URL names
        set req.url = regsub(req.url, "\?.*$", "");
    }
    # the bytes do not depend on cookies or credentials
    unset req.http.Cookie;
    unset req.http.Authorization;
    return (hash);
}

sub vcl_hash {
    # one site behind this edge: the URL alone names the object, so a purge
    # sent to any address of the edge finds it
    hash_data(req.url);
    return (lookup);
}

sub vcl_synth {
    set resp.http.Content-Type = "application/json";
    if (req.http.n-gone) { # xkey
        # tells the purger the xkey purge ran (an edge without xkey purges "/" instead)
        set resp.http.X-Xkey-Purged = req.http.n-gone; # xkey
    } # xkey
    if (resp.status == 403) {
        set resp.body = """{"error":{"code":"forbidden","message":"purges are accepted from the purge ACL only"}}""" + {"
"};
    } else {
        set resp.body = {"{"status":""} + resp.reason + {"""} + "}" + {"
"};
    }
    return (deliver);
}

sub vcl_purge {
    return (synth(200, "Purged"));
}

sub vcl_backend_response {
    set beresp.http.x-url = bereq.url;
    if (bereq.uncacheable) {
        return (deliver);
    }
    # only successful image bytes are kept: an error or a 404 goes straight through
    if (beresp.status != 200 && beresp.status != 206) {
        set beresp.uncacheable = true;
        set beresp.ttl = 0s;
        return (deliver);
    }
    # the surrogate key of the origin (img-{id}) indexes the object for xkey purges
    if (beresp.http.Surrogate-Key) { # xkey
        set beresp.http.xkey = beresp.http.Surrogate-Key; # xkey
    } # xkey
    # otherwise the builtin VCL applies: the origin's Cache-Control decides the TTL
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
    unset resp.http.x-url;
    unset resp.http.xkey;
    unset resp.http.Via;
    # surrogate keys are for caches, not for browsers
    unset resp.http.Surrogate-Key;
    unset resp.http.Cache-Tag;
}
