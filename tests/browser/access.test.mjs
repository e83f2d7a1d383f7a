// Scenario 8: a read-only token sees no edit controls (no save, delete, new, increment, index
// creation) and gets the node's 403 message, not a broken page, where it may not go; a scoped
// token sees only its documents in the collection table, no count it could infer others' from,
// and "not found" for a document outside its scope; neither sees links or panels the node would
// refuse them (Cluster, the index list), and the token travels in headers only, event streams
// included, never in a URL.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  ConcordNode, assertClean, cleanup, gotoConsole, jwtSecret, launchBrowser, login, mintToken, openPage,
  screenshot, t, tempDir, textMatches, until,
} from './helpers.mjs';

let browser;
let node;
let secret;

before(async () => {
  const dir = tempDir('access');
  const s = jwtSecret(dir);
  secret = s.secret;
  node = await ConcordNode.start({ dataDir: `${dir}/data`, args: ['--jwt-secret-file', s.file] });
  const admin = node.rest(mintToken(secret, { sub: 'ops', access: 'admin' }));
  for (const [id, owner] of [['a1', 'alice'], ['a2', 'alice'], ['b1', 'bob'], ['b2', 'bob']]) {
    assert.equal((await admin('PUT', `/v1/collections/notes/docs/${id}`, { owner, text: `${owner}'s note ${id}`, n: 1 })).status, 201);
  }
  assert.equal((await admin('PUT', '/v1/collections/tasks/docs/t1', { x: 1 })).status, 201);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await cleanup();
});

test('a read-only token sees no edit controls', { timeout: 90000 }, async () => {
  const { page, problems } = await openPage(browser);
  await gotoConsole(page, node);
  await login(page, mintToken(secret, { sub: 'reader', access: 'read' }));
  await textMatches(page.locator(t('whoami-access')), /^read$/, 'the access level');
  assert.equal(await page.locator(t('nav-cluster')).count(), 0, 'no link to the admin-only cluster page');

  // The collection: documents listed, no "new document".
  await gotoConsole(page, node, '#/c/notes');
  await until('four rows', async () => (await page.locator(t('doc-row')).count()) === 4);
  assert.equal(await page.locator(t('doc-new')).count(), 0, 'no new-document button');

  // A document: its JSON, and no editor, save, delete or CRDT operation.
  await gotoConsole(page, node, '#/c/notes/a1');
  await textMatches(page.locator(t('doc-json')), /alice's note a1/, 'the document');
  for (const control of ['doc-editor', 'doc-save', 'doc-delete', 'doc-revert', 'ops-panel', 'op-increment', 'op-counter', 'op-splice-apply', 'ops-apply']) {
    assert.equal(await page.locator(t(control)).count(), 0, `no ${control}`);
  }
  await page.locator(t('doc-history-link')).waitFor();
  await screenshot(page, 'document-read-only');

  // The query page: indexes listed, but no index creation.
  await gotoConsole(page, node, '#/query/notes');
  await page.locator(t('index-panel')).waitFor();
  await page.locator(t('query-find')).waitFor();
  assert.equal(await page.locator(t('index-create')).count(), 0, 'no index creation');
  assert.equal(await page.locator(t('index-name')).count(), 0);

  // The cluster needs admin: the node's 403 message, inside a working page.
  await gotoConsole(page, node, '#/cluster');
  await textMatches(page.locator(t('page-error')), /403/, 'the 403 message');
  await page.locator(t('nav-overview')).click();
  await page.locator(t('overview-node-id')).waitFor();

  assertClean(problems, { allowHttp: [401, 403] });
  await page.context().close();
});

test('a scoped token sees only its documents', { timeout: 90000 }, async () => {
  const { page, problems } = await openPage(browser);
  await gotoConsole(page, node);
  const token = mintToken(secret, { sub: 'alice', access: 'write', scopes: [{ collection: 'notes', selector: { owner: '$sub' } }] });
  // Every request the console makes: the token must travel in a header, never in a URL.
  const requests = [];
  page.on('request', (r) => requests.push({ url: r.url(), auth: r.headers().authorization }));
  await login(page, token);
  await page.locator(t('whoami-scoped')).waitFor();

  // Collections: only notes, with no count (it would count others' documents).
  await gotoConsole(page, node, '#/collections');
  await page.locator(t('collection-row', '[data-name="notes"]')).waitFor();
  assert.deepEqual(await page.locator(t('collection-row')).evaluateAll((r) => r.map((x) => x.dataset.name)), ['notes']);
  assert.equal((await page.locator(t('collection-docs')).textContent()).trim(), '—');

  // The table: exactly alice's documents.
  await page.locator(t('collection-link')).click();
  await until('alice\'s rows', async () => (await page.locator(t('doc-row')).count()) === 2);
  const ids = await page.locator(t('doc-row')).evaluateAll((rows) => rows.map((r) => r.dataset.id));
  assert.deepEqual(ids, ['a1', 'a2']);
  // Searching by prefix cannot reveal bob's either.
  await page.locator(t('prefix-input')).fill('b');
  await page.locator(t('prefix-search')).click();
  await page.locator(t('docs-empty')).waitFor();
  assert.equal(await page.locator(t('doc-row')).count(), 0);
  await screenshot(page, 'collection-scoped');

  // Her own document opens (and she may edit it); bob's is "not found".
  await gotoConsole(page, node, '#/c/notes/a2');
  await page.locator(t('doc-editor')).waitFor();
  await gotoConsole(page, node, '#/c/notes/b1');
  await textMatches(page.locator(t('doc-not-found')), /not found/i, 'not found');
  assert.equal(await page.locator(t('doc-editor')).count(), 0);
  assert.equal(await page.locator(t('doc-json')).count(), 0);
  assert.doesNotMatch(await page.locator('main').textContent(), /bob's note/);

  // The Live page picks her collection (the feed needs one) and shows only her documents' changes.
  await page.locator(t('nav-live')).click();
  await page.locator(t('live-status', '[data-state="open"]')).waitFor();
  assert.equal(await page.locator(t('live-collection')).inputValue(), 'notes');
  const admin = node.rest(mintToken(secret, { sub: 'ops', access: 'admin' }));
  await admin('PUT', '/v1/collections/notes/docs/b3', { owner: 'bob', text: 'not for alice' });
  await admin('PUT', '/v1/collections/notes/docs/a3', { owner: 'alice', text: 'for alice' });
  await page.locator(t('live-row', '[data-id="a3"]')).waitFor();
  assert.equal(await page.locator(t('live-row', '[data-id="b3"]')).count(), 0, "bob's change is not in her feed");
  const feeds = requests.filter((r) => new URL(r.url).pathname === '/v1/changes');
  assert.ok(feeds.length > 0, 'the Live page opened the changes feed');
  for (const f of feeds) assert.equal(f.auth, `Bearer ${token}`, `${f.url}: the token in the Authorization header`);
  assert.deepEqual(requests.filter((r) => r.url.includes(token) || r.url.includes('access_token')), [], 'no token in any URL');

  // The query page: no index list for a scoped token (the node would refuse it), a note instead.
  await gotoConsole(page, node, '#/query/notes');
  await page.locator(t('index-panel-scoped')).waitFor();
  assert.equal(await page.locator(t('index-panel')).count(), 0);
  assert.equal(requests.filter((r) => r.url.includes('/indexes')).length, 0, 'indexes were not asked for');

  assertClean(problems, { allowHttp: [401, 404] });
  await page.context().close();
});
