/**
 * Secrets never reach a log: a push token, password or access token is identified by a short
 * hash instead, and secrets are compared in constant time.
 */
import { timingSafeEqual, createHash } from 'node:crypto'

/** 12 hex digits of SHA-256: enough to tell tokens apart in logs, useless to send a push. */
export const tokenHash = (secret: string) => createHash('sha256').update(secret).digest('hex').slice(0, 12)

export function constantTimeEqual(a: string, b: string): boolean {
  // Hashing first gives equal lengths, so the comparison leaks neither content nor length.
  const ha = createHash('sha256').update(a).digest()
  const hb = createHash('sha256').update(b).digest()
  return timingSafeEqual(ha, hb)
}

/**
 * A URL as it may be printed: `https://user:secret@host/` becomes `https://***@host/`. Works on
 * text that does not parse as a URL too, since error messages quote what was given.
 */
/**
 * A database URL as it may be printed: the user stays (it helps the operator), the password does
 * not: `postgres://app:secret@db/x` becomes `postgres://app:[REDACTED]@db/x` (a `password=` parameter too).
 */
export const redactPassword = (url: string) =>
  url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/?#:@]*):[^/?#]*@/i, '$1:[REDACTED]@').replace(/([?&]password=)[^&#]*/gi, '$1[REDACTED]')

export const redactUserinfo = (url: string) => url.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/?#]*@/i, '$1***@')
