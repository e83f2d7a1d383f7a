// Live: the node's changes feed tailed over Server-Sent Events, newest first, the last 200 rows,
// filtered by collection.

import { html, nothing } from '../../vendor/lit-html/lit-html.js';
import { api, qs } from '../api.js';
import { app, Page, problem, hashFor } from '../core.js';
import { TokenStream } from '../sse.js';
import { short } from '../util.js';

const MAX_ROWS = 200;

export class LivePage extends Page {
  title() {
    return 'Live changes';
  }

  start() {
    this.collections = null;
    this.error = null;
    this.rows = [];
    this.state = 'connecting';
    this.es = null;
    this.paused = false;
    this.collection = this.params[0] || app.me?.collections?.[0] || '';
    this.loadCollections();
    // A token limited to some collections (or scoped to some documents) must name one.
    if (this.collection || this.allAllowed) this.connect();
  }

  get allAllowed() {
    return !app.me?.collections && !app.me?.scoped;
  }

  async loadCollections() {
    try {
      const r = await api('/v1/collections');
      this.collections = r.data.collections.map((c) => c.name);
    } catch (e) {
      this.collections = [];
      this.error = e;
    }
    if (!this.alive) return;
    if (!this.collection && !this.allAllowed) {
      this.collection = app.me?.collections?.[0] || this.collections[0] || '';
      this.connect();
    }
    this.update();
  }

  connect() {
    this.closeStream(this.es);
    this.es = null;
    if (!this.collection && !this.allAllowed) {
      this.state = 'closed';
      this.update();
      return;
    }
    const url = `/v1/changes${qs({ feed: 'sse', since: 'now', collection: this.collection })}`;
    const es = this.eventSource(url);
    this.es = es;
    this.state = 'connecting';
    es.addEventListener('open', () => {
      if (this.es !== es) return;
      this.state = 'open';
      this.update();
    });
    es.addEventListener('error', () => {
      if (this.es !== es) return;
      this.state = es.readyState === TokenStream.CLOSED ? 'closed' : 'reconnecting';
      this.update();
    });
    es.addEventListener('change', (ev) => {
      if (this.es !== es || this.paused) return;
      let row;
      try {
        row = JSON.parse(ev.data);
      } catch {
        return;
      }
      row.received = new Date();
      this.rows.unshift(row);
      if (this.rows.length > MAX_ROWS) this.rows.length = MAX_ROWS;
      this.update();
    });
    this.update();
  }

  choose(ev) {
    this.collection = ev.target.value;
    this.rows = [];
    this.connect();
  }

  view() {
    const names = this.collections || [];
    const options = this.collection && !names.includes(this.collection) ? [this.collection, ...names] : names;
    const label = { connecting: 'connecting…', open: 'live', reconnecting: 'reconnecting…', closed: 'not connected' }[this.state];
    return html`<h1>Live changes</h1>
      <p class="muted">Every change this node commits or receives (REST, sync, WebSocket clients, peers), as it happens: the last ${MAX_ROWS}, newest first.</p>
      ${problem(this.error)}
      <div class="toolbar">
        <label for="live-collection">Collection</label>
        <select id="live-collection" data-test="live-collection" @change=${(e) => this.choose(e)}>
          ${this.allAllowed ? html`<option value="" ?selected=${!this.collection}>All collections</option>` : nothing}
          ${options.map((n) => html`<option value=${n} ?selected=${n === this.collection}>${n}</option>`)}
        </select>
        <span class=${`pill pill-${this.state}`} data-test="live-status" data-state=${this.state}>${label}</span>
        <button type="button" data-test="live-pause" aria-pressed=${this.paused ? 'true' : 'false'}
          @click=${() => { this.paused = !this.paused; this.update(); }}>${this.paused ? 'Resume' : 'Pause'}</button>
        <button type="button" data-test="live-clear" @click=${() => { this.rows = []; this.update(); }}>Clear</button>
      </div>
      ${!this.collection && !this.allAllowed && this.collections ? html`<p class="muted">Your token may use no collection.</p>` : nothing}
      <div class="table-wrap"><table data-test="live-table">
        <caption class="sr-only">Changes, newest first</caption>
        <thead><tr><th scope="col">Received</th><th scope="col">Cursor</th><th scope="col">Collection</th><th scope="col">Document</th><th scope="col">Version</th><th scope="col">State</th></tr></thead>
        <tbody aria-live="polite">
          ${this.rows.length
            ? this.rows.map(
                (r) => html`<tr data-test="live-row" data-collection=${r.collection} data-id=${r.id} data-version=${r.version}>
                  <td>${r.received.toLocaleTimeString()}</td>
                  <td class="num">${r.cursor}</td>
                  <td><a href=${hashFor('c', r.collection)}>${r.collection}</a></td>
                  <td><a href=${hashFor('c', r.collection, r.id)} data-test="live-link">${r.id}</a></td>
                  <td><code title=${r.version}>${short(r.version, 8)}</code></td>
                  <td>${r.deleted ? html`<span class="badge badge-bad">deleted</span>` : 'live'}</td>
                </tr>`,
              )
            : html`<tr><td colspan="6" class="muted">${this.state === 'open' ? 'Waiting for changes…' : 'No changes yet.'}</td></tr>`}
        </tbody>
      </table></div>`;
  }
}
