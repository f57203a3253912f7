// The /demo page through a gateway crash: SIGKILL while a window types,
// typing on while it is down, a restart on the same port and database.

import assert from 'node:assert/strict'
import { after, test } from 'node:test'

import { launchBrowser, newPage, openDemo, restText, startDemoGateway, waitFor } from './helpers.mjs'

const DOC = 'crash-demo'
let gateway
let browser

after(async () => {
  await browser?.close()
  await gateway?.stop()
})

test('a window keeps typing through a gateway SIGKILL and restart, and nothing it typed is lost', async (t) => {
  gateway = await startDemoGateway()
  browser = await launchBrowser()
  const alice = await openDemo(await newPage(browser), gateway, { name: 'Alice', documentId: DOC })
  const bob = await openDemo(await newPage(browser), gateway, { name: 'Bob', documentId: DOC })
  await alice.click('#editor')
  await alice.keyboard.type('Typed before the crash. ')
  await alice.waitForSelector('#saved[data-unsaved="0"]', { timeout: 3_000 })

  await gateway.kill()
  await alice.waitForSelector('#status[data-status="disconnected"], #status[data-status="connecting"]', { timeout: 3_000 })
  await alice.keyboard.type('Typed while it was down. ')
  assert.notEqual(await alice.getAttribute('#saved', 'data-unsaved'), '0')

  const restarted = Date.now()
  gateway = await gateway.restart()
  await alice.waitForSelector('#status[data-status="connected"]', { timeout: 15_000 })
  await alice.keyboard.type('And after.')
  await alice.waitForSelector('#saved[data-unsaved="0"]', { timeout: 5_000 })
  t.diagnostic(`back and saved ${Date.now() - restarted} ms after the restart`)

  const expected = 'Typed before the crash. Typed while it was down. And after.'
  assert.equal(await alice.inputValue('#editor'), expected)
  assert.equal(await restText(gateway, DOC, gateway.token('reader')), expected)
  await waitFor(async () => (await bob.inputValue('#editor')) === expected, { timeoutMs: 5_000, what: "Bob's window to have it all" })
  // Both are listed again in each other's window.
  await bob.waitForSelector('#people [data-user-id="demo-alice"]', { timeout: 5_000 })
  assert.deepEqual(alice.problems.filter((p) => !/ERR_CONNECTION_REFUSED|WebSocket connection/.test(p)), [])
})
