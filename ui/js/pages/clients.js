// Clients: connected automerge-repo WebSocket clients, the documents they have open, and open
// HTTP streams, from /metrics (counts only), polled every 2 s.

import { html, nothing } from '../../vendor/lit-html/lit-html.js';
import { api } from '../api.js';
import { Page, problem, loading } from '../core.js';
import { LiveChart } from '../chart.js';
import { parseMetrics, gauge } from '../metrics.js';
import { fmtNum } from '../util.js';

const POLL_MS = 2000;

export class ClientsPage extends Page {
  title() {
    return 'Clients';
  }

  start() {
    this.m = null;
    this.error = null;
    this.chart = new LiveChart({ label: 'WebSocket clients', test: 'chart-clients', color: '#059669', digits: 0 });
    this.every(POLL_MS, () => this.poll());
  }

  stop() {
    super.stop();
    this.chart?.destroy();
  }

  async poll() {
    try {
      const r = await api('/metrics', { as: 'text' });
      const s = parseMetrics(r.data);
      this.m = {
        websockets: gauge(s, 'concord_websockets_open'),
        wsDocs: gauge(s, 'concord_websocket_documents'),
        streams: gauge(s, 'concord_streams_open'),
        syncOverQuota: gauge(s, 'concord_sync_states_over_quota_total'),
      };
      this.error = null;
      this.chart.push(Date.now() / 1000, this.m.websockets ?? null);
    } catch (e) {
      this.error = e;
    }
    this.update();
    queueMicrotask(() => this.chart.draw());
  }

  view() {
    const m = this.m;
    return html`<h1>Clients</h1>
      <p class="muted">Apps connected to this node right now. Only counts are shown: no client identities, no tokens.</p>
      ${problem(this.error)}
      ${!m && !this.error ? loading() : nothing}
      <div class="cards">
        <section class="card stat" aria-labelledby="cl-ws">
          <h2 id="cl-ws">automerge-repo clients</h2>
          <p class="big" data-test="clients-websockets">${fmtNum(m?.websockets)}</p>
          <p class="muted small">WebSocket connections open on <code>/v1/automerge-repo</code></p>
        </section>
        <section class="card stat" aria-labelledby="cl-docs">
          <h2 id="cl-docs">Documents open</h2>
          <p class="big" data-test="clients-documents">${fmtNum(m?.wsDocs)}</p>
          <p class="muted small">over all those connections (a document open on two connections counts twice)</p>
        </section>
        <section class="card stat" aria-labelledby="cl-streams">
          <h2 id="cl-streams">HTTP streams</h2>
          <p class="big" data-test="clients-streams">${fmtNum(m?.streams)}</p>
          <p class="muted small">changes feeds (SSE, long polls) and document event streams, this console's included</p>
        </section>
      </div>
      <section class="card" aria-labelledby="cl-chart">
        <h2 id="cl-chart">WebSocket clients over time</h2>
        ${this.chart.el}
      </section>`;
  }
}
