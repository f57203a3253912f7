// Stock y-websocket WebsocketProviders (and a JSON client) against tandem.
// Driven by tests/api/node_peers.rs: prints "restart" when it wants the
// gateway restarted, continues on a "go" line, prints "ok" and exits 0 on success.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import readline from 'node:readline'

const [, , port, tokenA, tokenB, tokenJson] = process.argv
const room = 'provider-doc'
const serverUrl = `ws://127.0.0.1:${port}/yjs`
const lines = readline.createInterface({ input: process.stdin })
const nextLine = () => new Promise((resolve) => lines.once('line', resolve))

const fail = (why) => { console.error('FAIL', why); process.exit(1) }
setTimeout(() => fail('timed out'), 90_000).unref()

async function waitFor (what, check, ms = 15_000) {
  const until = Date.now() + ms
  while (Date.now() < until) {
    if (check()) return
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  fail(`timed out waiting for: ${what}`)
}

function provider (token) {
  const doc = new Y.Doc()
  const p = new WebsocketProvider(serverUrl, room, doc, { WebSocketPolyfill: WebSocket, params: { token } })
  return { doc, p, text: () => doc.getText('content').toString() }
}

// A JSON-protocol client, as documented in docs/protocol.md.
function jsonClient (token) {
  const doc = new Y.Doc()
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws?token=${token}`)
  const seen = []
  const b64 = (bytes) => Buffer.from(bytes).toString('base64')
  const bytes = (text) => new Uint8Array(Buffer.from(text, 'base64'))
  const send = (message) => ws.send(JSON.stringify(message))
  ws.on('message', (data) => {
    const message = JSON.parse(data.toString())
    seen.push(message)
    if (message.type === 'connected') send({ type: 'join_document', document_id: room })
    if (message.type === 'sync_step1') {
      send({ type: 'sync_step2', document_id: room, update: b64(Y.encodeStateAsUpdate(doc, bytes(message.state_vector))) })
      send({ type: 'sync_step1', document_id: room, state_vector: b64(Y.encodeStateVector(doc)) })
    }
    if (message.type === 'sync_step2' || message.type === 'sync_update') Y.applyUpdate(doc, bytes(message.update), 'remote')
  })
  let next = 0
  doc.on('update', (update, origin) => {
    if (origin !== 'remote') send({ type: 'sync_update', document_id: room, update: b64(update), id: `j${next++}` })
  })
  return { doc, ws, seen, send, text: () => doc.getText('content').toString() }
}

const a = provider(tokenA)
const b = provider(tokenB)
await waitFor('both providers synced', () => a.p.synced && b.p.synced)

a.doc.getText('content').insert(0, 'A')
b.doc.getText('content').insert(0, 'B')
await waitFor('providers converge', () => a.text().length === 2 && a.text() === b.text())

const j = jsonClient(tokenJson)
await waitFor('JSON client has the document', () => j.text() === a.text())
j.doc.getText('content').insert(0, 'J')
await waitFor('JSON edit acked', () => j.seen.some((m) => m.type === 'ack' && m.id === 'j0'))
await waitFor('all three converge', () => a.text() === j.text() && b.text() === j.text() && j.text().length === 3)

// A JSON member that has not moved yet is listed by providers (issue 16: its
// synthesized awareness state once started at clock 0, which y-protocols
// ignores for a client it has not seen).
await waitFor('unmoved JSON member in provider awareness', () =>
  [...a.p.awareness.getStates().values()].some((s) => s.user?.id === 'json-user' && s.user?.name === 'Jay'))

// Provider cursor -> JSON client.
a.p.awareness.setLocalStateField('cursor', { line: 3, column: 7 })
await waitFor('provider cursor reaches the JSON client', () =>
  j.seen.some((m) => m.type === 'cursor_move' && m.cursor.line === 3 && m.cursor.column === 7))
await waitFor('provider awareness reaches the JSON client', () => j.seen.some((m) => m.type === 'awareness' && m.user_id === 'provider-a'))

// JSON cursor -> provider awareness.getStates().
j.send({ type: 'cursor_move', document_id: room, cursor: { line: 5, column: 1 } })
await waitFor('JSON cursor in provider awareness', () =>
  [...a.p.awareness.getStates().values()].some((s) => s.user?.id === 'json-user' && s.cursor?.line === 5 && s.cursor?.column === 1))

const before = a.text()
j.ws.close()
await waitFor('the JSON member leaves provider awareness', () =>
  ![...a.p.awareness.getStates().values()].some((s) => s.user?.id === 'json-user'))
console.log('restart')
await nextLine()

// The gateway restarted on the same port: providers reconnect and resync by themselves.
await waitFor('providers reconnect', () => a.p.wsconnected && b.p.wsconnected && a.p.synced && b.p.synced, 30_000)
a.doc.getText('content').insert(0, 'after ')
await waitFor('edits flow again', () => b.text() === a.text() && a.text() === 'after ' + before, 30_000)
const c = provider(tokenB)
await waitFor('a fresh provider gets everything from storage', () => c.p.synced && c.text() === a.text(), 30_000)

for (const peer of [a, b, c]) peer.p.destroy()
console.log('ok')
process.exit(0)
