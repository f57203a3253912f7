import assert from 'node:assert/strict'
import { createConnection, createServer } from 'node:net'
import { test } from 'node:test'

import * as Y from 'yjs'

import { joinedClient, nodeClient } from '../testing/clients.mjs'
import { startGateway, waitFor } from '../testing/gateway.mjs'

/** A TCP relay to `port` whose connections can be cut like a network loss (no close frame). */
async function relay(port) {
  const sockets = new Set()
  const server = createServer((client) => {
    const upstream = createConnection({ port, host: '127.0.0.1' })
    for (const socket of [client, upstream]) {
      sockets.add(socket)
      socket.on('error', () => {})
      socket.on('close', () => sockets.delete(socket))
    }
    client.pipe(upstream)
    upstream.pipe(client)
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    wsUrl: `ws://127.0.0.1:${server.address().port}/ws`,
    cut: () => sockets.forEach((socket) => socket.destroy()),
    close: () => new Promise((resolve) => server.close(resolve)),
  }
}

test('a dropped socket resumes the session: nobody sees a leave, presence never empties, offline edits arrive', async () => {
  const gateway = await startGateway()
  const path = await relay(gateway.port)
  const bob = await joinedClient(gateway, 'bob', 'blip')
  const client = nodeClient(path.wsUrl, { token: () => gateway.token('alice'), minReconnectDelayMs: 50, maxReconnectDelayMs: 100 })
  const doc = new Y.Doc()
  const room = client.join('blip', { doc })
  try {
    await room.synced
    await waitFor(() => room.presence.size === 2 && bob.room.presence.size === 2, { what: 'both see both' })
    const session = client.sessionId
    const seenByBob = []
    bob.room.on('user_left', (e) => seenByBob.push(`left:${e.user_id}`))
    bob.room.on('user_joined', (e) => seenByBob.push(`joined:${e.user.user_id}`))
    const sizes = []
    room.on('presence', (list) => sizes.push(list.length))

    path.cut()
    await waitFor(() => client.status !== 'connected', { what: 'alice notices the drop' })
    doc.getText('content').insert(0, 'typed offline. ')
    bob.text.insert(0, 'bob meanwhile. ')
    bob.room.setCursor({ line: 3, column: 4 })

    await waitFor(() => client.status === 'connected', { timeoutMs: 10_000, what: 'alice back' })
    assert.equal(client.resumed, true)
    assert.equal(client.sessionId, session, 'the same session')
    await waitFor(() => doc.getText('content').toString() === bob.text.toString() && bob.text.toString().includes('typed offline'), {
      what: 'both edits on both sides',
    })
    await waitFor(() => room.presence.list().some((p) => p.user_id === 'bob' && p.cursor?.line === 3), { what: "Bob's cursor from the replay" })
    await waitFor(() => room.unsavedUpdates === 0, { what: "Alice's offline edit acked" })
    assert.deepEqual(seenByBob, [], 'Bob saw no leave and no join')
    assert.ok(!sizes.includes(0), `presence never emptied: ${sizes}`)
    assert.equal(room.status, 'joined')
  } finally {
    client.close()
    bob.client.close()
    await path.close()
    await gateway.stop()
  }
})
