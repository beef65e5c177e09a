/**
 * The fake Synapse's rooms: state, timeline, membership, account data and receipts, with the rules
 * and answers of a real Synapse (FIELD-GUIDE §7) for what the proxy does as a user. Every operation
 * is done as a user, both for the HTTP routes (test/fakes/synapse.ts) and for tests (alice sends,
 * bob leaves); every event created goes to `onEvent`, so the appservice sender forwards it.
 */
import { randomBytes } from 'node:crypto'

export interface FakeEvent {
  event_id: string
  room_id: string
  sender: string
  type: string
  origin_server_ts: number
  content: Record<string, any>
  state_key?: string
  redacts?: string
  unsigned: Record<string, any>
}

/** An error answer of the homeserver. */
export class FakeMatrixError extends Error {
  constructor(
    readonly status: number,
    readonly errcode: string,
    message: string,
  ) {
    super(message)
  }
  toResponse() {
    return Response.json({ errcode: this.errcode, error: this.message }, { status: this.status })
  }
}

const notFound = (message: string) => new FakeMatrixError(404, 'M_NOT_FOUND', message)
const forbidden = (message: string) => new FakeMatrixError(403, 'M_FORBIDDEN', message)

interface Room {
  id: string
  state: Map<string, FakeEvent>
  timeline: FakeEvent[]
}

const stateKeyOf = (type: string, key: string) => `${type}\u0000${key}`

/** Event ids as Synapse makes them for room versions 4 and later: `$` + 43 URL-safe base64 characters. */
const newEventId = () => `$${randomBytes(32).toString('base64url')}`
const newRoomId = (server: string) => `!${randomBytes(9).toString('base64url').replace(/[-_]/g, 'x')}:${server}`

export function createRoomModel(options: { serverName: string; onEvent: (e: FakeEvent) => void; displayName: (user: string) => string | undefined }) {
  const { serverName } = options
  const rooms = new Map<string, Room>()
  const aliases = new Map<string, string>()
  const accountData = new Map<string, Map<string, Record<string, unknown>>>()
  const receipts: Array<{ user: string; room: string; eventId: string; type: string; ts: number }> = []
  /** Synapse dedupes /send by (request path, appservice) for ~30 minutes, not by user. */
  const sendTxns = new Map<string, string>()
  /** What a server module might do: encrypt every new room whatever createRoom asked. */
  let encryptNewRooms = false

  const room = (id: string) => {
    const r = rooms.get(id)
    if (!r) throw notFound(`Unknown room ${id}`)
    return r
  }
  const membership = (r: Room, user: string): string | undefined => r.state.get(stateKeyOf('m.room.member', user))?.content.membership
  const mustBeJoined = (r: Room, user: string) => {
    const m = membership(r, user)
    if (m !== 'join') throw forbidden(`User ${user} not in room ${r.id} (${m ?? 'None'})`)
  }

  function addEvent(r: Room, sender: string, type: string, content: Record<string, any>, stateKey?: string, extra: Partial<FakeEvent> = {}): FakeEvent {
    const event: FakeEvent = {
      event_id: newEventId(),
      room_id: r.id,
      sender,
      type,
      origin_server_ts: Date.now(),
      content,
      ...(stateKey === undefined ? {} : { state_key: stateKey }),
      unsigned: {},
      ...extra,
    }
    if (stateKey !== undefined) {
      const previous = r.state.get(stateKeyOf(type, stateKey))
      if (previous) {
        event.unsigned.replaces_state = previous.event_id
        event.unsigned.prev_content = previous.content
        event.unsigned.prev_sender = previous.sender
      }
      r.state.set(stateKeyOf(type, stateKey), event)
    }
    r.timeline.push(event)
    options.onEvent(event)
    return event
  }

  function memberContent(user: string, membershipValue: string, more: Record<string, unknown> = {}) {
    const displayname = options.displayName(user)
    return { membership: membershipValue, ...(displayname === undefined ? {} : { displayname }), ...more }
  }

  /** Stripped state for an invite (what the invitee may see before joining). */
  function strippedState(r: Room, inviter: string) {
    const wanted = ['m.room.create', 'm.room.join_rules', 'm.room.name', 'm.room.canonical_alias', 'm.room.avatar', 'm.room.encryption', 'm.room.topic']
    const list = wanted.map((t) => r.state.get(stateKeyOf(t, ''))).filter((e): e is FakeEvent => e !== undefined)
    const inviterMember = r.state.get(stateKeyOf('m.room.member', inviter))
    if (inviterMember) list.push(inviterMember)
    // Synapse gives these in no stable order.
    return list.map((e) => ({ type: e.type, state_key: e.state_key, content: e.content, sender: e.sender })).sort(() => Math.random() - 0.5)
  }

  function powerLevel(r: Room, user: string): number {
    const pl = r.state.get(stateKeyOf('m.room.power_levels', ''))?.content
    return pl?.users?.[user] ?? pl?.users_default ?? 0
  }

  const api = {
    rooms,
    receipts,
    setEncryptNewRooms(on: boolean) {
      encryptNewRooms = on
    },

    createRoom(user: string, body: Record<string, any>): string {
      const preset = body.preset ?? (body.visibility === 'public' ? 'public_chat' : 'private_chat')
      if (!['private_chat', 'trusted_private_chat', 'public_chat'].includes(preset)) {
        throw new FakeMatrixError(400, 'M_INVALID_PARAM', `Invalid preset: ${preset}`)
      }
      const invites: string[] = Array.isArray(body.invite) ? body.invite : []
      let alias: string | undefined
      if (typeof body.room_alias_name === 'string') {
        alias = `#${body.room_alias_name}:${serverName}`
        if (aliases.has(alias)) throw new FakeMatrixError(400, 'M_ROOM_IN_USE', 'Room alias already taken')
      }
      const r: Room = { id: newRoomId(serverName), state: new Map(), timeline: [] }
      rooms.set(r.id, r)
      addEvent(r, user, 'm.room.create', { room_version: '10', creator: user, ...(body.creation_content ?? {}) }, '')
      addEvent(r, user, 'm.room.member', memberContent(user, 'join'), user)
      const users: Record<string, number> = { [user]: 100 }
      // trusted_private_chat gives every invitee power level 100; private_chat only the creator.
      if (preset === 'trusted_private_chat') for (const i of invites) users[i] = 100
      addEvent(r, user, 'm.room.power_levels', {
        users,
        users_default: 0,
        events: { 'm.room.name': 50, 'm.room.power_levels': 100, 'm.room.history_visibility': 100, 'm.room.canonical_alias': 50, 'm.room.avatar': 50, 'm.room.tombstone': 100, 'm.room.server_acl': 100, 'm.room.encryption': 100 },
        events_default: 0,
        state_default: 50,
        ban: 50,
        kick: 50,
        redact: 50,
        invite: 0,
        historical: 100,
        ...(body.power_level_content_override ?? {}),
      }, '')
      if (alias) {
        aliases.set(alias, r.id)
        addEvent(r, user, 'm.room.canonical_alias', { alias }, '')
      }
      addEvent(r, user, 'm.room.join_rules', { join_rule: preset === 'public_chat' ? 'public' : 'invite' }, '')
      addEvent(r, user, 'm.room.history_visibility', { history_visibility: 'shared' }, '')
      if (preset !== 'public_chat') addEvent(r, user, 'm.room.guest_access', { guest_access: 'can_join' }, '')
      for (const s of Array.isArray(body.initial_state) ? body.initial_state : []) addEvent(r, user, s.type, s.content ?? {}, s.state_key ?? '')
      if (encryptNewRooms && !r.state.has(stateKeyOf('m.room.encryption', ''))) addEvent(r, user, 'm.room.encryption', { algorithm: 'm.megolm.v1.aes-sha2' }, '')
      if (typeof body.name === 'string') addEvent(r, user, 'm.room.name', { name: body.name }, '')
      if (typeof body.topic === 'string') addEvent(r, user, 'm.room.topic', { topic: body.topic }, '')
      for (const invitee of invites) api.invite(user, r.id, invitee, body.is_direct === true)
      return r.id
    },

    invite(user: string, roomId: string, target: string, isDirect = false): FakeEvent {
      const r = room(roomId)
      mustBeJoined(r, user)
      const current = membership(r, target)
      if (current === 'join') throw forbidden(`${target} is already in the room.`)
      if (current === 'ban') throw forbidden(`${target} is banned from the room`)
      if (current === 'invite') return r.state.get(stateKeyOf('m.room.member', target))!
      const event = addEvent(r, user, 'm.room.member', memberContent(target, 'invite', isDirect ? { is_direct: true } : {}), target, {
        unsigned: { invite_room_state: strippedState(r, user) },
      })
      return event
    },

    resolveAlias(roomIdOrAlias: string): string {
      if (!roomIdOrAlias.startsWith('#')) return roomIdOrAlias
      const id = aliases.get(roomIdOrAlias)
      if (!id) throw notFound(`Room alias ${roomIdOrAlias} not found`)
      return id
    },

    join(user: string, roomIdOrAlias: string): string {
      const r = rooms.get(api.resolveAlias(roomIdOrAlias))
      if (!r) throw notFound('No known servers')
      const current = membership(r, user)
      if (current === 'join') return r.id
      if (current === 'ban') throw forbidden('You are banned from this room')
      const rule = r.state.get(stateKeyOf('m.room.join_rules', ''))?.content.join_rule
      if (current !== 'invite' && rule !== 'public') throw forbidden('You are not invited to this room.')
      addEvent(r, user, 'm.room.member', memberContent(user, 'join'), user)
      return r.id
    },

    leave(user: string, roomId: string) {
      const r = room(roomId)
      const current = membership(r, user)
      if (current !== 'join' && current !== 'invite') throw forbidden(`User ${user} not in room ${roomId}`)
      addEvent(r, user, 'm.room.member', memberContent(user, 'leave'), user)
    },

    kick(user: string, roomId: string, target: string, ban = false) {
      const r = room(roomId)
      mustBeJoined(r, user)
      addEvent(r, user, 'm.room.member', { membership: ban ? 'ban' : 'leave' }, target)
    },

    /** PUT send/{type}/{txnId}: the same path returns the first event id, whoever asks. */
    send(user: string, roomId: string, type: string, content: Record<string, any>, txnPath?: string): string {
      if (txnPath !== undefined) {
        const seen = sendTxns.get(txnPath)
        if (seen !== undefined) return seen
      }
      const r = room(roomId)
      mustBeJoined(r, user)
      const event = addEvent(r, user, type, content)
      if (txnPath !== undefined) sendTxns.set(txnPath, event.event_id)
      return event.event_id
    },

    setState(user: string, roomId: string, type: string, stateKey: string, content: Record<string, any>): string {
      const r = room(roomId)
      mustBeJoined(r, user)
      const needed = r.state.get(stateKeyOf('m.room.power_levels', ''))?.content.events?.[type] ?? 50
      if (powerLevel(r, user) < needed) throw forbidden(`You don't have permission to post that to the room. user_level (${powerLevel(r, user)}) < send_level (${needed})`)
      return addEvent(r, user, type, content, stateKey).event_id
    },

    redact(user: string, roomId: string, eventId: string, reason?: string): string {
      const r = room(roomId)
      mustBeJoined(r, user)
      const target = r.timeline.find((e) => e.event_id === eventId)
      // Room version 10: `redacts` at the top level; Synapse also copies it into content.
      const redaction = addEvent(r, user, 'm.room.redaction', { redacts: eventId, ...(reason ? { reason } : {}) }, undefined, { redacts: eventId })
      if (target) {
        target.content = {}
        target.unsigned.redacted_because = redaction
      }
      return redaction.event_id
    },

    receipt(user: string, roomId: string, type: string, eventId: string) {
      const r = room(roomId)
      mustBeJoined(r, user)
      receipts.push({ user, room: roomId, eventId, type, ts: Date.now() })
    },

    membership(roomId: string, user: string) {
      const r = rooms.get(roomId)
      return r && membership(r, user)
    },
    members(roomId: string, wanted = 'join'): string[] {
      return [...room(roomId).state.values()].filter((e) => e.type === 'm.room.member' && e.content.membership === wanted).map((e) => e.state_key!)
    },
    joinedRooms(user: string): string[] {
      return [...rooms.values()].filter((r) => membership(r, user) === 'join').map((r) => r.id)
    },
    joinedMembers(user: string, roomId: string) {
      const r = room(roomId)
      mustBeJoined(r, user)
      const joined: Record<string, { display_name: string | null; avatar_url: string | null }> = {}
      for (const e of r.state.values()) {
        if (e.type === 'm.room.member' && e.content.membership === 'join') {
          joined[e.state_key!] = { display_name: e.content.displayname ?? null, avatar_url: e.content.avatar_url ?? null }
        }
      }
      return joined
    },

    /** An event as GET /event shows it: edits announced in m.relations, redactions with empty content. */
    viewEvent(e: FakeEvent): FakeEvent {
      const r = room(e.room_id)
      const view: FakeEvent = { ...e, unsigned: { ...e.unsigned, age: Date.now() - e.origin_server_ts } }
      if (!e.unsigned.redacted_because) {
        const edits = r.timeline.filter(
          (x) => x.sender === e.sender && x.content['m.relates_to']?.rel_type === 'm.replace' && x.content['m.relates_to']?.event_id === e.event_id,
        )
        const latest = edits[edits.length - 1]
        if (latest) view.unsigned['m.relations'] = { 'm.replace': latest }
      }
      return view
    },

    /** Shared history: a member sees the whole room; a former member what came before they left. */
    visibleTimeline(user: string, roomId: string): FakeEvent[] {
      const r = room(roomId)
      if (membership(r, user) === 'join') return r.timeline
      let end = -1
      let wasJoined = false
      r.timeline.forEach((e, i) => {
        if (e.type === 'm.room.member' && e.state_key === user) {
          if (e.content.membership === 'join') wasJoined = true
          else if (wasJoined) end = i
        }
      })
      if (!wasJoined) throw forbidden(`User ${user} not in room ${roomId}, and room previews are disabled`)
      return r.timeline.slice(0, end + 1)
    },

    getEvent(user: string, roomId: string, eventId: string): FakeEvent {
      let visible: FakeEvent[]
      try {
        visible = api.visibleTimeline(user, roomId)
      } catch {
        throw notFound('Could not find event ' + eventId)
      }
      const e = visible.find((x) => x.event_id === eventId)
      if (!e) throw notFound('Could not find event ' + eventId)
      return api.viewEvent(e)
    },

    messages(user: string, roomId: string, dir: string, limit: number, from?: string) {
      const visible = api.visibleTimeline(user, roomId)
      // Tokens are positions in the room's timeline: `t<index>`.
      if (dir === 'b') {
        const start = from === undefined ? visible.length : Number(from.slice(1))
        const chunk = visible.slice(Math.max(0, start - limit), start).reverse().map(api.viewEvent)
        const endIndex = start - chunk.length
        return { chunk, start: `t${start}`, ...(endIndex > 0 ? { end: `t${endIndex}` } : {}) }
      }
      const start = from === undefined ? 0 : Number(from.slice(1))
      const chunk = visible.slice(start, start + limit).map(api.viewEvent)
      const endIndex = start + chunk.length
      return { chunk, start: `t${start}`, ...(endIndex < visible.length ? { end: `t${endIndex}` } : {}) }
    },

    state(user: string, roomId: string): FakeEvent[] {
      const r = room(roomId)
      mustBeJoined(r, user)
      return [...r.state.values()].map(api.viewEvent)
    },
    stateEvent(user: string, roomId: string, type: string, key: string): Record<string, any> {
      const r = room(roomId)
      mustBeJoined(r, user)
      const e = r.state.get(stateKeyOf(type, key))
      if (!e) throw notFound('Event not found.')
      return e.content
    },

    getAccountData(user: string, type: string): Record<string, unknown> {
      const content = accountData.get(user)?.get(type)
      if (content === undefined) throw notFound('Account data not found')
      return content
    },
    putAccountData(user: string, type: string, content: Record<string, unknown>) {
      if (!accountData.has(user)) accountData.set(user, new Map())
      accountData.get(user)!.set(type, content)
    },
    accountDataOf(user: string, type: string) {
      return accountData.get(user)?.get(type)
    },
    findEvent(eventId: string): FakeEvent | undefined {
      for (const r of rooms.values()) {
        const e = r.timeline.find((x) => x.event_id === eventId)
        if (e) return e
      }
      return undefined
    },
    timeline(roomId: string) {
      return room(roomId).timeline
    },
    stateContent(roomId: string, type: string, key = '') {
      return room(roomId).state.get(stateKeyOf(type, key))?.content
    },
  }
  return api
}

export type RoomModel = ReturnType<typeof createRoomModel>
