/**
 * The notify path's remembered lookups (src/store/lookup-cache.ts): answers and misses remembered,
 * a change signal asked at most every `checkEveryMs`, cleared at once on `clear`, bounded.
 */
import { describe, expect, test } from 'bun:test'
import { createLookupCache } from '../../src/store/lookup-cache.ts'

function setup(maxEntries = 100) {
  let clock = 0
  let version = 0
  let seen = 0
  let checks = 0
  const cache = createLookupCache<{ v: string }>({
    changed: () => {
      checks++
      const changed = version !== seen
      seen = version
      return changed
    },
    now: () => clock,
    checkEveryMs: 5,
    maxEntries,
  })
  const data = new Map<string, { v: string }>()
  const loads: string[] = []
  const read = (key: string) =>
    cache.read(key, () => {
      loads.push(key)
      return data.get(key)
    })
  return {
    cache,
    data,
    loads,
    read,
    tick: (ms: number) => (clock += ms),
    commitElsewhere: () => version++,
    checks: () => checks,
  }
}

describe('lookup cache', () => {
  test('an answer and a miss are each read once until something changes', () => {
    const s = setup()
    s.data.set('a', { v: 'A' })
    expect(s.read('a')).toEqual({ v: 'A' })
    expect(s.read('a')).toEqual({ v: 'A' })
    expect(s.read('nobody')).toBeUndefined()
    expect(s.read('nobody')).toBeUndefined()
    expect(s.loads).toEqual(['a', 'nobody'])
  })

  test('a commit elsewhere is noticed at the next check, not before, and the signal is asked at most every checkEveryMs', () => {
    const s = setup()
    s.data.set('a', { v: 'A' })
    s.read('a')
    s.read('b')
    const checksBefore = s.checks()
    s.data.set('a', { v: 'A2' })
    s.data.set('b', { v: 'B' })
    s.commitElsewhere()
    s.tick(4)
    for (let i = 0; i < 50; i++) expect(s.read('a')).toEqual({ v: 'A' })
    expect(s.checks()).toBe(checksBefore)
    s.tick(1)
    expect(s.read('a')).toEqual({ v: 'A2' })
    expect(s.read('b')).toEqual({ v: 'B' })
    expect(s.checks()).toBe(checksBefore + 1)
  })

  test('clear forgets at once, without waiting for a check', () => {
    const s = setup()
    s.data.set('a', { v: 'A' })
    s.read('a')
    s.data.delete('a')
    s.cache.clear()
    expect(s.read('a')).toBeUndefined()
    expect(s.loads).toEqual(['a', 'a'])
  })

  test('bounded: past maxEntries the oldest entry goes', () => {
    const s = setup(3)
    for (const k of ['a', 'b', 'c', 'd']) s.read(k)
    expect(s.cache.size).toBe(3)
    s.read('b')
    s.read('c')
    s.read('d')
    expect(s.loads).toEqual(['a', 'b', 'c', 'd'])
    s.read('a')
    expect(s.loads).toEqual(['a', 'b', 'c', 'd', 'a'])
    // Round and round: always the oldest goes, b then c.
    s.read('e')
    s.loads.length = 0
    for (const k of ['d', 'a', 'e']) s.read(k)
    expect(s.loads).toEqual([])
    s.read('b')
    expect(s.loads).toEqual(['b'])
    s.read('a')
    s.read('e')
    s.read('d')
    expect(s.loads).toEqual(['b', 'd'])
    // After a clear it fills and evicts from the start again.
    s.cache.clear()
    s.loads.length = 0
    for (const k of ['x', 'y', 'z', 'w', 'y', 'z', 'w', 'x']) s.read(k)
    expect(s.loads).toEqual(['x', 'y', 'z', 'w', 'x'])
    expect(s.cache.size).toBe(3)
  })
})
