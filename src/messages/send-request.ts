/**
 * Acrobits Send Message: the request as the app's template fills it (FIELD-GUIDE §5), and the
 * body of a disposition notification (the app's delivery and read reports). Pure.
 */
import { t } from 'elysia'
import { badRequest } from '../errors.ts'
import { MAX_USERNAME_BYTES, nonEmpty, OptionalText as Field, refuseControl, refuseLonger, trimmed } from '../form-fields.ts'

export const SendBodySchema = t.Object(
  {
    username: Field,
    from: Field,
    password: Field,
    to: Field,
    sms_to: Field,
    body: Field,
    sms_body: Field,
    content_type: Field,
    disposition_notification: Field,
  },
  { additionalProperties: true, description: 'Fields filled by the Acrobits app from its Send Message template' },
)
export type SendBody = typeof SendBodySchema.static

/** The recipient's two spellings: one request carries one recipient. */
export const RECIPIENT_FIELDS = ['to', 'sms_to'] as const

export interface SendRequest {
  readonly username?: string
  readonly password?: string
  readonly to?: string
  /** Not trimmed: a message may start or end with spaces. */
  readonly body?: string
  /** Lower-cased media type without parameters; `text/plain` when not given. */
  readonly contentType: string
  readonly dispositionNotification?: string
}

/** Synapse refuses events over 64 KiB; the body stays well under it with its envelope. */
export const MAX_MESSAGE_BYTES = 32 * 1024
/** A 32 KiB body form-encoded can triple in size; nothing the app sends is near this. */
export const SEND_BODY_LIMIT = 256 * 1024

export const TEXT_PLAIN = 'text/plain'
export const DISPOSITION = 'application/x-acro-disposition-notification'

const given = (v: string | null | undefined) => (v === null || v === undefined ? undefined : v)

/**
 * Trims every field except the password and the body; reads both spellings of each field. A 400
 * naming the field for a control character in the username, password or recipient, or a username
 * past its length (the body is the message: it may hold any character).
 */
export function normalizeSend(body: SendBody): SendRequest {
  const contentType = trimmed(body.content_type)?.split(';')[0]!.trim().toLowerCase()
  const request = {
    username: trimmed(body.username) ?? trimmed(body.from),
    // An empty password is no password (a password may start or end with spaces: not trimmed).
    password: nonEmpty(body.password),
    to: trimmed(body.to) ?? trimmed(body.sms_to),
    body: given(body.body) ?? given(body.sms_body),
    contentType: contentType || TEXT_PLAIN,
    dispositionNotification: trimmed(body.disposition_notification),
  }
  refuseControl('username', request.username)
  refuseControl('password', request.password)
  refuseControl('to', request.to)
  refuseLonger('username', request.username, MAX_USERNAME_BYTES)
  return request
}

export interface Disposition {
  /** The sms_id of the message the report is about. */
  readonly messageId: string
  readonly delivered: boolean
  readonly displayed: boolean
}

const obj = (v: unknown): Record<string, unknown> | undefined =>
  v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined

/**
 * A disposition notification's body: JSON naming `message-id` (also `message_id`), with
 * `delivery-notification` / `display-notification` objects whose `status` is `delivered` /
 * `displayed` (FIELD-GUIDE §5). A body that says none of this is a 400 naming `body`.
 */
export function parseDisposition(body: string | undefined): Disposition {
  let json: Record<string, unknown> | undefined
  try {
    json = obj(JSON.parse(body ?? ''))
  } catch {
    json = undefined
  }
  if (json === undefined) throw badRequest('body: a disposition notification must be a JSON object')
  const id = json['message-id'] ?? json.message_id
  if (typeof id !== 'string' || id.trim() === '') throw badRequest('body: a disposition notification must name its message-id')
  const status = (key: string) => obj(json[key])?.status
  return {
    messageId: id.trim(),
    delivered: status('delivery-notification') === 'delivered',
    displayed: status('display-notification') === 'displayed',
  }
}
