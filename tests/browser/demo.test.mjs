// The /demo page in the machine's Chromium against the real gateway: two
// windows editing together, an agent writing over REST, leaving, reloading,
// and the screenshot in docs/demo.png.

import assert from 'node:assert/strict'
import { mkdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, test } from 'node:test'

import * as Y from 'yjs'

import { REPO, launchBrowser, newPage, openDemo, restGet, restPostUpdate, restText, startDemoGateway } from './helpers.mjs'

const DOC = 'browser-demo'
let gateway
let browser
let alice
let bob

before(async () => {
  gateway = await startDemoGateway()
  browser = await launchBrowser()
  alice = await openDemo(await newPage(browser), gateway, { name: 'Alice', documentId: DOC })
  bob = await openDemo(await newPage(browser), gateway, { name: 'Bob', documentId: DOC })
})

after(async () => {
  await browser?.close()
  await gateway?.stop()
})

/** ms until `predicate(arg)` holds in `page` (polling every animation frame). */
async function timeUntil(page, predicate, arg, timeout = 3_000) {
  const started = Date.now()
  await page.waitForFunction(predicate, arg, { polling: 'raf', timeout })
  return Date.now() - started
}

const editorIncludes = ([text]) => document.querySelector('#editor').value.includes(text)

test('each window sees the other\'s typing within 200 ms, and its name and cursor', async (t) => {
  await alice.click('#editor')
  await alice.keyboard.type('Hello from Alice.')
  const toBob = await timeUntil(bob, editorIncludes, ['Hello from Alice.'])
  assert.ok(toBob < 200, `Bob saw Alice's text after ${toBob} ms`)

  await bob.click('#editor')
  await bob.keyboard.press('Control+End')
  await bob.keyboard.press('Enter')
  await bob.keyboard.type('And Bob.')
  const toAlice = await timeUntil(alice, editorIncludes, ['And Bob.'])
  assert.ok(toAlice < 200, `Alice saw Bob's text after ${toAlice} ms`)
  t.diagnostic(`Alice -> Bob ${toBob} ms, Bob -> Alice ${toAlice} ms`)
  assert.equal(await alice.inputValue('#editor'), 'Hello from Alice.\nAnd Bob.')
  assert.equal(await bob.inputValue('#editor'), 'Hello from Alice.\nAnd Bob.')

  // Names in the people list, grouped per user, with devices.
  const bobId = await bob.evaluate(() => window.tandemDemo.client.userId)
  const aliceId = await alice.evaluate(() => window.tandemDemo.client.userId)
  assert.equal(bobId, 'demo-bob')
  await alice.waitForSelector(`#people [data-user-id="${bobId}"]`, { timeout: 2_000 })
  assert.match(await alice.textContent(`#people [data-user-id="${bobId}"] .name`), /^Bob$/)
  assert.match(await alice.textContent(`#people [data-user-id="${aliceId}"] .name`), /Alice \(you\)/)
  assert.equal(await alice.getAttribute(`#people [data-user-id="${bobId}"] .device`, 'data-device-type'), 'desktop')

  // Bob's caret (line 2, after "And Bob.") is drawn in Alice's window, labelled with his name.
  const cursor = `.cursor[data-user-id="${bobId}"]`
  await alice.waitForSelector(`${cursor}[data-line="1"][data-column="8"]`, { timeout: 2_000 })
  assert.match(await alice.textContent(`${cursor} .label`), /^Bob/)
  const box = await alice.locator(cursor).boundingBox()
  assert.ok(box && box.height > 5 && box.x > 20, `cursor box ${JSON.stringify(box)}`)
  // No cursor of her own in Alice's overlay.
  assert.equal(await alice.locator(`.cursor[data-user-id="${aliceId}"]`).count(), 0)

  // Bob is editing: Alice sees his badge, and it goes after he stops typing for 2 s.
  await alice.waitForSelector(`#people [data-user-id="${bobId}"] .editing-badge`, { timeout: 2_000 })
  await alice.waitForSelector(`#people [data-user-id="${bobId}"] .editing-badge`, { state: 'detached', timeout: 4_000 })
})

test("an agent's REST write appears in both windows within 200 ms", async (t) => {
  const token = gateway.token('agent', { name: 'Agent' })
  const { body } = await restGet(gateway, `/api/v1/documents/${DOC}`, token)
  const agent = new Y.Doc()
  Y.applyUpdate(agent, Buffer.from(JSON.parse(body).state, 'base64'))
  const before = Y.encodeStateVector(agent)
  const text = agent.getText('content')
  text.insert(text.length, '\n[agent] a summary.')
  const update = Y.encodeStateAsUpdate(agent, before)

  const started = Date.now()
  const posted = restPostUpdate(gateway, DOC, token, update)
  const seen = Promise.all([alice, bob].map((page) => page.waitForFunction(editorIncludes, ['[agent] a summary.'], { polling: 'raf', timeout: 3_000 })))
  await seen
  const elapsed = Date.now() - started
  await posted
  assert.ok(elapsed < 200, `both windows showed the agent's text after ${elapsed} ms`)
  t.diagnostic(`REST write -> both windows ${elapsed} ms`)
  assert.equal(await alice.inputValue('#editor'), 'Hello from Alice.\nAnd Bob.\n[agent] a summary.')
  assert.equal(await bob.inputValue('#editor'), await alice.inputValue('#editor'))
})

test("closing a window removes its avatar from the other within 3 s", async (t) => {
  const carol = await openDemo(await newPage(browser), gateway, { name: 'Carol', documentId: DOC })
  const carolId = await carol.evaluate(() => window.tandemDemo.client.userId)
  await alice.waitForSelector(`#people [data-user-id="${carolId}"]`, { timeout: 2_000 })
  const started = Date.now()
  await carol.context().close()
  await alice.waitForSelector(`#people [data-user-id="${carolId}"]`, { state: 'detached', timeout: 3_000 })
  const elapsed = Date.now() - started
  assert.ok(elapsed < 3_000, `avatar gone after ${elapsed} ms`)
  t.diagnostic(`avatar gone ${elapsed} ms after the window closed`)
  assert.equal(await alice.locator('#people > li').count(), 2)
})

test('reloading a window brings the whole document back', async () => {
  const expected = await bob.inputValue('#editor')
  assert.ok(expected.length > 30)
  await alice.reload()
  await alice.waitForSelector('body[data-synced="true"]', { timeout: 10_000 })
  assert.equal(await alice.inputValue('#editor'), expected)
  assert.equal(await restText(gateway, DOC, gateway.token('reader')), expected)
  // And it is live again.
  await alice.click('#editor')
  await alice.keyboard.press('Control+End')
  await alice.keyboard.type(' Back.')
  const elapsed = await timeUntil(bob, editorIncludes, ['Back.'])
  assert.ok(elapsed < 200, `${elapsed} ms`)
  await alice.waitForSelector('#saved[data-unsaved="0"]', { timeout: 3_000 })
})

test('the same name in a second window is one person with two devices', async () => {
  const second = await openDemo(await newPage(browser), gateway, { name: 'Alice', documentId: DOC })
  const alicePerson = '#people [data-user-id="demo-alice"]'
  await bob.waitForFunction((sel) => document.querySelectorAll(`${sel} .device`).length === 2, alicePerson, { timeout: 3_000 })
  assert.equal(await bob.locator('#people > li').count(), 2)
  assert.equal(await second.locator(`${alicePerson} .device`).count(), 2)
  assert.match(await second.textContent(`${alicePerson} .name`), /Alice \(you\)/)
  await second.context().close()
  await bob.waitForFunction((sel) => document.querySelectorAll(`${sel} .device`).length === 1, alicePerson, { timeout: 3_000 })
})

test('without ?name= the page asks for a name once and remembers it', async () => {
  const page = await newPage(browser)
  await page.goto(`${gateway.url}/demo?doc=${DOC}`)
  await page.waitForSelector('#name-form:not([hidden])', { timeout: 5_000 })
  await page.fill('#name-form input[name="name"]', 'Dana')
  await page.click('#name-form button')
  await page.waitForSelector('body[data-synced="true"]', { timeout: 10_000 })
  assert.equal(await page.evaluate(() => window.tandemDemo.client.userId), 'demo-dana')
  assert.equal(await page.isVisible('#name-form'), false)
  await bob.waitForSelector('#people [data-user-id="demo-dana"]', { timeout: 3_000 })
  await page.reload()
  await page.waitForSelector('body[data-synced="true"]', { timeout: 10_000 })
  assert.equal(await page.isVisible('#name-form'), false)
  assert.equal(await page.evaluate(() => window.tandemDemo.name), 'Dana')
  assert.deepEqual(page.problems, [])
  await page.context().close()
})

test('no page errors in either window', async () => {
  assert.deepEqual(alice.problems, [])
  assert.deepEqual(bob.problems, [])
})

test('a screenshot of two windows side by side (docs/demo.png)', async () => {
  const doc = 'screenshot'
  const page = await newPage(browser, { viewport: { width: 1640, height: 560 } })
  const src = (name) => `${gateway.url}/demo?name=${name}&doc=${doc}`
  const framesHtml = `<!doctype html><style>
      body { margin: 0; display: flex; gap: 16px; padding: 16px; background: #c9ced8; box-sizing: border-box; height: 100vh; }
      iframe { flex: 1; border: 0; border-radius: 8px; box-shadow: 0 4px 18px rgba(0,0,0,.18); background: #fff; }
    </style><iframe id="left" src="${src('Alice')}"></iframe><iframe id="right" src="${src('Bob')}"></iframe>`
  // The frame page is served on the gateway's own origin (routed here): a
  // page elsewhere (about:blank) may not load loopback frames.
  const framesUrl = `${gateway.url}/side-by-side-for-the-test`
  await page.route(framesUrl, (route) => route.fulfill({ contentType: 'text/html', body: framesHtml }))
  await page.goto(framesUrl)
  const left = page.frameLocator('#left')
  const right = page.frameLocator('#right')
  for (const frame of [left, right]) await frame.locator('body[data-synced="true"]').waitFor({ timeout: 10_000 })
  await left.locator('#editor').click()
  await left.locator('#editor').pressSequentially('# Meeting notes\n\n- ship the JavaScript client\n- demo in two windows\n')
  await right.locator('#editor').click()
  await right.locator('#editor').press('Control+End')
  await right.locator('#editor').pressSequentially('- live cursors and presence')
  await left.locator('#editor').click()
  await left.locator('#editor').press('Control+Home')
  await left.locator('#editor').press('End')
  await left.locator('#editor').pressSequentially(' (draft)')
  // Each window shows the other's cursor and name before the picture is taken.
  await left.locator('.cursor[data-user-id="demo-bob"]').waitFor({ timeout: 2_000 })
  await right.locator('.cursor[data-user-id="demo-alice"]').waitFor({ timeout: 2_000 })
  assert.equal(await left.locator('#editor').inputValue(), await right.locator('#editor').inputValue())
  mkdirSync(join(REPO, 'docs'), { recursive: true })
  const path = join(REPO, 'docs/demo.png')
  await page.screenshot({ path })
  const png = readFileSync(path)
  assert.equal(png.subarray(1, 4).toString(), 'PNG')
  assert.equal(png.readUInt32BE(16), 1640) // IHDR width
  await page.context().close()
})
