/**
 * Remembers which event was delivered to which pushkey, for an hour: Synapse retries a
 * notification after its own timeout even when the first try reached the phone, and the spec asks
 * gateways to drop such duplicates. Bounded: it holds the last `maxEntries` deliveries, the oldest
 * forgotten first; below that, nothing is forgotten before its hour is up. A key delivered again
 * (the same event to the same pushkey under a second app id) lives from its newest delivery; its
 * earlier one keeps its place in the count until it ages out.
 *
 * Bounded memory: each (event, pushkey) is kept as a 128-bit fingerprint (SHA-256, salted with 128
 * random bits per process, truncated) in a ring of typed arrays, oldest first, with an
 * open-addressing index over the ring. About 32 bytes an entry whatever the length of the event ID
 * or pushkey (6.6 MiB at the default 200,000), and no garbage per notification: a string key per
 * entry in a Map cost ~55 MiB of peak RSS per 100,000 entries. Two different keys share a
 * fingerprint with a chance of 2^-128 per pair, ~6 × 10^-34 per lookup at the cap; the salt keeps
 * anyone from choosing keys that collide.
 *
 * The ring starts at INITIAL_SLOTS and doubles when full, up to the cap: a service delivering a
 * few thousand pushes an hour holds kilobytes, not the cap's megabytes. That is more than the
 * megabytes themselves: the JavaScript engine counts array buffers into the heap size it sizes
 * its collection cycles by, and with the whole cap allocated at start the service's peak RSS
 * under load was ~15 MiB higher (scripts/bench.ts --memory). A doubling copies the ring and
 * rebuilds the index, during which the event loop waits: 2 ms at 4,096 entries, 15–20 ms at
 * 131,072; six doublings reach the default cap, each once in a process's life.
 */
import { getRandomValues } from 'node:crypto'

export interface Dedupe {
  seen(pushkey: string, eventId: string): boolean
  /** `at`: when it was delivered, if not now (what a new process learns from the journal). */
  remember(pushkey: string, eventId: string, at?: number): void
}

export const DEDUPE_TTL_MS = 60 * 60 * 1000
export const DEDUPE_MAX_ENTRIES = 200_000
/** The ring's first size; it doubles from here as entries arrive, up to the cap. */
export const INITIAL_SLOTS = 4096

/**
 * What the notify handler asks before and after a PNM call. `claim` answers at once (no promise)
 * when the filter lives in this process, so the SQLite path costs no more than the lookup; a
 * filter shared through PostgreSQL (dedupe-shared.ts) answers with a promise.
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

/** Marks a ring slot whose key was remembered again later: it is no longer in the index. */
const MOVED = -Infinity

export function createDedupe(options: {
  now: () => number
  ttlMs?: number
  maxEntries?: number
  initialSlots?: number
}): Dedupe & { /** How many entries the ring has room for now. */ slots(): number } {
  const ttl = options.ttlMs ?? DEDUPE_TTL_MS
  const capacity = Math.max(1, options.maxEntries ?? DEDUPE_MAX_ENTRIES)
  const salt = Buffer.from(getRandomValues(new Uint8Array(16))).toString('hex')

  // The ring: slot i holds fingerprint words fps[4i..4i+3] and the time it was remembered; `slots`
  // of them allocated, the entries from `head` on, wrapping at `slots`.
  let slots = Math.min(capacity, Math.max(1, options.initialSlots ?? INITIAL_SLOTS))
  let fps = new Uint32Array(slots * 4)
  let ats = new Float64Array(slots)
  let head = 0 // oldest slot
  let count = 0
  // The index: ring slot + 1 (0 = empty), linear probing, at most half full.
  let index = new Int32Array(0)
  let mask = 0
  /** A new index over the ring; only ever called unwrapped (head 0): at start and after a doubling. */
  const buildIndex = () => {
    let size = 2
    while (size < slots * 2) size *= 2
    index = new Int32Array(size)
    mask = size - 1
    for (let slot = 0; slot < count; slot++) {
      if (ats[slot] === MOVED) continue
      let p = fps[slot * 4]! & mask
      while (index[p] !== 0) p = (p + 1) & mask
      index[p] = slot + 1
    }
  }
  buildIndex()

  /** A full ring below the cap: twice the slots (at most the cap), entries from 0 on, a new index. */
  function grow() {
    const bigger = Math.min(capacity, slots * 2)
    const nextFps = new Uint32Array(bigger * 4)
    const nextAts = new Float64Array(bigger)
    // Oldest first from slot 0: the part from head to the end, then the wrapped part.
    const tail = slots - head
    nextFps.set(fps.subarray(head * 4), 0)
    nextFps.set(fps.subarray(0, head * 4), tail * 4)
    nextAts.set(ats.subarray(head), 0)
    nextAts.set(ats.subarray(0, head), tail)
    fps = nextFps
    ats = nextAts
    slots = bigger
    head = 0
    buildIndex()
  }

  // One SHA-256 into a reused buffer; the event ID's length first, so that no two (event, pushkey)
  // pairs make the same input.
  const digest = new Uint8Array(32)
  const words = new Uint32Array(digest.buffer, 0, 4)
  const fingerprint = (pushkey: string, eventId: string) => {
    Bun.SHA256.hash(`${salt}${eventId.length}:${eventId}${pushkey}`, digest)
  }
  const sameAsDigest = (slot: number) =>
    fps[slot * 4] === words[0] && fps[slot * 4 + 1] === words[1] && fps[slot * 4 + 2] === words[2] && fps[slot * 4 + 3] === words[3]

  /** The index position holding the fingerprint in `digest`, or -1. */
  function find(): number {
    for (let p = words[0]! & mask; ; p = (p + 1) & mask) {
      const v = index[p]!
      if (v === 0) return -1
      if (sameAsDigest(v - 1)) return p
    }
  }

  /** Empties index position `p`, moving later entries of its probe run back (no tombstones). */
  function unindex(p: number) {
    let hole = p
    index[hole] = 0
    for (let q = (hole + 1) & mask; ; q = (q + 1) & mask) {
      const v = index[q]!
      if (v === 0) return
      const home = fps[(v - 1) * 4]! & mask
      // Entry v may fill the hole unless its home lies cyclically in (hole, q].
      const stays = hole <= q ? home > hole && home <= q : home > hole || home <= q
      if (stays) continue
      index[hole] = v
      index[q] = 0
      hole = q
    }
  }

  /** Forgets the oldest slot. */
  function dropHead() {
    if (ats[head] !== MOVED) {
      const w = head * 4
      for (let p = fps[w]! & mask; ; p = (p + 1) & mask) {
        if (index[p] === head + 1) {
          unindex(p)
          break
        }
      }
    }
    head = head + 1 === slots ? 0 : head + 1
    count--
  }

  return {
    slots: () => slots,
    seen(pushkey, eventId) {
      fingerprint(pushkey, eventId)
      const p = find()
      return p >= 0 && ats[index[p]! - 1]! + ttl > options.now()
    },
    remember(pushkey, eventId, at) {
      const now = options.now()
      if (at !== undefined && at + ttl <= now) return
      while (count > 0 && (count === capacity || ats[head]! + ttl <= now)) dropHead()
      if (count === slots) grow()
      fingerprint(pushkey, eventId)
      const existing = find()
      if (existing >= 0) {
        // Remembered again: it lives from now, in a new slot at the young end of the ring.
        ats[index[existing]! - 1] = MOVED
        unindex(existing)
      }
      let slot = head + count
      if (slot >= slots) slot -= slots
      fps.set(words, slot * 4)
      ats[slot] = at ?? now
      count++
      let p = words[0]! & mask
      while (index[p] !== 0) p = (p + 1) & mask
      index[p] = slot + 1
    },
  }
}
