// Compiled by `npm run typecheck` (never run): the README's usage type-checks against index.d.ts.
import * as Y from 'yjs'
import { TandemClient, type PresenceMember, type Status } from 'tandem-client'

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
  room.leave()
  client.close()
  void list, devices, unsaved
}
