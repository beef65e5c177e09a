/**
 * The fields of the bodies the Acrobits app fills from a template the operator wrote (Push Token
 * Reporter, Fetch Messages, Send Message): any field may be missing, null or empty, and an empty
 * or blank value means "not given". Pure.
 */
import { t } from 'elysia'

/** A template field as sent: a string, null, or absent. */
export const OptionalText = t.Optional(t.Union([t.String(), t.Null()]))

/** The value without surrounding spaces; blank, null or absent is undefined. */
export const trimmed = (v: string | null | undefined): string | undefined => {
  const s = v?.trim()
  return s ? s : undefined
}

/** The value as sent (a password may begin or end with a space); empty, null or absent is undefined. */
export const nonEmpty = (v: string | null | undefined): string | undefined => (v ? v : undefined)
