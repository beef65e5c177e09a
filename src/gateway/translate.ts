/**
 * Matrix notification -> Acrobits PNM request. Pure.
 * Fields with no value are left out: the PNM and the app treat "" and null as values.
 */
import type { PnmVerb } from '../config.ts'
import type { Device, Notification } from './schema.ts'

export interface PnmRequest {
  verb: PnmVerb
  AppId: string
  DeviceToken: string
  Selector: string
  Badge?: number
  Sound?: string
  UserName?: string
  UserDisplayName?: string
  Message?: string
  ContentType?: string
  Id?: string
  ThreadId?: string
}

/** Mobile platforms cap a push near 4 KB; the preview is cut well below that. */
export const MAX_MESSAGE_LENGTH = 1000

const segmenter = new Intl.Segmenter(undefined, { granularity: 'grapheme' })

/**
 * Cuts to at most `max` UTF-16 code units without splitting a character: not a surrogate pair, not
 * a grapheme cluster (an emoji with modifiers, a letter with its combining accent).
 */
export function truncateText(text: string, max = MAX_MESSAGE_LENGTH): string {
  if (text.length <= max) return text
  let end = 0
  for (const { segment, index } of segmenter.segment(text)) {
    if (index + segment.length > max) break
    end = index + segment.length
  }
  return text.slice(0, end)
}

const text = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined)
const count = (v: unknown): number | undefined =>
  typeof v === 'number' && Number.isFinite(v) ? Math.max(0, Math.trunc(v)) : undefined

/** A badge-only update (the user read a room) has no event: it must never alert the phone. */
export const isBadgeOnly = (n: Notification) => text(n.event_id) === undefined

export function translateNotification(
  n: Notification,
  device: Device,
  account: { selector: string; appId: string; token: string },
  options: { verb: PnmVerb; fallbackText: string },
): PnmRequest {
  const unread = count(n.counts?.unread)
  const missed = count(n.counts?.missed_calls)
  const body = text(n.content?.body)
  const message =
    body !== undefined ? truncateText(body) : options.verb === 'NotifyGenericTextMessage' ? options.fallbackText : undefined
  const sender = text(n.sender)
  const request: PnmRequest = {
    verb: options.verb,
    AppId: account.appId,
    DeviceToken: account.token,
    Selector: account.selector,
    Badge: unread === undefined && missed === undefined ? undefined : (unread ?? 0) + (missed ?? 0),
    Sound: text(device.tweaks?.sound) ?? 'default',
    UserName: sender,
    UserDisplayName: text(n.sender_display_name) ?? sender,
    Message: message,
    ContentType: message === undefined ? undefined : 'text/plain',
    Id: text(n.event_id),
    ThreadId: text(n.room_id),
  }
  for (const key of Object.keys(request) as (keyof PnmRequest)[]) {
    if (request[key] === undefined) delete request[key]
  }
  return request
}
