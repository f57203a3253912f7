// Against a tiny fake gateway (the `ws` package): what the real one does
// not send yet, or only after long waits: unknown message types and fields,
// several messages in one frame, a short heartbeat interval, a dead socket.

import assert from 'node:assert/strict'
import { once } from 'node:events'
import { test } from 'node:test'

import { WebSocketServer } from 'ws'
import * as Y from 'yjs'

import { nodeClient } from '../testing/clients.mjs'
import { waitFor } from '../testing/gateway.mjs'

/** A fake gateway; `onConnection(socket, messages)` scripts each connection. */
async function fakeGateway(onConnection) {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 })
  await once(server, 'listening')
  const connections = []
  server.on('connection', (socket, request) => {
    const messages = []
    const connection = { socket, messages, url: request.url }
    connections.push(connection)
    socket.on('message', (data) => messages.push(JSON.parse(String(data))))
    onConnection(connection, connections.length)
  })
  return {
    url: `ws://127.0.0.1:${server.address().port}/ws`,
    connections,
    close: () => new Promise((resolve) => {
      for (const c of server.clients) c.terminate()
      server.close(resolve)
    }),
  }
}

const send = (socket, ...messages) => socket.send(messages.map((m) => JSON.stringify(m)).join('\n'))

function connectedMessage(n, heartbeatMs = 30_000) {
  return {
    type: 'connected',
    connection_id: `c${n}`,
    session_id: `s${n}`,
    user_id: 'alice',
    heartbeat_interval_ms: heartbeatMs,
    resume_token: 'a field from the future',
  }
}

function member(n) {
  return {
    user_id: 'alice', name: 'Alice', session_id: `s${n}`, connection_id: `c${n}`, device_type: 'other',
    is_editing: false, cursor: null, selection: null, joined_at: '2026-01-01T00:00:00Z', last_seen_at: '2026-01-01T00:00:00Z',
  }
}

test('unknown message types and fields are ignored, batched frames parsed, and the client keeps working', async () => {
  const remote = new Y.Doc()
  remote.getText('content').insert(0, 'from the server')
  const fake = await fakeGateway(({ socket, messages }, n) => {
    send(socket, { type: 'brand_new_thing', payload: [1, 2, 3] }, connectedMessage(n))
    socket.on('message', () => {
      const last = messages.at(-1)
      if (last.type === 'join_document') {
        // Several messages in one frame, an unknown one among them, a blank line.
        socket.send([
          JSON.stringify({ type: 'presence_list', id: last.id, document_id: 'doc', users: [member(n)], cohort: 'x' }),
          JSON.stringify({ type: 'brand_new_thing' }),
          '',
          JSON.stringify({ type: 'sync_step1', document_id: 'doc', state_vector: 'AA==' }),
          'not json at all',
          JSON.stringify({ type: 'another_new_thing', document_id: 'doc' }),
        ].join('\n'))
      }
      if (last.type === 'sync_step1') {
        send(socket, {
          type: 'sync_step2', id: last.id, document_id: 'doc',
          update: Buffer.from(Y.encodeStateAsUpdate(remote)).toString('base64'),
        })
      }
      if (last.type === 'sync_update') send(socket, { type: 'ack', id: last.id })
    })
  })
  const client = nodeClient(fake.url, { token: 'tk_test' })
  const unknown = []
  client.on('message', (m) => {
    if (m.type.endsWith('new_thing')) unknown.push(m.type)
  })
  const errors = []
  client.on('error', (e) => errors.push(e.code))
  try {
    const room = client.join('doc')
    await room.synced
    assert.equal(room.doc.getText('content').toString(), 'from the server')
    assert.deepEqual(unknown, ['brand_new_thing', 'brand_new_thing', 'another_new_thing'])
    assert.deepEqual(errors, ['client_invalid_json'])
    assert.equal(client.connection.resume_token, 'a field from the future')
    assert.equal(client.status, 'connected')
    assert.equal(room.presence.list()[0].is_self, true)
    const messages = fake.connections[0].messages
    assert.match(fake.connections[0].url, /[?&]token=tk_test&batch=1$/, "it opts in to batched frames")
    // It answered the server's sync_step1 and still sends local edits, which get acked.
    assert.ok(messages.some((m) => m.type === 'sync_step2'))
    room.doc.getText('content').insert(0, '> ')
    await waitFor(() => room.unsavedUpdates === 0 && messages.some((m) => m.type === 'sync_update'), { what: 'the edit sent and acked' })
  } finally {
    client.close()
    await fake.close()
  }
})

test('heartbeats at the announced interval, and a silent socket is dropped after two intervals and reconnected', async () => {
  const fake = await fakeGateway(({ socket, messages }, n) => {
    send(socket, connectedMessage(n, 200))
    socket.on('message', () => {
      const last = messages.at(-1)
      // The first connection answers two heartbeats, then goes silent (a dead network).
      const heartbeats = messages.filter((m) => m.type === 'heartbeat').length
      if (last.type === 'heartbeat' && (n > 1 || heartbeats <= 2)) send(socket, { type: 'heartbeat_ack', id: last.id, server_time: Date.now() })
    })
  })
  const client = nodeClient(fake.url, { token: 'tk_test', minReconnectDelayMs: 50 })
  const closes = []
  client.on('close', (c) => closes.push({ ...c, at: Date.now() }))
  try {
    await waitFor(() => client.status === 'connected', { what: 'connected' })
    const connectedAt = Date.now()
    await waitFor(() => fake.connections.length === 2, { timeoutMs: 3_000, what: 'a second connection' })
    const first = fake.connections[0].messages.filter((m) => m.type === 'heartbeat')
    assert.ok(first.length >= 3, `${first.length} heartbeats`)
    // Two answered heartbeats (~400 ms), then two silent intervals (~400 ms).
    const droppedAfter = closes[0].at - connectedAt
    assert.ok(droppedAfter >= 700 && droppedAfter < 1_500, `dropped after ${droppedAfter} ms`)
    assert.equal(closes[0].code, 4000)
    await waitFor(() => client.status === 'connected' && client.connectionId === 'c2', { what: 'reconnected' })
  } finally {
    client.close()
    await fake.close()
  }
})

test('reconnect delays grow exponentially with jitter up to the cap, and reset after a stable connection', async () => {
  let accept = false
  const fake = await fakeGateway(({ socket }, n) => {
    if (accept) send(socket, connectedMessage(n))
    else socket.terminate()
  })
  const client = nodeClient(fake.url, {
    token: 'tk_test',
    minReconnectDelayMs: 20,
    maxReconnectDelayMs: 160,
    stableConnectionMs: 100,
  })
  const delays = []
  client.on('reconnect_scheduled', (r) => delays.push(r))
  try {
    await waitFor(() => delays.length >= 7, { timeoutMs: 5_000, what: 'seven reconnect attempts' })
    const ceilings = [20, 40, 80, 160, 160, 160, 160]
    delays.slice(0, 7).forEach(({ delayMs }, i) => {
      assert.ok(delayMs >= ceilings[i] / 2 && delayMs <= ceilings[i], `attempt ${i + 1}: ${delayMs} ms, ceiling ${ceilings[i]}`)
    })
    assert.ok(new Set(delays.map((d) => d.delayMs)).size > 1, 'jittered')
    accept = true
    await waitFor(() => client.status === 'connected', { timeoutMs: 2_000, what: 'connected' })
    await new Promise((r) => setTimeout(r, 150)) // stable for longer than stableConnectionMs
    const before = delays.length
    accept = false
    fake.connections.at(-1).socket.terminate()
    await waitFor(() => delays.length > before, { what: 'a reconnect after the stable connection' })
    assert.ok(delays[before].delayMs <= 20, `backoff reset: ${delays[before].delayMs} ms`)
  } finally {
    client.close()
    await fake.close()
  }
})

test('a socket abandoned while still connecting (no connected in time) is retried without crashing the process', async () => {
  // A TCP server that accepts and never answers the upgrade.
  const net = await import('node:net')
  const sockets = []
  const server = net.createServer((socket) => sockets.push(socket))
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const client = nodeClient(`ws://127.0.0.1:${server.address().port}/ws`, {
    token: 'tk_test',
    connectTimeoutMs: 100,
    minReconnectDelayMs: 20,
  })
  const errors = []
  client.on('error', (e) => errors.push(e.code))
  try {
    await waitFor(() => sockets.length >= 3, { timeoutMs: 3_000, what: 'three connection attempts' })
    assert.ok(errors.filter((c) => c === 'connect_failed').length >= 2, errors.join(','))
    assert.notEqual(client.status, 'connected')
  } finally {
    client.close()
    for (const socket of sockets) socket.destroy()
    await new Promise((resolve) => server.close(resolve))
  }
})
