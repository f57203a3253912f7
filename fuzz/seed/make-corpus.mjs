// Writes the fuzz seed corpus from real updates made by the npm `yjs` package
// (and `y-protocols` for awareness and y-websocket frames).
//
//   cd fuzz/seed && npm ci && node make-corpus.mjs
//
// Writes:
//   prior.bin                      the document update_apply applies inputs on top of
//   ../corpus/update_apply/        updates of many shapes, many extending prior.bin
//   ../corpus/state_vector/        state vectors
//   ../corpus/awareness/           y-protocols awareness updates
//   ../corpus/yws_frame/           y-websocket binary frames
//   ../corpus/client_frame/        tandem JSON frames (base64 payloads)
//   ../corpus/multi_client_reload/ scripts for that target, ending in a raw real update
//
// Client ids are fixed so the output is the same on every run, except the
// guids of subdocuments (random in yjs).

import * as Y from 'yjs'
import * as awarenessProtocol from 'y-protocols/awareness'
import * as syncProtocol from 'y-protocols/sync'
import * as encoding from 'lib0/encoding'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const corpus = path.join(here, '..', 'corpus')
const targets = ['update_apply', 'state_vector', 'awareness', 'yws_frame', 'client_frame', 'multi_client_reload']
for (const target of targets) fs.mkdirSync(path.join(corpus, target), { recursive: true })

const counts = {}
function write (target, name, bytes) {
  counts[target] = (counts[target] || 0) + 1
  fs.writeFileSync(path.join(corpus, target, `yjs-${name}`), bytes)
}

const updates = [] // [name, Uint8Array]
const stateVectors = [] // [name, Uint8Array]

function doc (clientID) {
  const d = new Y.Doc()
  d.clientID = clientID
  return d
}

/** Capture every update event of `d` under `name`, plus its final state. */
function record (name, d, edits) {
  const events = []
  const handler = (update) => events.push(update)
  d.on('update', handler)
  edits(d)
  d.off('update', handler)
  events.forEach((u, i) => updates.push([`${name}-event${i}`, u]))
  updates.push([`${name}-full`, Y.encodeStateAsUpdate(d)])
  stateVectors.push([name, Y.encodeStateVector(d)])
  return d
}

// --- The prior document: every kind of content, two clients, deletions.
const prior = doc(1)
{
  const text = prior.getText('content')
  text.insert(0, 'Hello wörld 🎉\nsecond line')
  text.format(0, 5, { bold: true })
  text.insertEmbed(6, { image: 'https://example.invalid/x.png' })
  text.delete(2, 2)
  const map = prior.getMap('map')
  map.set('title', 'prior')
  map.set('count', 3)
  const nested = new Y.Map()
  map.set('nested', nested)
  nested.set('flag', true)
  const list = new Y.Array()
  map.set('list', list)
  list.push([1, 'two', null])
  prior.getArray('array').push([1.5, -7, 'x', new Uint8Array([1, 2, 3]), { a: [1, { b: null }] }, [true, false]])
  const xml = prior.getXmlFragment('xml')
  const p = new Y.XmlElement('p')
  p.setAttribute('class', 'lead')
  p.insert(0, [new Y.XmlText('para')])
  xml.insert(0, [p])
  const other = doc(2)
  Y.applyUpdate(other, Y.encodeStateAsUpdate(prior))
  other.getText('content').insert(3, '[2]')
  other.getMap('map').set('by', 'client 2')
  other.getArray('array').delete(0, 1)
  Y.applyUpdate(prior, Y.encodeStateAsUpdate(other))
}
const priorBytes = Y.encodeStateAsUpdate(prior)
fs.writeFileSync(path.join(here, 'prior.bin'), priorBytes)
updates.push(['prior-full', priorBytes])
stateVectors.push(['prior', Y.encodeStateVector(prior)])

// --- Updates that extend the prior document (they reference its items).
function extending (name, clientID, edits) {
  const d = doc(clientID)
  Y.applyUpdate(d, priorBytes)
  const before = Y.encodeStateVector(d)
  record(`extends-${name}`, d, edits)
  updates.push([`extends-${name}-diff`, Y.encodeStateAsUpdate(d, before)])
}
extending('text-middle', 10, (d) => d.getText('content').insert(4, 'inserted ✓'))
extending('text-delete', 11, (d) => d.getText('content').delete(0, 8))
extending('text-format', 12, (d) => d.getText('content').format(1, 6, { italic: true, color: '#f00' }))
extending('text-unformat', 13, (d) => d.getText('content').format(0, 5, { bold: null }))
extending('map-overwrite', 14, (d) => { d.getMap('map').set('title', 'changed'); d.getMap('map').delete('count') })
extending('map-nested', 15, (d) => {
  const nested = d.getMap('map').get('nested')
  nested.set('deep', new Y.Map())
  nested.get('deep').set('k', [1, 2, { x: 'y' }])
})
extending('list-edit', 16, (d) => { const l = d.getMap('map').get('list'); l.insert(1, ['in']); l.delete(0, 1) })
extending('array-delete', 17, (d) => d.getArray('array').delete(1, 3))
extending('xml-edit', 18, (d) => {
  const p = d.getXmlFragment('xml').get(0)
  p.setAttribute('id', 'p1')
  p.get(0).insert(2, 'XX')
  p.get(0).format(0, 2, { strong: {} })
  d.getXmlFragment('xml').insert(1, [new Y.XmlElement('h1')])
})
extending('deletes-only', 19, (d) => { d.getText('content').delete(0, 3); d.getArray('array').delete(0, 1) })

// --- Standalone updates of many shapes.
record('text-plain', doc(100), (d) => d.getText('t').insert(0, 'abc'))
record('text-unicode', doc(101), (d) => {
  const t = d.getText('content')
  t.insert(0, 'ä😀€\u0000\uffff')
  t.insert(2, '🎉🎉')
  t.delete(1, 2)
})
record('text-attrs', doc(102), (d) => {
  const t = d.getText('content')
  t.insert(0, 'bold italic', { bold: true })
  t.insert(4, ' link', { link: { href: 'x' } })
  t.format(0, 11, { italic: true })
  t.insertEmbed(3, { formula: 'e=mc^2' }, { bold: true })
  t.applyDelta([{ retain: 2 }, { delete: 1 }, { insert: 'Δ', attributes: { code: true } }])
})
record('map-values', doc(103), (d) => {
  const m = d.getMap('map')
  m.set('null', null)
  m.set('undefined', undefined)
  m.set('true', true)
  m.set('int', 42)
  m.set('neg', -123456789)
  m.set('float', 3.25)
  m.set('big', 2 ** 53)
  m.set('bigint', 12345678901234567890n)
  m.set('string', 'text')
  m.set('bytes', new Uint8Array([0, 255, 128]))
  m.set('array', [1, [2, [3]]])
  m.set('object', { a: { b: { c: [null, 'd'] } } })
  m.set('nan', NaN)
  m.set('inf', -Infinity)
})
record('map-nested-types', doc(104), (d) => {
  const m = d.getMap('map')
  const inner = new Y.Map()
  m.set('inner', inner)
  const arr = new Y.Array()
  inner.set('arr', arr)
  arr.push([new Y.Map(), new Y.Text('t'), 1])
  arr.get(0).set('z', 'deep')
  m.set('inner', 'replaced')
})
record('array-values', doc(105), (d) => {
  const a = d.getArray('array')
  a.push([0, -1, 1.5, 'str', true, false, null, new Uint8Array([7]), { k: 'v' }, [1, 2]])
  a.insert(3, [new Y.Array(), new Y.Map()])
  a.get(3).push(['nested'])
  a.delete(0, 2)
  a.unshift([{ nested: { object: [{}] } }])
})
record('xml', doc(106), (d) => {
  const f = d.getXmlFragment('prosemirror')
  const el = new Y.XmlElement('paragraph')
  el.setAttribute('align', 'left')
  const t = new Y.XmlText()
  el.insert(0, [t])
  t.insert(0, 'hello', { bold: true })
  f.insert(0, [el, new Y.XmlElement('hr')])
  const hook = new Y.XmlHook('hook')
  f.insert(2, [hook])
  f.delete(1, 1)
})
record('xml-text-root', doc(107), (d) => {
  const x = d.get('xmltext', Y.XmlText)
  x.insert(0, 'root xml text')
  x.setAttribute('lang', 'en')
})
record('subdocs', doc(108), (d) => {
  const m = d.getMap('docs')
  m.set('a', new Y.Doc({ guid: 'sub-a' }))
  m.set('b', new Y.Doc({ guid: 'sub-b', shouldLoad: false, meta: { title: 'b' } }))
  m.delete('a')
})
record('many-small', doc(109), (d) => {
  const t = d.getText('content')
  for (let i = 0; i < 40; i++) t.insert(i % 3, String.fromCharCode(97 + (i % 26)))
  for (let i = 0; i < 10; i++) t.delete(i, 1)
})

// Concurrent clients, merged updates, deletes-only updates.
{
  const a = doc(200)
  const b = doc(201)
  const c = doc(202)
  const sent = []
  for (const d of [a, b, c]) d.on('update', (u) => sent.push(u))
  a.getText('content').insert(0, 'aaa')
  b.getText('content').insert(0, 'bbb')
  Y.applyUpdate(c, Y.encodeStateAsUpdate(a))
  c.getText('content').insert(1, 'ccc')
  b.getMap('map').set('k', 'b')
  c.getMap('map').set('k', 'c')
  for (const x of [a, b, c]) for (const y of [a, b, c]) if (x !== y) Y.applyUpdate(x, Y.encodeStateAsUpdate(y))
  a.getText('content').delete(0, 4)
  sent.forEach((u, i) => updates.push([`concurrent-event${i}`, u]))
  updates.push(['concurrent-merged', Y.mergeUpdates(sent)])
  updates.push(['concurrent-merged-half', Y.mergeUpdates(sent.slice(sent.length / 2))])
  updates.push(['concurrent-full', Y.encodeStateAsUpdate(a)])
  stateVectors.push(['concurrent', Y.encodeStateVector(a)])
  // A deletes-only update: no structs, just a delete set.
  const sv = Y.encodeStateVector(b)
  const beforeDs = Y.encodeStateAsUpdate(b)
  b.getText('content').delete(0, 2)
  const diff = Y.encodeStateAsUpdate(b, sv)
  updates.push(['deletes-only-diff', diff])
  updates.push(['deletes-only-merged', Y.mergeUpdates([beforeDs, diff])])
  updates.push(['diff-update', Y.diffUpdate(Y.encodeStateAsUpdate(a), Y.encodeStateVector(c))])
}
// A client with a large id (2^53 - 1) and one at a high clock.
record('max-client-id', doc(2 ** 53 - 1), (d) => d.getText('content').insert(0, 'max'))
updates.push(['empty', Y.encodeStateAsUpdate(new Y.Doc())])
stateVectors.push(['empty', Y.encodeStateVector(new Y.Doc())])
stateVectors.push(['high-clock', Y.encodeStateVector(new Map([[1, 2 ** 31 - 2], [2 ** 53 - 1, 5], [3, 0]]))])

for (const [name, bytes] of updates) write('update_apply', name, bytes)
for (const [name, bytes] of stateVectors) write('state_vector', name, bytes)

// --- Awareness (y-protocols).
{
  const d = doc(300)
  const aw = new awarenessProtocol.Awareness(d)
  aw.setLocalState({ user: { name: 'Ada', color: '#30bced' }, cursor: { anchor: 3, head: 7 } })
  write('awareness', 'local-state', awarenessProtocol.encodeAwarenessUpdate(aw, [d.clientID]))
  aw.setLocalStateField('cursor', null)
  write('awareness', 'cursor-null', awarenessProtocol.encodeAwarenessUpdate(aw, [d.clientID]))
  const other = new awarenessProtocol.Awareness(doc(2 ** 53 - 1))
  other.setLocalState({ name: 'ünïcode 😀', n: [1, 2.5, true, null] })
  awarenessProtocol.applyAwarenessUpdate(aw, awarenessProtocol.encodeAwarenessUpdate(other, [other.clientID]), 'remote')
  write('awareness', 'two-clients', awarenessProtocol.encodeAwarenessUpdate(aw, [d.clientID, other.clientID]))
  aw.setLocalState(null)
  write('awareness', 'removal', awarenessProtocol.encodeAwarenessUpdate(aw, [d.clientID]))
  write('awareness', 'empty', awarenessProtocol.encodeAwarenessUpdate(aw, []))
  aw.destroy()
  other.destroy()
}

// --- y-websocket frames (messageSync = 0, messageAwareness = 1, messageAuth = 2, messageQueryAwareness = 3).
function frame (build) {
  const e = encoding.createEncoder()
  build(e)
  return encoding.toUint8Array(e)
}
write('yws_frame', 'sync-step1', frame((e) => { encoding.writeVarUint(e, 0); syncProtocol.writeSyncStep1(e, prior) }))
write('yws_frame', 'sync-step2', frame((e) => { encoding.writeVarUint(e, 0); syncProtocol.writeSyncStep2(e, prior) }))
write('yws_frame', 'sync-step2-empty-sv', frame((e) => { encoding.writeVarUint(e, 0); syncProtocol.writeSyncStep2(e, prior, Y.encodeStateVector(new Y.Doc())) }))
for (const [name, bytes] of updates.filter(([n]) => n.startsWith('extends-') && n.endsWith('-diff')).slice(0, 4)) {
  write('yws_frame', `update-${name}`, frame((e) => { encoding.writeVarUint(e, 0); syncProtocol.writeUpdate(e, bytes) }))
}
{
  const aw = new awarenessProtocol.Awareness(doc(301))
  aw.setLocalState({ user: { name: 'y-websocket' } })
  const update = awarenessProtocol.encodeAwarenessUpdate(aw, [301])
  write('yws_frame', 'awareness', frame((e) => { encoding.writeVarUint(e, 1); encoding.writeVarUint8Array(e, update) }))
  aw.destroy()
}
write('yws_frame', 'query-awareness', frame((e) => encoding.writeVarUint(e, 3)))
write('yws_frame', 'auth', frame((e) => { encoding.writeVarUint(e, 2); encoding.writeVarUint(e, 0); encoding.writeVarString(e, 'denied') }))

// --- tandem JSON frames.
const b64 = (bytes) => Buffer.from(bytes).toString('base64')
const json = (name, value) => write('client_frame', name, Buffer.from(JSON.stringify(value)))
json('join', { type: 'join_document', document_id: 'doc-1', id: 1 })
json('leave', { type: 'leave_document', document_id: 'doc-1', id: 'leave-1' })
json('cursor', { type: 'cursor_move', document_id: 'doc-1', cursor: { line: 10, column: 5 } })
json('selection', { type: 'selection_change', document_id: 'doc-1', selection: { start: { line: 1, column: 2 }, end: { line: 0, column: 0 } } })
json('selection-null', { type: 'selection_change', document_id: 'dóc 😀', selection: null, id: 2.5 })
json('editing-start', { type: 'editing_start', document_id: 'doc-1' })
json('editing-stop', { type: 'editing_stop', document_id: 'doc-1', extra: [1, 2] })
json('heartbeat', { type: 'heartbeat' })
json('sync-step1', { type: 'sync_step1', document_id: 'doc-1', state_vector: b64(Y.encodeStateVector(prior)) })
json('sync-step2', { type: 'sync_step2', document_id: 'doc-1', update: b64(updates[0][1]) })
json('sync-update', { type: 'sync_update', document_id: 'doc-1', update: b64(updates[3][1]), id: 9 })
json('awareness', { type: 'awareness', document_id: 'doc-1', update: b64(fs.readFileSync(path.join(corpus, 'awareness', 'yjs-local-state'))) })
json('unknown', { type: 'nope' })
write('client_frame', 'not-object', Buffer.from('[1,2,3]'))

// --- multi_client_reload scripts: a few edits, then a real yjs update as raw bytes.
// Ops (see fuzz_targets/multi_client_reload.rs): byte op % 14, byte client % 3, then operands;
// op 13 = raw update: u16 length (little endian) then the bytes.
function script (ops, raw) {
  const out = [...ops]
  if (raw) {
    out.push(13, 0, raw.length & 0xff, raw.length >> 8, ...raw)
  }
  return Buffer.from(out)
}
const edits = [
  [0, 0, 0, 0, 3, 1, 2, 3, 4], // client 0 inserts text
  [0, 1, 0, 0, 2, 5, 6, 7], // client 1 inserts text
  [8, 1, 0], // client 1 receives from client 2 or 0
  [3, 2, 3, 4, 5, 1], // client 2 sets a map value
  [5, 0, 0, 0, 2, 8], // client 0 inserts into the array
  [7, 1, 0, 0, 1, 2, 3], // client 1 inserts XML text
  [2, 0, 0, 0, 0, 2, 0, 0], // client 0 formats
  [9, 0, 10, 1, 11, 0, 0, 0, 1, 0, 2, 9], // deliveries and a mutation
]
write('multi_client_reload', 'edits-only', script(edits.flat()))
let n = 0
for (const [name, bytes] of updates) {
  if (bytes.length > 2000) continue
  if (n++ % 2 === 1) continue
  write('multi_client_reload', `raw-${name}`, script(edits[n % edits.length], bytes))
}

console.log(JSON.stringify(counts))
