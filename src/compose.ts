/**
 * Builds the running service from a Config: store, clients, workers, app. main.ts uses it with the
 * real world; tests pass fakes for fetch, the clock, timings and the log stream.
 */
import type { DestinationStream } from 'pino'
import { createApp } from './app.ts'
import { missingFor, type Config } from './config.ts'
import { createDedupe } from './gateway/dedupe.ts'
import { createDeliveryJournal } from './gateway/journal.ts'
import { createPusherMigrator } from './gateway/migrate-pushers.ts'
import { createNotifyHandler } from './gateway/notify.ts'
import { createLogger } from './log.ts'
import { createPasswordVerifier, matrixPasswordBackend } from './matrix/auth.ts'
import { ctiPasswordBackend } from './cti/backend.ts'
import type { MappingEntry } from './report/mapping.ts'
import { createMatrixClient, type FetchFn } from './matrix/client.ts'
import { createMetrics } from './metrics.ts'
import { createPnmClient } from './pnm/client.ts'
import { createPusherWorker } from './pusher/worker.ts'
import { createReportService } from './report/service.ts'
import { openSqliteStore } from './store/sqlite.ts'
import type { TokenStore } from './store/types.ts'

export interface ComposeOptions {
  fetch?: FetchFn
  now?: () => number
  logDestination?: DestinationStream
  store?: TokenStore
  pusherRetryBaseMs?: number
  pusherRetryMaxMs?: number
  pnmRetryDelaysMs?: readonly number[]
  notifyDeadlineMs?: number
  defaultMetrics?: boolean
  storeBusyWaitMs?: number
  /** How long a report waits for its first pusher attempt before the app is answered. */
  reportPusherWaitMs?: number
  /** How often the delivery journal is written. */
  journalFlushMs?: number
}

/**
 * SQLite's busy handler blocks the whole process (bun:sqlite is synchronous), so the service
 * waits for another process's lock only briefly there; reports wait longer between tries.
 */
export const SERVICE_BUSY_TIMEOUT_MS = 50

export function compose(config: Config, options: ComposeOptions = {}) {
  const now = options.now ?? Date.now
  const log = createLogger(config, options.logDestination)
  const metrics = createMetrics({ defaults: options.defaultMetrics })
  const store = options.store ?? openSqliteStore(config.dbPath, { busyTimeoutMs: SERVICE_BUSY_TIMEOUT_MS })
  const matrix =
    config.homeserverUrl === undefined
      ? undefined
      : createMatrixClient({ homeserverUrl: config.homeserverUrl, asToken: config.asToken, timeoutMs: config.matrixTimeoutMs, fetch: options.fetch })
  const pnm = createPnmClient({ url: config.pnmUrl, maxInflight: config.pnmMaxInflight, fetch: options.fetch })
  const worker = createPusherWorker({
    store,
    matrix,
    config,
    log: log.child({ component: 'pushers' }),
    metrics,
    now,
    retryBaseMs: options.pusherRetryBaseMs,
    retryMaxMs: options.pusherRetryMaxMs,
  })
  const limits = {
    failuresPerPair: config.authFailuresPerMinute,
    failuresPerUser: config.authUserFailuresPerMinute,
    checksPerAddress: config.authChecksPerMinute,
    maxInflight: config.authMaxInflight,
  }
  const cti =
    config.authMode === 'ext' && config.extAuthUrl !== undefined && config.serverName !== undefined
      ? ctiPasswordBackend({ url: config.extAuthUrl, timeoutMs: config.extAuthTimeoutMs, serverName: config.serverName, mapping: config.mapping, log, fetch: options.fetch })
      : undefined
  const backend =
    config.authMode === 'ext'
      ? cti
      : matrix && config.authMode === 'matrix'
        ? matrixPasswordBackend({ matrix, log, serverName: config.serverName })
        : undefined
  const verifier = backend && createPasswordVerifier({ backend, log, metrics, now, limits, cacheTtlMs: config.authCacheTtlMs })
  /**
   * Who is who beyond the account's own user: MAPPING_FILE, and with AUTH_MODE=ext the CTI's users
   * as last listed. One MappingEntry shape for push and for the messaging addresses.
   */
  const directory = { entries: (): readonly MappingEntry[] => cti?.directory.entries() ?? config.mapping }
  const reports = createReportService({ config, store, verifier, worker, log, metrics, now, storeBusyWaitMs: options.storeBusyWaitMs, inlineWaitMs: options.reportPusherWaitMs })
  const journal = createDeliveryJournal({ store, log: log.child({ component: 'journal' }), flushMs: options.journalFlushMs })
  const migrator = createPusherMigrator({
    store,
    worker,
    log: log.child({ component: 'pushers' }),
    enabled: config.pushGatewayUrl !== undefined && missingFor(config).pushers === undefined,
  })
  const notify = createNotifyHandler({
    config,
    store,
    pnm,
    journal,
    migrator,
    dedupe: createDedupe({ now }),
    log,
    metrics,
    now,
    retryDelaysMs: options.pnmRetryDelaysMs,
    deadlineMs: options.notifyDeadlineMs,
  })
  let draining = false
  const app = createApp({
    config,
    store,
    log,
    metrics,
    notify,
    reports,
    draining: () => draining,
    serveMetrics: config.metricsAddress === undefined,
  })
  return {
    app,
    store,
    worker,
    journal,
    directory,
    matrix,
    log,
    metrics,
    startDraining: () => {
      draining = true
    },
  }
}

export type Service = ReturnType<typeof compose>
