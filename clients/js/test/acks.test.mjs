import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { joinedClient } from '../testing/clients.mjs'
import { restText, startGateway, waitFor } from '../testing/gateway.mjs'

let gateway
before(async () => {
  gateway = await startGateway()
})
after(async () => {
  await gateway?.stop()
})

test("local updates count as unsaved until the server's ack, then 'saved' fires and the server has them", async () => {
  const alice = await joinedClient(gateway, 'alice', 'acks')
  try {
    assert.equal(alice.room.unsavedUpdates, 0)
    const counts = []
    alice.room.on('unsaved', (n) => counts.push(n))
    let savedAt = null
    const saved = new Promise((resolve) => alice.room.once('saved', () => {
      savedAt = Date.now()
      resolve()
    }))
    alice.text.insert(0, 'a')
    alice.text.insert(1, 'b')
    alice.text.insert(2, 'c')
    assert.equal(alice.room.unsavedUpdates, 3)
    await saved
    assert.ok(savedAt)
    assert.equal(alice.room.unsavedUpdates, 0)
    assert.deepEqual(counts.slice(0, 3), [1, 2, 3])
    assert.equal(counts.at(-1), 0)
    // Acked means committed: the server's stored text has it now.
    assert.equal(await restText(gateway, 'acks', gateway.token('reader')), 'abc')
  } finally {
    alice.client.close()
  }
})

test('errors from the server are events with their code, on the client and on the room', async () => {
  const client = (await joinedClient(gateway, 'carol', 'errors-ok')).client
  try {
    const errors = []
    client.on('error', (e) => errors.push(e))
    assert.equal(client.send({ type: 'teleport' }), true)
    await waitFor(() => errors.some((e) => e.code === 'unknown_type'), { what: 'unknown_type error' })

    // A document the token may not open: the room gets the error, synced rejects.
    const limited = (await import('../testing/clients.mjs')).nodeClient(gateway.wsUrl, {
      token: () => gateway.token('dave', { docs: ['only-this'] }),
    })
    const roomErrors = []
    const room = limited.join('not-that')
    room.on('error', (e) => roomErrors.push(e))
    await assert.rejects(room.synced, (error) => error.code === 'forbidden')
    assert.equal(roomErrors[0].code, 'forbidden')
    assert.equal(roomErrors[0].document_id, 'not-that')
    assert.equal(room.status, 'failed')
    // The allowed one works on the same socket.
    const ok = limited.join('only-this')
    await ok.synced
    assert.equal(ok.joined, true)
    limited.close()
    // The connection survived both errors.
    assert.equal(client.status, 'connected')
  } finally {
    client.close()
  }
})

test('one socket carries several documents', async () => {
  const { client, room: first } = await joinedClient(gateway, 'erin', 'multi-1')
  try {
    const second = client.join('multi-2')
    await second.synced
    first.doc.getText('content').insert(0, 'one')
    second.doc.getText('content').insert(0, 'two')
    await waitFor(() => first.unsavedUpdates === 0 && second.unsavedUpdates === 0, { what: 'both saved' })
    const token = gateway.token('reader')
    assert.equal(await restText(gateway, 'multi-1', token), 'one')
    assert.equal(await restText(gateway, 'multi-2', token), 'two')
    assert.equal(client.join('multi-2'), second)
  } finally {
    client.close()
  }
})
