// Stock automerge-repo 2.x clients with per-user signed tokens: each client sees its own
// documents, cannot fetch another user's by URL (it is "unavailable", exactly like a document
// that does not exist), and a document shared with it later (a member added) arrives on it.
import { test } from "node:test"
import assert from "node:assert/strict"
import { Repo } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"
import { until, wsUrl } from "./helpers.mjs"

const base = process.env.CONCORD_SCOPED_URL
const token = (who) => process.env[`CONCORD_TOKEN_${who.toUpperCase()}`]
const repo = (who) => new Repo({ network: [new WebSocketClientAdapter(`${wsUrl(base)}?access_token=${token(who)}`)] })
const rest = (who, method, id, body) => fetch(`${base}/v1/collections/automerge/docs/${id}`, {
  method, headers: { authorization: `Bearer ${token(who)}`, "content-type": "application/json" },
  body: body && JSON.stringify(body),
})

test("each user's client sees only documents shared with them", { skip: !base }, async () => {
  const alice = repo("alice")
  const bob = repo("bob")
  const h = alice.create()
  h.change((d) => { d.title = "alice's board"; d.members = ["alice"] })
  await until("the node has alice's document", async () => (await rest("admin", "GET", h.documentId)).status === 200)
  // Bob's client cannot fetch it by URL, nor by REST.
  await assert.rejects(bob.find(h.url), /unavailable/)
  assert.equal((await rest("bob", "GET", h.documentId)).status, 404)
  // Shared with bob later: it arrives on bob's client.
  const r = await rest("alice", "PATCH", h.documentId, { members: ["alice", "bob"] })
  assert.equal(r.status, 200)
  let got
  await until("bob's client receives the shared document", async () => {
    try {
      const hb = await bob.find(h.url)
      got = hb.doc()
      return got?.title === "alice's board"
    } catch { return false }
  })
  assert.deepEqual(got.members, ["alice", "bob"])
  assert.equal((await rest("bob", "GET", h.documentId)).status, 200)
  await alice.shutdown(); await bob.shutdown()
})
