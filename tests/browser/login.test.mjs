// Scenario 1: logging in with a token on a node that requires one. A bad token is refused with
// a message and the form stays; a good one gets in; the overview shows the node's id (the one
// /v1/health gives) and live charts drawn from /metrics. The token survives a reload (it is in
// sessionStorage) and logging out forgets it.

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
  const dir = tempDir('login');
  const s = jwtSecret(dir);
  secret = s.secret;
  node = await ConcordNode.start({ dataDir: `${dir}/data`, args: ['--jwt-secret-file', s.file] });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await cleanup();
});

/** Pixels of the chart's canvas close to the requests series' colour (#2563eb). */
async function seriesPixels(page, chart) {
  return page.evaluate((sel) => {
    const c = document.querySelector(`${sel} canvas`);
    if (!c || !c.width || !c.height) return 0;
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) {
      const [r, g, b, a] = [d[i], d[i + 1], d[i + 2], d[i + 3]];
      if (a > 200 && Math.abs(r - 37) < 40 && Math.abs(g - 99) < 40 && Math.abs(b - 235) < 40) n++;
    }
    return n;
  }, chart);
}

test('a bad token is refused, a good one logs in and the overview shows the node and live charts', { timeout: 120000 }, async () => {
  const { page, problems } = await openPage(browser);
  await gotoConsole(page, node);

  // No token: the node answers /v1/me with 401, so the console asks for one.
  const input = page.locator(t('login-token'));
  await input.waitFor();
  assert.equal(await input.getAttribute('type'), 'password', 'the token is typed into a password field');
  assert.equal(await page.locator(t('nav-overview')).count(), 0, 'nothing but the form before logging in');
  await screenshot(page, 'login');

  // A token signed with another secret: refused, with the node's reason, and the form stays.
  const forged = mintToken('not-the-secret-of-this-node-0123456789', { sub: 'mallory', access: 'admin' });
  await input.fill(forged);
  await page.locator(t('login-submit')).click();
  await textMatches(page.locator(t('login-error')), /refused/i, 'the login error');
  assert.equal(await page.locator(t('login-token')).count(), 1, 'still on the login form');
  assert.equal(await page.locator(t('nav-overview')).count(), 0);
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, 'a refused token is not kept');

  // A static-looking token the node does not know: refused too.
  await input.fill('this-is-not-a-valid-token');
  await page.locator(t('login-submit')).click();
  await until('the error for the unknown token', async () => (await page.locator(t('login-error')).count()) === 1);
  assert.equal(await page.locator(t('nav-overview')).count(), 0);

  // A good token: in, as its subject, with its access level.
  const token = mintToken(secret, { sub: 'ops', access: 'admin' });
  await login(page, token);
  await textMatches(page.locator(t('whoami')), /ops/, 'the user name');
  await textMatches(page.locator(t('whoami-access')), /^admin$/, 'the access level');
  assert.equal(await page.locator(t('login-error')).count(), 0);

  // The overview: this node's id, as /v1/health says, and its uptime.
  const health = await (await fetch(`${node.url}/v1/health`)).json();
  await textMatches(page.locator(t('overview-node-id')), new RegExp(`^${health.node_id}$`), 'the node id');
  await textMatches(page.locator(t('overview-version')), new RegExp(`^${health.version.replace(/\./g, '\\.')}$`), 'the version');
  await textMatches(page.locator(t('overview-uptime')), /\d+ s|min|h/, 'the uptime');
  await textMatches(page.locator(t('overview-store')), /B$/, 'the store size');

  // The requests chart is drawn: a canvas with the series line on it (it needs two scrapes).
  await page.locator(`${t('chart-requests')} canvas`).first().waitFor();
  await until('the requests/s line drawn on the chart', async () => (await seriesPixels(page, t('chart-requests'))) > 20, 30000);
  await textMatches(page.locator(t('overview-rate')), /\/s$/, 'the request rate');
  await screenshot(page, 'overview');

  // A reload keeps the session (sessionStorage), logging out forgets it.
  await page.reload();
  await page.locator(t('nav-overview')).waitFor();
  await textMatches(page.locator(t('whoami')), /ops/, 'still logged in after a reload');
  await page.locator(t('logout')).click();
  await page.locator(t('login-token')).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, 'logging out removes the token');

  // Refused logins and the first /v1/me without a token answer 401.
  assertClean(problems, { allowHttp: [401] });
  await page.context().close();
});

test('an expired token is refused with the node\'s reason', { timeout: 60000 }, async () => {
  const { page, problems } = await openPage(browser);
  await gotoConsole(page, node);
  const expired = mintToken(secret, { sub: 'ops', access: 'admin', exp: Math.floor(Date.now() / 1000) - 3600 });
  await page.locator(t('login-token')).fill(expired);
  await page.locator(t('login-submit')).click();
  const msg = await textMatches(page.locator(t('login-error')), /refused/i, 'the login error');
  assert.match(msg, /expir|exp/i, 'the message carries the node\'s detail');
  assert.equal(await page.locator(t('nav-overview')).count(), 0);
  assertClean(problems, { allowHttp: [401] });
  await page.context().close();
});
