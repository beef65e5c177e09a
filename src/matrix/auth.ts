/**
 * AUTH_MODE=matrix: an Acrobits account's username and password are checked with a password
 * login on the homeserver, whose answer names the Matrix user; the session is logged out at once.
 * Failed attempts are limited per username and per client address, so that the endpoint cannot be
 * used to guess passwords; a good answer is cached briefly, keyed by username and a keyed hash of
 * the password (never by username alone, or any password would pass).
 */
import { createHmac, randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import { rateLimited, unauthorized, unavailable, type AppError } from '../errors.ts'
import type { Metrics } from '../metrics.ts'
import { tokenHash } from '../secrets.ts'
import { MatrixError, type MatrixClient } from './client.ts'

export const AUTH_CACHE_TTL_MS = 5 * 60_000
const WINDOW_MS = 60_000
const MAX_TRACKED = 100_000

/** Sliding one-minute window of failures per key; memory bounded by MAX_TRACKED keys. */
export function createFailureLimiter(limit: number, now: () => number) {
  const failures = new Map<string, number[]>()
  const recent = (key: string) => {
    const t = now()
    const list = (failures.get(key) ?? []).filter((at) => at > t - WINDOW_MS)
    if (list.length === 0) failures.delete(key)
    else failures.set(key, list)
    return list
  }
  return {
    /** Seconds to wait when `key` has used up its failures, else undefined. */
    blockedFor(key: string): number | undefined {
      const list = recent(key)
      if (list.length < limit) return undefined
      return Math.max(1, Math.ceil((list[list.length - limit]! + WINDOW_MS - now()) / 1000))
    },
    fail(key: string) {
      const list = recent(key)
      list.push(now())
      failures.delete(key)
      failures.set(key, list)
      if (failures.size > MAX_TRACKED) failures.delete(failures.keys().next().value!)
    },
  }
}

export interface PasswordVerifier {
  /** `log`: the request's logger, so that its lines carry the request's req_id. */
  verify(username: string, password: string, clientAddress: string | undefined, log?: Logger): Promise<string>
}

export function createPasswordVerifier(o: {
  matrix: MatrixClient
  log: Logger
  metrics: Metrics
  now: () => number
  failuresPerMinute: number
  cacheTtlMs?: number
  /** Longest homeserver rate-limit wait a password check sits out before answering 503. */
  maxRateLimitWaitMs?: number
}): PasswordVerifier {
  const ttl = o.cacheTtlMs ?? AUTH_CACHE_TTL_MS
  const maxRateLimitWaitMs = o.maxRateLimitWaitMs ?? 10_000
  const key = randomBytes(32)
  const cache = new Map<string, { userId: string; until: number }>()
  const limiter = createFailureLimiter(o.failuresPerMinute, o.now)
  const cacheKey = (username: string, password: string) =>
    `${username}\u0000${createHmac('sha256', key).update(password).digest('base64')}`

  // Synapse limits logins per source address (rc_login.address: a burst of 3, then one every ~6 s),
  // and every phone's check comes from this proxy's address: a short wait beats a 503.
  async function loginWaitingOutRateLimit(username: string, password: string, log: Logger) {
    try {
      return await o.matrix.login(username, password)
    } catch (e) {
      const wait = e instanceof MatrixError && e.isRateLimit ? e.retryAfterMs : undefined
      if (wait === undefined || wait > maxRateLimitWaitMs) throw e
      log.info({ username, retry_after_ms: wait }, 'homeserver rate-limits logins; waiting once')
      await Bun.sleep(wait)
      return o.matrix.login(username, password)
    }
  }

  function refuse(reason: string, error: AppError): never {
    o.metrics.authFailures.inc({ reason })
    throw error
  }

  return {
    async verify(username, password, clientAddress, log = o.log) {
      const ck = cacheKey(username, password)
      const hit = cache.get(ck)
      if (hit && hit.until > o.now()) return hit.userId

      const userKey = `u:${username.toLowerCase()}`
      const addressKey = clientAddress === undefined ? undefined : `a:${clientAddress}`
      const wait = Math.max(limiter.blockedFor(userKey) ?? 0, addressKey ? (limiter.blockedFor(addressKey) ?? 0) : 0)
      if (wait > 0) {
        log.warn({ username, client: clientAddress, retry_after_s: wait }, 'too many failed logins; refusing for now')
        refuse('rate_limited', rateLimited('Too many failed attempts; try again later', wait))
      }

      let session: { userId: string; accessToken?: string }
      try {
        session = await loginWaitingOutRateLimit(username, password, log)
      } catch (e) {
        if (e instanceof MatrixError && !e.isTransient) {
          limiter.fail(userKey)
          if (addressKey) limiter.fail(addressKey)
          log.info({ username, client: clientAddress, errcode: e.errcode, status: e.status }, 'login refused by the homeserver')
          refuse('invalid_credentials', unauthorized('Invalid username or password'))
        }
        // Never 401 when the homeserver could not answer: the app would treat a good password as bad.
        const retry = e instanceof MatrixError && e.retryAfterMs !== undefined ? Math.ceil(e.retryAfterMs / 1000) : undefined
        log.error({ username, err: (e as Error).message }, 'homeserver could not check the password')
        refuse('homeserver_unavailable', unavailable('The homeserver could not check the credentials; try again later', retry))
      }

      if (session.accessToken !== undefined) {
        try {
          await o.matrix.logout(session.accessToken)
        } catch (e) {
          log.warn({ user_id: session.userId, session: tokenHash(session.accessToken), err: (e as Error).message }, 'logout of the password-check session failed')
        }
      }
      if (cache.size >= MAX_TRACKED) cache.delete(cache.keys().next().value!)
      cache.set(ck, { userId: session.userId, until: o.now() + ttl })
      return session.userId
    },
  }
}
