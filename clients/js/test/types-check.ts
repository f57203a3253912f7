// Compiled by `npm run typecheck` (never run): the README's usage type-checks against index.d.ts.
import * as Y from 'yjs'
import { TandemClient, type BroadcastMessage, type DirectMessage, type PresenceMember, type Status, type TandemRequestError } from 'tandem-client'

const client = new TandemClient('ws://127.0.0.1:8080/ws', { token: async () => 'jwt' })
client.on('status', (s: Status) => void s)
client.on('error', (e) => void e.code.toUpperCase())
const ydoc = new Y.Doc()
const room = client.join('doc-1', { doc: ydoc })
export async function usage(): Promise<void> {
  await room.synced
  room.awareness.setLocalStateField('user', { name: 'Alice' })
  const list: PresenceMember[] = room.presence.list()
  const devices: number = room.presence.byUser().reduce((n, u) => n + u.devices.length, 0)
  room.on('presence', (members) => void members.map((m) => m.device_type))
  room.setCursor({ line: 1, column: 2 })
  room.setSelection(null)
  room.startEditing()
  room.stopEditing()
  const unsaved: number = room.unsavedUpdates
  room.on('saved', () => {})
  room.on('user_joined', (m) => void (m.first_device ? m.user_id : m.connection_id))
  room.on('user_left', ({ user_id, last_device, reason }) => void [user_id, last_device, reason])
  room.on('broadcast', ({ event, data, user_id, connection_id }: BroadcastMessage) => void [event, data, user_id, connection_id?.length])
  client.on('direct', ({ from_user_id, from_connection_id, event, data }: DirectMessage) => void [from_user_id, from_connection_id, event, data])
  await room.broadcast('typing', { typing: true })
  await room.broadcast('ping')
  const sent: Promise<void> = client.sendToUser('bob', 'follow_me', { line: 12 })
  await sent.catch((e: TandemRequestError) => void [e.code, e.request, e.message])
  room.leave()
  client.close()
  void list, devices, unsaved
}
