/**
 * Acrobits Send Message into Matrix: the app's message becomes an m.text event sent as
 * the user, through the application service, exactly once. An outbox row with a fresh transaction
 * id is written before Synapse is called; timeouts and 5xx are retried with that same id (Synapse
 * deduplicates /send by path), within a 10 s budget, then 503 with Retry-After. The app sends no
 * idempotency key: a repeat of the same message within SEND_DEDUPE_SECONDS gets the first sms_id,
 * and concurrent repeats share one call. The sent event goes into the message index at once.
 */
import { createHmac, randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import { resolveAddress, type AddressBook } from '../addresses.ts'
import { AppError, badGateway, badRequest, forbidden, rateLimited, unavailable } from '../errors.ts'
import { MatrixError, type MatrixClient } from '../matrix/client.ts'
import { slidingWindow } from '../sliding-window.ts'
import type { ClientEvent } from '../matrix/event.ts'
import { TimeoutError, withTimeout } from '../timeout.ts'
import { authenticateMessaging, type MessagingAuthDeps } from './authenticate.ts'
import { createDirectChats, DirectChatError, NoSuchUserError, type DirectChatIndex } from './direct-chat.ts'
import type { OutboxRow, OutboxStore } from './outbox.ts'
import { DISPOSITION, MAX_MESSAGE_BYTES, parseDisposition, TEXT_PLAIN, type SendRequest } from './send-request.ts'

/** What Send Message needs of the message index. */
export interface SendIndex extends DirectChatIndex {
  /** The room of the group conversation this user holds `address` for (its current room). */
  groupRoom(userId: string, address: string): Promise<string | undefined>
  /** The room of a message delivered to this user (a read report's target); undefined if none. */
  deliveredRoom(userId: string, eventId: string): Promise<string | undefined>
  /** Stores the proxy's own message at once; the stream brings the same event again later. */
  recordSent(event: ClientEvent, log: Logger): Promise<void>
}

export interface SendDeps extends MessagingAuthDeps {
  matrix: MatrixClient
  index: SendIndex
  outbox: OutboxStore
  book: AddressBook
  /** Enrols the sender like a fetch does: their messages are indexed from then on. */
  enrol: (userId: string, log: Logger) => Promise<void>
  now: () => number
  /** SEND_DEDUPE_SECONDS: 0 turns repeat detection off. */
  dedupeSeconds: number
  /** Messages per account per minute (the appservice is exempt from Synapse's own limits). */
  perMinute?: number
  /** The longest a send may take before the app gets 503 (the app's own timeout is longer). */
  budgetMs?: number
  /** Waits between retries of a failed /send. */
  retryDelaysMs?: readonly number[]
  /**
   * Keys the outbox digests; a stable secret (the as_token) keeps repeats recognisable across a
   * restart. Random when not given.
   */
  dedupeSecret?: string
}

export const SEND_PER_MINUTE = 30
export const SEND_BUDGET_MS = 10_000
/** What a 503 tells the app to wait before trying again. */
const RETRY_AFTER_S = 5

export interface SendAnswer {
  sms_id: string
}

type Target = { kind: 'direct'; peer: string } | { kind: 'group'; room: string }

export function createSendService(deps: SendDeps) {
  const { matrix } = deps
  const budgetMs = deps.budgetMs ?? SEND_BUDGET_MS
  const retryDelays = deps.retryDelaysMs ?? [250, 500, 1000, 2000, 3000]
  const perMinute = deps.perMinute ?? SEND_PER_MINUTE
  const recentSends = slidingWindow(deps.now, perMinute + 1)
  const directChats = createDirectChats({ matrix, index: deps.index, serverName: deps.book.serverName })
  const inflight = new Map<string, Promise<string>>()
  let prunedAt = 0
  /** Rows older than a day are of no use: Synapse forgets a transaction id after ~30 minutes. */
  async function pruneOutbox(log: Logger) {
    if (deps.now() - prunedAt < 3_600_000) return
    prunedAt = deps.now()
    try {
      const n = await deps.outbox.prune(deps.now() - 86_400_000)
      if (n > 0) log.debug({ rows: n }, 'old outbox rows removed')
    } catch (e) {
      log.warn({ err: (e as Error).message }, 'could not prune the send outbox')
    }
  }
  // The digest that stands for a message in the outbox: keyed, so the table does not reveal what
  // was sent (a plain hash of a short text is easy to guess).
  const key = deps.dedupeSecret === undefined ? randomBytes(32) : createHmac('sha256', 'send-outbox').update(deps.dedupeSecret).digest()
  const dedupeKey = (user: string, to: string, contentType: string, body: string) =>
    createHmac('sha256', key).update([user, to, contentType, body].join('\u0000')).digest('base64url')

  async function resolveTarget(userId: string, to: string): Promise<Target> {
    const peer = resolveAddress(to, deps.book)
    // A user the caller already has a direct chat with comes first: a group once named after them
    // (groups no longer get such an address, but an old one stays the user's) must not take the reply.
    if (peer !== undefined && peer !== userId && (await deps.index.directRooms(userId, peer)).length > 0) return { kind: 'direct', peer }
    // A group address the app was shown for this user names that room; it is looked up among the
    // caller's own conversations only.
    const room = await deps.index.groupRoom(userId, to)
    if (room !== undefined) return { kind: 'group', room }
    if (peer === undefined) throw badRequest(`to: "${to}" is neither a user nor one of your conversations`)
    if (peer === userId) throw badRequest('to: you cannot send a message to yourself')
    return { kind: 'direct', peer }
  }

  /** PUT /send with the same transaction id until it answers or the budget is spent. */
  async function sendWithRetries(userId: string, room: string, txnId: string, content: Record<string, unknown>, deadline: number, log: Logger) {
    for (let attempt = 0; ; attempt++) {
      try {
        return await matrix.sendMessage(userId, room, txnId, content, Math.max(1, deadline - deps.now()))
      } catch (e) {
        const wait = retryDelays[Math.min(attempt, retryDelays.length - 1)]!
        if (!(e instanceof MatrixError) || !e.isTransient || deps.now() + wait >= deadline) throw e
        log.warn({ room_id: room, txn_id: txnId, attempt: attempt + 1, err: e.message }, 'send failed; retrying with the same transaction id')
        await Bun.sleep(wait)
      }
    }
  }

  async function deliver(userId: string, target: Target, content: Record<string, unknown>, row: Pick<OutboxRow, 'txnId' | 'roomId'>, log: Logger) {
    const deadline = deps.now() + budgetMs
    const refused = new Set<string>()
    let room = row.roomId
    for (;;) {
      if (room === undefined) {
        room = target.kind === 'group' ? target.room : await directChats.roomFor(userId, target.peer, log, refused)
        await deps.outbox.setRoom(row.txnId, room, deps.now())
      }
      try {
        const eventId = await sendWithRetries(userId, room, row.txnId, content, deadline, log)
        return { room, eventId }
      } catch (e) {
        // Not in the room any more (left, kicked): find or create the direct chat again, once.
        const notInRoom = e instanceof MatrixError && e.status === 403 && !e.isNamespaceProblem
        if (notInRoom && target.kind === 'group') throw forbidden('You are no longer a member of this conversation')
        if (!notInRoom || target.kind !== 'direct' || refused.size > 0) throw e
        log.info({ room_id: room, err: e.message }, 'the homeserver refused the send; finding the direct chat again')
        refused.add(room)
        room = undefined
      }
    }
  }

  /** Turns what went wrong into the app's answer; the outbox row stays for a repeat. */
  function answerFor(e: unknown, log: Logger): AppError {
    if (e instanceof AppError) return e
    if (e instanceof DirectChatError) return badGateway(e.message)
    if (e instanceof NoSuchUserError) {
      log.info({ peer: e.userId }, 'the recipient is not a user of the homeserver; no direct chat made')
      return badRequest(`to: ${e.message}`)
    }
    if (e instanceof TimeoutError) {
      log.error({ err: e.message }, 'homeserver too slow to take the message; the app will retry')
      return unavailable('The homeserver could not take the message in time; try again later', RETRY_AFTER_S)
    }
    if (e instanceof MatrixError) {
      if (e.isTransient) {
        log.error({ err: e.message }, 'homeserver could not take the message; the app will retry')
        return unavailable('The homeserver could not take the message; try again later', RETRY_AFTER_S)
      }
      if (e.isNamespaceProblem) {
        log.error({ err: e.message }, 'the appservice may not act as this user')
        return badGateway('The homeserver does not let this service act as you (appservice registration)')
      }
      log.warn({ status: e.status, errcode: e.errcode, err: e.message }, 'homeserver refused the message')
      return badGateway(`The homeserver refused the message (${e.errcode ?? e.status})`)
    }
    throw e
  }

  async function sendText(userId: string, request: SendRequest, log: Logger): Promise<string> {
    const body = request.body ?? ''
    if (body === '') throw badRequest('body: the message is empty')
    if (Buffer.byteLength(body) > MAX_MESSAGE_BYTES) throw badRequest(`body: the message is longer than ${MAX_MESSAGE_BYTES} bytes`)
    const to = request.to
    if (to === undefined) throw badRequest('to: the recipient is missing')
    const k = dedupeKey(userId, to, TEXT_PLAIN, body)
    const window = deps.dedupeSeconds * 1000

    // Registered before the first await, so a concurrent repeat always finds it.
    const shared = window > 0 ? inflight.get(k) : undefined
    if (shared) {
      log.info({ user_id: userId }, 'repeat of a message being sent; sharing its answer')
      return shared
    }
    const run = sendOnce(userId, to, body, k, window, log)
    if (window > 0) inflight.set(k, run)
    try {
      return await run
    } finally {
      if (inflight.get(k) === run) inflight.delete(k)
    }
  }

  async function sendOnce(userId: string, to: string, body: string, k: string, window: number, log: Logger): Promise<string> {
    const earlier = window > 0 ? await deps.outbox.recent(k, deps.now() - window) : undefined
    if (earlier?.state === 'sent' && earlier.eventId !== undefined) {
      log.info({ user_id: userId, event_id: earlier.eventId }, 'repeat within SEND_DEDUPE_SECONDS; answering the first sms_id')
      return earlier.eventId
    }
    const target = await resolveTarget(userId, to)
    const blocked = recentSends.count(userId) >= perMinute ? recentSends.retryAfter(userId, perMinute) : undefined
    if (blocked !== undefined) {
      log.warn({ user_id: userId, retry_after_s: blocked }, 'too many messages from this account')
      throw rateLimited(`At most ${perMinute} messages a minute`, blocked)
    }
    recentSends.add(userId)

    // A pending or failed row of the same message (its answer was lost, or it ran out of time)
    // is sent again with its own transaction id and room: Synapse answers with the first event.
    await pruneOutbox(log)
    const row = earlier ?? { txnId: Bun.randomUUIDv7(), roomId: undefined }
    if (!earlier) await deps.outbox.create({ txnId: row.txnId, userId, dedupeKey: k, now: deps.now() })
    const content = { msgtype: 'm.text', body }
    try {
      // Finding or creating the chat counts against the same budget as sending: the app gets an
      // answer in time even when the homeserver is slow at every step (the work may go on).
      const { room, eventId } = await withTimeout(deliver(userId, target, content, row, log), budgetMs, 'sending the message')
      await deps.outbox.markSent(row.txnId, eventId, deps.now())
      log.info({ user_id: userId, room_id: room, event_id: eventId, txn_id: row.txnId }, 'message sent')
      log.debug({ event_id: eventId, body }, 'message text')
      const event: ClientEvent = { event_id: eventId, room_id: room, sender: userId, type: 'm.room.message', origin_server_ts: deps.now(), content, unsigned: {} }
      try {
        await deps.index.recordSent(event, log)
      } catch (e) {
        // The stream brings the event again; the send itself succeeded.
        log.warn({ event_id: eventId, err: (e as Error).message }, 'could not index the sent message yet')
      }
      return eventId
    } catch (e) {
      await deps.outbox.markFailed(row.txnId, deps.now()).catch(() => {})
      throw answerFor(e, log)
    }
  }

  /** A read report becomes a read receipt as the user; it is never posted as chat. */
  async function sendDisposition(userId: string, request: SendRequest, log: Logger): Promise<string> {
    const report = parseDisposition(request.body)
    const ownId = Bun.randomUUIDv7()
    if (!report.displayed) {
      log.debug({ user_id: userId, event_id: report.messageId }, 'delivery report: nothing to tell the homeserver')
      return ownId
    }
    const room = await deps.index.deliveredRoom(userId, report.messageId)
    if (room === undefined) {
      log.info({ user_id: userId, event_id: report.messageId }, 'read report for a message this user was not given; ignored')
      return ownId
    }
    const deadline = deps.now() + budgetMs
    for (let attempt = 0; ; attempt++) {
      try {
        await matrix.readReceipt(userId, room, report.messageId)
        log.info({ user_id: userId, room_id: room, event_id: report.messageId }, 'read receipt sent')
        return ownId
      } catch (e) {
        const wait = retryDelays[Math.min(attempt, retryDelays.length - 1)]!
        if (e instanceof MatrixError && e.isTransient && deps.now() + wait < deadline) {
          await Bun.sleep(wait)
          continue
        }
        throw answerFor(e, log)
      }
    }
  }

  return {
    async send(request: SendRequest, clientAddress: string | undefined, log: Logger): Promise<SendAnswer> {
      const userId = await authenticateMessaging(deps, 'Send Message', request, clientAddress)
      await deps.enrol(userId, log)
      if (request.contentType === TEXT_PLAIN) return { sms_id: await sendText(userId, request, log) }
      if (request.contentType === DISPOSITION) return { sms_id: await sendDisposition(userId, request, log) }
      throw badRequest(`content_type: ${request.contentType} is not supported yet`)
    },
  }
}
