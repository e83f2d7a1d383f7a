// The client workload, identical for every server: N clients each create M documents and edit
// each E times; a document is synced when the server's heads (reported to the client through
// remote-heads) equal the client's. Then a fresh client loads every document.
// The server's CPU time (user + system, from /proc) is read before and after each phase, so
// each server is charged exactly what it spent on this workload.
// Usage: node workload.mjs WS_URL N M E SERVER_PID   → prints one JSON line of figures.
import { readFileSync } from "node:fs"
import { execFileSync } from "node:child_process"
import { Repo } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"

const [url, N, M, E, pid] = [process.argv[2], ...process.argv.slice(3).map(Number)]
const ticksPerSec = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim())
// Fields 14 and 15 of /proc/PID/stat (after the parenthesised command name, which may hold
// spaces): user and system time in clock ticks.
function serverCpuMs() {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / ticksPerSec
}
const pctOf = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]
const same = (a, b) => a.length === b.length && a.every((h, i) => h === b[i])

function whenSynced(handle) {
  return new Promise((resolve) => {
    const check = ({ heads }) => { if (same([...heads].sort(), [...handle.heads()].sort())) { handle.off("remote-heads", check); resolve() } }
    handle.on("remote-heads", check)
  })
}

const latencies = []
const urls = []
const cpuStart = serverCpuMs()
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
const cpuSynced = serverCpuMs()

// The fresh client asks for every document at once, as an app opening its documents does; each
// find's latency runs from the start of the phase to its handle being ready.
const fresh = new Repo({ network: [new WebSocketClientAdapter(url)] })
await new Promise((r) => setTimeout(r, 50))
const cpuLoadStart = serverCpuMs()
const clientLoadStart = process.cpuUsage()
const loadStart = performance.now()
const findLatencies = []
const found = await Promise.all(urls.map(async (u) => {
  const h = await fresh.find(u)
  findLatencies.push(performance.now() - loadStart)
  return h
}))
const loadSecs = (performance.now() - loadStart) / 1000
const cpuLoaded = serverCpuMs()
const clientLoad = process.cpuUsage(clientLoadStart)
if (found.some((h) => typeof h.doc().edit !== "number")) throw new Error("a loaded document is incomplete")
await fresh.shutdown()

// Another fresh client opens documents one at a time, as an app opening one document does: each
// find's latency without the queue of 400 finds in one client ahead of it.
const single = new Repo({ network: [new WebSocketClientAdapter(url)] })
await new Promise((r) => setTimeout(r, 50))
const oneLatencies = []
for (const u of urls.slice(0, 100)) {
  const t = performance.now()
  const h = await single.find(u)
  oneLatencies.push(performance.now() - t)
  if (typeof h.doc().edit !== "number") throw new Error("a loaded document is incomplete")
}
await single.shutdown()

latencies.sort((a, b) => a - b)
findLatencies.sort((a, b) => a - b)
oneLatencies.sort((a, b) => a - b)
console.log(JSON.stringify({
  docs: urls.length,
  sync_docs_per_s: urls.length / syncSecs,
  sync_p50_ms: pctOf(latencies, 0.5),
  sync_p99_ms: pctOf(latencies, 0.99),
  load_docs_per_s: urls.length / loadSecs,
  find_p50_ms: pctOf(findLatencies, 0.5),
  find_p99_ms: pctOf(findLatencies, 0.99),
  find_one_p50_ms: pctOf(oneLatencies, 0.5),
  find_one_p99_ms: pctOf(oneLatencies, 0.99),
  // Server CPU per document: syncing it in (creation and edits), and serving it to the fresh
  // client.
  sync_cpu_ms_per_doc: (cpuSynced - cpuStart) / urls.length,
  load_cpu_ms_per_doc: (cpuLoaded - cpuLoadStart) / urls.length,
  // The fresh client's own CPU over the load (when it nears the load's duration, the client,
  // not the server, sets the pace).
  client_load_cpu_ms: (clientLoad.user + clientLoad.system) / 1000,
  load_ms: loadSecs * 1000,
}))
process.exit(0)
