// One document: its JSON (an editor for writers), saved with If-Match so that a stale edit shows
// the conflict instead of overwriting; CRDT operations (counters, text splices, any op); delete;
// and live updates from the document's event stream.

import { html, nothing } from '../../vendor/lit-html/lit-html.js';
import { live } from '../../vendor/lit-html/directives/live.js';
import { api, docPath } from '../api.js';
import { app, Page, problem, loading, hashFor } from '../core.js';
import { TokenStream } from '../sse.js';
import { lineDiff, foldDiff } from '../diff.js';
import { canonical, codePoints, inexactIntegers, leaves, parseJson, pretty, short } from '../util.js';

export class DocumentPage extends Page {
  title() {
    return `${this.params[1]} · ${this.params[0]}`;
  }

  start() {
    [this.c, this.id] = this.params;
    this.status = 'loading'; // loading | ok | missing | error
    this.loadError = null;
    this.body = null;
    this.etag = '';
    this.text = '';
    this.baseText = '';
    this.parseError = '';
    this.saving = false;
    this.pending = null; // an event that arrived while saving
    this.conflict = null;
    this.serverChange = null;
    this.gone = null; // 'deleted' | 'missing' once the server says so
    this.inexact = []; // integers of the stored document a browser cannot hold exactly
    this.liveNote = '';
    this.confirmDelete = false;
    this.streamState = 'off';
    this.es = null;
    this.incBy = {};
    this.splice = { path: '', index: '0', del: '0', insert: '' };
    this.opsText = '';
    this.opsBusy = false;
    this.load();
  }

  get dirty() {
    return this.text !== this.baseText;
  }

  /** The document as stored, read as text so integers a browser would round can be found. */
  async fetchDoc() {
    const r = await api(docPath(this.c, this.id), { as: 'text', headers: { Accept: 'application/json' } });
    return { etag: r.etag, body: JSON.parse(r.data), inexact: inexactIntegers(r.data) };
  }

  async load() {
    try {
      const r = await this.fetchDoc();
      if (!this.alive) return;
      this.applyServer(r.etag, r.body, r.inexact);
      this.status = 'ok';
      this.openStream();
    } catch (e) {
      this.status = e.status === 404 ? 'missing' : 'error';
      this.loadError = e;
    }
    this.update();
  }

  openStream() {
    if (this.es) return;
    const es = this.eventSource(docPath(this.c, this.id, '/events?include_body=true'));
    this.es = es;
    this.streamState = 'connecting';
    es.addEventListener('open', () => {
      this.streamState = 'open';
      this.update();
    });
    es.addEventListener('error', () => {
      this.streamState = es.readyState === TokenStream.CLOSED ? 'closed' : 'reconnecting';
      this.update();
    });
    es.addEventListener('change', (ev) => {
      let d;
      try {
        d = JSON.parse(ev.data);
      } catch {
        return;
      }
      d.inexact = inexactIntegers(ev.data);
      this.onServerState(d);
    });
  }

  /** The server's state of the document (an event, or a fresh read): {version, deleted, body, exists}. */
  onServerState(d) {
    if (!this.alive) return;
    if (this.saving) {
      this.pending = d;
      return;
    }
    if (d.exists === false || d.deleted) {
      this.gone = d.deleted ? 'deleted' : 'missing';
      if (this.conflict) this.conflict = { ...this.conflict, serverBody: null, serverEtag: '', serverGone: this.gone };
      this.serverChange = null;
      this.update();
      return;
    }
    this.gone = null;
    if (d.version === this.etag) {
      this.update();
      return;
    }
    if (d.body === undefined) {
      this.refresh();
      return;
    }
    if (this.conflict) {
      this.conflict = { ...this.conflict, serverBody: d.body, serverEtag: d.version, serverGone: null, serverInexact: d.inexact };
    } else if (this.dirty && app.canWrite) {
      this.serverChange = { version: d.version, body: d.body, inexact: d.inexact };
    } else {
      this.applyServer(d.version, d.body, d.inexact);
      this.liveNote = `Updated from the server at ${new Date().toLocaleTimeString()}`;
    }
    this.update();
  }

  applyServer(version, body, inexact = []) {
    this.etag = version;
    this.body = body;
    this.inexact = inexact || [];
    this.text = pretty(body);
    this.baseText = this.text;
    this.parseError = '';
    this.serverChange = null;
    this.gone = null;
  }

  async refresh() {
    try {
      const r = await this.fetchDoc();
      this.onServerState({ version: r.etag, deleted: false, body: r.body, inexact: r.inexact });
    } catch (e) {
      if (e.status === 404) this.onServerState({ version: '', deleted: true });
      else app.notify(e);
    }
  }

  edit(ev) {
    this.text = ev.target.value;
    this.parseError = parseJson(this.text, { object: true, what: 'The document' }).error || '';
    this.liveNote = '';
    this.update();
  }

  revert() {
    this.text = this.baseText;
    this.parseError = '';
    this.update();
  }

  async save() {
    const parsed = parseJson(this.text, { object: true, what: 'The document' });
    if (parsed.error) {
      this.parseError = parsed.error;
      this.update();
      return;
    }
    this.saving = true;
    this.update();
    try {
      const headers = this.gone ? { 'If-None-Match': '*' } : { 'If-Match': `"${this.etag}"` };
      const r = await api(docPath(this.c, this.id), { method: 'PUT', body: parsed.value, headers });
      this.applyServer(r.data.version, parsed.value);
      app.flash(r.data.changed ? 'Saved' : 'Saved (nothing changed)');
    } catch (e) {
      if (e.status === 412) await this.openConflict(this.text);
      else app.notify(e);
    } finally {
      this.saving = false;
      const p = this.pending;
      this.pending = null;
      if (p) this.onServerState(p);
      this.update();
    }
  }

  /** A stale save: fetch the current version fresh and show it beside the user's edit. */
  async openConflict(mine) {
    try {
      const r = await this.fetchDoc();
      this.conflict = { mine, serverBody: r.body, serverEtag: r.etag, serverGone: null, serverInexact: r.inexact };
    } catch (e) {
      if (e.status === 404) this.conflict = { mine, serverBody: null, serverEtag: '', serverGone: 'deleted' };
      else app.notify(e);
    }
    this.serverChange = null;
    this.update();
  }

  conflictReload() {
    const c = this.conflict;
    this.conflict = null;
    if (c.serverGone) {
      this.gone = c.serverGone;
      this.text = this.baseText;
    } else {
      this.applyServer(c.serverEtag, c.serverBody, c.serverInexact);
    }
    app.flash('Loaded the current version; your edit was discarded');
    this.update();
  }

  async conflictOverwrite() {
    const c = this.conflict;
    const parsed = parseJson(c.mine, { object: true, what: 'Your edit' });
    if (parsed.error) {
      app.notify(parsed.error);
      return;
    }
    this.saving = true;
    this.update();
    try {
      const headers = c.serverGone ? { 'If-None-Match': '*' } : { 'If-Match': `"${c.serverEtag}"` };
      const r = await api(docPath(this.c, this.id), { method: 'PUT', body: parsed.value, headers });
      this.conflict = null;
      this.applyServer(r.data.version, parsed.value);
      app.flash('Saved your edit over the version shown');
    } catch (e) {
      if (e.status === 412) {
        app.notify('The document changed again while you were deciding: review the new version.');
        await this.openConflict(c.mine);
      } else app.notify(e);
    } finally {
      this.saving = false;
      const p = this.pending;
      this.pending = null;
      if (p) this.onServerState(p);
      this.update();
    }
  }

  async runOps(ops, done) {
    this.opsBusy = true;
    this.update();
    try {
      await api(docPath(this.c, this.id, '/ops'), { method: 'POST', body: { ops } });
      done?.();
      await this.refresh();
      app.flash('Applied');
    } catch (e) {
      app.notify(e);
    } finally {
      this.opsBusy = false;
      this.update();
    }
  }

  increment(ptr) {
    const by = Number(this.incBy[ptr] ?? 1);
    if (!Number.isInteger(by)) {
      app.notify('Increment by a whole number.');
      return;
    }
    this.runOps([{ op: 'increment', path: ptr, by }]);
  }

  makeCounter(ptr, value) {
    this.runOps([{ op: 'counter', path: ptr, value }]);
  }

  applySplice(ev) {
    ev.preventDefault();
    const s = this.splice;
    const path = s.path || this.stringLeaves()[0]?.ptr;
    const index = Number(s.index);
    const del = Number(s.del || 0);
    if (!path) return;
    if (!Number.isInteger(index) || index < 0 || !Number.isInteger(del) || del < 0) {
      app.notify('Position and delete count are whole numbers, 0 or more.');
      return;
    }
    this.runOps([{ op: 'splice', path, index, delete: del, insert: s.insert }], () => {
      this.splice = { ...this.splice, insert: '', del: '0' };
    });
  }

  applyRawOps(ev) {
    ev.preventDefault();
    const parsed = parseJson(this.opsText, { what: 'The operations' });
    if (parsed.error) {
      app.notify(parsed.error);
      return;
    }
    const v = parsed.value;
    const ops = Array.isArray(v) ? v : v && Array.isArray(v.ops) ? v.ops : v && typeof v === 'object' ? [v] : null;
    if (!ops || !ops.length) {
      app.notify('Give an operation object, an array of them, or {"ops": [...]}.');
      return;
    }
    this.runOps(ops);
  }

  async remove() {
    this.confirmDelete = false;
    try {
      await api(docPath(this.c, this.id), { method: 'DELETE', headers: { 'If-Match': `"${this.etag}"` } });
      this.gone = 'deleted';
      this.text = this.baseText;
      app.flash(`Deleted ${this.c}/${this.id}`);
    } catch (e) {
      if (e.status === 412) {
        app.notify('Not deleted: the document changed since you loaded it. Review the current version and try again.');
        await this.refresh();
      } else app.notify(e);
    }
    this.update();
  }

  stringLeaves() {
    return leaves(this.body).filter((l) => l.type === 'string');
  }

  // ---- views ----

  headerView() {
    return html`<nav class="crumbs" aria-label="Breadcrumb">
        <a href="#/collections">Collections</a> / <a href=${hashFor('c', this.c)}>${this.c}</a> / <span>${this.id}</span>
      </nav>
      <div class="title-row">
        <h1 class="doc-id">${this.id}</h1>
        <a href=${hashFor('c', this.c, this.id, 'history')} data-test="doc-history-link">History</a>
      </div>`;
  }

  metaView() {
    const streamLabel = { off: '', connecting: 'connecting…', open: 'live', reconnecting: 'reconnecting…', closed: 'not live' }[this.streamState];
    return html`<p class="meta">
      Version <code data-test="doc-version" data-version=${this.etag} title=${this.etag}>${short(this.etag)}</code>
      ${streamLabel ? html`<span class="pill pill-${this.streamState}" data-test="doc-live-state" data-state=${this.streamState}>${streamLabel}</span>` : nothing}
      ${this.liveNote ? html`<span class="muted" data-test="doc-live-note">${this.liveNote}</span>` : nothing}
    </p>`;
  }

  noticesView() {
    return html`${this.serverChange
      ? html`<div class="notice" role="status" data-test="server-changed">
          <span>This document changed on the server (version <code>${short(this.serverChange.version)}</code>) while you were editing.
          Your edit is kept; saving it now would be refused as stale.</span>
          <span class="actions">
            <button type="button" data-test="server-changed-reload" @click=${() => { this.applyServer(this.serverChange.version, this.serverChange.body, this.serverChange.inexact); this.update(); }}>Reload (discard my edit)</button>
            <button type="button" data-test="server-changed-dismiss" @click=${() => { this.serverChange = null; this.update(); }}>Keep editing</button>
          </span>
        </div>`
      : nothing}
      ${this.gone
        ? html`<div class="notice" role="status" data-test="doc-gone" data-state=${this.gone}>
            ${this.gone === 'deleted' ? 'This document is deleted on the server.' : 'This document does not exist on the server.'}
            ${app.canWrite ? 'Saving will create it again.' : ''}
            <a href=${hashFor('c', this.c, this.id, 'history')}>Its history</a> stays readable.
          </div>`
        : nothing}`;
  }

  conflictView() {
    const c = this.conflict;
    if (!c) return nothing;
    const server = c.serverGone ? '' : pretty(c.serverBody);
    const diff = c.serverGone ? [] : foldDiff(lineDiff(pretty(canonical(c.serverBody)), normalized(c.mine)));
    return html`<section class="card conflict" data-test="conflict-panel" aria-labelledby="conflict-title">
      <h2 id="conflict-title">Your edit is stale</h2>
      <p>Someone changed this document after you loaded it, so it was <strong>not saved</strong>.
        Compare the current version with your edit, then reload it or overwrite it knowingly.</p>
      <div class="side-by-side">
        <div>
          <h3>On the server now ${c.serverGone ? '' : html`<code title=${c.serverEtag}>${short(c.serverEtag)}</code>`}</h3>
          ${c.serverGone
            ? html`<p class="muted" data-test="conflict-server">The document was deleted.</p>`
            : html`<pre class="json" data-test="conflict-server">${server}</pre>`}
        </div>
        <div>
          <h3>Your edit</h3>
          <pre class="json" data-test="conflict-mine">${c.mine}</pre>
        </div>
      </div>
      ${diff.length
        ? html`<details open><summary>Changes from the server's version to yours</summary>${diffView(diff, 'conflict-diff')}</details>`
        : nothing}
      <div class="actions">
        <button type="button" data-test="conflict-reload" @click=${() => this.conflictReload()}>Reload the current version (discard my edit)</button>
        <button type="button" class="danger" data-test="conflict-overwrite" ?disabled=${this.saving} @click=${() => this.conflictOverwrite()}>Overwrite it with my edit</button>
      </div>
    </section>`;
  }

  editorView() {
    if (app.canWrite && this.inexact.length) {
      // Editing would round these numbers on save, silently changing fields nobody touched.
      return html`<div class="problem" role="note" data-test="doc-inexact">
          <strong>Not editable here</strong>
          <span>This document holds ${this.inexact.slice(0, 3).join(', ')}${this.inexact.length > 3 ? '…' : ''}: integers
          beyond ±2^53, which a browser rounds. Saving from the console would change them, so the editor is off;
          write this document through the API.</span>
        </div>
        <pre class="json" data-test="doc-json" tabindex="0" aria-label="Document JSON">${pretty(this.body)}</pre>`;
    }
    if (!app.canWrite) {
      return html`<pre class="json" data-test="doc-json" tabindex="0" aria-label="Document JSON">${pretty(this.body)}</pre>`;
    }
    return html`<form class="editor" @submit=${(e) => { e.preventDefault(); this.save(); }}>
      <label for="doc-editor">JSON ${this.dirty ? html`<span class="pill pill-dirty" data-test="doc-dirty">unsaved changes</span>` : nothing}</label>
      <textarea id="doc-editor" class="code" data-test="doc-editor" spellcheck="false" rows=${Math.min(30, Math.max(8, this.text.split('\n').length + 1))}
        .value=${live(this.text)} @input=${(e) => this.edit(e)} aria-invalid=${this.parseError ? 'true' : 'false'}
        aria-describedby="doc-parse-status"></textarea>
      <p id="doc-parse-status" class=${this.parseError ? 'problem' : 'muted small'} data-test=${this.parseError ? 'doc-parse-error' : 'doc-parse-ok'}>
        ${this.parseError || 'Valid JSON. Saving replaces the document with it (only what differs becomes a change).'}</p>
      <div class="actions">
        <button type="submit" class="primary" data-test="doc-save" ?disabled=${this.saving || !!this.parseError || (!this.dirty && !this.gone)}>
          ${this.saving ? 'Saving…' : 'Save'}</button>
        <button type="button" data-test="doc-revert" ?disabled=${!this.dirty} @click=${() => this.revert()}>Revert</button>
      </div>
    </form>`;
  }

  opsView() {
    if (!app.canWrite || this.gone) return nothing;
    const all = leaves(this.body);
    const numbers = all.filter((l) => l.type === 'number').slice(0, 20);
    const strings = all.filter((l) => l.type === 'string');
    const sp = this.splice;
    const path = sp.path && strings.some((s) => s.ptr === sp.path) ? sp.path : strings[0]?.ptr || '';
    const current = strings.find((s) => s.ptr === path);
    return html`<section class="card" aria-labelledby="ops-title" data-test="ops-panel">
      <h2 id="ops-title">CRDT operations</h2>
      <p class="muted small">Applied on the server as one change each, merged with concurrent edits (counters add up, text merges by character).</p>
      ${numbers.length
        ? html`<h3>Numbers and counters</h3>
          <ul class="num-ops">${numbers.map(
            (n) => html`<li data-test="op-number" data-path=${n.ptr}>
              <span class="num-op-label"><code>${n.ptr}</code> = <strong data-test="op-number-value">${n.value}</strong></span>
              <span class="actions tight">
                <input type="number" step="1" class="tiny" aria-label=${`Increment ${n.ptr} by`} data-test="op-by"
                  .value=${live(String(this.incBy[n.ptr] ?? 1))} @input=${(e) => { this.incBy[n.ptr] = e.target.value; }}>
                <button type="button" data-test="op-increment" data-path=${n.ptr} ?disabled=${this.opsBusy} @click=${() => this.increment(n.ptr)}>Increment</button>
                ${Number.isInteger(n.value)
                  ? html`<button type="button" data-test="op-counter" data-path=${n.ptr} ?disabled=${this.opsBusy}
                      title="Make this number a counter (keeps its value), so that concurrent increments add up"
                      @click=${() => this.makeCounter(n.ptr, n.value)}>Make counter</button>`
                  : nothing}
              </span>
            </li>`,
          )}</ul>
          <p class="muted small">Increment needs a counter: a plain number answers “not a counter” until you make it one.</p>`
        : nothing}
      ${strings.length
        ? html`<h3>Edit text</h3>
          <form class="splice" data-test="splice-form" @submit=${(e) => this.applySplice(e)}>
            <label>Text field
              <select data-test="op-splice-path" .value=${live(path)} @change=${(e) => { this.splice = { ...sp, path: e.target.value }; this.update(); }}>
                ${strings.map((s) => html`<option value=${s.ptr} ?selected=${s.ptr === path}>${s.ptr}</option>`)}
              </select></label>
            <label>Position
              <input type="number" min="0" step="1" class="narrow" data-test="op-splice-index" .value=${live(sp.index)}
                @input=${(e) => { this.splice = { ...this.splice, index: e.target.value }; }}></label>
            <label>Delete
              <input type="number" min="0" step="1" class="narrow" data-test="op-splice-delete" .value=${live(sp.del)}
                @input=${(e) => { this.splice = { ...this.splice, del: e.target.value }; }}></label>
            <label>Insert
              <input type="text" data-test="op-splice-insert" .value=${live(sp.insert)}
                @input=${(e) => { this.splice = { ...this.splice, insert: e.target.value }; }}></label>
            <button type="submit" data-test="op-splice-apply" ?disabled=${this.opsBusy}>Splice</button>
          </form>
          ${current ? html`<p class="muted small">${codePoints(current.value)} characters (positions count Unicode code points).</p>` : nothing}`
        : nothing}
      <h3>Any operation</h3>
      <form @submit=${(e) => this.applyRawOps(e)}>
        <label for="ops-json">Operations (JSON: one, an array, or {"ops": [...]}; set, remove, increment, counter, splice, insert)</label>
        <textarea id="ops-json" class="code" rows="3" data-test="ops-json" spellcheck="false"
          placeholder='[{"op": "insert", "path": "/tags", "value": "new"}, {"op": "remove", "path": "/old"}]'
          .value=${live(this.opsText)} @input=${(e) => { this.opsText = e.target.value; }}></textarea>
        <div class="actions"><button type="submit" data-test="ops-apply" ?disabled=${this.opsBusy}>Apply</button></div>
      </form>
    </section>`;
  }

  deleteView() {
    if (!app.canWrite || this.gone) return nothing;
    return html`<section class="card danger-zone" aria-labelledby="delete-title">
      <h2 id="delete-title">Delete</h2>
      ${this.confirmDelete
        ? html`<p role="alert">Delete <code>${this.c}/${this.id}</code>? Its history stays readable, and writing it again re-creates it.</p>
          <div class="actions">
            <button type="button" class="danger" data-test="doc-delete-confirm" @click=${() => this.remove()}>Delete the document</button>
            <button type="button" data-test="doc-delete-cancel" @click=${() => { this.confirmDelete = false; this.update(); }}>Cancel</button>
          </div>`
        : html`<button type="button" class="danger" data-test="doc-delete" @click=${() => { this.confirmDelete = true; this.update(); }}>Delete…</button>`}
    </section>`;
  }

  view() {
    if (this.status === 'loading') return html`${this.headerView()}${loading()}`;
    if (this.status === 'missing') {
      return html`${this.headerView()}
        <div class="problem" role="alert" data-test="doc-not-found">
          <strong>Not found.</strong> ${this.loadError?.detail || 'This document does not exist.'}
          <span class="muted">(A deleted document, or one your token may not see, is not found either.)</span>
        </div>`;
    }
    if (this.status === 'error') return html`${this.headerView()}${problem(this.loadError)}`;
    return html`${this.headerView()}${this.metaView()}${this.noticesView()}${this.conflictView()}
      <div class=${app.canWrite && !this.gone ? 'doc-layout' : 'doc-layout single'}>
        <div class="doc-main">${this.editorView()}</div>
        <div class="doc-side">${this.opsView()}${this.deleteView()}</div>
      </div>`;
  }
}

/** The user's edit pretty-printed with sorted keys like the server's version, when it parses (a fairer diff). */
function normalized(text) {
  const p = parseJson(text);
  return p.error ? text : pretty(canonical(p.value));
}

/** A line diff as marked lines. */
export function diffView(lines, test = 'diff-view') {
  return html`<div class="diff" data-test=${test} role="table" aria-label="Line differences">
    ${lines.map(
      (l) => html`<div role="row" class=${l.op === '+' ? 'add' : l.op === '-' ? 'del' : l.op === '…' ? 'fold' : 'same'}
        data-kind=${l.op === '+' ? 'add' : l.op === '-' ? 'del' : l.op === '…' ? 'fold' : 'same'}><span role="cell" class="mark">${l.op === '…' ? '⋯' : l.op}</span><span role="cell" class="text">${l.text}</span></div>`,
    )}
  </div>`;
}
