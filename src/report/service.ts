/**
 * What happens to a token report: who the account is on Matrix, the row stored, and the pusher
 * calls it owes (queued in the same transaction, then tried once before the app gets its answer;
 * failures are retried in the background by the pusher worker).
 */
import type { Logger } from 'pino'
import { missingFor, type Config } from '../config.ts'
import { AppError, notConfigured, unauthorized, unavailable } from '../errors.ts'
import type { PasswordVerifier } from '../matrix/auth.ts'
import type { Metrics } from '../metrics.ts'
import type { PusherWorker } from '../pusher/worker.ts'
import { tokenHash } from '../secrets.ts'
import { isBusyError } from '../store/sqlite.ts'
import type { Registration, TokenStore } from '../store/types.ts'
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
}

export type ReportKind = 'report' | 'removal'

export function createReportService(deps: ReportServiceDeps) {
  const { config } = deps
  const missing = missingFor(config)
  const pushersEnabled = config.pushGatewayUrl !== undefined

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
      const now = deps.now()
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
          )
        } else {
          // Without a stored row the report itself says which pusher to remove.
          const fromReport: Registration | undefined =
            report.tokenMsgs === undefined
              ? undefined
              : { ...report, matrixUserId: userId, createdAt: now, updatedAt: now }
          const plan = planPusherCalls(pushersEnabled)
          return deps.store.removeRegistration(report.selector, now, (previous, next) => plan(previous ?? fromReport, next))
        }
      }
      let result: ReturnType<typeof write>
      const giveUpAt = performance.now() + (deps.storeBusyWaitMs ?? STORE_BUSY_WAIT_MS)
      for (let pause = 25; ; pause = Math.min(pause * 2, 400)) {
        try {
          result = write()
          break
        } catch (e) {
          if (isBusyError(e) && performance.now() + pause < giveUpAt) {
            await Bun.sleep(pause)
            continue
          }
          log.error({ selector: report.selector, err: (e as Error).message }, 'token store unavailable; report not stored')
          throw unavailable('The token store is unavailable; try again later', 5)
        }
      }
      deps.metrics.tokenReports.inc({ kind, outcome: 'ok' })
      log.info(
        {
          selector: report.selector,
          user_id: userId,
          pushkey: report.tokenMsgs === undefined ? undefined : tokenHash(report.tokenMsgs),
          previous_pushkey: describe(result.previous),
          pusher_calls: result.jobs.map((j) => j.action),
        },
        kind === 'report' ? 'token report stored' : 'account removed',
      )
      if (result.jobs.length > 0) {
        // Past the wait the app gets its answer; the worker carries on (runSelector never rejects).
        await withTimeout(deps.worker.runSelector(report.selector, log.bindings().req_id as string | undefined), deps.inlineWaitMs ?? INLINE_PUSHER_WAIT_MS, 'the first pusher attempt').catch(() => {})
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
