/**
 * Who an Acrobits account is on Matrix when the homeserver is not asked (AUTH_MODE=none).
 * Pure: the mapping and the server name are passed in.
 */
import { isLocalpart, isMatrixId, mappingEntryForNumber } from '../addresses.ts'
import { badRequest, notConfigured, type AppError } from '../errors.ts'
import type { MappingEntry } from './mapping.ts'

export function resolveMatrixUser(
  input: { username?: string; selector: string },
  mapping: readonly MappingEntry[],
  serverName: string | undefined,
): { ok: true; userId: string } | { ok: false; error: AppError } {
  const { username, selector } = input
  if (username !== undefined && isMatrixId(username)) return { ok: true, userId: username }
  if (username !== undefined) {
    const lower = username.toLowerCase()
    const entry =
      mapping.find((e) => e.usernames.has(lower)) ?? mappingEntryForNumber(mapping, username)
    if (entry) return { ok: true, userId: entry.matrixId }
  }
  const bySelector = mapping.find((e) => e.selectors.has(selector))
  if (bySelector) return { ok: true, userId: bySelector.matrixId }
  if (username === undefined) {
    return { ok: false, error: badRequest('username is missing and no MAPPING_FILE entry matches the selector') }
  }
  const localpart = (username.split('@')[0] ?? '').toLowerCase()
  if (!isLocalpart(localpart)) {
    return { ok: false, error: badRequest(`username "${username}" cannot be turned into a Matrix user ID`) }
  }
  if (serverName === undefined) {
    return { ok: false, error: notConfigured('MATRIX_SERVER_NAME', 'Deriving a Matrix user ID from the username') }
  }
  return { ok: true, userId: `@${localpart}:${serverName}` }
}
