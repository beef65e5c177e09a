/**
 * AUTH_MODE=matrix: an Acrobits account's username and password are checked with a password
 * login on the homeserver, whose answer names the Matrix user; the session is logged out at once.
 * Checks are limited before the homeserver is asked (auth-limits.ts), so the endpoint cannot be
 * used to guess passwords or to spend the homeserver's login rate limit; a good answer is cached
 * briefly, keyed by a keyed hash of the normalised username and the password (never by username
 * alone, or any password would pass).
 */
import { createHmac, randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import { rateLimitGroup } from '../client-address.ts'
import { rateLimited, unauthorized, unavailable, type AppError } from '../errors.ts'
import type { Metrics } from '../metrics.ts'
import { tokenHash } from '../secrets.ts'
import { createAuthLimiter, normalizeUsername, sharedKeys, type AuthLimits, type AuthTicket, type FailureLedger } from './auth-limits.ts'
import { MatrixError, type MatrixClient } from './client.ts'

export const AUTH_CACHE_TTL_MS = 5 * 60_000
const MAX_CACHED = 100_000

const REFUSALS = {
  pair: 'too many failed logins for this username from this address; refusing for now',
  user: 'too many failed logins for this username; refusing for now',
  address: 'too many password checks from this address; refusing for now',
  busy: 'too many password checks in flight (AUTH_MAX_INFLIGHT); refusing for now',
} as const

export interface PasswordVerifier {
  /** `log`: the request's logger, so that its lines carry the request's req_id. */
  verify(username: string, password: string, clientAddress: string | undefined, log?: Logger): Promise<string>
}

export function createPasswordVerifier(o: {
  matrix: MatrixClient
  log: Logger
  metrics: Metrics
  now: () => number
  limits: AuthLimits
  /** `@alice:<server name>` and `alice` are one user for the limits and the cache. */
  serverName?: string
  cacheTtlMs?: number
  /** Longest homeserver rate-limit wait a password check sits out before answering 503. */
  maxRateLimitWaitMs?: number
  /** The failure budgets shared with other instances (PostgreSQL); this process's limiter still applies. */
  ledger?: FailureLedger
}): PasswordVerifier {
  const ttl = o.cacheTtlMs ?? AUTH_CACHE_TTL_MS
  const maxRateLimitWaitMs = o.maxRateLimitWaitMs ?? 10_000
  const key = randomBytes(32)
  const cache = new Map<string, { userId: string; until: number }>()
  const inflight = new Map<string, Promise<string>>()
  const limiter = createAuthLimiter(o.limits, o.now)
  const cacheKey = (user: string, password: string) => createHmac('sha256', key).update(user).update('\u0000').update(password).digest('base64')

  // Synapse limits logins per source address (rc_login.address: a burst of 3, then one every ~6 s),
  // and every phone's check comes from this proxy's address: a short wait beats a 503.
  async function loginWaitingOutRateLimit(username: string, password: string, ticket: AuthTicket, log: Logger) {
    try {
      return await o.matrix.login(username, password)
    } catch (e) {
      const wait = e instanceof MatrixError && e.isRateLimit ? e.retryAfterMs : undefined
      if (wait === undefined || wait > maxRateLimitWaitMs) throw e
      log.info({ username, retry_after_ms: wait }, 'homeserver rate-limits logins; waiting once')
      await Bun.sleep(wait)
      ticket.countCheck()
      return o.matrix.login(username, password)
    }
  }

  function refuse(reason: string, error: AppError): never {
    o.metrics.authFailures.inc({ reason })
    throw error
  }

  return {
    async verify(username, password, clientAddress, log = o.log) {
      const user = normalizeUsername(username, o.serverName)
      const ck = cacheKey(user, password)
      const hit = cache.get(ck)
      if (hit && hit.until > o.now()) return hit.userId
      // The same credentials already being checked (an app reporting twice at start): one login
      // answers both, and only one counts against the limits.
      const running = inflight.get(ck)
      if (running) return running
      const check = checkWithHomeserver(username, user, password, ck, clientAddress, log).finally(() => inflight.delete(ck))
      inflight.set(ck, check)
      return check
    },
  }

  /**
   * The shared budgets too: a refusal there is the same 429 as here. Without the database the
   * check is not made (503): counting only here would give a guesser five tries per instance.
   */
  async function sharedTicket(ledger: FailureLedger, user: string, clientAddress: string | undefined, local: AuthTicket, username: string): Promise<AuthTicket> {
    let shared
    try {
      shared = await ledger.begin(sharedKeys(user, clientAddress === undefined ? undefined : rateLimitGroup(clientAddress)), {
        pair: o.limits.failuresPerPair,
        user: o.limits.failuresPerUser,
      })
    } catch (e) {
      local.release()
      o.log.error({ username, err: (e as Error).message }, 'shared password-check budgets unavailable (database); refusing for now')
      refuse('busy', unavailable('The credentials cannot be checked now; try again later', 5))
    }
    if (!shared.ok) {
      local.release()
      o.log.warn({ username, client: clientAddress, limit: shared.reason, retry_after_s: shared.retryAfter, shared: true }, REFUSALS[shared.reason])
      refuse('rate_limited', rateLimited('Too many failed attempts; try again later', shared.retryAfter))
    }
    const { ids } = shared
    const settle = (what: Promise<void>) =>
      void what.catch((e) => o.log.error({ username, err: (e as Error).message }, 'could not record the password check in the database'))
    return {
      countCheck: () => local.countCheck(),
      fail: () => {
        local.fail()
        settle(ledger.fail(ids))
      },
      release: () => {
        local.release()
        settle(ledger.release(ids))
      },
    }
  }

  /** One password check: the limits, the login, the logout, the cache. */
  async function checkWithHomeserver(username: string, user: string, password: string, ck: string, clientAddress: string | undefined, log: Logger): Promise<string> {
    const attempt = limiter.begin(user, clientAddress === undefined ? undefined : rateLimitGroup(clientAddress))
    if (!attempt.ok) {
      log.warn({ username, client: clientAddress, limit: attempt.reason, retry_after_s: attempt.retryAfter }, REFUSALS[attempt.reason])
      if (attempt.reason === 'busy') refuse('busy', unavailable('Too many password checks in progress; try again shortly', attempt.retryAfter))
      const what = attempt.reason === 'address' ? 'Too many password checks from this address' : 'Too many failed attempts'
      refuse('rate_limited', rateLimited(`${what}; try again later`, attempt.retryAfter))
    }
    const { ticket: local } = attempt
    const ticket = o.ledger ? await sharedTicket(o.ledger, user, clientAddress, local, username) : local

    let session: { userId: string; accessToken?: string }
    try {
      session = await loginWaitingOutRateLimit(username, password, ticket, log)
    } catch (e) {
      if (e instanceof MatrixError && !e.isTransient) {
        ticket.fail()
        log.info({ username, client: clientAddress, errcode: e.errcode, status: e.status }, 'login refused by the homeserver')
        refuse('invalid_credentials', unauthorized('Invalid username or password'))
      }
      ticket.release()
      // Never 401 when the homeserver could not answer: the app would treat a good password as bad.
      const retry = e instanceof MatrixError && e.retryAfterMs !== undefined ? Math.ceil(e.retryAfterMs / 1000) : undefined
      log.error({ username, err: (e as Error).message }, 'homeserver could not check the password')
      refuse('homeserver_unavailable', unavailable('The homeserver could not check the credentials; try again later', retry))
    }
    ticket.release()

    if (session.accessToken !== undefined) {
      try {
        await o.matrix.logout(session.accessToken)
      } catch (e) {
        log.warn({ user_id: session.userId, session: tokenHash(session.accessToken), err: (e as Error).message }, 'logout of the password-check session failed')
      }
    }
    if (cache.size >= MAX_CACHED) cache.delete(cache.keys().next().value!)
    cache.set(ck, { userId: session.userId, until: o.now() + ttl })
    return session.userId
  }
}
