// The monitoring pages: the overview polls while it is open and stops when it is left; the
// clients page counts WebSocket clients and open HTTP streams as they come and go.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ConcordNode, assertClean, cleanup, gotoConsole, launchBrowser, openPage, screenshot, t, textMatches, until } from './helpers.mjs';

let browser;
let node;

before(async () => {
  node = await ConcordNode.start();
  await node.rest()('PUT', '/v1/collections/notes/docs/m1', { x: 1 });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await cleanup();
});

test('the overview polls while open and stops polling when left', { timeout: 60000 }, async () => {
  const { page, problems } = await openPage(browser);
  const seen = { health: 0, cluster: 0 };
  page.on('request', (r) => {
    const p = new URL(r.url()).pathname;
    if (p === '/v1/health') seen.health++;
    if (p === '/v1/cluster') seen.cluster++;
  });
  await gotoConsole(page, node, '#/overview');
  await page.locator(t('overview-node-id')).waitFor();
  await until('the overview polling /v1/health', async () => seen.health >= 3);

  // Left for the cluster page (which polls /v1/cluster every second: the clock of this test).
  await page.locator(t('nav-cluster')).click();
  await page.locator(t('cluster-row')).first().waitFor();
  const healthAtLeave = seen.health;
  const clusterAtLeave = seen.cluster;
  await until('four cluster polls (over 3 s)', async () => seen.cluster >= clusterAtLeave + 4);
  assert.equal(seen.health, healthAtLeave, 'no /v1/health poll after leaving the overview');
  assertClean(problems);
  await page.context().close();
});

test('the clients page counts WebSocket clients and open streams', { timeout: 60000 }, async () => {
  const { page, problems } = await openPage(browser);
  await gotoConsole(page, node, '#/clients');
  await textMatches(page.locator(t('clients-websockets')), /^0$/, 'no WebSocket client');

  // An automerge-repo WebSocket client (from a blank page, outside the console).
  const other = await page.context().newPage();
  await other.evaluate(async (url) => {
    window.ws = new WebSocket(url);
    await new Promise((resolve, reject) => {
      window.ws.onopen = resolve;
      window.ws.onerror = reject;
    });
  }, `ws://${node.address}/v1/automerge-repo`);
  await textMatches(page.locator(t('clients-websockets')), /^1$/, 'one WebSocket client');

  // A document open in another console tab holds an event stream.
  const before = Number(await page.locator(t('clients-streams')).textContent());
  const docTab = await page.context().newPage();
  await docTab.goto(`${node.url}/ui/#/c/notes/m1`);
  await docTab.locator(t('doc-live-state', '[data-state="open"]')).waitFor();
  await until('one more stream', async () => Number(await page.locator(t('clients-streams')).textContent()) === before + 1);
  await screenshot(page, 'clients');

  // Both gone: the counts go back.
  await other.evaluate(() => window.ws.close());
  await docTab.close();
  await textMatches(page.locator(t('clients-websockets')), /^0$/, 'the WebSocket client gone');
  await until('the stream gone', async () => Number(await page.locator(t('clients-streams')).textContent()) === before);

  assertClean(problems);
  await page.context().close();
});
