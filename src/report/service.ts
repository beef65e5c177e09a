/**
 * What happens to a token report: who the account is on Matrix, the row stored, and the pusher
 * calls it owes (queued in the same transaction, then tried once before the app gets its answer;
 * failures are retried in the background by the pusher worker).
 * A row belongs to the Matrix user who stored it: another user's report for its selector is refused
 * (403) unless it carries the row's current message token (the same device switching accounts),
 * and another user's removal changes nothing. Each user has at most MAX_DEVICES_PER_USER rows and
 * REPORTS_PER_MINUTE requests a minute.
 */
import type { Logger } from 'pino'
import { missingFor, type Config } from '../config.ts'
import { AppError, forbidden, notConfigured, rateLimited, unauthorized, unavailable } from '../errors.ts'
import type { PasswordVerifier } from '../matrix/auth.ts'
import type { Metrics } from '../metrics.ts'
import type { PusherWorker } from '../pusher/worker.ts'
import { constantTimeEqual, tokenHash } from '../secrets.ts'
import { slidingWindow } from '../sliding-window.ts'
import { describeStoreError, isRetryableStoreError } from '../store/open.ts'
import type { ChangeGuard, Registration, TokenStore } from '../store/types.ts'
import { withTimeout } from '../timeout.ts'
import { resolveMatrixUser } from './identity.ts'
import type { Report } from './parse.ts'
import { planPusherCalls } from './plan.ts'

/** The app waits for its answer no longer than this for the first pusher attempt. */
export const INLINE_PUSHER_WAIT_MS = 5_000
/**
 * How long a report waits for a database another process has locked. It waits here, between
 * short tries, not in SQLite's busy handler: bun:sqlite is synchronous, and a 5 s busy_timeout
 * froze every request of the process (notifications and /health too) once per waiting report.
 */
export const STORE_BUSY_WAIT_MS = 5_000

export interface ReportServiceDeps {
  config: Config
  store: TokenStore
  verifier?: PasswordVerifier
  worker: PusherWorker
  log: Logger
  metrics: Metrics
  now: () => number
  inlineWaitMs?: number
  storeBusyWaitMs?: number
  /** Messaging: a user who reports a push token is enrolled (their messages get indexed). */
  enrol?: (userId: string, log: Logger) => Promise<void>
}

export type ReportKind = 'report' | 'removal'

export function createReportService(deps: ReportServiceDeps) {
  const { config } = deps
  const missing = missingFor(config)
  const pushersEnabled = config.pushGatewayUrl !== undefined
  const recentReports = slidingWindow(deps.now, config.reportsPerMinute + 1)

  /** Seconds to wait when this user has used up REPORTS_PER_MINUTE, else undefined (and counted). */
  function reportBudget(userId: string): number | undefined {
    if (recentReports.count(userId) >= config.reportsPerMinute) return recentReports.retryAfter(userId, config.reportsPerMinute)
    recentReports.add(userId)
    return undefined
  }

  async function resolveUser(report: Report, clientAddress: string | undefined, log: Logger): Promise<string> {
    if (config.authMode === 'none') {
      const resolved = resolveMatrixUser(report, config.mapping, config.serverName)
      if (!resolved.ok) throw resolved.error
      return resolved.userId
    }
    if (report.username === undefined || report.password === undefined) {
      deps.metrics.authFailures.inc({ reason: 'missing_credentials' })
      throw unauthorized('username and password are required')
    }
    if (missing.login !== undefined || deps.verifier === undefined) {
      throw notConfigured(missing.login ?? 'MATRIX_HOMESERVER_URL', 'Checking the password')
    }
    return deps.verifier.verify(report.username, report.password, clientAddress, log)
  }

  function describe(r: Registration | undefined) {
    return r?.tokenMsgs === undefined ? undefined : tokenHash(r.tokenMsgs)
  }

  async function handle(kind: ReportKind, report: Report, clientAddress: string | undefined, log: Logger) {
    try {
      const userId = await resolveUser(report, clientAddress, log)
      if (missing.pushers !== undefined) throw notConfigured(missing.pushers, 'Registering pushers (PROXY_URL is set)')
      const wait = reportBudget(userId)
      if (wait !== undefined) {
        log.warn({ selector: report.selector, user_id: userId, retry_after_s: wait }, 'too many token reports for this user (REPORTS_PER_MINUTE)')
        throw rateLimited('Too many token reports for this account; try again later', wait)
      }
      const now = deps.now()
      const ownedByReporter: ChangeGuard = (previous) => previous.matrixUserId === userId
      // Knowing the row's current message token is having the device: the same phone, another account.
      const sameDevice: ChangeGuard = (previous) =>
        report.tokenMsgs !== undefined && previous.tokenMsgs !== undefined && constantTimeEqual(report.tokenMsgs, previous.tokenMsgs)
      // A row imported from the Go proxy has no owner yet: the device that holds its token claims
      // it, and so does anyone once its token is gone (the PNM forgot it); the selector alone
      // proves nothing.
      const unclaimedImport: ChangeGuard = (previous) => previous.matrixUserId === undefined && previous.tokenMsgs === undefined
      const write = () => {
        if (kind === 'report') {
          return deps.store.saveRegistration(
            {
              selector: report.selector,
              username: report.username,
              matrixUserId: userId,
              tokenMsgs: report.tokenMsgs,
              appIdMsgs: report.appIdMsgs,
              tokenCalls: report.tokenCalls,
              appIdCalls: report.appIdCalls,
            },
            now,
            planPusherCalls(pushersEnabled),
            { guard: (previous) => ownedByReporter(previous) || sameDevice(previous) || unclaimedImport(previous), maxPerUser: config.maxDevicesPerUser },
          )
        } else {
          // Without a stored row the report itself says which pusher to remove.
          const fromReport: Registration | undefined =
            report.tokenMsgs === undefined
              ? undefined
              : { ...report, matrixUserId: userId, createdAt: now, updatedAt: now }
          const plan = planPusherCalls(pushersEnabled)
          const imported: ChangeGuard = (previous) => previous.matrixUserId === undefined && (sameDevice(previous) || unclaimedImport(previous))
          return deps.store.removeRegistration(report.selector, now, (previous, next, sharing) => plan(previous ?? fromReport, next, sharing), (previous) => ownedByReporter(previous) || imported(previous))
        }
      }
      let result: Awaited<ReturnType<typeof write>>
      const giveUpAt = performance.now() + (deps.storeBusyWaitMs ?? STORE_BUSY_WAIT_MS)
      for (let pause = 25; ; pause = Math.min(pause * 2, 400)) {
        try {
          result = await write()
          break
        } catch (e) {
          if (isRetryableStoreError(e) && performance.now() + pause < giveUpAt) {
            await Bun.sleep(pause)
            continue
          }
          log.error({ selector: report.selector, err: describeStoreError(deps.config, e) }, 'token store unavailable; report not stored')
          throw unavailable('The token store is unavailable; try again later', 5)
        }
      }
      if (result.refused) {
        // No token in this line: the two users and the selector say what happened.
        const fields = { selector: report.selector, user_id: userId, owner_user_id: result.previous?.matrixUserId }
        if (kind === 'report') {
          log.warn(fields, 'report for a selector stored for another Matrix user refused')
          throw forbidden('This selector is registered to another Matrix user')
        }
        log.warn(fields, 'removal of a selector stored for another Matrix user ignored')
        deps.metrics.tokenReports.inc({ kind, outcome: 'ignored' })
        return
      }
      deps.metrics.tokenReports.inc({ kind, outcome: 'ok' })
      log.info(
        {
          selector: report.selector,
          user_id: userId,
          previous_user_id: result.previous && result.previous.matrixUserId !== userId ? result.previous.matrixUserId : undefined,
          pushkey: report.tokenMsgs === undefined ? undefined : tokenHash(report.tokenMsgs),
          previous_pushkey: describe(result.previous),
          pusher_calls: result.jobs.map((j) => j.action),
        },
        kind === 'report' ? 'token report stored' : 'account removed',
      )
      for (const row of result.evicted) {
        log.info(
          { selector: row.selector, user_id: row.matrixUserId, pushkey: describe(row), limit: config.maxDevicesPerUser },
          'least recently reported registration removed: MAX_DEVICES_PER_USER reached',
        )
      }
      if (kind === 'report' && deps.enrol) {
        // The token is stored whatever happens here; the next report or fetch enrols again.
        await deps.enrol(userId, log).catch((e) => log.error({ user_id: userId, err: (e as Error).message }, 'could not enrol the user for messaging'))
      }
      if (result.jobs.length > 0) {
        // Every selector a call was queued under: removing one of two accounts of a user on one phone
        // queues the other's pusher again. Answered only after it, a notify that Synapse sends next
        // names the remaining account; before, it named the removed one, was rejected, and
        // Synapse deleted the pusher the remaining account had just been given.
        const selectors = [...new Set([report.selector, ...result.jobs.map((j) => j.selector), ...result.evicted.map((r) => r.selector)])]
        // Past the wait the app gets its answer; the worker carries on (runSelector never rejects).
        const reqId = log.bindings().req_id as string | undefined
        await withTimeout(Promise.all(selectors.map((s) => deps.worker.runSelector(s, reqId))), deps.inlineWaitMs ?? INLINE_PUSHER_WAIT_MS, 'the first pusher attempt').catch(() => {})
      }
    } catch (e) {
      const outcome = e instanceof AppError ? String(e.status) : 'error'
      deps.metrics.tokenReports.inc({ kind, outcome })
      throw e
    }
  }

  return {
    report: (report: Report, clientAddress: string | undefined, log: Logger) => handle('report', report, clientAddress, log),
    remove: (report: Report, clientAddress: string | undefined, log: Logger) => handle('removal', report, clientAddress, log),
  }
}
