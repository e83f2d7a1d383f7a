// The reference setup users deploy today: a Node.js server made of @automerge/automerge-repo with
// its Node filesystem storage adapter and WebSocket server adapter, as automerge-repo's sync
// server does. Usage: node reference_server.mjs PORT DATA_DIR
import { Repo } from "@automerge/automerge-repo"
import { NodeWSServerAdapter } from "@automerge/automerge-repo-network-websocket"
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs"
import { WebSocketServer } from "ws"

const [port, dir] = process.argv.slice(2)
const wss = new WebSocketServer({ host: "127.0.0.1", port: Number(port) })
new Repo({
  network: [new NodeWSServerAdapter(wss)],
  storage: new NodeFSStorageAdapter(dir),
  peerId: `sync-server-${port}`,
  sharePolicy: async () => false,
})
wss.on("listening", () => console.log("ready"))
