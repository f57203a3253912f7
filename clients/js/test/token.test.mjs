import assert from 'node:assert/strict'
import { test } from 'node:test'

import { nodeClient } from '../testing/clients.mjs'
import { sleep, startGateway, waitFor } from '../testing/gateway.mjs'

const TTL_SECONDS = 6

test('the client refreshes its token before exp and the connection outlives the first token', async () => {
  // A short warning so that the client's own schedule (half the lifetime) acts first.
  const gateway = await startGateway({ env: { TANDEM_TOKEN_EXPIRY_WARNING: '1s' } })
  const minted = []
  const client = nodeClient(gateway.wsUrl, {
    token: async () => {
      const token = gateway.token('alice', { ttlSeconds: TTL_SECONDS })
      minted.push(token)
      return token
    },
  })
  const events = []
  client.on('token_refreshed', (m) => events.push(['token_refreshed', Date.now(), m.expires_at]))
  client.on('token_expiring', () => events.push(['token_expiring', Date.now()]))
  client.on('close', (c) => events.push(['close', Date.now(), c.code]))
  try {
    const room = client.join('refresh')
    await room.synced
    const connectedAt = Date.now()
    const connection = client.connectionId
    const firstExpiry = JSON.parse(Buffer.from(minted[0].split('.')[1], 'base64url')).exp * 1000
    // Past the first token's exp plus the server's 5 s leeway.
    await sleep(Math.max(0, firstExpiry + 6_500 - Date.now()))
    assert.equal(client.status, 'connected')
    assert.equal(client.connectionId, connection, 'the same connection, never closed')
    assert.deepEqual(events.filter((e) => e[0] === 'close'), [])
    const refreshes = events.filter((e) => e[0] === 'token_refreshed')
    assert.ok(refreshes.length >= 2, `refreshed ${refreshes.length} times: ${JSON.stringify(events)}`)
    // The first refresh came from the client's own schedule, before the server's warning.
    assert.equal(events[0][0], 'token_refreshed')
    assert.ok(events[0][1] - connectedAt < TTL_SECONDS * 1000 - 1_000, 'refreshed well before exp')
    assert.ok(minted.length >= 3)
    assert.equal(client.token, minted.at(-1))
    // And the connection still works: an update is acked.
    room.doc.getText('content').insert(0, 'still here')
    await waitFor(() => room.unsavedUpdates === 0, { what: 'the update acked' })
  } finally {
    client.close()
    await gateway.stop()
  }
})

test("on the server's token_expiring the client refreshes at once", async () => {
  const gateway = await startGateway() // warning 60 s before exp: at once for a 6 s token
  let calls = 0
  const client = nodeClient(gateway.wsUrl, {
    token: async () => {
      calls++
      return gateway.token('alice', { ttlSeconds: TTL_SECONDS })
    },
    refreshBeforeExpiryMs: 1, // the client's own schedule would wait until exp
  })
  const events = []
  client.on('token_expiring', () => events.push('token_expiring'))
  client.on('token_refreshed', () => events.push('token_refreshed'))
  try {
    await client.join('warned').synced
    await waitFor(() => events.includes('token_refreshed'), { timeoutMs: 3_000, what: 'a refresh' })
    assert.equal(events[0], 'token_expiring')
    assert.ok(calls >= 2)
  } finally {
    client.close()
    await gateway.stop()
  }
})

test('a refresh the server refuses ends in 4004, and the client reconnects with a fresh token', async () => {
  const gateway = await startGateway({ env: { TANDEM_TOKEN_EXPIRY_WARNING: '1s' } })
  let calls = 0
  const client = nodeClient(gateway.wsUrl, {
    token: async () => {
      calls++
      // First connect: a short token. While on it, refreshes get a token of
      // another user (refused with forbidden). After the 4004: a good one.
      if (calls === 1) return gateway.token('alice', { ttlSeconds: 3 })
      if (client.status === 'connected' && client.connection && closes.length === 0) return gateway.token('mallory')
      return gateway.token('alice')
    },
    refreshRetryMs: 500,
  })
  const closes = []
  const errors = []
  client.on('close', (c) => closes.push(c.code))
  client.on('error', (e) => errors.push(e.code))
  try {
    const room = client.join('expired')
    await room.synced
    const first = client.connectionId
    await waitFor(() => closes.includes(4004), { timeoutMs: 15_000, what: 'the 4004 close' })
    assert.ok(errors.includes('forbidden'), `errors: ${errors}`)
    await waitFor(() => client.status === 'connected' && room.isSynced, { timeoutMs: 5_000, what: 'reconnected and resynced' })
    assert.notEqual(client.connectionId, first)
    assert.equal(JSON.parse(Buffer.from(client.token.split('.')[1], 'base64url')).sub, 'alice')
  } finally {
    client.close()
    await gateway.stop()
  }
})
