// The Automerge sync protocol over HTTP with the stock @automerge/automerge library and fetch.
import { test } from "node:test"
import assert from "node:assert/strict"
import { randomBytes } from "node:crypto"
import * as A from "@automerge/automerge"
import { urls, restGet } from "./helpers.mjs"

async function sync(base, collection, id, clientId, doc, state) {
  let sent = 0
  for (let i = 0; i < 20; i++) {
    let msg
    ;[state, msg] = A.generateSyncMessage(doc, state)
    if (!msg) return { doc, state, sent }
    sent += msg.byteLength
    const r = await fetch(`${base}/v1/collections/${collection}/docs/${id}/sync`, {
      method: "POST", body: msg,
      headers: { "content-type": "application/octet-stream", "concord-client-id": clientId },
    })
    if (r.status === 200) [doc, state] = A.receiveSyncMessage(doc, state, new Uint8Array(await r.arrayBuffer()))
    else assert.equal(r.status, 204, await r.text())
  }
  throw new Error("sync did not finish")
}

test("1,000 offline edits reach the node, sending about their own size", async () => {
  // A document with plenty of history already (5,000 changes), so "the whole document" and "the
  // new changes" are far apart. (Automerge sends the whole document instead of changes when they
  // are more than a third of the history, so the history must be long for the distinction.)
  let doc = A.from({ log: [], n: 0, archive: [] })
  for (let i = 0; i < 5000; i++) doc = A.change(doc, (d) => { d.archive.push(randomBytes(150).toString("base64")) })
  let state = A.initSyncState()
  ;({ doc, state } = await sync(urls[0], "js", "offline-1", "js-client-1", doc, state))
  assert.equal((await restGet(urls[0], "offline-1", "js")).archive.length, 5000)
  const before = A.getHeads(doc)
  for (let i = 0; i < 1000; i++) doc = A.change(doc, (d) => { d.n = i + 1; d.log.push(`entry ${i}`) })
  const newBytes = A.getChanges(A.view(doc, before), doc).reduce((s, c) => s + c.byteLength, 0)
  const whole = A.save(doc).byteLength
  // Reconnect: a new session from the persisted state.
  state = A.decodeSyncState(A.encodeSyncState(state))
  let sent
  ;({ doc, state, sent } = await sync(urls[0], "js", "offline-1", "js-client-1", doc, state))
  const v = await restGet(urls[0], "offline-1", "js")
  assert.equal(v.n, 1000)
  assert.equal(v.log.length, 1000)
  console.log(`1,000 edits: ${newBytes} B of changes, ${sent} B sent, whole document ${whole} B`)
  assert.ok(sent < newBytes * 1.5 + 4096, `sent ${sent} B for ${newBytes} B of new changes`)
  assert.ok(sent < whole / 2, `sent ${sent} B, close to the whole document (${whole} B)`)
})
