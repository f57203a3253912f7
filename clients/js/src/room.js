// One joined document on a TandemClient's socket: its Yjs sync, awareness,
// presence and the bookkeeping of local updates not yet durable.

import * as Y from 'yjs'
import {
  Awareness,
  applyAwarenessUpdate,
  encodeAwarenessUpdate,
  removeAwarenessStates,
} from 'y-protocols/awareness'

import { fromBase64, toBase64 } from './base64.js'
import { checkEvent } from './app-messages.js'
import { Emitter } from './emitter.js'
import { Presence } from './presence.js'

/** Least time between two update frames of one room (the server allows 100 frames/s per connection). */
const UPDATE_GAP_MS = 15
/** Least time between two cursor or selection frames of one room. */
const PRESENCE_GAP_MS = 25
/** A merged re-send stays well under the server's 1 MiB update limit. */
const MAX_MERGED_BYTES = 256 * 1024
/** While editing, editing_start is repeated at most this often (it refreshes the server's idle timer). */
const EDITING_REFRESH_MS = 5_000
/** Coordinates the server accepts. */
const MAX_COORDINATE = 10_000_000

export class Room extends Emitter {
  /**
   * @param {import('./client.js').TandemClient} client
   * @param {string} documentId
   * @param {{ doc?: Y.Doc, awareness?: Awareness, readOnly?: boolean }} options
   */
  constructor(client, documentId, options = {}) {
    super()
    this.client = client
    this.documentId = documentId
    this.doc = options.doc ?? new Y.Doc()
    this._ownsAwareness = !options.awareness
    this.awareness = options.awareness ?? new Awareness(this.doc)
    this.presence = new Presence()
    /** 'joining' | 'joined' | 'left' | 'revoked' | 'failed' */
    this.status = 'joining'
    this.isSynced = false
    this._readOnlyOption = options.readOnly

    /** @type {Map<number, Uint8Array>} local updates not yet acknowledged as committed, by sequence number */
    this._pending = new Map()
    /** @type {Map<string, number[]>} message id -> sequence numbers that message carries */
    this._inFlight = new Map()
    /** @type {number[]} sequence numbers to send at the next flush */
    this._queued = []
    this._seq = 0
    this._flushTimer = null
    this._lastUpdateSentAt = 0
    this._joinId = null
    this._syncId = null
    this._joinRetry = 0
    this._joinRetryTimer = null
    this._syncRetryTimer = null

    this._cursor = null
    this._selection = undefined // undefined: never set; null: cleared
    this._editing = false
    this._editingSentAt = 0
    this._presenceTimer = null
    this._presenceDirty = { cursor: false, selection: false }
    this._lastPresenceSentAt = 0

    this.synced = new Promise((resolve, reject) => {
      this._resolveSynced = resolve
      this._rejectSynced = reject
    })
    this.synced.catch(() => {}) // rejection is for those who await it, never "unhandled"
    this._syncedSettled = false

    this._onDocUpdate = (update, origin) => this._localUpdate(update, origin)
    this._onAwarenessUpdate = (changes, origin) => this._localAwareness(changes, origin)
    this._onDocDestroy = () => this.leave()
    this.doc.on('update', this._onDocUpdate)
    this.doc.on('destroy', this._onDocDestroy)
    this.awareness.on('update', this._onAwarenessUpdate)
  }

  /** True once joined on the current connection. */
  get joined() {
    return this.status === 'joined'
  }

  /** Local updates sent (or waiting to be sent) but not yet acknowledged as durable. */
  get unsavedUpdates() {
    return this._pending.size
  }

  /** A viewer token (or readOnly: true) never sends document updates. */
  get readOnly() {
    return this._readOnlyOption ?? this.client.role === 'viewer'
  }

  // ---- the application's calls -------------------------------------------

  /** Move this connection's cursor ({ line, column }, zero-based). */
  setCursor(cursor) {
    this._cursor = checkPosition(cursor, 'cursor')
    this._patchSelf({ cursor: this._cursor })
    this._presenceDirty.cursor = true
    this._schedulePresence()
  }

  /** Set ({ start, end }) or clear (null) this connection's selection. */
  setSelection(selection) {
    if (selection === null || selection === undefined) {
      this._selection = null
    } else {
      this._selection = {
        start: checkPosition(selection.start, 'selection.start'),
        end: checkPosition(selection.end, 'selection.end'),
      }
    }
    this._patchSelf({ selection: this._selection })
    this._presenceDirty.selection = true
    this._schedulePresence()
  }

  /** Mark this connection as editing (others see an editing_start). */
  startEditing() {
    const now = Date.now()
    if (this._editing && now - this._editingSentAt < EDITING_REFRESH_MS) return
    const changed = !this._editing
    this._editing = true
    if (this.joined && this._send({ type: 'editing_start', document_id: this.documentId })) this._editingSentAt = now
    if (changed && this._patchSelf({ is_editing: true })) this._emitPresence()
  }

  /** Mark this connection as no longer editing. */
  stopEditing() {
    if (!this._editing) return
    this._editing = false
    if (this.joined) this._send({ type: 'editing_stop', document_id: this.documentId })
    if (this._patchSelf({ is_editing: false })) this._emitPresence()
  }

  /**
   * An app message to the document's other members (broadcast; each gets a
   * `broadcast` event, the sender does not). Viewers may broadcast too.
   * Resolves on the server's ack; rejects with the server's error
   * (`invalid_message`, `too_large`...), or at once with `not_connected`
   * while disconnected and `not_joined` before the room is joined:
   * broadcasts are ephemeral and never queued across reconnects.
   * @param {string} event 1-64 bytes
   * @param {unknown} [data] any JSON value (default null)
   * @returns {Promise<void>}
   */
  broadcast(event, data = null) {
    checkEvent(event)
    return this.client._request({ type: 'broadcast', document_id: this.documentId, event, data }, this, 'broadcast')
  }

  /** Leave the document (leave_document) and stop syncing it. Idempotent. */
  leave() {
    if (this.status === 'left') return
    const wasJoined = this.joined
    this.status = 'left'
    if (wasJoined) this._send({ type: 'leave_document', document_id: this.documentId })
    this._teardown()
    this._settleSynced(new Error(`left document ${JSON.stringify(this.documentId)} before it synced`))
    this.client._forget(this)
    this.emit('status', this.status)
  }

  // ---- called by the client ----------------------------------------------

  /** @internal The socket is up (a `connected` arrived): join. */
  _connected() {
    if (this.status === 'left' || this.status === 'revoked' || this.status === 'failed') return
    // A new session: what was kept for a resume is stale now.
    if (this._stale) this._forgetOthers()
    this._join()
  }

  /** @internal The session came back (`resumed: true`): still a member, no join. */
  _resumed() {
    if (this.status === 'left' || this.status === 'revoked' || this.status === 'failed') return
    if (this.status !== 'joining' || !this._stale) return this._connected()
    this._stale = false
    // The server replays what it queued (or sends `presence_list` with
    // `resync: true`), then `sync_step1`; this side sends what it holds.
    this._live()
  }

  _join() {
    clearTimeout(this._joinRetryTimer)
    this._joinRetryTimer = null
    this.status = 'joining'
    this._joinId = this.client._nextId('join')
    this.client._route(this._joinId, this, 'join')
    this._send({ type: 'join_document', document_id: this.documentId, id: this._joinId })
  }

  /** @internal The socket is gone. */
  _disconnected(resumable = false) {
    if (this.status === 'left' || this.status === 'revoked' || this.status === 'failed') return
    const wasJoined = this.status === 'joined'
    this.status = 'joining'
    this.isSynced = false
    if (wasJoined) this.emit('status', this.status)
    clearTimeout(this._presenceTimer)
    this._presenceTimer = null
    clearTimeout(this._flushTimer)
    this._flushTimer = null
    clearTimeout(this._joinRetryTimer)
    this._joinRetryTimer = null
    clearTimeout(this._syncRetryTimer)
    this._syncRetryTimer = null
    this._inFlight.clear()
    this._queued = []
    // A session that may be resumed keeps showing who was here: a network
    // blip is not everyone leaving. Forgotten when the reconnect is new.
    this._stale = wasJoined && resumable
    if (!this._stale) this._forgetOthers()
  }

  _forgetOthers() {
    this._stale = false
    this.presence.selfConnectionId = null
    if (this.presence.size > 0) {
      this.presence._clear()
      this._emitPresence()
    }
    const remote = [...this.awareness.getStates().keys()].filter((id) => id !== this.awareness.clientID)
    if (remote.length > 0) removeAwarenessStates(this.awareness, remote, this)
  }

  /** @internal A server message for this document. */
  _handle(msg) {
    switch (msg.type) {
      case 'presence_list':
        return this._joined(msg)
      case 'sync_step1':
        return this._answerStep1(msg)
      case 'sync_step2':
      case 'sync_update':
        return this._applyRemote(msg)
      case 'awareness':
        return this._applyAwareness(msg)
      case 'user_joined': {
        const user = msg.user ?? {}
        // The server's first_device counts every instance; the local guess is for a server without it.
        const firstDevice = typeof msg.first_device === 'boolean' ? msg.first_device : !this._hasDevice(user.user_id, user.connection_id)
        this.presence._add(user)
        this.emit('user_joined', { ...(this.presence.get(user.connection_id) ?? user), first_device: firstDevice })
        return this._emitPresence()
      }
      case 'user_left':
        if (this.presence._remove(msg.connection_id)) {
          const lastDevice = typeof msg.last_device === 'boolean' ? msg.last_device : !this._hasDevice(msg.user_id)
          this.emit('user_left', { user_id: msg.user_id, connection_id: msg.connection_id, reason: msg.reason, last_device: lastDevice })
          this._emitPresence()
        }
        return
      case 'broadcast': {
        const { type: _type, ...broadcast } = msg
        return this.emit('broadcast', broadcast)
      }
      case 'cursor_move':
        return this._remotePresence(msg, { cursor: msg.cursor ?? null })
      case 'selection_change':
        return this._remotePresence(msg, { selection: msg.selection ?? null })
      case 'editing_start':
        return this._remotePresence(msg, { is_editing: true })
      case 'editing_stop':
        if (msg.connection_id === this.client.connectionId) this._editing = false
        return this._remotePresence(msg, { is_editing: false })
      case 'document_revoked':
        return this._revoked()
      default:
        this.emit('message', msg)
    }
  }

  /** @internal An `ack` for a message this room sent. */
  _ack(id, kind) {
    if (kind !== 'update') return
    const seqs = this._inFlight.get(id)
    if (!seqs) return
    this._inFlight.delete(id)
    this._settle(seqs)
  }

  /** @internal An `error` answering a message this room sent. */
  _error(error, kind) {
    this.emit('error', error)
    if (kind === 'join') return this._joinFailed(error)
    if (kind === 'sync') {
      // Our sync_step1 failed (the document could not be loaded): ask again.
      if (error.code === 'document_unavailable' || error.code === 'rate_limited') {
        clearTimeout(this._syncRetryTimer)
        this._syncRetryTimer = setTimeout(() => {
          if (this.joined && !this.isSynced) this._sendSyncStep1()
        }, 1000)
      }
      return
    }
    if (kind !== 'update') return
    const seqs = this._inFlight.get(error.id)
    if (!seqs) return
    switch (error.code) {
      case 'document_unavailable':
        // Applied, not yet stored: the ack follows once the database recovers.
        return
      case 'rate_limited':
      case 'not_joined':
        this._inFlight.delete(error.id)
        this._requeue(seqs, 1000)
        return
      case 'invalid_update':
        this._inFlight.delete(error.id)
        if (/resync|reloaded/i.test(error.message ?? '')) {
          // Nothing of it was applied, or the document was reloaded: send it again and resync.
          this._requeue(seqs, 500)
          if (this.joined) this._sendSyncStep1()
          return
        }
        this._drop(seqs)
        return
      default:
        // forbidden, too_large, invalid_message...: the server will never store it.
        this._inFlight.delete(error.id)
        this._drop(seqs)
    }
  }

  // ---- internals ---------------------------------------------------------

  _send(msg) {
    return this.client._send(msg)
  }

  _joined(msg) {
    this._stale = false
    this.presence._reset(msg.users)
    this._live()
  }

  /** Joined (or resumed): sync both ways, and send what this side holds. */
  _live() {
    this.status = 'joined'
    this._joinRetry = 0
    this.presence.selfConnectionId = this.client.connectionId
    this.emit('status', this.status)
    // What we lack: the reply sync_step2 completes the sync.
    this._sendSyncStep1()
    // Our awareness state, and the presence we had before a reconnect.
    // With a newer clock: peers that dropped our state while we were away
    // (as this client does on a disconnect) ignore a repeat of the old one.
    const local = this.awareness.getLocalState()
    if (local !== null) this.awareness.setLocalState(local) // sent by _localAwareness
    if (this._cursor) this._presenceDirty.cursor = true
    if (this._selection) this._presenceDirty.selection = true
    this._flushPresence()
    if (this._editing) {
      this._send({ type: 'editing_start', document_id: this.documentId })
      this._editingSentAt = Date.now()
    }
    this._patchSelf({ cursor: this._cursor, selection: this._selection ?? null, is_editing: this._editing })
    this._emitPresence()
    // Every local update never acknowledged goes again (the server ignores what it already holds).
    if (!this.readOnly) {
      this._queued = [...this._pending.keys()]
      this._flush()
    }
  }

  _sendSyncStep1() {
    this._syncId = this.client._nextId('sv')
    this.client._route(this._syncId, this, 'sync')
    this._send({
      type: 'sync_step1',
      document_id: this.documentId,
      state_vector: toBase64(Y.encodeStateVector(this.doc)),
      id: this._syncId,
    })
  }

  _answerStep1(msg) {
    if (this.readOnly) return
    let update
    try {
      update = Y.encodeStateAsUpdate(this.doc, fromBase64(msg.state_vector))
    } catch (cause) {
      this.emit('error', { code: 'client_invalid_state_vector', message: String(cause), document_id: this.documentId })
      return
    }
    const id = this.client._nextId('s2')
    this.client._route(id, this, 'step2')
    this._send({ type: 'sync_step2', document_id: this.documentId, update: toBase64(update), id })
  }

  _applyRemote(msg) {
    try {
      Y.applyUpdate(this.doc, fromBase64(msg.update), this)
    } catch (cause) {
      this.emit('error', { code: 'client_invalid_update', message: String(cause), document_id: this.documentId })
    }
    if (msg.type === 'sync_step2' && msg.id !== undefined && msg.id === this._syncId) {
      this.client._unroute(msg.id)
      this.isSynced = true
      this.emit('synced')
      this._settleSynced()
    }
  }

  _applyAwareness(msg) {
    try {
      applyAwarenessUpdate(this.awareness, fromBase64(msg.update), this)
    } catch (cause) {
      this.emit('error', { code: 'client_invalid_awareness', message: String(cause), document_id: this.documentId })
    }
  }

  _remotePresence(msg, fields) {
    if (this.presence._patch(msg.connection_id, fields)) this._emitPresence()
  }

  /** Whether a connection of `userId` (other than `exceptConnectionId`) is in the presence list. */
  _hasDevice(userId, exceptConnectionId) {
    return this.presence.list().some((m) => m.user_id === userId && m.connection_id !== exceptConnectionId)
  }

  _patchSelf(fields) {
    const self = this.presence.selfConnectionId
    return self ? this.presence._patch(self, fields) : false
  }

  _emitPresence() {
    this.emit('presence', this.presence.list())
  }

  _localUpdate(update, origin) {
    if (origin === this || this.status === 'left' || this.readOnly) return
    const seq = ++this._seq
    this._pending.set(seq, update)
    this._queued.push(seq)
    this.emit('unsaved', this._pending.size)
    this._scheduleFlush()
  }

  _scheduleFlush(delay) {
    if (!this.joined || this._flushTimer) return
    const wait = delay ?? Math.max(0, this._lastUpdateSentAt + UPDATE_GAP_MS - Date.now())
    this._flushTimer = setTimeout(() => {
      this._flushTimer = null
      this._flush()
    }, wait)
  }

  /** Send every queued update, merged into as few frames as fit. */
  _flush() {
    if (!this.joined || this.readOnly) return
    const seqs = this._queued.filter((seq) => this._pending.has(seq))
    this._queued = []
    let batch = []
    let bytes = 0
    const sendBatch = () => {
      if (batch.length === 0) return
      const updates = batch.map((seq) => this._pending.get(seq))
      const update = updates.length === 1 ? updates[0] : Y.mergeUpdates(updates)
      const id = this.client._nextId('u')
      this.client._route(id, this, 'update')
      if (this._send({ type: 'sync_update', document_id: this.documentId, update: toBase64(update), id })) {
        this._inFlight.set(id, batch)
        this._lastUpdateSentAt = Date.now()
      } else {
        this.client._unroute(id)
      }
      batch = []
      bytes = 0
    }
    for (const seq of seqs) {
      const size = this._pending.get(seq).length
      if (batch.length > 0 && bytes + size > MAX_MERGED_BYTES) sendBatch()
      batch.push(seq)
      bytes += size
    }
    sendBatch()
  }

  _requeue(seqs, delay) {
    this._queued.push(...seqs)
    this._scheduleFlush(delay)
  }

  _settle(seqs) {
    const before = this._pending.size
    for (const seq of seqs) this._pending.delete(seq)
    if (this._pending.size === before) return
    this.emit('unsaved', this._pending.size)
    if (this._pending.size === 0) this.emit('saved')
  }

  _drop(seqs) {
    this._settle(seqs)
  }

  _localAwareness({ added, updated, removed }, origin) {
    if (!this.joined) return
    const own = this.awareness.clientID
    // Only our own state: the server refuses an update naming another connection's client id.
    if (![...added, ...updated, ...removed].includes(own)) return
    // From the server, our own id changes only when it removed our state (our
    // previous connection ended): y-protocols then keeps the state with a
    // newer clock, to be sent again, which is what happens here.
    if (origin === this && this.awareness.getLocalState() === null) return
    this._send({
      type: 'awareness',
      document_id: this.documentId,
      update: toBase64(encodeAwarenessUpdate(this.awareness, [own])),
    })
  }

  _schedulePresence() {
    if (!this.joined || this._presenceTimer) return
    const wait = Math.max(0, this._lastPresenceSentAt + PRESENCE_GAP_MS - Date.now())
    if (wait === 0) {
      this._flushPresence()
      this._emitPresence()
      return
    }
    this._emitPresence()
    this._presenceTimer = setTimeout(() => {
      this._presenceTimer = null
      this._flushPresence()
    }, wait)
  }

  _flushPresence() {
    if (!this.joined) return
    let sent = false
    if (this._presenceDirty.cursor && this._cursor) {
      sent = this._send({ type: 'cursor_move', document_id: this.documentId, cursor: this._cursor }) || sent
    }
    if (this._presenceDirty.selection && this._selection !== undefined) {
      sent = this._send({ type: 'selection_change', document_id: this.documentId, selection: this._selection }) || sent
    }
    this._presenceDirty = { cursor: false, selection: false }
    if (sent) this._lastPresenceSentAt = Date.now()
  }

  _joinFailed(error) {
    if (error.code === 'document_unavailable') {
      // The document could not be loaded: try again, backing off.
      const delay = Math.min(30_000, 500 * 2 ** this._joinRetry++) * (0.5 + Math.random() / 2)
      this._joinRetryTimer = setTimeout(() => {
        if (this.status === 'joining' && this.client.status === 'connected') this._join()
      }, delay)
      return
    }
    if (error.code === 'already_joined') return
    this.status = 'failed'
    this._teardown()
    this._settleSynced(Object.assign(new Error(`join ${JSON.stringify(this.documentId)} failed: ${error.code}: ${error.message}`), { code: error.code }))
    this.client._forget(this)
    this.emit('status', this.status)
  }

  _revoked() {
    this.status = 'revoked'
    this.presence._clear()
    this._teardown()
    this._settleSynced(Object.assign(new Error(`access to ${JSON.stringify(this.documentId)} was revoked`), { code: 'document_revoked' }))
    this.client._forget(this)
    this.emit('revoked')
    this.emit('status', this.status)
    this._emitPresence()
  }

  _settleSynced(error) {
    if (this._syncedSettled) return
    this._syncedSettled = true
    if (error) this._rejectSynced(error)
    else this._resolveSynced()
  }

  _teardown() {
    clearTimeout(this._flushTimer)
    clearTimeout(this._presenceTimer)
    clearTimeout(this._joinRetryTimer)
    clearTimeout(this._syncRetryTimer)
    this._flushTimer = this._presenceTimer = this._joinRetryTimer = this._syncRetryTimer = null
    this.isSynced = false
    this.doc.off('update', this._onDocUpdate)
    this.doc.off('destroy', this._onDocDestroy)
    this.awareness.off('update', this._onAwarenessUpdate)
    const remote = [...this.awareness.getStates().keys()].filter((id) => id !== this.awareness.clientID)
    if (remote.length > 0) removeAwarenessStates(this.awareness, remote, this)
    if (this._ownsAwareness) this.awareness.destroy()
  }
}

function checkPosition(position, what) {
  const ok = (v) => Number.isInteger(v) && v >= 0 && v <= MAX_COORDINATE
  if (!position || !ok(position.line) || !ok(position.column)) {
    throw new TypeError(`${what} must be { line, column } with integers in 0..=${MAX_COORDINATE}`)
  }
  return { line: position.line, column: position.column }
}
