import { describe, expect, test } from 'bun:test'
import { createDedupe } from '../../src/gateway/dedupe.ts'
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
