// App messages (broadcast, send_to_user) and the device flags of
// user_joined / user_left, against the real gateway.

import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { joinedClient, nodeClient } from '../testing/clients.mjs'
import { sleep, startGateway, waitFor } from '../testing/gateway.mjs'

let gateway
before(async () => {
  gateway = await startGateway()
})
after(async () => {
  await gateway?.stop()
})

/** Collect an emitter's events of one name. */
function record(emitter, event) {
  const events = []
  emitter.on(event, (payload) => events.push(payload))
  return events
}

function closeAll(...clients) {
  for (const c of clients) c.client.close()
}

test("room.broadcast reaches the document's other members, not the sender, and resolves on the ack", async () => {
  const alice = await joinedClient(gateway, 'alice', 'bc-basic')
  const bob = await joinedClient(gateway, 'bob', 'bc-basic')
  const other = await joinedClient(gateway, 'carol', 'bc-elsewhere')
  try {
    const atBob = record(bob.room, 'broadcast')
    const atAlice = record(alice.room, 'broadcast')
    const atOther = record(other.room, 'broadcast')
    await alice.room.broadcast('typing', { field: 'comment', typing: true })
    await waitFor(() => atBob.length === 1, { what: "Bob's broadcast" })
    assert.deepEqual(atBob[0], {
      document_id: 'bc-basic',
      event: 'typing',
      data: { field: 'comment', typing: true },
      user_id: 'alice',
      connection_id: alice.client.connectionId,
    })
    // Default data is null; any JSON goes through verbatim.
    await bob.room.broadcast('ping')
    await alice.room.broadcast('list', [1, 'two', null, { three: [3] }])
    await waitFor(() => atAlice.length === 1 && atBob.length === 2, { what: 'the next two broadcasts' })
    assert.equal(atAlice[0].data, null)
    assert.equal(atAlice[0].user_id, 'bob')
    assert.deepEqual(atBob[1].data, [1, 'two', null, { three: [3] }])
    // Round trip so anything stray would have arrived: never echoed, never to another document.
    await bob.room.broadcast('sync-point')
    await waitFor(() => atAlice.length === 2, { what: 'the sync point' })
    assert.deepEqual(atAlice.map((m) => m.event), ['ping', 'sync-point'])
    assert.deepEqual(atBob.map((m) => m.event), ['typing', 'list'])
    assert.equal(atOther.length, 0)
  } finally {
    closeAll(alice, bob, other)
  }
})

test('a viewer may broadcast (it is not an edit)', async () => {
  const viewer = await joinedClient(gateway, 'vera', 'bc-viewer', { token: () => gateway.token('vera', { role: 'viewer' }) })
  const editor = await joinedClient(gateway, 'ed', 'bc-viewer')
  try {
    assert.equal(viewer.room.readOnly, true)
    const atEditor = record(editor.room, 'broadcast')
    await viewer.room.broadcast('reaction', { emoji: '👍' })
    await waitFor(() => atEditor.length === 1, { what: "the viewer's broadcast" })
    assert.deepEqual([atEditor[0].user_id, atEditor[0].data], ['vera', { emoji: '👍' }])
  } finally {
    closeAll(viewer, editor)
  }
})

test('broadcast rejects with the server error; the connection and the room carry on', async () => {
  const alice = await joinedClient(gateway, 'alice', 'bc-errors')
  try {
    const roomErrors = record(alice.room, 'error')
    const clientErrors = record(alice.client, 'error')
    await assert.rejects(alice.room.broadcast('', 1), (error) => {
      assert.ok(error instanceof Error)
      assert.equal(error.code, 'invalid_message')
      assert.equal(error.request, 'broadcast')
      assert.equal(error.document_id, 'bc-errors')
      assert.match(error.message, /event/)
      return true
    })
    await assert.rejects(alice.room.broadcast('x'.repeat(65)), { code: 'invalid_message' })
    await assert.rejects(alice.room.broadcast('big', 'x'.repeat(17 * 1024)), { code: 'too_large' })
    let deep = null
    for (let i = 0; i < 40; i++) deep = [deep]
    await assert.rejects(alice.room.broadcast('deep', deep), { code: 'invalid_message' })
    // A multi-byte event of 64 bytes is fine.
    await alice.room.broadcast('é'.repeat(32))
    assert.deepEqual(roomErrors.map((e) => e.code), ['invalid_message', 'invalid_message', 'too_large', 'invalid_message'])
    assert.equal(clientErrors.length, 4)
    // Types the wire cannot carry are programming errors: thrown at once.
    assert.throws(() => alice.room.broadcast(42), TypeError)
    assert.throws(() => alice.room.broadcast('n', 1n), TypeError)
    assert.equal(alice.client.status, 'connected')
    assert.equal(alice.room.joined, true)
  } finally {
    alice.client.close()
  }
})

test('broadcasts are not queued: rejected at once when not connected or not joined', async () => {
  const alice = await joinedClient(gateway, 'alice', 'bc-offline')
  try {
    // Not joined (yet): a second room on the same connection, before its presence_list.
    const second = alice.client.join('bc-offline-2')
    await assert.rejects(second.broadcast('early'), { code: 'not_joined', request: 'broadcast' })
    await second.synced
    await second.broadcast('now')

    // Disconnected: rejected at once, nothing sent after the reconnect.
    const roomOf = await joinedClient(gateway, 'bob', 'bc-offline')
    const atBob = record(roomOf.room, 'broadcast')
    alice.client.close()
    const started = Date.now()
    await assert.rejects(alice.room.broadcast('offline'), { code: 'not_connected' })
    await assert.rejects(alice.client.sendToUser('bob', 'offline'), { code: 'not_connected', request: 'send_to_user' })
    assert.ok(Date.now() - started < 100)
    // Fire and forget is safe: an ignored rejection is never "unhandled".
    alice.room.broadcast('ignored')
    await sleep(50)
    assert.equal(atBob.length, 0)
    roomOf.client.close()
  } finally {
    alice.client.close()
  }
})

test('a broadcast in flight when the connection drops rejects with disconnected', async () => {
  const alice = await joinedClient(gateway, 'alice', 'bc-drop')
  try {
    const pending = alice.room.broadcast('bye')
    alice.client.close() // before the ack can arrive
    await assert.rejects(pending, { code: 'disconnected' })
  } finally {
    alice.client.close()
  }
})

test('REST broadcast from a backend arrives with connection_id null', async () => {
  const alice = await joinedClient(gateway, 'alice', 'bc-rest')
  const bob = await joinedClient(gateway, 'bob', 'bc-rest')
  try {
    const atAlice = record(alice.room, 'broadcast')
    const atBob = record(bob.room, 'broadcast')
    const response = await fetch(`${gateway.url}/api/v1/documents/bc-rest/broadcast`, {
      method: 'POST',
      headers: { authorization: `Bearer ${gateway.token('backend')}`, 'content-type': 'application/json' },
      body: JSON.stringify({ event: 'comment_added', data: { id: 7 } }),
    })
    assert.equal(response.status, 200, await response.clone().text())
    const body = await response.json()
    assert.equal(body.delivered, 2)
    await waitFor(() => atAlice.length === 1 && atBob.length === 1, { what: 'the REST broadcast at both' })
    for (const message of [atAlice[0], atBob[0]]) {
      assert.deepEqual(message, { document_id: 'bc-rest', event: 'comment_added', data: { id: 7 }, user_id: 'backend', connection_id: null })
    }
  } finally {
    closeAll(alice, bob)
  }
})

test('sendToUser reaches every connection of that user; a stranger is refused with forbidden', async () => {
  const alice = await joinedClient(gateway, 'alice', 'dm-shared')
  const bobLaptop = await joinedClient(gateway, 'bob', 'dm-shared')
  // Bob's phone is in another document only: direct messages reach every connection of the user.
  const bobPhone = await joinedClient(gateway, 'bob', 'dm-other')
  const stranger = await joinedClient(gateway, 'mallory', 'dm-mallory')
  try {
    const atLaptop = record(bobLaptop.client, 'direct')
    const atPhone = record(bobPhone.client, 'direct')
    const atAlice = record(alice.client, 'direct')
    await alice.client.sendToUser('bob', 'follow_me', { line: 12 })
    await waitFor(() => atLaptop.length === 1 && atPhone.length === 1, { what: 'the direct message on both devices' })
    for (const message of [atLaptop[0], atPhone[0]]) {
      assert.deepEqual(message, { from_user_id: 'alice', from_connection_id: alice.client.connectionId, event: 'follow_me', data: { line: 12 } })
    }

    const strangerErrors = record(stranger.client, 'error')
    await assert.rejects(stranger.client.sendToUser('bob', 'hello'), (error) => {
      assert.equal(error.code, 'forbidden')
      assert.equal(error.request, 'send_to_user')
      return true
    })
    assert.deepEqual(strangerErrors.map((e) => [e.code, e.request]), [['forbidden', 'send_to_user']])
    await assert.rejects(alice.client.sendToUser('bob', ''), { code: 'invalid_message' })
    assert.throws(() => alice.client.sendToUser('', 'x'), TypeError)
    // Bob answers; Alice gets it, and nothing from Mallory arrived at Bob.
    await bobLaptop.client.sendToUser('alice', 'ok')
    await waitFor(() => atAlice.length === 1, { what: "Bob's answer" })
    assert.equal(atAlice[0].from_user_id, 'bob')
    assert.equal(atLaptop.length, 1)
    assert.equal(atPhone.length, 1)
  } finally {
    closeAll(alice, bobLaptop, bobPhone, stranger)
  }
})

test('user_joined.first_device and user_left.last_device with two devices of one user', async () => {
  const alice = await joinedClient(gateway, 'alice', 'devices')
  const joined = record(alice.room, 'user_joined')
  const left = record(alice.room, 'user_left')
  const laptop = await joinedClient(gateway, 'bob', 'devices')
  await waitFor(() => joined.length === 1, { what: "Bob's laptop joined" })
  const phone = await joinedClient(gateway, 'bob', 'devices')
  try {
    await waitFor(() => joined.length === 2, { what: "Bob's phone joined" })
    assert.deepEqual(joined.map((m) => [m.user_id, m.connection_id, m.first_device]), [
      ['bob', laptop.client.connectionId, true],
      ['bob', phone.client.connectionId, false],
    ])
    // The payload is the member as the presence list has it.
    assert.equal(joined[0].is_self, false)
    assert.equal(typeof joined[0].session_id, 'string')

    const laptopId = laptop.client.connectionId
    laptop.room.leave()
    await waitFor(() => left.length === 1, { what: 'the laptop left' })
    const phoneId = phone.client.connectionId
    phone.client.close()
    await waitFor(() => left.length === 2, { what: 'the phone left' })
    assert.deepEqual(left, [
      { user_id: 'bob', connection_id: laptopId, reason: 'left', last_device: false },
      { user_id: 'bob', connection_id: phoneId, reason: 'left', last_device: true }, // close() leaves its rooms first
    ])
  } finally {
    closeAll(alice, laptop, phone)
  }
})

test('direct works on a client with no room, as long as the sender shares a document with that user', async () => {
  const alice = await joinedClient(gateway, 'alice', 'dm-roomless')
  const bobInRoom = await joinedClient(gateway, 'bob', 'dm-roomless')
  const bobBare = nodeClient(gateway.wsUrl, { token: () => gateway.token('bob') })
  try {
    await waitFor(() => bobBare.status === 'connected', { what: 'the bare client connected' })
    const atBare = record(bobBare, 'direct')
    await alice.client.sendToUser('bob', 'nudge', null)
    await waitFor(() => atBare.length === 1, { what: 'the direct message on the roomless connection' })
    assert.deepEqual(atBare[0], { from_user_id: 'alice', from_connection_id: alice.client.connectionId, event: 'nudge', data: null })
    // A connection in no document shares none with anyone.
    await assert.rejects(bobBare.sendToUser('alice', 'hi'), { code: 'forbidden' })
    // To one's own user: every connection of it, the sender's included (unlike broadcast).
    const atBob = record(bobInRoom.client, 'direct')
    await bobInRoom.client.sendToUser('bob', 'note-to-self', 1)
    await waitFor(() => atBob.length === 1 && atBare.length === 2, { what: 'the note on both of Bob\'s connections' })
    assert.equal(atBob[0].from_connection_id, bobInRoom.client.connectionId)
  } finally {
    closeAll(alice, bobInRoom)
    bobBare.close()
  }
})

test('a broadcast dropped by the rate limit (no reply of its own) rejects with timeout after requestTimeoutMs', async () => {
  const alice = await joinedClient(gateway, 'alice', 'bc-flood', { requestTimeoutMs: 1_500 })
  try {
    const errors = record(alice.client, 'error')
    const results = await Promise.allSettled(Array.from({ length: 300 }, (_, i) => alice.room.broadcast('flood', i)))
    const codes = new Map()
    for (const r of results) {
      const key = r.status === 'fulfilled' ? 'acked' : r.reason.code
      codes.set(key, (codes.get(key) ?? 0) + 1)
    }
    assert.ok(codes.get('acked') > 0, JSON.stringify([...codes]))
    assert.ok(codes.get('timeout') > 0, JSON.stringify([...codes]))
    assert.deepEqual([...codes.keys()].sort(), ['acked', 'timeout'])
    assert.ok(errors.some((e) => e.code === 'rate_limited'))
    assert.equal(alice.client.status, 'connected')
  } finally {
    alice.client.close()
  }
})
