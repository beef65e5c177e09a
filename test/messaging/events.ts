/**
 * Client-format events exactly as Synapse puts them in appservice transactions (FIELD-GUIDE §7):
 * `unsigned.age`, the legacy top-level `age` and `user_id`, `prev_content` / `replaces_state` for
 * replaced state (also in `unsigned` with `prev_sender`), `invite_room_state` on invites.
 */
let counter = 0
export const HS_TOKEN = 'hs-secret-token-0123456789'
export const SERVER = 'example.org'
export const uid = (localpart: string) => `@${localpart}:${SERVER}`

interface Base {
  room: string
  sender: string
  ts?: number
  id?: string
}

function envelope(b: Base, type: string, content: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  const event_id = b.id ?? `$ev${++counter}_${Math.random().toString(36).slice(2, 10)}`
  return {
    type,
    room_id: b.room,
    sender: b.sender,
    content,
    event_id,
    origin_server_ts: b.ts ?? Date.now(),
    unsigned: { age: 42 },
    age: 42,
    user_id: b.sender,
    ...extra,
  }
}

export const text = (b: Base, body: string, more: Record<string, unknown> = {}) => envelope(b, 'm.room.message', { msgtype: 'm.text', body, ...more })

export function member(
  b: Base & { target?: string; membership: string; displayname?: string; isDirect?: boolean; prev?: Record<string, unknown>; inviteState?: unknown[] },
) {
  const target = b.target ?? b.sender
  const content: Record<string, unknown> = { membership: b.membership }
  if (b.displayname !== undefined) content.displayname = b.displayname
  if (b.isDirect) content.is_direct = true
  const extra: Record<string, unknown> = { state_key: target }
  const unsigned: Record<string, unknown> = { age: 42 }
  if (b.prev) {
    extra.prev_content = b.prev
    extra.replaces_state = '$previous'
    unsigned.prev_content = b.prev
    unsigned.replaces_state = '$previous'
    unsigned.prev_sender = target
  }
  if (b.inviteState) {
    extra.invite_room_state = b.inviteState
    unsigned.invite_room_state = b.inviteState
  }
  return { ...envelope(b, 'm.room.member', content, extra), unsigned }
}

export const state = (b: Base, type: string, content: Record<string, unknown>) => envelope(b, type, content, { state_key: '' })

export const edit = (b: Base, original: string, body: string) =>
  envelope(b, 'm.room.message', {
    msgtype: 'm.text',
    body: `* ${body}`,
    'm.new_content': { msgtype: 'm.text', body },
    'm.relates_to': { rel_type: 'm.replace', event_id: original },
  })

export const redaction = (b: Base, redacts: string) => envelope(b, 'm.room.redaction', { redacts }, { redacts })

export const reaction = (b: Base, target: string, key: string) =>
  envelope(b, 'm.reaction', { 'm.relates_to': { rel_type: 'm.annotation', event_id: target, key } })

/** A direct chat as Element Web makes it: alice creates and joins, invites bob with is_direct. */
export function directChatSetup(room: string, from: string, to: string, ts = Date.now()) {
  return [
    state({ room, sender: from, ts }, 'm.room.create', { creator: from, room_version: '10' }),
    member({ room, sender: from, membership: 'join', displayname: from.slice(1, from.indexOf(':')), ts }),
    member({ room, sender: from, target: to, membership: 'invite', isDirect: true, ts, inviteState: [{ type: 'm.room.create', state_key: '', sender: from, content: { creator: from } }] }),
  ]
}
