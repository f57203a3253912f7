import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { joinedClient, nodeClient } from '../testing/clients.mjs'
import { restText, sleep, startGateway, waitFor } from '../testing/gateway.mjs'
import { TandemClient } from '../src/index.js'

let gateway
before(async () => {
  gateway = await startGateway()
})
after(async () => {
  await gateway?.stop()
})

test('awareness states travel over the JSON socket and are removed when a client leaves', async () => {
  const alice = await joinedClient(gateway, 'alice', 'aware')
  const bob = await joinedClient(gateway, 'bob', 'aware')
  try {
    alice.room.awareness.setLocalStateField('user', { name: 'Alice', color: '#c0392b' })
    const aliceId = alice.doc.clientID
    await waitFor(() => bob.room.awareness.getStates().get(aliceId)?.user?.name === 'Alice', { what: "Alice's awareness at Bob" })
    // A newcomer gets the current states at once.
    const carol = await joinedClient(gateway, 'carol', 'aware')
    await waitFor(() => carol.room.awareness.getStates().get(aliceId)?.user?.color === '#c0392b', { what: "Alice's awareness at Carol" })
    carol.client.close()
    alice.room.leave()
    await waitFor(() => !bob.room.awareness.getStates().has(aliceId), { what: "Alice's state removed at Bob" })
  } finally {
    alice.client.close()
    bob.client.close()
  }
})

test('a viewer token syncs and reads but never sends updates', async () => {
  const editor = await joinedClient(gateway, 'ed', 'viewed')
  editor.text.insert(0, 'by the editor')
  await waitFor(() => editor.room.unsavedUpdates === 0, { what: 'saved' })
  const viewer = nodeClient(gateway.wsUrl, { token: gateway.token('vic', { role: 'viewer' }) })
  const errors = []
  viewer.on('error', (e) => errors.push(e.code))
  try {
    const room = viewer.join('viewed')
    await room.synced
    assert.equal(room.readOnly, true)
    assert.equal(room.doc.getText('content').toString(), 'by the editor')
    editor.text.insert(0, '> ')
    await waitFor(() => room.doc.getText('content').toString() === '> by the editor', { what: 'live edits reach the viewer' })
    room.doc.getText('content').insert(0, 'local only ')
    await sleep(300)
    assert.equal(room.unsavedUpdates, 0)
    assert.deepEqual(errors, [])
    assert.equal(await restText(gateway, 'viewed', gateway.token('reader')), '> by the editor')
    // Presence still works for viewers.
    room.setCursor({ line: 0, column: 3 })
    await waitFor(() => editor.room.presence.list().find((m) => m.user_id === 'vic')?.cursor?.column === 3, { what: "the viewer's cursor" })
  } finally {
    viewer.close()
    editor.client.close()
  }
})

test('a refused upgrade is an error event and the client keeps retrying with a fresh token', async () => {
  let calls = 0
  const client = nodeClient(gateway.wsUrl, {
    token: () => (++calls < 3 ? 'not-a-jwt' : gateway.token('late')),
    minReconnectDelayMs: 50,
  })
  const errors = []
  client.on('error', (e) => errors.push(e.code))
  try {
    await client.join('late').synced
    assert.equal(calls, 3)
    assert.deepEqual(errors, ['connect_failed', 'connect_failed'])
  } finally {
    client.close()
  }
})

test('without any WebSocket the constructor says what to pass', () => {
  assert.equal(typeof globalThis.WebSocket === 'function', process.versions.node.split('.')[0] >= 22)
  if (typeof globalThis.WebSocket === 'function') return
  assert.throws(() => new TandemClient('ws://127.0.0.1:1/ws', { token: 't' }), /options\.WebSocket/)
})
