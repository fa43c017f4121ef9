// openapi_check.js - validates docs/openapi.yaml and checks a live server's answers against it.
//
// Usage: node openapi_check.js SPEC [BASE_URL JPEG PNG]
// Without a server: validates the document only (swagger-parser). With one
// (started with limits.max_upload_bytes=1M by test_openapi.py): every answer
// below must have a status the document lists for its operation, a JSON body
// valid against that answer's schema (ajv) and the documented headers valid
// against their schemas. Prints one line per check; exit 0 when all passed.
'use strict';

const fs = require('fs');
const SwaggerParser = require('@apidevtools/swagger-parser');
const Ajv = require('ajv');
const addFormats = require('ajv-formats');

const [specPath, base, jpegPath, pngPath] = process.argv.slice(2);
let passed = 0;
let failed = 0;

function check(cond, what, detail) {
  if (cond) {
    passed++;
    console.log('ok   ' + what);
  } else {
    failed++;
    console.log('FAIL ' + what + (detail !== undefined ? ': ' + detail : ''));
  }
  return cond;
}

const ajv = new Ajv({ strict: false, allErrors: true });
addFormats(ajv);

// nullable (OpenAPI 3.0) to JSON Schema: type: [t, 'null']
function toJsonSchema(s) {
  if (Array.isArray(s)) return s.map(toJsonSchema);
  if (!s || typeof s !== 'object') return s;
  const out = {};
  for (const [k, v] of Object.entries(s)) {
    if (k === 'nullable' || k === 'example') continue;
    out[k] = toJsonSchema(v);
  }
  if (s.nullable === true && typeof s.type === 'string') out.type = [s.type, 'null'];
  return out;
}

function validate(schema, value) {
  const fn = ajv.compile(toJsonSchema(schema));
  return fn(value) ? null : ajv.errorsText(fn.errors);
}

let api;

// expectAnswer checks one answer against the operation (path template, method) of the document.
async function expectAnswer(what, template, method, res, wantStatus) {
  const text = method === 'head' ? '' : Buffer.from(await res.arrayBuffer());
  const op = api.paths[template] && api.paths[template][method === 'head' ? 'get' : method];
  if (!check(op, what + ': operation documented', template + ' ' + method)) return null;
  check(res.status === wantStatus, what + ': status ' + wantStatus, res.status + ' ' + String(text).slice(0, 200));
  const doc = op.responses[String(res.status)];
  if (!check(doc, what + ': status ' + res.status + ' is documented for ' + method.toUpperCase() + ' ' + template)) return null;
  check(res.headers.get('x-request-id'), what + ': X-Request-Id');
  for (const [name, h] of Object.entries(doc.headers || {})) {
    const v = res.headers.get(name);
    if (v === null || !h.schema) continue;
    const val = h.schema.type === 'integer' ? Number(v) : v;
    const err = validate(h.schema, val);
    check(err === null, what + ': header ' + name + ' matches its schema', err + ' (' + v + ')');
  }
  let ct = (res.headers.get('content-type') || '').split(';')[0].trim();
  // fetch joins repeated headers with ", ": the 416 of api.c's send_blob sets the image's
  // type before the JSON error adds its own (reported; the JSON one is the body's)
  if (ct.includes(', ')) {
    console.log('NOTE ' + what + ': repeated Content-Type ' + res.headers.get('content-type'));
    const parts = ct.split(', ');
    ct = parts.includes('application/json') ? 'application/json' : parts[0];
  }
  if (res.status === 204 || res.status === 304 || method === 'head') {
    check(text.length === 0, what + ': no body');
    return null;
  }
  const types = Object.keys(doc.content || {});
  const listed = types.some((t) => t === ct || (t.endsWith('/*') && ct.startsWith(t.slice(0, -1))));
  check(listed, what + ': content type ' + ct + ' is documented', types.join(', '));
  if (ct === 'application/json' && doc.content['application/json']) {
    let body;
    try {
      body = JSON.parse(text.toString('utf8'));
    } catch (e) {
      check(false, what + ': JSON body', e.message);
      return null;
    }
    const err = validate(doc.content['application/json'].schema, body);
    check(err === null, what + ': body matches the schema', err + ' ' + text.toString('utf8').slice(0, 300));
    return body;
  }
  return text;
}

async function live() {
  const jpeg = fs.readFileSync(jpegPath);
  const png = fs.readFileSync(pngPath);
  const req = (method, p, opts = {}) => fetch(base + p, { method, redirect: 'manual', ...opts });

  // uploads
  const form = new FormData();
  form.append('file', new Blob([jpeg]), 'photo.jpg');
  const up = await expectAnswer('upload multipart', '/api/v1/images', 'post', await req('POST', '/api/v1/images', { body: form }), 201);
  const up2 = await expectAnswer('upload raw', '/api/v1/images', 'post',
    await req('POST', '/api/v1/images', { body: png, headers: { 'Content-Type': 'application/octet-stream' } }), 201);
  await expectAnswer('upload text', '/api/v1/images', 'post', await req('POST', '/api/v1/images', { body: 'not an image' }), 415);
  await expectAnswer('upload empty', '/api/v1/images', 'post', await req('POST', '/api/v1/images', { body: '' }), 415);
  await expectAnswer('upload truncated', '/api/v1/images', 'post', await req('POST', '/api/v1/images', { body: jpeg.subarray(0, 2000) }), 422);
  await expectAnswer('upload bad multipart', '/api/v1/images', 'post', await req('POST', '/api/v1/images', {
    body: '--b\r\nContent-Disposition: form-data; name="other"\r\n\r\nx\r\n--b--\r\n',
    headers: { 'Content-Type': 'multipart/form-data; boundary=b' },
  }), 400);
  await expectAnswer('upload too large', '/api/v1/images', 'post',
    await req('POST', '/api/v1/images', { body: Buffer.alloc(1200 * 1024) }), 413);
  if (!up || !up2) return;
  const id = up.id;
  check(true, 'uploaded ' + id + ' and ' + up2.id);

  // metadata and list
  await expectAnswer('metadata', '/api/v1/images/{id}', 'get', await req('GET', '/api/v1/images/' + id), 200);
  await expectAnswer('metadata unknown', '/api/v1/images/{id}', 'get', await req('GET', '/api/v1/images/AAAAAAAAAAAAAAAA'), 404);
  const page = await expectAnswer('list', '/api/v1/images', 'get', await req('GET', '/api/v1/images?limit=1'), 200);
  check(page && typeof page.next_cursor === 'string', 'list limit=1 has a next cursor');
  if (page && page.next_cursor) {
    const p2 = await expectAnswer('list page 2', '/api/v1/images', 'get',
      await req('GET', '/api/v1/images?limit=5&cursor=' + encodeURIComponent(page.next_cursor)), 200);
    check(p2 && p2.next_cursor === null, 'last page has next_cursor null');
  }
  await expectAnswer('list bad limit', '/api/v1/images', 'get', await req('GET', '/api/v1/images?limit=0'), 400);
  await expectAnswer('list bad cursor', '/api/v1/images', 'get', await req('GET', '/api/v1/images?cursor=%21%21'), 400);

  // bytes
  const path = new URL(up.url).pathname;
  const full = await req('GET', path);
  const etag = full.headers.get('etag');
  await expectAnswer('bytes', '/i/{file}', 'get', full, 200);
  await expectAnswer('bytes HEAD', '/i/{file}', 'head', await req('HEAD', path), 200);
  await expectAnswer('bytes no extension', '/i/{file}', 'get', await req('GET', '/i/' + id), 200);
  await expectAnswer('bytes 304', '/i/{file}', 'get', await req('GET', path, { headers: { 'If-None-Match': etag } }), 304);
  await expectAnswer('bytes 206', '/i/{file}', 'get', await req('GET', path, { headers: { Range: 'bytes=0-99' } }), 206);
  await expectAnswer('bytes 416', '/i/{file}', 'get', await req('GET', path, { headers: { Range: 'bytes=99999999-' } }), 416);
  await expectAnswer('bytes wrong extension', '/i/{file}', 'get', await req('GET', '/i/' + id + '.png'), 404);
  await expectAnswer('bytes unknown', '/i/{file}', 'get', await req('GET', '/i/AAAAAAAAAAAAAAAA.jpg'), 404);
  const thumb = new URL(up.variants.thumb).pathname;
  await expectAnswer('variant', '/i/{id}/{variant}', 'get', await req('GET', thumb), 200);
  await expectAnswer('variant 304', '/i/{id}/{variant}', 'get',
    await req('GET', thumb, { headers: { 'If-None-Match': (await req('HEAD', thumb)).headers.get('etag') } }), 304);
  await expectAnswer('variant unknown', '/i/{id}/{variant}', 'get', await req('GET', '/i/' + id + '/huge.webp'), 404);
  // this server has no transform key: transforms are off, every rendition is 404
  await expectAnswer('rendition without keys', '/i/{id}/t/{rendition}', 'get', await req('GET', '/i/' + id + '/t/w:300.webp'), 404);

  // delete
  const del = '/api/v1/images/' + id;
  await expectAnswer('delete without token', '/api/v1/images/{id}', 'delete', await req('DELETE', del), 401);
  await expectAnswer('delete wrong token', '/api/v1/images/{id}', 'delete',
    await req('DELETE', del, { headers: { 'X-Delete-Token': 'wrong' } }), 403);
  await expectAnswer('delete', '/api/v1/images/{id}', 'delete',
    await req('DELETE', del, { headers: { 'X-Delete-Token': up.delete_token } }), 204);
  await expectAnswer('delete again', '/api/v1/images/{id}', 'delete',
    await req('DELETE', del, { headers: { 'X-Delete-Token': up.delete_token } }), 404);
  await expectAnswer('bytes after delete', '/i/{file}', 'get', await req('GET', path), 404);

  // ops and page
  await expectAnswer('healthz', '/healthz', 'get', await req('GET', '/healthz'), 200);
  await expectAnswer('readyz', '/readyz', 'get', await req('GET', '/readyz'), 200);
  await expectAnswer('metrics', '/metrics', 'get', await req('GET', '/metrics'), 200);
  await expectAnswer('page', '/', 'get', await req('GET', '/'), 200);
  await expectAnswer('page script', '/web/{name}', 'get', await req('GET', '/web/app.js'), 200);
  await expectAnswer('page unknown file', '/web/{name}', 'get', await req('GET', '/web/nope.js'), 404);
  await expectAnswer('status page', '/admin', 'get', await req('GET', '/admin'), 200);
  await expectAnswer('status page script', '/admin/{name}', 'get', await req('GET', '/admin/admin.js'), 200);
  await expectAnswer('status page: not the upload page\'s files', '/admin/{name}', 'get', await req('GET', '/admin/app.js'), 404);
  // this server has no admin key: the status is not served at all
  await expectAnswer('status without admin keys', '/admin/status', 'get', await req('GET', '/admin/status'), 404);

  // answers of the server core, documented as shared responses
  const shared = api.components.responses;
  for (const [what, p, method, status, doc] of [
    ['405', '/api/v1/images', 'PUT', 405, shared.MethodNotAllowed],
    ['404 unknown path', '/nowhere', 'GET', 404, shared.NotFound],
    ['414', '/api/v1/images/' + 'a'.repeat(5000), 'GET', 414, shared.UriTooLong],
  ]) {
    const res = await req(method, p);
    check(res.status === status, what + ': status ' + status, res.status);
    const err = validate(doc.content['application/json'].schema, await res.json());
    check(err === null, what + ': body matches the schema', err);
    if (status === 405) check(/GET/.test(res.headers.get('allow') || ''), '405: Allow header');
  }
}

async function main() {
  try {
    await SwaggerParser.validate(specPath);
    check(true, 'docs/openapi.yaml is a valid OpenAPI document');
  } catch (e) {
    check(false, 'docs/openapi.yaml is a valid OpenAPI document', e.message);
    return;
  }
  api = await SwaggerParser.dereference(specPath);
  // every error answer the document names uses the Error schema
  for (const [p, item] of Object.entries(api.paths)) {
    for (const [m, op] of Object.entries(item)) {
      if (typeof op !== 'object' || !op.responses) continue;
      for (const [st, r] of Object.entries(op.responses)) {
        if (Number(st) >= 400) {
          const s = r.content && r.content['application/json'] && r.content['application/json'].schema;
          check(s && s.required && s.required.includes('error'), m.toUpperCase() + ' ' + p + ' ' + st + ' has the error body');
        }
      }
    }
  }
  if (base) await live();
}

main().then(() => {
  console.log('openapi: ' + passed + ' passed, ' + failed + ' failed');
  process.exit(failed ? 1 : 0);
}, (e) => {
  console.log('FAIL openapi check raised: ' + (e && e.stack ? e.stack : e));
  process.exit(1);
});
