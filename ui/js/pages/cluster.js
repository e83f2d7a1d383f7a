// Cluster: this node and every member it knows (GET /v1/cluster, polled every second): state,
// last contact and sync, what anti-entropy last repaired, push queue depth, and each member's
// digest root compared with this node's, so divergence and convergence can be watched.

import { html, nothing } from '../../vendor/lit-html/lit-html.js';
import { api } from '../api.js';
import { Page, problem, loading } from '../core.js';
import { ago, fmtBytes, fmtNum, fmtTime } from '../util.js';

const POLL_MS = 1000;

export class ClusterPage extends Page {
  title() {
    return 'Cluster';
  }

  start() {
    this.view_ = null;
    this.error = null;
    this.fetchedAt = 0;
    this.every(POLL_MS, () => this.poll());
  }

  async poll() {
    try {
      const r = await api('/v1/cluster');
      this.view_ = r.data;
      this.error = null;
      this.fetchedAt = Date.now();
    } catch (e) {
      this.error = e;
    }
    this.update();
    // Only an admin token may see the cluster: a 403 will not change by asking again.
    return this.error?.status !== 403;
  }

  memberRow(m, root, now) {
    const converged = m.digest_root == null || root == null ? 'unknown' : m.digest_root === root ? 'true' : 'false';
    const r = m.last_repair;
    return html`<tr data-test="cluster-row" data-address=${m.address} data-node-id=${m.node_id ?? ''} data-state=${m.state} data-converged=${converged}>
      <td><code>${m.address}</code></td>
      <td>${m.node_id ? html`<code title=${m.node_id}>${m.node_id.slice(0, 8)}</code>` : html`<span class="muted">not yet</span>`}</td>
      <td>
        <span class=${`pill state-${m.state}`} data-test="cluster-state">${m.state}</span>
        ${m.consecutive_failures ? html`<span class="small muted" title="Failed requests since the last success"> ${m.consecutive_failures} failures</span>` : nothing}
        ${m.last_error ? html`<div class="small bad" data-test="cluster-error">${m.last_error}</div>` : nothing}
      </td>
      <td title=${m.last_seen_ms ? fmtTime(m.last_seen_ms) : ''}>${ago(m.last_seen_ms, now)}</td>
      <td title=${m.last_sync_ms ? fmtTime(m.last_sync_ms) : ''}>${ago(m.last_sync_ms, now)}</td>
      <td>${r
        ? html`<span title=${fmtTime(r.at_ms)}>${fmtNum(r.docs)} docs, ${ago(r.at_ms, now)}</span>
            <div class="small muted">sent ${fmtBytes(r.bytes_sent)}, received ${fmtBytes(r.bytes_received)}, ${fmtNum(r.millis)} ms</div>
            ${r.skipped_docs ? html`<div class="small warn" title=${(r.skipped || []).map((s) => (typeof s === 'string' ? s : JSON.stringify(s))).join('\n')}>${fmtNum(r.skipped_docs)} skipped</div>` : nothing}`
        : html`<span class="muted">nothing yet</span>`}</td>
      <td class="num" data-test="cluster-push-queue">${fmtNum(m.push_queue)}</td>
      <td>
        ${m.digest_root ? html`<code title=${m.digest_root}>${m.digest_root.slice(0, 16)}</code>` : html`<span class="muted">—</span>`}
        ${m.digest_root_at_ms ? html`<div class="small muted">${ago(m.digest_root_at_ms, now)}</div>` : nothing}
      </td>
      <td><span class=${`pill conv-${converged}`} data-test="cluster-converged">${converged === 'true' ? 'converged' : converged === 'false' ? 'diverged' : 'unknown'}</span></td>
    </tr>`;
  }

  view() {
    const v = this.view_;
    const now = Date.now();
    const up = v ? v.members.filter((m) => m.state === 'up').length : 0;
    const conv = v ? v.members.filter((m) => m.digest_root && m.digest_root === v.digest_root).length : 0;
    return html`<h1>Cluster</h1>
      ${problem(this.error)}
      ${!v && !this.error ? loading() : nothing}
      ${v
        ? html`<p data-test="cluster-summary">
            ${v.members.length
              ? html`${v.members.length} other member${v.members.length === 1 ? '' : 's'}: ${up} up, ${conv} converged with this node.`
              : 'This node has no peers: it is not part of a cluster.'}
            <span class="muted small">Updated ${ago(this.fetchedAt, now)}; a member's digest root is the one it reported at its last contact.</span>
          </p>
          <div class="table-wrap"><table data-test="cluster-table">
            <thead><tr>
              <th scope="col">Address</th><th scope="col">Node</th><th scope="col">State</th><th scope="col">Last contact</th>
              <th scope="col">Last sync</th><th scope="col">Last repair</th><th scope="col" class="num">Push queue</th>
              <th scope="col">Digest root</th><th scope="col">Replica</th>
            </tr></thead>
            <tbody>
              <tr data-test="cluster-row" data-self="true" data-address=${v.advertise} data-node-id=${v.node_id} data-state="up" data-converged="true" class="self">
                <td><code>${v.advertise}</code> <span class="badge">this node</span></td>
                <td><code title=${v.node_id}>${v.node_id.slice(0, 8)}</code></td>
                <td><span class="pill state-up">up</span></td>
                <td>—</td><td>—</td><td>—</td><td class="num">—</td>
                <td>${v.digest_root ? html`<code title=${v.digest_root}>${v.digest_root.slice(0, 16)}</code>` : '—'}</td>
                <td><span class="muted">reference</span></td>
              </tr>
              ${v.members.map((m) => this.memberRow(m, v.digest_root, now))}
            </tbody>
          </table></div>`
        : nothing}`;
  }
}
