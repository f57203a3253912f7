// Test helpers: the real tandem binary on a random port, tokens signed the
// way the gateway checks them, and small waiting utilities. Shared with
// tests/browser/helpers.mjs.

import { spawn } from 'node:child_process'
import { createHmac, randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..')
export const TANDEM_BIN = process.env.TANDEM_BIN ?? join(REPO, 'target/debug/tandem')

const ANSI = /\x1b\[[0-9;]*m/g

/**
 * Start `tandem serve` on 127.0.0.1 (a random port unless `port` is given),
 * with SQLite in a temporary directory (or `dir`) and a random secret (or
 * `secret`). Resolves once the gateway logs its local_addr.
 *
 * @param {{ port?: number, dir?: string, secret?: string | null, env?: Record<string,string>, args?: string[], demo?: boolean }} [options]
 *   secret: null runs with the development secret (no TANDEM_JWT_SECRET).
 */
export async function startGateway(options = {}) {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'tandem-test-'))
  const ownsDir = options.dir === undefined
  const secret = options.secret === undefined ? randomBytes(24).toString('hex') : options.secret
  const env = {
    ...process.env,
    TANDEM_BIND: `127.0.0.1:${options.port ?? 0}`,
    DATABASE_URL: `sqlite://${dir}/t.db?mode=rwc`,
    RUST_LOG: 'info',
    NO_COLOR: '1',
    ...options.env,
  }
  if (secret === null) delete env.TANDEM_JWT_SECRET
  else env.TANDEM_JWT_SECRET = secret
  const args = ['serve', ...(options.demo ? ['--demo'] : []), ...(options.args ?? [])]
  const child = spawn(TANDEM_BIN, args, { env, stdio: ['ignore', 'pipe', 'pipe'] })
  let logs = ''
  const port = await new Promise((resolvePort, reject) => {
    const timer = setTimeout(() => reject(new Error(`tandem did not log local_addr within 20 s:\n${logs}`)), 20_000)
    const onData = (chunk) => {
      logs += chunk.toString().replace(ANSI, '')
      if (logs.length > 2_000_000) logs = logs.slice(-1_000_000)
      const match = /local_addr=127\.0\.0\.1:(\d+)/.exec(logs)
      if (match) {
        clearTimeout(timer)
        resolvePort(Number(match[1]))
      }
    }
    child.stdout.on('data', onData)
    child.stderr.on('data', onData)
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      reject(new Error(`tandem exited (${code ?? signal}) before listening:\n${logs}`))
    })
  })
  const exited = new Promise((resolveExit) => child.once('exit', resolveExit))
  const gateway = {
    port,
    dir,
    secret,
    url: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}/ws`,
    process: child,
    logs: () => logs,
    /** Mint a token this gateway accepts (HS256 with its secret). */
    token: (user, claims) => mintToken(user, { secret: secret ?? undefined, ...claims }),
    /** SIGKILL, and wait for the process to be gone. */
    async kill() {
      child.kill('SIGKILL')
      await exited
    },
    /** Graceful stop (SIGTERM), then remove the temporary directory if we made it. */
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM')
        const timer = setTimeout(() => child.kill('SIGKILL'), 5_000)
        await exited
        clearTimeout(timer)
      }
      if (ownsDir) rmSync(dir, { recursive: true, force: true })
    },
    /** A new gateway on the same port, database and secret (after kill()). */
    restart(extra = {}) {
      return startGateway({ ...options, ...extra, port, dir, secret }).then((next) => {
        // The directory now belongs to the first gateway's caller.
        const stopNext = next.stop
        next.stop = async () => {
          await stopNext.call(next)
          if (ownsDir) rmSync(dir, { recursive: true, force: true })
        }
        return next
      })
    },
  }
  return gateway
}

/**
 * An HS256 JWT as the gateway checks it (src/auth/jwt.rs): sub, exp, iat,
 * and optionally name, role, docs.
 * @param {string} user
 * @param {{ secret?: string, name?: string, ttlSeconds?: number, role?: string, docs?: string[], exp?: number }} [claims]
 */
export function mintToken(user, { secret, name, ttlSeconds = 3600, role, docs, exp } = {}) {
  if (!secret) throw new Error('mintToken needs the gateway secret')
  const now = Math.floor(Date.now() / 1000)
  const payload = { sub: user, exp: exp ?? now + ttlSeconds, iat: now }
  if (name !== undefined) payload.name = name
  if (role !== undefined) payload.role = role
  if (docs !== undefined) payload.docs = docs
  const b64url = (value) => Buffer.from(JSON.stringify(value)).toString('base64url')
  const signingInput = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url(payload)}`
  const signature = createHmac('sha256', secret).update(signingInput).digest('base64url')
  return `${signingInput}.${signature}`
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/**
 * Poll `check` until it returns a truthy value (returned) or `timeoutMs`
 * passes (throws with `what` and the last value).
 */
export async function waitFor(check, { timeoutMs = 5_000, intervalMs = 10, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs
  let last
  for (;;) {
    try {
      last = await check()
      if (last) return last
    } catch (error) {
      last = error
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${last instanceof Error ? last.message : JSON.stringify(last)}`)
    await sleep(intervalMs)
  }
}

/** GET a REST endpoint with a bearer token; returns { status, body (text) }. */
export async function restGet(gateway, path, token) {
  const response = await fetch(`${gateway.url}${path}`, { headers: { authorization: `Bearer ${token}` } })
  return { status: response.status, body: await response.text() }
}

/** The text of root Y.Text `name` of a document, over REST ('' when it has none yet). */
export async function restText(gateway, documentId, token, name = 'content') {
  const { status, body } = await restGet(gateway, `/api/v1/documents/${encodeURIComponent(documentId)}/text/${encodeURIComponent(name)}`, token)
  if (status === 404) return ''
  if (status !== 200) throw new Error(`GET text: ${status} ${body}`)
  return body
}

/** POST a binary Yjs update (Uint8Array) as an agent would. */
export async function restPostUpdate(gateway, documentId, token, update) {
  const response = await fetch(`${gateway.url}/api/v1/documents/${encodeURIComponent(documentId)}/updates`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ update: Buffer.from(update).toString('base64') }),
  })
  const body = await response.text()
  if (response.status !== 200) throw new Error(`POST updates: ${response.status} ${body}`)
  return JSON.parse(body)
}
