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

test('two clients converge on one document', async () => {
  const alice = await joinedClient(gateway, 'alice', 'converge')
  const bob = await joinedClient(gateway, 'bob', 'converge')
  try {
    alice.text.insert(0, 'hello ')
    bob.text.insert(0, 'world ')
    await waitFor(() => alice.text.toString() === bob.text.toString() && alice.text.length === 12, { what: 'both texts to converge' })
    assert.equal(alice.text.toString(), bob.text.toString())
    assert.match(alice.text.toString(), /hello /)
    assert.match(alice.text.toString(), /world /)
    const token = gateway.token('reader')
    await waitFor(async () => (await restText(gateway, 'converge', token)) === alice.text.toString(), { what: 'the server text' })
  } finally {
    alice.client.close()
    bob.client.close()
  }
})
