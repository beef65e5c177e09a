/**
 * A PostgreSQL server that stops answering without closing the connection (a network partition, a
 * frozen host) leaves a query waiting for ever: Bun's SQL client has no statement timeout. Each
 * database operation of the service on PostgreSQL is bounded here, so a request is answered (503)
 * in time instead of hanging; the operation may still finish later, which every caller allows for
 * (a write the answer called failed is repeated by its client and is idempotent).
 */
import { withTimeout } from '../timeout.ts'

/** Far above a healthy query; well inside Synapse's 60 s and the notify deadline of 25 s. */
export const DATABASE_TIMEOUT_MS = 10_000

/** `target` with each of its methods that returns a promise bounded to `ms`; the rest as they are. */
export function bounded<T extends object>(target: T, what: string, ms: number = DATABASE_TIMEOUT_MS): T {
  const out: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(target)) {
    if (typeof value !== 'function') {
      out[key] = value
      continue
    }
    out[key] = (...args: unknown[]) => {
      const result = (value as (...a: unknown[]) => unknown).apply(target, args)
      return result instanceof Promise ? withTimeout(result, ms, `${what} (${key})`) : result
    }
  }
  return out as T
}
