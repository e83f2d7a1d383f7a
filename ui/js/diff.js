// A line diff by longest common subsequence: what changed between two pretty-printed JSON texts.

/** Lines of `a` and `b` as [{op: ' ' | '-' | '+', text}], in order. */
export function lineDiff(a, b) {
  const A = a.split('\n');
  const B = b.split('\n');
  let pre = 0;
  while (pre < A.length && pre < B.length && A[pre] === B[pre]) pre++;
  let suf = 0;
  while (suf < A.length - pre && suf < B.length - pre && A[A.length - 1 - suf] === B[B.length - 1 - suf]) suf++;
  const a2 = A.slice(pre, A.length - suf);
  const b2 = B.slice(pre, B.length - suf);
  const out = A.slice(0, pre).map((text) => ({ op: ' ', text }));
  const n = a2.length;
  const m = b2.length;
  if (n * m > 4_000_000) {
    // Too large to compare line by line in the browser: everything in between changed.
    for (const text of a2) out.push({ op: '-', text });
    for (const text of b2) out.push({ op: '+', text });
  } else {
    // lcs[i * w + j]: length of the longest common subsequence of a2[i..] and b2[j..].
    const w = m + 1;
    const lcs = new Uint32Array((n + 1) * w);
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        lcs[i * w + j] = a2[i] === b2[j] ? lcs[(i + 1) * w + j + 1] + 1 : Math.max(lcs[(i + 1) * w + j], lcs[i * w + j + 1]);
      }
    }
    let i = 0;
    let j = 0;
    while (i < n && j < m) {
      if (a2[i] === b2[j]) {
        out.push({ op: ' ', text: a2[i] });
        i++;
        j++;
      } else if (lcs[(i + 1) * w + j] >= lcs[i * w + j + 1]) {
        out.push({ op: '-', text: a2[i++] });
      } else {
        out.push({ op: '+', text: b2[j++] });
      }
    }
    while (i < n) out.push({ op: '-', text: a2[i++] });
    while (j < m) out.push({ op: '+', text: b2[j++] });
  }
  for (const text of A.slice(A.length - suf)) out.push({ op: ' ', text });
  return out;
}

/**
 * The diff with long unchanged runs folded: at most `context` lines kept around each change;
 * a folded run becomes {op: '…', text: 'N unchanged lines'}.
 */
export function foldDiff(lines, context = 3) {
  const keep = new Array(lines.length).fill(false);
  lines.forEach((l, i) => {
    if (l.op !== ' ') for (let k = Math.max(0, i - context); k <= Math.min(lines.length - 1, i + context); k++) keep[k] = true;
  });
  const out = [];
  let skipped = 0;
  lines.forEach((l, i) => {
    if (keep[i]) {
      if (skipped) out.push({ op: '…', text: `${skipped} unchanged line${skipped === 1 ? '' : 's'}` });
      skipped = 0;
      out.push(l);
    } else {
      skipped++;
    }
  });
  if (skipped) out.push({ op: '…', text: `${skipped} unchanged line${skipped === 1 ? '' : 's'}` });
  return out;
}
