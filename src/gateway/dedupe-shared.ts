/**
 * The duplicate filter on a database every instance shares: a notification retried to another
 * instance sends no second push. A claim on (pushkey, event id) is taken before the PNM call; it is
 * kept an hour once delivered, dropped when the delivery failed (so the retry sends), and runs out
 * by itself if its instance died while sending.
 */
import type { SQL } from 'bun'
import { DEDUPE_TTL_MS, type DuplicateFilter } from './dedupe.ts'

export function createSharedDuplicateFilter(sql: SQL, options: { now: () => number; ttlMs?: number; sendingMs: number }): DuplicateFilter {
  const ttl = options.ttlMs ?? DEDUPE_TTL_MS
  let nextSweep = 0
  // Expired claims are deleted now and then (once a minute, by whichever instance claims), not per request.
  const sweep = (now: number) => {
    if (now < nextSweep) return
    nextSweep = now + 60_000
    sql`DELETE FROM notify_claims WHERE expires_at <= ${now}`.catch(() => {
      nextSweep = 0
    })
  }
  return {
    async claim(pushkey, eventId) {
      const now = options.now()
      sweep(now)
      const [taken] = await sql`
        INSERT INTO notify_claims (pushkey, event_id, state, expires_at) VALUES (${pushkey}, ${eventId}, 'sending', ${now + options.sendingMs})
        ON CONFLICT (pushkey, event_id) DO UPDATE SET state = 'sending', expires_at = excluded.expires_at
          WHERE notify_claims.expires_at <= ${now}
        RETURNING 1 AS ok`
      if (taken) return 'claimed'
      const [held]: { state: string }[] = await sql`SELECT state FROM notify_claims WHERE pushkey = ${pushkey} AND event_id = ${eventId}`
      // Gone meanwhile (released after a failed delivery): the next retry claims it.
      return held?.state === 'delivered' ? 'duplicate' : 'elsewhere'
    },
    async delivered(pushkey, eventId) {
      await sql`UPDATE notify_claims SET state = 'delivered', expires_at = ${options.now() + ttl} WHERE pushkey = ${pushkey} AND event_id = ${eventId}`
    },
    async release(pushkey, eventId) {
      await sql`DELETE FROM notify_claims WHERE pushkey = ${pushkey} AND event_id = ${eventId} AND state = 'sending'`
    },
  }
}
