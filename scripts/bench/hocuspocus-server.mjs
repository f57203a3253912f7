// Hocuspocus 3.4.4 as a benchmark peer: defaults, in memory, no extensions;
// with HOCUSPOCUS_SQLITE=<file>, its SQLite extension stores documents there
// (after its default debounce: it acknowledges nothing durable).
// No onAuthenticate hook, so the token every client sends first is accepted.
// run.sh copies this file next to its node_modules and starts it with HOST/PORT.
import { Server } from '@hocuspocus/server'

const host = process.env.HOST ?? '127.0.0.1'
const port = Number(process.env.PORT ?? 1235)
const extensions = []
if (process.env.HOCUSPOCUS_SQLITE) {
  const { SQLite } = await import('@hocuspocus/extension-sqlite')
  extensions.push(new SQLite({ database: process.env.HOCUSPOCUS_SQLITE }))
}

const server = new Server({
  name: 'bench',
  address: host,
  port,
  quiet: true,
  extensions,
})

await server.listen()
console.log(`hocuspocus listening on ${host}:${port}${extensions.length ? ' (SQLite)' : ''}`)
