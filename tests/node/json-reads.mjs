// GET .../json against npm `yjs` itself, and POST .../ops with a stock
// y-websocket provider connected. Driven by tests/api/node_peers.rs:
// node json-reads.mjs <port> <editor token> <provider token> <viewer token>;
// prints "ok" and exits 0 on success.
import assert from 'node:assert/strict'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

const [, , port, editor, providerToken, viewer] = process.argv
const base = `http://127.0.0.1:${port}/api/v1/documents`
const fail = (why) => { console.error('FAIL', why); process.exit(1) }
setTimeout(() => fail('timed out'), 90_000).unref()

async function waitFor (what, check, ms = 15_000) {
  const until = Date.now() + ms
  while (Date.now() < until) {
    if (await check()) return
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  fail(`timed out waiting for: ${what}`)
}

const b64 = (bytes) => Buffer.from(bytes).toString('base64')

async function call (method, path, token, body) {
  const response = await fetch(`${base}/${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  return { status: response.status, body: await response.json() }
}

async function put (doc, name) {
  const { status, body } = await call('POST', `${name}/updates`, editor, { update: b64(Y.encodeStateAsUpdate(doc)) })
  assert.equal(status, 200, JSON.stringify(body))
}

async function json (name, query = '') {
  const { status, body } = await call('GET', `${name}/json${query}`, editor)
  assert.equal(status, 200, JSON.stringify(body))
  return body.content
}

// What yjs gives, with binaries as the server renders them (base64).
function plain (value) {
  if (value instanceof Uint8Array) return b64(value)
  if (Array.isArray(value)) return value.map(plain)
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined).map(([k, v]) => [k, plain(v)]))
  }
  return value
}

// 1. Every root shape, written by yjs, read back as yjs reads it.
const doc = new Y.Doc()
const shapes = doc.getMap('shapes')
const list = doc.getArray('list')
const body = doc.getText('body')
const prose = doc.getXmlFragment('prose')
doc.transact(() => {
  const note = new Y.Map()
  shapes.set('n1', note)
  note.set('x', 10)
  note.set('y', 2.5)
  note.set('big', 2 ** 40)
  note.set('neg', -7)
  note.set('flag', true)
  note.set('nothing', null)
  note.set('blob', new Uint8Array([1, 2, 250]))
  note.set('plain', { a: [1, 'two', { three: 3 }], b: null })
  const tags = new Y.Array()
  note.set('tags', tags)
  tags.push(['a', 'b', 'c'])
  const caption = new Y.Text('caption text')
  note.set('caption', caption)
  shapes.set('gone', 'soon')
  shapes.set('replaced', 1)
  list.push([1, 'two', { three: 3 }, [4, 5], null, false])
  const inner = new Y.Map()
  inner.set('k', 'v')
  list.push([inner, new Uint8Array([9])])
  list.insert(0, ['first'])
  body.insert(0, 'Hello brave new world')
  body.format(0, 5, { bold: true })
  body.format(6, 5, { italic: true, color: '#f00' })
  body.insertEmbed(5, { image: 'x.png' })
  const p = new Y.XmlElement('Paragraph')
  p.setAttribute('data-id', '7')
  p.setAttribute('align', 'left')
  const t = new Y.XmlText()
  p.insert(0, [t])
  t.insert(0, 'some text here')
  t.format(0, 4, { strong: {} })
  t.format(5, 4, { a: { href: 'https://x', title: 't' } })
  const h = new Y.XmlElement('h1')
  h.insert(0, [new Y.XmlText('Title')])
  prose.insert(0, [h, p])
})
doc.transact(() => {
  shapes.delete('gone')
  shapes.set('replaced', 2)
  list.delete(1, 1)
  body.delete(11, 6)
  shapes.get('n1').get('tags').delete(0, 1)
})
await put(doc, 'shapes-doc')
const expected = {
  shapes: plain(shapes.toJSON()),
  list: plain(list.toJSON()),
  body: body.toJSON(),
  prose: prose.toJSON()
}
assert.deepEqual(await json('shapes-doc'), expected, 'every root as yjs renders it')
assert.deepEqual(await json('shapes-doc', '?root=prose'), { prose: prose.toJSON() })
assert.deepEqual(await json('shapes-doc', '?root=shapes'), { shapes: plain(shapes.toJSON()) })

// A text root whose content is all deleted: "" by default, [] as an array.
const emptied = new Y.Doc()
emptied.getText('gone').insert(0, 'abc')
emptied.getText('gone').delete(0, 3)
await put(emptied, 'emptied-doc')
assert.deepEqual(await json('emptied-doc'), { gone: '' })
assert.deepEqual(await json('emptied-doc', '?types=gone:array'), { gone: [] })
// And a text read as text when its content could pass for an array.
const typed = new Y.Doc()
typed.getArray('items').push(['x'])
await put(typed, 'typed-doc')
assert.deepEqual(await json('typed-doc'), { items: ['x'] })

// 2. A document written by y-websocket clients, concurrently.
function provider (room, token) {
  const d = new Y.Doc()
  const p = new WebsocketProvider(`ws://127.0.0.1:${port}/yjs`, room, d, { WebSocketPolyfill: WebSocket, params: { token } })
  return { doc: d, p }
}
const one = provider('shared-doc', providerToken)
const two = provider('shared-doc', providerToken)
await waitFor('providers synced', () => one.p.synced && two.p.synced)
one.doc.getMap('board').set('from-one', { x: 1 })
two.doc.getMap('board').set('from-two', [1, 2])
one.doc.getText('notes').insert(0, 'one ')
two.doc.getText('notes').insert(0, 'two ')
await waitFor('providers converged', () =>
  JSON.stringify(one.doc.getMap('board').toJSON()) === JSON.stringify(two.doc.getMap('board').toJSON()) &&
  one.doc.getText('notes').toString() === two.doc.getText('notes').toString() &&
  one.doc.getMap('board').size === 2 && one.doc.getText('notes').length === 8)
await waitFor('the server holds both providers\' edits', async () => {
  const content = await json('shared-doc')
  try {
    assert.deepEqual(content, { board: one.doc.getMap('board').toJSON(), notes: one.doc.getText('notes').toJSON() })
    return true
  } catch { return false }
})

// 3. Ops while a provider is connected and edits a sibling key.
const before = await json('shared-doc')
const bad = await call('POST', 'shared-doc/ops', editor, {
  ops: [
    { op: 'map_set', path: ['board'], key: 'half', value: 1 },
    { op: 'text_insert', path: ['notes'], index: 999, text: 'x' }
  ]
})
assert.equal(bad.status, 400, JSON.stringify(bad.body))
assert.equal(bad.body.error, 'invalid_op')
assert.equal(bad.body.index, 1)
assert.deepEqual(await json('shared-doc'), before, 'a bad batch changes nothing')
const refused = await call('POST', 'shared-doc/ops', viewer, { ops: [{ op: 'map_set', path: ['board'], key: 'v', value: 1 }] })
assert.equal(refused.status, 403)

one.doc.getMap('board').set('browser', 'sibling')
const ok = await call('POST', 'shared-doc/ops', editor, {
  id: 7,
  ops: [
    { op: 'map_set', path: ['board'], key: 'agent', value: { kind: 'sticky', text: 'hi', at: [3, 4] }, shared: true },
    { op: 'text_insert', path: ['notes'], index: 0, text: 'AI: ', attributes: { bold: true } },
    { op: 'map_set', path: ['board'], key: 'list', value: [], shared: true },
    { op: 'array_insert', path: ['board', 'list'], index: 0, values: ['a', { b: 1 }] }
  ]
})
assert.equal(ok.status, 200, JSON.stringify(ok.body))
assert.equal(ok.body.document_id, 'shared-doc')
assert.equal(ok.body.id, 7)
assert.equal(typeof ok.body.state_vector, 'string')
for (const { doc: d } of [one, two]) {
  await waitFor('the op reached a provider', () => d.getMap('board').has('agent') && d.getMap('board').has('browser'))
  const agent = d.getMap('board').get('agent')
  assert.ok(agent instanceof Y.Map, 'shared: true makes a Y.Map')
  assert.deepEqual(agent.toJSON(), { kind: 'sticky', text: 'hi', at: [3, 4] })
  assert.ok(d.getMap('board').get('agent').get('at') instanceof Y.Array)
  assert.deepEqual(d.getMap('board').get('list').toJSON(), ['a', { b: 1 }])
  assert.ok(d.getText('notes').toString().startsWith('AI: '))
  assert.deepEqual(d.getText('notes').toDelta()[0], { insert: 'AI: ', attributes: { bold: true } })
}
await waitFor('the server converged with the providers', async () => {
  const content = await json('shared-doc')
  try {
    assert.deepEqual(content, { board: one.doc.getMap('board').toJSON(), notes: one.doc.getText('notes').toJSON() })
    return true
  } catch { return false }
})
one.p.destroy()
two.p.destroy()
console.log('ok')
process.exit(0)
