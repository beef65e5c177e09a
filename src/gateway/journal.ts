/**
 * The delivery journal's writer. Notify only appends an outcome to a buffer in memory; a timer
 * writes the buffer in one transaction (with the pruning to the last 50 rows per account) at most
 * once per `flushMs`, so no notification waits for a database write. Diagnostic data: when the
 * buffer is full (the database stuck) the older half of it is dropped, and a failed write is logged
 * and dropped, never retried forever.
 */
import type { Logger } from 'pino'
import type { Delivery, TokenStore } from '../store/types.ts'

export const JOURNAL_FLUSH_MS = 1_000
export const JOURNAL_MAX_BUFFERED = 10_000

export interface DeliveryJournal {
  record(delivery: Delivery): void
  /** Writes what is buffered now (shutdown, tests). */
  flush(): Promise<void>
}

export function createDeliveryJournal(o: { store: TokenStore; log: Logger; flushMs?: number; maxBuffered?: number }): DeliveryJournal {
  const flushMs = o.flushMs ?? JOURNAL_FLUSH_MS
  const max = o.maxBuffered ?? JOURNAL_MAX_BUFFERED
  let buffer: Delivery[] = []
  let dropped = 0
  let timer: ReturnType<typeof setTimeout> | undefined

  async function flush() {
    if (timer !== undefined) clearTimeout(timer)
    timer = undefined
    if (buffer.length === 0) return
    const batch = buffer
    buffer = []
    try {
      await o.store.recordDeliveries(batch)
    } catch (e) {
      o.log.warn({ err: (e as Error).message, outcomes: batch.length }, 'delivery journal not written; these outcomes are lost to `tokens show`')
    }
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
