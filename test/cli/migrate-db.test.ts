/** `migrate-db --to <postgres URL>` on the built executable: SQLite copied into PostgreSQL, idempotent. */
import { afterAll, describe, expect, test } from 'bun:test'
import { existsSync, rmSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { planPusherCalls } from '../../src/report/plan.ts'
import { openPostgres, openPostgresStore } from '../../src/store/postgres.ts'
import { openSqliteOutbox, postgresOutbox } from '../../src/messages/outbox.ts'
import { createPostgresIndex } from '../../src/messages/pg-index.ts'
import { openSqliteIndex } from '../../src/messages/sqlite-index.ts'
import type { MessageIndex } from '../../src/messages/index-store.ts'
import { openSqliteStore } from '../../src/store/sqlite.ts'
import { tempDir } from '../harness.ts'
import { pgSkipped, pgTestScope } from '../pg.ts'
import { runCommand } from './run.ts'

const PASSWORD = 'migrate-Pa55word'
const dir = tempDir('m2a-migrate-')
afterAll(() => rmSync(dir, { recursive: true, force: true }))
const { cleanups, schema } = pgTestScope()

const withPassword = (url: string) => {
  const u = new URL(url)
  u.password = PASSWORD
  return u.toString()
}

async function seededSqlite(): Promise<string> {
  const path = join(tempDir('m2a-migrate-db-'), 'push_tokens.db')
  const store = openSqliteStore(path)
  const plan = planPusherCalls(true)
  await store.saveRegistration({ selector: 'SEL-A', username: 'alice', matrixUserId: '@alice:example.org', tokenMsgs: 'tok-a', appIdMsgs: 'app', tokenCalls: 'voip-a', appIdCalls: 'app.voip' }, 1_700_000_000_000, plan)
  await store.saveRegistration({ selector: 'SEL-B', matrixUserId: '@bob:example.org', tokenMsgs: 'tok-b', appIdMsgs: 'app' }, 1_700_000_100_000, plan)
  await store.saveRegistration({ selector: 'SEL-B', matrixUserId: '@bob:example.org', tokenMsgs: 'tok-b2', appIdMsgs: 'app' }, 1_700_000_200_000, plan)
  const job = (await store.claimNextJob('SEL-A', 1_700_000_300_000, 60_000))!
  await store.rescheduleJob(job.id, 1_700_000_400_000, 'homeserver unreachable')
  await store.close()
  return path
}

describe('migrate-db: usage', () => {
  test('without --to, or with a URL that is not PostgreSQL: exit 2, nothing printed of the password', async () => {
    const none = await runCommand(['migrate-db'], { PUSH_TOKEN_DB_PATH: join(dir, 'x.db') })
    expect(none.exitCode).toBe(2)
    expect(none.stderr).toContain('migrate-db needs --to <postgres URL>')
    const bad = await runCommand(['migrate-db', '--to', `mysql://u:${PASSWORD}@h/d`], { PUSH_TOKEN_DB_PATH: join(dir, 'x.db') })
    expect(bad.exitCode).toBe(2)
    expect(bad.stderr).toContain('must start with postgres://')
    expect(bad.stderr).not.toContain(PASSWORD)
  })

  test('no SQLite file: exit 1 naming it, none created', async () => {
    const path = join(dir, 'missing', 'push_tokens.db')
    const r = await runCommand(['migrate-db', '--to', 'postgres://u@127.0.0.1:1/d'], { PUSH_TOKEN_DB_PATH: path })
    expect(r.exitCode).toBe(1)
    expect(r.stderr).toContain(`no SQLite database at ${path}`)
    expect(existsSync(dirname(path))).toBe(false)
  })
})

describe.skipIf(pgSkipped())('migrate-db into PostgreSQL', () => {
  test('copies registrations and pending pusher calls; a second run changes nothing; new jobs continue the ids', async () => {
    const path = await seededSqlite()
    const s = await schema()
    const source = openSqliteStore(path)
    const [rows, jobs] = [await source.listRegistrations(), await source.pendingJobs()]
    await source.close()
    expect(jobs.length).toBe(3)

    const first = await runCommand(['migrate-db', '--to', withPassword(s.url)], { PUSH_TOKEN_DB_PATH: path })
    expect(first.stderr).toBe('')
    expect(first.exitCode).toBe(0)
    expect(first.stdout).toContain(`copied 2 registrations and 3 pending pusher calls from ${path} to postgres://postgres:[REDACTED]@`)
    expect(first.stdout + first.stderr).not.toContain(PASSWORD)

    const target = await openPostgresStore(s.url)
    cleanups.push(() => target.close())
    expect(await target.listRegistrations()).toEqual(rows)
    expect(await target.pendingJobs()).toEqual(jobs)

    const second = await runCommand(['migrate-db', '--to', withPassword(s.url)], { PUSH_TOKEN_DB_PATH: path })
    expect(second.exitCode).toBe(0)
    expect(second.stdout).toContain('already holds this copy')
    expect(await target.listRegistrations()).toEqual(rows)
    expect(await target.pendingJobs()).toEqual(jobs)

    const { jobs: added } = await target.saveRegistration({ selector: 'SEL-C', matrixUserId: '@carol:example.org', tokenMsgs: 'tok-c', appIdMsgs: 'app' }, 1_700_000_500_000, planPusherCalls(true))
    expect(added[0]!.id).toBeGreaterThan(Math.max(...jobs.map((j) => j.id)))
  })

  test('a database holding other data is refused and left as it was', async () => {
    const path = await seededSqlite()
    const s = await schema()
    const target = await openPostgresStore(s.url)
    cleanups.push(() => target.close())
    await target.saveRegistration({ selector: 'OTHER', matrixUserId: '@zed:example.org' }, 1, () => [])
    const r = await runCommand(['migrate-db', '--to', s.url], { PUSH_TOKEN_DB_PATH: path })
    expect(r.exitCode).toBe(1)
    expect(r.stderr).toContain('already holds other data: migrate-db copies only into an empty database (nothing changed)')
    expect((await target.listRegistrations()).map((x) => x.selector)).toEqual(['OTHER'])
    expect(await target.pendingJobs()).toEqual([])
  })

  test('copies the message index and the send outbox as well: the copy answers as the file did; a second run changes nothing', async () => {
    const path = await seededSqlite()
    const room = '!dm:example.org'
    const sqliteIndex = openSqliteIndex(path)
    await sqliteIndex.write(async (tx) => {
      await tx.updateRoom(room, { kind: 'direct', isDirect: true, name: 'Alice and Bob' }, 1_000)
      await tx.setMember({ roomId: room, userId: '@alice:example.org', membership: 'join', sinceOrd: 0, fromStream: true, updatedAt: 1_000 })
      await tx.setMember({ roomId: room, userId: '@bob:example.org', membership: 'invite', displayName: 'Bob', sinceOrd: 0, fromStream: false, updatedAt: 1_001 })
      await tx.enrol('@bob:example.org', 1_000)
      for (const id of ['$one', '$two', '$three']) {
        await tx.insertMessage({ eventId: id, roomId: room, sender: '@alice:example.org', ts: 2_000, text: `text ${id}`, authorName: 'Alice' }, 2_000)
        await tx.deliver('@bob:example.org', id, false, 2_000)
      }
      await tx.redact('$two', 2_500)
      await tx.assignAddress('@bob:example.org', 'alice', room, 2_000)
      await tx.recordTransaction('txn-7', 2_000)
      await tx.queueJob('catchup', '@bob:example.org', '', 3_000)
    })
    await sqliteIndex.advanceDeviceCursor('@bob:example.org', 'phone', 2, 0, 3_000)
    const sqliteOutboxStore = openSqliteOutbox(path)
    await sqliteOutboxStore.create({ txnId: 'send-1', userId: '@alice:example.org', dedupeKey: 'key-1', now: 4_000 })
    await sqliteOutboxStore.markSent('send-1', '$sent', 4_100)
    sqliteOutboxStore.close()
    const view = async (index: MessageIndex) => ({
      list: await index.deliveriesAfter('@bob:example.org', false, 0, 10),
      rooms: await index.rooms([room]),
      members: await index.members(room),
      address: await index.currentAddress('@bob:example.org', room),
      cursor: await index.deviceCursor('@bob:example.org', 'phone'),
      enrolled: await index.enrolledUsers(),
      jobs: await index.pendingJobs(),
      txn: await index.write((tx) => tx.transactionDone('txn-7')),
      redacted: await index.write((tx) => tx.isRedacted('$two')),
      lastOrd: await index.write((tx) => tx.lastOrd()),
    })
    const before = await view(sqliteIndex)
    sqliteIndex.close()
    expect(before.list.map((d) => d.message.eventId)).toEqual(['$one', '$three'])

    const s = await schema()
    const first = await runCommand(['migrate-db', '--to', s.url], { PUSH_TOKEN_DB_PATH: path })
    expect(first.stderr).toBe('')
    expect(first.exitCode).toBe(0)
    expect(first.stdout).toContain('copied the message index (3 messages, 3 deliveries, 1 rooms, 1 enrolled users) and 1 send outbox rows')

    const { sql, store } = await openPostgres(s.url)
    cleanups.push(() => store.close())
    const pgIndex = createPostgresIndex(sql)
    expect(await view(pgIndex)).toEqual(before)
    expect(await postgresOutbox(sql).recent('key-1', 0)).toMatchObject({ txnId: 'send-1', state: 'sent', eventId: '$sent', createdAt: 4_000, updatedAt: 4_100 })

    const second = await runCommand(['migrate-db', '--to', s.url], { PUSH_TOKEN_DB_PATH: path })
    expect(second.exitCode).toBe(0)
    expect(second.stdout).toContain('already holds this copy')
    expect(await view(pgIndex)).toEqual(before)

    // New positions and delivery numbers continue after the copied ones.
    const next = await pgIndex.write(async (tx) => {
      const ord = await tx.insertMessage({ eventId: '$four', roomId: room, sender: '@alice:example.org', ts: 5_000, text: 'four', authorName: 'Alice' }, 5_000)
      return { ord: ord!, seq: (await tx.deliver('@bob:example.org', '$four', false, 5_000))! }
    })
    expect(next.ord).toBeGreaterThan(before.lastOrd)
    expect(next.seq).toBeGreaterThan(Math.max(...before.list.map((d) => d.seq)))
  })
})
