/**
 * The notify path's account lookups, remembered between notifications. On SQLite every lookup is
 * a read transaction, and a read transaction costs three system calls (a read lock on the WAL
 * index, an fstat, the unlock) whatever the query: about a quarter of a notification's CPU time
 * under load (scripts/bench.ts). Remembered answers are dropped
 *   - at once, when this connection writes a registration (`clear`, called by the store), and
 *   - within `checkEveryMs` of a commit by any other connection or process (a removal by
 *     `tokens delete`, a second instance on the same file): `changed` is asked at most that often,
 *     and it answers from SQLite's own change counter (PRAGMA data_version).
 * Misses are remembered too (an unknown pushkey is rejected again without a query); both count
 * towards `maxEntries`, past which the oldest entry goes.
 */
export interface LookupCache<V> {
  /** The remembered answer for `key`, or `load()`'s, remembered. */
  read(key: string, load: () => V | undefined): V | undefined
  /** Forgets every answer: this connection changed what they were read from. */
  clear(): void
  readonly size: number
}

export interface LookupCacheOptions {
  /** True when the data changed since the last call. */
  changed: () => boolean
  now: () => number
  checkEveryMs: number
  maxEntries: number
}

/** Held for `undefined` (no such account), which a Map lookup cannot tell from a miss. */
const NONE = Symbol('none')

export function createLookupCache<V>(o: LookupCacheOptions): LookupCache<V> {
  const entries = new Map<string, V | typeof NONE>()
  // The keys in the order they came in, as a ring: the oldest is found without walking the Map,
  // whose iterator steps over every entry deleted before (6.8 µs an eviction at 16,384 entries).
  const order: string[] = new Array(o.maxEntries)
  let oldest = 0
  let checkedAt = -Infinity

  function forget() {
    entries.clear()
    oldest = 0
  }

  function forgetIfChanged() {
    const now = o.now()
    if (now - checkedAt < o.checkEveryMs) return
    checkedAt = now
    if (o.changed()) forget()
  }

  return {
    read(key, load) {
      forgetIfChanged()
      const held = entries.get(key)
      if (held !== undefined) return held === NONE ? undefined : held
      const value = load()
      // A key comes in only when it is not held, so the ring holds each held key once.
      const slot = entries.size < o.maxEntries ? entries.size : oldest
      if (entries.size >= o.maxEntries) {
        entries.delete(order[oldest]!)
        oldest = (oldest + 1) % o.maxEntries
      }
      order[slot] = key
      entries.set(key, value === undefined ? NONE : value)
      return value
    },
    clear: forget,
    get size() {
      return entries.size
    },
  }
}
