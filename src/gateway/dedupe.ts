/**
 * Remembers which event was delivered to which pushkey, for an hour: Synapse retries a
 * notification after its own timeout even when the first try reached the phone, and the spec asks
 * gateways to drop such duplicates. Bounded: past `maxEntries` the oldest are forgotten first.
 */
export interface Dedupe {
  seen(pushkey: string, eventId: string): boolean
  remember(pushkey: string, eventId: string): void
}

export function createDedupe(options: { now: () => number; ttlMs?: number; maxEntries?: number }): Dedupe {
  const ttl = options.ttlMs ?? 60 * 60 * 1000
  const max = options.maxEntries ?? 200_000
  // Map keeps insertion order, so the first entries are the oldest.
  const delivered = new Map<string, number>()
  const key = (pushkey: string, eventId: string) => `${eventId}\u0000${pushkey}`

  const evict = (now: number) => {
    for (const [k, at] of delivered) {
      if (delivered.size <= max && at + ttl > now) break
      delivered.delete(k)
    }
  }

  return {
    seen(pushkey, eventId) {
      const at = delivered.get(key(pushkey, eventId))
      return at !== undefined && at + ttl > options.now()
    },
    remember(pushkey, eventId) {
      const now = options.now()
      const k = key(pushkey, eventId)
      delivered.delete(k)
      delivered.set(k, now)
      evict(now)
    },
  }
}
