/**
 * Builds the running service from a Config: store, clients, workers, app. main.ts uses it with the
 * real world; tests pass fakes for fetch, the clock, timings and the log stream.
 */
import type { DestinationStream } from 'pino'
import { createApp } from './app.ts'
import { missingFor, type Config } from './config.ts'
import { createDeliveryJournal } from './gateway/journal.ts'
import { createPusherMigrator } from './gateway/migrate-pushers.ts'
import { createTransactionHandler } from './appservice/transactions.ts'
import { createEnrolment } from './messages/enrol.ts'
import { createFetchService } from './messages/fetch.ts'
import type { MessageIndex } from './messages/index-store.ts'
import { openSqliteIndex } from './messages/sqlite-index.ts'
import { createPostgresIndex } from './messages/pg-index.ts'
import { createJobWorker } from './messages/jobs.ts'
import { createPushView } from './messages/push-view.ts'
import { createDedupe, DEDUPE_TTL_MS, inProcessFilter, type DuplicateFilter } from './gateway/dedupe.ts'
import type { SQL } from 'bun'
import { createSharedDuplicateFilter } from './gateway/dedupe-shared.ts'
import { createPgFailureLedger } from './store/pg-auth.ts'
import { createNotifyHandler, duplicateKey, NOTIFY_DEADLINE_MS } from './gateway/notify.ts'
import { createLogger } from './log.ts'
import type { AddressBook } from './addresses.ts'
import { createPasswordVerifier, matrixPasswordBackend } from './matrix/auth.ts'
import { ctiPasswordBackend } from './cti/backend.ts'
import type { MappingEntry } from './report/mapping.ts'
import { createMatrixClient, type FetchFn } from './matrix/client.ts'
import { createMetrics } from './metrics.ts'
import { createPnmClient } from './pnm/client.ts'
import { createPusherWorker } from './pusher/worker.ts'
import { createReportService } from './report/service.ts'
import { notConfigured } from './errors.ts'
import { openSqliteOutbox, postgresOutbox } from './messages/outbox.ts'
import { createSendService } from './messages/send.ts'
import { createSendIndex } from './messages/send-index.ts'
import { openSqliteStore } from './store/sqlite.ts'
import type { TokenStore } from './store/types.ts'
import { bounded } from './store/bounded.ts'

export interface ComposeOptions {
  fetch?: FetchFn
  now?: () => number
  logDestination?: DestinationStream
  store?: TokenStore
  /** The duplicate filter; default: shared through `postgres` when given, else one in this process. */
  dedupe?: DuplicateFilter
  /** The PostgreSQL pool of the store: what the instances share beyond the store goes through it too. */
  postgres?: SQL
  /** How long an operation on `postgres` may take (store/bounded.ts; default DATABASE_TIMEOUT_MS). */
  databaseTimeoutMs?: number
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
  /** Waits between retries of a failed /send, and the longest a send may take (tests shorten them). */
  sendRetryDelaysMs?: readonly number[]
  sendBudgetMs?: number
  index?: MessageIndex
}

/**
 * SQLite's busy handler blocks the whole process (bun:sqlite is synchronous), so the service
 * waits for another process's lock only briefly there; reports wait longer between tries.
 */
export const SERVICE_BUSY_TIMEOUT_MS = 50

export function compose(config: Config, options: ComposeOptions = {}) {
  const now = options.now ?? Date.now
  const log = createLogger(config, options.logDestination)
  const pnm = createPnmClient({ url: config.pnmUrl, maxInflight: config.pnmMaxInflight, fetch: options.fetch })
  const metrics = createMetrics({ defaults: options.defaultMetrics, pnmInflight: pnm.inflight })
  const store = options.store ?? openSqliteStore(config.dbPath, { busyTimeoutMs: SERVICE_BUSY_TIMEOUT_MS })
  const matrix =
    config.homeserverUrl === undefined
      ? undefined
      : createMatrixClient({ homeserverUrl: config.homeserverUrl, asToken: config.asToken, timeoutMs: config.matrixTimeoutMs, fetch: options.fetch })
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
  const verifier =
    backend &&
    createPasswordVerifier({
      backend,
      log,
      metrics,
      now,
      limits,
      cacheTtlMs: config.authCacheTtlMs,
      ledger: options.postgres ? bounded(createPgFailureLedger(options.postgres, now), 'the database', options.databaseTimeoutMs) : undefined,
    })
  /**
   * Who is who beyond the account's own user: MAPPING_FILE, and with AUTH_MODE=ext the CTI's users
   * as last listed. One MappingEntry shape for push and for the messaging addresses.
   */
  const directory = { entries: (): readonly MappingEntry[] => cti?.directory.entries() ?? config.mapping }
  const messaging = composeMessaging(config, { log, now, matrix, verifier, directory, index: options.index, postgres: options.postgres, databaseTimeoutMs: options.databaseTimeoutMs, store, jobRetryBaseMs: options.pusherRetryBaseMs })
  const reports = createReportService({
    config,
    store,
    verifier,
    worker,
    log,
    metrics,
    now,
    storeBusyWaitMs: options.storeBusyWaitMs,
    inlineWaitMs: options.reportPusherWaitMs,
    enrol: messaging.index && messaging.enrol,
  })
  // On SQLite the filter lives in this process: a new process learns the last hour's deliveries
  // from the journal (restoreDuplicateFilter), so a retry Synapse sends across a restart is not
  // sent again. On PostgreSQL the filter is the database's.
  const localDedupe = options.dedupe === undefined && options.postgres === undefined ? createDedupe({ now }) : undefined
  const journal = createDeliveryJournal({ store, log: log.child({ component: 'journal' }), flushMs: options.journalFlushMs })
  const migrator = createPusherMigrator({
    store,
    worker,
    log: log.child({ component: 'pushers' }),
    enabled: config.pushGatewayUrl !== undefined && missingFor(config).pushers === undefined,
  })
  const notify = createNotifyHandler({
    pushView: messaging.pushView,
    config,
    store,
    pnm,
    journal,
    migrator,
    dedupe:
      options.dedupe ??
      (localDedupe
        ? inProcessFilter(localDedupe)
        : bounded(createSharedDuplicateFilter(options.postgres!, { now, sendingMs: (options.notifyDeadlineMs ?? NOTIFY_DEADLINE_MS) + 5_000 }), 'the database', options.databaseTimeoutMs)),
    log,
    metrics,
    now,
    retryDelaysMs: options.pnmRetryDelaysMs,
    deadlineMs: options.notifyDeadlineMs,
  })
  const send = composeSend(config, { log, now, matrix, verifier, messaging, postgres: options.postgres, databaseTimeoutMs: options.databaseTimeoutMs, retryDelaysMs: options.sendRetryDelaysMs, budgetMs: options.sendBudgetMs })
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
    sendMessage: send.send,
    messaging: { missing: messaging.missing, hsToken: config.hsToken, transactions: messaging.transactions, fetch: messaging.fetch },
  })
  return {
    app,
    store,
    outbox: send.outbox,
    index: messaging.index,
    messaging,
    worker,
    journal,
    directory,
    matrix,
    log,
    metrics,
    startDraining: () => {
      draining = true
    },
    /** Before the first notification: the journal's deliveries of the last hour into the filter; how many. */
    async restoreDuplicateFilter(): Promise<number> {
      if (!localDedupe) return 0
      const rows = await store.deliveredSince(now() - DEDUPE_TTL_MS)
      for (const r of rows) localDedupe.remember(duplicateKey(r.pushkey, r.selector), r.eventId, r.at)
      return rows.length
    },
  }
}

export type Service = ReturnType<typeof compose>

/**
 * Messaging, on when the homeserver URL, MATRIX_AS_TOKEN and MATRIX_HS_TOKEN are all set:
 * the message index, the transaction handler Synapse feeds, Fetch Messages and enrolment.
 */
function composeMessaging(
  config: Config,
  deps: {
    log: ReturnType<typeof createLogger>
    now: () => number
    matrix?: ReturnType<typeof createMatrixClient>
    verifier?: ReturnType<typeof createPasswordVerifier>
    /** Who is who: MAPPING_FILE, and with AUTH_MODE=ext the CTI's users (read at each use). */
    directory: { entries(): readonly MappingEntry[] }
    index?: MessageIndex
    postgres?: SQL
    databaseTimeoutMs?: number
    store: TokenStore
    jobRetryBaseMs?: number
  },
) {
  const missing = missingFor(config).messaging
  // On PostgreSQL the index lives in the database every instance shares, not in PUSH_TOKEN_DB_PATH.
  const index =
    missing === undefined
      ? (deps.index ?? (deps.postgres ? bounded(createPostgresIndex(deps.postgres), 'the database', deps.databaseTimeoutMs) : openSqliteIndex(config.dbPath)))
      : undefined
  const log = deps.log.child({ component: 'messaging' })
  // The appservice's own user (sender_localpart) is never enrolled; whoami with the as_token names it.
  let senderUserId: string | undefined
  if (index && deps.matrix) {
    deps.matrix.whoami().then(
      (r) => (senderUserId = r.userId),
      (e) => log.warn({ err: (e as Error).message }, "could not learn the appservice's own user (whoami)"),
    )
  }
  // A getter: with AUTH_MODE=ext the CTI's list changes at each good password check, and the
  // addresses of pushes, Fetch Messages and Send Message follow it.
  const book: AddressBook = {
    serverName: config.serverName,
    get mapping() {
      return deps.directory.entries()
    },
  }
  const context = () => ({
    book,
    senderUserId,
    serverName: config.serverName,
    autoJoinDirect: config.autoJoinDirect,
    oldestTs: deps.now() - config.messageRetentionDays * 86_400_000,
  })
  const jobs = index && deps.matrix ? createJobWorker({ index, matrix: deps.matrix, log, now: deps.now, context, retryBaseMs: deps.jobRetryBaseMs }) : undefined
  const wake = { afterCommit: () => jobs?.kick() }
  const enrol = index ? createEnrolment({ index, senderUserId: () => senderUserId, now: deps.now, afterQueue: () => wake.afterCommit() }) : async () => {}
  const transactions = index
    ? createTransactionHandler({
        index,
        log,
        now: deps.now,
        context,
        afterCommit: () => wake.afterCommit(),
      })
    : undefined
  const pushView = index ? createPushView({ index, matrix: deps.matrix, book, now: deps.now, context }) : undefined
  const fetchService = createFetchService({
    index: index!,
    verifier: deps.verifier,
    authMode: config.authMode,
    missing,
    book,
    enrol,
    now: deps.now,
  })
  let pruner: ReturnType<typeof setInterval> | undefined
  const prune = async () => {
    if (!index) return
    try {
      const { messages } = await index.prune(deps.now() - config.messageRetentionDays * 86_400_000)
      if (messages > 0) log.info({ messages, retention_days: config.messageRetentionDays }, 'old messages left the index')
    } catch (e) {
      log.error({ err: (e as Error).message }, 'could not prune the message index')
    }
  }
  return {
    missing,
    index,
    book,
    context,
    transactions,
    enrol,
    jobs,
    fetch: fetchService.fetch,
    pushView,
    /** Starts the jobs, prunes hourly, and enrols the users who reported a token before messaging was on. */
    async start() {
      if (!index) return
      jobs?.start()
      pruner = setInterval(prune, 3_600_000)
      // In the background: a large token table must not delay the start.
      const enrolExisting = async () => {
        await prune()
        // Rows imported from the Go proxy have no Matrix user until their app reports again.
        const users = new Set((await deps.store.listRegistrations()).flatMap((r) => (r.matrixUserId === undefined ? [] : [r.matrixUserId])))
        for (const userId of users) await enrol(userId, log).catch((e) => log.error({ user_id: userId, err: (e as Error).message }, 'could not enrol the user for messaging'))
      }
      void enrolExisting()
    },
    async stop() {
      if (pruner) clearInterval(pruner)
      await jobs?.stop()
    },
  }
}

/** Send Message: on when messaging is; it reads and writes the same message index. */
function composeSend(
  config: Config,
  deps: {
    log: ReturnType<typeof createLogger>
    now: () => number
    matrix?: ReturnType<typeof createMatrixClient>
    verifier?: ReturnType<typeof createPasswordVerifier>
    messaging: ReturnType<typeof composeMessaging>
    postgres?: SQL
    databaseTimeoutMs?: number
    retryDelaysMs?: readonly number[]
    budgetMs?: number
  },
) {
  const { index, missing, context, enrol, book } = deps.messaging
  if (index === undefined || deps.matrix === undefined) {
    return {
      outbox: undefined,
      send: async () => {
        throw notConfigured(missing ?? 'MATRIX_HOMESERVER_URL', 'Messaging')
      },
    }
  }
  const outbox = deps.postgres ? bounded(postgresOutbox(deps.postgres), 'the database', deps.databaseTimeoutMs) : openSqliteOutbox(config.dbPath, { inTurn: index.inTurn })
  const service = createSendService({
    matrix: deps.matrix,
    index: createSendIndex({ index, matrix: deps.matrix, context, now: deps.now }),
    outbox,
    verifier: deps.verifier,
    authMode: config.authMode,
    book,
    enrol,
    now: deps.now,
    dedupeSeconds: config.sendDedupeSeconds,
    dedupeSecret: config.asToken,
    retryDelaysMs: deps.retryDelaysMs,
    budgetMs: deps.budgetMs,
  })
  return { outbox, send: service.send }
}
