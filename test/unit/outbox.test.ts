import { afterAll, describe, expect, test } from 'bun:test'
import { Database } from 'bun:sqlite'
import { sqliteOutbox } from '../../src/messages/outbox.ts'
import { migrate } from '../../src/store/migrations.ts'

const db = new Database(':memory:')
migrate(db)
afterAll(() => db.close())
const outbox = sqliteOutbox(db)

describe('send outbox', () => {
  test('a row is found by its key within the window of its last change, and keeps its transaction id and room', async () => {
    await outbox.create({ txnId: 't1', userId: '@a:x', dedupeKey: 'k1', now: 1000 })
    expect(await outbox.recent('k1', 0)).toMatchObject({ txnId: 't1', state: 'pending', roomId: undefined })
    await outbox.setRoom('t1', '!r:x', 2000)
    await outbox.markFailed('t1', 3000)
    expect(await outbox.recent('k1', 2500)).toMatchObject({ txnId: 't1', state: 'failed', roomId: '!r:x', updatedAt: 3000 })
    await outbox.markSent('t1', '$e', 4000)
    expect(await outbox.recent('k1', 3500)).toMatchObject({ state: 'sent', eventId: '$e' })
    expect(await outbox.recent('k1', 4001)).toBeUndefined()
    expect(await outbox.recent('other', 0)).toBeUndefined()
  })
  test('a sent row is never marked failed afterwards', async () => {
    await outbox.create({ txnId: 't2', userId: '@a:x', dedupeKey: 'k2', now: 1000 })
    await outbox.markSent('t2', '$e2', 1100)
    await outbox.markFailed('t2', 1200)
    expect(await outbox.recent('k2', 0)).toMatchObject({ state: 'sent', eventId: '$e2' })
  })
  test('the newest row of a key wins; prune forgets rows created before a time', async () => {
    await outbox.create({ txnId: 't3', userId: '@a:x', dedupeKey: 'k3', now: 5000 })
    await outbox.create({ txnId: 't4', userId: '@a:x', dedupeKey: 'k3', now: 6000 })
    expect((await outbox.recent('k3', 0))!.txnId).toBe('t4')
    expect(await outbox.prune(5500)).toBe(3)
    expect((await outbox.recent('k3', 0))!.txnId).toBe('t4')
    expect(await outbox.recent('k1', 0)).toBeUndefined()
  })
  test('the table holds a digest, never a message text', () => {
    const columns = db.query<{ name: string }, []>('PRAGMA table_info(send_outbox)').all().map((c) => c.name)
    expect(columns).toEqual(['txn_id', 'user_id', 'dedupe_key', 'room_id', 'event_id', 'state', 'created_at', 'updated_at'])
  })
})
