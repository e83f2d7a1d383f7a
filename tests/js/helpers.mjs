// Shared helpers for the client tests: node URLs from the Rust harness, a cuttable TCP proxy to
// take a client offline and back, and polling with a deadline.
import net from "node:net"

export const urls = (process.env.CONCORD_URLS ?? "").split(",").filter(Boolean)
if (urls.length === 0) throw new Error("CONCORD_URLS is not set: run these tests through `cargo test --test js_clients`")
export const wsUrl = (http) => http.replace(/^http/, "ws") + "/v1/automerge-repo"

export async function until(what, check, ms = 30000) {
  const deadline = Date.now() + ms
  for (let pause = 10; ; pause = Math.min(pause * 2, 200)) {
    if (await check()) return
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`)
    await new Promise((r) => setTimeout(r, pause))
  }
}

// A TCP proxy in front of a node (plain or TLS): `cut()` drops every connection and refuses new ones until
// `restore()`. Clients behind it are offline exactly as if their network went away.
export async function proxy(httpUrl) {
  const target = new URL(httpUrl)
  let open = true
  const sockets = new Set()
  const server = net.createServer((client) => {
    if (!open) return client.destroy()
    const upstream = net.connect(Number(target.port), target.hostname)
    sockets.add(client)
    sockets.add(upstream)
    const drop = () => { client.destroy(); upstream.destroy(); sockets.delete(client); sockets.delete(upstream) }
    client.on("error", drop); upstream.on("error", drop); client.on("close", drop); upstream.on("close", drop)
    client.pipe(upstream); upstream.pipe(client)
  })
  await new Promise((r) => server.listen(0, "127.0.0.1", r))
  // The same scheme as the node: TLS passes through untouched (the certificate names 127.0.0.1).
  const url = `${target.protocol}//127.0.0.1:${server.address().port}`
  return {
    url,
    cut() { open = false; for (const s of sockets) s.destroy(); sockets.clear() },
    restore() { open = true },
    close() { open = false; for (const s of sockets) s.destroy(); server.close() },
  }
}

export async function restGet(base, id, collection = "automerge") {
  const r = await fetch(`${base}/v1/collections/${collection}/docs/${id}`)
  return r.status === 200 ? await r.json() : null
}
