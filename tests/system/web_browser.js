// web_browser.js - drives the page of a running `tessera serve` in Debian's Chromium.
//
// Usage: node web_browser.js BASE_URL ARTEFACT_DIR GOOD1 GOOD2 BAD
// Uploads the three files at once through the file picker, expects two links
// and one error, opens the gallery, deletes one image with the token the page
// kept in localStorage, and checks it is gone. Prints one line per check and
// saves screenshots in ARTEFACT_DIR. Exit status: 0 all passed, 1 otherwise.
'use strict';

const path = require('path');
const fs = require('fs');
const { chromium } = require('playwright-core');

const [base, artDir, good1, good2, bad] = process.argv.slice(2);
let failed = 0;
let passed = 0;

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

async function main() {
  fs.mkdirSync(artDir, { recursive: true });
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox'],
  });
  const problems = [];
  try {
    const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
    const page = await context.newPage();
    page.setDefaultTimeout(20000);
    page.on('console', (m) => {
      // expected failures (the rejected upload, the unknown id) log "Failed to load resource"
      if (m.type() === 'error' && !/^Failed to load resource/.test(m.text())) problems.push('console: ' + m.text());
    });
    page.on('pageerror', (e) => problems.push('page error: ' + e.message));
    page.on('dialog', (d) => d.accept());
    // every request stays on the server under test: no third-party requests
    const origins = new Set();
    page.on('request', (r) => origins.add(new URL(r.url()).origin));

    await page.goto(base + '/');
    check((await page.title()) === 'Tessera', 'the page loads with its title');
    check(await page.locator('label[for="file"]').isVisible(), 'the file picker has a visible label');

    await page.setInputFiles('#file', [good1, good2, bad]);
    await page.waitForFunction(
      () => document.querySelectorAll('.result.done').length === 3, null, { timeout: 60000 });
    const ok = page.locator('.result.ok');
    const errs = page.locator('.result.error');
    check((await ok.count()) === 2, 'two uploads succeed', await ok.count());
    check((await errs.count()) === 1, 'one upload is rejected', await errs.count());
    const errText = (await errs.locator('.result-error').textContent()) || '';
    const errName = (await errs.locator('.result-name').textContent()) || '';
    check(errName === path.basename(bad), 'the rejected file is named', errName);
    check(/image|format|support/i.test(errText), 'the API\'s error message is shown', errText);

    const direct = await page.locator('.result.ok input.share-direct').evaluateAll((es) => es.map((e) => e.value));
    const pages = await page.locator('.result.ok input.share-page').evaluateAll((es) => es.map((e) => e.value));
    const ids = await ok.evaluateAll((es) => es.map((e) => e.dataset.id));
    check(direct.length === 2 && direct.every((u) => u.startsWith(base + '/i/')), 'two direct image links', direct.join(' '));
    check(pages.length === 2 && pages.every((u) => /#\/i\/[A-Za-z0-9_-]+$/.test(u)), 'two page links', pages.join(' '));
    const md = await page.locator('.result.ok input.share-markdown').first().inputValue();
    check(md.includes('](' + direct[0]) || md.includes('](' + direct[1]), 'a Markdown snippet with the image URL', md);
    const bb = await page.locator('.result.ok input.share-bbcode').first().inputValue();
    check(/\[img\].*\[\/img\]/.test(bb), 'a BBCode snippet', bb);
    for (const u of direct) {
      const r = await page.request.get(u);
      check(r.status() === 200 && (r.headers()['content-type'] || '').startsWith('image/'), 'direct link answers an image: ' + u, r.status());
    }
    const stored = await page.evaluate(() => JSON.parse(localStorage.getItem('tessera.tokens') || '{}'));
    check(ids.every((id) => typeof stored[id] === 'string' && stored[id].length > 0), 'delete tokens are kept in localStorage');
    // the thumbnails are real images (decoded by the browser)
    await page.waitForFunction(() => Array.from(document.querySelectorAll('.result.ok .result-thumb img'))
      .every((i) => i.complete && i.naturalWidth > 0), null, { timeout: 30000 }).catch(() => {});
    const thumbsOk = await page.locator('.result.ok .result-thumb img').evaluateAll((es) => es.every((i) => i.naturalWidth > 0));
    check(thumbsOk, 'the upload thumbnails load');
    await page.screenshot({ path: path.join(artDir, 'web-upload.png'), fullPage: true });

    await page.click('#nav-gallery');
    await page.waitForFunction(() => document.querySelectorAll('#gallery li').length >= 2);
    const galleryIds = await page.locator('#gallery li').evaluateAll((es) => es.map((e) => e.dataset.id));
    check(ids.every((id) => galleryIds.includes(id)), 'the gallery shows both uploads', galleryIds.join(' '));
    await page.waitForFunction(() => Array.from(document.querySelectorAll('#gallery img'))
      .every((i) => i.complete && i.naturalWidth > 0), null, { timeout: 30000 }).catch(() => {});
    await page.screenshot({ path: path.join(artDir, 'web-gallery.png'), fullPage: true });

    const victim = ids[0];
    const keep = ids[1];
    await page.locator('#gallery li[data-id="' + victim + '"] button.danger').click();
    await page.waitForFunction((id) => !document.querySelector('#gallery li[data-id="' + id + '"]'), victim);
    check(true, 'the deleted image leaves the gallery');
    const gone = await page.request.get(base + '/api/v1/images/' + victim);
    check(gone.status() === 404, 'the API answers 404 for the deleted image', gone.status());
    const bytesGone = await page.request.get(direct[ids.indexOf(victim)]);
    check(bytesGone.status() === 404, 'its bytes answer 404', bytesGone.status());
    const left = await page.evaluate(() => JSON.parse(localStorage.getItem('tessera.tokens') || '{}'));
    check(!(victim in left) && keep in left, 'its token is dropped from localStorage, the other kept');

    // a fresh gallery (reload) does not show it either
    await page.goto(base + '/#/gallery');
    await page.reload();
    await page.waitForFunction(() => document.querySelectorAll('#gallery li').length >= 1);
    const after = await page.locator('#gallery li').evaluateAll((es) => es.map((e) => e.dataset.id));
    check(!after.includes(victim) && after.includes(keep), 'after a reload the gallery has only the kept image', after.join(' '));

    await page.goto(base + '/#/i/' + keep);
    await page.waitForSelector('#image-body:not([hidden])');
    const meta = await page.locator('#image-meta').textContent();
    check(meta.includes(keep) && /SHA-256/.test(meta), 'the image page shows its metadata');
    await page.waitForFunction(() => document.getElementById('image-img').naturalWidth > 0).catch(() => {});
    await page.screenshot({ path: path.join(artDir, 'web-image.png'), fullPage: true });

    await page.goto(base + '/#/i/AAAAAAAAAAAAAAAA');
    await page.waitForFunction(() => /No such image/.test(document.getElementById('image-status').textContent));
    check(true, 'an unknown image id says so');

    // narrow screen: the layout still fits (no horizontal scrolling)
    await page.setViewportSize({ width: 380, height: 800 });
    await page.goto(base + '/#/i/' + keep);
    await page.waitForSelector('#image-body:not([hidden])');
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 1, 'no horizontal overflow at 380 px', overflow);
    await page.screenshot({ path: path.join(artDir, 'web-image-narrow.png'), fullPage: true });

    // drag-and-drop and paste: a File made in the page from the kept image's bytes
    await page.setViewportSize({ width: 1100, height: 900 });
    await page.goto(base + '/#/');
    const keptUrl = direct[ids.indexOf(keep)];
    const before = await page.locator('.result.done').count();
    await page.evaluate(async (u) => {
      const blob = await (await fetch(u)).blob();
      const file = (name) => new File([blob], name, { type: blob.type });
      const dropped = new DataTransfer();
      dropped.items.add(file('dropped.jpg'));
      document.getElementById('drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dropped, bubbles: true, cancelable: true }));
      const pasted = new DataTransfer();
      pasted.items.add(file('pasted.jpg'));
      document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: pasted, bubbles: true, cancelable: true }));
    }, keptUrl);
    await page.waitForFunction((n) => document.querySelectorAll('.result.done').length === n + 2, before, { timeout: 30000 });
    const names = await page.locator('.result.ok .result-name').allTextContents();
    check(names.includes('dropped.jpg') && names.includes('pasted.jpg'), 'drop and paste upload too', names.join(' '));

    const foreign = Array.from(origins).filter((o) => o !== base && o !== 'null');
    check(foreign.length === 0, 'no request leaves the server', foreign.join(' '));
    check(problems.length === 0, 'no console errors or CSP violations', problems.join(' | '));
  } finally {
    await browser.close();
  }
}

main().then(() => {
  console.log('browser: ' + passed + ' passed, ' + failed + ' failed');
  process.exit(failed ? 1 : 0);
}, (e) => {
  console.log('FAIL browser test raised: ' + (e && e.stack ? e.stack : e));
  process.exit(1);
});
