// The console's entry point: who the user is (GET /v1/me, a login form when the node wants a
// token), the shell (navigation, messages) and hash routing to the pages.

import { html, render, nothing } from '../vendor/lit-html/lit-html.js';
import { api, getToken, setToken, setUnauthorizedHandler } from './api.js';
import { app, Page } from './core.js';
import { OverviewPage } from './pages/overview.js';
import { CollectionsPage, CollectionPage } from './pages/collections.js';
import { DocumentPage } from './pages/document.js';
import { HistoryPage } from './pages/history.js';
import { LivePage } from './pages/live.js';
import { QueryPage } from './pages/query.js';
import { ClusterPage } from './pages/cluster.js';
import { ClientsPage } from './pages/clients.js';

// Pages in the navigation; a third element names the access a page needs (its link is hidden
// from other tokens; the page itself still shows the node's 403 when opened by its URL).
const NAV = [
  ['overview', 'Overview'],
  ['collections', 'Collections'],
  ['live', 'Live'],
  ['query', 'Query'],
  ['cluster', 'Cluster', 'admin'],
  ['clients', 'Clients'],
];

const shell = {
  phase: 'boot', // boot | login | failed | ready
  loginError: '',
  loginBusy: false,
  bootError: null,
  section: '',
  focusLogin: false,
};

class NotFoundPage extends Page {
  title() {
    return 'Not found';
  }
  view() {
    return html`<h1>Not found</h1>
      <p>The console has no page at <code>${location.hash}</code>. <a href="#/overview">Go to the overview</a>.</p>`;
  }
}

function parseHash() {
  const path = location.hash.replace(/^#\/?/, '').split('?')[0];
  return path
    .split('/')
    .filter((p) => p !== '')
    .map((p) => {
      try {
        return decodeURIComponent(p);
      } catch {
        return p;
      }
    });
}

function pageFor(parts) {
  const [head, ...rest] = parts;
  switch (head) {
    case 'overview':
      return rest.length === 0 ? ['overview', new OverviewPage()] : null;
    case 'collections':
      return rest.length === 0 ? ['collections', new CollectionsPage()] : null;
    case 'c':
      if (rest.length === 1) return ['collections', new CollectionPage(rest)];
      if (rest.length === 2) return ['collections', new DocumentPage(rest)];
      if (rest.length === 3 && rest[2] === 'history') return ['collections', new HistoryPage(rest)];
      return null;
    case 'live':
      return rest.length <= 1 ? ['live', new LivePage(rest)] : null;
    case 'query':
      return rest.length <= 1 ? ['query', new QueryPage(rest)] : null;
    case 'cluster':
      return rest.length === 0 ? ['cluster', new ClusterPage()] : null;
    case 'clients':
      return rest.length === 0 ? ['clients', new ClientsPage()] : null;
    default:
      return null;
  }
}

function route() {
  if (shell.phase !== 'ready') return;
  const parts = parseHash();
  if (parts.length === 0) {
    location.replace('#/overview');
    return;
  }
  app.page?.stop();
  const found = pageFor(parts);
  const [section, page] = found || ['', new NotFoundPage(parts)];
  shell.section = section;
  app.page = page;
  document.title = `${page.title()} · Concord`;
  page.start();
  app.update();
}

function ready(me) {
  app.me = me;
  shell.phase = 'ready';
  shell.loginError = '';
  route();
  app.update();
}

function showLogin(message = '') {
  app.page?.stop();
  app.page = null;
  app.me = null;
  shell.phase = 'login';
  shell.loginError = message;
  shell.focusLogin = true;
  app.update();
}

async function boot() {
  shell.phase = 'boot';
  app.update();
  let note = '';
  const stored = getToken();
  if (stored) {
    try {
      const r = await api('/v1/me', { token: stored });
      return ready(r.data);
    } catch (e) {
      if (e.status !== 401) return bootFailed(e);
      setToken(null);
      note = `Your saved token is no longer accepted (${e.detail}). Log in again.`;
    }
  }
  try {
    const r = await api('/v1/me', { token: null });
    ready(r.data);
  } catch (e) {
    if (e.status === 401) showLogin(note);
    else bootFailed(e);
  }
}

function bootFailed(e) {
  shell.phase = 'failed';
  shell.bootError = e;
  app.update();
}

async function login(ev) {
  ev.preventDefault();
  const input = ev.currentTarget.querySelector('input[name=token]');
  const token = input.value.trim();
  if (!token) {
    shell.loginError = 'Enter an API token.';
    app.update();
    return;
  }
  shell.loginBusy = true;
  shell.loginError = '';
  app.update();
  try {
    const r = await api('/v1/me', { token });
    setToken(token);
    input.value = '';
    ready(r.data);
  } catch (e) {
    shell.loginError =
      e.status === 401 ? `The node refused this token: ${e.detail}` : `Could not log in: ${e.message}`;
    shell.focusLogin = true;
  } finally {
    shell.loginBusy = false;
    app.update();
  }
}

function logout() {
  setToken(null);
  app.messages = [];
  app.page?.stop();
  app.page = null;
  app.me = null;
  boot();
}

setUnauthorizedHandler((err) => {
  if (shell.phase !== 'ready') return;
  setToken(null);
  showLogin(`The node no longer accepts your token (${err.detail}). Log in again.`);
});

function loginView() {
  return html`<main class="login" id="main">
    <form class="card login-card" @submit=${login} novalidate>
      <h1><img src="favicon.svg" alt="" width="28" height="28"> Concord console</h1>
      <p>This node needs an API token: a static token from its configuration, or a signed token (JWT).</p>
      <label for="login-token">API token</label>
      <input id="login-token" name="token" type="password" autocomplete="off" spellcheck="false"
        data-test="login-token" ?disabled=${shell.loginBusy}>
      <button type="submit" class="primary" data-test="login-submit" ?disabled=${shell.loginBusy}>
        ${shell.loginBusy ? 'Checking…' : 'Log in'}</button>
      ${shell.loginError
        ? html`<p class="problem" role="alert" data-test="login-error">${shell.loginError}</p>`
        : nothing}
      <p class="muted small">The token stays in this browser tab (sessionStorage) and is sent only to this node.</p>
    </form>
  </main>`;
}

function whoView() {
  const me = app.me;
  const limits = [];
  if (me.collections) limits.push(`collections: ${me.collections.join(', ') || 'none'}`);
  if (me.scoped) limits.push('scoped documents');
  return html`<div class="who" data-test="whoami">
    <span class="who-name" title=${limits.join('; ')}>${me.name}</span>
    <span class="badge badge-${me.access}" data-test="whoami-access">${me.access}</span>
    ${me.scoped ? html`<span class="badge" data-test="whoami-scoped">scoped</span>` : nothing}
    ${getToken()
      ? html`<button type="button" class="link" data-test="logout" @click=${logout}>Log out</button>`
      : nothing}
  </div>`;
}

function messagesView() {
  return html`<div class="alerts" role="alert" aria-live="assertive">
    ${app.messages.map(
      (m) => html`<div class="alert" data-test="error-banner">
        <span class="alert-text">${m.text}${m.count > 1 ? html` <span class="muted">(×${m.count})</span>` : nothing}</span>
        <button type="button" class="icon" data-test="error-dismiss" aria-label="Dismiss this message"
          @click=${() => app.dismiss(m.id)}>×</button>
      </div>`,
    )}
  </div>
  <div class="flash" role="status" aria-live="polite">
    ${app.flashText ? html`<span data-test="flash">${app.flashText}</span>` : nothing}
  </div>`;
}

function shellView() {
  return html`<header class="top">
      <a class="brand" href="#/overview"><img src="favicon.svg" alt="" width="22" height="22"><span>Concord</span></a>
      <nav id="main-nav" aria-label="Main">
        <ul>
          ${NAV.filter(([, , needs]) => needs !== 'admin' || app.isAdmin).map(
            ([id, label]) => html`<li><a href="#/${id}" data-test="nav-${id}"
              aria-current=${shell.section === id ? 'page' : 'false'}>${label}</a></li>`,
          )}
        </ul>
      </nav>
      ${whoView()}
    </header>
    ${messagesView()}
    <main id="main" class="page">${app.page ? app.page.view() : nothing}</main>`;
}

function view() {
  switch (shell.phase) {
    case 'login':
      return html`${messagesView()}${loginView()}`;
    case 'failed':
      return html`<main class="login" id="main"><div class="card login-card">
        <h1>Concord console</h1>
        <div class="problem" role="alert" data-test="boot-error">${shell.bootError?.status
          ? `The node refused the console: ${shell.bootError.message}`
          : `Could not reach the node: ${shell.bootError?.message}`}</div>
        <button type="button" class="primary" @click=${boot}>Try again</button>
      </div></main>`;
    case 'ready':
      return shellView();
    default:
      return html`<p class="boot muted">Connecting to the node…</p>`;
  }
}

const root = document.getElementById('app');
root.replaceChildren();
app.renderNow = () => {
  render(view(), root);
  if (shell.focusLogin) {
    shell.focusLogin = false;
    document.getElementById('login-token')?.focus();
  }
};

window.addEventListener('hashchange', route);
boot();
