/**
 * The password-failure budgets on PostgreSQL, so that five guesses are five whichever instance
 * answers them. A check under way is a row (it counts from the moment it starts, as in the
 * in-process limiter); a wrong password keeps it as a failure for a minute; any other ending
 * deletes it. Checks of one user are decided one at a time (an advisory lock on the user's key),
 * so guesses sent to two instances at once cannot both pass the last free place.
 */
import type { SQL } from 'bun'
import type { FailureLedger } from '../matrix/auth-limits.ts'
import { LOCK_CLASS } from './pg-migrations.ts'

const WINDOW_MS = 60_000

export function createPgFailureLedger(sql: SQL, now: () => number): FailureLedger {
  return {
    begin: (keys, limits) =>
      sql.begin(async (tx) => {
        const t = now()
        await tx`SELECT pg_advisory_xact_lock(${LOCK_CLASS.auth}, hashtext(${keys.user}))`
        await tx`DELETE FROM auth_attempts WHERE (key = ${keys.pair} OR key = ${keys.user}) AND at <= ${t - WINDOW_MS}`
        const rows: { key: string; n: number; oldest: string }[] = await tx`
          SELECT key, count(*)::int AS n, min(at) AS oldest FROM auth_attempts WHERE key = ${keys.pair} OR key = ${keys.user} GROUP BY key`
        const wait = (key: string) => Math.max(1, Math.ceil((Number(rows.find((r) => r.key === key)!.oldest) + WINDOW_MS - t) / 1000))
        const count = (key: string) => rows.find((r) => r.key === key)?.n ?? 0
        if (count(keys.pair) >= limits.pair) return { ok: false as const, reason: 'pair' as const, retryAfter: wait(keys.pair) }
        if (count(keys.user) >= limits.user) return { ok: false as const, reason: 'user' as const, retryAfter: wait(keys.user) }
        const ids: { id: string }[] = await tx`INSERT INTO auth_attempts (key, at) VALUES (${keys.pair}, ${t}), (${keys.user}, ${t}) RETURNING id`
        return { ok: true as const, ids: ids.map((r) => Number(r.id)) }
      }),
    async fail(ids) {
      await sql`UPDATE auth_attempts SET failed = true, at = ${now()} WHERE id = ${ids[0]!} OR id = ${ids[1]!}`
    },
    async release(ids) {
      await sql`DELETE FROM auth_attempts WHERE id = ${ids[0]!} OR id = ${ids[1]!}`
    },
  }
}
