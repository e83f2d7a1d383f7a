// The console's pure modules run in Node as they do in the browser: the Prometheus text parser
// and latency quantiles (against a real node's /metrics too), the line diff, JSON helpers.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ConcordNode, UI_DIR, cleanup } from './helpers.mjs';

// The browser's files, loaded as ES modules whatever Node makes of a package-less .js file
// (these three import nothing).
const load = (f) => import(`data:text/javascript;base64,${fs.readFileSync(path.join(UI_DIR, f)).toString('base64')}`);
const { parseMetrics, sum, gauge, buckets, bucketDelta, quantile, requestTotals, byRoute } = await load('js/metrics.js');
const { lineDiff, foldDiff } = await load('js/diff.js');
const { canonical, getPath, inexactIntegers, parseJson, pointer, leaves, short, fmtBytes, ago } = await load('js/util.js');

after(cleanup);

const TEXT = `# HELP concord_http_requests HTTP requests.
# TYPE concord_http_requests counter
concord_http_requests_total{method="GET",route="/v1/health",status="200"} 10
concord_http_requests_total{method="PUT",route="/v1/collections/{collection}/docs/{id}",status="503"} 2
concord_http_requests_total{method="GET",route="/v1/x",status="500"} 1
concord_http_requests_total{method="GET",route="/v1/y",status="404"} 3
concord_http_request_duration_seconds_bucket{le="0.001",method="GET",route="/a",status="200"} 50
concord_http_request_duration_seconds_bucket{le="0.01",method="GET",route="/a",status="200"} 90
concord_http_request_duration_seconds_bucket{le="0.1",method="GET",route="/a",status="200"} 100
concord_http_request_duration_seconds_bucket{le="+Inf",method="GET",route="/a",status="200"} 100
concord_http_request_duration_seconds_bucket{method="GET",route="/b",status="200",le="0.001"} 0
concord_http_request_duration_seconds_bucket{method="GET",route="/b",status="200",le="0.01"} 0
concord_http_request_duration_seconds_bucket{method="GET",route="/b",status="200",le="0.1"} 0
concord_http_request_duration_seconds_bucket{method="GET",route="/b",status="200",le="+Inf"} 0
concord_store_bytes 24576
concord_weird{path="a \\"quoted\\" \\\\ path",x="1"} 7
`;

test('the Prometheus parser reads samples, labels and escapes', () => {
  const s = parseMetrics(TEXT);
  assert.equal(gauge(s, 'concord_store_bytes'), 24576);
  assert.equal(sum(s, 'concord_http_requests_total'), 16);
  assert.equal(gauge(s, 'concord_missing'), undefined);
  const weird = s.find((x) => x.name === 'concord_weird');
  assert.deepEqual(weird.labels, { path: 'a "quoted" \\ path', x: '1' });
  assert.deepEqual(requestTotals(s), { all: 16, err5xx: 3, shed503: 2, err4xx: 3 });
  assert.deepEqual(byRoute(s)[0], { method: 'GET', route: '/v1/health', count: 10, errors: 0 });
});

test('latency quantiles come from histogram buckets, whatever the label order', () => {
  const s = parseMetrics(TEXT);
  const b = buckets(s, 'concord_http_request_duration_seconds');
  assert.deepEqual(b, [[0.001, 50], [0.01, 90], [0.1, 100], [Infinity, 100]]);
  assert.ok(Math.abs(quantile(0.5, b) - 0.001) < 1e-12, 'p50 at the first bound');
  // p99: rank 99 of 100, inside (0.01, 0.1]: 0.01 + 0.09 * 9/10.
  assert.ok(Math.abs(quantile(0.99, b) - 0.091) < 1e-12);
  assert.equal(quantile(0.5, []), undefined);
  assert.equal(quantile(0.5, [[0.1, 0], [Infinity, 0]]), undefined, 'no observation, no quantile');
  // Beyond the last finite bound: that bound.
  assert.equal(quantile(0.99, [[0.1, 1], [Infinity, 100]]), 0.1);
  // Between two scrapes: only the new observations.
  const later = [[0.001, 50], [0.01, 90], [0.1, 110], [Infinity, 110]];
  const d = bucketDelta(later, b);
  assert.deepEqual(d, [[0.001, 0], [0.01, 0], [0.1, 10], [Infinity, 10]]);
  assert.ok(quantile(0.5, d) > 0.01 && quantile(0.5, d) <= 0.1);
});

test("the parser understands a real node's /metrics", async () => {
  const node = await ConcordNode.start();
  await fetch(`${node.url}/v1/health`);
  await node.rest()('PUT', '/v1/collections/c/docs/d', { a: 1 });
  const s = parseMetrics(await (await fetch(`${node.url}/metrics`)).text());
  assert.ok(sum(s, 'concord_http_requests_total') >= 2);
  for (const name of ['concord_store_bytes', 'concord_cache_bytes', 'concord_memtable_bytes', 'concord_block_cache_bytes', 'concord_websockets_open', 'concord_websocket_documents', 'concord_streams_open']) {
    assert.notEqual(gauge(s, name), undefined, `${name} is exposed`);
  }
  const b = buckets(s, 'concord_http_request_duration_seconds');
  assert.ok(b.length > 2 && b[b.length - 1][0] === Infinity);
  const p99 = quantile(0.99, b);
  assert.ok(p99 > 0 && p99 < 10, `a plausible p99 (${p99} s)`);
});

test('the line diff marks removed and added lines and keeps the rest', () => {
  const a = JSON.stringify({ a: 1, b: 2, c: [1, 2, 3] }, null, 2);
  const b = JSON.stringify({ a: 1, b: 3, c: [1, 3], d: true }, null, 2);
  const d = lineDiff(a, b);
  const text = (op) => d.filter((l) => l.op === op).map((l) => l.text.trim());
  assert.deepEqual(text('-'), ['"b": 2,', '2,', ']']);
  assert.deepEqual(text('+'), ['"b": 3,', '],', '"d": true']);
  assert.equal(d.filter((l) => l.op === ' ').length, 6, 'the common lines kept: {, "a": 1, "c": [, 1, 3 and }');
  // Applying the diff gives back both texts.
  assert.equal(d.filter((l) => l.op !== '+').map((l) => l.text).join('\n'), a);
  assert.equal(d.filter((l) => l.op !== '-').map((l) => l.text).join('\n'), b);
  assert.deepEqual(lineDiff('x', 'x'), [{ op: ' ', text: 'x' }]);
  // Long unchanged runs fold, with context kept around changes.
  const long = [...Array(40).keys()].map(String);
  const changed = long.map((l) => (l === '20' ? 'twenty' : l));
  const folded = foldDiff(lineDiff(long.join('\n'), changed.join('\n')), 2);
  assert.deepEqual(folded.map((l) => l.op).join(''), '…  -+  …');
  assert.match(folded[0].text, /^18 unchanged lines$/);
  assert.match(folded[folded.length - 1].text, /^17 unchanged lines$/);
});

test('JSON helpers: parse errors with positions, pointers, paths, canonical keys', () => {
  assert.deepEqual(parseJson('{"a": 1}', { object: true }), { value: { a: 1 } });
  assert.match(parseJson('{\n  "a": 1,\n}').error, /line 3, column 1/);
  assert.match(parseJson('[1]', { object: true, what: 'The document' }).error, /The document must be a JSON object/);
  assert.equal(pointer(['a/b', 'c~d', 0]), '/a~1b/c~0d/0');
  assert.equal(getPath({ a: { b: [{ c: 5 }] } }, 'a.b.0.c'), 5);
  assert.equal(getPath({ a: 1 }, 'a.b'), undefined);
  assert.deepEqual(leaves({ n: 1, t: 'x', o: { m: 2.5 }, l: ['y'] }).map((l) => `${l.ptr}:${l.type}`), ['/n:number', '/t:string', '/o/m:number', '/l/0:string']);
  assert.equal(JSON.stringify(canonical({ b: 1, a: { d: 1, c: [{ f: 1, e: 2 }] } })), '{"a":{"c":[{"e":2,"f":1}],"d":1},"b":1}');
  assert.equal(short('a'.repeat(64) + '.' + 'b'.repeat(64), 4), 'aaaa.bbbb');
  assert.equal(fmtBytes(1536), '1.50 KiB');
  assert.equal(ago(1000, 4000), '3 s ago');
  assert.equal(ago(null), 'never');
});

test('integers a browser would round are found in the text, not in strings, and refused by parseJson', () => {
  const text = '{"id": "9007199254740993", "esc": "\\"12345678901234567890", "ok": 9007199254740991, "neg": -9007199254740993, '
    + '"big": 12345678901234567890, "float": 1.5e300, "dec": 9007199254740993.5, "list": [1, 18446744073709551615]}';
  assert.deepEqual(inexactIntegers(text), ['-9007199254740993', '12345678901234567890', '18446744073709551615']);
  assert.deepEqual(inexactIntegers('{"a": [1, -2, 3e5], "b": "99999999999999999999"}'), []);
  const r = parseJson('{"n": 9007199254740993}', { object: true, what: 'The document' });
  assert.match(r.error, /9007199254740993, an integer beyond ±2\^53/);
  assert.equal(r.value, undefined);
});
