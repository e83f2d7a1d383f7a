// Shared helpers of the console's browser tests: real `concord` nodes (temp data dirs, free
// ports, killed at the end), signed tokens, a REST client, headless Chromium with every CSP
// violation, page error and console error recorded, and polling with a deadline (never sleeps).

import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

export const BIN = process.env.CONCORD_BIN;
if (!BIN) throw new Error('CONCORD_BIN is not set: run these tests through `cargo test --test console` (or set it to a concord binary)');

/** The console's source directory (ui/ at the repository root). */
export const UI_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../ui');

/** Waits until `check()` is truthy (returning its value), or fails naming `what`. */
export async function until(what, check, ms = 20000) {
  const deadline = Date.now() + ms;
  let last;
  for (let pause = 20; ; pause = Math.min(pause * 2, 250)) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for: ${what}${last ? ` (last error: ${last.message})` : ''}`);
    await new Promise((r) => setTimeout(r, pause));
  }
}

export async function freePort() {
  const srv = net.createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

const tempDirs = [];
export function tempDir(name) {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), `concord-console-${name}-`));
  tempDirs.push(d);
  return d;
}

/** An HS256 secret file (48 random bytes as hex, no newline) and its bytes. */
export function jwtSecret(dir) {
  const secret = crypto.randomBytes(24).toString('hex');
  const file = path.join(dir, 'jwt.secret');
  fs.writeFileSync(file, secret);
  return { file, secret };
}

/** A signed token (HS256 JWT) with `exp` an hour from now unless given. */
export function mintToken(secret, claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const body = b64({ exp: Math.floor(Date.now() / 1000) + 3600, ...claims });
  const sig = crypto.createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

const running = new Set();

/** A real `concord serve` process. */
export class ConcordNode {
  constructor({ dataDir, port, args = [] }) {
    this.dataDir = dataDir;
    this.port = port;
    this.args = args;
    this.proc = null;
    this.log = '';
  }

  static async start({ dataDir, port, args = [] } = {}) {
    const n = new ConcordNode({ dataDir: dataDir ?? tempDir('node'), port: port ?? (await freePort()), args });
    // A free port is only free until someone else binds it: a port of our choosing that was
    // taken meanwhile gets another try on a new one (a port the test asked for does not).
    for (let attempt = 1; ; attempt++) {
      try {
        await n.spawn();
        return n;
      } catch (e) {
        if (port !== undefined || attempt >= 3 || !/address already in use|AddrInUse/i.test(e.message)) throw e;
        n.port = await freePort();
      }
    }
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  get address() {
    return `127.0.0.1:${this.port}`;
  }

  async spawn() {
    const env = { ...process.env };
    for (const k of Object.keys(env)) if (k.startsWith('CONCORD_') || k === 'RUST_LOG') delete env[k];
    const args = ['serve', '--data-dir', this.dataDir, '--listen', this.address, ...this.args];
    // Console development: serve ui/ from disk when asked (the harness runs the built-in copy).
    if (process.env.CONCORD_CONSOLE_DIR) args.push('--console-dir', process.env.CONCORD_CONSOLE_DIR);
    this.log = '';
    const proc = spawn(BIN, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    running.add(this);
    const append = (chunk) => {
      this.log = (this.log + chunk.toString()).slice(-65536);
    };
    proc.stdout.on('data', append);
    proc.stderr.on('data', append);
    this.exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
    this.exited.then(() => {
      if (this.proc === proc) this.proc = null;
    });
    let dead = null;
    this.exited.then((e) => {
      dead = e;
    });
    await until(`node ${this.address} to listen`, () => {
      if (dead) throw new Error(`concord exited (${JSON.stringify(dead)}):\n${this.log}`);
      return this.log.includes('concord listening');
    }, 30000).catch((e) => {
      throw new Error(`${e.message}\n--- node log ---\n${this.log}`);
    });
    await until(`node ${this.address} to answer /v1/health`, async () => (await fetch(`${this.url}/v1/health`)).ok, 30000);
  }

  async kill(signal = 'SIGKILL') {
    if (!this.proc) return;
    const exited = this.exited;
    this.proc.kill(signal);
    await exited;
    running.delete(this);
  }

  async stop() {
    if (!this.proc) return;
    const exited = this.exited;
    this.proc.kill('SIGTERM');
    const t = setTimeout(() => this.proc?.kill('SIGKILL'), 10000);
    await exited;
    clearTimeout(t);
    running.delete(this);
  }

  /** A REST client for this node with `token` (or none). */
  rest(token) {
    return rest(this.url, token);
  }
}

/** Stops every node the tests started and removes their temp directories. */
export async function cleanup() {
  await Promise.all([...running].map((n) => n.kill('SIGKILL')));
  for (const d of tempDirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
}

/** `call(method, path, body?, headers?)` → {status, headers, json, text}. */
export function rest(base, token) {
  return async (method, p, body, headers = {}) => {
    const h = { ...headers };
    if (token) h.authorization = `Bearer ${token}`;
    if (body !== undefined) h['content-type'] = 'application/json';
    const r = await fetch(base + p, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await r.text();
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: r.status, headers: r.headers, json, text };
  };
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_BIN ?? '/usr/bin/chromium',
    headless: true,
    args: ['--disable-gpu', '--disable-quic', '--disable-sync', '--disable-background-networking'],
  });
}

/**
 * A page in a fresh context (its own sessionStorage) recording CSP violations, page errors and
 * console errors into `problems`.
 */
export async function openPage(browser, { width = 1280, height = 800 } = {}) {
  const context = await browser.newContext({ viewport: { width, height } });
  const page = await context.newPage();
  const problems = { csp: [], errors: [] };
  await page.exposeFunction('__reportCspViolation', (v) => problems.csp.push(v));
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__reportCspViolation(`${e.violatedDirective} blocked ${e.blockedURI || '(inline)'} at ${e.sourceFile}:${e.lineNumber}`);
    });
  });
  page.on('pageerror', (e) => problems.errors.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.errors.push(`console error: ${m.text()} (${m.location()?.url ?? ''})`);
  });
  page.setDefaultTimeout(20000);
  return { context, page, problems };
}

/**
 * No CSP violation, no page error, no console error. Failed responses the test caused on
 * purpose (e.g. a 412 for a stale edit) are logged by Chromium as "Failed to load resource"
 * console errors: `allowHttp` lists those statuses.
 */
export function assertClean(problems, { allowHttp = [] } = {}) {
  assert.deepEqual(problems.csp, [], 'no Content-Security-Policy violation');
  const unexpected = problems.errors.filter((e) => {
    const m = /Failed to load resource: the server responded with a status of (\d{3})/.exec(e);
    return !(m && allowHttp.includes(Number(m[1])));
  });
  assert.deepEqual(unexpected, [], 'no page error and no console error');
}

/** `[data-test=name]` (with more selector text appended when given). */
export const t = (name, more = '') => `[data-test="${name}"]${more}`;

/** The console at `hash` on `node`. */
export async function gotoConsole(page, node, hash = '#/overview') {
  const resp = await page.goto(`${node.url}/ui/${hash}`);
  // null: only the hash changed (the console was open already), which routes without a load.
  if (resp) assert.equal(resp.status(), 200, 'the console page loads');
  return resp;
}

/** Logs in through the form with `token`, then waits for the navigation. */
export async function login(page, token) {
  await page.locator(t('login-token')).fill(token);
  await page.locator(t('login-submit')).click();
  await page.locator(t('nav-overview')).waitFor();
}

/** Saves a screenshot when CONCORD_UI_SCREENSHOTS names a directory (for the README). */
export async function screenshot(page, name) {
  const dir = process.env.CONCORD_UI_SCREENSHOTS;
  if (!dir) return;
  fs.mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: path.join(dir, `${name}.png`), fullPage: true });
}

/** Waits until the locator's text matches `re`, returning the text. */
export async function textMatches(locator, re, what = String(re), ms = 20000) {
  return until(`${what}`, async () => {
    const s = await locator.textContent({ timeout: 1000 });
    return s !== null && re.test(s) ? s : false;
  }, ms);
}

/** Waits until an input's or textarea's value matches `re`, returning the value. */
export async function valueMatches(locator, re, what = String(re), ms = 20000) {
  return until(`${what}`, async () => {
    const s = await locator.inputValue({ timeout: 1000 });
    return re.test(s) ? s : false;
  }, ms);
}
