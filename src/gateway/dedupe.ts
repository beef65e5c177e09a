/**
 * Remembers which event was delivered to which pushkey, for an hour: Synapse retries a
 * notification after its own timeout even when the first try reached the phone, and the spec asks
 * gateways to drop such duplicates. Bounded: past `maxEntries` the oldest are forgotten first.
 */
export interface Dedupe {
  seen(pushkey: string, eventId: string): boolean
  remember(pushkey: string, eventId: string): void
}

/** How long a delivered (pushkey, event) is remembered. */
export const DEDUPE_TTL_MS = 60 * 60 * 1000

/**
 * What the notify handler asks before and after a PNM call. `claim` answers at once (no promise)
 * when the filter lives in this process, so the SQLite path costs no more than a Map lookup; a
 * filter shared through PostgreSQL answers with a promise.
 * - 'claimed': send it; then `delivered`, or `release` when it was not delivered;
 * - 'duplicate': delivered already, not sent again;
 * - 'elsewhere': another instance is sending it at this moment (Synapse is asked to retry).
 */
export type Claim = 'claimed' | 'duplicate' | 'elsewhere'
export interface DuplicateFilter {
  claim(pushkey: string, eventId: string): Claim | Promise<Claim>
  delivered(pushkey: string, eventId: string): void | Promise<void>
  release(pushkey: string, eventId: string): void | Promise<void>
}

/** The in-process filter as a DuplicateFilter: one instance, so nothing is ever sent elsewhere. */
export function inProcessFilter(dedupe: Dedupe): DuplicateFilter {
  return {
    claim: (pushkey, eventId) => (dedupe.seen(pushkey, eventId) ? 'duplicate' : 'claimed'),
    delivered: (pushkey, eventId) => dedupe.remember(pushkey, eventId),
    release: () => {},
  }
}

export function createDedupe(options: { now: () => number; ttlMs?: number; maxEntries?: number }): Dedupe {
  const ttl = options.ttlMs ?? DEDUPE_TTL_MS
  const max = options.maxEntries ?? 200_000
  // key -> its slot in the queue below, oldest first; a key remembered again moves to a new slot.
  // Not Map iteration order: evicting from the start of a Map walks over every entry deleted before
  // (JSC keeps them until it rehashes), and at the cap that cost up to 100 µs a notification.
  const slotOf = new Map<string, number>()
  let keys: string[] = []
  let ats: number[] = []
  let first = 0 // slot number of keys[0]
  let head = 0 // index of the oldest slot not yet passed; a slot whose key moved on is skipped
  const key = (pushkey: string, eventId: string) => `${eventId}\u0000${pushkey}`

  const evict = (now: number) => {
    for (; head < keys.length; head++) {
      const k = keys[head]!
      if (slotOf.get(k) === first + head) {
        if (slotOf.size <= max && ats[head]! + ttl > now) break
        slotOf.delete(k)
      }
      keys[head] = '' // a passed slot must not keep its key alive until the next compaction
    }
    if (head > 1024 && head * 2 > keys.length) {
      keys = keys.slice(head)
      ats = ats.slice(head)
      first += head
      head = 0
    }
  }

  return {
    seen(pushkey, eventId) {
      const slot = slotOf.get(key(pushkey, eventId))
      return slot !== undefined && ats[slot - first]! + ttl > options.now()
    },
    remember(pushkey, eventId) {
      const now = options.now()
      const k = key(pushkey, eventId)
      slotOf.set(k, first + keys.length)
      keys.push(k)
      ats.push(now)
      evict(now)
    },
  }
}
