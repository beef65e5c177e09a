/**
 * Password checks for token reports. What every check shares lives here: the limits before
 * anyone is asked (auth-limits.ts), so the endpoint cannot be used to guess passwords or to spend
 * an upstream login rate limit; identical checks in flight answered by one; a good answer cached
 * briefly, keyed by a keyed hash of the normalised username and the password (never by username
 * alone, or any password would pass). Who is asked is a backend:
 * - AUTH_MODE=matrix (this file): a password login on the homeserver, whose answer names the
 *   Matrix user; the session is logged out at once.
 * - AUTH_MODE=ext (cti/backend.ts): the NethVoice CTI server, as the Go proxy did.
 */
import { createHmac, randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import { rateLimitGroup } from '../client-address.ts'
import { AppError, rateLimited, unauthorized, unavailable } from '../errors.ts'
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

/** What a backend found: the Matrix user, or a refusal of the credentials (with its metric reason). */
export type CheckResult =
  | { ok: true; userId: string }
  | { ok: false; reason: string; error: AppError; /** Counted as a wrong password by the limits. */ failure: boolean }

export interface PasswordBackend {
  /** The username as the limits and the cache see it (one user, however it is spelt). */
  normalize(username: string): string
  /**
   * Asks the upstream. Resolves what it answered; throws an AppError (503) when it could not
   * answer: never a 401 for a password that may be right.
   */
  check(username: string, password: string, ticket: AuthTicket, clientAddress: string | undefined, log: Logger): Promise<CheckResult>
}

export function createPasswordVerifier(o: {
  backend: PasswordBackend
  log: Logger
  metrics: Metrics
  now: () => number
  limits: AuthLimits
  cacheTtlMs?: number
  /** The failure budgets shared with other instances (PostgreSQL); this process's limiter still applies. */
  ledger?: FailureLedger
}): PasswordVerifier {
  const ttl = o.cacheTtlMs ?? AUTH_CACHE_TTL_MS
  const key = randomBytes(32)
  const cache = new Map<string, { userId: string; until: number }>()
  const inflight = new Map<string, Promise<string>>()
  const limiter = createAuthLimiter(o.limits, o.now)
  const cacheKey = (user: string, password: string) => createHmac('sha256', key).update(user).update('\u0000').update(password).digest('base64')

  function refuse(reason: string, error: AppError): never {
    o.metrics.authFailures.inc({ reason })
    throw error
  }

  return {
    async verify(username, password, clientAddress, log = o.log) {
      const user = o.backend.normalize(username)
      const ck = cacheKey(user, password)
      const hit = cache.get(ck)
      if (hit && hit.until > o.now()) return hit.userId
      // The same credentials already being checked (an app reporting twice at start): one check
      // answers both, and only one counts against the limits.
      const running = inflight.get(ck)
      if (running) return running
      const check = checkUpstream(username, user, password, ck, clientAddress, log).finally(() => inflight.delete(ck))
      inflight.set(ck, check)
      return check
    },
  }

  /**
   * The shared budgets too: a refusal there is the same 429 as here. Without the database the
   * check is not made (503): counting only here would give a guesser five tries per instance.
   */
  async function sharedTicket(ledger: FailureLedger, user: string, clientAddress: string | undefined, local: AuthTicket, username: string, log: Logger): Promise<AuthTicket> {
    let shared
    try {
      shared = await ledger.begin(sharedKeys(user, clientAddress === undefined ? undefined : rateLimitGroup(clientAddress)), {
        pair: o.limits.failuresPerPair,
        user: o.limits.failuresPerUser,
      })
    } catch (e) {
      local.release()
      log.error({ username, err: (e as Error).message }, 'shared password-check budgets unavailable (database); refusing for now')
      refuse('busy', unavailable('The credentials cannot be checked now; try again later', 5))
    }
    if (!shared.ok) {
      local.release()
      log.warn({ username, client: clientAddress, limit: shared.reason, retry_after_s: shared.retryAfter, shared: true }, REFUSALS[shared.reason])
      refuse('rate_limited', rateLimited('Too many failed attempts; try again later', shared.retryAfter))
    }
    const { ids } = shared
    const settle = (what: Promise<void>) =>
      void what.catch((e) => log.error({ username, err: (e as Error).message }, 'could not record the password check in the database'))
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

  /** One password check: the limits, the backend, the cache. */
  async function checkUpstream(username: string, user: string, password: string, ck: string, clientAddress: string | undefined, log: Logger): Promise<string> {
    const attempt = limiter.begin(user, clientAddress === undefined ? undefined : rateLimitGroup(clientAddress))
    if (!attempt.ok) {
      log.warn({ username, client: clientAddress, limit: attempt.reason, retry_after_s: attempt.retryAfter }, REFUSALS[attempt.reason])
      if (attempt.reason === 'busy') refuse('busy', unavailable('Too many password checks in progress; try again shortly', attempt.retryAfter))
      const what = attempt.reason === 'address' ? 'Too many password checks from this address' : 'Too many failed attempts'
      refuse('rate_limited', rateLimited(`${what}; try again later`, attempt.retryAfter))
    }
    const { ticket: local } = attempt
    const ticket = o.ledger ? await sharedTicket(o.ledger, user, clientAddress, local, username, log) : local
    let result: CheckResult
    try {
      result = await o.backend.check(username, password, ticket, clientAddress, log)
    } catch (e) {
      ticket.release()
      if (e instanceof AppError) refuse('homeserver_unavailable', e)
      throw e
    }
    if (!result.ok) {
      if (result.failure) ticket.fail()
      else ticket.release()
      refuse(result.reason, result.error)
    }
    ticket.release()
    if (cache.size >= MAX_CACHED) cache.delete(cache.keys().next().value!)
    cache.set(ck, { userId: result.userId, until: o.now() + ttl })
    return result.userId
  }
}

/** AUTH_MODE=matrix: a password login on the homeserver, logged out at once. */
export function matrixPasswordBackend(o: {
  matrix: MatrixClient
  log: Logger
  /** `@alice:<server name>` and `alice` are one user for the limits and the cache. */
  serverName?: string
  /** Longest homeserver rate-limit wait a password check sits out before answering 503. */
  maxRateLimitWaitMs?: number
}): PasswordBackend {
  const maxRateLimitWaitMs = o.maxRateLimitWaitMs ?? 10_000

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

  return {
    normalize: (username) => normalizeUsername(username, o.serverName),
    async check(username, password, ticket, clientAddress, log) {
      let session: { userId: string; accessToken?: string }
      try {
        session = await loginWaitingOutRateLimit(username, password, ticket, log)
      } catch (e) {
        if (e instanceof MatrixError && !e.isTransient) {
          log.info({ username, client: clientAddress, errcode: e.errcode, status: e.status }, 'login refused by the homeserver')
          return { ok: false, reason: 'invalid_credentials', error: unauthorized('Invalid username or password'), failure: true }
        }
        // Never 401 when the homeserver could not answer: the app would treat a good password as bad.
        const retry = e instanceof MatrixError && e.retryAfterMs !== undefined ? Math.ceil(e.retryAfterMs / 1000) : undefined
        log.error({ username, err: (e as Error).message }, 'homeserver could not check the password')
        throw unavailable('The homeserver could not check the credentials; try again later', retry)
      }
      if (session.accessToken !== undefined) {
        try {
          await o.matrix.logout(session.accessToken)
        } catch (e) {
          log.warn({ user_id: session.userId, session: tokenHash(session.accessToken), err: (e as Error).message }, 'logout of the password-check session failed')
        }
      }
      return { ok: true, userId: session.userId }
    },
  }
}
