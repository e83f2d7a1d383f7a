// The client workload, identical for every server: N clients each create M documents and edit
// each E times; a document is synced when the server's heads (reported to the client through
// remote-heads) equal the client's. Then a fresh client loads every document.
// Usage: node workload.mjs WS_URL N M E   → prints one JSON line of figures.
import { Repo } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"

const [url, N, M, E] = [process.argv[2], ...process.argv.slice(3).map(Number)]
const same = (a, b) => a.length === b.length && a.every((h, i) => h === b[i])

function whenSynced(handle) {
  return new Promise((resolve) => {
    const check = ({ heads }) => { if (same([...heads].sort(), [...handle.heads()].sort())) { handle.off("remote-heads", check); resolve() } }
    handle.on("remote-heads", check)
  })
}

const latencies = []
const urls = []
const start = performance.now()
await Promise.all(Array.from({ length: N }, async (_, c) => {
  const repo = new Repo({ network: [new WebSocketClientAdapter(url)], enableRemoteHeadsGossiping: true })
  await new Promise((r) => setTimeout(r, 50))
  const waits = []
  for (let m = 0; m < M; m++) {
    const h = repo.create()
    for (let e = 0; e < E; e++) h.change((d) => { d.client = c; d.doc = m; d.edit = e; d.text = `client ${c} doc ${m} edit ${e}` })
    const t = performance.now()
    waits.push(whenSynced(h).then(() => latencies.push(performance.now() - t)))
    urls.push(h.url)
  }
  await Promise.all(waits)
  await repo.shutdown()
}))
const syncSecs = (performance.now() - start) / 1000

const loadStart = performance.now()
const fresh = new Repo({ network: [new WebSocketClientAdapter(url)] })
const found = await Promise.all(urls.map((u) => fresh.find(u)))
const loadSecs = (performance.now() - loadStart) / 1000
if (found.some((h) => typeof h.doc().edit !== "number")) throw new Error("a loaded document is incomplete")
await fresh.shutdown()

latencies.sort((a, b) => a - b)
const pct = (p) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]
console.log(JSON.stringify({
  docs: urls.length,
  sync_docs_per_s: urls.length / syncSecs,
  sync_p50_ms: pct(0.5),
  sync_p99_ms: pct(0.99),
  load_docs_per_s: urls.length / loadSecs,
}))
process.exit(0)
