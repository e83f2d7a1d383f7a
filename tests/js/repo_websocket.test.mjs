// Stock automerge-repo 2.x clients using a Concord node as their sync server over WebSocket.
import { test } from "node:test"
import assert from "node:assert/strict"
import { Repo } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"
import WebSocket from "ws"
import { encode, decode } from "cbor-x"
import { urls, wsUrl, until, proxy, restGet } from "./helpers.mjs"

const repo = (http) => new Repo({ network: [new WebSocketClientAdapter(wsUrl(http))] })
const changed = (h, pred) => new Promise((resolve) => {
  if (pred(h.doc())) return resolve(h.doc())
  h.on("change", ({ doc }) => { if (pred(doc)) resolve(doc) })
})

test("a second client finds a document created by another and sees every edit", async () => {
  const a = repo(urls[0])
  const b = repo(urls[0])
  const h = a.create()
  h.change((d) => { d.title = "shopping"; d.items = ["milk"] })
  await until("the node has the document", async () => (await restGet(urls[0], h.documentId))?.title === "shopping")
  const hb = await b.find(h.url)
  assert.deepEqual(hb.doc().items, ["milk"])
  const seen = changed(hb, (d) => d.items.length === 2)
  h.change((d) => { d.items.push("eggs") })
  assert.deepEqual((await seen).items, ["milk", "eggs"])
  // REST writes reach the clients too.
  const r = await fetch(`${urls[0]}/v1/collections/automerge/docs/${h.documentId}`, {
    method: "PATCH", headers: { "content-type": "application/json" }, body: JSON.stringify({ owner: "rest" }) })
  assert.equal(r.status, 200)
  await changed(h, (d) => d.owner === "rest")
  await a.shutdown(); await b.shutdown()
})

test("a client of another node finds the document once it has replicated", { skip: urls.length < 2 }, async () => {
  const a = repo(urls[0])
  const h = a.create()
  h.change((d) => { d.n = 1 })
  await until("replicated to the second node", async () => (await restGet(urls[1], h.documentId))?.n === 1)
  const b = repo(urls[1])
  const hb = await b.find(h.url)
  assert.equal(hb.doc().n, 1)
  const seen = changed(hb, (d) => d.n === 2)
  h.change((d) => { d.n = 2 })
  await seen
  await a.shutdown(); await b.shutdown()
})

test("two clients edit while disconnected; after reconnecting both and REST show the merge", async () => {
  const pa = await proxy(urls[0])
  const pb = await proxy(urls[0])
  const a = repo(pa.url)
  const b = repo(pb.url)
  const h = a.create()
  h.change((d) => { d.x = 0; d.y = 0 })
  await until("on the node", async () => (await restGet(urls[0], h.documentId))?.x === 0)
  const hb = await b.find(h.url)
  pa.cut(); pb.cut()
  h.change((d) => { d.x = 1 })
  hb.change((d) => { d.y = 2 })
  pa.restore(); pb.restore()
  const merged = (d) => d.x === 1 && d.y === 2
  await Promise.all([changed(h, merged), changed(hb, merged)])
  await until("REST shows the merge", async () => {
    const v = await restGet(urls[0], h.documentId)
    return v?.x === 1 && v?.y === 2
  })
  await a.shutdown(); await b.shutdown(); pa.close(); pb.close()
})

test("a document the node lacks is unavailable", async () => {
  const a = repo(urls[0])
  await assert.rejects(a.find("automerge:2j9knpCseyhnK8izDmLpGP5WMdZQ"), /unavailable/)
  await a.shutdown()
})

test("bad frames get an error and a close, and other clients keep working", async () => {
  const a = repo(urls[0])
  const h = a.create()
  h.change((d) => { d.ok = true })
  const frames = [
    Buffer.from("not cbor at all"),
    encode({ type: "sync", senderId: "x", targetId: "y", documentId: "abc", data: new Uint8Array([1]) }), // before join
    encode({ type: "join", senderId: "bad-1", supportedProtocolVersions: ["99"] }),
  ]
  for (const frame of frames) {
    const ws = new WebSocket(wsUrl(urls[0]))
    const reply = new Promise((resolve, reject) => {
      ws.on("message", (m) => resolve(decode(m)))
      ws.on("error", reject)
    })
    const closed = new Promise((resolve) => ws.on("close", resolve))
    await new Promise((r) => ws.on("open", r))
    ws.send(frame)
    const msg = await reply
    assert.equal(msg.type, "error")
    assert.ok(msg.message.length > 0)
    await closed
  }
  // A joined client sending a garbage sync message for a bad document id.
  const ws = new WebSocket(wsUrl(urls[0]))
  await new Promise((r) => ws.on("open", r))
  const msgs = []
  ws.on("message", (m) => msgs.push(decode(m)))
  ws.send(encode({ type: "join", senderId: "bad-2", supportedProtocolVersions: ["1"], peerMetadata: { isEphemeral: true } }))
  await until("peer", () => msgs.length > 0)
  assert.equal(msgs[0].type, "peer")
  ws.send(encode({ type: "sync", senderId: "bad-2", targetId: msgs[0].senderId, documentId: h.documentId, data: new Uint8Array([0x42, 0xff, 0xff]) }))
  await until("error", () => msgs.length > 1)
  assert.equal(msgs[1].type, "error")
  // The good client is unaffected.
  await until("good client synced", async () => (await restGet(urls[0], h.documentId))?.ok === true)
  const b = repo(urls[0])
  assert.equal((await b.find(h.url)).doc().ok, true)
  await a.shutdown(); await b.shutdown()
})

test("a document created over REST opens by its automerge: URL", async () => {
  const r = await fetch(`${urls[0]}/v1/collections/automerge/docs`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ from: "rest", tags: ["a"] }) })
  assert.equal(r.status, 201)
  const { id } = await r.json()
  const a = repo(urls[0])
  const h = await a.find(`automerge:${id}`)
  assert.deepEqual({ ...h.doc(), tags: [...h.doc().tags] }, { from: "rest", tags: ["a"] })
  // ...and the change feed lists the client's edit.
  const since = (await (await fetch(`${urls[0]}/v1/changes?since=now`)).json()).last_cursor
  h.change((d) => { d.edited = true })
  await until("the edit is in the changes feed", async () => {
    const feed = await (await fetch(`${urls[0]}/v1/changes?since=${since}&collection=automerge`)).json()
    return feed.results.some((e) => e.id === id)
  })
  await a.shutdown()
})

test("ephemeral messages reach the other clients of the document", async () => {
  const a = repo(urls[0])
  const b = repo(urls[0])
  const h = a.create()
  h.change((d) => { d.room = "lobby" })
  await until("on the node", async () => (await restGet(urls[0], h.documentId))?.room === "lobby")
  const hb = await b.find(h.url)
  const got = new Promise((resolve) => hb.on("ephemeral-message", ({ message }) => resolve(message)))
  // Presence is sent repeatedly in practice; send until it arrives.
  const timer = setInterval(() => h.broadcast({ cursor: 42 }), 50)
  const message = await got
  clearInterval(timer)
  assert.deepEqual(message, { cursor: 42 })
  await a.shutdown(); await b.shutdown()
})
