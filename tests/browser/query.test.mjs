// Scenario 6: an admin creates an index from the query page (it builds, then is ready); a find
// whose selector uses it shows the matching documents and stats naming the index; explain shows
// the chosen index; a malformed selector shows the 400's message naming the operator.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  ConcordNode, assertClean, cleanup, gotoConsole, launchBrowser, openPage, screenshot, t, textMatches, until,
} from './helpers.mjs';

let browser;
let node;
let api;

before(async () => {
  node = await ConcordNode.start();
  api = node.rest();
  const writes = [];
  for (let i = 0; i < 40; i++) {
    writes.push({ id: `t${String(i).padStart(2, '0')}`, op: 'put', body: { status: i % 3 === 0 ? 'done' : 'open', priority: i % 10, title: `task ${i}` } });
  }
  const r = await api('POST', '/v1/collections/tasks/bulk-write', { writes });
  assert.equal(r.status, 200);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await cleanup();
});

test('create an index, find with it, explain, and see a malformed selector refused', { timeout: 120000 }, async () => {
  const { page, problems } = await openPage(browser);
  await gotoConsole(page, node, '#/query/tasks');
  await page.locator(t('index-empty')).waitFor();

  // Create the index (admin): it appears and becomes ready.
  await page.locator(t('index-name')).fill('by_status');
  await page.locator(t('index-fields')).fill('status, priority');
  await page.locator(t('index-create')).click();
  const row = page.locator(t('index-row', '[data-name="by_status"]'));
  await row.waitFor();
  await until('the index ready', async () => (await row.getAttribute('data-state')) === 'ready', 30000);
  const listed = (await api('GET', '/v1/collections/tasks/indexes')).json.indexes;
  assert.deepEqual(listed.map((i) => [i.name, i.fields]), [['by_status', ['status', 'priority']]]);

  // Find with a selector the index serves.
  const selector = { status: 'open', priority: { $gte: 5 } };
  await page.locator(t('query-selector')).fill(JSON.stringify(selector, null, 2));
  await page.locator(t('query-limit')).fill('100');
  await page.locator(t('query-find')).click();
  await textMatches(page.locator(t('query-stats-index')), /^by_status$/, 'stats naming the index');
  const expected = (await api('POST', '/v1/collections/tasks/find', { selector, limit: 100 })).json;
  assert.ok(expected.docs.length > 5);
  await until('every matching document listed', async () => (await page.locator(t('query-doc')).count()) === expected.docs.length);
  const ids = await page.locator(t('query-doc')).evaluateAll((rows) => rows.map((r) => r.dataset.id));
  assert.deepEqual(ids, expected.docs.map((d) => d.id));
  await textMatches(page.locator(t('query-stats-returned')), new RegExp(`^${expected.docs.length}$`), 'returned count');
  assert.equal(await page.locator(t('query-warning')).count(), 0, 'an indexed query has no warning');

  // Explain: the plan names the chosen index.
  await page.locator(t('query-explain')).click();
  await page.locator(t('explain-output')).waitFor();
  await textMatches(page.locator(t('explain-index')), /^by_status$/, 'the chosen index');
  await textMatches(page.locator(t('explain-candidate', '[data-index="by_status"]')), /chosen/, 'the candidate marked chosen');
  await screenshot(page, 'query');

  // Pages: limit 4 gives a bookmark; the next page holds the following documents.
  await page.locator(t('query-limit')).fill('4');
  await page.locator(t('query-find')).click();
  await until('a first page of 4', async () => (await page.locator(t('query-doc')).count()) === 4);
  const first = await page.locator(t('query-doc')).evaluateAll((rows) => rows.map((r) => r.dataset.id));
  assert.deepEqual(first, expected.docs.slice(0, 4).map((d) => d.id));
  await page.locator(t('query-next')).click();
  await until('the second page', async () => {
    const now = await page.locator(t('query-doc')).evaluateAll((rows) => rows.map((r) => r.dataset.id));
    return JSON.stringify(now) === JSON.stringify(expected.docs.slice(4, 8).map((d) => d.id));
  });

  // A query no index serves on a small collection: a scan, shown as a warning.
  await page.locator(t('query-selector')).fill('{"title": "task 7"}');
  await page.locator(t('query-find')).click();
  await textMatches(page.locator(t('query-warning')), /index/, 'the scan warning');
  await textMatches(page.locator(t('query-stats-index')), /none/, 'no index used');

  // A malformed selector: the node's 400 names the operator.
  await page.locator(t('query-selector')).fill('{"status": {"$foo": 1}}');
  await page.locator(t('query-find')).click();
  const err = await textMatches(page.locator(t('query-error')), /400/, 'the 400 message');
  assert.match(err, /\$foo/, 'the message names the operator');
  // Invalid JSON never reaches the node.
  await page.locator(t('query-selector')).fill('{"status": ');
  await page.locator(t('query-explain')).click();
  await textMatches(page.locator(t('query-form-error')), /not valid/, 'the JSON error');

  assertClean(problems, { allowHttp: [400] });
  await page.context().close();
});
