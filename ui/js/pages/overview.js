// Overview: the node (id, version, uptime), its documents, store and cache sizes, request rates
// and latencies, load shedding and errors, polled from /v1/health, /v1/collections and /metrics
// every 2 s while the page is open, with live charts.

import { html, nothing } from '../../vendor/lit-html/lit-html.js';
import { api } from '../api.js';
import { Page, problem, loading } from '../core.js';
import { LiveChart } from '../chart.js';
import { parseMetrics, gauge, buckets, bucketDelta, quantile, requestTotals, byRoute } from '../metrics.js';
import { fmtBytes, fmtNum, fmtMs, fmtDuration } from '../util.js';

const POLL_MS = 2000;
const HIST = 'concord_http_request_duration_seconds';

export class OverviewPage extends Page {
  title() {
    return 'Overview';
  }

  start() {
    this.health = null;
    this.collections = null;
    this.m = null; // the summary of the last scrape
    this.prev = null; // {t, totals, bks} of the previous scrape
    this.errors = {};
    this.reqChart = new LiveChart({ label: 'requests/s', unit: '/s', test: 'chart-requests', color: '#2563eb' });
    this.latChart = new LiveChart({ label: 'p99 latency', unit: ' ms', test: 'chart-latency', color: '#d97706', digits: 2 });
    this.every(POLL_MS, () => this.poll());
  }

  stop() {
    super.stop();
    this.reqChart?.destroy();
    this.latChart?.destroy();
  }

  async poll() {
    const [h, c, m] = await Promise.allSettled([
      api('/v1/health'),
      api('/v1/collections'),
      api('/metrics', { as: 'text' }),
    ]);
    if (!this.alive) return;
    this.errors = {};
    if (h.status === 'fulfilled') this.health = h.value.data;
    else this.errors.health = h.reason;
    if (c.status === 'fulfilled') this.collections = c.value.data.collections;
    else this.errors.collections = c.reason;
    if (m.status === 'fulfilled') this.scrape(m.value.data);
    else this.errors.metrics = m.reason;
    this.update();
    queueMicrotask(() => {
      this.reqChart.draw();
      this.latChart.draw();
    });
  }

  scrape(text) {
    const samples = parseMetrics(text);
    const t = performance.now() / 1000;
    const totals = requestTotals(samples);
    const bks = buckets(samples, HIST);
    const s = {
      samples,
      totals,
      storeBytes: gauge(samples, 'concord_store_bytes'),
      memtableBytes: gauge(samples, 'concord_memtable_bytes'),
      blockCacheBytes: gauge(samples, 'concord_block_cache_bytes'),
      cacheBytes: gauge(samples, 'concord_cache_bytes'),
      cacheDocs: gauge(samples, 'concord_cache_documents') ?? gauge(samples, 'concord_cache_docs'),
      heapAllocated: gauge(samples, 'concord_heap_allocated_bytes'),
      heapResident: gauge(samples, 'concord_heap_resident_bytes'),
      websockets: gauge(samples, 'concord_websockets_open'),
      wsDocs: gauge(samples, 'concord_websocket_documents'),
      streams: gauge(samples, 'concord_streams_open'),
      commits: gauge(samples, 'concord_commits_total'),
      pushDropped: gauge(samples, 'concord_push_dropped_total'),
      refusedNoSpace: gauge(samples, 'concord_writes_refused_no_space_total'),
      cacheHits: gauge(samples, 'concord_cache_hits_total'),
      cacheMisses: gauge(samples, 'concord_cache_misses_total'),
      p50All: msOf(quantile(0.5, bks)),
      p99All: msOf(quantile(0.99, bks)),
      routes: byRoute(samples).slice(0, 8),
      rate: undefined,
      errRate: undefined,
      shedRate: undefined,
      p50: undefined,
      p99: undefined,
    };
    if (this.prev) {
      const dt = Math.max(0.001, t - this.prev.t);
      s.rate = Math.max(0, totals.all - this.prev.totals.all) / dt;
      s.errRate = Math.max(0, totals.err5xx - this.prev.totals.err5xx) / dt;
      s.shedRate = Math.max(0, totals.shed503 - this.prev.totals.shed503) / dt;
      const delta = bucketDelta(bks, this.prev.bks);
      s.p50 = msOf(quantile(0.5, delta));
      s.p99 = msOf(quantile(0.99, delta));
      const x = Date.now() / 1000;
      this.reqChart.push(x, s.rate);
      this.latChart.push(x, s.p99 ?? null);
    } else {
      const x = Date.now() / 1000;
      this.reqChart.push(x, null);
      this.latChart.push(x, null);
    }
    this.prev = { t, totals, bks };
    this.m = s;
  }

  view() {
    const h = this.health;
    const m = this.m;
    const docs = this.collections ? docsTotal(this.collections) : null;
    return html`<h1>Overview</h1>
      ${problem(this.errors.health)}${problem(this.errors.collections)}${problem(this.errors.metrics)}
      ${!h && !m && !Object.keys(this.errors).length ? loading() : nothing}
      <div class="cards">
        <section class="card" aria-labelledby="ov-node">
          <h2 id="ov-node">Node</h2>
          <dl class="kv">
            <dt>Node id</dt><dd><code data-test="overview-node-id">${h?.node_id ?? '—'}</code></dd>
            <dt>Version</dt><dd data-test="overview-version">${h?.version ?? '—'}</dd>
            <dt>Uptime</dt><dd data-test="overview-uptime">${h ? fmtDuration(h.uptime_seconds) : '—'}</dd>
            <dt>Status</dt><dd>${h?.status ?? '—'}</dd>
          </dl>
        </section>
        <section class="card" aria-labelledby="ov-docs">
          <h2 id="ov-docs">Documents</h2>
          <dl class="kv">
            <dt>Documents</dt>
            <dd data-test="overview-docs">${docs === null ? '—' : html`${fmtNum(docs.total)}${docs.partial ? html` <span class="muted" title="Some collections give this token no count">+ uncounted</span>` : nothing}`}</dd>
            <dt>Collections</dt><dd>${this.collections ? html`<a href="#/collections">${this.collections.length}</a>` : '—'}</dd>
            <dt>Commits</dt><dd>${fmtNum(m?.commits)}</dd>
          </dl>
        </section>
        <section class="card" aria-labelledby="ov-store">
          <h2 id="ov-store">Store and cache</h2>
          <dl class="kv">
            <dt>Store (RocksDB)</dt><dd data-test="overview-store">${fmtBytes(m?.storeBytes)}</dd>
            <dt>Memtables</dt><dd>${fmtBytes(m?.memtableBytes)}</dd>
            <dt>Block cache</dt><dd>${fmtBytes(m?.blockCacheBytes)}</dd>
            <dt>Document cache</dt><dd data-test="overview-cache">${fmtBytes(m?.cacheBytes)}${m?.cacheDocs !== undefined ? html` <span class="muted">(${fmtNum(m.cacheDocs)} docs)</span>` : nothing}</dd>
            <dt>Cache hit ratio</dt><dd>${hitRatio(m)}</dd>
            <dt>Heap</dt><dd>${fmtBytes(m?.heapAllocated)} <span class="muted">(${fmtBytes(m?.heapResident)} resident)</span></dd>
          </dl>
        </section>
        <section class="card" aria-labelledby="ov-req">
          <h2 id="ov-req">Requests</h2>
          <dl class="kv">
            <dt>Rate</dt><dd data-test="overview-rate">${m?.rate === undefined ? '—' : `${fmtNum(m.rate, 1)} /s`}</dd>
            <dt>p50 / p99, last ${POLL_MS / 1000} s</dt><dd data-test="overview-latency">${fmtMs(m?.p50)} / ${fmtMs(m?.p99)}</dd>
            <dt>p50 / p99, since start</dt><dd>${fmtMs(m?.p50All)} / ${fmtMs(m?.p99All)}</dd>
            <dt>Requests since start</dt><dd>${fmtNum(m?.totals.all)}</dd>
            <dt>Load shed (503)</dt><dd data-test="overview-shed" class=${m?.totals.shed503 ? 'warn' : ''}>${fmtNum(m?.totals.shed503)}${m?.shedRate ? ` (${fmtNum(m.shedRate, 1)} /s)` : ''}</dd>
            <dt>Errors (5xx)</dt><dd data-test="overview-errors" class=${m?.totals.err5xx ? 'bad' : ''}>${fmtNum(m?.totals.err5xx)}${m?.errRate ? ` (${fmtNum(m.errRate, 1)} /s)` : ''}</dd>
            <dt>Client errors (4xx)</dt><dd>${fmtNum(m?.totals.err4xx)}</dd>
            <dt>Pushes dropped</dt><dd>${fmtNum(m?.pushDropped)}</dd>
            <dt>Writes refused (disk full)</dt><dd class=${m?.refusedNoSpace ? 'bad' : ''}>${fmtNum(m?.refusedNoSpace)}</dd>
          </dl>
        </section>
      </div>
      <div class="cards charts">
        <section class="card" aria-labelledby="ov-rate-chart">
          <h2 id="ov-rate-chart">Requests per second</h2>
          ${this.reqChart.el}
        </section>
        <section class="card" aria-labelledby="ov-lat-chart">
          <h2 id="ov-lat-chart">Latency p99 (ms)</h2>
          ${this.latChart.el}
        </section>
      </div>
      <section class="card" aria-labelledby="ov-conn">
        <h2 id="ov-conn">Connections</h2>
        <p>
          <a href="#/clients">${fmtNum(m?.websockets)} automerge-repo WebSocket clients</a>
          with ${fmtNum(m?.wsDocs)} documents open; ${fmtNum(m?.streams)} HTTP streams (SSE, long polls) open.
        </p>
      </section>
      ${m?.routes.length
        ? html`<section class="card" aria-labelledby="ov-routes">
            <h2 id="ov-routes">Busiest routes</h2>
            <div class="table-wrap"><table>
              <thead><tr><th scope="col">Method</th><th scope="col">Route</th><th scope="col" class="num">Requests</th><th scope="col" class="num">5xx</th></tr></thead>
              <tbody>${m.routes.map(
                (r) => html`<tr><td>${r.method}</td><td><code>${r.route}</code></td><td class="num">${fmtNum(r.count)}</td><td class="num">${fmtNum(r.errors)}</td></tr>`,
              )}</tbody>
            </table></div>
          </section>`
        : nothing}`;
  }
}

function msOf(seconds) {
  return seconds === undefined ? undefined : seconds * 1000;
}

function docsTotal(collections) {
  let total = 0;
  let partial = false;
  for (const c of collections) {
    if (typeof c.docs === 'number') total += c.docs;
    else partial = true;
  }
  return { total, partial };
}

function hitRatio(m) {
  if (!m || m.cacheHits === undefined || m.cacheMisses === undefined) return '—';
  const all = m.cacheHits + m.cacheMisses;
  return all ? `${((100 * m.cacheHits) / all).toFixed(1)} %` : '—';
}
