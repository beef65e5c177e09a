import { Database } from 'bun:sqlite'
import { describe, expect, test } from 'bun:test'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import pino from 'pino'
import { planPusherCalls } from '../../src/report/plan.ts'
import { openSqliteStore } from '../../src/store/sqlite.ts'
import { MIGRATIONS } from '../../src/store/migrations.ts'
import { JOURNAL_ROWS_PER_ACCOUNT } from '../../src/store/types.ts'
import { createDeliveryJournal } from '../../src/gateway/journal.ts'
import type { Delivery, TokenStore } from '../../src/store/types.ts'
import { captureLogs, tempDir } from '../harness.ts'

const delivery = (i: number): Delivery => ({ selector: 'S:1', at: i, eventId: `$${i}`, outcome: 'delivered', pnmStatus: 200, latencyMs: 1 })

function fakeStore() {
  const batches: Delivery[][] = []
  const store = {
    recordDeliveries: async (d: readonly Delivery[]) => {
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

  test('a large flush is written in parts sorted by account, each account in order, the event loop running between parts', async () => {
    const { store, batches } = fakeStore()
    const ticks: number[] = []
    const recording = {
      recordDeliveries: async (d: readonly Delivery[]) => {
        ticks.push(turn)
        await store.recordDeliveries(d)
      },
    } as unknown as TokenStore
    let turn = 0
    const journal = createDeliveryJournal({ store: recording, log: pino({ level: 'silent' }), flushMs: 60_000, chunk: 4, budgetMs: () => 0 })
    // Three accounts, interleaved as notifications arrive.
    for (let i = 0; i < 9; i++) journal.record({ ...delivery(i), selector: ['S:c', 'S:a', 'S:b'][i % 3]! })
    let spinning = true
    const spin = () => {
      turn++
      if (spinning) setImmediate(spin)
    }
    setImmediate(spin)
    const first = journal.flush()
    // A flush asked for meanwhile waits for the first: S:a's newest outcome is written last.
    journal.record({ ...delivery(9), selector: 'S:a' })
    const second = journal.flush()
    await Promise.all([first, second])
    spinning = false
    expect(batches.map((b) => b.map((d) => `${d.selector}${d.eventId}`))).toEqual([
      ['S:a$1', 'S:a$4', 'S:a$7', 'S:b$2'],
      ['S:b$5', 'S:b$8', 'S:c$0', 'S:c$3'],
      ['S:c$6'],
      ['S:a$9'],
    ])
    // Other work ran between the parts of one flush.
    expect(ticks[1]! > ticks[0]! && ticks[2]! > ticks[1]!).toBe(true)

    // A turn goes on writing parts while its budget, asked with the outcomes left, lasts.
    const lefts: number[] = []
    const quick = fakeStore()
    const generous = createDeliveryJournal({ store: quick.store, log: pino({ level: 'silent' }), flushMs: 60_000, chunk: 4, budgetMs: (left) => (lefts.push(left), 60_000) })
    for (let i = 0; i < 9; i++) generous.record(delivery(i))
    await generous.flush()
    expect([lefts, quick.batches.map((b) => b.length)]).toEqual([[9], [4, 4, 1]])
  })

  test('half full: written at once, not when the timer fires; not while a write is still going on', async () => {
    let release: () => void = () => {}
    const written: number[] = []
    const slow = {
      recordDeliveries: async (d: readonly Delivery[]) => {
        written.push(d.length)
        await new Promise<void>((resolve) => (release = resolve))
      },
    } as unknown as TokenStore
    const journal = createDeliveryJournal({ store: slow, log: pino({ level: 'silent' }), flushMs: 60_000, maxBuffered: 10, chunk: 100 })
    for (let i = 0; i < 5; i++) journal.record(delivery(i))
    await Bun.sleep(0)
    expect(written).toEqual([5])
    // The first write has not finished: the next half waits in the buffer.
    for (let i = 5; i < 12; i++) journal.record(delivery(i))
    await Bun.sleep(0)
    expect(written).toEqual([5])
    release()
    const done = journal.flush()
    await Bun.sleep(0)
    release()
    await done
    expect(written).toEqual([5, 7])
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
    // A database that does not answer: the first half-full buffer's write hangs, the next fills up.
    const batches: string[][] = []
    let release: () => void = () => {}
    const stuck = {
      recordDeliveries: async (d: readonly Delivery[]) => {
        batches.push(d.map((x) => x.eventId!))
        if (batches.length === 1) await new Promise<void>((resolve) => (release = resolve))
      },
    } as unknown as TokenStore
    const logs = captureLogs()
    const journal = createDeliveryJournal({ store: stuck, log: pino(logs.stream), flushMs: 60_000, maxBuffered: 4 })
    for (let i = 0; i < 8; i++) journal.record(delivery(i))
    await Bun.sleep(0)
    release()
    await journal.flush()
    expect(batches).toEqual([['$0', '$1'], ['$4', '$5', '$6', '$7']])
    expect(logs.parsed().some((l) => l.msg === 'delivery journal buffer was full; oldest outcomes dropped' && l.outcomes === 2)).toBe(true)

    let attempts = 0
    const failing = {
      recordDeliveries: async () => {
        attempts++
        throw new Error('SQLITE_BUSY: database is locked')
      },
    } as unknown as TokenStore
    const flogs = captureLogs()
    const broken = createDeliveryJournal({ store: failing, log: pino(flogs.stream), flushMs: 60_000, chunk: 2 })
    for (let i = 0; i < 5; i++) broken.record(delivery(i))
    await broken.flush()
    // One refused part is enough: the rest of the batch is not offered to it, and one line says so.
    expect(attempts).toBe(1)
    expect(flogs.parsed().filter((l) => l.msg.startsWith('delivery journal not written')).map((l) => l.outcomes)).toEqual([5])
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
      // A ring: never more rows than it shows.
      expect(n).toBe(JOURNAL_ROWS_PER_ACCOUNT)
      const again = openSqliteStore(path)
      const order = (await again.deliveries('S:1')).map((d) => d.at)
      await again.close()
      expect(order).toEqual(Array.from({ length: JOURNAL_ROWS_PER_ACCOUNT }, (_, i) => 419 - i))
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  test('a database of schema version 6 keeps each account’s newest rows, in order, and goes on after them', async () => {
    const dir = tempDir('m2a-journal-unit-')
    const path = join(dir, 'tokens.db')
    try {
      const db = new Database(path, { create: true })
      for (let v = 0; v < 6; v++) MIGRATIONS[v]!(db)
      db.run('PRAGMA user_version = 6')
      const now = Date.now()
      for (const selector of ['S:1', 'S:2']) {
        db.run('INSERT INTO registrations (selector, username, matrix_user_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?)', [selector, 'u', '@u:example.org', now, now])
      }
      // Interleaved, as the service wrote them: 80 outcomes of S:1, 3 of S:2.
      const insert = db.prepare('INSERT INTO deliveries (selector, at, event_id, outcome, pnm_status, latency_ms, detail) VALUES (?, ?, ?, ?, ?, ?, ?)')
      for (let i = 0; i < 80; i++) {
        insert.run('S:1', i, `$${i}`, 'delivered', 200, 3, null)
        if (i % 30 === 0) insert.run('S:2', i, `$b${i}`, 'dropped', 400, 5, 'bad request')
      }
      db.close()

      const store = openSqliteStore(path)
      const s1 = await store.deliveries('S:1')
      expect(s1.map((d) => d.at)).toEqual(Array.from({ length: JOURNAL_ROWS_PER_ACCOUNT }, (_, i) => 79 - i))
      expect(await store.deliveries('S:2')).toEqual([60, 30, 0].map((at) => ({ selector: 'S:2', at, eventId: `$b${at}`, outcome: 'dropped', pnmStatus: 400, latencyMs: 5, detail: 'bad request' })))
      await store.recordDeliveries([{ ...delivery(80) }, { ...delivery(81), selector: 'S:2' }])
      expect((await store.deliveries('S:1')).map((d) => d.at).slice(0, 2)).toEqual([80, 79])
      expect((await store.deliveries('S:1')).length).toBe(JOURNAL_ROWS_PER_ACCOUNT)
      expect((await store.deliveries('S:2')).map((d) => d.at)).toEqual([81, 60, 30, 0])
      await store.close()
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
