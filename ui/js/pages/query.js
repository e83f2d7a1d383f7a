// Query: a selector editor with find (documents, execution stats, warnings) and explain (the
// plan), pages by bookmark; the collection's indexes with build progress, and creating one.

import { html, nothing } from '../../vendor/lit-html/lit-html.js';
import { live } from '../../vendor/lit-html/directives/live.js';
import { api, collPath } from '../api.js';
import { app, Page, problem, hashFor } from '../core.js';
import { cellText, fmtMs, fmtNum, parseJson, pretty, short, splitList } from '../util.js';

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

export class QueryPage extends Page {
  title() {
    return 'Query';
  }

  start() {
    this.collections = [];
    const limited = app.me?.collections;
    this.collection = this.params[0] || (limited ? limited[0] || '' : '');
    this.selectorText = '{}';
    this.fields = '';
    this.sort = '';
    this.limit = '25';
    this.useIndex = '';
    this.allowScan = false;
    this.formError = '';
    this.running = false;
    this.result = null; // {docs, stats, warning, bookmark}
    this.pages = 0;
    this.lastBody = null;
    this.explain = null;
    this.queryError = null;
    this.indexes = null;
    this.indexError = null;
    this.newIndex = { name: '', fields: '', partial: '' };
    this.indexFormError = '';
    this.creatingIndex = false;
    this.confirmDrop = '';
    this.loadCollections();
    if (this.collection) this.startIndexes();
  }

  async loadCollections() {
    try {
      const r = await api('/v1/collections');
      this.collections = r.data.collections.map((c) => c.name);
      if (!this.collection && this.collections.length) {
        this.collection = this.collections[0];
        this.startIndexes();
      }
    } catch (e) {
      app.notify(e);
    }
    this.update();
  }

  startIndexes() {
    this.indexEpoch = (this.indexEpoch || 0) + 1;
    const epoch = this.indexEpoch;
    this.indexes = null;
    this.indexError = null;
    // A token narrowed to some documents may not list indexes (the node answers 403): not asked.
    if (app.me?.scoped) return;
    // Refreshed every second while an index is building, every 10 s otherwise.
    const loop = async () => {
      if (!this.alive || epoch !== this.indexEpoch) return;
      await this.loadIndexes();
      if (!this.alive || epoch !== this.indexEpoch || this.indexError?.status === 403) return;
      const building = this.indexes?.some((i) => i.state === 'building');
      this.later(building ? 1000 : 10000, loop);
    };
    loop();
  }

  async loadIndexes() {
    const c = this.collection;
    if (!NAME_RE.test(c)) return;
    try {
      const r = await api(collPath(c, '/indexes'));
      if (c !== this.collection) return;
      this.indexes = r.data.indexes;
      this.indexError = null;
    } catch (e) {
      if (c !== this.collection) return;
      this.indexes = [];
      this.indexError = e;
    }
    this.update();
  }

  setCollection(name) {
    this.collection = name.trim();
    this.result = null;
    this.explain = null;
    this.queryError = null;
    if (NAME_RE.test(this.collection)) this.startIndexes();
    this.update();
  }

  /** The request body from the form, or null (with formError set). */
  body() {
    this.formError = '';
    if (!NAME_RE.test(this.collection)) {
      this.formError = 'Choose a collection (1–64 letters, digits, _ and -).';
      return null;
    }
    const sel = parseJson(this.selectorText.trim() || '{}', { object: true, what: 'The selector' });
    if (sel.error) {
      this.formError = sel.error;
      return null;
    }
    const b = { selector: sel.value };
    const fields = splitList(this.fields);
    if (fields.length) b.fields = fields;
    const sort = this.sort.trim();
    if (sort) {
      if (sort.startsWith('[')) {
        const s = parseJson(sort, { what: 'The sort' });
        if (s.error) {
          this.formError = s.error;
          return null;
        }
        b.sort = s.value;
      } else {
        b.sort = splitList(sort).map((part) => {
          const m = /^(.*?)(?::|\s+)(asc|desc)$/i.exec(part);
          return m ? { [m[1].trim()]: m[2].toLowerCase() } : part;
        });
      }
    }
    if (this.limit.trim()) {
      const n = Number(this.limit);
      if (!Number.isInteger(n) || n < 1 || n > 10000) {
        this.formError = 'The limit is a whole number from 1 to 10,000.';
        return null;
      }
      b.limit = n;
    }
    if (this.useIndex.trim()) b.use_index = this.useIndex.trim();
    if (this.allowScan) b.allow_scan = true;
    return b;
  }

  async find(ev, bookmark) {
    ev?.preventDefault();
    let b;
    if (bookmark) {
      b = { ...this.lastBody, bookmark };
    } else {
      b = this.body();
      if (!b) return this.update();
      this.pages = 0;
    }
    this.running = true;
    this.queryError = null;
    this.explain = null;
    this.update();
    try {
      const r = await api(collPath(this.collection, '/find'), { method: 'POST', body: b });
      this.lastBody = { ...b };
      delete this.lastBody.bookmark;
      this.result = r.data;
      this.pages++;
    } catch (e) {
      this.queryError = e;
      this.result = null;
    }
    this.running = false;
    this.update();
  }

  async runExplain() {
    const b = this.body();
    if (!b) return this.update();
    this.running = true;
    this.queryError = null;
    this.update();
    try {
      const r = await api(collPath(this.collection, '/explain'), { method: 'POST', body: b });
      this.explain = r.data;
    } catch (e) {
      this.queryError = e;
      this.explain = null;
    }
    this.running = false;
    this.update();
  }

  async createIndex(ev) {
    ev.preventDefault();
    const { name, fields, partial } = this.newIndex;
    this.indexFormError = '';
    if (!NAME_RE.test(name.trim())) {
      this.indexFormError = 'An index name is 1–64 letters, digits, _ and -, starting with a letter or digit.';
      return this.update();
    }
    const list = splitList(fields);
    if (!list.length || list.length > 8) {
      this.indexFormError = 'Give 1 to 8 fields, comma-separated (dotted paths for nested fields).';
      return this.update();
    }
    const def = { fields: list };
    if (partial.trim()) {
      const p = parseJson(partial, { object: true, what: 'The partial filter' });
      if (p.error) {
        this.indexFormError = p.error;
        return this.update();
      }
      def.partial_filter = p.value;
    }
    this.creatingIndex = true;
    this.update();
    try {
      const r = await api(collPath(this.collection, `/indexes/${encodeURIComponent(name.trim())}`), { method: 'PUT', body: def });
      app.flash(r.status === 201 ? `Index ${name.trim()} declared: building` : `Index ${name.trim()} exists already`);
      this.newIndex = { name: '', fields: '', partial: '' };
      this.startIndexes();
    } catch (e) {
      this.indexFormError = e.message;
    }
    this.creatingIndex = false;
    this.update();
  }

  async dropIndex(name) {
    this.confirmDrop = '';
    try {
      await api(collPath(this.collection, `/indexes/${encodeURIComponent(name)}`), { method: 'DELETE', as: 'none' });
      app.flash(`Index ${name} dropped`);
      this.startIndexes();
    } catch (e) {
      app.notify(e);
    }
    this.update();
  }

  // ---- views ----

  formView() {
    return html`<form class="card query-form" @submit=${(e) => this.find(e)} aria-labelledby="q-title">
      <h2 id="q-title" class="sr-only">Query</h2>
      <div class="grid-2">
        <div>
          <label for="q-collection">Collection</label>
          <input id="q-collection" list="q-collections" data-test="query-collection" spellcheck="false" autocomplete="off"
            .value=${live(this.collection)} @input=${(e) => { this.collection = e.target.value.trim(); }}
            @change=${(e) => this.setCollection(e.target.value)}>
          <datalist id="q-collections">${this.collections.map((n) => html`<option value=${n}></option>`)}</datalist>
        </div>
        <div>
          <label for="q-limit">Limit</label>
          <input id="q-limit" type="number" min="1" max="10000" data-test="query-limit" class="narrow"
            .value=${live(this.limit)} @input=${(e) => { this.limit = e.target.value; }}>
        </div>
      </div>
      <label for="q-selector">Selector (JSON, Mango: <code>{"status": "open", "due": {"$lt": "2027-01-01"}}</code>)</label>
      <textarea id="q-selector" class="code" rows="6" data-test="query-selector" spellcheck="false"
        .value=${live(this.selectorText)} @input=${(e) => { this.selectorText = e.target.value; this.formError = ''; }}></textarea>
      <div class="grid-2">
        <div>
          <label for="q-fields">Fields <span class="muted">(comma-separated)</span></label>
          <input id="q-fields" data-test="query-fields" spellcheck="false" autocomplete="off"
            .value=${live(this.fields)} @input=${(e) => { this.fields = e.target.value; }}>
        </div>
        <div>
          <label for="q-sort">Sort <span class="muted">(e.g. <code>due:desc, title</code>)</span></label>
          <input id="q-sort" data-test="query-sort" spellcheck="false" autocomplete="off"
            .value=${live(this.sort)} @input=${(e) => { this.sort = e.target.value; }}>
        </div>
        <div>
          <label for="q-use-index">Use index <span class="muted">(optional)</span></label>
          <input id="q-use-index" data-test="query-use-index" spellcheck="false" autocomplete="off"
            .value=${live(this.useIndex)} @input=${(e) => { this.useIndex = e.target.value; }}>
        </div>
        <div class="check">
          <label><input type="checkbox" data-test="query-allow-scan" .checked=${this.allowScan}
            @change=${(e) => { this.allowScan = e.target.checked; }}> Allow a full scan</label>
        </div>
      </div>
      ${this.formError ? html`<p class="problem" role="alert" data-test="query-form-error">${this.formError}</p>` : nothing}
      <div class="actions">
        <button type="submit" class="primary" data-test="query-find" ?disabled=${this.running}>Find</button>
        <button type="button" data-test="query-explain" ?disabled=${this.running} @click=${() => this.runExplain()}>Explain</button>
      </div>
    </form>`;
  }

  resultView() {
    const r = this.result;
    if (!r) return nothing;
    const s = r.stats || {};
    return html`<section class="card" aria-labelledby="res-title" data-test="query-result">
      <h2 id="res-title">Results <span class="muted small">page ${this.pages}</span></h2>
      <p class="stats" data-test="query-stats" data-index=${s.index ?? ''}>
        <span>index <strong data-test="query-stats-index">${s.index ?? 'none (scan)'}</strong></span>
        <span>keys examined <strong>${fmtNum(s.keys_examined)}</strong></span>
        <span>documents examined <strong>${fmtNum(s.docs_examined)}</strong></span>
        <span>returned <strong data-test="query-stats-returned">${fmtNum(s.returned)}</strong></span>
        <span>in <strong>${fmtMs(s.duration_ms)}</strong></span>
      </p>
      ${r.warning ? html`<p class="notice" role="status" data-test="query-warning">${r.warning}</p>` : nothing}
      ${r.docs.length
        ? html`<div class="table-wrap"><table>
            <thead><tr><th scope="col">id</th><th scope="col">document</th><th scope="col">version</th></tr></thead>
            <tbody>${r.docs.map(
              (d) => html`<tr data-test="query-doc" data-id=${d.id}>
                <td><a href=${hashFor('c', this.collection, d.id)}>${d.id}</a></td>
                <td><code class="wrap" title=${JSON.stringify(d.doc)}>${cellText(d.doc, 200)}</code></td>
                <td><code title=${d.version}>${short(d.version, 8)}</code></td>
              </tr>`,
            )}</tbody>
          </table></div>`
        : html`<p class="muted" data-test="query-empty">No document matches.</p>`}
      ${r.bookmark
        ? html`<button type="button" data-test="query-next" ?disabled=${this.running} @click=${() => this.find(null, r.bookmark)}>Next page</button>`
        : html`<p class="muted small">Last page.</p>`}
    </section>`;
  }

  explainView() {
    const x = this.explain;
    if (!x) return nothing;
    return html`<section class="card" aria-labelledby="ex-title" data-test="explain-output">
      <h2 id="ex-title">Plan</h2>
      <dl class="kv">
        <dt>Strategy</dt><dd data-test="explain-strategy">${x.strategy}</dd>
        <dt>Index</dt><dd><strong data-test="explain-index">${x.index ?? 'none'}</strong></dd>
        <dt>Filter on loaded documents</dt><dd>${x.residual_filter ? 'yes' : 'no'}</dd>
        <dt>Sort in memory</dt><dd class=${x.in_memory_sort ? 'warn' : ''}>${x.in_memory_sort ? 'yes' : 'no'}</dd>
        <dt>Scan allowed</dt><dd>${x.scan_allowed ? 'yes' : 'no'}</dd>
        <dt>Suggested index</dt><dd>${x.suggested_index?.length ? html`<code>${x.suggested_index.join(', ')}</code>` : '—'}</dd>
      </dl>
      ${x.candidates?.length
        ? html`<h3>Candidates</h3>
          <div class="table-wrap"><table>
            <thead><tr><th scope="col">Index</th><th scope="col">Usable</th><th scope="col">Chosen</th><th scope="col">Why</th></tr></thead>
            <tbody>${x.candidates.map(
              (c) => html`<tr data-test="explain-candidate" data-index=${c.index} class=${c.chosen ? 'chosen' : ''}>
                <td><code>${c.index}</code></td><td>${c.usable ? 'yes' : 'no'}</td><td>${c.chosen ? '✓ chosen' : ''}</td><td>${c.reason}</td>
              </tr>`,
            )}</tbody>
          </table></div>`
        : html`<p class="muted">No index is declared on this collection.</p>`}
      ${x.ranges?.length
        ? html`<h3>Key ranges</h3>
          <div class="table-wrap"><table>
            <thead><tr><th scope="col">Pinned values</th><th scope="col">From (hex, inclusive)</th><th scope="col">To (hex, exclusive)</th></tr></thead>
            <tbody>${x.ranges.map(
              (r) => html`<tr><td><code>${JSON.stringify(r.pinned)}</code></td><td><code class="wrap">${r.lo}</code></td><td><code class="wrap">${r.hi}</code></td></tr>`,
            )}</tbody>
          </table></div>`
        : nothing}
      <details><summary>Raw plan</summary><pre class="json">${pretty(x)}</pre></details>
    </section>`;
  }

  indexView() {
    if (app.me?.scoped) {
      return html`<p class="muted small" data-test="index-panel-scoped">Indexes are not listed for a token that sees only some documents; a find uses them all the same (see its stats and explain).</p>`;
    }
    const canManage = app.isAdmin;
    return html`<section class="card" aria-labelledby="ix-title" data-test="index-panel">
      <h2 id="ix-title">Indexes of ${this.collection || '…'}</h2>
      ${this.indexError ? problem(this.indexError, 'index-error') : nothing}
      ${this.indexes && this.indexes.length
        ? html`<div class="table-wrap"><table>
            <thead><tr><th scope="col">Name</th><th scope="col">Fields</th><th scope="col">Partial filter</th><th scope="col">State</th>${canManage ? html`<th scope="col"><span class="sr-only">Actions</span></th>` : nothing}</tr></thead>
            <tbody>${this.indexes.map((i) => this.indexRow(i, canManage))}</tbody>
          </table></div>`
        : this.indexes && !this.indexError
          ? html`<p class="muted" data-test="index-empty">No index on this collection.</p>`
          : nothing}
      ${canManage ? this.indexForm() : nothing}
    </section>`;
  }

  indexRow(i, canManage) {
    const p = i.progress;
    return html`<tr data-test="index-row" data-name=${i.name} data-state=${i.state}>
      <td><code>${i.name}</code></td>
      <td><code>${i.fields.join(', ')}</code></td>
      <td>${i.partial_filter ? html`<code class="wrap">${JSON.stringify(i.partial_filter)}</code>` : '—'}</td>
      <td>${i.state === 'building'
        ? html`<span class="pill pill-connecting">building</span>
            ${p ? html`<progress max=${Math.max(1, p.collection_documents)} value=${p.documents_indexed}></progress>
              <span class="small">${fmtNum(p.documents_indexed)} / ${fmtNum(p.collection_documents)}</span>` : nothing}`
        : html`<span class="pill pill-open">${i.state}</span>`}</td>
      ${canManage
        ? html`<td>${this.confirmDrop === i.name
            ? html`<button type="button" class="danger" data-test="index-drop-confirm" @click=${() => this.dropIndex(i.name)}>Drop it</button>
                <button type="button" @click=${() => { this.confirmDrop = ''; this.update(); }}>Cancel</button>`
            : html`<button type="button" data-test="index-drop" @click=${() => { this.confirmDrop = i.name; this.update(); }}>Drop…</button>`}</td>`
        : nothing}
    </tr>`;
  }

  indexForm() {
    const n = this.newIndex;
    return html`<form class="index-form" @submit=${(e) => this.createIndex(e)}>
      <h3>Create an index</h3>
      <div class="grid-2">
        <div>
          <label for="ix-name">Name</label>
          <input id="ix-name" data-test="index-name" spellcheck="false" autocomplete="off" .value=${live(n.name)}
            @input=${(e) => { this.newIndex = { ...this.newIndex, name: e.target.value }; }}>
        </div>
        <div>
          <label for="ix-fields">Fields <span class="muted">(comma-separated, in order)</span></label>
          <input id="ix-fields" data-test="index-fields" spellcheck="false" autocomplete="off" .value=${live(n.fields)}
            @input=${(e) => { this.newIndex = { ...this.newIndex, fields: e.target.value }; }}>
        </div>
      </div>
      <label for="ix-partial">Partial filter <span class="muted">(optional selector; such an index serves only queries that name it)</span></label>
      <input id="ix-partial" data-test="index-partial" spellcheck="false" autocomplete="off" .value=${live(n.partial)}
        @input=${(e) => { this.newIndex = { ...this.newIndex, partial: e.target.value }; }}>
      ${this.indexFormError ? html`<p class="problem" role="alert" data-test="index-form-error">${this.indexFormError}</p>` : nothing}
      <div class="actions"><button type="submit" class="primary" data-test="index-create" ?disabled=${this.creatingIndex}>Create index</button></div>
    </form>`;
  }

  view() {
    return html`<h1>Query</h1>
      ${this.formView()}
      ${this.queryError ? problem(this.queryError, 'query-error') : nothing}
      ${this.explainView()}
      ${this.resultView()}
      ${this.collection ? this.indexView() : nothing}`;
  }
}
