/**
 * The message index's rows as both engines return them, and their mapping to the index's types.
 * SQLite gives integers and 0/1 flags; PostgreSQL gives BIGINT as a string (it may exceed 2^53;
 * positions and milliseconds are well within) and BOOLEAN flags: Number() and Boolean() read both.
 */
import type { DeliveryRow, Job, JobKind, Member, Membership, Room, RoomKind, StoredMessage } from './index-store.ts'

export type Big = string | number
type Flag = number | boolean

export interface MessageRow {
  ord: Big
  event_id: string
  room_id: string
  sender: string
  ts: Big
  text: string
  author_name: string
  edit_of: string | null
  redacted: Flag
}

export interface RoomRow {
  room_id: string
  kind: RoomKind | null
  is_direct: Flag
  name: string | null
  canonical_alias: string | null
  conversation: string
  predecessor: string | null
  successor: string | null
}

export interface MemberRow {
  room_id: string
  user_id: string
  membership: Membership
  display_name: string | null
  since_ord: Big
  from_stream: Flag
  updated_at: Big
}

export interface JobRow {
  id: Big
  kind: JobKind
  user_id: string
  room_id: string
  attempts: number
}

export type DeliveryJoinRow = MessageRow & { seq: Big; sent: Flag }

const orUndefined = <T>(v: T | null): T | undefined => (v === null ? undefined : v)

export const toMessage = (r: MessageRow): StoredMessage => ({
  ord: Number(r.ord),
  eventId: r.event_id,
  roomId: r.room_id,
  sender: r.sender,
  ts: Number(r.ts),
  text: r.text,
  authorName: r.author_name,
  editOf: orUndefined(r.edit_of),
  redacted: Boolean(r.redacted),
})

export const toRoom = (r: RoomRow): Room => ({
  roomId: r.room_id,
  kind: orUndefined(r.kind),
  isDirect: Boolean(r.is_direct),
  name: orUndefined(r.name),
  canonicalAlias: orUndefined(r.canonical_alias),
  conversation: r.conversation,
  predecessor: orUndefined(r.predecessor),
  successor: orUndefined(r.successor),
})

export const toMember = (r: MemberRow): Member => ({
  roomId: r.room_id,
  userId: r.user_id,
  membership: r.membership,
  displayName: orUndefined(r.display_name),
  sinceOrd: Number(r.since_ord),
  fromStream: Boolean(r.from_stream),
  updatedAt: Number(r.updated_at),
})

export const toJob = (r: JobRow): Job => ({ id: Number(r.id), kind: r.kind, userId: r.user_id, roomId: r.room_id, attempts: r.attempts })

export const toDelivery = (r: DeliveryJoinRow): DeliveryRow => ({ seq: Number(r.seq), sent: Boolean(r.sent), message: toMessage(r) })
