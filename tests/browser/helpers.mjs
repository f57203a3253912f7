// Shared helpers for the browser tests: the real gateway (see
// clients/js/testing/gateway.mjs), tokens, and the machine's Chromium driven
// by playwright-core (no browser is ever downloaded).

import { existsSync } from 'node:fs'

import { chromium } from 'playwright-core'

export {
  REPO,
  TANDEM_BIN,
  mintToken,
  restGet,
  restPostUpdate,
  restText,
  sleep,
  startGateway,
  waitFor,
} from '../../clients/js/testing/gateway.mjs'

export const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium'

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]

/** Launch the machine's Chromium headless. Close it with `await browser.close()`. */
export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium (or set CHROMIUM_BIN)`)
  }
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS })
}

/**
 * A gateway with the demo on (`serve --demo`), on a random port.
 * @param {Parameters<typeof import('../../clients/js/testing/gateway.mjs').startGateway>[0]} [options]
 */
export async function startDemoGateway(options = {}) {
  const { startGateway } = await import('../../clients/js/testing/gateway.mjs')
  return startGateway({ ...options, demo: true })
}

/**
 * A new page (in its own browser context, so its own localStorage) that
 * collects console errors and page errors into `page.problems`.
 */
export async function newPage(browser, { viewport = { width: 900, height: 600 } } = {}) {
  const context = await browser.newContext({ viewport })
  const page = await context.newPage()
  page.problems = []
  page.on('pageerror', (error) => page.problems.push(`pageerror: ${error.message}`))
  page.on('console', (message) => {
    if (message.type() === 'error') page.problems.push(`console: ${message.text()}`)
  })
  return page
}

/**
 * Open the demo as `name` on `documentId` and wait until its document has
 * synced (the page sets body[data-synced]).
 */
export async function openDemo(page, gateway, { name, documentId = 'demo' }) {
  const url = `${gateway.url}/demo?name=${encodeURIComponent(name)}&doc=${encodeURIComponent(documentId)}`
  await page.goto(url)
  await page.waitForSelector('body[data-synced="true"]', { timeout: 10_000 })
  return page
}
