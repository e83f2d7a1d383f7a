// Scenarios 2, 3 and 4: creating and editing documents through the console (the REST API then
// returns the edit), a stale edit (the conflict panel shows the other client's value and nothing
// is overwritten), CRDT operations and delete, and another client's change reaching the open
// document and the Live page without a reload.

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
  node = await ConcordNode.start(); // no tokens: a loopback client is admin, no login
  api = node.rest();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await cleanup();
});

const doc = async (c, id) => {
  const r = await api('GET', `/v1/collections/${c}/docs/${id}`);
  return r.status === 200 ? { ...r.json } : { status: r.status };
};

test('create a document and edit it in the editor: the REST API returns the edit', { timeout: 90000 }, async () => {
  const { page, problems } = await openPage(browser);
  await gotoConsole(page, node, '#/c/notes');
  await page.locator(t('docs-empty')).waitFor();

  // New document with an id typed by the user (PUT, create only).
  await page.locator(t('doc-new')).click();
  await page.locator(t('new-doc-id')).fill('n1');
  await page.locator(t('new-doc-body')).fill('{"title": "first draft", "n": 1}');
  await page.locator(t('new-doc-create')).click();
  await until('the document page of n1', async () => page.evaluate(() => location.hash === '#/c/notes/n1'));
  const editor = page.locator(t('doc-editor'));
  await valueMatches(editor, /"first draft"/, 'the editor showing the new document');
  assert.deepEqual(await doc('notes', 'n1'), { title: 'first draft', n: 1 });

  // Invalid JSON: reported with its position, and Save is disabled.
  await editor.fill('{"title": "oops",');
  await textMatches(page.locator(t('doc-parse-error')), /not valid/, 'the JSON error');
  assert.equal(await page.locator(t('doc-save')).isDisabled(), true, 'cannot save invalid JSON');
  // An integer a browser would round: refused before it could be saved rounded.
  await editor.fill('{"title": "big", "n": 9007199254740993}');
  await textMatches(page.locator(t('doc-parse-error')), /9007199254740993, an integer beyond/, 'the precision refusal');
  assert.equal(await page.locator(t('doc-save')).isDisabled(), true, 'cannot save a rounded integer');

  // A real edit, saved with If-Match: the REST API returns it, and the version shown is the new one.
  await editor.fill(JSON.stringify({ title: 'edited in the console', n: 2, tags: ['a', 'b'] }, null, 2));
  await page.locator(t('doc-save')).click();
  await until('the edit to be stored', async () => (await doc('notes', 'n1')).title === 'edited in the console');
  assert.deepEqual(await doc('notes', 'n1'), { title: 'edited in the console', n: 2, tags: ['a', 'b'] });
  const etag = (await api('GET', '/v1/collections/notes/docs/n1')).headers.get('etag').replace(/"/g, '');
  await until('the new version shown', async () => (await page.locator(t('doc-version')).getAttribute('data-version')) === etag);
  assert.equal(await page.locator(t('doc-dirty')).count(), 0, 'nothing unsaved after saving');
  await screenshot(page, 'document');

  // A new document with a fresh id (POST): the console opens it, the REST API has it.
  await gotoConsole(page, node, '#/c/notes');
  await page.locator(t('doc-row', '[data-id="n1"]')).waitFor();
  await page.locator(t('doc-new')).click();
  await page.locator(t('new-doc-body')).fill('{"title": "with a fresh id"}');
  await page.locator(t('new-doc-create')).click();
  const id = await until('a generated id in the URL', async () => {
    const h = await page.evaluate(() => location.hash);
    const m = /^#\/c\/notes\/([^/]+)$/.exec(h);
    return m && m[1] !== 'n1' ? decodeURIComponent(m[1]) : false;
  });
  await valueMatches(page.locator(t('doc-editor')), /with a fresh id/, 'the new document');
  assert.deepEqual(await doc('notes', id), { title: 'with a fresh id' });

  // Creating over an existing id is refused by the form (If-None-Match: *), nothing replaced.
  await gotoConsole(page, node, '#/c/notes');
  await page.locator(t('doc-new')).click();
  await page.locator(t('new-doc-id')).fill('n1');
  await page.locator(t('new-doc-body')).fill('{"title": "clobber"}');
  await page.locator(t('new-doc-create')).click();
  await textMatches(page.locator(t('new-doc-error')), /exists already/, 'the refusal');
  assert.equal((await doc('notes', 'n1')).title, 'edited in the console');

  assertClean(problems, { allowHttp: [412] });
  await page.context().close();
});

test('a document holding integers beyond 2^53 is shown but not editable, and stays exact', { timeout: 90000 }, async () => {
  // Written raw: JSON.stringify in this test would round the number before it left.
  const raw = '{"label": "ledger", "balance": 12345678901234567890, "small": 7}';
  const r = await fetch(`${node.url}/v1/collections/notes/docs/big`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: raw });
  assert.equal(r.status, 201);
  const { page, problems } = await openPage(browser);
  await gotoConsole(page, node, '#/c/notes/big');
  await textMatches(page.locator(t('doc-inexact')), /12345678901234567890/, 'the reason the editor is off');
  assert.equal(await page.locator(t('doc-editor')).count(), 0, 'no editor that would round on save');
  assert.equal(await page.locator(t('doc-save')).count(), 0);
  await textMatches(page.locator(t('doc-json')), /ledger/, 'the document is still shown');
  const stored = await (await fetch(`${node.url}/v1/collections/notes/docs/big`)).text();
  assert.match(stored, /"balance":12345678901234567890/, 'the stored integer is exact');
  assertClean(problems);
  await page.context().close();
});

test('a stale edit shows the conflict with the other client\'s value and overwrites nothing', { timeout: 90000 }, async () => {
  await api('PUT', '/v1/collections/notes/docs/n2', { title: 'original', body: 'text' });
  const { page, problems } = await openPage(browser);
  await gotoConsole(page, node, '#/c/notes/n2');
  const editor = page.locator(t('doc-editor'));
  await valueMatches(editor, /"original"/, 'the document loaded');

  // The user edits; meanwhile another client changes the document through the REST API.
  const mine = { title: 'my edit', body: 'text' };
  await editor.fill(JSON.stringify(mine, null, 2));
  const other = await api('PATCH', '/v1/collections/notes/docs/n2', { title: 'changed by another client' });
  assert.equal(other.status, 200);
  // The page is told (live) but does not clobber the user's edit.
  await page.locator(t('server-changed')).waitFor();
  assert.match(await editor.inputValue(), /"my edit"/, 'the unsaved edit is kept');

  // Saving is refused as stale (412): the conflict panel shows the other client's value next to
  // the user's edit, and the document still holds the other client's value.
  await page.locator(t('doc-save')).click();
  const panel = page.locator(t('conflict-panel'));
  await panel.waitFor();
  await textMatches(page.locator(t('conflict-server')), /"changed by another client"/, "the other client's value");
  await textMatches(page.locator(t('conflict-mine')), /"my edit"/, 'the edit');
  assert.match(await page.locator(t('conflict-diff')).textContent(), /changed by another client[\s\S]*my edit/);
  assert.equal((await doc('notes', 'n2')).title, 'changed by another client', 'nothing was overwritten');
  await screenshot(page, 'conflict');

  // Reload: the editor takes the current version, the edit is dropped, still nothing written.
  await page.locator(t('conflict-reload')).click();
  await valueMatches(editor, /"changed by another client"/, 'the current version in the editor');
  assert.equal(await panel.count(), 0);
  assert.equal((await doc('notes', 'n2')).title, 'changed by another client');

  // A second stale edit, overwritten knowingly this time.
  await editor.fill(JSON.stringify(mine, null, 2));
  await api('PATCH', '/v1/collections/notes/docs/n2', { title: 'changed again' });
  await page.locator(t('server-changed')).waitFor();
  await page.locator(t('doc-save')).click();
  await textMatches(page.locator(t('conflict-server')), /"changed again"/, "the other client's second value");
  assert.equal((await doc('notes', 'n2')).title, 'changed again');
  await page.locator(t('conflict-overwrite')).click();
  await until('the overwrite to be stored', async () => (await doc('notes', 'n2')).title === 'my edit');
  assert.deepEqual(await doc('notes', 'n2'), mine);
  await until('the panel to close', async () => (await panel.count()) === 0);

  assertClean(problems, { allowHttp: [412] });
  await page.context().close();
});

test('CRDT operations (counter, text splice, any op) and delete with a confirm step', { timeout: 90000 }, async () => {
  await api('PUT', '/v1/collections/notes/docs/ops1', { n: 5, title: 'Hello world', tags: ['x'] });
  const { page, problems } = await openPage(browser);
  await gotoConsole(page, node, '#/c/notes/ops1');
  const editor = page.locator(t('doc-editor'));
  await valueMatches(editor, /Hello world/, 'the document loaded');

  // A plain number is not a counter: increment is refused with the node's message.
  await page.locator(t('op-increment', '[data-path="/n"]')).click();
  await textMatches(page.locator(t('error-banner')).last(), /422.*not a counter/, 'the 422 message');
  await page.locator(t('error-dismiss')).last().click();
  await until('the message dismissed', async () => (await page.locator(t('error-banner')).count()) === 0);
  // Made a counter (keeping 5), then incremented by 3.
  await page.locator(t('op-counter', '[data-path="/n"]')).click();
  await until('the counter made', async () => (await doc('notes', 'ops1')).n === 5 && (await api('GET', '/v1/collections/notes/docs/ops1/history')).json.changes.length === 2);
  await page.locator(`${t('op-number', '[data-path="/n"]')} ${t('op-by')}`).fill('3');
  await page.locator(t('op-increment', '[data-path="/n"]')).click();
  await until('n incremented to 8', async () => (await doc('notes', 'ops1')).n === 8);
  await valueMatches(editor, /"n": 8/, 'the editor shows the counter');

  // Splice "Hello world" at 6: delete 5, insert "there".
  await page.locator(t('op-splice-path')).selectOption('/title');
  await page.locator(t('op-splice-index')).fill('6');
  await page.locator(t('op-splice-delete')).fill('5');
  await page.locator(t('op-splice-insert')).fill('there');
  await page.locator(t('op-splice-apply')).click();
  await until('the text spliced', async () => (await doc('notes', 'ops1')).title === 'Hello there');
  await valueMatches(editor, /Hello there/, 'the editor shows the spliced text');

  // Any operation as JSON: insert into the list.
  await page.locator(t('ops-json')).fill('{"op": "insert", "path": "/tags", "value": "y"}');
  await page.locator(t('ops-apply')).click();
  await until('the list insert', async () => JSON.stringify((await doc('notes', 'ops1')).tags) === '["x","y"]');

  // Delete asks first; cancel keeps the document, confirm deletes it.
  await page.locator(t('doc-delete')).click();
  await page.locator(t('doc-delete-cancel')).click();
  assert.equal((await doc('notes', 'ops1')).title, 'Hello there');
  await page.locator(t('doc-delete')).click();
  await page.locator(t('doc-delete-confirm')).click();
  await until('the document deleted', async () => (await doc('notes', 'ops1')).status === 404);
  await page.locator(t('doc-gone', '[data-state="deleted"]')).waitFor();

  assertClean(problems, { allowHttp: [422] });
  await page.context().close();
});

test("another client's change appears in the open document and in the Live feed without a reload", { timeout: 90000 }, async () => {
  await api('PUT', '/v1/collections/notes/docs/n3', { count: 1, text: 'before' });
  await api('PUT', '/v1/collections/other/docs/o1', { x: 1 });
  const { page, problems } = await openPage(browser);
  await gotoConsole(page, node, '#/c/notes/n3');
  const editor = page.locator(t('doc-editor'));
  await valueMatches(editor, /"before"/, 'the document loaded');
  await page.locator(t('doc-live-state', '[data-state="open"]')).waitFor();
  await page.evaluate(() => {
    window.__sameDocument = true;
  });

  // Another client writes: the open document follows, with no reload.
  await api('PATCH', '/v1/collections/notes/docs/n3', { text: 'from another client', count: 2 });
  await valueMatches(editor, /"from another client"/, 'the open document updated live');
  assert.match(await editor.inputValue(), /"count": 2/);
  const etag = (await api('GET', '/v1/collections/notes/docs/n3')).headers.get('etag').replace(/"/g, '');
  await until('the version shown follows', async () => (await page.locator(t('doc-version')).getAttribute('data-version')) === etag);

  // The Live page (reached by the navigation, still no reload) tails the changes feed.
  await page.locator(t('nav-live')).click();
  await page.locator(t('live-status', '[data-state="open"]')).waitFor();
  await api('PUT', '/v1/collections/notes/docs/n4', { fresh: true });
  const row = page.locator(t('live-row', '[data-id="n4"]'));
  await row.waitFor();
  assert.equal(await row.getAttribute('data-collection'), 'notes');
  assert.equal(await row.locator(t('live-link')).getAttribute('href'), '#/c/notes/n4', 'the row links to its document');
  await api('PATCH', '/v1/collections/notes/docs/n3', { text: 'again' });
  await page.locator(t('live-row', '[data-id="n3"]')).waitFor();
  const ids = await page.locator(t('live-row')).evaluateAll((rows) => rows.map((r) => r.dataset.id));
  assert.deepEqual(ids.slice(0, 2), ['n3', 'n4'], 'newest on top');
  await screenshot(page, 'live');

  // Filtered to one collection: changes elsewhere do not show.
  await page.locator(t('live-collection')).selectOption('other');
  await page.locator(t('live-status', '[data-state="open"]')).waitFor();
  assert.equal(await page.locator(t('live-row')).count(), 0, 'a new filter starts empty');
  await api('PUT', '/v1/collections/notes/docs/n5', { ignored: true });
  await api('PUT', '/v1/collections/other/docs/o2', { seen: true });
  await page.locator(t('live-row', '[data-id="o2"]')).waitFor();
  assert.equal(await page.locator(t('live-row', '[data-id="n5"]')).count(), 0, 'notes/n5 is filtered out');

  // Following the link opens the document.
  await page.locator(`${t('live-row', '[data-id="o2"]')} ${t('live-link')}`).click();
  await valueMatches(page.locator(t('doc-editor')), /"seen": true/, 'the linked document');
  assert.equal(await page.evaluate(() => window.__sameDocument), true, 'the page was never reloaded');

  assertClean(problems);
  await page.context().close();
});
