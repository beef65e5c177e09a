import { Database } from 'bun:sqlite'
import { describe, expect, test } from 'bun:test'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import pino from 'pino'
import { planPusherCalls } from '../../src/report/plan.ts'
import { openSqliteStore } from '../../src/store/sqlite.ts'
import { JOURNAL_ROWS_PER_ACCOUNT } from '../../src/store/types.ts'
import { createDeliveryJournal } from '../../src/gateway/journal.ts'
import type { Delivery, TokenStore } from '../../src/store/types.ts'
import { captureLogs, tempDir } from '../harness.ts'

const delivery = (i: number): Delivery => ({ selector: 'S:1', at: i, eventId: `$${i}`, outcome: 'delivered', pnmStatus: 200, latencyMs: 1 })

function fakeStore(fail = false) {
  const batches: Delivery[][] = []
  const store = {
    recordDeliveries: async (d: readonly Delivery[]) => {
      if (fail) throw new Error('SQLITE_BUSY: database is locked')
      batches.push([...d])
    },
  } as unknown as TokenStore
  return { store, batches }
}

describe('the delivery journal writer', () => {
  test('records go to the store in one batch per flush, not one write per record', async () => {
    const { store, batches } = fakeStore()
    const logs = captureLogs()
    const journal = createDeliveryJournal({ store, log: pino(logs.stream), flushMs: 60_000 })
    for (let i = 0; i < 5; i++) journal.record(delivery(i))
    expect(batches).toEqual([])
    await journal.flush()
    expect(batches.map((b) => b.length)).toEqual([5])
    await journal.flush()
    expect(batches).toHaveLength(1)
  })

  test('flushes by itself after flushMs', async () => {
    const { store, batches } = fakeStore()
    const journal = createDeliveryJournal({ store, log: pino({ level: 'silent' }), flushMs: 20 })
    journal.record(delivery(1))
    journal.record(delivery(2))
    const end = Date.now() + 3000
    while (batches.length === 0 && Date.now() < end) await Bun.sleep(10)
    expect(batches.map((b) => b.map((d) => d.eventId))).toEqual([['$1', '$2']])
  })

  test('a full buffer drops the oldest; a failed write is logged and dropped', async () => {
    const { store, batches } = fakeStore()
    const logs = captureLogs()
    const journal = createDeliveryJournal({ store, log: pino(logs.stream), flushMs: 60_000, maxBuffered: 3 })
    for (let i = 0; i < 5; i++) journal.record(delivery(i))
    await journal.flush()
    expect(batches[0]!.map((d) => d.eventId)).toEqual(['$2', '$3', '$4'])
    expect(logs.parsed().some((l) => l.msg === 'delivery journal buffer was full; oldest outcomes dropped' && l.outcomes === 2)).toBe(true)

    const failing = fakeStore(true)
    const flogs = captureLogs()
    const broken = createDeliveryJournal({ store: failing.store, log: pino(flogs.stream), flushMs: 60_000 })
    broken.record(delivery(9))
    await broken.flush()
    expect(flogs.parsed().some((l) => l.msg.startsWith('delivery journal not written') && l.outcomes === 1)).toBe(true)
    await broken.flush()
    expect(flogs.parsed()).toHaveLength(1)
  })
})

describe('the journal in SQLite', () => {
  test('stays bounded per account however it is written, and answers the newest rows first', async () => {
    const dir = tempDir('m2a-journal-unit-')
    const path = join(dir, 'tokens.db')
    try {
      const store = openSqliteStore(path)
      await store.saveRegistration({ selector: 'S:1', matrixUserId: '@a:example.org' }, 1, planPusherCalls(false))
      for (let i = 0; i < 300; i++) await store.recordDeliveries([delivery(i)])
      await store.recordDeliveries(Array.from({ length: 120 }, (_, i) => delivery(300 + i)))
      // An account that is not stored gets no rows.
      await store.recordDeliveries([{ ...delivery(1), selector: 'GONE:1' }])
      const rows = await store.deliveries('S:1')
      expect(rows).toHaveLength(JOURNAL_ROWS_PER_ACCOUNT)
      expect(rows[0]!.eventId).toBe('$419')
      expect(await store.deliveries('GONE:1')).toEqual([])
      await store.close()
      const db = new Database(path, { readonly: true })
      const { n } = db.query("SELECT count(*) AS n FROM deliveries WHERE selector = 'S:1'").get() as { n: number }
      db.close()
      expect(n).toBeGreaterThanOrEqual(JOURNAL_ROWS_PER_ACCOUNT)
      expect(n).toBeLessThanOrEqual(JOURNAL_ROWS_PER_ACCOUNT + 10)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
