// tandem-client: a client for the tandem gateway's JSON protocol (/ws).
// One socket, any number of Yjs documents, presence with devices, and acks
// once updates are committed. See README.md and index.d.ts.

export { TandemClient } from './client.js'
export { Room } from './room.js'
export { Presence } from './presence.js'
export { Emitter } from './emitter.js'
export { toBase64, fromBase64 } from './base64.js'
export { decodeJwtPayload } from './jwt.js'
