// Browsing: the collections with their counts, a collection's documents as a table of chosen
// fields (default: the first page's top-level keys) or as JSON, pages of 50 with next/previous,
// and id-prefix search.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ConcordNode, assertClean, cleanup, gotoConsole, launchBrowser, openPage, screenshot, t, textMatches, until } from './helpers.mjs';

let browser;
let node;

before(async () => {
  node = await ConcordNode.start();
  const api = node.rest();
  const writes = [];
  for (let i = 0; i < 70; i++) {
    const id = `${i < 60 ? 'p' : 'q'}${String(i).padStart(2, '0')}`;
    writes.push({ id, op: 'put', body: { n: i, name: `item ${i}`, meta: { kind: i % 2 ? 'odd' : 'even' } } });
  }
  assert.equal((await api('POST', '/v1/collections/items/bulk-write', { writes })).status, 200);
  assert.equal((await api('PUT', '/v1/collections/small/docs/s1', { a: 1 })).status, 201);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await cleanup();
});

const rowIds = (page) => page.locator(t('doc-row')).evaluateAll((rows) => rows.map((r) => r.dataset.id));

test('collections, a paged table of chosen fields, the JSON view and id-prefix search', { timeout: 90000 }, async () => {
  const { page, problems } = await openPage(browser);
  await gotoConsole(page, node, '#/collections');
  await page.locator(t('collection-row', '[data-name="items"]')).waitFor();
  assert.equal((await page.locator(`${t('collection-row', '[data-name="items"]')} ${t('collection-docs')}`).textContent()).trim(), '70');
  assert.equal((await page.locator(`${t('collection-row', '[data-name="small"]')} ${t('collection-docs')}`).textContent()).trim(), '1');
  await screenshot(page, 'collections');

  await page.locator(`${t('collection-row', '[data-name="items"]')} ${t('collection-link')}`).click();
  await until('the first page of 50', async () => (await page.locator(t('doc-row')).count()) === 50);
  const first = await rowIds(page);
  assert.equal(first[0], 'p00');
  assert.equal(first[49], 'p49');
  // Default columns: the top-level keys of the first page.
  assert.equal(await page.locator(t('columns-input')).inputValue(), 'meta, n, name');
  assert.equal((await page.locator(`${t('doc-row', '[data-id="p07"]')} td[data-col="name"]`).textContent()).trim(), 'item 7');

  // Chosen columns, dotted paths into nested objects.
  await page.locator(t('columns-input')).fill('meta.kind, n');
  await until('the new columns', async () => (await page.locator('th').allTextContents()).join('|') === 'id|meta.kind|n|version');
  assert.equal((await page.locator(`${t('doc-row', '[data-id="p07"]')} td[data-col="meta.kind"]`).textContent()).trim(), 'odd');
  await screenshot(page, 'collection');

  // Next page, then back.
  await page.locator(t('next-page')).click();
  await until('the second page', async () => (await rowIds(page))[0] === 'p50');
  assert.deepEqual(await rowIds(page), [...Array(20).keys()].map((i) => `${i + 50 < 60 ? 'p' : 'q'}${i + 50}`));
  await textMatches(page.locator(t('page-number')), /Page 2/, 'page 2');
  assert.equal(await page.locator(t('next-page')).isDisabled(), true, 'the last page');
  await page.locator(t('prev-page')).click();
  await until('the first page again', async () => (await rowIds(page))[0] === 'p00');

  // The JSON view of the page.
  await page.locator(t('view-json')).click();
  const json = JSON.parse(await page.locator(t('docs-json')).textContent());
  assert.equal(json.length, 50);
  assert.deepEqual(json[3].doc, { n: 3, name: 'item 3', meta: { kind: 'odd' } });
  await page.locator(t('view-table')).click();

  // Id-prefix search.
  await page.locator(t('prefix-input')).fill('q');
  await page.locator(t('prefix-search')).click();
  await until('only ids starting with q', async () => {
    const ids = await rowIds(page);
    return ids.length === 10 && ids.every((id) => id.startsWith('q'));
  });
  await page.locator(t('prefix-input')).fill('p5');
  await page.locator(t('prefix-search')).click();
  await until('only ids starting with p5', async () => JSON.stringify(await rowIds(page)) === JSON.stringify([...Array(10).keys()].map((i) => `p5${i}`)));
  await page.locator(t('prefix-input')).fill('nothing-here');
  await page.locator(t('prefix-search')).click();
  await page.locator(t('docs-empty')).waitFor();
  await page.locator(t('prefix-clear')).click();
  await until('all again', async () => (await page.locator(t('doc-row')).count()) === 50);

  assertClean(problems);
  await page.context().close();
});
