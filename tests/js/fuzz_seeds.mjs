// Writes the seed inputs of the fuzz targets (fuzz/seeds/<target>/) with the stock Automerge
// and CBOR libraries clients use, so fuzzing starts from real protocol traffic.
// Run: node tests/js/fuzz_seeds.mjs (after npm install in tests/js). Output is deterministic.
import { mkdirSync, writeFileSync, rmSync } from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import * as A from "@automerge/automerge"
import { Encoder } from "cbor-x"
import bs58check from "bs58check"

const root = join(dirname(fileURLToPath(import.meta.url)), "../../fuzz/seeds")
const out = {}
function seed(target, name, bytes) {
  ;(out[target] ??= []).push([name, typeof bytes === "string" ? Buffer.from(bytes) : Buffer.from(bytes)])
}

const actor = (n) => n.toString(16).padStart(32, "0")
let a = A.from({ title: "hello", list: [1, 2, 3], nested: { a: true } }, { actor: actor(1) })
a = A.change(a, { time: 0 }, (d) => { d.text = "some text"; d.count = new A.Counter(3) })
let b = A.clone(a, { actor: actor(2) })
b = A.change(b, { time: 0 }, (d) => { d.title = "from b"; d.list.push(4); A.splice(d, ["text"], 0, 4, "more") })

// Sync messages: a fresh exchange (heads, Bloom filter), then one carrying changes.
let [sa, sb] = [A.initSyncState(), A.initSyncState()]
let msgs = []
for (let i = 0; i < 6; i++) {
  let m
  ;[sa, m] = A.generateSyncMessage(a, sa)
  if (m) { msgs.push(m); [b, sb] = A.receiveSyncMessage(b, sb, m) }
  ;[sb, m] = A.generateSyncMessage(b, sb)
  if (m) { msgs.push(m); [a, sa] = A.receiveSyncMessage(a, sa, m) }
}
msgs.forEach((m, i) => seed("sync_message", `msg${i}`, m))

// Changes: a saved document, single changes, several concatenated.
const changes = A.getAllChanges(b)
seed("changes", "saved", A.save(a))
changes.forEach((c, i) => seed("changes", `change${i}`, c))
seed("changes", "all", Buffer.concat(changes.map((c) => Buffer.from(c))))

// automerge-repo frames, encoded as automerge-repo does (byte strings, no records).
const encoder = new Encoder({ tagUint8Array: false, useRecords: false })
const docId = bs58check.encode(Buffer.alloc(16, 7))
const frames = {
  join: { type: "join", senderId: "client-1", supportedProtocolVersions: ["1"], peerMetadata: { storageId: "s1", isEphemeral: false } },
  request: { type: "request", senderId: "client-1", targetId: "server", documentId: docId, data: msgs[0] },
  sync: { type: "sync", senderId: "client-1", targetId: "server", documentId: docId, data: msgs[1] ?? msgs[0] },
  ephemeral: { type: "ephemeral", senderId: "client-1", targetId: "server", documentId: docId, sessionId: "x", count: 3, data: new Uint8Array([1, 2]) },
  leave: { type: "leave", senderId: "client-1" },
}
for (const [name, f] of Object.entries(frames)) seed("repo_frame", name, encoder.encode(f))
// Plain cbor-x tags typed arrays (tag 64): other clients may send that.
seed("repo_frame", "sync-tagged", new Encoder({ useRecords: false }).encode(frames.sync))

// JSON writes: first byte picks ops (0), merge patch (1) or replace (2).
const json = (mode, v) => Buffer.concat([Buffer.from([mode]), Buffer.from(JSON.stringify(v))])
seed("json_write", "ops", json(0, [
  { op: "set", path: "/title", value: "x" },
  { op: "set", path: "/nested/b", value: { c: [1, 2, { d: null }] } },
  { op: "remove", path: "/list/0", count: 1 },
  { op: "remove", path: "/nested/a" },
  { op: "increment", path: "/count", by: 2 },
  { op: "counter", path: "/k", value: 5 },
  { op: "splice", path: "/text", index: 2, delete: 1, insert: "é😀" },
  { op: "insert", path: "/list", index: 1, value: 9 },
  { op: "insert", path: "/list/-", values: [1, "a", true] },
]))
seed("json_write", "patch", json(1, { title: null, nested: { a: false, z: [1, 1.5, -3, 18446744073709551615] }, text: "new" }))
seed("json_write", "replace", json(2, { a: { b: [true, null, "s", 0.25, -9007199254740993] }, "": "", "~1": 1 }))

// The short strings: versions, ETags, pointers, cursors.
const hash = "0123456789abcdef".repeat(4)
for (const [i, s] of [hash, `${hash},${hash}`, `"${hash}"`, `W/"${hash}"`, "/nested/b/c", "/list/-", "/a~1b/~0c",
  "", "/", "now", "0", "18446744073709551615"].entries()) seed("text_inputs", `s${i}`, s)

for (const [target, files] of Object.entries(out)) {
  const dir = join(root, target)
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  for (const [name, bytes] of files) writeFileSync(join(dir, name), bytes)
}
console.log(Object.entries(out).map(([t, f]) => `${t}: ${f.length}`).join(", "))
