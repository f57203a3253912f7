// Who is in a document: one entry per connection (a user on two devices is
// two entries), kept from presence_list, user_joined, user_left,
// cursor_move, selection_change, editing_start and editing_stop.

export class Presence {
  constructor() {
    /** @type {Map<string, object>} connection_id -> presence object */
    this._members = new Map()
    /** the connection_id of this client's own connection, if joined */
    this.selfConnectionId = null
  }

  /** Every member, sorted by user_id then joined_at (as the REST endpoint sorts). */
  list() {
    return [...this._members.values()]
      .map((member) => ({ ...member, is_self: member.connection_id === this.selfConnectionId }))
      .sort(compareMembers)
  }

  /** Members grouped per user: [{ user_id, name, devices: [...] }], sorted by user_id. */
  byUser() {
    const users = new Map()
    for (const member of this.list()) {
      let user = users.get(member.user_id)
      if (!user) {
        user = { user_id: member.user_id, name: member.name ?? null, devices: [] }
        users.set(member.user_id, user)
      }
      if (user.name == null && member.name != null) user.name = member.name
      user.devices.push(member)
    }
    return [...users.values()]
  }

  /** The member on one connection, or undefined. */
  get(connectionId) {
    const member = this._members.get(connectionId)
    return member && { ...member, is_self: member.connection_id === this.selfConnectionId }
  }

  get size() {
    return this._members.size
  }

  /** @internal Replace everything (presence_list). */
  _reset(users) {
    this._members.clear()
    for (const user of users ?? []) {
      if (user && typeof user.connection_id === 'string') this._members.set(user.connection_id, { ...user })
    }
  }

  /** @internal */
  _clear() {
    this._members.clear()
  }

  /** @internal Add or replace one member (user_joined). */
  _add(user) {
    if (user && typeof user.connection_id === 'string') this._members.set(user.connection_id, { ...user })
  }

  /** @internal Remove one member (user_left); true if it was there. */
  _remove(connectionId) {
    return this._members.delete(connectionId)
  }

  /** @internal Merge fields into one member; true if it was there. */
  _patch(connectionId, fields) {
    const member = this._members.get(connectionId)
    if (!member) return false
    Object.assign(member, fields, { last_seen_at: new Date().toISOString() })
    return true
  }
}

function compareMembers(a, b) {
  if (a.user_id !== b.user_id) return a.user_id < b.user_id ? -1 : 1
  const ja = a.joined_at ?? ''
  const jb = b.joined_at ?? ''
  if (ja !== jb) return ja < jb ? -1 : 1
  return a.connection_id < b.connection_id ? -1 : a.connection_id > b.connection_id ? 1 : 0
}
