// Collections with their counts, and one collection's documents: a table of chosen fields (or
// JSON), paged with `next`/`after`, searched by id prefix, and a form to create a document.

import { html, nothing } from '../../vendor/lit-html/lit-html.js';
import { live } from '../../vendor/lit-html/directives/live.js';
import { api, collPath, docPath, qs } from '../api.js';
import { app, Page, problem, loading, hashFor } from '../core.js';
import { cellText, fmtNum, getPath, parseJson, pretty, short, splitList } from '../util.js';

const PAGE_SIZE = 50;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
export const ID_RE = /^[A-Za-z0-9_.:~-]{1,256}$/;

export function validId(id) {
  return ID_RE.test(id) && id !== '.' && id !== '..';
}

export class CollectionsPage extends Page {
  title() {
    return 'Collections';
  }

  start() {
    this.list = null;
    this.error = null;
    this.openName = '';
    this.openError = '';
    this.load();
  }

  async load() {
    try {
      const r = await api('/v1/collections');
      this.list = r.data.collections;
      this.error = null;
    } catch (e) {
      this.error = e;
    }
    this.update();
  }

  open(ev) {
    ev.preventDefault();
    const name = this.openName.trim();
    if (!NAME_RE.test(name)) {
      this.openError = 'A collection name is 1–64 letters, digits, _ and -, starting with a letter or digit.';
      this.update();
      return;
    }
    app.go(hashFor('c', name));
  }

  view() {
    return html`<h1>Collections</h1>
      ${problem(this.error)}
      ${this.list === null && !this.error ? loading() : nothing}
      ${this.list
        ? this.list.length
          ? html`<div class="table-wrap"><table data-test="collections-table">
              <thead><tr><th scope="col">Collection</th><th scope="col" class="num">Documents</th><th scope="col"><span class="sr-only">Links</span></th></tr></thead>
              <tbody>${this.list.map(
                (c) => html`<tr data-test="collection-row" data-name=${c.name}>
                  <td><a href=${hashFor('c', c.name)} data-test="collection-link">${c.name}</a></td>
                  <td class="num" data-test="collection-docs" title=${typeof c.docs === 'number' ? '' : 'Your token sees only some documents of this collection: no count'}>${typeof c.docs === 'number' ? fmtNum(c.docs) : '—'}</td>
                  <td class="links"><a href=${hashFor('query', c.name)}>query</a> · <a href=${hashFor('live', c.name)}>live</a></td>
                </tr>`,
              )}</tbody>
            </table></div>`
          : html`<p class="muted" data-test="collections-empty">No collection holds a document yet.</p>`
        : nothing}
      <form class="inline-form" @submit=${(e) => this.open(e)}>
        <label for="open-collection">Open a collection by name</label>
        <input id="open-collection" data-test="open-collection" .value=${live(this.openName)}
          @input=${(e) => { this.openName = e.target.value; this.openError = ''; }} spellcheck="false" autocomplete="off">
        <button type="submit">Open</button>
      </form>
      ${this.openError ? html`<p class="problem" role="alert">${this.openError}</p>` : nothing}`;
  }
}

export class CollectionPage extends Page {
  title() {
    return this.params[0];
  }

  start() {
    this.c = this.params[0];
    this.prefix = '';
    this.prefixInput = '';
    this.after = null;
    this.back = []; // the `after` of each earlier page
    this.docs = null;
    this.next = null;
    this.error = null;
    this.busy = false;
    this.columnsText = '';
    this.columnsAuto = true;
    this.mode = 'table';
    this.newOpen = false;
    this.newId = '';
    this.newBody = '{\n  \n}';
    this.newError = '';
    this.creating = false;
    this.load();
  }

  async load() {
    this.busy = true;
    this.update();
    const url = collPath(this.c, '/docs') + qs({ include_docs: 'true', limit: PAGE_SIZE, after: this.after, prefix: this.prefix });
    try {
      const r = await api(url);
      if (!this.alive) return;
      this.docs = r.data.docs;
      this.next = r.data.next;
      this.error = null;
      if (this.columnsAuto && this.after === null) this.columnsText = defaultColumns(this.docs).join(', ');
    } catch (e) {
      this.error = e;
      this.docs = [];
      this.next = null;
    }
    this.busy = false;
    this.update();
  }

  search(ev) {
    ev.preventDefault();
    this.prefix = this.prefixInput.trim();
    this.after = null;
    this.back = [];
    this.load();
  }

  clearSearch() {
    this.prefix = '';
    this.prefixInput = '';
    this.after = null;
    this.back = [];
    this.load();
  }

  nextPage() {
    if (!this.next) return;
    this.back.push(this.after);
    this.after = this.next;
    this.load();
  }

  prevPage() {
    if (!this.back.length) return;
    this.after = this.back.pop();
    this.load();
  }

  setColumns(ev) {
    ev.preventDefault();
    this.columnsAuto = false;
    this.update();
  }

  toggleNew() {
    this.newOpen = !this.newOpen;
    this.newError = '';
    this.update();
  }

  async create(ev) {
    ev.preventDefault();
    const id = this.newId.trim();
    const parsed = parseJson(this.newBody, { object: true, what: 'The document' });
    if (parsed.error) {
      this.newError = parsed.error;
      this.update();
      return;
    }
    if (id && !validId(id)) {
      this.newError = 'An id is 1–256 letters, digits and _ - . : ~ (not "." or "..").';
      this.update();
      return;
    }
    this.creating = true;
    this.newError = '';
    this.update();
    try {
      let r;
      if (id) {
        // Create only: a typed id that exists already must not be replaced by this form.
        r = await api(docPath(this.c, id), { method: 'PUT', body: parsed.value, headers: { 'If-None-Match': '*' } });
      } else {
        r = await api(collPath(this.c, '/docs'), { method: 'POST', body: parsed.value });
      }
      app.flash(`Created ${this.c}/${r.data.id}`);
      app.go(hashFor('c', this.c, r.data.id));
    } catch (e) {
      this.newError =
        e.status === 412 ? `A document with the id “${id}” exists already: open it to edit it.` : e.message;
    } finally {
      this.creating = false;
      this.update();
    }
  }

  newView() {
    if (!app.canWrite) return nothing;
    if (!this.newOpen) {
      return html`<button type="button" class="primary" data-test="doc-new" @click=${() => this.toggleNew()}>New document</button>`;
    }
    return html`<form class="card new-doc" data-test="new-doc-form" @submit=${(e) => this.create(e)}>
      <h2>New document in ${this.c}</h2>
      <label for="new-doc-id">Id <span class="muted">(optional: leave empty for a fresh id)</span></label>
      <input id="new-doc-id" data-test="new-doc-id" .value=${live(this.newId)} spellcheck="false" autocomplete="off"
        @input=${(e) => { this.newId = e.target.value; }}>
      <label for="new-doc-body">JSON</label>
      <textarea id="new-doc-body" data-test="new-doc-body" rows="8" spellcheck="false" class="code"
        .value=${live(this.newBody)} @input=${(e) => { this.newBody = e.target.value; this.newError = ''; }}></textarea>
      ${this.newError ? html`<p class="problem" role="alert" data-test="new-doc-error">${this.newError}</p>` : nothing}
      <div class="actions">
        <button type="submit" class="primary" data-test="new-doc-create" ?disabled=${this.creating}>Create</button>
        <button type="button" @click=${() => this.toggleNew()}>Cancel</button>
      </div>
    </form>`;
  }

  tableView(columns) {
    return html`<div class="table-wrap"><table data-test="docs-table">
      <thead><tr>
        <th scope="col">id</th>
        ${columns.map((c) => html`<th scope="col">${c}</th>`)}
        <th scope="col">version</th>
      </tr></thead>
      <tbody>${this.docs.map(
        (d) => html`<tr data-test="doc-row" data-id=${d.id}>
          <td><a href=${hashFor('c', this.c, d.id)} data-test="doc-link">${d.id}</a></td>
          ${d.error_status
            ? html`<td colspan=${columns.length || 1} class="bad">${d.error_status}: ${d.error}</td>`
            : columns.map((c) => {
                const v = getPath(d.body, c);
                const text = cellText(v);
                return html`<td data-col=${c} title=${typeof v === 'string' ? v : v === undefined ? '' : JSON.stringify(v)}>${text}</td>`;
              })}
          <td><code title=${d.version}>${short(d.version, 8)}</code></td>
        </tr>`,
      )}</tbody>
    </table></div>`;
  }

  view() {
    const columns = splitList(this.columnsText);
    const page = this.back.length + 1;
    return html`<nav class="crumbs" aria-label="Breadcrumb"><a href="#/collections">Collections</a> / <span>${this.c}</span></nav>
      <div class="title-row">
        <h1>${this.c}</h1>
        <span class="links"><a href=${hashFor('query', this.c)}>Query</a> · <a href=${hashFor('live', this.c)}>Live changes</a></span>
      </div>
      ${this.newView()}
      <div class="toolbar">
        <form class="inline-form" role="search" @submit=${(e) => this.search(e)}>
          <label for="prefix">Id starts with</label>
          <input id="prefix" data-test="prefix-input" type="search" spellcheck="false" autocomplete="off"
            .value=${live(this.prefixInput)} @input=${(e) => { this.prefixInput = e.target.value; }}>
          <button type="submit" data-test="prefix-search">Search</button>
          ${this.prefix ? html`<button type="button" data-test="prefix-clear" @click=${() => this.clearSearch()}>Clear</button>` : nothing}
        </form>
        <form class="inline-form" @submit=${(e) => this.setColumns(e)}>
          <label for="columns">Columns</label>
          <input id="columns" data-test="columns-input" spellcheck="false" autocomplete="off" placeholder="field, nested.field"
            .value=${live(this.columnsText)} @input=${(e) => { this.columnsText = e.target.value; this.columnsAuto = false; this.update(); }}>
        </form>
        <div class="segmented" role="group" aria-label="Show as">
          <button type="button" data-test="view-table" aria-pressed=${this.mode === 'table' ? 'true' : 'false'} @click=${() => { this.mode = 'table'; this.update(); }}>Table</button>
          <button type="button" data-test="view-json" aria-pressed=${this.mode === 'json' ? 'true' : 'false'} @click=${() => { this.mode = 'json'; this.update(); }}>JSON</button>
        </div>
      </div>
      ${problem(this.error)}
      ${this.docs === null ? loading() : nothing}
      ${this.docs && !this.error
        ? this.docs.length
          ? this.mode === 'table'
            ? this.tableView(columns)
            : html`<pre class="json" data-test="docs-json">${pretty(this.docs.map((d) => ({ id: d.id, version: d.version, ...(d.body ? { doc: d.body } : {}), ...(d.error ? { error: d.error } : {}) })))}</pre>`
          : html`<p class="muted" data-test="docs-empty">${this.prefix ? `No document id starts with “${this.prefix}”.` : this.back.length ? 'No more documents.' : 'No documents.'}</p>`
        : nothing}
      <div class="pager">
        <button type="button" data-test="prev-page" ?disabled=${!this.back.length || this.busy} @click=${() => this.prevPage()}>Previous</button>
        <span class="muted" data-test="page-number">Page ${page}${this.prefix ? html` · ids starting with <code>${this.prefix}</code>` : nothing}</span>
        <button type="button" data-test="next-page" ?disabled=${!this.next || this.busy} @click=${() => this.nextPage()}>Next</button>
      </div>`;
  }
}

/** The top-level keys of a page of documents, in order of first appearance (at most 8). */
function defaultColumns(docs) {
  const keys = [];
  for (const d of docs) {
    if (!d.body) continue;
    for (const k of Object.keys(d.body)) {
      if (!keys.includes(k)) keys.push(k);
      if (keys.length >= 8) return keys;
    }
  }
  return keys;
}
