/**
 * How many password checks may run, and for whom, before the homeserver is asked. Four budgets,
 * each for an abuse seen on the running service:
 * - failures per (username, client address): AUTH_FAILURES_PER_MINUTE (5). Keyed by the pair, so a
 *   guesser elsewhere cannot lock alice out, and six users behind one NAT with one typo each are
 *   six buckets, not one.
 * - failures per username alone, from anywhere: a higher threshold (20 a minute), against guessing
 *   one account from many addresses.
 * - checks that reach the homeserver per client address, whatever their outcome (30 a minute):
 *   every check comes from the proxy's own address, so Synapse's login rate limit (rc_login) is
 *   shared by all users, and one client must not spend it for everyone.
 * - checks in flight at once, for all clients together.
 * A check counts as an attempt from the moment it starts (in flight + recent failures), so parallel
 * guesses cannot all pass the limit before the first answer; success releases it.
 * Keys are fixed-size hashes, so memory stays bounded whatever usernames are sent. Pure apart
 * from the clock passed in.
 */
import { createHash } from 'node:crypto'
import { slidingWindow } from '../sliding-window.ts'

export interface AuthLimits {
  failuresPerPair: number
  failuresPerUser: number
  checksPerAddress: number
  maxInflight: number
}

export type AuthRefusal =
  | { ok: false; reason: 'pair' | 'user' | 'address'; retryAfter: number }
  | { ok: false; reason: 'busy'; retryAfter: number }

export interface AuthTicket {
  /** One more call to the homeserver for this check (a retry after its 429). */
  countCheck(): void
  /** The password was wrong: counted against the pair and the username. Releases the ticket. */
  fail(): void
  /** The check ended without a wrong password (right, or the homeserver could not tell). */
  release(): void
}

/**
 * The failure budgets kept where every instance sees them (PostgreSQL): the pair and user keys
 * are hashes (sharedKeys), never a username or an address.
 */
export interface FailureLedger {
  begin(
    keys: { pair: string; user: string },
    limits: { pair: number; user: number },
  ): Promise<{ ok: true; ids: number[] } | { ok: false; reason: 'pair' | 'user'; retryAfter: number }>
  fail(ids: number[]): Promise<void>
  release(ids: number[]): Promise<void>
}

/** The ledger's keys for a normalised username and an address group, hashed like the limiter's. */
export const sharedKeys = (normalizedUser: string, addressGroup: string | undefined) => ({
  pair: `p:${usernameKey(`${normalizedUser}\u0000${addressGroup ?? '-'}`)}`,
  user: `u:${usernameKey(normalizedUser)}`,
})

/** A username as the homeserver sees it: `@alice:<server name>`, `alice` and `Alice` are one user. */
export function normalizeUsername(username: string, serverName: string | undefined): string {
  const lower = username.trim().toLowerCase()
  const m = /^@([^:]+):(.+)$/.exec(lower)
  if (m && serverName !== undefined && m[2] === serverName.toLowerCase()) return m[1]!
  return lower
}

/** 128 bits of SHA-256: the limiter's key for a normalised username, whatever its length. */
export const usernameKey = (normalized: string) => createHash('sha256').update(normalized).digest('base64url').slice(0, 22)

export function createAuthLimiter(limits: AuthLimits, now: () => number) {
  const cap = Math.max(limits.failuresPerPair, limits.failuresPerUser, limits.checksPerAddress) + 1
  const failures = slidingWindow(now, cap)
  const checks = slidingWindow(now, cap)
  const inflight = new Map<string, number>()
  let inflightTotal = 0
  const running = (key: string) => inflight.get(key) ?? 0
  const adjust = (key: string, by: number) => {
    const n = running(key) + by
    if (n <= 0) inflight.delete(key)
    else inflight.set(key, n)
  }

  function refusal(key: string, limit: number): number | undefined {
    if (failures.count(key) + running(key) < limit) return undefined
    return failures.retryAfter(key, limit)
  }

  return {
    /**
     * Starts a password check for a normalised username from an address group (undefined when
     * the request has no socket, as in app.handle tests), or says which budget is spent.
     */
    begin(normalizedUser: string, addressGroup: string | undefined): { ok: true; ticket: AuthTicket } | AuthRefusal {
      const user = `u:${usernameKey(normalizedUser)}`
      const pair = `p:${usernameKey(normalizedUser)}:${addressGroup ?? '-'}`
      const address = addressGroup === undefined ? undefined : `a:${addressGroup}`
      const pairWait = refusal(pair, limits.failuresPerPair)
      if (pairWait !== undefined) return { ok: false, reason: 'pair', retryAfter: pairWait }
      const userWait = refusal(user, limits.failuresPerUser)
      if (userWait !== undefined) return { ok: false, reason: 'user', retryAfter: userWait }
      if (address !== undefined && checks.count(address) >= limits.checksPerAddress) {
        return { ok: false, reason: 'address', retryAfter: checks.retryAfter(address, limits.checksPerAddress) }
      }
      if (inflightTotal >= limits.maxInflight) return { ok: false, reason: 'busy', retryAfter: 1 }

      adjust(pair, 1)
      adjust(user, 1)
      inflightTotal++
      if (address !== undefined) checks.add(address)
      let open = true
      const release = () => {
        if (!open) return
        open = false
        adjust(pair, -1)
        adjust(user, -1)
        inflightTotal--
      }
      return {
        ok: true,
        ticket: {
          countCheck: () => {
            if (address !== undefined) checks.add(address)
          },
          fail: () => {
            if (!open) return
            failures.add(pair)
            failures.add(user)
            release()
          },
          release,
        },
      }
    },
    /** Checks in flight now (for tests and metrics). */
    inflight: () => inflightTotal,
  }
}
