// Scenario 7: two nodes, each the other's seed. The cluster page of the first shows the peer up
// and converged; the peer killed (SIGKILL) shows down (and diverged once the first node takes a
// write it cannot get); restarted on the same port and data directory, after a write on the
// first node, it shows up and converged again.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  ConcordNode, assertClean, cleanup, freePort, gotoConsole, launchBrowser, openPage, screenshot, t, tempDir, until,
} from './helpers.mjs';

const SECRET = 'console-cluster-secret-0123456789';
let browser;
let a;
let b;

before(async () => {
  const pa = await freePort();
  const pb = await freePort();
  const args = (peer) => ['--peers', `127.0.0.1:${peer}`, '--cluster-secret', SECRET, '--anti-entropy-interval-ms', '200'];
  a = await ConcordNode.start({ dataDir: tempDir('cluster-a'), port: pa, args: args(pb) });
  b = await ConcordNode.start({ dataDir: tempDir('cluster-b'), port: pb, args: args(pa) });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await cleanup();
});

test('the cluster page shows a peer up and converged, down when killed, and up and converged after a restart', { timeout: 180000 }, async () => {
  const apiA = a.rest();
  const apiB = b.rest();
  assert.equal((await apiA('PUT', '/v1/collections/notes/docs/c1', { from: 'a' })).status, 201);
  await until('c1 replicated to b', async () => (await apiB('GET', '/v1/collections/notes/docs/c1')).status === 200);

  const { page, problems } = await openPage(browser);
  await gotoConsole(page, a, '#/cluster');
  const self = page.locator(t('cluster-row', '[data-self="true"]'));
  await self.waitFor();
  const health = await (await fetch(`${a.url}/v1/health`)).json();
  assert.equal(await self.getAttribute('data-node-id'), health.node_id, 'this node first');
  const peer = page.locator(t('cluster-row', `[data-address="${b.address}"]`));
  const healthB = await (await fetch(`${b.url}/v1/health`)).json();
  await until('the peer up and converged', async () =>
    (await peer.getAttribute('data-state')) === 'up' && (await peer.getAttribute('data-converged')) === 'true', 30000);
  assert.equal(await peer.getAttribute('data-node-id'), healthB.node_id);
  assert.match(await peer.locator(t('cluster-converged')).textContent(), /converged/);
  await screenshot(page, 'cluster');

  // Killed: down, and diverged once this node has a write the peer lacks.
  await b.kill('SIGKILL');
  await until('the peer shown down', async () => (await peer.getAttribute('data-state')) === 'down', 30000);
  assert.match(await peer.locator(t('cluster-state')).textContent(), /down/);
  assert.equal((await apiA('PUT', '/v1/collections/notes/docs/c2', { from: 'a', while: 'b is down' })).status, 201);
  await until('the peer shown diverged', async () => (await peer.getAttribute('data-converged')) === 'false', 30000);
  assert.match(await peer.locator(t('cluster-converged')).textContent(), /diverged/);
  await screenshot(page, 'cluster-down');

  // Restarted on the same port and data directory; a write on the first node: up and converged.
  await b.spawn();
  assert.equal((await apiA('PUT', '/v1/collections/notes/docs/c3', { from: 'a', after: 'restart' })).status, 201);
  await until('the peer up and converged again', async () =>
    (await peer.getAttribute('data-state')) === 'up' && (await peer.getAttribute('data-converged')) === 'true', 90000);
  for (const id of ['c1', 'c2', 'c3']) {
    assert.equal((await apiB('GET', `/v1/collections/notes/docs/${id}`)).status, 200, `${id} on the restarted peer`);
  }

  assertClean(problems);
  await page.context().close();
});
