// The demo page served at /demo: a shared textarea, the people present with
// their devices, remote cursors and editing badges, all over one
// tandem-client socket. Bundled into dist/demo.js by `npm run build`.

import * as Y from 'yjs'

import { TandemClient } from '../src/index.js'
import { bindTextarea, caretPosition, lineColumn, offsetOf } from './textarea-binding.js'

const NAME_KEY = 'tandem-demo-name'
const EDITING_IDLE_MS = 2000

const params = new URLSearchParams(location.search)
const documentId = params.get('doc') || 'demo'
const $ = (selector) => document.querySelector(selector)

start()

async function start() {
  $('#doc-id').textContent = documentId
  const name = await askName()
  run(name)
}

/** The display name: ?name=, else the remembered one, else asked for. */
function askName() {
  const fromUrl = params.get('name')?.trim()
  if (fromUrl) {
    localStorage.setItem(NAME_KEY, fromUrl)
    return Promise.resolve(fromUrl)
  }
  const remembered = localStorage.getItem(NAME_KEY)?.trim()
  if (remembered) return Promise.resolve(remembered)
  const overlay = $('#name-form')
  const form = overlay.querySelector('form')
  overlay.hidden = false
  form.elements.name.focus()
  return new Promise((resolve) => {
    form.addEventListener('submit', (event) => {
      event.preventDefault()
      const value = form.elements.name.value.trim()
      if (!value) return
      localStorage.setItem(NAME_KEY, value)
      overlay.hidden = true
      resolve(value)
    })
  })
}

function run(name) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:'
  const client = new TandemClient(`${scheme}//${location.host}/ws`, {
    token: async () => {
      const response = await fetch(`/demo/token?name=${encodeURIComponent(name)}`)
      if (!response.ok) throw new Error(`/demo/token answered ${response.status}`)
      return (await response.json()).token
    },
  })
  const doc = new Y.Doc()
  const text = doc.getText('content')
  const room = client.join(documentId, { doc })
  const editor = $('#editor')

  window.tandemDemo = { client, room, doc, text, name }

  // Connection status and durability.
  const status = $('#status')
  client.on('status', (s) => {
    status.dataset.status = s
    status.textContent = s
  })
  const saved = $('#saved')
  const showSaved = () => {
    const n = room.unsavedUpdates
    saved.dataset.unsaved = String(n)
    saved.textContent = n === 0 ? (room.isSynced ? 'All changes saved' : '') : `Saving… (${n})`
  }
  room.on('unsaved', showSaved)
  room.on('saved', showSaved)
  room.on('synced', showSaved)
  client.on('error', (e) => {
    $('#error').textContent = `${e.code}: ${e.message}`
  })
  client.on('connected', () => {
    $('#error').textContent = ''
  })

  // Who I am: a colour for the awareness state (y-websocket clients see it).
  room.awareness.setLocalStateField('user', { name, color: colorOf(name) })

  // The text.
  bindTextarea(text, editor, { onRemoteChange: renderCursors })
  room.synced.then(() => {
    editor.disabled = false
    editor.focus()
    document.body.dataset.synced = 'true'
  })

  // My cursor and selection, and "editing" while I type.
  let lastSent = ''
  const sendSelection = () => {
    if (!room.joined) return
    const value = editor.value
    const { selectionStart, selectionEnd } = editor
    const key = `${selectionStart}:${selectionEnd}`
    if (key === lastSent) return
    lastSent = key
    const caret = editor.selectionDirection === 'backward' ? selectionStart : selectionEnd
    room.setCursor(lineColumn(value, caret))
    room.setSelection(
      selectionStart === selectionEnd
        ? null
        : { start: lineColumn(value, selectionStart), end: lineColumn(value, selectionEnd) },
    )
  }
  for (const event of ['select', 'keyup', 'mouseup', 'focus', 'input']) editor.addEventListener(event, sendSelection)
  document.addEventListener('selectionchange', sendSelection)
  room.on('status', (s) => {
    if (s === 'joined') {
      lastSent = ''
      sendSelection()
    }
  })

  let idleTimer = null
  editor.addEventListener('input', () => {
    room.startEditing()
    clearTimeout(idleTimer)
    idleTimer = setTimeout(() => room.stopEditing(), EDITING_IDLE_MS)
  })

  // People and their cursors.
  room.on('presence', () => {
    renderPeople()
    renderCursors()
  })
  editor.addEventListener('scroll', renderCursors)
  window.addEventListener('resize', renderCursors)

  function renderPeople() {
    const list = $('#people')
    list.replaceChildren(
      ...room.presence.byUser().map((user) => {
        const color = colorOf(user.name ?? user.user_id)
        const self = user.devices.some((d) => d.is_self)
        const li = el('li', { 'data-user-id': user.user_id, style: `--color: ${color}` })
        const avatar = el('div', { class: 'avatar', title: user.name ?? user.user_id })
        avatar.textContent = (user.name ?? user.user_id).trim().charAt(0).toUpperCase() || '?'
        const who = el('div', { class: 'who' })
        const nameEl = el('div', { class: 'name' })
        nameEl.textContent = user.name ?? user.user_id
        if (self) nameEl.append(Object.assign(el('span', { class: 'you' }), { textContent: ' (you)' }))
        const devices = el('ul', { class: 'devices' })
        for (const device of user.devices) {
          const item = el('li', {
            class: 'device',
            'data-connection-id': device.connection_id,
            'data-device-type': device.device_type,
          })
          const label = device.is_self ? `${device.device_type}, this window` : device.device_type
          const position = device.cursor ? ` · ${device.cursor.line + 1}:${device.cursor.column + 1}` : ''
          item.append(document.createTextNode(`${label}${position}`))
          if (device.is_editing) item.append(Object.assign(el('span', { class: 'editing-badge' }), { textContent: 'editing' }))
          devices.append(item)
        }
        who.append(nameEl, devices)
        li.append(avatar, who)
        return li
      }),
    )
  }

  function renderCursors() {
    const layer = $('#cursors')
    const value = editor.value
    const nodes = []
    for (const member of room.presence.list()) {
      if (member.is_self || !member.cursor) continue
      const offset = offsetOf(value, member.cursor)
      const at = caretPosition(editor, offset)
      const label = member.name ?? member.user_id
      const cursor = el('div', {
        class: `cursor${at.top < 18 ? ' at-top' : ''}`,
        'data-user-id': member.user_id,
        'data-connection-id': member.connection_id,
        'data-line': String(member.cursor.line),
        'data-column': String(member.cursor.column),
        style: `--color: ${colorOf(label)}; top: ${at.top}px; left: ${at.left}px; height: ${at.height}px`,
      })
      const tag = el('span', { class: 'label' })
      tag.textContent = member.is_editing ? `${label} ✎` : label
      cursor.append(tag)
      nodes.push(cursor)
    }
    layer.replaceChildren(...nodes)
  }
}

function el(tag, attributes = {}) {
  const node = document.createElement(tag)
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value)
  return node
}

/** A stable, readable colour per person. */
function colorOf(key) {
  let hash = 0
  for (const char of String(key)) hash = (hash * 31 + char.codePointAt(0)) >>> 0
  return `hsl(${hash % 360} 65% 45%)`
}
