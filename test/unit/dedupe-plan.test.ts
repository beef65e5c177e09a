import { describe, expect, test } from 'bun:test'
import { heapStats } from 'bun:jsc'
import fc from 'fast-check'
import { createDedupe, DEDUPE_TTL_MS, INITIAL_SLOTS } from '../../src/gateway/dedupe.ts'
import { planPusherCalls } from '../../src/report/plan.ts'
import type { Registration } from '../../src/store/types.ts'

describe('dedupe', () => {
  test('remembers an event per pushkey for the ttl', () => {
    let now = 0
    const d = createDedupe({ now: () => now, ttlMs: 1000 })
    d.remember('pk', '$e')
    expect(d.seen('pk', '$e')).toBe(true)
    expect(d.seen('other', '$e')).toBe(false)
    expect(d.seen('pk', '$f')).toBe(false)
    now = 1000
    expect(d.seen('pk', '$e')).toBe(false)
  })
  test('remembered with the time it was delivered (from the journal): it lives from then; one older than the ttl is not kept', () => {
    let now = 5000
    const d = createDedupe({ now: () => now, ttlMs: 1000 })
    d.remember('pk', '$old', 3999)
    d.remember('pk', '$recent', 4500)
    expect(d.seen('pk', '$old')).toBe(false)
    expect(d.seen('pk', '$recent')).toBe(true)
    now = 5499
    expect(d.seen('pk', '$recent')).toBe(true)
    now = 5500
    expect(d.seen('pk', '$recent')).toBe(false)
  })
  test('an event remembered again lives from its newest time, not its first', () => {
    let now = 0
    const d = createDedupe({ now: () => now, ttlMs: 1000 })
    d.remember('pk', '$1')
    d.remember('pk', '$2')
    now = 500
    d.remember('pk', '$1')
    now = 1200
    d.remember('pk', '$3') // evicts what expired: $2, and the first slot of $1, not $1 itself
    expect(d.seen('pk', '$1')).toBe(true)
    expect(d.seen('pk', '$2')).toBe(false)
    now = 1500
    expect(d.seen('pk', '$1')).toBe(false)
    expect(d.seen('pk', '$3')).toBe(true)
  })

  test('keeps answering right across many evictions and compactions', () => {
    let now = 0
    const d = createDedupe({ now: () => now, ttlMs: 100, maxEntries: 50 })
    for (let i = 0; i < 5000; i++) {
      now = i
      d.remember('pk', `$${i}`)
      if (i % 7 === 0) d.remember('pk', `$${i - 3}`)
    }
    expect(d.seen('pk', '$4999')).toBe(true)
    expect(d.seen('pk', '$4900')).toBe(false) // beyond the 50 newest entries
    expect(d.seen('pk', '$10')).toBe(false)
  })

  test('stays bounded, forgetting the oldest first', () => {
    const d = createDedupe({ now: () => 0, maxEntries: 3 })
    for (const e of ['$1', '$2', '$3', '$4']) d.remember('pk', e)
    expect(d.seen('pk', '$1')).toBe(false)
    expect(d.seen('pk', '$4')).toBe(true)
    expect(d.seen('pk', '$2')).toBe(true)
  })

  test('keys that differ only in where event ID and pushkey meet are different', () => {
    const d = createDedupe({ now: () => 0 })
    d.remember('bc', '$a')
    expect(d.seen('c', '$ab')).toBe(false)
    expect(d.seen('bc', '$a')).toBe(true)
    d.remember('b\u0000c', '$a')
    expect(d.seen('c', '$a\u0000b')).toBe(false)
  })

  // A reference with exact string keys: the last `max` deliveries, oldest first, each for `ttl`; a
  // key delivered again answers from its newest delivery.
  function referenceDedupe(ttl: number, max: number, now: () => number) {
    const deliveries: { key: string; at: number }[] = []
    return {
      seen: (pk: string, e: string) => {
        const newest = deliveries.findLast((d) => d.key === `${e}|${pk}`)
        return newest !== undefined && newest.at + ttl > now()
      },
      remember: (pk: string, e: string) => {
        deliveries.push({ key: `${e}|${pk}`, at: now() })
        while (deliveries.length > max || deliveries[0]!.at + ttl <= now()) deliveries.shift()
      },
    }
  }

  test('answers as exact keys would, through evictions, expiry and keys remembered again', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 12 }),
        // From one slot up: the ring doubles while it holds entries, expired ones and moved ones.
        fc.integer({ min: 1, max: 16 }),
        fc.array(fc.tuple(fc.constantFrom('remember', 'seen'), fc.integer({ min: 0, max: 20 }), fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 30 })), { maxLength: 300 }),
        (max, initialSlots, ops) => {
          let now = 0
          const d = createDedupe({ now: () => now, ttlMs: 100, maxEntries: max, initialSlots })
          const ref = referenceDedupe(100, max, () => now)
          for (const [op, event, pushkey, step] of ops) {
            now += step
            const e = `$${event}`
            const pk = `pk${pushkey}`
            if (op === 'remember') {
              d.remember(pk, e)
              ref.remember(pk, e)
            } else if (d.seen(pk, e) !== ref.seen(pk, e)) return false
          }
          for (let event = 0; event <= 20; event++) for (let pushkey = 0; pushkey <= 3; pushkey++) {
            if (d.seen(`pk${pushkey}`, `$${event}`) !== ref.seen(`pk${pushkey}`, `$${event}`)) return false
          }
          return true
        },
      ),
      { numRuns: 300 },
    )
  })

  test('at its cap, remembers every one of its newest entries for the whole hour', () => {
    let now = 0
    const max = 20_000
    const d = createDedupe({ now: () => now, maxEntries: max })
    for (let i = 0; i < max * 2; i++) {
      now = i * 10 // 200 s of deliveries at 100 a second: well within the hour
      d.remember(`pk${i % 97}`, `$event-${i}`)
    }
    now = max * 2 * 10 + DEDUPE_TTL_MS - 200_001 // just under an hour after the oldest kept entry
    let kept = 0
    for (let i = max; i < max * 2; i++) if (d.seen(`pk${i % 97}`, `$event-${i}`)) kept++
    expect(kept).toBe(max)
    let older = 0
    for (let i = 0; i < max; i++) if (d.seen(`pk${i % 97}`, `$event-${i}`)) older++
    expect(older).toBe(0)
  })

  test('grows with what it holds, doubling up to its cap and never past it', () => {
    let now = 0
    const max = 20_000
    const d = createDedupe({ now: () => now, ttlMs: 1_000_000, maxEntries: max })
    expect(d.slots()).toBe(INITIAL_SLOTS)
    for (let i = 0; i < INITIAL_SLOTS; i++) d.remember('pk', `$a${i}`)
    expect(d.slots()).toBe(INITIAL_SLOTS)
    d.remember('pk', '$one-more')
    expect(d.slots()).toBe(INITIAL_SLOTS * 2)
    for (let i = 0; i < max * 2; i++) {
      now++
      d.remember('pk', `$b${i}`)
    }
    expect(d.slots()).toBe(max)
    // Every entry of the last `max` found after the doublings and the wrap, none older.
    let kept = 0
    for (let i = max; i < max * 2; i++) if (d.seen('pk', `$b${i}`)) kept++
    expect(kept).toBe(max)
    expect(d.seen('pk', `$b${max - 1}`)).toBe(false)
    expect(d.seen('pk', '$a0')).toBe(false)
    // A ring that wraps (its oldest entries expired) and then fills grows with every entry and its
    // time in place.
    let t = 0
    const wrapped = createDedupe({ now: () => t, ttlMs: 10, maxEntries: 100, initialSlots: 4 })
    for (const [at, e] of [[0, '$a0'], [1, '$a1'], [2, '$a2'], [3, '$a3'], [10, '$b0'], [10, '$b1']] as const) {
      t = at
      wrapped.remember('pk', e)
    }
    expect(wrapped.slots()).toBe(8)
    t = 10.5
    expect(['$a0', '$a1', '$a2', '$a3', '$b0', '$b1'].map((e) => wrapped.seen('pk', e))).toEqual([false, true, true, true, true, true])
    t = 12
    expect(['$a1', '$a2', '$a3', '$b0', '$b1'].map((e) => wrapped.seen('pk', e))).toEqual([false, false, true, true, true])
    // The same with a cap of 6: after the doubling the oldest kept entry (a1) is the first to go.
    t = 0
    const capped = createDedupe({ now: () => t, ttlMs: 10, maxEntries: 6, initialSlots: 4 })
    for (const [at, e] of [[0, '$a0'], [1, '$a1'], [2, '$a2'], [3, '$a3'], [10, '$b0'], [10, '$b1'], [10.5, '$c0'], [10.5, '$c1']] as const) {
      t = at
      capped.remember('pk', e)
    }
    expect(capped.slots()).toBe(6)
    expect(['$a1', '$a2', '$a3', '$b0', '$b1', '$c0', '$c1'].map((e) => capped.seen('pk', e))).toEqual([false, true, true, true, true, true, true])
    // Entries that expire make room: a ring that is never full never grows.
    const small = createDedupe({ now: () => now, ttlMs: 10, maxEntries: max })
    for (let i = 0; i < max; i++) {
      now++
      small.remember('pk', `$c${i}`)
    }
    expect(small.slots()).toBe(INITIAL_SLOTS)
  })

  test('keeps nothing of the keys it remembers: memory does not grow with entries or key length', () => {
    const d = createDedupe({ now: () => 0 })
    d.remember('pk', '$warm')
    Bun.gc(true)
    const before = heapStats().heapSize
    const long = 'x'.repeat(10_000)
    // Kept as strings, these keys would hold about 100 MB.
    for (let i = 0; i < 5_000; i++) d.remember(`${long}${i}`, `$${long}${i}`)
    Bun.gc(true)
    expect(heapStats().heapSize - before).toBeLessThan(8 * 2 ** 20)
    expect(d.seen(`${long}4999`, `$${long}4999`)).toBe(true)
    expect(d.seen(`${long}4999`, `$${long}4998`)).toBe(false)
  })
})

const reg = (over: Partial<Registration>): Registration => ({
  selector: 'S',
  matrixUserId: '@a:x',
  tokenMsgs: 't1',
  appIdMsgs: 'app',
  createdAt: 0,
  updatedAt: 0,
  ...over,
})

describe('planPusherCalls', () => {
  const plan = planPusherCalls(true)
  test('first report: set', () => {
    expect(plan(undefined, reg({}))).toEqual([{ action: 'set', userId: '@a:x', appId: 'app', pushkey: 't1' }])
  })
  test('same token again: set only (re-registers, heals a homeserver that lost it)', () => {
    expect(plan(reg({}), reg({}))).toEqual([{ action: 'set', userId: '@a:x', appId: 'app', pushkey: 't1' }])
  })
  test('token, app id or user changed: delete the old pusher first', () => {
    for (const change of [{ tokenMsgs: 't2' }, { appIdMsgs: 'app2' }, { matrixUserId: '@b:x' }]) {
      const ops = plan(reg({}), reg(change))
      expect(ops[0]).toEqual({ action: 'delete', userId: '@a:x', appId: 'app', pushkey: 't1' })
      expect(ops[1]!.action).toBe('set')
    }
  })
  test('token gone or account removed: delete only', () => {
    expect(plan(reg({}), reg({ tokenMsgs: undefined }))).toEqual([{ action: 'delete', userId: '@a:x', appId: 'app', pushkey: 't1' }])
    expect(plan(reg({}), undefined)).toHaveLength(1)
  })
  test('nothing without PROXY_URL', () => {
    expect(planPusherCalls(false)(reg({}), reg({ tokenMsgs: 't2' }))).toEqual([])
  })
})
