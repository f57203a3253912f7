import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { USER_AGENTS, joinedClient } from '../testing/clients.mjs'
import { restGet, startGateway, waitFor } from '../testing/gateway.mjs'

let gateway
before(async () => {
  gateway = await startGateway()
})
after(async () => {
  await gateway?.stop()
})

/** Collect a room's 'presence' events. */
function recordPresence(room) {
  const events = []
  room.on('presence', (list) => events.push(list))
  return events
}

test('presence lists every connection and groups a user\'s devices', async () => {
  const laptop = await joinedClient(gateway, 'alice', 'presence-devices', { name: 'Alice', userAgent: USER_AGENTS.desktop })
  const phone = await joinedClient(gateway, 'alice', 'presence-devices', { name: 'Alice', userAgent: USER_AGENTS.mobile })
  const bob = await joinedClient(gateway, 'bob', 'presence-devices', { name: 'Bob' })
  try {
    for (const { room } of [laptop, phone, bob]) {
      await waitFor(() => room.presence.list().length === 3, { what: 'three members in each room' })
    }
    const list = bob.room.presence.list()
    assert.deepEqual(list.map((m) => m.user_id), ['alice', 'alice', 'bob'])
    assert.deepEqual(list.map((m) => m.is_self), [false, false, true])
    for (const member of list) {
      for (const field of ['session_id', 'connection_id', 'joined_at', 'last_seen_at']) assert.equal(typeof member[field], 'string', field)
      assert.equal(member.is_editing, false)
      assert.equal(member.cursor, null)
      assert.equal(member.selection, null)
    }
    const groups = bob.room.presence.byUser()
    assert.deepEqual(groups.map((g) => [g.user_id, g.name, g.devices.length]), [['alice', 'Alice', 2], ['bob', 'Bob', 1]])
    assert.deepEqual(groups[0].devices.map((d) => d.device_type).sort(), ['desktop', 'mobile'])
    assert.deepEqual(
      new Set(groups[0].devices.map((d) => d.connection_id)),
      new Set([laptop.client.connectionId, phone.client.connectionId]),
    )
    // The client's view matches the server's.
    const rest = JSON.parse((await restGet(gateway, '/api/v1/presence/document/presence-devices', gateway.token('bob'))).body)
    assert.deepEqual(rest.by_user.map((u) => [u.user_id, u.devices.length]), [['alice', 2], ['bob', 1]])
  } finally {
    for (const c of [laptop, phone, bob]) c.client.close()
  }
})

test('presence events follow joins, cursors, selections, editing and leaves', async () => {
  const alice = await joinedClient(gateway, 'alice', 'presence-events', { name: 'Alice' })
  const events = recordPresence(alice.room)
  const joined = []
  alice.room.on('user_joined', (m) => joined.push(m.user_id))
  const left = []
  alice.room.on('user_left', (m) => left.push(m))
  const bob = await joinedClient(gateway, 'bob', 'presence-events', { name: 'Bob' })
  try {
    const bobIn = (list) => list.find((m) => m.user_id === 'bob')
    await waitFor(() => events.some((list) => bobIn(list)), { what: 'a presence event with Bob' })
    assert.deepEqual(joined, ['bob'])

    bob.room.setCursor({ line: 2, column: 7 })
    await waitFor(() => bobIn(events.at(-1))?.cursor?.column === 7, { what: "Bob's cursor" })
    assert.deepEqual(bobIn(events.at(-1)).cursor, { line: 2, column: 7 })
    // The sender's own list shows its own cursor too.
    assert.deepEqual(bob.room.presence.list().find((m) => m.is_self).cursor, { line: 2, column: 7 })

    const selection = { start: { line: 0, column: 1 }, end: { line: 1, column: 3 } }
    bob.room.setSelection(selection)
    await waitFor(() => bobIn(events.at(-1))?.selection, { what: "Bob's selection" })
    assert.deepEqual(bobIn(events.at(-1)).selection, selection)
    bob.room.setSelection(null)
    await waitFor(() => bobIn(events.at(-1))?.selection === null, { what: "Bob's selection cleared" })

    bob.room.startEditing()
    await waitFor(() => bobIn(events.at(-1))?.is_editing === true, { what: 'Bob editing' })
    bob.room.stopEditing()
    await waitFor(() => bobIn(events.at(-1))?.is_editing === false, { what: 'Bob no longer editing' })

    assert.throws(() => bob.room.setCursor({ line: -1, column: 0 }), TypeError)

    const bobConnection = bob.client.connectionId
    bob.room.leave()
    await waitFor(() => events.at(-1).length === 1, { what: 'Bob gone from the list' })
    assert.deepEqual(events.at(-1).map((m) => m.user_id), ['alice'])
    assert.deepEqual(left, [{ user_id: 'bob', connection_id: bobConnection, reason: 'left', last_device: true }])
    assert.equal(bob.room.status, 'left')
    assert.equal(bob.client.rooms.size, 0)
  } finally {
    alice.client.close()
    bob.client.close()
  }
})

test('a client that closes disappears from the others\' presence', async () => {
  const alice = await joinedClient(gateway, 'alice', 'presence-close')
  const bob = await joinedClient(gateway, 'bob', 'presence-close')
  try {
    await waitFor(() => alice.room.presence.size === 2, { what: 'two members' })
    bob.client.close()
    await waitFor(() => alice.room.presence.size === 1, { what: 'Bob gone' })
    assert.equal(bob.client.status, 'disconnected')
  } finally {
    alice.client.close()
  }
})
