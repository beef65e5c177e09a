/**
 * Timestamps per key in a sliding one-minute window: what every "so many a minute" limit counts
 * with. Memory is bounded: at most `cap` timestamps per key and MAX_TRACKED keys, the least
 * recently used forgotten first.
 */
const WINDOW_MS = 60_000
const MAX_TRACKED = 100_000

export function slidingWindow(now: () => number, cap: number) {
  const entries = new Map<string, number[]>()
  const recent = (key: string) => {
    const t = now()
    const list = entries.get(key)
    if (!list) return []
    const kept = list.filter((at) => at > t - WINDOW_MS)
    if (kept.length === 0) entries.delete(key)
    else if (kept.length !== list.length) entries.set(key, kept)
    return kept
  }
  return {
    count: (key: string) => recent(key).length,
    /** Seconds until fewer than `limit` entries remain in the window. */
    retryAfter(key: string, limit: number) {
      const list = recent(key)
      if (list.length < limit) return 1
      return Math.max(1, Math.ceil((list[list.length - limit]! + WINDOW_MS - now()) / 1000))
    },
    add(key: string) {
      const list = recent(key)
      list.push(now())
      // Only the newest `cap` matter to any limit; a key is refused long before that.
      if (list.length > cap) list.splice(0, list.length - cap)
      entries.delete(key)
      entries.set(key, list)
      if (entries.size > MAX_TRACKED) entries.delete(entries.keys().next().value!)
    },
  }
}

