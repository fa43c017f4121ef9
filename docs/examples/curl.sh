#!/bin/sh
# curl examples for Tessera's API, runnable end to end:
#   docs/examples/curl.sh [BASE_URL] [IMAGE]
# BASE_URL defaults to $TESSERA_URL or http://127.0.0.1:8080. Uses curl and
# python3 (to read JSON). Add -H "Authorization: Bearer $TESSERA_KEY" to the
# upload when the server needs an upload key (auth.upload_keys).
set -eu
BASE=${1:-${TESSERA_URL:-http://127.0.0.1:8080}}
IMAGE=${2:-photo.jpg}
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

echo "# upload (multipart part \"file\"); the answer has the id, the URLs and the delete token"
ANSWER=$(curl -sS --fail-with-body -F "file=@$IMAGE" "$BASE/api/v1/images")
echo "$ANSWER"
ID=$(echo "$ANSWER" | json "['id']")
URL=$(echo "$ANSWER" | json "['url']")
THUMB=$(echo "$ANSWER" | json "['variants']['thumb']")
TOKEN=$(echo "$ANSWER" | json "['delete_token']")

echo "# upload the raw bytes as the whole body (the content decides the format)"
RAW=$(curl -sS --fail-with-body --data-binary "@$IMAGE" -H 'Content-Type: application/octet-stream' "$BASE/api/v1/images")
echo "$RAW"

echo "# metadata"
curl -sS --fail-with-body "$BASE/api/v1/images/$ID"

echo "# newest first; follow next_cursor for the next page"
PAGE=$(curl -sS --fail-with-body "$BASE/api/v1/images?limit=1")
echo "$PAGE"
CURSOR=$(echo "$PAGE" | json "['next_cursor']")
[ "$CURSOR" != "None" ] && curl -sS --fail-with-body "$BASE/api/v1/images?limit=1&cursor=$CURSOR" >/dev/null

echo "# the bytes: headers (ETag, Cache-Control immutable, Surrogate-Key)"
curl -sS --fail -I "$URL"
ETAG=$(curl -sS --fail -I "$URL" | tr -d '\r' | sed -n 's/^[Ee][Tt]ag: //p')
echo "# revalidation answers 304"
curl -sS -o /dev/null -w '%{http_code}\n' -H "If-None-Match: $ETAG" "$URL"
echo "# the first 100 bytes answer 206"
curl -sS --fail -o /dev/null -w '%{http_code}\n' -r 0-99 "$URL"
echo "# the thumbnail (256x256 WebP, made on first request)"
curl -sS --fail -o /dev/null -w '%{http_code} %{content_type}\n' "$THUMB"

echo "# delete with the token from the upload answer: 204, then 404"
curl -sS --fail-with-body -o /dev/null -w '%{http_code}\n' -X DELETE -H "X-Delete-Token: $TOKEN" "$BASE/api/v1/images/$ID"
curl -sS -o /dev/null -w '%{http_code}\n' "$BASE/api/v1/images/$ID"

echo "# operations"
curl -sS --fail "$BASE/healthz"
curl -sS --fail "$BASE/readyz"
curl -sS --fail "$BASE/metrics" | head -n 3
