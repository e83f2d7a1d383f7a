// Scenarios 9 and 10: every page at phone width (390×844) without horizontal page overflow and
// with its navigation reachable; keyboard navigation (Tab reaches the nav links, focus is
// visible, Enter opens one); the assets served with the Content-Security-Policy, gzip, nosniff
// and within the 300 KB budget; and zero CSP violations on every page.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import {
  ConcordNode, UI_DIR, assertClean, cleanup, gotoConsole, launchBrowser, openPage, screenshot, t, until,
} from './helpers.mjs';

const LONG_ID = `a-rather-long-document-id-${'x'.repeat(90)}`;
let browser;
let node;

before(async () => {
  node = await ConcordNode.start();
  const api = node.rest();
  await api('PUT', `/v1/collections/notes/docs/${LONG_ID}`, {
    title: 'A note with a long id and long values',
    text: 'word '.repeat(200),
    nested: { deeper: { url: `https://example.com/${'segment/'.repeat(30)}` } },
    n: 42,
  });
  await api('PUT', `/v1/collections/notes/docs/${LONG_ID}`, { title: 'Edited', text: 'short', n: 43 });
  await api('PUT', '/v1/collections/tasks/docs/t1', { status: 'open' });
  await api('PUT', '/v1/collections/tasks/indexes/by_status', { fields: ['status'] });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await cleanup();
});

const enc = encodeURIComponent;
const PAGES = [
  ['overview', '#/overview', 'overview-node-id'],
  ['collections', '#/collections', 'collection-row'],
  ['collection', '#/c/notes', 'doc-row'],
  ['document', `#/c/notes/${enc(LONG_ID)}`, 'doc-editor'],
  ['history', `#/c/notes/${enc(LONG_ID)}/history`, 'diff-view'],
  ['live', '#/live', 'live-status'],
  ['query', '#/query/tasks', 'index-row'],
  ['cluster', '#/cluster', 'cluster-row'],
  ['clients', '#/clients', 'clients-websockets'],
];

test('every page fits a phone screen and keeps its navigation reachable', { timeout: 120000 }, async () => {
  const { page, problems } = await openPage(browser, { width: 390, height: 844 });
  await gotoConsole(page, node, '#/overview');
  for (const [name, hash, marker] of PAGES) {
    await page.evaluate((h) => {
      location.hash = h;
    }, hash);
    await page.locator(t(marker)).first().waitFor();
    // Let asynchronous content (charts, tables) settle into the layout before measuring.
    await until(`${name}: rendered`, async () => page.evaluate(() => document.querySelector('main h1') !== null));
    const [scrollWidth, innerWidth, wide] = await page.evaluate(() => [
      document.documentElement.scrollWidth,
      window.innerWidth,
      [...document.querySelectorAll('body *')]
        .filter((e) => e.getBoundingClientRect().right > window.innerWidth && !e.closest('.table-wrap, pre, .diff, textarea'))
        .map((e) => `${e.tagName.toLowerCase()}.${e.className}`)
        .slice(0, 8),
    ]);
    assert.ok(scrollWidth <= innerWidth, `${name}: no horizontal page overflow (${scrollWidth} > ${innerWidth}; wide: ${wide.join(', ')})`);
    for (const nav of ['overview', 'collections', 'live', 'query', 'cluster', 'clients']) {
      const link = page.locator(t(`nav-${nav}`));
      assert.ok(await link.isVisible(), `${name}: nav-${nav} visible`);
      const box = await link.boundingBox();
      assert.ok(box && box.x >= 0 && box.x + box.width <= 390, `${name}: nav-${nav} within the screen`);
    }
    await screenshot(page, `phone-${name}`);
  }
  // A wide table (the long id) scrolls inside its own container, not the page.
  await page.evaluate(() => {
    location.hash = '#/c/notes';
  });
  await page.locator(t('doc-row')).first().waitFor();
  const inner = await page.evaluate(() => {
    const w = document.querySelector('.table-wrap');
    return [w.scrollWidth, w.clientWidth, getComputedStyle(w).overflowX];
  });
  assert.ok(inner[0] > inner[1] && inner[2] === 'auto', `the table scrolls in its container (${inner})`);
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth));
  // The navigation works by touch at this width too.
  await page.locator(t('nav-query')).click();
  await page.locator(t('query-selector')).waitFor();
  assert.equal(await page.evaluate(() => location.hash), '#/query');
  assertClean(problems);
  await page.context().close();
});

test('keyboard: Tab reaches the navigation with a visible focus, Enter opens a page', { timeout: 60000 }, async () => {
  const { page, problems } = await openPage(browser);
  await gotoConsole(page, node, '#/overview');
  await page.locator(t('overview-node-id')).waitFor();
  const focused = () => page.evaluate(() => document.activeElement?.getAttribute('data-test') ?? document.activeElement?.tagName);
  let reached = null;
  for (let i = 0; i < 20 && !reached; i++) {
    await page.keyboard.press('Tab');
    const f = await focused();
    if (f === 'nav-query') reached = f;
  }
  assert.equal(reached, 'nav-query', 'Tab reaches the Query link');
  const outline = await page.evaluate(() => {
    const s = getComputedStyle(document.activeElement);
    return [s.outlineStyle, s.outlineWidth];
  });
  assert.notEqual(outline[0], 'none', 'the focused link shows a focus ring');
  assert.notEqual(outline[1], '0px');
  await page.keyboard.press('Enter');
  await until('the Query page', async () => (await page.evaluate(() => location.hash)) === '#/query');
  await page.locator(t('query-selector')).waitFor();
  // Tab on into the page: the form's fields come with their labels.
  const unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll('main input, main textarea, main select')]
      .filter((el) => el.type !== 'hidden')
      .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
      .map((el) => el.outerHTML.slice(0, 80)),
  );
  assert.deepEqual(unlabelled, [], 'every field has a label');
  assertClean(problems);
  await page.context().close();
});

function get(url, headers = {}) {
  return new Promise((resolve, reject) => {
    http
      .get(url, { headers }, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
      })
      .on('error', reject);
  });
}

function uiFiles(dir = UI_DIR, base = UI_DIR) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? uiFiles(p, base) : [path.relative(base, p).split(path.sep).join('/')];
  });
}

test('the console is served with its CSP, gzip and nosniff, within 300 KB gzipped', { timeout: 60000 }, async () => {
  const files = uiFiles();
  assert.ok(files.includes('index.html') && files.includes('favicon.svg'));
  let total = 0;
  for (const f of files) {
    const r = await get(`${node.url}/ui/${f}`, { 'accept-encoding': 'gzip' });
    assert.equal(r.status, 200, `${f} is served`);
    const csp = r.headers['content-security-policy'] ?? '';
    for (const d of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "object-src 'none'", "base-uri 'none'"]) {
      assert.ok(csp.includes(d), `${f}: CSP has ${d}`);
    }
    assert.ok(!/unsafe-inline|unsafe-eval/.test(csp), `${f}: nothing unsafe allowed`);
    assert.equal(r.headers['x-content-type-options'], 'nosniff', `${f}: nosniff`);
    if (/\.(js|css|html|svg)$/.test(f)) assert.equal(r.headers['content-encoding'], 'gzip', `${f}: gzip`);
    if (f.endsWith('.js')) assert.match(r.headers['content-type'], /^text\/javascript/, `${f}: a JavaScript type`);
    if (f.endsWith('.css')) assert.match(r.headers['content-type'], /^text\/css/);
    total += r.body.length;
    // The same bytes as the file in ui/.
    const raw = r.headers['content-encoding'] === 'gzip' ? (await import('node:zlib')).gunzipSync(r.body) : r.body;
    assert.ok(raw.equals(fs.readFileSync(path.join(UI_DIR, f))), `${f}: served as in ui/`);
  }
  assert.ok(total <= 300 * 1024, `the console transfers ${total} bytes gzipped (at most 300 KB)`);
  // /ui redirects to /ui/; the page itself has no inline script or style.
  const redirect = await get(`${node.url}/ui`);
  assert.ok([301, 302, 307, 308].includes(redirect.status));
  assert.equal(redirect.headers.location, '/ui/');
  const html = fs.readFileSync(path.join(UI_DIR, 'index.html'), 'utf8');
  assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>|<style|\sstyle=|\son[a-z]+=/i, 'no inline script, style or handler');
  // Every script of ui/ is loaded by the page (module preloads keep the first load one round trip deep).
  for (const f of files.filter((f) => f.endsWith('.js'))) {
    assert.ok(html.includes(`"${f}"`), `index.html loads or preloads ${f}`);
  }
});

test('the vendored files are the ones VENDOR.md lists, unchanged', async () => {
  const md = fs.readFileSync(path.join(UI_DIR, 'vendor/VENDOR.md'), 'utf8');
  const listed = [...md.matchAll(/^\| `([^`]+)`[^|]*\| [^|]+ \| ([0-9.]+) \| [^|]+ \| `([0-9a-f]{64})` \|$/gm)].map((m) => [m[1], m[3]]);
  const vendored = uiFiles().filter((f) => f.startsWith('vendor/') && f !== 'vendor/VENDOR.md').map((f) => f.slice('vendor/'.length)).sort();
  assert.deepEqual(listed.map(([f]) => f).sort(), vendored, 'VENDOR.md lists every vendored file');
  for (const [f, sha] of listed) {
    const got = crypto.createHash('sha256').update(fs.readFileSync(path.join(UI_DIR, 'vendor', f))).digest('hex');
    assert.equal(got, sha, `${f} is byte for byte the released file`);
  }
});

test('no page causes a CSP violation', { timeout: 120000 }, async () => {
  const { page, problems } = await openPage(browser);
  await gotoConsole(page, node, '#/overview');
  for (const [name, hash, marker] of PAGES) {
    // A full load of each page, so that its first render is checked too.
    const resp = await page.goto(`${node.url}/ui/?page=${name}${hash}`);
    assert.equal(resp.status(), 200);
    assert.match(resp.headers()['content-security-policy'], /script-src 'self'/);
    await page.locator(t(marker)).first().waitFor();
    assert.deepEqual(problems.csp, [], `${name}: no CSP violation`);
    await screenshot(page, `desktop-${name}`);
  }
  assertClean(problems);
  // The recorder itself works: an inline style attribute, which the CSP forbids, is reported.
  await page.evaluate(() => document.body.setAttribute('style', 'color: red'));
  await until('the canary violation reported', async () => problems.csp.length === 1);
  assert.match(problems.csp[0], /style-src/);
  await page.context().close();
});
