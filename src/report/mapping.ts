/**
 * MAPPING_FILE: a JSON array that ties usernames, phone numbers and selectors to Matrix users,
 * for AUTH_MODE=none where the homeserver does not tell who an account belongs to.
 */
import { Type as t, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'

const NumberLike = t.Union([t.String(), t.Number()])

export const MappingEntrySchema = t.Object({
  matrix_id: t.String({ pattern: '^@[^:\\s]+:\\S+$' }),
  number: t.Optional(NumberLike),
  sub_numbers: t.Optional(t.Array(NumberLike)),
  username: t.Optional(t.String()),
  selectors: t.Optional(t.Array(t.String())),
})
const MappingFileSchema = t.Array(MappingEntrySchema)

export interface MappingEntry {
  readonly matrixId: string
  /** The entry's own `number` (not a sub-number): what the app shows for this user. */
  readonly number?: string
  readonly usernames: ReadonlySet<string>
  readonly numbers: ReadonlySet<string>
  readonly selectors: ReadonlySet<string>
}

type RawEntry = Static<typeof MappingEntrySchema>

const norm = (v: string | number) => String(v).trim()

export function parseMappingFile(text: string): { ok: true; entries: MappingEntry[] } | { ok: false; error: string } {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (e) {
    return { ok: false, error: `not valid JSON (${(e as Error).message})` }
  }
  if (!Value.Check(MappingFileSchema, json)) {
    const first = Value.Errors(MappingFileSchema, json).First()
    return { ok: false, error: `entry${first?.path || ''}: ${first?.message ?? 'invalid'}` }
  }
  return {
    ok: true,
    entries: (json as RawEntry[]).map((e) => ({
      matrixId: e.matrix_id,
      number: e.number === undefined ? undefined : norm(e.number),
      usernames: new Set(e.username === undefined ? [] : [e.username.trim().toLowerCase()]),
      numbers: new Set([...(e.number === undefined ? [] : [e.number]), ...(e.sub_numbers ?? [])].map(norm)),
      selectors: new Set((e.selectors ?? []).map(norm)),
    })),
  }
}
