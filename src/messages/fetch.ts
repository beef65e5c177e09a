/**
 * Acrobits Fetch Messages (modern), answered from the message index alone (FIELD-GUIDE §5): the
 * user's deliveries after the app's cursors, oldest first, at most a page per list. Cursors are
 * delivery sequence numbers, so a message delivered late is never behind one; an unusable cursor
 * falls back to where this device last read, else to the newest page of the last 7 days.
 */
import { t } from 'elysia'
import type { Logger } from 'pino'
import { groupAddress, renderUser, type AddressBook } from '../addresses.ts'
import type { AuthMode } from '../config.ts'
import type { PasswordVerifier } from '../matrix/auth.ts'
import { unavailable } from '../errors.ts'
import { MAX_USERNAME_BYTES, nonEmpty, OptionalText as Field, refuseControl, refuseLonger, trimmed } from '../form-fields.ts'
import { authenticateMessaging } from './authenticate.ts'
import type { DeliveryRow, Member, MessageIndex, Room } from './index-store.ts'

export const FetchBodySchema = t.Object(
  {
    username: Field,
    password: Field,
    last_id: Field,
    last_known_sms_id: Field,
    last_sent_id: Field,
    last_known_sent_sms_id: Field,
    device: Field,
  },
  { additionalProperties: true, description: 'Fields filled by the Acrobits app from its Fetch Messages template' },
)
export type FetchBody = typeof FetchBodySchema.static

export interface FetchRequest {
  readonly username?: string
  readonly password?: string
  readonly lastId?: string
  readonly lastSentId?: string
  readonly device?: string
}

/** A fetch request is a few hundred bytes. */
export const FETCH_BODY_LIMIT = 8 * 1024
/** At most this many items per list per answer; the rest comes with the next fetch. */
export const FETCH_PAGE = 100
/** Without a usable cursor: the newest page of this many days. */
export const FALLBACK_DAYS = 7

/** The app sends its install id; nothing longer is an install id. */
export const MAX_DEVICE_BYTES = 255

/**
 * Trims every field except the password (a password may end in a space); a 400 naming the field
 * for a control character in any of them, or a username or device past its length. Pure.
 */
export function normalizeFetch(body: FetchBody): FetchRequest {
  const request = {
    username: trimmed(body.username),
    password: nonEmpty(body.password),
    lastId: trimmed(body.last_id) ?? trimmed(body.last_known_sms_id),
    lastSentId: trimmed(body.last_sent_id) ?? trimmed(body.last_known_sent_sms_id),
    device: trimmed(body.device),
  }
  refuseControl('username', request.username)
  refuseControl('password', request.password)
  refuseControl('last_id', request.lastId)
  refuseControl('last_sent_id', request.lastSentId)
  refuseControl('device', request.device)
  refuseLonger('username', request.username, MAX_USERNAME_BYTES)
  refuseLonger('device', request.device, MAX_DEVICE_BYTES)
  return request
}

/**
 * RFC 3339 in UTC, whole seconds, as the app's own examples show it. Clamped to the range of a Date:
 * a message stored with a timestamp past it (the index refuses those now) must not fail a fetch.
 */
export const rfc3339 = (ms: number) =>
  new Date(Math.min(Math.max(ms, -8.64e15), 8.64e15)).toISOString().replace(/\.\d{3}Z$/, 'Z')

export interface SmsItem {
  sms_id: string
  sending_date: string
  sender?: string
  recipient?: string
  sms_text: string
  content_type: 'text/plain'
  stream_id: string
}

export interface FetchAnswer {
  date: string
  received_smss: SmsItem[]
  sent_smss: SmsItem[]
}

/** What one delivery looks like in the app: direct chats by the peer's address, groups by the room's. Pure. */
export function renderDelivery(
  row: DeliveryRow,
  userId: string,
  room: Room | undefined,
  members: readonly Member[],
  groupAddressOfUser: string | undefined,
  book: AddressBook,
): SmsItem {
  const m = row.message
  let address: string
  let text = m.text
  if (room?.kind === 'direct') {
    const peer = row.sent ? (members.find((x) => x.userId !== userId && x.membership !== 'leave' && x.membership !== 'ban') ?? members.find((x) => x.userId !== userId))?.userId : m.sender
    address = peer === undefined ? groupAddress({ name: room.name, canonicalAlias: room.canonicalAlias, roomId: room.conversation }) : renderUser(peer, book)
  } else {
    address = groupAddressOfUser ?? groupAddress({ name: room?.name, canonicalAlias: room?.canonicalAlias, roomId: room?.conversation ?? m.roomId })
    text = `${m.authorName}: ${m.text}`
  }
  const item: SmsItem = { sms_id: m.eventId, sending_date: rfc3339(m.ts), sms_text: text, content_type: 'text/plain', stream_id: address }
  if (row.sent) return { sms_id: item.sms_id, sending_date: item.sending_date, recipient: address, sms_text: text, content_type: item.content_type, stream_id: address }
  return { sms_id: item.sms_id, sending_date: item.sending_date, sender: address, sms_text: text, content_type: item.content_type, stream_id: address }
}

export interface FetchDeps {
  index: MessageIndex
  verifier?: PasswordVerifier
  authMode: AuthMode
  /** The variable messaging still needs, when it is off. */
  missing?: string
  book: AddressBook
  enrol: (userId: string, log: Logger) => Promise<void>
  now: () => number
}

export function createFetchService(deps: FetchDeps) {
  async function cursor(userId: string, lastId: string | undefined, device: string | undefined, sent: boolean) {
    if (lastId !== undefined) {
      const seq = await deps.index.deliverySeq(userId, lastId)
      if (seq !== undefined) return { after: seq, fromApp: true }
    }
    if (device !== undefined) {
      const c = await deps.index.deviceCursor(userId, device)
      const seq = c === undefined ? 0 : sent ? c.sent : c.received
      if (seq > 0) return { after: seq, fromApp: false }
    }
    return undefined
  }

  async function list(userId: string, lastId: string | undefined, device: string | undefined, sent: boolean) {
    const from = await cursor(userId, lastId, device, sent)
    const rows =
      from === undefined
        ? await deps.index.newestDeliveries(userId, sent, deps.now() - FALLBACK_DAYS * 86_400_000, FETCH_PAGE)
        : await deps.index.deliveriesAfter(userId, sent, from.after, FETCH_PAGE)
    const reached = Math.max(from?.fromApp ? from.after : 0, rows.at(-1)?.seq ?? 0)
    return { rows, reached }
  }

  async function render(userId: string, rows: DeliveryRow[]): Promise<SmsItem[]> {
    const roomIds = [...new Set(rows.map((r) => r.message.roomId))]
    const rooms = await deps.index.rooms(roomIds)
    const members = new Map<string, Member[]>()
    const addresses = new Map<string, string | undefined>()
    for (const id of roomIds) {
      const room = rooms.get(id)
      if (room?.kind === 'direct') members.set(id, await deps.index.members(id))
      else addresses.set(id, await deps.index.currentAddress(userId, room?.conversation ?? id))
    }
    return rows.map((r) => renderDelivery(r, userId, rooms.get(r.message.roomId), members.get(r.message.roomId) ?? [], addresses.get(r.message.roomId), deps.book))
  }

  return {
    async fetch(request: FetchRequest, clientAddress: string | undefined, log: Logger): Promise<FetchAnswer> {
      const userId = await authenticateMessaging(deps, 'Fetch Messages', request, clientAddress)
      try {
        return await answer(userId, request, log)
      } catch (e) {
        // The database is away (PostgreSQL unreachable, a locked file): the app fetches again later.
        if (!deps.index.isStoreFailure(e)) throw e
        log.error({ user_id: userId, err: (e as Error).message }, 'message index unavailable; fetch answered 503')
        throw unavailable('The message index cannot be read now; try again later')
      }
    },
  }

  async function answer(userId: string, request: FetchRequest, log: Logger): Promise<FetchAnswer> {
    await deps.enrol(userId, log)
    const date = rfc3339(deps.now())
    const [received, sent] = [
      await list(userId, request.lastId, request.device, false),
      await list(userId, request.lastSentId, request.device, true),
    ]
    if (request.device !== undefined) {
      await deps.index.advanceDeviceCursor(userId, request.device, received.reached, sent.reached, deps.now())
    }
    log.info({ user_id: userId, device: request.device, received: received.rows.length, sent: sent.rows.length }, 'messages fetched')
    return { date, received_smss: await render(userId, received.rows), sent_smss: await render(userId, sent.rows) }
  }
}
