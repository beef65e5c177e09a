/**
 * The fields of the bodies the Acrobits app fills from a template the operator wrote (Push Token
 * Reporter, Fetch Messages, Send Message): any field may be missing, null or empty, and an empty
 * or blank value means "not given". Pure.
 */
import { t } from 'elysia'
import { badRequest } from './errors.ts'

/** A template field as sent: a string, null, or absent. */
export const OptionalText = t.Optional(t.Union([t.String(), t.Null()]))

/** The value without surrounding spaces; blank, null or absent is undefined. */
export const trimmed = (v: string | null | undefined): string | undefined => {
  const s = v?.trim()
  return s ? s : undefined
}

/** The value as sent (a password may begin or end with a space); empty, null or absent is undefined. */
export const nonEmpty = (v: string | null | undefined): string | undefined => (v ? v : undefined)

const CONTROL = /\p{Cc}/u
/** The longest username a report, a fetch or a send accepts. */
export const MAX_USERNAME_BYTES = 255

/**
 * A 400 naming the field when its value holds a control character: none belongs in a name, an
 * address, a token or an id, and PostgreSQL cannot store U+0000 at all.
 */
export function refuseControl(name: string, value: string | undefined) {
  if (value !== undefined && CONTROL.test(value)) throw badRequest(`${name} contains a control character`)
}

/** A 400 naming the field when its value is longer than `max` bytes in UTF-8. */
export function refuseLonger(name: string, value: string | undefined, max: number) {
  if (value !== undefined && Buffer.byteLength(value) > max) throw badRequest(`${name} is longer than ${max} bytes`)
}

/**
 * A form body's or query string's fields, the first value of each name. A name in `once` given more
 * than once is a 400 naming it: Send Message's `to` twice is two recipients, which one request does
 * not carry (the app sends one request per recipient).
 */
export function formFields(params: URLSearchParams, once: readonly string[] = []): Record<string, string> {
  const fields: Record<string, string> = {}
  for (const [key, value] of params) {
    if (!(key in fields)) fields[key] = value
    else if (once.includes(key)) throw badRequest(`${key} is given more than once`)
  }
  return fields
}
