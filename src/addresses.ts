/**
 * Addresses: the one mapping between Matrix users and rooms and what the Acrobits app shows and
 * sends back (a push's UserName/ThreadId, a fetch's sender/recipient/stream_id, a send's `to`).
 * Pure: the mapping and the server name are passed in.
 *
 * `renderUser` and `resolveAddress` are inverses: resolveAddress(renderUser(x)) === x for every
 * Matrix user ID x. Render tries the shortest form first and keeps it only when it resolves back,
 * so a number or localpart that would name someone else falls back to the full Matrix ID.
 */
import type { MappingEntry } from './report/mapping.ts'

export interface AddressBook {
  /** This homeserver's name: its users are shown by localpart. */
  readonly serverName?: string
  readonly mapping: readonly MappingEntry[]
}

// Historical user ID grammar: printable ASCII without ':' and with no spaces.
const LOCALPART = /^[!-9;-~]+$/
const MATRIX_ID = /^@[!-9;-~]+:[A-Za-z0-9.\-[\]:]+$/
const SERVER_NAME = /^[A-Za-z0-9.\-[\]:]+$/

export const isMatrixId = (s: string) => MATRIX_ID.test(s)
export const isLocalpart = (s: string) => LOCALPART.test(s)

/** The MAPPING_FILE entry whose number or sub-number is `number` (the first one, if several). */
export const mappingEntryForNumber = (mapping: readonly MappingEntry[], number: string) =>
  mapping.find((e) => e.numbers.has(number))

function splitUserId(userId: string): { localpart: string; server: string } | undefined {
  if (!isMatrixId(userId)) return undefined
  const colon = userId.indexOf(':')
  return { localpart: userId.slice(1, colon), server: userId.slice(colon + 1) }
}

/**
 * The Matrix user an address names, or undefined: a full Matrix ID; a MAPPING_FILE number or
 * sub-number; `user@domain` (`@user:domain`); a bare localpart of this server. Localparts are
 * lower-cased, as the token report does with usernames.
 */
export function resolveAddress(address: string, book: AddressBook): string | undefined {
  const a = address.trim()
  if (a === '') return undefined
  if (isMatrixId(a)) return a
  const entry = mappingEntryForNumber(book.mapping, a)
  if (entry) return entry.matrixId
  const at = a.lastIndexOf('@')
  if (at > 0) {
    const localpart = a.slice(0, at).toLowerCase()
    const server = a.slice(at + 1)
    const userId = `@${localpart}:${server}`
    return SERVER_NAME.test(server) && isMatrixId(userId) ? userId : undefined
  }
  if (book.serverName === undefined || a.startsWith('@') || !isLocalpart(a)) return undefined
  return `@${a.toLowerCase()}:${book.serverName}`
}

/**
 * What the app shows for a Matrix user: the `number` of the user's MAPPING_FILE entry; else the
 * localpart for users of this server; else the full Matrix ID.
 */
export function renderUser(userId: string, book: AddressBook): string {
  const candidates: string[] = []
  const number = book.mapping.find((e) => e.matrixId === userId && e.number !== undefined)?.number
  if (number !== undefined) candidates.push(number)
  const parts = splitUserId(userId)
  if (parts && parts.server === book.serverName) candidates.push(parts.localpart)
  return candidates.find((c) => resolveAddress(c, book) === userId) ?? userId
}

export interface RoomNaming {
  readonly name?: string
  readonly canonicalAlias?: string
  readonly roomId: string
}

/**
 * A group conversation's address: the room's name, else its canonical alias, else its id. The app
 * splits recipient addresses on spaces and commas (FIELD-GUIDE §5), so whitespace becomes a
 * no-break space (U+00A0) and commas a single low-9 quotation mark (U+201A), which look the same.
 */
export function groupAddress(room: RoomNaming): string {
  const base = [room.name, room.canonicalAlias].map((s) => s?.trim()).find((s) => s !== undefined && s !== '') ?? room.roomId
  return base.replace(/\s/g, '\u00a0').replaceAll(',', '\u201a')
}

/** `base`, or `base (2)`, `base (3)`, … (with no-break spaces): the first that is not taken. */
export function uniqueAddress(base: string, isTaken: (address: string) => boolean): string {
  if (!isTaken(base)) return base
  for (let n = 2; ; n++) {
    const candidate = `${base}\u00a0(${n})`
    if (!isTaken(candidate)) return candidate
  }
}
