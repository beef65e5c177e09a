/**
 * What the app shows for one Matrix event: a pure translation of a client-format event (as Synapse
 * sends it to an application service, FIELD-GUIDE §7) into the text of one message, or undefined
 * when the event is not a message the app should list.
 */

import type { ClientEvent } from '../matrix/event.ts'

export type { ClientEvent }

export const ENCRYPTED_TEXT = '🔒 Encrypted message: open a Matrix client to read it'

const MEDIA_LABEL: Record<string, string> = {
  'm.image': 'Image',
  'm.file': 'File',
  'm.audio': 'Audio',
  'm.video': 'Video',
  'm.location': 'Location',
}

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined)
const obj = (v: unknown): Record<string, unknown> | undefined =>
  v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined
const oneLine = (s: string) => s.replace(/\s+/g, ' ').trim()

function relation(event: ClientEvent) {
  return obj(event.content['m.relates_to'])
}

/**
 * The original's event id when the event is an edit (`rel_type: m.replace`), in clear or
 * encrypted (the relation of an encrypted event is not encrypted).
 */
export function editOf(event: ClientEvent): string | undefined {
  if (event.type !== 'm.room.message' && event.type !== 'm.room.encrypted') return undefined
  const rel = relation(event)
  return rel?.rel_type === 'm.replace' ? str(rel.event_id) : undefined
}

/** An edit's text: '✎ ' + the new body (`m.new_content.body`); undefined without one. */
export function editText(event: ClientEvent): string | undefined {
  const body = str(obj(event.content['m.new_content'])?.body)
  return body === undefined ? undefined : `✎ ${body}`
}

/** The event a redaction removes: `content.redacts` (room version 11) first, then the top level. */
export function redactedId(event: ClientEvent): string | undefined {
  if (event.type !== 'm.room.redaction') return undefined
  return str(event.content.redacts) ?? str(event.redacts)
}

/**
 * A reply's fallback (`> <@carol:example.org> hello\n> more\n\nreply`) is removed only when the
 * event is a reply and the body starts with `> <`: since spec v1.13 clients send no fallback, and
 * a quote the user typed stays.
 */
function withoutReplyFallback(event: ClientEvent, body: string): string {
  if (obj(relation(event)?.['m.in_reply_to']) === undefined || !body.startsWith('> <')) return body
  const lines = body.split('\n')
  let i = 0
  while (i < lines.length && lines[i]!.startsWith('>')) i++
  if (lines[i] === '') i++
  const rest = lines.slice(i).join('\n')
  return rest === '' ? body : rest
}

/** One line for a file, image, sound, video, location or sticker: its name or description. */
function mediaLine(label: string, content: Record<string, unknown>): string {
  const body = str(content.body)
  // Since spec v1.10 a `filename` beside a different `body` makes the body a caption.
  const filename = str(content.filename)
  const caption = filename !== undefined && body !== undefined && body !== filename ? body : undefined
  const name = filename ?? body ?? str(content.geo_uri) ?? ''
  const geo = label === 'Location' && body !== undefined ? str(content.geo_uri) : undefined
  const parts = [name, caption && `— ${caption}`, geo && `(${geo})`].filter((p): p is string => !!p)
  return oneLine(`${label}: ${parts.join(' ')}`)
}

/**
 * The text the app shows for an event, or undefined for what it never lists: state events,
 * reactions, verification requests, receipts, typing, redacted messages, anything else. Edits give
 * their `editText`; `authorName` is used by m.emote (`* name body`).
 */
export function displayText(event: ClientEvent, authorName: string): string | undefined {
  if (event.state_key !== undefined) return undefined
  const content = event.content
  if (event.type === 'm.room.encrypted') {
    // Edits and reactions keep their relation in clear: they are not new messages.
    const rel = relation(event)?.rel_type
    return rel === 'm.replace' || rel === 'm.annotation' ? undefined : ENCRYPTED_TEXT
  }
  if (event.type === 'm.sticker') return str(content.body) === undefined ? undefined : mediaLine('Sticker', content)
  if (event.type !== 'm.room.message') return undefined
  if (editOf(event) !== undefined) return editText(event)
  const msgtype = str(content.msgtype)
  const body = str(content.body)
  if (msgtype === undefined || body === undefined) return undefined
  if (msgtype.startsWith('m.key.verification.')) return undefined
  if (msgtype === 'm.emote') return `* ${authorName} ${body}`
  const label = MEDIA_LABEL[msgtype]
  if (label !== undefined) return mediaLine(label, content)
  // m.text, m.notice, and (as the spec asks of clients) any unknown msgtype: the body.
  return withoutReplyFallback(event, body)
}
