// Types for tandem-client (hand-written; the source is src/*.js).

import type * as Y from 'yjs'
import type { Awareness } from 'y-protocols/awareness'

export type Status = 'connecting' | 'connected' | 'disconnected'
export type RoomStatus = 'joining' | 'joined' | 'left' | 'revoked' | 'failed'
export type DeviceType = 'mobile' | 'tablet' | 'desktop' | 'bot' | 'other' | (string & {})

export interface Position {
  line: number
  column: number
}

export interface Selection {
  start: Position
  end: Position
}

/** One member of a document: one user on one connection (protocol.md, "Presence object"). */
export interface PresenceMember {
  user_id: string
  name: string | null
  session_id: string
  connection_id: string
  device_type: DeviceType
  is_editing: boolean
  cursor: Position | null
  selection: Selection | null
  joined_at: string
  last_seen_at: string
  /** Added by the client: true for this client's own connection. */
  is_self: boolean
  [field: string]: unknown
}

export interface PresenceUser {
  user_id: string
  name: string | null
  devices: PresenceMember[]
}

/** A server `error` (or a client-side one, whose code starts with `client_` or is `token_unavailable`, `socket_failed`, `revoked`). */
export interface TandemError {
  code: string
  message: string
  /** The id of the message that failed, when it had one. */
  id?: string
  /** The document the failed message was about, when known. */
  document_id?: string
  /** What the failed message was: 'join', 'update', 'sync', 'step2', 'refresh', 'broadcast', 'send_to_user'... */
  request?: string
}

/**
 * What `room.broadcast()` and `client.sendToUser()` reject with: an Error with
 * the server's `code` (`invalid_message`, `too_large`, `not_joined`,
 * `forbidden`, `rate_limited`...) or the client's own: `not_connected`
 * (nothing was sent: app messages are never queued), `not_joined` (the room
 * is not joined on this connection yet), `disconnected` (the socket closed
 * before the reply; it may or may not have been delivered), `timeout` (no
 * reply within `requestTimeoutMs`, e.g. a frame dropped by the rate limit).
 */
export interface TandemRequestError extends Error {
  code: string
  /** 'broadcast' | 'send_to_user' */
  request: string
  id?: string
  document_id?: string
}

/** Any JSON value: what an app message's `data` may be. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue }

/** A `broadcast` from another member of the document (protocol.md, "App messages"). */
export interface BroadcastMessage {
  document_id: string
  event: string
  data: JsonValue
  /** The sender (for a backend's REST broadcast: its token's user). */
  user_id: string
  /** The sender's connection; null when a backend sent it over REST. */
  connection_id: string | null
  [field: string]: unknown
}

/** A `direct` message (send_to_user) addressed to this client's user. */
export interface DirectMessage {
  from_user_id: string
  /** null when a backend sent it over REST. */
  from_connection_id: string | null
  event: string
  data: JsonValue
  [field: string]: unknown
}

/** The `user_joined` event: the new member, and whether it is that user's first connection in the document. */
export interface JoinedMember extends PresenceMember {
  /** No other connection of this user is in the document (on any instance): a new person, not only a new device. */
  first_device: boolean
}

/** The `user_left` event. */
export interface LeftMember {
  user_id: string
  connection_id: string
  /** 'left' | 'disconnected' | 'timeout' | 'expired' | 'revoked' */
  reason: string
  /** No connection of this user remains in the document (on any instance): the person is gone, not only a device. */
  last_device: boolean
}

export interface CloseInfo {
  code: number
  reason: string
}

/** Whatever the server sent: known fields typed loosely, unknown fields kept. */
export interface ServerMessage {
  type: string
  [field: string]: unknown
}

/** A WebSocket as far as the client uses it (the browser's, `ws`, or Node 22's global one). */
export interface WebSocketLike {
  readonly readyState: number
  send(data: string): void
  close(code?: number, reason?: string): void
  onopen: ((event: any) => void) | null
  onmessage: ((event: { data: any }) => void) | null
  onclose: ((event: { code: number; reason: string }) => void) | null
  onerror: ((event: any) => void) | null
}

export interface TandemClientOptions {
  /** A token (JWT or tk_ API key), or a function returning one; called on every connect and before expiry. */
  token: string | (() => string | Promise<string>)
  /** A WebSocket constructor (default: globalThis.WebSocket). In Node 20: `import WebSocket from 'ws'`. */
  WebSocket?: new (url: string) => WebSocketLike
  /** Build the socket yourself (e.g. `ws` with a User-Agent header). Wins over `WebSocket`. */
  createWebSocket?: (url: string) => WebSocketLike
  /** Connect from the constructor (default true); otherwise call connect(). */
  autoConnect?: boolean
  /** First reconnect delay ceiling (default 500 ms); doubles per failed attempt, jittered. */
  minReconnectDelayMs?: number
  /** Reconnect delay cap (default 30 000 ms). */
  maxReconnectDelayMs?: number
  /** A connection up this long resets the backoff (default 60 000 ms). */
  stableConnectionMs?: number
  /** Give up on a socket that sends no `connected` within this (default 10 000 ms). */
  connectTimeoutMs?: number
  /** Refresh this long before the token's exp, at most half its lifetime (default 90 000 ms). */
  refreshBeforeExpiryMs?: number
  /** After a refused or failed refresh, try again after this (default 5 000 ms). */
  refreshRetryMs?: number
  /** Override the heartbeat interval the server announces (tests). */
  heartbeatIntervalMs?: number
  /** broadcast() / sendToUser() reject with `timeout` after this without an ack or error (default 10 000 ms). */
  requestTimeoutMs?: number
  /** Connect with `?batch=1`: several messages per frame, newline-delimited, under load (default true). */
  batch?: boolean
}

export interface ClientEvents {
  status: (status: Status) => void
  connected: (message: ServerMessage & { connection_id: string; session_id: string; user_id: string; heartbeat_interval_ms: number }) => void
  close: (info: CloseInfo) => void
  error: (error: TandemError) => void
  message: (message: ServerMessage) => void
  heartbeat_ack: (message: ServerMessage & { server_time: number }) => void
  token_expiring: (message: ServerMessage & { expires_at: number }) => void
  token_refreshed: (message: ServerMessage & { expires_at: number }) => void
  reconnect_scheduled: (info: { delayMs: number; attempt: number }) => void
  /** A send_to_user addressed to this user (every connection of the user gets it). */
  direct: (message: DirectMessage) => void
}

export interface RoomEvents {
  status: (status: RoomStatus) => void
  synced: () => void
  presence: (members: PresenceMember[]) => void
  user_joined: (member: JoinedMember) => void
  user_left: (info: LeftMember) => void
  /** An app message from another member (never this connection's own). */
  broadcast: (message: BroadcastMessage) => void
  saved: () => void
  unsaved: (count: number) => void
  error: (error: TandemError) => void
  revoked: () => void
  message: (message: ServerMessage) => void
}

type Args<F> = F extends (...args: infer A) => any ? A : never

export declare class Emitter<Events extends object = Record<string, (...args: any[]) => void>> {
  on<K extends keyof Events & string>(event: K, listener: Events[K]): () => void
  once<K extends keyof Events & string>(event: K, listener: Events[K]): () => void
  off<K extends keyof Events & string>(event: K, listener: Events[K]): void
  emit<K extends keyof Events & string>(event: K, ...args: Args<Events[K]>): void
}

export declare class Presence {
  /** Every member, sorted by user_id then joined_at. */
  list(): PresenceMember[]
  /** Members grouped per user, sorted by user_id. */
  byUser(): PresenceUser[]
  get(connectionId: string): PresenceMember | undefined
  readonly size: number
  selfConnectionId: string | null
}

export interface JoinOptions {
  /** The document to sync (default: a new Y.Doc, as room.doc). */
  doc?: Y.Doc
  /** An Awareness of your own (default: a new one on doc, destroyed on leave). */
  awareness?: Awareness
  /** Never send document updates (default: true for a token with role "viewer"). */
  readOnly?: boolean
}

export declare class Room extends Emitter<RoomEvents> {
  readonly client: TandemClient
  readonly documentId: string
  readonly doc: Y.Doc
  readonly awareness: Awareness
  readonly presence: Presence
  readonly status: RoomStatus
  /** Resolves after the first full sync; rejects if the join fails or the room is left first. */
  readonly synced: Promise<void>
  /** In sync on the current connection. */
  readonly isSynced: boolean
  readonly joined: boolean
  readonly readOnly: boolean
  /** Local updates not yet acknowledged as durable by the server. */
  readonly unsavedUpdates: number
  setCursor(cursor: Position): void
  setSelection(selection: Selection | null): void
  startEditing(): void
  stopEditing(): void
  /**
   * Send an app message to the document's other members (viewers may too).
   * Resolves on the server's ack; rejects with a TandemRequestError, at once
   * with `not_connected` while disconnected (never queued). Throws TypeError
   * for an event that is not a string or data JSON cannot carry.
   * @param event 1-64 bytes
   * @param data any JSON value, at most 16 KiB and 32 levels deep (default null)
   */
  broadcast(event: string, data?: unknown): Promise<void>
  leave(): void
}

export declare class TandemClient extends Emitter<ClientEvents> {
  constructor(url: string | URL, options: TandemClientOptions)
  readonly url: string
  readonly status: Status
  readonly connectionId: string | null
  readonly sessionId: string | null
  /** Whether the last `connected` resumed the session after a dropped socket (no leave/join was seen by anyone). */
  readonly resumed: boolean
  readonly userId: string | null
  readonly heartbeatIntervalMs: number | null
  /** The last `connected` message. */
  readonly connection: ServerMessage | null
  /** The token in use on this connection. */
  readonly token: string | null
  readonly role: string
  readonly rooms: ReadonlyMap<string, Room>
  join(documentId: string, options?: JoinOptions): Room
  connect(): void
  close(): void
  /** Ask token() for a fresh token and send refresh_token; true once accepted. */
  refreshToken(): Promise<boolean>
  /** Send a raw protocol message; false when the socket is not open. */
  send(message: { type: string; [field: string]: unknown }): boolean
  /**
   * Send an app message to every connection of `userId` (a `direct` event
   * there). Resolves on the server's ack; rejects with a TandemRequestError:
   * `forbidden` unless this connection and that user share a joined
   * document, at once `not_connected` while disconnected (never queued).
   * @param event 1-64 bytes
   * @param data any JSON value, at most 16 KiB and 32 levels deep (default null)
   */
  sendToUser(userId: string, event: string, data?: unknown): Promise<void>
}

export declare function toBase64(bytes: Uint8Array): string
export declare function fromBase64(text: string): Uint8Array
export declare function decodeJwtPayload(token: string): Record<string, unknown> | null
