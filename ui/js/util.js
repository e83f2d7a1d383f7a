// Small formatting and JSON helpers shared by the pages.

export const pretty = (v) => JSON.stringify(v, null, 2);

/** The value with every object's keys sorted (as the node returns documents): for fair diffs. */
export function canonical(v) {
  if (Array.isArray(v)) return v.map(canonical);
  if (v === null || typeof v !== 'object') return v;
  const out = {};
  for (const k of Object.keys(v).sort()) out[k] = canonical(v[k]);
  return out;
}

/** A version or hash cut to its first characters (the full value goes in a title attribute). */
export function short(hash, n = 12) {
  if (!hash) return '';
  return hash
    .split('.')
    .map((h) => h.slice(0, n))
    .join('.');
}

export function fmtBytes(n) {
  if (n === undefined || n === null || Number.isNaN(n)) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = Number(n);
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v.toFixed(0) : v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

export function fmtNum(n, digits = 0) {
  if (n === undefined || n === null || Number.isNaN(n)) return '—';
  return Number(n).toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

/** A duration in milliseconds, readably (0.42 ms, 12 ms, 1.3 s). */
export function fmtMs(ms) {
  if (ms === undefined || ms === null || Number.isNaN(ms)) return '—';
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${ms.toFixed(ms < 10 ? 1 : 0)} ms`;
  return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

export function fmtDuration(seconds) {
  if (seconds === undefined || seconds === null) return '—';
  let s = Math.floor(seconds);
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (d) return `${d} d ${h} h`;
  if (h) return `${h} h ${m} min`;
  if (m) return `${m} min ${s} s`;
  return `${s} s`;
}

/** "3 s ago", "2 min ago", "never" for a time in ms since the epoch. */
export function ago(ms, now = Date.now()) {
  if (ms === undefined || ms === null) return 'never';
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function fmtTime(ms) {
  if (ms === undefined || ms === null) return '—';
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) return '—';
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

/**
 * JSON.parse with a readable error: {value} or {error: "line 3, column 7: ..."}. With
 * `object`, the value must be a JSON object.
 */
/**
 * The integer literals of a JSON text that JavaScript cannot hold exactly (beyond ±2^53): parsed,
 * they round, and saving the parsed value would write the rounded number. A scan of the text,
 * skipping strings, because the parsed value no longer knows.
 */
export function inexactIntegers(text) {
  const out = [];
  const number = /-?\d+(\.\d+)?([eE][+-]?\d+)?/y;
  for (let i = 0; i < text.length; ) {
    const ch = text[i];
    if (ch === '"') {
      for (i++; i < text.length && text[i] !== '"'; i += text[i] === '\\' ? 2 : 1);
      i++;
    } else if (ch === '-' || (ch >= '0' && ch <= '9')) {
      number.lastIndex = i;
      const m = number.exec(text);
      if (!m) {
        i++;
        continue;
      }
      if (!m[1] && !m[2] && !Number.isSafeInteger(Number(m[0]))) out.push(m[0]);
      i += m[0].length;
    } else {
      i++;
    }
  }
  return out;
}

export function parseJson(text, { object = false, what = 'JSON' } = {}) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (e) {
    const msg = String(e.message || e);
    const m = /position (\d+)/.exec(msg);
    let where = '';
    if (m) {
      const pos = Number(m[1]);
      const before = text.slice(0, pos);
      const line = before.split('\n').length;
      const col = pos - before.lastIndexOf('\n');
      where = `line ${line}, column ${col}: `;
    }
    const clean = msg.replace(/^JSON\.parse: /, '').replace(/ \(line \d+ column \d+\)$/, '');
    return { error: `${what} is not valid: ${where}${clean}` };
  }
  if (object && (value === null || typeof value !== 'object' || Array.isArray(value))) {
    return { error: `${what} must be a JSON object ({ ... })` };
  }
  const inexact = inexactIntegers(text);
  if (inexact.length) {
    return {
      error: `${what} holds ${inexact[0]}, an integer beyond ±2^53 that a browser rounds (to ${Number(inexact[0])}): write it through the API, or as a string`,
    };
  }
  return { value };
}

/** A value at a dotted path (`a.b.0.c`), or undefined. */
export function getPath(obj, dotted) {
  let cur = obj;
  for (const part of dotted.split('.')) {
    if (cur === null || cur === undefined || typeof cur !== 'object') return undefined;
    cur = cur[part];
  }
  return cur;
}

/** An RFC 6901 JSON Pointer from path segments. */
export function pointer(segments) {
  return segments.map((s) => `/${String(s).replace(/~/g, '~0').replace(/\//g, '~1')}`).join('');
}

/**
 * Leaves of a document worth offering CRDT operations on: numbers and strings, with their
 * JSON Pointer, up to `max` of them, depth-first.
 */
export function leaves(doc, max = 40) {
  const out = [];
  const walk = (v, segs, depth) => {
    if (out.length >= max) return;
    if (typeof v === 'number' || typeof v === 'string') {
      out.push({ ptr: pointer(segs), type: typeof v, value: v });
      return;
    }
    if (depth > 5 || v === null || typeof v !== 'object') return;
    if (Array.isArray(v)) v.forEach((x, i) => walk(x, [...segs, i], depth + 1));
    else for (const k of Object.keys(v)) walk(v[k], [...segs, k], depth + 1);
  };
  walk(doc, [], 0);
  return out;
}

/** A cell's text for a value: strings as they are, the rest as compact JSON, cut at `max`. */
export function cellText(v, max = 80) {
  if (v === undefined) return '';
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

/** Comma-separated list to a trimmed array without empties. */
export function splitList(s) {
  return String(s || '')
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
}

/** Code points of a string (splice positions count Unicode code points). */
export const codePoints = (s) => Array.from(s).length;
