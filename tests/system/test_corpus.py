#!/usr/bin/env python3
"""System test: upload every file of the image corpus (manifest.tsv) and check the answers.

accept_* files: 201 with the image object of API.md, the served bytes match the answer
(sha256, size, Content-Type), carry no location/personal metadata, keep the ICC profile,
are upright, and show the same picture as the upload; thumbnails are WebP within 256x256.
reject_* files: the right 4xx with the JSON error body; bombs are refused fast; the server
survives all of it.
"""
import os
import re
import sys
import time
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tessera_fixture as tf  # noqa: E402

C = tf.Checks("test_corpus")

ID_RE = re.compile(r"^[A-Za-z0-9_-]{11,32}$")
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
SHA_RE = re.compile(r"^[0-9a-f]{64}$")

MIME = {
    "jpeg": {"image/jpeg"}, "png": {"image/png"}, "gif": {"image/gif"},
    "webp": {"image/webp"}, "avif": {"image/avif"}, "heif": {"image/heif", "image/heic"},
    "tiff": {"image/tiff"}, "bmp": {"image/bmp"},
}
EXTS = {
    "jpeg": {"jpg", "jpeg"}, "png": {"png"}, "gif": {"gif"}, "webp": {"webp"},
    "avif": {"avif"}, "heif": {"heic", "heif"}, "tiff": {"tif", "tiff"}, "bmp": {"bmp"},
}
# exiftool File:FileType -> API format
EXIF_TYPE = {"JPEG": "jpeg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "Extended WEBP": "webp",
             "AVIF": "avif", "HEIC": "heif", "HEIF": "heif", "TIFF": "tiff", "BMP": "bmp"}

REJECT_STATUS = {
    "svg": (415, "unsupported_media_type"), "html": (415, "unsupported_media_type"),
    "random": (415, "unsupported_media_type"), "empty": (415, "unsupported_media_type"),
    "png-bomb": (422, "unprocessable_image"), "webp-bomb": (422, "unprocessable_image"),
    "gif-screen-bomb": (422, "unprocessable_image"), "gif-frame-bomb": (422, "unprocessable_image"),
    "jpeg-bomb-header": (422, "unprocessable_image"), "jpeg-truncated": (422, "unprocessable_image"),
    "png-badcrc": (422, "unprocessable_image"), "jpeg-garbage": (422, "unprocessable_image"),
    "gif-polyglot": (422, "unprocessable_image"),
}

# pixel comparison of served vs uploaded (vips thumbnails, 48x32, 0..255): lossy re-encoding
# stays well under this; a wrong rotation, lost alpha or inverted CMYK is far above it
PIXEL_TOLERANCE = 12.0

# images whose thumbnail is checked
THUMB_FILES = [
    "accept_jpeg_exif_orient6_gps_chelsea_300x451.jpg",
    "accept_jpeg_exif_orient8_gps_xmp_coffee_400x600.jpg",
    "accept_webp_exif_gps_coffee_600x400.webp",
    "accept_heic_exif_gps_chelsea_451x300.heic",
    "accept_png_exif_gps_hubble_500x436.png",
    "accept_png_extreme_aspect_4000x1.png",
    "accept_gif_animated_4frames_chelsea_225x150.gif",
    "accept_png_alpha_rgba_astronaut_vignette_512x512.png",
    "accept_jpeg_cmyk_astronaut_512x512.jpg",
    "accept_png_tiny_1x1.png",
    "accept_jpeg_large_seeding_4000x3000.jpg",
]

SRV = None
ACCEPTED = {}  # file -> (row, upload answer, served bytes)


def stripped_row(row):
    return bool(re.search(r"GPS|EXIF|XMP|IPTC", row["why"]))


def t_accept_files():
    rows = [r for r in tf.load_manifest() if r["expected"] == "accept"]
    C.check(len(rows) > 0, "manifest lists accept files", "none found")
    for i, row in enumerate(rows):
        check_accept(row, use_multipart=(i % 2 == 1))


def check_accept(row, use_multipart):
    name = row["file"]
    how = "multipart" if use_multipart else "raw"
    tag = "%s [%s]" % (name, how)
    data = tf.corpus_bytes(name)
    t0 = time.time()
    st, h, body, j = tf.upload(SRV, data, use_multipart=use_multipart, filename=name)
    if not C.eq(st, 201, "%s: upload status" % tag, body[:300].decode("utf-8", "replace")):
        return
    if not C.check(isinstance(j, dict), "%s: answer is a JSON object" % tag, repr(body[:200])):
        return
    fmt = row["format"]
    uw, uh = tf.upright_size(row)
    C.check((h.get("Content-Type") or "").startswith("application/json"),
            "%s: Content-Type application/json" % tag, repr(h.get("Content-Type")))
    iid = j.get("id")
    C.check(isinstance(iid, str) and ID_RE.match(iid) is not None, "%s: id matches ^[A-Za-z0-9_-]{11,32}$" % tag,
            repr(iid))
    iid = str(iid)
    loc = h.get("Location")
    C.eq(tf.path_of(loc or ""), "/api/v1/images/%s" % iid, "%s: Location header" % tag)
    url = j.get("url")
    m = re.match(r"^http://127\.0\.0\.1:%d/i/%s\.([a-z]+)$" % (SRV.port, re.escape(iid)), str(url))
    C.check(m is not None and m.group(1) in EXTS.get(fmt, ()),
            "%s: url is %s/i/{id}.{ext of %s}" % (tag, SRV.base, fmt), repr(url))
    C.eq(j.get("format"), fmt, "%s: format" % tag)
    C.check(j.get("content_type") in MIME.get(fmt, ()), "%s: content_type for %s" % (tag, fmt),
            "expected one of %s, got %r" % (sorted(MIME.get(fmt, ())), j.get("content_type")))
    C.eq((j.get("width"), j.get("height")), (uw, uh), "%s: width/height (upright)" % tag)
    C.eq(j.get("frames"), int(row["frames"]), "%s: frames" % tag)
    C.check(isinstance(j.get("bytes"), int) and j.get("bytes") > 0, "%s: bytes is a positive integer" % tag,
            repr(j.get("bytes")))
    C.check(isinstance(j.get("sha256"), str) and SHA_RE.match(j.get("sha256")) is not None,
            "%s: sha256 is lowercase hex" % tag, repr(j.get("sha256")))
    ca = j.get("created_at")
    ok_time = isinstance(ca, str) and TIME_RE.match(ca) is not None
    if ok_time:
        t = datetime.strptime(ca[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
        ok_time = abs(t - t0) < 120
    C.check(ok_time, "%s: created_at is RFC 3339 UTC (Z) and now" % tag, repr(ca))
    v = j.get("variants")
    thumb = v.get("thumb") if isinstance(v, dict) else None
    C.eq(thumb, "http://127.0.0.1:%d/i/%s/thumb.webp" % (SRV.port, iid), "%s: variants.thumb" % tag)
    C.check(isinstance(j.get("delete_token"), str) and len(j.get("delete_token")) >= 16,
            "%s: delete_token present" % tag, repr(j.get("delete_token")))

    # the bytes
    if not isinstance(url, str):
        return
    gst, gh, served = tf.request(SRV, "GET", tf.path_of(url))
    if not C.eq(gst, 200, "%s: GET url status" % tag):
        return
    C.eq(tf.sha256(served), j.get("sha256"), "%s: sha256 of served bytes equals answer's sha256" % tag)
    C.eq(len(served), j.get("bytes"), "%s: length of served bytes equals answer's bytes" % tag)
    C.eq(gh.get("Content-Type"), j.get("content_type"), "%s: GET Content-Type equals content_type" % tag)
    ACCEPTED[name] = (row, j, served)

    # the metadata endpoint agrees with the upload answer
    mst, _, mb = tf.request(SRV, "GET", "/api/v1/images/%s" % iid)
    mj = tf.parse_json(mb)
    want = dict(j)
    want.pop("delete_token", None)
    C.check(mst == 200 and mj == want, "%s: GET /api/v1/images/{id} equals the upload answer minus delete_token" % tag,
            "status %s body %r" % (mst, mb[:400]))

    ext = os.path.splitext(name)[1]
    if tf.have_exiftool():
        check_metadata(tag, row, served, ext)
    else:
        print("SKIP %s: exiftool not installed" % tag)
    if tf.have_vips():
        check_pixels(tag, data, served, ext, fmt)
    else:
        print("SKIP %s: vips not installed (pixel comparison)" % tag)


def check_metadata(tag, row, served, ext):
    fmt = row["format"]
    uw, uh = tf.upright_size(row)
    src = tf.exif_tags(tf.corpus_bytes(row["file"]), suffix=ext)
    out = tf.exif_tags(served, suffix=ext)
    ftype = out.get("File:FileType")
    C.eq(EXIF_TYPE.get(ftype, ftype), fmt, "%s: exiftool: served bytes are %s" % (tag, fmt))
    C.eq(out.get("Composite:ImageSize"), "%d %d" % (uw, uh), "%s: exiftool: served image size is upright" % tag)
    gps = sorted(k for k in out if "GPS" in k)
    C.check(not gps, "%s: exiftool: no GPS tags in served bytes" % tag, ", ".join(gps))
    orient = {k: out[k] for k in out if k.endswith(":Orientation") and out[k] not in (1, "1")}
    C.check(not orient, "%s: exiftool: no EXIF Orientation other than 1" % tag, repr(orient))
    if fmt == "tiff":
        # a TIFF's own IFD0 shows as group EXIF; its Exif/GPS sub-IFDs would be metadata
        bad = sorted(k for k in out if k.split(":")[0] in ("XMP", "IPTC", "Photoshop")
                     or k in ("EXIF:DateTimeOriginal", "EXIF:ExifVersion", "EXIF:GPSVersionID"))
    else:
        bad = sorted(k for k in out if k.split(":")[0] in ("EXIF", "XMP", "IPTC", "Photoshop"))
    C.check(not bad, "%s: exiftool: no EXIF/XMP/IPTC metadata in served bytes (API.md)" % tag,
            ", ".join(bad[:20]))
    if stripped_row(row):
        personal = sorted(k for k in out if k.split(":")[-1] in ("Make", "Model", "Artist", "By-line",
                                                                 "City", "Creator", "DateTimeOriginal"))
        C.check(not personal, "%s: exiftool: no Make/Model/Artist/By-line/City/Creator left" % tag,
                ", ".join("%s=%r" % (k, out[k]) for k in personal))
        if "COM comment" in row["why"]:
            C.check("File:Comment" not in out, "%s: exiftool: JPEG COM comment stripped" % tag,
                    repr(out.get("File:Comment")))
    want_icc = src.get("ICC_Profile:ProfileDescription")
    if want_icc:
        C.eq(out.get("ICC_Profile:ProfileDescription"), want_icc,
             "%s: exiftool: ICC profile kept (ProfileDescription)" % tag)
    if "Adobe RGB" in row["why"]:
        C.check("Adobe RGB" in str(out.get("ICC_Profile:ProfileDescription")),
                "%s: exiftool: served bytes keep the Adobe RGB ICC profile" % tag,
                "ICC_Profile:ProfileDescription=%r" % out.get("ICC_Profile:ProfileDescription"))


def served_suffix(fmt):
    return {"jpeg": ".jpg", "heif": ".heic", "tiff": ".tif"}.get(fmt, "." + fmt)


def check_pixels(tag, data, served, ext, fmt):
    """The served picture is the upload's, upright (vips autorotates the upload by its EXIF)."""
    try:
        a = tf.small_rgb(data, suffix=ext)
    except Exception as e:  # noqa: BLE001
        print("SKIP %s: vips cannot decode the upload (%s)" % (tag, e))
        return
    try:
        b = tf.small_rgb(served, suffix=served_suffix(fmt))
    except Exception as e:  # noqa: BLE001
        C.check(False, "%s: served bytes decode with vips" % tag, str(e)[:300])
        return
    d = tf.mean_abs_diff(a, b)
    drot = tf.mean_abs_diff(a, list(reversed(b)))
    C.check(d <= PIXEL_TOLERANCE, "%s: served pixels match the upload's (upright)" % tag,
            "mean abs difference %.1f > %.1f (vs the served image turned 180 degrees: %.1f)"
            % (d, PIXEL_TOLERANCE, drot))


def t_reject_files():
    rows = [r for r in tf.load_manifest() if r["expected"] == "reject"]
    C.check(len(rows) > 0, "manifest lists reject files", "none found")
    for row in rows:
        name = row["file"]
        want = REJECT_STATUS.get(row["format"])
        if not C.check(want is not None, "%s: known reject kind %r" % (name, row["format"]), "unknown kind"):
            continue
        data = tf.corpus_bytes(name)
        for use_mp in (False, True):
            tag = "%s [%s]" % (name, "multipart" if use_mp else "raw")
            t0 = time.monotonic()
            st, h, body, j = tf.upload(SRV, data, use_multipart=use_mp, filename=name)
            dt = time.monotonic() - t0
            C.eq(st, want[0], "%s: status %d" % (tag, want[0]), body[:300].decode("utf-8", "replace"))
            C.check(tf.is_error_body(body, want[1]),
                    "%s: JSON error body with code %s and a message" % (tag, want[1]),
                    body[:300].decode("utf-8", "replace"))
            C.check((h.get("Content-Type") or "").startswith("application/json"),
                    "%s: error Content-Type application/json" % tag, repr(h.get("Content-Type")))
            if "bomb" in row["format"]:
                C.check(dt < 1.0, "%s: bomb answered in under 1 s" % tag, "took %.2f s" % dt)
            C.check(SRV.alive(), "%s: server still running" % tag, SRV.death_note())
            if not SRV.alive():
                return


def t_nothing_stored_for_rejects():
    st, _, body = tf.request(SRV, "GET", "/api/v1/images?limit=1000")
    j = tf.parse_json(body)
    if not C.eq(st, 200, "listing status"):
        return
    ids = sorted(i.get("id") for i in j.get("items", []))
    want = sorted(a[1]["id"] for a in ACCEPTED.values())
    C.eq(ids, want, "listing holds exactly the accepted uploads (nothing from the rejects)")


def t_thumbs():
    for name in THUMB_FILES:
        if name not in ACCEPTED:
            C.check(False, "%s: thumbnail" % name, "the upload was not accepted")
            continue
        row, j, served = ACCEPTED[name]
        tag = "%s thumb" % name
        path = "/i/%s/thumb.webp" % j["id"]
        st, h, body = tf.request(SRV, "GET", path, timeout=60)
        if not C.eq(st, 200, "%s: GET %s status" % (tag, path), body[:200].decode("utf-8", "replace")):
            continue
        C.eq(h.get("Content-Type"), "image/webp", "%s: Content-Type" % tag)
        C.eq(h.get("ETag"), '"%s"' % tf.sha256(body), "%s: ETag is the sha256 of the variant bytes" % tag)
        try:
            info = tf.webp_info(body)
        except ValueError as e:
            C.check(False, "%s: is a WebP file" % tag, str(e))
            continue
        w, hh = info["width"], info["height"]
        uw, uh = j["width"], j["height"]
        C.check(w is not None and 1 <= w <= 256 and 1 <= hh <= 256, "%s: fits 256x256" % tag,
                "%sx%s" % (w, hh))
        if max(uw, uh) > 256:
            C.check(max(w, hh) == 256, "%s: long side is 256 for an image larger than 256" % tag,
                    "%sx%s from %dx%d" % (w, hh, uw, uh))
            exp_h = max(1, round(256 * uh / uw)) if uw >= uh else 256
            exp_w = 256 if uw >= uh else max(1, round(256 * uw / uh))
            C.check(abs(w - exp_w) <= 1 and abs(hh - exp_h) <= 1, "%s: aspect ratio kept (upright)" % tag,
                    "got %dx%d, expected about %dx%d from %dx%d" % (w, hh, exp_w, exp_h, uw, uh))
        else:
            C.check((w, hh) == (uw, uh) or max(w, hh) == 256, "%s: small image not distorted" % tag,
                    "got %sx%s from %dx%d" % (w, hh, uw, uh))
        C.check("EXIF" not in info["chunks"] and "XMP " not in info["chunks"],
                "%s: no EXIF/XMP chunk" % tag, "chunks %s" % info["chunks"])
        if info["vp8x_flags"] is not None:
            C.check(info["vp8x_flags"] & 0x0C == 0, "%s: VP8X flags announce no EXIF/XMP" % tag,
                    "flags 0x%02x" % info["vp8x_flags"])
        if tf.have_exiftool():
            out = tf.exif_tags(body, suffix=".webp")
            bad = sorted(k for k in out if "GPS" in k or k.split(":")[0] in ("EXIF", "XMP", "IPTC"))
            C.check(not bad, "%s: exiftool: no EXIF/XMP/GPS" % tag, ", ".join(bad))
        if tf.have_vips():
            try:
                a = tf.small_rgb(tf.corpus_bytes(name), suffix=os.path.splitext(name)[1])
                b = tf.small_rgb(body, suffix=".webp")
                d = tf.mean_abs_diff(a, b)
                C.check(d <= PIXEL_TOLERANCE * 1.5, "%s: thumbnail shows the upload (upright)" % tag,
                        "mean abs difference %.1f" % d)
            except Exception as e:  # noqa: BLE001
                C.check(False, "%s: thumbnail decodes with vips" % tag, str(e)[:300])
        # a second request serves the stored variant: same bytes
        st2, _, body2 = tf.request(SRV, "GET", path)
        C.check(st2 == 200 and body2 == body, "%s: second GET gives identical bytes" % tag,
                "status %s, %d vs %d bytes" % (st2, len(body2), len(body)))


def t_alive_at_end():
    C.check(SRV.alive(), "server process alive after the whole corpus", SRV.death_note())
    st, _, body = tf.request(SRV, "GET", "/healthz")
    C.eq(st, 200, "GET /healthz after the whole corpus", body[:200].decode("utf-8", "replace"))
    C.eq(tf.parse_json(body), {"status": "ok"}, "/healthz body")


def main():
    global SRV
    SRV = tf.Server()
    try:
        SRV.start()
        C.run(t_accept_files)
        C.run(t_reject_files)
        C.run(t_nothing_stored_for_rejects)
        C.run(t_thumbs)
        C.run(t_alive_at_end)
        if C.failures:
            print("---- server log (tail)\n" + SRV.log_tail(60))
    finally:
        SRV.stop()
    C.finish()


if __name__ == "__main__":
    main()
