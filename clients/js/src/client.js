// The socket: connecting with a token, reconnecting with backoff,
// heartbeats and dead-socket detection, token refresh, and routing each
// server message to the room it concerns.

import { checkEvent, rejected, requestError } from './app-messages.js'
import { Emitter } from './emitter.js'
import { tokenTimes } from './jwt.js'
import { Room } from './room.js'

const DEFAULTS = {
  minReconnectDelayMs: 500,
  maxReconnectDelayMs: 30_000,
  stableConnectionMs: 60_000,
  connectTimeoutMs: 10_000,
  refreshBeforeExpiryMs: 90_000,
  refreshRetryMs: 5_000,
  fallbackHeartbeatIntervalMs: 30_000,
  requestTimeoutMs: 10_000,
}

/** Close codes after which reconnecting cannot help. */
const NO_RECONNECT = new Set([4005])

export class TandemClient extends Emitter {
  /**
   * @param {string} url the gateway's /ws URL (ws:// or wss://)
   * @param {object} options see index.d.ts
   */
  constructor(url, options = {}) {
    super()
    if (typeof url !== 'string' && !(url instanceof URL)) throw new TypeError('url must be a string')
    if (options.token === undefined) throw new TypeError('options.token is required (a string or a function returning one)')
    if (!options.createWebSocket && !options.WebSocket && typeof globalThis.WebSocket !== 'function') {
      throw new TypeError('no WebSocket here: pass options.WebSocket (e.g. `import WebSocket from "ws"`) or options.createWebSocket')
    }
    this.url = String(url)
    this.options = { ...DEFAULTS, ...options }
    /** 'connecting' | 'connected' | 'disconnected' */
    this.status = 'disconnected'
    this.connectionId = null
    this.sessionId = null
    /** Whether the last `connected` resumed the previous session (`resumed: true`). */
    this.resumed = false
    /** `connected.resume_token`: offered on the next reconnect after a drop. */
    this._resumeToken = null
    this.userId = null
    this.heartbeatIntervalMs = null
    /** The JSON payload of the `connected` message (unknown fields included). */
    this.connection = null
    this.token = null

    /** @type {Map<string, Room>} */
    this.rooms = new Map()
    /** @type {Map<string, { room: Room | null, kind: string }>} message id -> who waits for its reply */
    this._routes = new Map()
    this._idCounter = 0
    this._socket = null
    this._opening = false
    this._closed = false
    this._attempt = 0
    this._timers = {}
    this._lastHeardAt = 0
    this._lastHeartbeatAt = 0
    this._unansweredSince = null
    this._refreshing = null

    // Back online (browsers): do not wait for the backoff.
    this._onOnline = () => {
      if (this._timers.reconnect && !this._closed) {
        clearTimeout(this._timers.reconnect)
        this._timers.reconnect = null
        this._open()
      }
    }
    globalThis.addEventListener?.('online', this._onOnline)

    if (options.autoConnect !== false) queueMicrotask(() => this.connect())
  }

  /** The role claim of the current token ('editor' when absent). */
  get role() {
    return (this.token && tokenTimes(this.token).role) || 'editor'
  }

  /**
   * Join a document (or return the room already joining it).
   * @param {string} documentId
   * @param {{ doc?: import('yjs').Doc, awareness?: import('y-protocols/awareness').Awareness, readOnly?: boolean }} [options]
   */
  join(documentId, options = {}) {
    if (typeof documentId !== 'string' || documentId.length === 0) throw new TypeError('documentId must be a non-empty string')
    const existing = this.rooms.get(documentId)
    if (existing) {
      if (options.doc && options.doc !== existing.doc) throw new Error(`document ${JSON.stringify(documentId)} is already joined with another Y.Doc`)
      return existing
    }
    const room = new Room(this, documentId, options)
    this.rooms.set(documentId, room)
    if (this.status === 'connected') room._connected()
    return room
  }

  /** Open the socket (done by the constructor unless autoConnect: false). Also restarts a closed client. */
  connect() {
    if (this._closed) globalThis.addEventListener?.('online', this._onOnline)
    this._closed = false
    if (this._socket || this._timers.reconnect || this._opening) return
    this._open()
  }

  /** Close the socket for good (no reconnect) and leave every room. */
  close() {
    this._closed = true
    globalThis.removeEventListener?.('online', this._onOnline)
    for (const room of [...this.rooms.values()]) room.leave()
    this._clearTimers()
    const socket = this._socket
    this._socket = null
    if (socket) {
      detach(socket)
      try {
        socket.close(1000, 'client closed')
      } catch {
        // already closing
      }
    }
    this._lost({ code: 1000, reason: 'client closed' })
  }

  /** Send a raw protocol message; false when the socket is not open. */
  send(message) {
    return this._send(message)
  }

  /**
   * An app message to every connection of `userId` (send_to_user; they get
   * a `direct`). Resolves on the server's ack; rejects with the server's
   * error (`forbidden` unless you share a joined document with that user,
   * `invalid_message`, `too_large`...), or at once with `not_connected`
   * while disconnected: app messages are ephemeral and never queued.
   * @param {string} userId
   * @param {string} event 1-64 bytes
   * @param {unknown} [data] any JSON value (default null)
   * @returns {Promise<void>}
   */
  sendToUser(userId, event, data = null) {
    if (typeof userId !== 'string' || userId.length === 0) throw new TypeError('userId must be a non-empty string')
    checkEvent(event)
    return this._request({ type: 'send_to_user', user_id: userId, event, data }, null, 'send_to_user')
  }

  // ---- connection lifecycle ----------------------------------------------

  async _open() {
    if (this._opening) return
    this._setStatus('connecting')
    let token
    this._opening = true
    try {
      token = await this._fetchToken()
    } catch (cause) {
      this.emit('error', { code: 'token_unavailable', message: `token() failed: ${cause?.message ?? cause}` })
      return this._scheduleReconnect()
    } finally {
      this._opening = false
    }
    if (this._closed || this._socket) return
    this.token = token
    const url = withToken(this.url, token, this.options.batch !== false, this._resumeToken)
    let socket
    try {
      socket = this.options.createWebSocket
        ? this.options.createWebSocket(url)
        : new (this.options.WebSocket ?? globalThis.WebSocket)(url)
    } catch (cause) {
      this.emit('error', { code: 'socket_failed', message: String(cause?.message ?? cause) })
      return this._scheduleReconnect()
    }
    this._socket = socket
    this._lastHeardAt = Date.now()
    this._timers.connect = setTimeout(() => this._abandon(socket, 'no connected message in time'), this.options.connectTimeoutMs)
    socket.onmessage = (event) => this._receive(socket, event.data)
    socket.onclose = (event) => this._socketClosed(socket, event.code, event.reason)
    socket.onerror = () => {
      // A close event follows; browsers give no detail here.
    }
  }

  async _fetchToken() {
    const { token } = this.options
    const value = typeof token === 'function' ? await token() : token
    if (typeof value !== 'string' || value.length === 0) throw new TypeError('token must be a non-empty string')
    return value
  }

  _socketClosed(socket, code, reason) {
    if (socket !== this._socket) return
    this._socket = null
    detach(socket)
    this._lost({ code, reason })
  }

  /** Treat a socket as dead now: the close may take long to arrive, or never. */
  _abandon(socket, why) {
    if (socket !== this._socket) return
    this._socket = null
    detach(socket)
    try {
      socket.close(4000, why)
    } catch {
      // ignore
    }
    this._lost({ code: 4000, reason: why })
  }

  _lost({ code, reason }) {
    const wasConnected = this.status === 'connected'
    if (this.status === 'connecting' && code !== 1000) {
      // Never got `connected`: a refused upgrade (401, 429...) or an unreachable server.
      this.emit('error', { code: 'connect_failed', message: `the connection closed before it was established (${code}${reason ? ` ${reason}` : ''})` })
    }
    this._clearTimers()
    const routes = [...this._routes.values()]
    this._routes.clear()
    for (const route of routes) {
      route.settle?.fail({ code: 'disconnected', message: 'the connection closed before the server acknowledged the message (it may or may not have been delivered)' })
    }
    this.connectionId = null
    this._refreshing = null
    // A socket that dropped (no close frame from either side) may be
    // resumed: the rooms keep what they know until the reconnect says.
    // Any close code the server or this client sent ends the session.
    if (code !== 1006 && code !== 4000) this._resumeToken = null
    const resumable = this._resumeToken !== null
    for (const room of this.rooms.values()) room._disconnected(resumable)
    if (wasConnected || this.status === 'connecting') this.emit('close', { code, reason })
    this._setStatus('disconnected')
    if (this._closed) return
    if (NO_RECONNECT.has(code)) {
      this.emit('error', { code: 'revoked', message: `the server closed the connection with ${code} ${reason ?? ''}; not reconnecting` })
      this._closed = true
      return
    }
    // An expired token: reconnect at once with a fresh one.
    if (code === 4004) this._attempt = 0
    this._scheduleReconnect(code === 4004 ? 0 : undefined)
  }

  _scheduleReconnect(delay) {
    if (this._closed) return
    this._setStatus('disconnected')
    const { minReconnectDelayMs: min, maxReconnectDelayMs: max } = this.options
    const ceiling = Math.min(max, min * 2 ** this._attempt)
    this._attempt++
    const wait = delay ?? ceiling / 2 + (Math.random() * ceiling) / 2
    clearTimeout(this._timers.reconnect)
    this._timers.reconnect = setTimeout(() => {
      this._timers.reconnect = null
      if (!this._closed && !this._socket) this._open()
    }, wait)
    this.emit('reconnect_scheduled', { delayMs: wait, attempt: this._attempt })
  }

  _connected(msg) {
    clearTimeout(this._timers.connect)
    this.connection = msg
    this.connectionId = msg.connection_id ?? null
    this.sessionId = msg.session_id ?? null
    this.userId = msg.user_id ?? null
    this.resumed = msg.resumed === true
    this._resumeToken = typeof msg.resume_token === 'string' ? msg.resume_token : null
    const interval = Number(msg.heartbeat_interval_ms)
    this.heartbeatIntervalMs = Number.isFinite(interval) && interval > 0 ? interval : this.options.fallbackHeartbeatIntervalMs
    this._startHeartbeat()
    this._timers.stable = setTimeout(() => {
      this._attempt = 0
    }, this.options.stableConnectionMs)
    this._scheduleRefresh()
    this._setStatus('connected')
    this.emit('connected', msg)
    for (const room of [...this.rooms.values()]) {
      if (this.resumed) room._resumed()
      else room._connected()
    }
  }

  _startHeartbeat() {
    const interval = this.options.heartbeatIntervalMs ?? this.heartbeatIntervalMs
    const socket = this._socket
    const beat = () => {
      this._lastHeartbeatAt = Date.now()
      // The oldest heartbeat that nothing has been heard after (reset by every message).
      this._unansweredSince ??= this._lastHeartbeatAt
      this._send({ type: 'heartbeat', id: this._nextId('hb') })
    }
    this._lastHeartbeatAt = Date.now()
    this._unansweredSince = null
    this._timers.heartbeat = setInterval(beat, interval)
    // Dead socket: nothing at all heard for two intervals, although a
    // heartbeat has been waiting for its answer for a whole interval. (A
    // background tab's timers may fire late: an overdue heartbeat is sent
    // first, so slow timers alone never look like a dead server.)
    this._timers.liveness = setInterval(() => {
      const now = Date.now()
      if (now - this._lastHeartbeatAt >= interval * 1.5) beat()
      const unanswered = this._unansweredSince !== null && now - this._unansweredSince >= interval
      if (unanswered && now - this._lastHeardAt > 2 * interval) this._abandon(socket, 'nothing heard for two heartbeat intervals')
    }, Math.max(50, interval / 4))
  }

  // ---- tokens ------------------------------------------------------------

  _scheduleRefresh() {
    clearTimeout(this._timers.refresh)
    if (typeof this.options.token !== 'function') return
    const { exp, iat } = tokenTimes(this.token)
    if (!exp) return
    const now = Date.now()
    const lifetime = exp - (iat ?? now)
    const margin = Math.min(this.options.refreshBeforeExpiryMs, Math.max(0, lifetime / 2))
    const wait = Math.max(0, exp - margin - now)
    this._timers.refresh = setTimeout(() => this.refreshToken(), wait)
  }

  /**
   * Ask token() for a fresh token and send it as refresh_token. Resolves
   * true once the server accepted it (token_refreshed).
   */
  refreshToken() {
    if (this._refreshing) return this._refreshing
    if (this.status !== 'connected' || typeof this.options.token !== 'function') return Promise.resolve(false)
    const socket = this._socket
    const attempt = (async () => {
      let token
      try {
        token = await this._fetchToken()
      } catch (cause) {
        this.emit('error', { code: 'token_unavailable', message: `token() failed: ${cause?.message ?? cause}` })
        return false
      }
      if (socket !== this._socket) return false
      const id = this._nextId('rt')
      const reply = new Promise((resolve) => this._routes.set(id, { room: null, kind: 'refresh', resolve, token }))
      this._send({ type: 'refresh_token', token, id })
      return reply
    })()
    this._refreshing = attempt
    attempt.then((ok) => {
      if (this._refreshing === attempt) this._refreshing = null
      if (!ok && socket === this._socket && this.status === 'connected') {
        clearTimeout(this._timers.refresh)
        this._timers.refresh = setTimeout(() => this.refreshToken(), this.options.refreshRetryMs)
      }
    })
    return attempt
  }

  // ---- messages ----------------------------------------------------------

  _send(message) {
    const socket = this._socket
    if (!socket || socket.readyState !== 1) return false
    return this._sendText(JSON.stringify(message))
  }

  _sendText(text) {
    const socket = this._socket
    if (!socket || socket.readyState !== 1) return false
    try {
      socket.send(text)
      return true
    } catch {
      return false
    }
  }

  _receive(socket, data) {
    if (socket !== this._socket) return
    this._lastHeardAt = Date.now()
    this._unansweredSince = null
    const text = typeof data === 'string' ? data : decodeText(data)
    if (text === null) return
    // One frame may carry several messages, one per line (/ws?batch=1).
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue
      let msg
      try {
        msg = JSON.parse(line)
      } catch {
        this.emit('error', { code: 'client_invalid_json', message: 'the server sent a line that is not JSON' })
        continue
      }
      if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') continue
      try {
        this._dispatch(msg)
      } catch (error) {
        this.emit('error', { code: 'client_internal', message: String(error?.stack ?? error) })
      }
      if (socket !== this._socket) return
    }
  }

  _dispatch(msg) {
    this.emit('message', msg)
    switch (msg.type) {
      case 'connected':
        return this._connected(msg)
      case 'heartbeat_ack':
        this._unroute(msg.id)
        return this.emit('heartbeat_ack', msg)
      case 'ack':
        return this._onAck(msg)
      case 'error':
        return this._onError(msg)
      case 'token_expiring':
        this.emit('token_expiring', msg)
        return this._onTokenExpiring(msg)
      case 'token_refreshed':
        return this._onTokenRefreshed(msg)
      case 'direct': {
        const { type: _type, ...direct } = msg
        return this.emit('direct', direct)
      }
    }
    if (typeof msg.document_id === 'string') {
      const room = this.rooms.get(msg.document_id)
      if (room) {
        if (msg.id !== undefined && msg.type !== 'sync_step2') this._unroute(msg.id)
        room._handle(msg)
      }
      return
    }
    // A message type this client does not know: ignored (after the 'message' event).
  }

  _onAck(msg) {
    const route = this._routes.get(String(msg.id))
    if (!route) return
    this._routes.delete(String(msg.id))
    if (route.settle) return route.settle.done()
    route.room?._ack(String(msg.id), route.kind)
  }

  _onError(msg) {
    const id = msg.id === undefined || msg.id === null ? undefined : String(msg.id)
    const route = id === undefined ? undefined : this._routes.get(id)
    if (route) this._routes.delete(id)
    const error = {
      code: msg.code,
      message: msg.message,
      id,
      document_id: route?.room?.documentId ?? msg.document_id,
      request: route?.kind,
    }
    this.emit('error', error)
    if (route?.kind === 'refresh') return route.resolve(false)
    if (route?.settle) {
      if (route.room) route.room.emit('error', error)
      return route.settle.fail(error)
    }
    const room = route?.room ?? (typeof msg.document_id === 'string' ? this.rooms.get(msg.document_id) : undefined)
    room?._error(error, route?.kind)
  }

  _onTokenExpiring(msg) {
    const expiresAt = Number(msg.expires_at) * 1000
    const current = tokenTimes(this.token).exp
    // Already on a token that outlives the warning? Nothing to do.
    if (current && Number.isFinite(expiresAt) && current > expiresAt) return
    this.refreshToken()
  }

  _onTokenRefreshed(msg) {
    const id = msg.id === undefined ? undefined : String(msg.id)
    const route = id === undefined ? undefined : this._routes.get(id)
    if (route) this._routes.delete(id)
    if (route?.token) this.token = route.token
    this.emit('token_refreshed', msg)
    this._scheduleRefresh()
    route?.resolve?.(true)
  }

  // ---- for rooms ---------------------------------------------------------

  /** @internal */
  _nextId(prefix) {
    return `${prefix}${++this._idCounter}`
  }

  /** @internal Remember who waits for the reply to message `id`. */
  _route(id, room, kind) {
    this._routes.set(id, { room, kind })
  }

  /**
   * @internal Send an app message with an id; the promise settles on its
   * ack or error (or disconnect, or requestTimeoutMs: a frame dropped by the
   * server's rate limit gets no reply of its own). Never an unhandled
   * rejection: awaiting it is optional.
   */
  _request(message, room, kind) {
    const base = { request: kind, ...(room ? { document_id: room.documentId } : {}) }
    if (this.status !== 'connected') {
      return rejected({ ...base, code: 'not_connected', message: `not connected (${this.status}): ${kind} is ephemeral and is not queued until the connection is back` })
    }
    if (room && !room.joined) {
      return rejected({ ...base, code: 'not_joined', message: `document ${JSON.stringify(room.documentId)} is not joined (room status ${room.status}); await room.synced first` })
    }
    const id = this._nextId(kind === 'broadcast' ? 'b' : 'm')
    // Throws (synchronously) for data JSON cannot carry: a BigInt, a cycle.
    const text = JSON.stringify({ ...message, id })
    let settle
    const promise = new Promise((resolve, reject) => {
      const finish = () => {
        clearTimeout(timer)
        if (this._routes.get(id)?.settle === settle) this._routes.delete(id)
      }
      settle = {
        done() {
          finish()
          resolve()
        },
        fail(fields) {
          finish()
          reject(requestError({ ...base, id, ...fields }))
        },
      }
      const timer = setTimeout(
        () => settle.fail({ code: 'timeout', message: `no reply from the server within ${this.options.requestTimeoutMs} ms (a frame over the rate limit is dropped without one)` }),
        this.options.requestTimeoutMs,
      )
      timer.unref?.()
    })
    promise.catch(() => {}) // rejection is for those who await it, never "unhandled"
    this._routes.set(id, { room, kind, settle })
    if (!this._sendText(text)) settle.fail({ code: 'not_connected', message: `the socket is not open: ${kind} is ephemeral and is not queued` })
    return promise
  }

  /** @internal */
  _unroute(id) {
    if (id !== undefined) this._routes.delete(String(id))
  }

  /** @internal A room left, failed or was revoked. */
  _forget(room) {
    if (this.rooms.get(room.documentId) === room) this.rooms.delete(room.documentId)
    // App messages already sent still get their ack or error.
    for (const [id, route] of this._routes) if (route.room === room && !route.settle) this._routes.delete(id)
  }

  _setStatus(status) {
    if (this.status === status) return
    this.status = status
    this.emit('status', status)
  }

  _clearTimers() {
    for (const key of Object.keys(this._timers)) {
      clearTimeout(this._timers[key])
      clearInterval(this._timers[key])
    }
    this._timers = {}
  }
}

// The token, and `batch=1` (the server may put several messages in one
// frame, newline-delimited: fewer frames under load) unless turned off or
// already in the URL.
function withToken(url, token, batch = true, resume = null) {
  const separator = url.includes('?') ? '&' : '?'
  const batched = batch && !/[?&]batch=/.test(url) ? '&batch=1' : ''
  const resumed = resume ? `&resume=${encodeURIComponent(resume)}` : ''
  return `${url}${separator}token=${encodeURIComponent(token)}${batched}${resumed}`
}

const ignore = () => {}

/**
 * Stop listening to a socket we are done with. Handlers become no-ops, not
 * null: an EventEmitter-based socket (ws) throws on an 'error' nobody
 * listens to, and a socket closed while connecting emits one.
 */
function detach(socket) {
  socket.onmessage = socket.onclose = socket.onerror = socket.onopen = ignore
}

function decodeText(data) {
  try {
    if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) return new TextDecoder().decode(data)
  } catch {
    // fall through
  }
  return null
}
