/**
 * What Synapse feeds the application service: transactions of events (FIELD-GUIDE §7). A
 * transaction is answered only once its events are committed, applied in the order given; a txnId
 * already committed is a no-op; a copy that arrives while the first is still running (Synapse
 * resends after 60 s without an answer) waits for that one. One malformed or unexpected event is
 * logged and skipped, never blocking the queue; a storage failure makes Synapse retry the whole.
 */
import type { Logger } from 'pino'
import { AppError, badRequest, unavailable } from '../errors.ts'
import { constantTimeEqual } from '../secrets.ts'
import type { MessageIndex } from '../messages/index-store.ts'
import { ingestEvent, parseClientEvent, type IngestContext, type IngestOutcome } from '../messages/ingest.ts'
import { cachedTx } from '../messages/tx-cache.ts'

/** Synapse sends at most 100 events a transaction; an 8 MiB body leaves room for large ones. */
export const TRANSACTION_BODY_LIMIT = 8 * 1024 * 1024

/**
 * The hs_token check of every route Synapse calls: 401 without credentials, 403 when wrong.
 * Synapse sends `Authorization: Bearer`; before spec v1.4 it sent `?access_token=`, still accepted.
 */
export function assertHomeserver(request: Request, hsToken: string) {
  const header = request.headers.get('authorization')
  const bearer = header?.match(/^Bearer\s+(.+)$/i)?.[1]
  const token = bearer ?? new URL(request.url).searchParams.get('access_token') ?? undefined
  if (token === undefined || token === '') throw new AppError('M_UNAUTHORIZED', 401, 'Missing homeserver token (Authorization: Bearer <hs_token>)')
  if (!constantTimeEqual(token, hsToken)) throw new AppError('M_FORBIDDEN', 403, 'Invalid homeserver token (MATRIX_HS_TOKEN)')
}

/** The body: only `events` is read; ephemeral and to-device keys are ignored. */
export function parseTransactionBody(text: string): unknown[] {
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    throw new AppError('M_NOT_JSON', 400, 'Transaction body is not valid JSON')
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw badRequest('Transaction body must be a JSON object')
  const events = (parsed as { events?: unknown }).events
  if (!Array.isArray(events)) throw badRequest('events: Expected array')
  return events
}

export interface TransactionDeps {
  index: MessageIndex
  log: Logger
  now: () => number
  context: () => Omit<IngestContext, 'now'>
  /** Called after a transaction committed (jobs it queued can start). */
  afterCommit?: () => void
  observe?: (outcome: IngestOutcome | 'skipped') => void
}

export type TransactionHandler = ReturnType<typeof createTransactionHandler>

export function createTransactionHandler(deps: TransactionDeps) {
  const running = new Map<string, Promise<void>>()

  async function apply(txnId: string, events: unknown[], log: Logger) {
    const now = deps.now()
    const ctx: IngestContext = { ...deps.context(), now }
    const counts: Record<string, number> = {}
    const count = (o: string) => {
      counts[o] = (counts[o] ?? 0) + 1
      deps.observe?.(o as IngestOutcome | 'skipped')
    }
    let duplicate = false
    try {
      await deps.index.write(async (raw) => {
        const tx = cachedTx(raw)
        if (await tx.transactionDone(txnId)) {
          duplicate = true
          return
        }
        for (const [position, raw] of events.entries()) {
          const parsed = parseClientEvent(raw)
          if (!parsed.ok) {
            log.warn({ txn_id: txnId, position, reason: parsed.reason }, 'malformed event skipped')
            count('skipped')
            continue
          }
          const event = parsed.event
          try {
            count(await deps.index.savepoint(tx, () => ingestEvent(tx, event, ctx, 'stream')))
          } catch (e) {
            // The savepoint undid this event's writes: what the cache learnt from them is void.
            tx.clear()
            if (deps.index.isStoreFailure(e)) throw e
            log.warn({ txn_id: txnId, position, event_id: event.event_id, type: event.type, reason: (e as Error).message }, 'unexpected event skipped')
            count('skipped')
          }
        }
        await tx.recordTransaction(txnId, now)
      })
    } catch (e) {
      log.error({ txn_id: txnId, events: events.length, err: (e as Error).message }, 'transaction not stored; Synapse will send it again')
      throw unavailable('The message index could not store the transaction; retry later')
    }
    if (duplicate) {
      log.info({ txn_id: txnId }, 'transaction already committed; nothing to do')
      return
    }
    log.info({ txn_id: txnId, events: events.length, outcomes: counts }, 'transaction committed')
    deps.afterCommit?.()
  }

  return {
    /** Resolves once the transaction is committed (or was before); throws the 5xx that makes Synapse retry. */
    handle(txnId: string, events: unknown[], log: Logger): Promise<void> {
      const first = running.get(txnId)
      if (first) {
        log.info({ txn_id: txnId }, 'transaction arrived again while the first copy is running; waiting for it')
        return first
      }
      const started = apply(txnId, events, log).finally(() => running.delete(txnId))
      running.set(txnId, started)
      return started
    },
  }
}
