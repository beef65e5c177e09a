/**
 * How one Matrix event changes the message index, whichever way it arrived (a transaction, a race
 * fill, a catch-up). Membership is kept in event order; a message is stored once, for rooms with
 * an enrolled member, with one delivery per enrolled member who is invited or joined; edits and
 * redactions follow the rules of README: Messaging. The caller runs this inside one write transaction.
 */
import { displayText, editOf, redactedId } from './event-text.ts'
import { groupAddress, resolveAddress, uniqueAddress, type AddressBook } from '../addresses.ts'
import type { IndexTx, Membership, Room } from './index-store.ts'

/** A client-format event as Synapse sends it to an appservice (FIELD-GUIDE §7), checked for the fields we rely on. */
export interface ClientEvent {
  readonly event_id: string
  readonly room_id: string
  readonly sender: string
  readonly type: string
  readonly origin_server_ts: number
  readonly content: Record<string, any>
  readonly state_key?: string
  readonly unsigned?: Record<string, any>
  readonly prev_content?: Record<string, any>
  readonly redacts?: string
  readonly invite_room_state?: unknown
}

const isObject = (v: unknown): v is Record<string, any> => v !== null && typeof v === 'object' && !Array.isArray(v)

/** The range of a JavaScript Date: a timestamp past it cannot be rendered as a date in a fetch. */
const MAX_TS = 8.64e15

/**
 * `value` with every U+0000 in its strings and keys replaced by U+FFFD. PostgreSQL text cannot hold
 * U+0000: one such character in a message, a display name or a room name made the whole
 * transaction fail there, and Synapse sent it again and again, holding up every event after it.
 * Both stores get the same replacement, so an index moved between them reads the same. Pure.
 */
function withoutNul(value: unknown): unknown {
  if (typeof value === 'string') return value.replaceAll('\u0000', '\uFFFD')
  if (Array.isArray(value)) return value.map(withoutNul)
  if (isObject(value)) {
    const copy: Record<string, unknown> = {}
    for (const [key, v] of Object.entries(value)) copy[key.replaceAll('\u0000', '\uFFFD')] = withoutNul(v)
    return copy
  }
  return value
}

/** Checks the fields every event must have; the reason says what is wrong. Pure. */
export function parseClientEvent(input: unknown): { ok: true; event: ClientEvent } | { ok: false; reason: string } {
  // JSON.stringify writes U+0000 as the escape \u0000: one native pass tells whether a copy is needed.
  const raw = JSON.stringify(input)?.includes('\\u0000') ? withoutNul(input) : input
  if (!isObject(raw)) return { ok: false, reason: 'event is not an object' }
  for (const field of ['event_id', 'room_id', 'sender', 'type'] as const) {
    if (typeof raw[field] !== 'string' || raw[field] === '') return { ok: false, reason: `${field} is missing or not a string` }
  }
  if (typeof raw.origin_server_ts !== 'number' || !Number.isFinite(raw.origin_server_ts)) return { ok: false, reason: 'origin_server_ts is missing or not a number' }
  if (Math.abs(raw.origin_server_ts) > MAX_TS) return { ok: false, reason: 'origin_server_ts is out of range' }
  if (!isObject(raw.content)) return { ok: false, reason: 'content is missing or not an object' }
  if (raw.state_key !== undefined && typeof raw.state_key !== 'string') return { ok: false, reason: 'state_key is not a string' }
  if (raw.unsigned !== undefined && !isObject(raw.unsigned)) return { ok: false, reason: 'unsigned is not an object' }
  return { ok: true, event: raw as unknown as ClientEvent }
}

export interface IngestContext {
  /** The appservice's own user: never enrolled, its invites never auto-accepted. */
  readonly senderUserId?: string
  readonly serverName?: string
  readonly autoJoinDirect: boolean
  /** Messages older than this never enter the index (retention). */
  readonly oldestTs: number
  readonly now: number
  /** A race fill or a catch-up: the user it is for (whose push, or whose enrolment). */
  readonly fillFor?: string
  /** How users are shown: a group is never given the address of a user its member chats with. */
  readonly book?: AddressBook
}

export type IngestSource = 'stream' | 'fill' | 'catchup'

const MEMBERSHIPS: readonly Membership[] = ['join', 'invite', 'leave', 'ban', 'knock']
const isMembership = (v: unknown): v is Membership => MEMBERSHIPS.includes(v as Membership)
const isPresent = (m: Membership | undefined) => m === 'join' || m === 'invite'

export const serverOf = (userId: string) => userId.slice(userId.indexOf(':') + 1)

/** What an event did, for the caller's log and metrics. */
export type IngestOutcome = 'stored' | 'duplicate' | 'ignored' | 'membership' | 'state' | 'redaction' | 'not_needed'

export async function ingestEvent(tx: IndexTx, event: ClientEvent, ctx: IngestContext, source: IngestSource): Promise<IngestOutcome> {
  if (event.type === 'm.room.member' && event.state_key !== undefined) {
    return source === 'stream' ? applyMember(tx, event, ctx) : 'ignored'
  }
  if (event.type === 'm.room.redaction') {
    const target = redactedId(event)
    if (target === undefined) return 'ignored'
    await tx.redact(target, ctx.now)
    return 'redaction'
  }
  if (event.state_key !== undefined) return source === 'stream' ? applyState(tx, event, ctx) : 'ignored'
  return applyMessage(tx, event, ctx, source)
}

async function applyMember(tx: IndexTx, event: ClientEvent, ctx: IngestContext): Promise<IngestOutcome> {
  const userId = event.state_key!
  const membership = event.content.membership
  if (!isMembership(membership)) throw new Error(`membership "${String(membership)}" is not one of ${MEMBERSHIPS.join(', ')}`)
  const roomId = event.room_id
  const before = await tx.getMember(roomId, userId)
  // unsigned.prev_content tells a join from a display-name change when this member is new to us.
  const prev = event.unsigned?.prev_content?.membership ?? event.prev_content?.membership
  const previous: Membership | undefined = before?.membership ?? (isMembership(prev) ? prev : undefined)
  let room = await tx.updateRoom(roomId, {}, ctx.now)
  if (membership === 'invite') {
    room = await learnInviteState(tx, room, event, ctx)
    if (event.content.is_direct === true && !room.isDirect) room = await tx.updateRoom(roomId, { isDirect: true }, ctx.now)
  }
  // Messages stored after this position are the member's: since the invite that let them in.
  const keepsPosition = (membership === 'join' && previous === 'invite') || membership === previous
  const sinceOrd = keepsPosition && before !== undefined ? before.sinceOrd : await tx.lastOrd()
  const displayName = typeof event.content.displayname === 'string' && event.content.displayname !== '' ? event.content.displayname : undefined
  await tx.setMember({ roomId, userId, membership, displayName, sinceOrd, fromStream: true, updatedAt: ctx.now })

  if (membership === 'join' && previous !== 'join' && (await tx.isEnrolled(userId))) {
    // Element sends the first message of a direct chat right after the invite; the invitee sees it once joined.
    for (const message of await tx.messagesSince(roomId, sinceOrd)) {
      if (!message.redacted) await deliverTo(tx, userId, message.eventId, message.sender === userId, room, ctx)
    }
  }
  if (
    membership === 'invite' &&
    event.content.is_direct === true &&
    ctx.autoJoinDirect &&
    event.sender !== userId &&
    event.sender !== ctx.senderUserId &&
    ctx.serverName !== undefined &&
    serverOf(event.sender) === ctx.serverName &&
    serverOf(userId) === ctx.serverName &&
    (await tx.isEnrolled(userId))
  ) {
    await tx.queueJob('autojoin', userId, roomId, ctx.now)
  }
  return 'membership'
}

/** An invite carries stripped state (name, alias, create): enough to name a room we never saw. */
async function learnInviteState(tx: IndexTx, room: Room, event: ClientEvent, ctx: IngestContext): Promise<Room> {
  const stripped = event.invite_room_state ?? event.unsigned?.invite_room_state
  if (!Array.isArray(stripped)) return room
  const fields: { name?: string; canonicalAlias?: string } = {}
  for (const s of stripped) {
    if (!isObject(s) || !isObject(s.content)) continue
    if (s.type === 'm.room.name' && room.name === undefined && typeof s.content.name === 'string' && s.content.name !== '') fields.name = s.content.name
    if (s.type === 'm.room.canonical_alias' && room.canonicalAlias === undefined && typeof s.content.alias === 'string') fields.canonicalAlias = s.content.alias
  }
  return Object.keys(fields).length > 0 ? tx.updateRoom(room.roomId, fields, ctx.now) : room
}

async function applyState(tx: IndexTx, event: ClientEvent, ctx: IngestContext): Promise<IngestOutcome> {
  if (event.state_key !== '') return 'ignored'
  const roomId = event.room_id
  switch (event.type) {
    case 'm.room.name': {
      const name = typeof event.content.name === 'string' && event.content.name !== '' ? event.content.name : undefined
      const room = await tx.updateRoom(roomId, { name }, ctx.now)
      await renameConversation(tx, room, ctx)
      return 'state'
    }
    case 'm.room.canonical_alias': {
      const alias = typeof event.content.alias === 'string' && event.content.alias !== '' ? event.content.alias : undefined
      const room = await tx.updateRoom(roomId, { canonicalAlias: alias }, ctx.now)
      await renameConversation(tx, room, ctx)
      return 'state'
    }
    case 'm.room.create': {
      const predecessor = event.content.predecessor?.room_id
      if (typeof predecessor !== 'string') return 'state'
      await tx.updateRoom(roomId, { predecessor }, ctx.now)
      await linkUpgrade(tx, predecessor, roomId, ctx)
      return 'state'
    }
    case 'm.room.tombstone': {
      const replacement = event.content.replacement_room
      if (typeof replacement !== 'string' || replacement === roomId) return 'ignored'
      await tx.updateRoom(roomId, { successor: replacement }, ctx.now)
      await linkUpgrade(tx, roomId, replacement, ctx)
      for (const member of await tx.members(roomId)) {
        if (member.membership === 'join' && member.userId !== ctx.senderUserId && (await tx.isEnrolled(member.userId))) {
          await tx.queueJob('follow', member.userId, replacement, ctx.now)
        }
      }
      return 'state'
    }
    default:
      return 'ignored'
  }
}

/**
 * A room upgrade keeps the conversation: once the old room's tombstone names the new room and the
 * new room's creation names the old one (either may come first), the new room takes the old
 * room's address and classification.
 */
async function linkUpgrade(tx: IndexTx, oldId: string, newId: string, ctx: IngestContext) {
  const [oldRoom, newRoom] = [await tx.getRoom(oldId), await tx.getRoom(newId)]
  if (oldRoom?.successor !== newId || newRoom?.predecessor !== oldId) return
  await tx.updateRoom(newId, { conversation: oldRoom.conversation, kind: oldRoom.kind ?? newRoom.kind, isDirect: oldRoom.isDirect || newRoom.isDirect }, ctx.now)
}

/** A renamed group gets a new address; the old ones stay the user's, so replies to them still reach it. */
async function renameConversation(tx: IndexTx, room: Room, ctx: IngestContext) {
  for (const userId of await tx.addressHolders(room.conversation)) await ensureAddress(tx, userId, room, ctx)
}

async function ensureAddress(tx: IndexTx, userId: string, room: Room, ctx: IngestContext) {
  const base = groupAddress({ name: room.name, canonicalAlias: room.canonicalAlias, roomId: room.conversation })
  const address = await addressFor(tx, userId, base, room.conversation, ctx)
  if (address !== (await tx.currentAddress(userId, room.conversation))) await tx.assignAddress(userId, address, room.conversation, ctx.now)
}

/**
 * The first address from `base` that no other conversation of this user holds, and that does not
 * name a user this user has a direct chat with: a group called "alice" would otherwise show as the
 * direct chat with alice, and take the replies meant for it.
 */
async function addressFor(tx: IndexTx, userId: string, base: string, conversation: string, ctx: IngestContext): Promise<string> {
  const taken = new Map<string, boolean>()
  // uniqueAddress is synchronous: the answers it may ask for are looked up first, a few at a time.
  for (let tries = 0; tries < 50; tries++) {
    let missing: string | undefined
    const address = uniqueAddress(base, (a: string) => {
      if (missing !== undefined) return false // ends the search; its answer is not used
      if (!taken.has(a)) {
        missing = a
        return true
      }
      return taken.get(a)!
    })
    if (missing === undefined) return address
    const holder = await tx.addressTaken(userId, missing)
    const peer = ctx.book && resolveAddress(missing, ctx.book)
    const chatsWith = peer !== undefined && peer !== userId && (await tx.directRooms(userId, peer)).length > 0
    taken.set(missing, (holder !== undefined && holder !== conversation) || chatsWith)
  }
  return `${base}\u00a0${conversation}`
}

async function classify(tx: IndexTx, room: Room, ctx: IngestContext): Promise<Room> {
  if (room.kind !== undefined) return room
  const present = (await tx.members(room.roomId)).filter((m) => isPresent(m.membership))
  // A room of one (its creator, before the invite) is not classified yet.
  if (!room.isDirect && present.length < 2) return room
  return tx.updateRoom(room.roomId, { kind: room.isDirect && present.length <= 2 ? 'direct' : 'group' }, ctx.now)
}

async function deliverTo(tx: IndexTx, userId: string, eventId: string, sent: boolean, room: Room, ctx: IngestContext) {
  const seq = await tx.deliver(userId, eventId, sent, ctx.now)
  // A conversation keeps its address (after an upgrade too) until a rename gives it a new one.
  if (seq !== undefined && room.kind !== 'direct' && (await tx.currentAddress(userId, room.conversation)) === undefined) {
    await ensureAddress(tx, userId, room, ctx)
  }
}

async function applyMessage(tx: IndexTx, event: ClientEvent, ctx: IngestContext, source: IngestSource): Promise<IngestOutcome> {
  if (event.origin_server_ts < ctx.oldestTs) return 'not_needed'
  // A redacted event never comes back, whether a race fill or a catch-up brings it.
  if (await tx.isRedacted(event.event_id)) return 'duplicate'
  const existing = await tx.getMessage(event.event_id)
  if (existing !== undefined) {
    // Stored before by a race fill: the stream, in room order, says who else was there at the time.
    if (source === 'stream' && !existing.redacted) {
      const room = await classify(tx, (await tx.getRoom(event.room_id)) ?? (await tx.updateRoom(event.room_id, {}, ctx.now)), ctx)
      for (const userId of await tx.enrolledMembers(event.room_id)) await deliverTo(tx, userId, event.event_id, userId === event.sender, room, ctx)
    }
    return 'duplicate'
  }
  // A race fill or a catch-up is for one user (Synapse showed them the event); the index may lag
  // behind the stream about who else was there at the time: the stream delivers to them later.
  const recipients =
    source === 'stream'
      ? await tx.enrolledMembers(event.room_id)
      : ctx.fillFor !== undefined && (await tx.isEnrolled(ctx.fillFor))
        ? [ctx.fillFor]
        : []
  if (recipients.length === 0) return 'not_needed'
  const original = editOf(event)
  if (original !== undefined) {
    const target = await tx.getMessage(original)
    // An edit counts only from the original's sender, and never of an edit.
    if (target === undefined || target.sender !== event.sender || target.editOf !== undefined) return 'ignored'
    if (target.redacted || (await tx.isRedacted(original))) return 'ignored'
  }
  const author = await tx.getMember(event.room_id, event.sender)
  const authorName = author?.displayName ?? event.sender
  const text = displayText(event, authorName)
  if (text === undefined) return 'ignored'
  const ord = await tx.insertMessage(
    { eventId: event.event_id, roomId: event.room_id, sender: event.sender, ts: event.origin_server_ts, text, authorName, editOf: original },
    ctx.now,
  )
  if (ord === undefined) return 'duplicate'
  const room = await classify(tx, (await tx.getRoom(event.room_id)) ?? (await tx.updateRoom(event.room_id, {}, ctx.now)), ctx)
  for (const userId of recipients) await deliverTo(tx, userId, event.event_id, userId === event.sender, room, ctx)
  return 'stored'
}

/** A message already in the index becomes this user's too (a catch-up of a room others shared). */
export async function deliverExisting(tx: IndexTx, userId: string, eventId: string, ctx: IngestContext) {
  const message = await tx.getMessage(eventId)
  if (message === undefined || message.redacted) return
  if (!isPresent((await tx.getMember(message.roomId, userId))?.membership)) return
  const room = await classify(tx, await tx.updateRoom(message.roomId, {}, ctx.now), ctx)
  await deliverTo(tx, userId, eventId, message.sender === userId, room, ctx)
}
