// A document's history: the timeline of its changes (newest first), the document as it was at
// any of them, and a line diff between any two.

import { html, nothing } from '../../vendor/lit-html/lit-html.js';
import { api, docPath, qs } from '../api.js';
import { Page, problem, loading, hashFor } from '../core.js';
import { lineDiff, foldDiff } from '../diff.js';
import { diffView } from './document.js';
import { ago, canonical, fmtTime, pretty, short } from '../util.js';

export class HistoryPage extends Page {
  title() {
    return `History of ${this.params[1]}`;
  }

  start() {
    [this.c, this.id] = this.params;
    this.changes = [];
    this.next = null;
    this.error = null;
    this.loaded = false;
    this.busy = false;
    this.selected = null;
    this.a = null;
    this.b = null;
    this.versions = new Map(); // hash -> {state: 'loading'|'ok'|'error', body, error}
    this.load();
  }

  async load() {
    this.busy = true;
    this.update();
    try {
      const r = await api(docPath(this.c, this.id, '/history') + qs({ limit: 50, before: this.next }));
      if (!this.alive) return;
      const first = this.changes.length === 0;
      this.changes.push(...r.data.changes);
      this.next = r.data.next;
      this.error = null;
      if (first && this.changes.length) {
        this.select(this.changes[0].hash);
        if (this.changes.length >= 2) this.pick(this.changes[1].hash, this.changes[0].hash);
      }
    } catch (e) {
      this.error = e;
    }
    this.loaded = true;
    this.busy = false;
    this.update();
  }

  async version(hash) {
    if (this.versions.has(hash)) return;
    this.versions.set(hash, { state: 'loading' });
    try {
      const r = await api(docPath(this.c, this.id) + qs({ at: hash }));
      this.versions.set(hash, { state: 'ok', body: r.data });
    } catch (e) {
      this.versions.set(hash, { state: 'error', error: e });
    }
    this.update();
  }

  select(hash) {
    this.selected = hash;
    this.version(hash);
    this.update();
  }

  pick(a, b) {
    this.a = a;
    this.b = b;
    if (a) this.version(a);
    if (b) this.version(b);
    this.update();
  }

  change(hash) {
    return this.changes.find((c) => c.hash === hash);
  }

  rowView(ch, i) {
    const isDelete = ch.message === 'concord:delete';
    return html`<li class=${`tl-row${this.selected === ch.hash ? ' selected' : ''}`} data-test="history-row" data-hash=${ch.hash}>
      <div class="tl-main">
        <button type="button" class="tl-select" data-test="history-select" aria-pressed=${this.selected === ch.hash ? 'true' : 'false'}
          @click=${() => this.select(ch.hash)}>
          <span class="tl-time">${fmtTime(ch.time)}</span>
          <span class="muted small">${ago(ch.time)}</span>
        </button>
        <div class="tl-detail">
          <span title=${`actor ${ch.actor}`}>actor <code>${ch.actor.slice(0, 8)}</code> #${ch.seq}</span>
          <span class=${isDelete ? 'badge badge-bad' : 'tl-message'} data-test="history-message">${isDelete ? 'delete' : ch.message ?? '—'}</span>
          <span class="muted" data-test="history-ops">${ch.ops === 1 ? '1 op' : `${ch.ops} ops`}</span>
          <span class="muted" title=${ch.deps.join('\n')}>${ch.deps.length === 0 ? 'first change' : ch.deps.length === 1 ? '1 dep' : `${ch.deps.length} deps (merge)`}</span>
          <code class="muted" title=${ch.hash}>${short(ch.hash, 10)}</code>
        </div>
      </div>
      <div class="tl-pick" role="group" aria-label=${`Compare change ${i + 1}`}>
        <label title="Compare from this version"><input type="radio" name="diff-a" data-test="diff-a" .checked=${this.a === ch.hash}
          @change=${() => this.pick(ch.hash, this.b)}> from</label>
        <label title="Compare to this version"><input type="radio" name="diff-b" data-test="diff-b" .checked=${this.b === ch.hash}
          @change=${() => this.pick(this.a, ch.hash)}> to</label>
      </div>
    </li>`;
  }

  versionView() {
    if (!this.selected) return nothing;
    const ch = this.change(this.selected);
    const v = this.versions.get(this.selected);
    return html`<section class="card" aria-labelledby="hv-title" data-test="history-version" data-hash=${this.selected}>
      <h2 id="hv-title">At change <code title=${this.selected}>${short(this.selected, 10)}</code></h2>
      <p class="muted small">${ch ? `${fmtTime(ch.time)} by ${ch.actor.slice(0, 8)}` : ''}</p>
      ${!v || v.state === 'loading' ? loading() : nothing}
      ${v?.state === 'error' ? problem(v.error, 'history-version-error') : nothing}
      ${v?.state === 'ok' ? html`<pre class="json" data-test="history-version-json" tabindex="0">${pretty(v.body)}</pre>` : nothing}
    </section>`;
  }

  diffSection() {
    if (!this.a || !this.b) {
      return html`<section class="card"><h2>Diff</h2><p class="muted">Pick a “from” and a “to” version in the timeline.</p></section>`;
    }
    const va = this.versions.get(this.a);
    const vb = this.versions.get(this.b);
    const ca = this.change(this.a);
    const cb = this.change(this.b);
    let body = loading();
    let stats = nothing;
    if (va?.state === 'error' || vb?.state === 'error') {
      body = html`${va?.state === 'error' ? problem(va.error) : nothing}${vb?.state === 'error' ? problem(vb.error) : nothing}`;
    } else if (va?.state === 'ok' && vb?.state === 'ok') {
      const lines = lineDiff(pretty(canonical(va.body)), pretty(canonical(vb.body)));
      const added = lines.filter((l) => l.op === '+').length;
      const removed = lines.filter((l) => l.op === '-').length;
      stats = html`<span class="add-count">+${added}</span> <span class="del-count">−${removed}</span>`;
      body = added || removed ? diffView(foldDiff(lines)) : html`<p class="muted" data-test="diff-view" data-kind="same">The two versions hold the same JSON.</p>`;
    }
    return html`<section class="card" aria-labelledby="diff-title" data-test="diff-section">
      <h2 id="diff-title">Diff ${stats}</h2>
      <p class="muted small">From <code title=${this.a}>${short(this.a, 10)}</code> (${ca ? fmtTime(ca.time) : '?'})
        to <code title=${this.b}>${short(this.b, 10)}</code> (${cb ? fmtTime(cb.time) : '?'})</p>
      ${body}
    </section>`;
  }

  view() {
    return html`<nav class="crumbs" aria-label="Breadcrumb">
        <a href="#/collections">Collections</a> / <a href=${hashFor('c', this.c)}>${this.c}</a> /
        <a href=${hashFor('c', this.c, this.id)}>${this.id}</a> / <span>history</span>
      </nav>
      <h1>History of <span class="doc-id">${this.id}</span></h1>
      ${problem(this.error)}
      ${!this.loaded ? loading() : nothing}
      ${this.loaded && !this.error && !this.changes.length ? html`<p class="muted">No changes.</p>` : nothing}
      ${this.changes.length
        ? html`<div class="history-layout">
            <div>
              <ol class="timeline" data-test="history-list" aria-label="Changes, newest first">
                ${this.changes.map((ch, i) => this.rowView(ch, i))}
              </ol>
              ${this.next
                ? html`<button type="button" data-test="history-more" ?disabled=${this.busy} @click=${() => this.load()}>Older changes</button>`
                : html`<p class="muted small">${this.changes.length} change${this.changes.length === 1 ? '' : 's'}: the whole history.</p>`}
            </div>
            <div class="history-panels">${this.versionView()}${this.diffSection()}</div>
          </div>`
        : nothing}`;
  }
}
