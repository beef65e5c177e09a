/**
 * One contract, two engines: what ingestion, Fetch Messages, Send Message and the jobs rely on from
 * the MessageIndex and the send outbox, run against SQLite and against PostgreSQL (when
 * TEST_DATABASE_URL is set). Then what only PostgreSQL has: two instances writing at once.
 */
import { afterEach, beforeEach, describe, expect, test } from 'bun:test'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import type { SQL } from 'bun'
import pino from 'pino'
import { createTransactionHandler } from '../../src/appservice/transactions.ts'
import type { MessageIndex, NewMessage } from '../../src/messages/index-store.ts'
import { openSqliteOutbox, postgresOutbox, type OutboxStore } from '../../src/messages/outbox.ts'
import { createPostgresIndex } from '../../src/messages/pg-index.ts'
import { openSqliteIndex } from '../../src/messages/sqlite-index.ts'
import { connectPostgres, openPostgres } from '../../src/store/postgres.ts'
import { tempDir } from '../harness.ts'
import { directChatSetup, text, uid } from '../messaging/events.ts'
import { createTestSchema, pgSkipped } from '../pg.ts'

interface Opened {
  index: MessageIndex
  outbox: OutboxStore
  dispose(): Promise<void>
}

interface Engine {
  name: string
  skip: boolean
  open(): Promise<Opened>
}

const engines: Engine[] = [
  {
    name: 'SQLite',
    skip: false,
    async open() {
      const dir = tempDir('m2a-index-')
      const path = join(dir, 'tokens.db')
      const index = openSqliteIndex(path)
      const outbox = openSqliteOutbox(path, { inTurn: index.inTurn })
      return {
        index,
        outbox,
        async dispose() {
          outbox.close()
          index.close()
          rmSync(dir, { recursive: true, force: true })
        },
      }
    },
  },
  {
    name: 'PostgreSQL',
    skip: pgSkipped(),
    async open() {
      const schema = await createTestSchema()
      const { sql, store } = await openPostgres(schema.url)
      return {
        index: createPostgresIndex(sql),
        outbox: postgresOutbox(sql),
        async dispose() {
          await store.close()
          await schema.drop()
        },
      }
    },
  },
]

const ROOM = '!room:example.org'
const msg = (eventId: string, over: Partial<NewMessage> = {}): NewMessage => ({
  eventId,
  roomId: ROOM,
  sender: '@alice:example.org',
  ts: 1_000,
  text: `text of ${eventId}`,
  authorName: 'Alice',
  ...over,
})

for (const engine of engines) {
  describe.skipIf(engine.skip)(`message index contract: ${engine.name}`, () => {
    let index: MessageIndex
    let outbox: OutboxStore
    let dispose: () => Promise<void>
    beforeEach(async () => {
      ;({ index, outbox, dispose } = await engine.open())
    })
    afterEach(async () => dispose())

    test('a message is stored once, at increasing positions; a throw rolls the whole write back', async () => {
      const [a, again, b] = await index.write(async (tx) => [await tx.insertMessage(msg('$a'), 5), await tx.insertMessage(msg('$a'), 5), await tx.insertMessage(msg('$b'), 5)])
      expect(again).toBeUndefined()
      expect(b!).toBeGreaterThan(a!)
      expect(await index.message('$a')).toEqual({ ord: a!, eventId: '$a', roomId: ROOM, sender: '@alice:example.org', ts: 1_000, text: 'text of $a', authorName: 'Alice', editOf: undefined, redacted: false })
      await expect(
        index.write(async (tx) => {
          await tx.insertMessage(msg('$c'), 6)
          await tx.recordTransaction('t1', 6)
          throw new Error('poison')
        }),
      ).rejects.toThrow('poison')
      expect(await index.message('$c')).toBeUndefined()
      expect(await index.write((tx) => tx.transactionDone('t1'))).toBe(false)
      expect(await index.countMessages()).toBe(2)
      expect(await index.write((tx) => tx.lastOrd())).toBeGreaterThanOrEqual(b!)
    })

    test('a savepoint undoes only its own writes; transaction ids are remembered', async () => {
      await index.write(async (tx) => {
        await tx.insertMessage(msg('$kept'), 1)
        await expect(
          index.savepoint(tx, async () => {
            await tx.insertMessage(msg('$undone'), 1)
            throw new Error('bad event')
          }),
        ).rejects.toThrow('bad event')
        expect(await index.savepoint(tx, async () => tx.insertMessage(msg('$after'), 1))).toBeNumber()
        await tx.recordTransaction('txn-1', 1)
      })
      expect(await index.message('$kept')).toBeDefined()
      expect(await index.message('$undone')).toBeUndefined()
      expect(await index.message('$after')).toBeDefined()
      expect(await index.write((tx) => tx.transactionDone('txn-1'))).toBe(true)
    })

    test('deliveries: one per user and event, numbered in order, redacted ones hidden, pages by cursor and by age', async () => {
      const seqs = await index.write(async (tx) => {
        for (const [i, id] of ['$1', '$2', '$3'].entries()) await tx.insertMessage(msg(id, { ts: 1_000 * (i + 1) }), 1)
        await tx.insertMessage(msg('$edit', { editOf: '$2' }), 1)
        return [await tx.deliver('@bob:x', '$1', false, 1), await tx.deliver('@bob:x', '$2', false, 1), await tx.deliver('@bob:x', '$3', false, 1), await tx.deliver('@bob:x', '$1', false, 1), await tx.deliver('@bob:x', '$3', true, 1)]
      })
      expect(seqs[3]).toBeUndefined()
      expect(seqs[4]).toBeUndefined()
      expect(seqs[1]!).toBeGreaterThan(seqs[0]!)
      expect(seqs[2]!).toBeGreaterThan(seqs[1]!)
      expect(await index.deliverySeq('@bob:x', '$2')).toBe(seqs[1]!)
      const page = await index.deliveriesAfter('@bob:x', false, 0, 10)
      expect(page.map((d) => [d.seq, d.sent, d.message.eventId])).toEqual([
        [seqs[0]!, false, '$1'],
        [seqs[1]!, false, '$2'],
        [seqs[2]!, false, '$3'],
      ])
      expect((await index.deliveriesAfter('@bob:x', false, seqs[0]!, 1)).map((d) => d.message.eventId)).toEqual(['$2'])
      expect(await index.deliveriesAfter('@bob:x', true, 0, 10)).toEqual([])
      await index.write(async (tx) => {
        await tx.redact('$2', 2)
        expect(await tx.isRedacted('$2')).toBe(true)
      })
      expect(await index.message('$edit')).toMatchObject({ redacted: true, text: '' })
      expect((await index.deliveriesAfter('@bob:x', false, 0, 10)).map((d) => d.message.eventId)).toEqual(['$1', '$3'])
      expect((await index.newestDeliveries('@bob:x', false, 0, 1)).map((d) => d.message.eventId)).toEqual(['$3'])
      expect((await index.newestDeliveries('@bob:x', false, 3_000, 10)).map((d) => d.message.eventId)).toEqual(['$3'])
      expect(await index.write((tx) => tx.messagesSince(ROOM, (page[0]!.message.ord)))).toHaveLength(3)
    })

    test('rooms, members, enrolment, addresses and direct chats', async () => {
      await index.write(async (tx) => {
        expect(await tx.getRoom(ROOM)).toBeUndefined()
        expect(await tx.updateRoom(ROOM, { kind: 'direct', name: 'Chat' }, 1)).toEqual({
          roomId: ROOM,
          kind: 'direct',
          isDirect: false,
          name: 'Chat',
          canonicalAlias: undefined,
          conversation: ROOM,
          predecessor: undefined,
          successor: undefined,
        })
        await tx.updateRoom(ROOM, { isDirect: true }, 2)
        await tx.setMember({ roomId: ROOM, userId: '@a:x', membership: 'join', sinceOrd: 0, fromStream: true, updatedAt: 1 })
        await tx.setMember({ roomId: ROOM, userId: '@b:x', membership: 'invite', displayName: 'Bee', sinceOrd: 7, fromStream: false, updatedAt: 2 })
        await tx.setMember({ roomId: ROOM, userId: '@c:x', membership: 'leave', sinceOrd: 0, fromStream: true, updatedAt: 3 })
        expect(await tx.enrol('@b:x', 1)).toBe(true)
        expect(await tx.enrol('@b:x', 2)).toBe(false)
        await tx.enrol('@c:x', 1)
        await tx.markCaughtUp('@b:x', 3)
        expect(await tx.enrolledMembers(ROOM)).toEqual(['@b:x'])
        await tx.assignAddress('@b:x', 'addr-1', ROOM, 5)
        await tx.assignAddress('@b:x', 'addr-2', ROOM, 5)
        await tx.assignAddress('@b:x', 'addr-1', ROOM, 5)
        expect(await tx.addressTaken('@b:x', 'addr-2')).toBe(ROOM)
        expect(await tx.addressHolders(ROOM)).toEqual(['@b:x'])
        // Inside the transaction too: a group's address is checked against the member's direct chats.
        expect(await tx.directRooms('@a:x', '@b:x')).toEqual([ROOM])
        expect(await tx.directRooms('@a:x', '@nobody:x')).toEqual([])
      })
      expect((await index.rooms([ROOM, '!none:x'])).get(ROOM)).toMatchObject({ kind: 'direct', isDirect: true, name: 'Chat' })
      expect((await index.rooms([])).size).toBe(0)
      expect((await index.members(ROOM)).map((m) => [m.userId, m.membership, m.displayName, m.sinceOrd, m.fromStream])).toEqual([
        ['@a:x', 'join', undefined, 0, true],
        ['@b:x', 'invite', 'Bee', 7, false],
        ['@c:x', 'leave', undefined, 0, true],
      ])
      // Re-given at the same millisecond, addr-1 is the newest.
      expect(await index.currentAddress('@b:x', ROOM)).toBe('addr-1')
      expect(await index.conversationOf('@b:x', 'addr-2')).toBe(ROOM)
      expect(await index.isEnrolled('@b:x')).toBe(true)
      expect(await index.enrolledUsers()).toEqual(['@b:x', '@c:x'])
      expect(await index.roomsWith('@b:x', 'invite')).toEqual([ROOM])
      expect(await index.directRooms('@a:x', '@b:x')).toEqual([ROOM])
      expect(await index.directRooms('@a:x', '@nobody:x')).toEqual([])
    })

    test('device cursors only move forward', async () => {
      expect(await index.deviceCursor('@b:x', 'phone')).toBeUndefined()
      await index.advanceDeviceCursor('@b:x', 'phone', 5, 2, 1)
      await index.advanceDeviceCursor('@b:x', 'phone', 3, 4, 2)
      expect(await index.deviceCursor('@b:x', 'phone')).toEqual({ received: 5, sent: 4 })
    })

    test('jobs: queued once, claimed by one worker for its lease, rescheduled, completed', async () => {
      await index.write(async (tx) => {
        await tx.queueJob('catchup', '@b:x', '', 100)
        await tx.queueJob('catchup', '@b:x', '', 50)
        await tx.queueJob('autojoin', '@b:x', ROOM, 200)
      })
      expect((await index.pendingJobs()).map((j) => [j.kind, j.roomId])).toEqual([
        ['catchup', ''],
        ['autojoin', ROOM],
      ])
      expect(await index.nextJobDue()).toBe(50)
      const job = await index.claimJob(60, 1_000)
      expect(job).toMatchObject({ kind: 'catchup', userId: '@b:x', attempts: 0 })
      expect(await index.claimJob(60, 1_000)).toBeUndefined()
      await index.rescheduleJob(job!.id, 5_000, 'boom')
      expect(await index.claimJob(300, 1_000)).toMatchObject({ kind: 'autojoin' })
      expect(await index.nextJobDue()).toBe(1_300)
      await index.completeJob(job!.id)
      expect((await index.pendingJobs()).map((j) => j.kind)).toEqual(['autojoin'])
    })

    test('prune drops old messages with their deliveries and old transaction ids; positions are never reused', async () => {
      const last = await index.write(async (tx) => {
        await tx.insertMessage(msg('$old', { ts: 10 }), 10)
        const ord = await tx.insertMessage(msg('$new', { ts: 10 }), 10)
        await tx.deliver('@b:x', '$old', false, 10)
        await tx.recordTransaction('old-txn', 10)
        return ord!
      })
      expect(await index.prune(100)).toEqual({ messages: 2 })
      expect(await index.countMessages()).toBe(0)
      expect(await index.deliveriesAfter('@b:x', false, 0, 10)).toEqual([])
      expect(await index.write((tx) => tx.transactionDone('old-txn'))).toBe(false)
      expect(await index.write((tx) => tx.lastOrd())).toBe(last)
      expect(await index.write((tx) => tx.insertMessage(msg('$next'), 200))).toBeGreaterThan(last)
    })

    test('the send outbox: found by key within the window, sent never becomes failed, pruned by age', async () => {
      await outbox.create({ txnId: 't1', userId: '@a:x', dedupeKey: 'k1', now: 1_000 })
      await outbox.setRoom('t1', ROOM, 2_000)
      expect(await outbox.recent('k1', 0)).toEqual({ txnId: 't1', userId: '@a:x', dedupeKey: 'k1', roomId: ROOM, eventId: undefined, state: 'pending', createdAt: 1_000, updatedAt: 2_000 })
      await outbox.markSent('t1', '$e', 3_000)
      await outbox.markFailed('t1', 4_000)
      expect(await outbox.recent('k1', 2_500)).toMatchObject({ state: 'sent', eventId: '$e', updatedAt: 3_000 })
      expect(await outbox.recent('k1', 3_001)).toBeUndefined()
      await outbox.create({ txnId: 't2', userId: '@a:x', dedupeKey: 'k1', now: 5_000 })
      expect((await outbox.recent('k1', 0))!.txnId).toBe('t2')
      expect(await outbox.prune(4_000)).toBe(1)
      expect((await outbox.recent('k1', 0))!.txnId).toBe('t2')
    })
  })
}

describe.skipIf(pgSkipped())('message index: two instances on one PostgreSQL database', () => {
  let pools: SQL[] = []
  let drop: () => Promise<void>
  let a: MessageIndex
  let b: MessageIndex
  beforeEach(async () => {
    const schema = await createTestSchema()
    drop = () => schema.drop()
    const first = await openPostgres(schema.url)
    // The second instance's own pool, as a second process would have.
    const second = connectPostgres(schema.url)
    pools = [first.sql, second]
    a = createPostgresIndex(first.sql)
    b = createPostgresIndex(second)
  })
  afterEach(async () => {
    for (const pool of pools) await pool.end({ timeout: 5 })
    await drop()
  })

  test('a write waits for the other instance\'s write to commit: a delivery committed late never lands below a cursor', async () => {
    let release!: () => void
    const held = new Promise<void>((r) => (release = r))
    let started!: () => void
    const inside = new Promise<void>((r) => (started = r))
    const first = a.write(async (tx) => {
      await tx.insertMessage(msg('$slow'), 1)
      const seq = await tx.deliver('@b:x', '$slow', false, 1)
      started()
      await held
      return seq!
    })
    await inside
    let secondDone = false
    const second = b
      .write(async (tx) => {
        await tx.insertMessage(msg('$fast'), 2)
        return (await tx.deliver('@b:x', '$fast', false, 2))!
      })
      .finally(() => (secondDone = true))
    await Bun.sleep(300)
    // B waits for A's lock; a reader sees nothing yet, so no cursor can pass A's delivery.
    expect(secondDone).toBe(false)
    expect(await b.deliveriesAfter('@b:x', false, 0, 10)).toEqual([])
    release()
    const [slow, fast] = await Promise.all([first, second])
    expect(fast).toBeGreaterThan(slow)
    expect((await b.deliveriesAfter('@b:x', false, 0, 10)).map((d) => d.message.eventId)).toEqual(['$slow', '$fast'])
  })

  test('a write that waits too long for the lock fails as a store failure (the transaction answers 503, Synapse retries)', async () => {
    const impatient = createPostgresIndex(pools[1]!, { lockTimeoutMs: 200 })
    let release!: () => void
    const held = new Promise<void>((r) => (release = r))
    let started!: () => void
    const inside = new Promise<void>((r) => (started = r))
    const first = a.write(async (tx) => {
      await tx.insertMessage(msg('$holder'), 1)
      started()
      await held
    })
    await inside
    const error = await impatient.write((tx) => tx.insertMessage(msg('$waiter'), 2)).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(Error)
    expect(impatient.isStoreFailure(error)).toBe(true)
    release()
    await first
    // The lock is free again: the same write now goes through, and the first one's row is there.
    expect(await impatient.write((tx) => tx.insertMessage(msg('$waiter'), 3))).toBeNumber()
    expect(await impatient.message('$holder')).toBeDefined()
  })

  test('an appservice transaction handed to both instances at once is applied once', async () => {
    const log = pino({ level: 'silent' })
    const context = () => ({ serverName: 'example.org', autoJoinDirect: false, oldestTs: 0, senderUserId: undefined })
    const outcomes: string[][] = [[], []]
    const handlers = [a, b].map((index, i) =>
      createTransactionHandler({ index, log, now: Date.now, context, observe: (o) => outcomes[i]!.push(o) }),
    )
    const room = '!dm:example.org'
    await a.write((tx) => tx.enrol(uid('bob'), 1))
    const events = [...directChatSetup(room, uid('alice'), uid('bob')), text({ room, sender: uid('alice') }, 'hello once')]
    await Promise.all([handlers[0]!.handle('txn-9', events, log), handlers[1]!.handle('txn-9', events, log)])
    // Exactly one of them applied the events; the other found the transaction committed.
    expect(outcomes.filter((o) => o.length > 0)).toHaveLength(1)
    expect(await a.countMessages()).toBe(1)
    const got = await b.deliveriesAfter(uid('bob'), false, 0, 10)
    expect(got.map((d) => d.message.text)).toEqual(['hello once'])
    // A later retry to either instance changes nothing.
    await handlers[1]!.handle('txn-9', events, log)
    expect(outcomes.flat()).toHaveLength(events.length)
  })
})
