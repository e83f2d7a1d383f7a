// Scenario 5: after several edits the history page lists them (newest first, as the REST API
// does); selecting an older change shows the document as it was then; diffing two versions shows
// the removed and added lines.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  ConcordNode, assertClean, cleanup, gotoConsole, launchBrowser, openPage, screenshot, t, textMatches,
  until, valueMatches,
} from './helpers.mjs';

let browser;
let node;
let api;

before(async () => {
  node = await ConcordNode.start();
  api = node.rest();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await cleanup();
});

test('the history lists the edits, shows an older version and diffs two versions', { timeout: 90000 }, async () => {
  const path = '/v1/collections/notes/docs/h1';
  assert.equal((await api('PUT', path, { title: 'first version', n: 1 })).status, 201);
  assert.equal((await api('PUT', path, { title: 'second version', n: 1 })).status, 200);

  const { page, problems } = await openPage(browser);
  // One more edit through the console's own editor, then one by another client.
  await gotoConsole(page, node, '#/c/notes/h1');
  const editor = page.locator(t('doc-editor'));
  await valueMatches(editor, /second version/, 'the document loaded');
  await editor.fill(JSON.stringify({ title: 'third version', n: 2 }, null, 2));
  await page.locator(t('doc-save')).click();
  await until('the third version stored', async () => (await api('GET', path)).json.title === 'third version');
  assert.equal((await api('PUT', path, { title: 'third version', n: 2, extra: true })).status, 200);

  const history = (await api('GET', `${path}/history`)).json.changes;
  assert.equal(history.length, 4);

  await page.locator(t('doc-history-link')).click();
  await until('four history rows', async () => (await page.locator(t('history-row')).count()) === 4);
  const hashes = await page.locator(t('history-row')).evaluateAll((rows) => rows.map((r) => r.dataset.hash));
  assert.deepEqual(hashes, history.map((c) => c.hash), 'the changes, newest first');
  // Each change's size, in operations, as the API gives it.
  const sizes = await page.locator(t('history-ops')).allTextContents();
  assert.deepEqual(sizes, history.map((c) => (c.ops === 1 ? '1 op' : `${c.ops} ops`)));
  assert.ok(history.every((c) => c.ops > 0), 'every change here has operations');

  // The newest version is shown at first; selecting the oldest shows the document as it was.
  const newest = await textMatches(page.locator(t('history-version-json')), /extra/, 'the newest version');
  assert.deepEqual(JSON.parse(newest), { title: 'third version', n: 2, extra: true });
  await page.locator(t('history-row')).nth(3).locator(t('history-select')).click();
  const old = await textMatches(page.locator(t('history-version-json')), /first version/, 'the oldest version');
  assert.doesNotMatch(old, /third version|second version|extra/);
  assert.deepEqual(JSON.parse(old), { title: 'first version', n: 1 });
  // And the second one.
  await page.locator(t('history-row')).nth(2).locator(t('history-select')).click();
  assert.deepEqual(JSON.parse(await textMatches(page.locator(t('history-version-json')), /second version/, 'the second version')), { title: 'second version', n: 1 });

  // Diff the oldest (from) against the newest (to).
  await page.locator(t('history-row')).nth(3).locator(t('diff-a')).check();
  await page.locator(t('history-row')).nth(0).locator(t('diff-b')).check();
  const diff = page.locator(t('diff-view'));
  await until('the diff from the first to the fourth version', async () => {
    const removed = await diff.locator('[data-kind="del"]').allTextContents();
    return removed.some((l) => l.includes('"title": "first version"'));
  });
  const removed = (await diff.locator('[data-kind="del"]').allTextContents()).join('\n');
  const added = (await diff.locator('[data-kind="add"]').allTextContents()).join('\n');
  assert.match(removed, /"n": 1/);
  assert.match(added, /"title": "third version"/);
  assert.match(added, /"n": 2/);
  assert.match(added, /"extra": true/);
  assert.doesNotMatch(removed + added, /second version/, 'only the two versions picked');
  await screenshot(page, 'history');

  // From the third change to the fourth: only the added field.
  await page.locator(t('history-row')).nth(1).locator(t('diff-a')).check();
  await until('the diff from the third to the fourth version', async () => {
    const rm = await diff.locator('[data-kind="del"]').allTextContents();
    const add = await diff.locator('[data-kind="add"]').allTextContents();
    return add.some((l) => l.includes('"extra": true')) && !rm.some((l) => l.includes('title'));
  });
  assert.doesNotMatch((await diff.locator('[data-kind="add"]').allTextContents()).join('\n'), /title/);

  assertClean(problems);
  await page.context().close();
});
