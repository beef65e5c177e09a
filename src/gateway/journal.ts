/**
 * The delivery journal's writer. Notify only appends an outcome to a buffer in memory; a timer
 * writes the buffer at most once per `flushMs`, in transactions of JOURNAL_WRITE_CHUNK outcomes, a
 * few milliseconds of them per turn of the event loop, so no notification waits long for a write.
 * Diagnostic data: when the buffer is full (the database stuck) the older half of it is dropped,
 * and a failed write is logged and dropped, never retried forever.
 */
import type { Logger } from 'pino'
import type { Delivery, TokenStore } from '../store/types.ts'

export const JOURNAL_FLUSH_MS = 1_000
export const JOURNAL_MAX_BUFFERED = 10_000
/** Outcomes written per transaction; the event loop may run between two. */
export const JOURNAL_WRITE_CHUNK = 64

export interface DeliveryJournal {
  record(delivery: Delivery): void
  /** Writes what is buffered now (shutdown, tests). */
  flush(): Promise<void>
}

export function createDeliveryJournal(o: {
  store: TokenStore
  log: Logger
  flushMs?: number
  maxBuffered?: number
  chunk?: number
  /** How long one turn of the event loop may write, given the outcomes left to write. */
  budgetMs?: (left: number) => number
}): DeliveryJournal {
  const flushMs = o.flushMs ?? JOURNAL_FLUSH_MS
  const max = o.maxBuffered ?? JOURNAL_MAX_BUFFERED
  const chunk = o.chunk ?? JOURNAL_WRITE_CHUNK
  const budgetMs = o.budgetMs ?? ((left: number) => Math.max(1, left / 1000))
  let buffer: Delivery[] = []
  let dropped = 0
  let timer: ReturnType<typeof setTimeout> | undefined

  // One write at a time, so that an account's outcomes reach the store in the order they came.
  let writing: Promise<void> = Promise.resolve()
  /** Batches taken from the buffer and not yet written. */
  let pending = 0

  async function write(batch: Delivery[]) {
    // Sorted by account (stably: each account's outcomes stay in order) and written a part at a
    // time, the event loop running between turns of writing: a second's outcomes in one
    // transaction held every request for 50-170 ms on a busy gateway (its p99 at 128
    // connections). A turn writes parts for up to `budgetMs(left)` (1 ms per 1,000 outcomes still
    // to write, at least 1): one part per turn could not keep up with 10,000 notifications a
    // second, whose turns are long, and the buffer overflowed. A part covers neighbouring
    // accounts, whose rows the store keeps together, so the parts add few page writes.
    batch.sort((a, b) => (a.selector < b.selector ? -1 : a.selector > b.selector ? 1 : 0))
    let lost = 0
    let error: string | undefined
    let i = 0
    while (i < batch.length) {
      const until = performance.now() + budgetMs(batch.length - i)
      do {
        const part = batch.slice(i, i + chunk)
        try {
          await o.store.recordDeliveries(part)
          i += part.length
        } catch (e) {
          // The rest of the batch goes too: a database that refused one part is not asked again
          // for each of the others (a PostgreSQL server that is down costs a timeout each).
          lost += batch.length - i
          error = (e as Error).message
          i = batch.length
        }
      } while (i < batch.length && performance.now() < until)
      if (i < batch.length) await new Promise((resolve) => setImmediate(resolve))
    }
    if (lost > 0) o.log.warn({ err: error, outcomes: lost }, 'delivery journal not written; these outcomes are lost to `tokens show`')
  }

  async function flush() {
    if (timer !== undefined) clearTimeout(timer)
    timer = undefined
    if (buffer.length === 0) return writing
    const batch = buffer
    buffer = []
    pending++
    writing = writing.then(() => write(batch)).finally(() => pending--)
    await writing
    if (dropped > 0) {
      o.log.warn({ outcomes: dropped }, 'delivery journal buffer was full; oldest outcomes dropped')
      dropped = 0
    }
  }

  return {
    record(delivery) {
      if (buffer.length >= max) {
        // The older half goes at once: one copy per max/2 records, not one per record.
        const excess = buffer.length - Math.floor(max / 2)
        buffer = buffer.slice(excess)
        dropped += excess
      }
      buffer.push(delivery)
      // Half full before the timer: written now, or at 10,000 notifications a second the timer
      // running a little late was enough to drop outcomes. Not while a write is still going on:
      // then the buffer (and what it drops) is what bounds the memory a stuck database costs.
      if (buffer.length >= max / 2 && pending === 0) {
        void flush()
        return
      }
      if (timer === undefined) {
        timer = setTimeout(() => void flush(), flushMs)
        timer.unref?.()
      }
    },
    flush,
  }
}
