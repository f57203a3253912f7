import assert from 'node:assert/strict'
import { test } from 'node:test'

import { joinedClient } from '../testing/clients.mjs'
import { restText, sleep, startGateway, waitFor } from '../testing/gateway.mjs'

test('the server SIGKILLed and restarted while a client types: every character reaches the server and the other client', async () => {
  let gateway = await startGateway()
  const alice = await joinedClient(gateway, 'alice', 'crash')
  const bob = await joinedClient(gateway, 'bob', 'crash')
  const statuses = []
  alice.client.on('status', (s) => statuses.push(s))
  const firstConnection = alice.client.connectionId
  let typed = ''
  let typing = true
  const typist = (async () => {
    for (let i = 0; typing; i++) {
      const char = String.fromCharCode(97 + (i % 26))
      alice.text.insert(alice.text.length, char)
      typed += char
      await sleep(15)
    }
  })()
  try {
    await sleep(600)
    await gateway.kill()
    const typedBeforeKill = typed.length
    await sleep(800) // typing on, offline
    gateway = await gateway.restart()
    await waitFor(() => alice.client.status === 'connected' && alice.room.isSynced && bob.room.isSynced, {
      timeoutMs: 15_000,
      what: 'both clients back and synced',
    })
    await sleep(300) // and a little typing after the reconnect
    typing = false
    await typist
    assert.ok(typed.length > typedBeforeKill + 20, `typed ${typed.length} characters, ${typedBeforeKill} before the kill`)
    assert.notEqual(alice.client.connectionId, firstConnection)
    assert.ok(statuses.includes('disconnected') && statuses.at(-1) === 'connected', statuses.join(','))

    await waitFor(() => alice.room.unsavedUpdates === 0, { timeoutMs: 10_000, what: "Alice's updates all acked" })
    assert.equal(alice.text.toString(), typed)
    assert.equal(await restText(gateway, 'crash', gateway.token('reader')), typed)
    await waitFor(() => bob.text.toString() === typed, { timeoutMs: 5_000, what: 'Bob to have every character' })
  } finally {
    typing = false
    await typist
    alice.client.close()
    bob.client.close()
    await gateway.stop()
  }
})

test('edits made while the server is down are sent after the reconnect, and the other side\'s too', async () => {
  let gateway = await startGateway()
  const alice = await joinedClient(gateway, 'alice', 'offline')
  const bob = await joinedClient(gateway, 'bob', 'offline')
  try {
    alice.room.awareness.setLocalStateField('user', { name: 'Alice' })
    alice.text.insert(0, 'before.')
    await waitFor(() => bob.text.toString() === 'before.' && alice.room.unsavedUpdates === 0, { what: 'first edit everywhere' })
    await waitFor(() => bob.room.awareness.getStates().get(alice.doc.clientID)?.user?.name === 'Alice', { what: "Alice's awareness at Bob" })
    const roomStatuses = []
    alice.room.on('status', (s) => roomStatuses.push(s))
    await gateway.kill()
    await waitFor(() => alice.client.status !== 'connected' && bob.client.status !== 'connected', { what: 'both disconnected' })
    assert.equal(alice.room.status, 'joining')
    assert.deepEqual(roomStatuses, ['joining'])
    alice.text.insert(alice.text.length, ' alice offline.')
    bob.text.insert(0, 'bob offline. ')
    assert.equal(alice.room.unsavedUpdates, 1)
    // A killed server drops the sockets: the clients keep what they knew
    // in case the session resumes...
    assert.equal(alice.room.presence.size, 2)
    assert.equal(bob.room.awareness.getStates().has(alice.doc.clientID), true)
    gateway = await gateway.restart()
    await waitFor(() => alice.text.toString() === bob.text.toString() && alice.text.toString().includes('bob offline') && alice.text.toString().includes('alice offline'), {
      timeoutMs: 15_000,
      what: 'both offline edits on both sides',
    })
    await waitFor(() => alice.room.unsavedUpdates === 0 && bob.room.unsavedUpdates === 0, { what: 'all acked' })
    assert.equal(await restText(gateway, 'offline', gateway.token('reader')), alice.text.toString())
    // ...the restarted server does not know it, so they joined afresh.
    assert.equal(alice.client.resumed, false)
    await waitFor(() => alice.room.presence.size === 2, { what: 'presence back' })
    assert.deepEqual(roomStatuses, ['joining', 'joined'])
    // Awareness went with the old server and came back with the rejoin.
    await waitFor(() => bob.room.awareness.getStates().get(alice.doc.clientID)?.user?.name === 'Alice', { what: "Alice's awareness at Bob again" })
  } finally {
    alice.client.close()
    bob.client.close()
    await gateway.stop()
  }
})
