// The node's /metrics (Prometheus text format, version 0.0.4): a parser and the few summaries
// the console shows (request totals, latency quantiles from histogram buckets).

/** Parses exposition text into samples {name, labels, value}. Comments and malformed lines are skipped. */
export function parseMetrics(text) {
  const samples = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    let name;
    let labels = {};
    let rest;
    const brace = line.indexOf('{');
    const space = line.indexOf(' ');
    if (brace !== -1 && (space === -1 || brace < space)) {
      name = line.slice(0, brace);
      const end = parseLabels(line, brace + 1, labels);
      if (end < 0) continue;
      rest = line.slice(end + 1).trim();
    } else {
      if (space === -1) continue;
      name = line.slice(0, space);
      rest = line.slice(space + 1).trim();
    }
    const valueText = rest.split(/\s+/)[0];
    const value = valueText === '+Inf' ? Infinity : valueText === '-Inf' ? -Infinity : Number(valueText);
    if (Number.isNaN(value) && valueText !== 'NaN') continue;
    samples.push({ name, labels, value });
  }
  return samples;
}

// Reads `k="v",...}` from position i into `labels`; returns the index of the closing brace, or -1.
function parseLabels(line, i, labels) {
  while (i < line.length) {
    while (line[i] === ' ' || line[i] === ',') i++;
    if (line[i] === '}') return i;
    const eq = line.indexOf('=', i);
    if (eq < 0 || line[eq + 1] !== '"') return -1;
    const key = line.slice(i, eq).trim();
    let j = eq + 2;
    let val = '';
    while (j < line.length && line[j] !== '"') {
      if (line[j] === '\\' && j + 1 < line.length) {
        const c = line[j + 1];
        val += c === 'n' ? '\n' : c;
        j += 2;
      } else {
        val += line[j++];
      }
    }
    if (j >= line.length) return -1;
    labels[key] = val;
    i = j + 1;
  }
  return -1;
}

/** Sum of every sample of `name` whose labels pass `filter`. */
export function sum(samples, name, filter = () => true) {
  let total = 0;
  let found = false;
  for (const s of samples) {
    if (s.name === name && filter(s.labels)) {
      total += s.value;
      found = true;
    }
  }
  return found ? total : undefined;
}

/** The value of a label-less sample, or undefined. */
export function gauge(samples, name) {
  return sum(samples, name);
}

/**
 * Cumulative bucket counts of a histogram summed over all its series that pass `filter`:
 * a sorted array of [le, count].
 */
export function buckets(samples, name, filter = () => true) {
  const byLe = new Map();
  for (const s of samples) {
    if (s.name !== `${name}_bucket` || !filter(s.labels)) continue;
    const le = s.labels.le === '+Inf' ? Infinity : Number(s.labels.le);
    byLe.set(le, (byLe.get(le) || 0) + s.value);
  }
  return [...byLe.entries()].sort((a, b) => a[0] - b[0]);
}

/** Bucket counts of `now` minus those of `before` (the requests between two scrapes). */
export function bucketDelta(now, before) {
  if (!before) return now;
  const prev = new Map(before);
  return now.map(([le, c]) => [le, Math.max(0, c - (prev.get(le) || 0))]);
}

/**
 * The q-quantile (0..1) of cumulative buckets, interpolated linearly inside the bucket as
 * Prometheus' histogram_quantile does. Undefined without observations.
 */
export function quantile(q, bks) {
  if (!bks.length) return undefined;
  const total = bks[bks.length - 1][1];
  if (!total) return undefined;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const [le, count] of bks) {
    if (count >= rank) {
      if (le === Infinity) return prevLe; // beyond the last finite bound: its lower edge
      if (count === prevCount) return le;
      return prevLe + ((le - prevLe) * (rank - prevCount)) / (count - prevCount);
    }
    prevLe = le;
    prevCount = count;
  }
  return prevLe;
}

/** Request totals by class from concord_http_requests_total. */
export function requestTotals(samples) {
  const name = 'concord_http_requests_total';
  const st = (l) => String(l.status || '');
  return {
    all: sum(samples, name) || 0,
    err5xx: sum(samples, name, (l) => st(l).startsWith('5')) || 0,
    shed503: sum(samples, name, (l) => st(l) === '503') || 0,
    err4xx: sum(samples, name, (l) => st(l).startsWith('4')) || 0,
  };
}

/** Requests per (method, route): [{method, route, count, errors}] sorted by count, descending. */
export function byRoute(samples) {
  const m = new Map();
  for (const s of samples) {
    if (s.name !== 'concord_http_requests_total') continue;
    const key = `${s.labels.method} ${s.labels.route}`;
    const e = m.get(key) || { method: s.labels.method, route: s.labels.route, count: 0, errors: 0 };
    e.count += s.value;
    if (String(s.labels.status || '').startsWith('5')) e.errors += s.value;
    m.set(key, e);
  }
  return [...m.values()].sort((a, b) => b.count - a.count);
}
