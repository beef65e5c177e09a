/**
 * AUTH_MODE=ext: what the NethVoice CTI server says, read without I/O. Pure.
 * - The login answer's JWT: the account may use this service only when its payload has
 *   `"nethvoice_cti.chat": true` (the signature is the CTI's business; the proxy only reads the
 *   claim of a token it just received over its own connection).
 * - `GET /api/chat?users=1`: every user becomes a MappingEntry, the same shape as a MAPPING_FILE
 *   entry: `@<user_name, lower-cased>:<server name>`, `main_extension` as its number and the
 *   sub-extensions (`sub_extensions`, or `extensions` as the CTI is renaming it) as sub-numbers.
 */
import { Type as t } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import type { MappingEntry } from '../report/mapping.ts'

export const CHAT_CLAIM = 'nethvoice_cti.chat'

/** The payload of a JWT, or undefined when it is not one. */
export function jwtPayload(token: unknown): Record<string, unknown> | undefined {
  if (typeof token !== 'string') return undefined
  const parts = token.split('.')
  if (parts.length !== 3 || !/^[A-Za-z0-9_-]+={0,2}$/.test(parts[1]!)) return undefined
  try {
    const payload: unknown = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8'))
    return payload !== null && typeof payload === 'object' && !Array.isArray(payload) ? (payload as Record<string, unknown>) : undefined
  } catch {
    return undefined
  }
}

/** `true` (or the string "true", which the Go proxy accepted too). */
export const mayChat = (payload: Record<string, unknown>) => payload[CHAT_CLAIM] === true || payload[CHAT_CLAIM] === 'true'

const Extension = t.Union([t.String(), t.Number()])
const CtiUser = t.Object(
  {
    user_name: t.String(),
    main_extension: t.Optional(t.Union([Extension, t.Null()])),
    sub_extensions: t.Optional(t.Union([t.Array(Extension), t.Null()])),
    extensions: t.Optional(t.Union([t.Array(Extension), t.Null()])),
  },
  { additionalProperties: true },
)
export const ChatAnswerSchema = t.Object({ users: t.Array(t.Unknown()) }, { additionalProperties: true })

// The Matrix localpart grammar the rest of the service accepts (report/identity.ts).
const LOCALPART = /^[!-9;-~]+$/

/** The CTI's users as mapping entries; users without a usable user_name are left out. */
export function usersToMapping(users: readonly unknown[], serverName: string): MappingEntry[] {
  const entries: MappingEntry[] = []
  for (const raw of users) {
    if (!Value.Check(CtiUser, raw)) continue
    const name = raw.user_name.trim().toLowerCase()
    if (!LOCALPART.test(name)) continue
    const subs = raw.sub_extensions ?? raw.extensions ?? []
    const main = raw.main_extension === undefined || raw.main_extension === null ? '' : String(raw.main_extension).trim()
    const numbers = [main, ...subs.map((n) => String(n).trim())].filter(Boolean)
    // main_extension is what the app shows for the user (pushes, Fetch Messages), as a MAPPING_FILE entry's `number`.
    entries.push({ matrixId: `@${name}:${serverName}`, number: main || undefined, usernames: new Set([name]), numbers: new Set(numbers), selectors: new Set() })
  }
  return entries
}

/** The username the CTI is asked about: without any `@domain` part (`giacomo@example.org` → `giacomo`). */
export const ctiUsername = (username: string) => {
  const trimmed = username.trim()
  const at = trimmed.indexOf('@')
  return at > 0 ? trimmed.slice(0, at) : trimmed
}
