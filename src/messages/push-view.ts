/**
 * Push and fetch agree: with messaging on, a push carries the `sms_id`, the sender and
 * the conversation that Fetch Messages will report for the same message, or the app shows it twice.
 * A push can arrive before the transaction that carries its event: the event is then fetched from
 * Synapse as the user (a race fill, short timeout) and indexed first, so the fetch the push
 * triggers finds it. Any failure leaves the push as it was.
 */
import type { Logger } from 'pino'
import type { AddressBook } from '../addresses.ts'
import type { PnmRequest } from '../gateway/translate.ts'
import { truncateText } from '../gateway/translate.ts'
import type { MatrixClient } from '../matrix/client.ts'
import { withTimeout } from '../timeout.ts'
import { renderDelivery } from './fetch.ts'
import type { MessageIndex, StoredMessage } from './index-store.ts'
import { ingestEvent, parseClientEvent, type IngestContext } from './ingest.ts'

export interface PushView {
  /** = the fetch's sms_id */
  id: string
  /** = the fetch's sender (or recipient, for the user's own message) */
  userName: string
  /** = the fetch's stream_id */
  threadId: string
  /** = the fetch's sms_text; undefined when only the conversation is known (the event is not) */
  message?: string
}

/**
 * `sender`: the notification's, when it names one (full format). `fields` name the request and
 * device in the lines it logs (the notify path has no child logger).
 */
export type PushViewLookup = (
  userId: string,
  eventId: string,
  roomId: string | undefined,
  log: Logger,
  fields?: Record<string, unknown>,
  sender?: string,
) => Promise<PushView | undefined>

/** How long a push waits for Synapse to hand over an event the index does not have yet. */
export const RACE_FILL_TIMEOUT_MS = 2_000

export function createPushView(deps: {
  index: MessageIndex
  matrix?: MatrixClient
  book: AddressBook
  now: () => number
  context: () => Omit<IngestContext, 'now'>
}): PushViewLookup {
  return async (userId, eventId, roomId, log, fields, sender) => {
    let message = await deps.index.message(eventId)
    if (message === undefined && roomId !== undefined && deps.matrix) {
      try {
        const raw = await withTimeout(deps.matrix.getEvent(userId, roomId, eventId), RACE_FILL_TIMEOUT_MS, 'fetching the event from the homeserver')
        const parsed = parseClientEvent(raw)
        if (parsed.ok) {
          const ctx = { ...deps.context(), now: deps.now(), fillFor: userId }
          await deps.index.write((tx) => ingestEvent(tx, parsed.event, ctx, 'fill'))
          message = await deps.index.message(eventId)
          log.debug({ ...fields, event_id: eventId, indexed: message !== undefined }, 'event fetched from the homeserver before its transaction')
        }
      } catch (e) {
        log.warn({ ...fields, event_id: eventId, err: (e as Error).message }, 'could not fetch the event from the homeserver; push sent as it is')
      }
    }
    if (message?.redacted) return undefined
    const inRoom = message?.roomId ?? roomId
    if (inRoom === undefined) return undefined
    const room = (await deps.index.rooms([inRoom])).get(inRoom)
    let shown: StoredMessage
    if (message !== undefined) shown = message
    // Not to be had now, in a conversation the index knows: the notification's sender and room still
    // name it as the fetch will (its text stays the push's own), so the app does not show it twice
    // under two names.
    else if (room !== undefined && sender !== undefined) shown = { ord: 0, eventId, roomId: inRoom, sender, ts: deps.now(), text: '', authorName: sender, redacted: false }
    else return undefined
    const members = room?.kind === 'direct' ? await deps.index.members(inRoom) : []
    const address = room?.kind === 'direct' ? undefined : await deps.index.currentAddress(userId, room?.conversation ?? inRoom)
    const item = renderDelivery({ seq: 0, sent: shown.sender === userId, message: shown }, userId, room, members, address, deps.book)
    return { id: item.sms_id, userName: (item.sender ?? item.recipient)!, threadId: item.stream_id, message: message === undefined ? undefined : item.sms_text }
  }
}

/** The push request with the fetch's view of the message. Pure. */
export function applyPushView(request: PnmRequest, view: PushView, hasBody: boolean): PnmRequest {
  const out: PnmRequest = { ...request, Id: view.id, UserName: view.userName, ThreadId: view.threadId }
  // event_id_only pushes carry no text: the index supplies it (and the generic verb shows it).
  if (!hasBody && view.message !== undefined) {
    out.Message = truncateText(view.message)
    out.ContentType = 'text/plain'
  }
  return out
}
