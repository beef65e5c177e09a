/**
 * One contract, two engines: every TokenStore behaviour the service relies on, run against the
 * embedded SQLite store and against PostgreSQL (when TEST_DATABASE_URL is set).
 */
import { afterEach, beforeEach, describe, expect, test } from 'bun:test'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { planPusherCalls } from '../../src/report/plan.ts'
import { openPostgresStore } from '../../src/store/postgres.ts'
import { openSqliteStore } from '../../src/store/sqlite.ts'
import { JOURNAL_ROWS_PER_ACCOUNT, type RegistrationInput, type TokenStore } from '../../src/store/types.ts'
import { tempDir } from '../harness.ts'
import { createTestSchema, pgSkipped } from '../pg.ts'

interface Engine {
  name: string
  skip: boolean
  /** A fresh, empty store and what removes it. */
  open(): Promise<{ store: TokenStore; dispose(): Promise<void> }>
}

const engines: Engine[] = [
  {
    name: 'SQLite',
    skip: false,
    async open() {
      const dir = tempDir('m2a-contract-')
      const store = openSqliteStore(join(dir, 'tokens.db'))
      return { store, dispose: async () => rmSync(dir, { recursive: true, force: true }) }
    },
  },
  {
    name: 'PostgreSQL',
    skip: pgSkipped(),
    async open() {
      const schema = await createTestSchema()
      const store = await openPostgresStore(schema.url)
      return { store, dispose: () => schema.drop() }
    },
  },
]

const plan = planPusherCalls(true)
const none = planPusherCalls(false)
const APP = 'com.acrobits.softphone'
const row = (selector: string, user: string, token?: string): RegistrationInput => ({
  selector,
  username: user,
  matrixUserId: `@${user}:example.org`,
  tokenMsgs: token,
  appIdMsgs: token === undefined ? undefined : APP,
})

for (const engine of engines) {
  describe.skipIf(engine.skip)(`token store contract: ${engine.name}`, () => {
    let store: TokenStore
    let dispose: () => Promise<void>
    beforeEach(async () => {
      ;({ store, dispose } = await engine.open())
    })
    afterEach(async () => {
      await store.close()
      await dispose()
    })

    test('a lookup right after a write sees it: nothing remembered outlives a change', async () => {
      expect(await store.findByPushkey(APP, 'tok-1')).toBeUndefined()
      expect(await store.findBySelector(APP, 'tok-1', 'S1')).toBeUndefined()
      await store.saveRegistration(row('S1', 'alice', 'tok-1'), 1_000, none)
      expect((await store.findByPushkey(APP, 'tok-1'))?.selector).toBe('S1')
      expect((await store.findBySelector(APP, 'tok-1', 'S1'))?.tokenMsgs).toBe('tok-1')
      await store.saveRegistration(row('S1', 'alice', 'tok-2'), 2_000, none)
      expect(await store.findByPushkey(APP, 'tok-1')).toBeUndefined()
      expect(await store.findBySelector(APP, 'tok-1', 'S1')).toBeUndefined()
      expect((await store.findByPushkey(APP, 'tok-2'))?.selector).toBe('S1')
      await store.removeRegistration('S1', 3_000, none)
      expect(await store.findByPushkey(APP, 'tok-2')).toBeUndefined()
      expect(await store.findBySelector(APP, 'tok-2', 'S1')).toBeUndefined()
    })

    test('a saved row reads back; saving again updates it and keeps its creation time', async () => {
      const first = await store.saveRegistration({ ...row('S1', 'alice', 'tok-1'), tokenCalls: 'voip-1', appIdCalls: `${APP}.voip` }, 1_000, none)
      expect(first).toEqual({ previous: undefined, jobs: [], refused: false, evicted: [] })
      expect(await store.getRegistration('S1')).toEqual({
        selector: 'S1',
        username: 'alice',
        matrixUserId: '@alice:example.org',
        tokenMsgs: 'tok-1',
        appIdMsgs: APP,
        tokenCalls: 'voip-1',
        appIdCalls: `${APP}.voip`,
        createdAt: 1_000,
        updatedAt: 1_000,
      })
      const second = await store.saveRegistration(row('S1', 'alice', 'tok-2'), 2_000, none)
      expect(second.previous?.tokenMsgs).toBe('tok-1')
      const stored = await store.getRegistration('S1')
      expect([stored?.tokenMsgs, stored?.tokenCalls, stored?.createdAt, stored?.updatedAt]).toEqual(['tok-2', undefined, 1_000, 2_000])
      expect(await store.countRegistrations()).toBe(1)
      expect(await store.getRegistration('nope')).toBeUndefined()
    })

    test('a refusing guard writes nothing; a planner that throws rolls the change back', async () => {
      await store.saveRegistration(row('S1', 'alice', 'tok-1'), 1_000, plan)
      const before = [await store.listRegistrations(), await store.pendingJobs()]
      const refused = await store.saveRegistration(row('S1', 'bob', 'tok-2'), 2_000, plan, { guard: () => false })
      expect(refused.refused).toBe(true)
      expect(refused.previous?.matrixUserId).toBe('@alice:example.org')
      const removal = await store.removeRegistration('S1', 2_000, plan, () => false)
      expect(removal.refused).toBe(true)
      await expect(
        store.saveRegistration(row('S1', 'alice', 'tok-3'), 3_000, () => {
          throw new Error('changed meanwhile')
        }),
      ).rejects.toThrow('changed meanwhile')
      expect([await store.listRegistrations(), await store.pendingJobs()]).toEqual(before)
    })

    test('pusher calls are queued with the change; a new set supersedes older sets and a pending delete of the same pusher', async () => {
      const a = await store.saveRegistration(row('S1', 'alice', 'tok-1'), 1_000, plan)
      expect(a.jobs.map((j) => [j.action, j.pushkey, j.userId, j.attempts, j.nextAttemptAt])).toEqual([['set', 'tok-1', '@alice:example.org', 0, 1_000]])
      await store.saveRegistration(row('S1', 'alice', 'tok-2'), 2_000, plan)
      expect((await store.pendingJobs()).map((j) => [j.action, j.pushkey])).toEqual([
        ['delete', 'tok-1'],
        ['set', 'tok-2'],
      ])
      // Back to the first token: its pending delete would undo the new set.
      await store.saveRegistration(row('S1', 'alice', 'tok-1'), 3_000, plan)
      expect((await store.pendingJobs()).map((j) => [j.action, j.pushkey])).toEqual([
        ['delete', 'tok-2'],
        ['set', 'tok-1'],
      ])
      expect(await store.countPendingJobs()).toBe(2)
      const removed = await store.removeRegistration('S1', 4_000, plan)
      expect(removed.previous?.tokenMsgs).toBe('tok-1')
      expect(removed.jobs.map((j) => [j.action, j.pushkey])).toEqual([['delete', 'tok-1']])
      expect(await store.getRegistration('S1')).toBeUndefined()
    })

    test('maxPerUser evicts the least recently reported rows of that user, queueing their deletes', async () => {
      await store.saveRegistration(row('S1', 'alice', 'tok-1'), 1_000, none)
      await store.saveRegistration(row('S2', 'alice', 'tok-2'), 2_000, none)
      await store.saveRegistration(row('B1', 'bob', 'tok-b'), 500, none)
      const result = await store.saveRegistration(row('S3', 'alice', 'tok-3'), 3_000, plan, { maxPerUser: 2 })
      expect(result.evicted.map((r) => r.selector)).toEqual(['S1'])
      expect(result.jobs.map((j) => [j.selector, j.action, j.pushkey])).toEqual([
        ['S3', 'set', 'tok-3'],
        ['S1', 'delete', 'tok-1'],
      ])
      expect((await store.listRegistrations()).map((r) => r.selector)).toEqual(['B1', 'S2', 'S3'])
    })

    test('findByPushkey answers the most recently updated row; forgetPushkey clears the token', async () => {
      await store.saveRegistration(row('S1', 'alice', 'shared'), 1_000, none)
      await store.saveRegistration(row('S2', 'bob', 'shared'), 2_000, none)
      expect((await store.findByPushkey(APP, 'shared'))?.selector).toBe('S2')
      expect(await store.findByPushkey('other.app', 'shared')).toBeUndefined()
      expect(await store.forgetPushkey(APP, 'shared', 3_000)).toBe(2)
      expect(await store.findByPushkey(APP, 'shared')).toBeUndefined()
      const s1 = await store.getRegistration('S1')
      expect([s1?.tokenMsgs, s1?.appIdMsgs, s1?.updatedAt]).toEqual([undefined, undefined, 3_000])
      expect(await store.forgetPushkey(APP, 'shared', 4_000)).toBe(0)
    })

    test('jobs are claimed in order, one at a time per account, under a lease; rescheduled and completed', async () => {
      await store.saveRegistration(row('S1', 'alice', 'tok-1'), 1_000, plan)
      await store.saveRegistration(row('S1', 'alice', 'tok-2'), 1_000, plan)
      await store.saveRegistration(row('S2', 'bob', 'tok-b'), 1_500, plan)
      expect(await store.nextJobDue()).toBe(1_000)
      expect(await store.dueSelectors(900, 10)).toEqual([])
      expect(await store.dueSelectors(2_000, 10)).toEqual(['S1', 'S2'])
      expect(await store.claimNextJob('S1', 900, 100)).toBeUndefined()
      const first = (await store.claimNextJob('S1', 2_000, 1_000))!
      expect([first.action, first.pushkey]).toEqual(['delete', 'tok-1'])
      // Leased: the account is not due, its next job waits, and the lease sets when it is due again.
      expect(await store.claimNextJob('S1', 2_500, 1_000)).toBeUndefined()
      expect(await store.dueSelectors(2_500, 10)).toEqual(['S2'])
      await store.completeJob((await store.claimNextJob('S2', 2_500, 1_000))!.id)
      expect(await store.nextJobDue()).toBe(3_000)
      await store.rescheduleJob(first.id, 5_000, 'homeserver unreachable')
      const again = (await store.pendingJobs())[0]!
      expect([again.id, again.attempts, again.nextAttemptAt, again.lastError]).toEqual([first.id, 1, 5_000, 'homeserver unreachable'])
      expect(await store.claimNextJob('S1', 4_000, 1_000)).toBeUndefined()
      expect((await store.claimNextJob('S1', 5_000, 1_000))?.id).toBe(first.id)
      // A lease that ran out (its holder died) lets another worker take the job over.
      const taken = await store.claimNextJob('S1', 6_001, 1_000)
      expect(taken?.id).toBe(first.id)
      await store.completeJob(first.id)
      const second = (await store.claimNextJob('S1', 7_001, 1_000))!
      expect([second.action, second.pushkey]).toEqual(['set', 'tok-2'])
      await store.completeJob(second.id)
      expect(await store.pendingJobs()).toEqual([])
      expect(await store.nextJobDue()).toBeUndefined()
    })

    test('claims racing for one account: exactly one wins', async () => {
      for (let round = 0; round < 10; round++) {
        await store.saveRegistration(row(`S${round}`, 'alice', `tok-${round}`), 1_000, plan)
        const claims = await Promise.all(Array.from({ length: 8 }, () => store.claimNextJob(`S${round}`, 2_000, 60_000)))
        expect(claims.filter((c) => c !== undefined)).toHaveLength(1)
      }
    })

    test('concurrent reports of one new selector by two users: one owns it, the other is refused', async () => {
      const results = await Promise.all(
        ['alice', 'bob', 'carol', 'dave'].map((u) =>
          store.saveRegistration(row('S1', u, `tok-${u}`), 1_000, plan, { guard: (previous) => previous.matrixUserId === `@${u}:example.org` }),
        ),
      )
      expect(results.filter((r) => !r.refused)).toHaveLength(1)
      const owner = (await store.getRegistration('S1'))!
      expect(results.find((r) => !r.refused)!.jobs[0]!.userId).toBe(owner.matrixUserId!)
      expect((await store.pendingJobs()).map((j) => j.userId)).toEqual([owner.matrixUserId!])
    })

    test('several accounts on one token: findBySelector names one, listByPushkey lists all, findByPushkey the newest', async () => {
      await store.saveRegistration(row('S1', 'alice', 'tok-1'), 1_000, none)
      await store.saveRegistration(row('S2', 'bob', 'tok-1'), 2_000, none)
      await store.saveRegistration(row('S3', 'carol', 'tok-2'), 3_000, none)
      expect((await store.findBySelector(APP, 'tok-1', 'S1'))?.matrixUserId).toBe('@alice:example.org')
      expect((await store.findBySelector(APP, 'tok-1', 'S2'))?.matrixUserId).toBe('@bob:example.org')
      // The selector must still have this token (and app): a stale pusher finds nothing.
      expect(await store.findBySelector(APP, 'tok-1', 'S3')).toBeUndefined()
      expect(await store.findBySelector('other.app', 'tok-1', 'S1')).toBeUndefined()
      expect((await store.listByPushkey(APP, 'tok-1')).map((r) => r.selector).sort()).toEqual(['S1', 'S2'])
      expect(await store.listByPushkey(APP, 'tok-9')).toEqual([])
      expect((await store.findByPushkey(APP, 'tok-1'))?.selector).toBe('S2')
    })

    test("removing one of two accounts of one user on one token moves the shared pusher to the other instead of deleting it", async () => {
      await store.saveRegistration(row('S1', 'alice', 'tok-1'), 1_000, none)
      await store.saveRegistration(row('S2', 'alice', 'tok-1'), 2_000, none)
      const removed = await store.removeRegistration('S2', 3_000, plan)
      expect(removed.jobs.map((j) => ({ action: j.action, selector: j.selector, userId: j.userId, pushkey: j.pushkey }))).toEqual([
        { action: 'set', selector: 'S1', userId: '@alice:example.org', pushkey: 'tok-1' },
      ])
      // The last account of that pusher goes: now it is deleted, and S1's pending set with it.
      const last = await store.removeRegistration('S1', 4_000, plan)
      expect(last.jobs.map((j) => [j.action, j.selector])).toEqual([['delete', 'S1']])
      expect((await store.pendingJobs()).map((j) => [j.action, j.selector])).toEqual([['delete', 'S1']])
    })

    test('the delivery journal: newest first, bounded per account, only for stored accounts, gone with the account', async () => {
      await store.saveRegistration(row('S1', 'alice', 'tok-1'), 1_000, none)
      await store.saveRegistration(row('S2', 'bob', 'tok-1'), 1_000, none)
      const outcome = (selector: string, i: number) => ({
        selector,
        at: 10_000 + i,
        eventId: `$e${i}`,
        outcome: i % 2 === 0 ? 'delivered' : 'dropped',
        pnmStatus: i % 2 === 0 ? 200 : 400,
        latencyMs: 12.6,
        detail: i % 2 === 0 ? undefined : 'HTTP 400',
      })
      await store.recordDeliveries([outcome('S1', 0), outcome('S1', 1), outcome('GONE', 2)])
      expect(await store.deliveries('S1')).toEqual([
        { selector: 'S1', at: 10_001, eventId: '$e1', outcome: 'dropped', pnmStatus: 400, latencyMs: 13, detail: 'HTTP 400' },
        { selector: 'S1', at: 10_000, eventId: '$e0', outcome: 'delivered', pnmStatus: 200, latencyMs: 13, detail: undefined },
      ])
      expect(await store.deliveries('GONE')).toEqual([])
      // What a new process's duplicate filter starts from: delivered ones from `since` on, oldest
      // first, with the account's token as stored now.
      await store.recordDeliveries([outcome('S2', 4), outcome('S2', 6)])
      expect(await store.deliveredSince(10_001)).toEqual([
        { selector: 'S2', pushkey: 'tok-1', eventId: '$e4', at: 10_004 },
        { selector: 'S2', pushkey: 'tok-1', eventId: '$e6', at: 10_006 },
      ])
      expect((await store.deliveredSince(0)).map((d) => d.eventId)).toEqual(['$e0', '$e4', '$e6'])
      await store.recordDeliveries([])
      // Many flushes of many rows: each account keeps its newest JOURNAL_ROWS_PER_ACCOUNT.
      for (let batch = 0; batch < 6; batch++) {
        await store.recordDeliveries(Array.from({ length: 20 }, (_, i) => outcome(i % 2 === 0 ? 'S1' : 'S2', 100 + batch * 20 + i)))
      }
      const s1 = await store.deliveries('S1')
      expect(s1).toHaveLength(JOURNAL_ROWS_PER_ACCOUNT)
      expect(s1[0]!.eventId).toBe('$e218')
      expect((await store.deliveries('S2'))[0]!.eventId).toBe('$e219')
      await store.removeRegistration('S1', 20_000, none)
      expect(await store.deliveries('S1')).toEqual([])
      expect(await store.deliveries('S2')).toHaveLength(JOURNAL_ROWS_PER_ACCOUNT)
      expect(await store.migrationNotes()).toEqual([])
    })

    test('probeWritable resolves on a writable database', async () => {
      await store.probeWritable()
      await store.probeWritable()
    })
  })
}
