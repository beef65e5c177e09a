/**
 * Timestamps per key in a sliding one-minute window: what every "so many a minute" limit counts
 * with. Memory is bounded: at most `cap` timestamps per key and MAX_TRACKED keys, the least
 * recently used forgotten first. Timestamps arrive in order, so expiry only moves a start index
 * (amortised constant time, even with a limit of a million a minute).
 */
const WINDOW_MS = 60_000
const MAX_TRACKED = 100_000

interface Entry {
  times: number[]
  /** Index of the oldest timestamp still in the window. */
  start: number
}

export function slidingWindow(now: () => number, cap: number) {
  const entries = new Map<string, Entry>()

  /** The key's entry with expired timestamps dropped; undefined when none is left. */
  function current(key: string): Entry | undefined {
    const entry = entries.get(key)
    if (!entry) return undefined
    const oldest = now() - WINDOW_MS
    while (entry.start < entry.times.length && entry.times[entry.start]! <= oldest) entry.start++
    if (entry.start === entry.times.length) {
      entries.delete(key)
      return undefined
    }
    if (entry.start > 64 && entry.start * 2 > entry.times.length) {
      entry.times = entry.times.slice(entry.start)
      entry.start = 0
    }
    return entry
  }
  const size = (entry: Entry | undefined) => (entry ? entry.times.length - entry.start : 0)

  return {
    count: (key: string) => size(current(key)),
    /** Seconds until fewer than `limit` timestamps remain in the window (at least 1). */
    retryAfter(key: string, limit: number) {
      const entry = current(key)
      if (size(entry) < limit) return 1
      const at = entry!.times[entry!.times.length - limit]!
      return Math.max(1, Math.ceil((at + WINDOW_MS - now()) / 1000))
    },
    add(key: string) {
      const entry = current(key) ?? { times: [], start: 0 }
      entry.times.push(now())
      // Only the newest `cap` matter to any limit; a key is refused long before that.
      if (size(entry) > cap) entry.start = entry.times.length - cap
      entries.delete(key)
      entries.set(key, entry)
      if (entries.size > MAX_TRACKED) entries.delete(entries.keys().next().value!)
    },
  }
}
