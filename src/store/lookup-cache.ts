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
  /** True when the data changed since the last call (the first call only sets the baseline). */
  changed: () => boolean
  now: () => number
  checkEveryMs: number
  maxEntries: number
}

/** Held for `undefined` (no such account), which a Map lookup cannot tell from a miss. */
const NONE = Symbol('none')

export function createLookupCache<V>(o: LookupCacheOptions): LookupCache<V> {
  const entries = new Map<string, V | typeof NONE>()
  let checkedAt = -Infinity

  function forgetIfChanged() {
    const now = o.now()
    if (now - checkedAt < o.checkEveryMs) return
    checkedAt = now
    if (o.changed()) entries.clear()
  }

  return {
    read(key, load) {
      forgetIfChanged()
      const held = entries.get(key)
      if (held !== undefined) return held === NONE ? undefined : held
      const value = load()
      if (entries.size >= o.maxEntries) entries.delete(entries.keys().next().value!)
      entries.set(key, value === undefined ? NONE : value)
      return value
    },
    clear() {
      entries.clear()
    },
    get size() {
      return entries.size
    },
  }
}
