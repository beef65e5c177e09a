/**
 * The delivery journal's writer. Notify only appends an outcome to a buffer in memory; a timer
 * writes the buffer at most once per `flushMs`, in transactions of JOURNAL_WRITE_CHUNK outcomes with
 * the event loop free between them, so no notification waits long for a database write. Diagnostic data: when the
 * buffer is full (the database stuck) the older half of it is dropped, and a failed write is logged
 * and dropped, never retried forever.
 */
import type { Logger } from 'pino'
import type { Delivery, TokenStore } from '../store/types.ts'

export const JOURNAL_FLUSH_MS = 1_000
export const JOURNAL_MAX_BUFFERED = 10_000
/** Outcomes written per transaction; the event loop runs between two. */
export const JOURNAL_WRITE_CHUNK = 64

export interface DeliveryJournal {
  record(delivery: Delivery): void
  /** Writes what is buffered now (shutdown, tests). */
  flush(): Promise<void>
}

export function createDeliveryJournal(o: { store: TokenStore; log: Logger; flushMs?: number; maxBuffered?: number; chunk?: number }): DeliveryJournal {
  const flushMs = o.flushMs ?? JOURNAL_FLUSH_MS
  const max = o.maxBuffered ?? JOURNAL_MAX_BUFFERED
  const chunk = o.chunk ?? JOURNAL_WRITE_CHUNK
  let buffer: Delivery[] = []
  let dropped = 0
  let timer: ReturnType<typeof setTimeout> | undefined

  // One write at a time, so that an account's outcomes reach the store in the order they came.
  let writing: Promise<void> = Promise.resolve()

  async function write(batch: Delivery[]) {
    // Sorted by account (stably: each account's outcomes stay in order) and written a part at a
    // time with the event loop free in between: a second's outcomes in one transaction held every
    // request for 50-170 ms on a busy gateway (its p99 at 128 connections), parts of 256 held them
    // often enough for the p99 at 16 (about 2 ms each); a part covers neighbouring accounts, whose
    // rows the store keeps together, so the parts add few page writes.
    batch.sort((a, b) => (a.selector < b.selector ? -1 : a.selector > b.selector ? 1 : 0))
    let lost = 0
    let error: string | undefined
    for (let i = 0; i < batch.length; i += chunk) {
      if (i > 0) await new Promise((resolve) => setImmediate(resolve))
      const part = batch.slice(i, i + chunk)
      try {
        await o.store.recordDeliveries(part)
      } catch (e) {
        lost += part.length
        error = (e as Error).message
      }
    }
    if (lost > 0) o.log.warn({ err: error, outcomes: lost }, 'delivery journal not written; these outcomes are lost to `tokens show`')
  }

  async function flush() {
    if (timer !== undefined) clearTimeout(timer)
    timer = undefined
    if (buffer.length === 0) return writing
    const batch = buffer
    buffer = []
    writing = writing.then(() => write(batch))
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
      if (timer === undefined) {
        timer = setTimeout(() => void flush(), flushMs)
        timer.unref?.()
      }
    },
    flush,
  }
}
