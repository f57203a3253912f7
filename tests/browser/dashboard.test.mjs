// The operator's /dashboard in the machine's Chromium against the real
// gateway: two people join a document (from the /demo page) and the
// dashboard shows them within 2 s, with their device, cursor and editing
// badge; one leaves and the dashboard drops them. The screenshot in
// docs/dashboard.png is taken here.

import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, test } from 'node:test'

import { REPO, launchBrowser, newPage, openDemo, startDemoGateway } from './helpers.mjs'

const DOC = 'dashboard-doc'
let gateway
let browser
let dashboard

before(async () => {
  gateway = await startDemoGateway()
  browser = await launchBrowser()
  dashboard = await newPage(browser, { viewport: { width: 1100, height: 340 } })
  const admin = gateway.token('ops', { role: 'admin', name: 'Ops' })
  await dashboard.goto(`${gateway.url}/dashboard#token=${admin}`)
  await dashboard.waitForSelector('#rooms .empty, #rooms .room', { timeout: 5_000 })
})

after(async () => {
  await browser?.close()
  await gateway?.stop()
})

const member = (userId) => `.room[data-document-id="${DOC}"] .member[data-user-id="${userId}"]`

test('the dashboard refuses a token without the admin role', async () => {
  const page = await newPage(browser)
  await page.goto(`${gateway.url}/dashboard#token=${gateway.token('mallory')}`)
  await page.waitForFunction(() => document.querySelector('#status').textContent.includes('403 forbidden'), null, {
    timeout: 3_000,
  })
  assert.equal(await page.locator('.room').count(), 0)
  assert.equal(await page.isVisible('#login'), true, 'it asks for another token')
  await page.context().close()
})

test('two people who join are shown within 2 s, one who leaves is dropped', async () => {
  const alice = await openDemo(await newPage(browser), gateway, { name: 'Alice', documentId: DOC })
  const bob = await openDemo(await newPage(browser), gateway, { name: 'Bob', documentId: DOC })
  const joined = Date.now()
  await dashboard.waitForSelector(member('demo-alice'), { timeout: 2_000 })
  await dashboard.waitForSelector(member('demo-bob'), { timeout: 2_000 })
  const shownAfter = Date.now() - joined
  assert.ok(shownAfter < 2_000, `shown after ${shownAfter} ms`)
  assert.equal(await dashboard.textContent(`${member('demo-alice')} .who`), 'Alice')
  assert.match(await dashboard.textContent(`${member('demo-bob')} .device`), /^desktop/)

  // Bob types on line 1: the dashboard shows his cursor and an editing badge.
  await bob.click('#editor')
  await bob.keyboard.type('Line one\nBob was here')
  await dashboard.waitForSelector(`${member('demo-bob')} .device .editing`, { timeout: 2_000 })
  await dashboard.waitForFunction(
    (selector) => /\b1:\d+/.test(document.querySelector(selector)?.textContent ?? ''),
    `${member('demo-bob')} .device`,
    { timeout: 2_000 },
  )
  assert.match(await dashboard.textContent('#connections'), /^\d+$/)
  assert.ok(Number(await dashboard.textContent('#connections')) >= 2)
  assert.equal(await dashboard.textContent('#redis'), 'disabled')
  await dashboard.waitForFunction(() => Number(document.querySelector('#rate').textContent) >= 0, null, {
    timeout: 2_000,
  })
  await dashboard.screenshot({ path: join(REPO, 'docs/dashboard.png') })
  const png = readFileSync(join(REPO, 'docs/dashboard.png'))
  assert.equal(png.subarray(1, 4).toString(), 'PNG')

  await alice.context().close()
  await dashboard.waitForSelector(member('demo-alice'), { state: 'detached', timeout: 3_000 })
  assert.equal(await dashboard.locator(member('demo-bob')).count(), 1, 'Bob is still there')
  await bob.context().close()
  assert.deepEqual(dashboard.problems, [])
})
