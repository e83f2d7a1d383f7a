// The console's shared state and the base class of its pages. Pages import `app` from here;
// app.js owns the shell (login, navigation, messages) and the router.

import { html, nothing } from '../vendor/lit-html/lit-html.js';
import { eventStream } from './api.js';

let renderQueued = false;
let nextMessageId = 1;

export const app = {
  /** What GET /v1/me said: {name, access, collections, scoped, tokens_required}. */
  me: null,
  /** The page shown (a Page), or null. */
  page: null,
  /** Error messages shown in the alert area: {id, text, count}. */
  messages: [],
  /** A short confirmation ("Saved"), cleared after a few seconds. */
  flashText: '',
  flashTimer: 0,
  /** Set by app.js: renders everything. */
  renderNow: () => {},

  get canWrite() {
    return this.me?.access === 'write' || this.me?.access === 'admin';
  },
  get isAdmin() {
    return this.me?.access === 'admin';
  },

  /** Re-render soon (once per microtask however often it is asked). */
  update() {
    if (renderQueued) return;
    renderQueued = true;
    queueMicrotask(() => {
      renderQueued = false;
      this.renderNow();
    });
  },

  /** Shows an error (an ApiError, an Error or a string) in the alert area. */
  notify(err) {
    const text = typeof err === 'string' ? err : err?.message || String(err);
    const last = this.messages[this.messages.length - 1];
    if (last && last.text === text) last.count++;
    else this.messages.push({ id: nextMessageId++, text, count: 1 });
    if (this.messages.length > 5) this.messages.splice(0, this.messages.length - 5);
    this.update();
  },

  dismiss(id) {
    this.messages = this.messages.filter((m) => m.id !== id);
    this.update();
  },

  flash(text) {
    this.flashText = text;
    clearTimeout(this.flashTimer);
    this.flashTimer = setTimeout(() => {
      this.flashText = '';
      this.update();
    }, 4000);
    this.update();
  },

  go(hash) {
    if (location.hash === hash) return;
    location.hash = hash;
  },
};

/** `#/c/<collection>[/<id>[/history]]` with each part encoded. */
export function hashFor(...parts) {
  return `#/${parts.map((p) => encodeURIComponent(p)).join('/')}`;
}

/**
 * A page: start() when shown, stop() when left (its timers and streams end with it), view()
 * for its markup.
 */
export class Page {
  constructor(params = []) {
    this.params = params;
    this.alive = true;
    this.timers = new Set();
    this.streams = new Set();
  }

  title() {
    return 'Concord';
  }

  start() {}

  stop() {
    this.alive = false;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const s of this.streams) s.close();
    this.streams.clear();
  }

  update() {
    if (this.alive) app.update();
  }

  /**
   * Runs `fn` now and then every `ms` after it finishes, until the page is left or `fn` resolves
   * to `false` (an answer that asking again would only repeat, such as a 403).
   */
  every(ms, fn) {
    const loop = async () => {
      if (!this.alive) return;
      let more = true;
      try {
        more = (await fn()) !== false;
      } catch (e) {
        console.warn(e);
      }
      if (!this.alive || !more) return;
      const t = setTimeout(() => {
        this.timers.delete(t);
        loop();
      }, ms);
      this.timers.add(t);
    };
    loop();
  }

  later(ms, fn) {
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (this.alive) fn();
    }, ms);
    this.timers.add(t);
  }

  /** An event stream (sent with the token) closed when the page is left. */
  eventSource(path) {
    const es = eventStream(path);
    this.streams.add(es);
    return es;
  }

  closeStream(es) {
    if (!es) return;
    es.close();
    this.streams.delete(es);
  }

  view() {
    return nothing;
  }
}

/** An API failure shown inside a page (the page could not load what it shows). */
export function problem(err, test = 'page-error') {
  if (!err) return nothing;
  return html`<div class="problem" role="alert" data-test=${test}>
    <strong>${err.status ? `${err.status} ${err.title}` : err.title || 'Error'}</strong>
    <span>${err.detail || err.message || String(err)}</span>
  </div>`;
}

/** A loading placeholder. */
export const loading = (what = 'Loading…') => html`<p class="muted" aria-busy="true">${what}</p>`;
