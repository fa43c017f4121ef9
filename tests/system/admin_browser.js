// admin_browser.js - drives the status page /admin of a running service in Debian's Chromium.
//
// Usage: node admin_browser.js BASE_URL ARTEFACT_DIR KEY_FILE DOWN_SHARD DOWN_INSTANCE DOWN_DB_ADDR
// Without a key: the login form and no cluster data (and /admin/status answers 401); a wrong
// key is refused; the admin key (read from KEY_FILE, never from the command line) shows the
// cluster, with DOWN_SHARD marked down on the ring, the storage instance DOWN_INSTANCE down
// and the database node at DOWN_DB_ADDR unreachable. Screenshots in ARTEFACT_DIR.
// Exit status: 0 all passed, 1 otherwise.
'use strict';

const path = require('path');
const fs = require('fs');
const { chromium } = require('playwright-core');

const [base, artDir, keyFile, downShard, downInstance, downDb] = process.argv.slice(2);
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
  const key = fs.readFileSync(keyFile, 'utf8').trim();
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox'],
  });
  const problems = [];
  try {
    const page = await (await browser.newContext({ viewport: { width: 1100, height: 1000 } })).newPage();
    page.setDefaultTimeout(30000);
    page.on('console', (m) => {
      // the refused key's 401 logs "Failed to load resource"
      if (m.type() === 'error' && !/^Failed to load resource/.test(m.text())) problems.push('console: ' + m.text());
    });
    page.on('pageerror', (e) => problems.push('page error: ' + e.message));

    const resp = await page.goto(base + '/admin');
    const csp = resp.headers()['content-security-policy'] || '';
    check(/script-src 'self'/.test(csp) && !/unsafe/.test(csp), 'the page has a strict CSP', csp);
    check(await page.locator('#login').isVisible(), 'without a key: the login form');
    check(!(await page.locator('#status').isVisible()), 'without a key: no cluster shown');
    check((await page.locator('#db tr, #ring .shard, #instances .pill').count()) === 0, 'without a key: no data in the page');
    const anon = await page.evaluate(async () => (await fetch('/admin/status')).status);
    check(anon === 401, '/admin/status without a key answers 401', anon);
    await page.screenshot({ path: path.join(artDir, 'admin-login.png'), fullPage: true });

    await page.fill('#key', 'not-the-admin-key-but-long-enough');
    await page.click('button[type=submit]');
    await page.waitForFunction(() => document.getElementById('login-error').textContent !== '');
    check(!(await page.locator('#status').isVisible()), 'a wrong key is refused',
      await page.locator('#login-error').textContent());

    await page.fill('#key', key);
    await page.click('button[type=submit]');
    await page.waitForSelector('#status:not([hidden])');
    check(true, 'the admin key shows the cluster');
    // Prometheus scrapes every 5 s: wait for the stopped node to show as down there too
    await page.waitForSelector(`#instances .pill.bad[data-name="${downInstance}"]`);
    check(true, `instance ${downInstance} shows down`);
    check(await page.locator(`#ring .shard.bad[data-shard="${downShard}"]`).count() === 1, `shard ${downShard} shows down on the ring`);
    check(await page.locator('#ring .shard:not(.bad)').count() >= 2, 'the other shards show up');
    const repair = await page.locator('#repair').textContent();
    check(/repair walk/.test(repair), 'the ring says what the last repair walk found', repair);
    const dbDown = await page.locator('#db tr').evaluateAll((rows, addr) => rows.filter((r) =>
      r.children[1].textContent === addr && /down/.test(r.children[3].textContent)).length, downDb);
    check(dbDown === 1, `database node ${downDb} shows down`);
    check(await page.locator('#redis .pill.ok').count() === 3, 'three Redis nodes up');
    check(await page.locator('#chart-requests polyline').count() === 1, 'the request rate chart is drawn');
    const readyReads = await page.locator('#instances [data-role="read"] .pill.ok').count();
    check(readyReads === 3, 'three read services ready', readyReads);
    await page.screenshot({ path: path.join(artDir, 'admin-status.png'), fullPage: true });

    await page.click('#forget');
    check(await page.locator('#login').isVisible(), '"Forget key" hides the cluster again');
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
